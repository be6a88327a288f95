"""A real image classifier onboarded with the command and served through real Triton pools, the
real control server and real Envoy; and a tree ensemble that the accelerators' compilers cannot
take, served on their instances' host CPU.

The classifier is the sample CNN (``model_repository.sample_cnn``: trained here on scikit-learn's
digits, exported with a dynamic batch axis).  Held-out images go through Envoy by tier over HTTP and
gRPC; each answer must be the image's true label and equal ONNX Runtime's own output.  Everything
is written to temporary folders: the user-model store reaches the control server (its own process)
through ``TMAS_USER_MODELS_DIR``.  GPU and Inferentia pools are emulated (real outputs, timing from
the estimated profiles), as everywhere on this machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import requests
import tritonclient.grpc as grpcclient
import yaml

from local_platform.platform import LocalPlatform, PlatformPorts
from model_repository import sample_cnn
from model_repository.__main__ import main as model_repository_main
from model_repository.definitions import USER_MODELS_ENV
from profiler.onboarding import OnboardRequest, onboard
from tests.onboarding import onnx_builders as b

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TIERS = ("gold", "silver", "bronze")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onboard")
    d = {k: root / k for k in ("samples", "store", "artifacts", "profiles", "run")}
    for p in d.values():
        p.mkdir()
    d["fleet"] = root / "fleet.yaml"
    d["fleet"].write_text(yaml.safe_dump({
        "prices": str(ROOT / "data" / "prices.yaml"), "tiers": str(ROOT / "data" / "tiers.yaml"),
        "profiles": "profiles",
        "pools": [
            {"name": "cpu", "accelerator": "cpu", "instance_type": "c7g.xlarge", "replicas": 1, "mode": "real"},
            {"name": "gpu", "accelerator": "gpu", "instance_type": "g5.xlarge", "replicas": 1, "mode": "emulated"},
            {"name": "inf2", "accelerator": "inferentia", "instance_type": "inf2.xlarge", "replicas": 1,
             "mode": "emulated"},
        ]}))
    return d


def _request(work: dict[str, Path], name: str, onnx: Path, **kw) -> OnboardRequest:  # type: ignore[no-untyped-def]
    return OnboardRequest(name=name, onnx=onnx, store=work["store"], artifacts=work["artifacts"],
                          profiles=work["profiles"], fleet=work["fleet"], profile_warmup_s=0.2, profile_measure_s=0.3,
                          profile_concurrency=(1,), **kw)


@pytest.fixture(scope="module")
def onboarded(work: dict[str, Path]) -> dict[str, dict]:
    summary = sample_cnn.build(work["samples"])
    s = work["samples"]
    cnn = onboard(_request(work, "digits_cnn", s / "digits_cnn.onnx", inputs=s / "digits_cnn.inputs.npz",
                           torchscript=s / "digits_cnn.torchscript.pt", description="sample CNN on load_digits"))
    tree = onboard(_request(work, "digits_tree", b.save(b.tree_ensemble(), s / "tree.onnx")))
    return {"summary": summary, "digits_cnn": cnn, "digits_tree": tree}


@pytest.fixture(scope="module")
def platform(work: dict[str, Path], onboarded: dict[str, dict]) -> Iterator[LocalPlatform]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(USER_MODELS_ENV, str(work["store"]))
        p = LocalPlatform(fleet_path=work["fleet"], workdir=work["run"], artifacts=work["artifacts"],
                          ports=PlatformPorts(http=0, grpc=0), interval_s=0.5)
        p.start()
        try:
            yield p
        finally:
            p.stop()


def held_out(work: dict[str, Path], n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(work["samples"] / "digits_cnn.holdout.npz")
    return data["image"][-n:].astype(np.float32), data["label"][-n:]


def test_the_sample_classifier_is_accurate_on_held_out_images(onboarded):
    assert onboarded["summary"]["holdout_accuracy"] >= 0.95
    assert onboarded["summary"]["holdout_images"] == 450


def test_onboarding_compiles_gates_profiles_and_registers(onboarded, work):
    report = onboarded["digits_cnn"]
    status = {f"{v['target']}/{v['variant']}": v["status"] for v in report["variants"]}
    assert status["onnxruntime/fp32"] == "accepted" and status["onnxruntime/ort_optimized"] == "accepted"
    assert status["tensorrt/fp16_engine"] == "skipped" and status["neuron/neuron_fp32"] == "skipped"
    details = {v["variant"]: v["detail"] for v in report["variants"]}
    assert "no TensorRT here" in details["fp16_engine"] and "no torch-neuronx here" in details["neuron_fp32"]
    assert report["served_by_pools"] == ["cpu", "gpu", "inf2"]
    cpu = yaml.safe_load((work["profiles"] / "digits_cnn.cpu.yaml").read_text())
    assert cpu["provenance"]["kind"] == "measured" and "onboarded sample inputs" in cpu["provenance"]["source"]
    for acc in ("gpu", "inferentia"):
        text = (work["profiles"] / f"digits_cnn.{acc}.yaml").read_text()
        assert text.startswith("# ESTIMATE") and "source: 'ESTIMATE" in text
    assert (work["artifacts"] / "onboarding" / "digits_cnn" / "triton" / "gpu" / "digits_cnn" / "config.pbtxt").exists()
    tree = onboarded["digits_tree"]
    assert {a: p["runs_on"] for a, p in tree["placement"].items()} == {"gpu": "host_cpu", "inferentia": "host_cpu"}


def _weighted(platform: LocalPlatform, model: str, tier: str) -> set[str]:
    for r in platform.status()["routes"]:
        if r["model"] == model and r["tier"] == tier:
            return {p for p, w in r["weights"].items() if w > 0}
    raise AssertionError(f"no route for {model}/{tier}")


@pytest.mark.parametrize("tier", TIERS)
def test_held_out_images_get_their_label_through_envoy_over_http(platform, work, tier):
    images, labels = held_out(work)
    sess = ort.InferenceSession(str(work["samples"] / "digits_cnn.onnx"), providers=["CPUExecutionProvider"])
    direct_probs, direct_label = sess.run(["probabilities", "label"], {"image": images})
    url = f"http://{platform.describe()['http_endpoint']}/v2/models/digits_cnn/infer"
    weighted_before = _weighted(platform, "digits_cnn", tier)
    served = set()
    for i in range(len(images)):
        body = {"inputs": [{"name": "image", "shape": [1, 1, 8, 8], "datatype": "FP32",
                            "data": images[i].reshape(-1).tolist()}]}
        r = requests.post(url, json=body, headers={"x-sla-tier": tier}, timeout=30)
        assert r.status_code == 200, r.text
        served.add(r.headers["x-served-by"])
        outputs = {o["name"]: o for o in r.json()["outputs"]}
        assert outputs["label"]["data"] == [int(labels[i])], f"image {i} served by {r.headers['x-served-by']}"
        assert int(direct_label[i, 0]) == int(labels[i])
        np.testing.assert_allclose(outputs["probabilities"]["data"], direct_probs[i], atol=1e-5)
    # The policy may move weights while the requests run: each pool that served had weight before or after.
    assert served <= weighted_before | _weighted(platform, "digits_cnn", tier)


def test_held_out_images_get_their_label_through_envoy_over_grpc(platform, work):
    images, labels = held_out(work)
    client = grpcclient.InferenceServerClient(platform.describe()["grpc_endpoint"])
    try:
        for tier in TIERS:
            inp = grpcclient.InferInput("image", list(images.shape), "FP32")
            inp.set_data_from_numpy(images)
            result = client.infer("digits_cnn", [inp], headers={"x-sla-tier": tier}, client_timeout=30)
            assert result.as_numpy("label").reshape(-1).tolist() == labels.tolist()
    finally:
        client.close()


def test_every_tier_has_a_route_for_the_onboarded_models(platform):
    for model in ("digits_cnn", "digits_tree"):
        for tier in TIERS:
            assert _weighted(platform, model, tier), f"{model}/{tier} has no pool with weight"


def test_the_tree_ensemble_answers_as_onnx_runtime_does(platform, work):
    from sklearn.datasets import load_digits

    x = load_digits().data[-3:].astype(np.float32)
    sess = ort.InferenceSession(str(work["samples"] / "tree.onnx"), providers=["CPUExecutionProvider"])
    want = sess.run(["label"], {"X": x})[0]
    url = f"http://{platform.describe()['http_endpoint']}/v2/models/digits_tree/infer"
    for tier in TIERS:
        body = {"inputs": [{"name": "X", "shape": [3, 64], "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
        r = requests.post(url, json=body, headers={"x-sla-tier": tier}, timeout=30)
        assert r.status_code == 200, r.text
        label = next(o for o in r.json()["outputs"] if o["name"] == "label")
        assert label["shape"] == [3, 1] and label["data"] == want.tolist()


def test_remove_takes_the_model_off_every_pool_from_the_next_start(onboarded, work, platform):
    rc = model_repository_main(["remove", "digits_tree", "--store", str(work["store"]), "--artifacts",
                                str(work["artifacts"]), "--profiles", str(work["profiles"])])
    assert rc == 0
    assert not list(work["profiles"].glob("digits_tree.*")) and not (work["store"] / "digits_tree.yaml").exists()
    assert not (work["artifacts"] / "digits_tree.onnx").exists()
    from model_repository.definitions import load_models
    from router_lib.config import load_fleet

    fleet = load_fleet(work["fleet"], tuple(load_models(user_dir=work["store"])))
    assert all("digits_tree" not in p.models for p in fleet.pools)
    assert all("digits_cnn" in p.models for p in fleet.pools)
