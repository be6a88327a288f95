"""Model delivery (issue 13, blockers 8, 10, 11): what `make deploy-models` uploads loads in a real
tritonserver with nothing of this repository beside it; GPU-targeted graphs are ones TensorRT can
parse; one pool's missing artifacts do not stop the others from being uploaded."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import requests

from deploy import cli
from deploy.model_repositories import (
    BOOTSTRAP_MARKER,
    TENSORRT_DOMAINS,
    make_self_contained,
    onnx_domains,
    placement_on_gpu,
    write_pool_repository,
)
from fleet.triton_process import TritonProcess, prepare_backend_dir
from model_repository.definitions import load_models
from model_repository.triton_config import Target, write_model
from tests.deploy.conftest import REPO

MODELS = load_models()


def _copy_out(repo: Path, tmp_path: Path) -> Path:
    """What `aws s3 sync` uploads and Triton later reads: plain files, outside this repository."""
    out = tmp_path / "s3-copy"
    shutil.copytree(repo, out, symlinks=False)
    assert REPO not in out.resolve().parents
    return out


def _triton(tmp_path: Path, repository: Path, name: str) -> TritonProcess:
    backends = prepare_backend_dir(tmp_path / "backends")
    return TritonProcess(name, repository, backends, tmp_path / f"{name}.log")


@pytest.mark.integration
def test_the_uploaded_cpu_repository_loads_and_serves_outside_the_repository(tmp_path: Path, artifacts: Path) -> None:
    written = write_pool_repository(tmp_path / "cpu", "cpu", [MODELS["text_embedding"], MODELS["digits_classifier"]],
                                    artifacts)
    assert not [p for p in written.rglob("*") if p.is_symlink()], "links would upload the link, or nothing"
    triton = _triton(tmp_path, _copy_out(written, tmp_path), "deployable")
    try:
        triton.start()
        triton.wait_ready(timeout_s=120)
        body = {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["a cluster serves this"]}]}
        r = requests.post(f"http://{triton.http_url}/v2/models/text_embedding/infer", json=body, timeout=30)
        assert r.status_code == 200, r.text
        embedding = np.array(r.json()["outputs"][0]["data"], dtype=np.float32)
        assert embedding.shape == (384,) and abs(float(np.linalg.norm(embedding)) - 1.0) < 1e-3
        digits = {"inputs": [{"name": "float_input", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}
        r = requests.post(f"http://{triton.http_url}/v2/models/digits_classifier/infer", json=digits, timeout=30)
        assert r.status_code == 200, r.text
    finally:
        triton.stop()


@pytest.mark.integration
def test_the_repository_as_written_for_local_use_does_not_load_outside_the_repository(tmp_path: Path,
                                                                                       artifacts: Path) -> None:
    """Blocker 8 reintroduced: links dereferenced but no vendoring -> the tokenizer's bootstrap
    looks for the source tree, finds none, and --exit-on-error takes the server down."""
    local = tmp_path / "local"
    write_model(local, MODELS["text_embedding"], Target("cpu"), artifacts)
    copied = _copy_out(local, tmp_path)
    assert BOOTSTRAP_MARKER in (copied / "text_embedding_tokenizer" / "1" / "model.py").read_text()
    triton = _triton(tmp_path, copied, "local-layout")
    try:
        triton.start()
        with pytest.raises(RuntimeError, match="exited"):
            triton.wait_ready(timeout_s=120)
        log = triton.log_path.read_text(errors="replace")
        assert "failed to load 'text_embedding_tokenizer'" in log and "_bootstrap.py" in log
    finally:
        triton.stop()


def test_self_contained_repositories_vendor_what_their_python_models_import(tmp_path: Path, artifacts: Path) -> None:
    repo = tmp_path / "repo"
    write_model(repo, MODELS["text_embedding"], Target("cpu"), artifacts)
    vendored = make_self_contained(repo)
    assert vendored == ["text_embedding_tokenizer/1/model_repository.text_tokenizer"]
    model_py = (repo / "text_embedding_tokenizer" / "1" / "model.py").read_text()
    assert BOOTSTRAP_MARKER not in model_py and "_boot" not in model_py


def test_gpu_graphs_are_tensorrt_parsable_or_placed_on_the_host_cpu(tmp_path: Path, artifacts: Path) -> None:
    """Blocker 10: the digits classifier is an ONNX-ML tree ensemble; it must never be configured
    as a TensorRT plan (TensorRT cannot parse ai.onnx.ml)."""
    assert "ai.onnx.ml" in onnx_domains(artifacts / MODELS["digits_classifier"].accelerated.artifact)
    assert onnx_domains(artifacts / MODELS["text_embedding"].accelerated.artifact) <= TENSORRT_DOMAINS
    assert placement_on_gpu(MODELS["digits_classifier"], artifacts) == "cpu"
    assert placement_on_gpu(MODELS["text_embedding"], artifacts) == "gpu"
    (artifacts_copy := tmp_path / "artifacts").mkdir()
    for name in ("digits_classifier.onnx", "text_embedding.onnx", "tokenizer.json"):
        (artifacts_copy / name).symlink_to(artifacts / name)
    (artifacts_copy / "text_embedding.plan").write_bytes(b"stand-in: only the config is read here")
    repo = write_pool_repository(tmp_path / "gpu", "gpu", [MODELS["text_embedding"], MODELS["digits_classifier"]],
                                 artifacts_copy)
    for config in repo.glob("*/config.pbtxt"):
        text = config.read_text()
        if 'platform: "tensorrt_plan"' in text:
            onnx_name = {"text_embedding_onnx": "text_embedding.onnx"}.get(config.parent.name)
            assert onnx_name, f"{config.parent.name} is a TensorRT plan but has no default-domain ONNX source"
    digits = (repo / "digits_classifier" / "config.pbtxt").read_text()
    assert 'backend: "onnxruntime"' in digits and "KIND_CPU" in digits and "tensorrt" not in digits


def test_a_pool_missing_its_artifacts_does_not_stop_the_others_from_being_uploaded(monkeypatch, tmp_path: Path) -> None:
    """Blocker 11: deploy.model_repositories exits 3 naming the refused pools; deploy-models still
    uploads the repositories that were written, then fails."""
    steps: list[list[str]] = []

    def fake_step(argv, *, capture=False, stdin=None, cwd=REPO, also_ok=()):  # noqa: ANN001
        steps.append(list(argv))
        if "deploy.model_repositories" in argv:
            assert 3 in also_ok, "exit 3 (some pools refused) must not abort the upload of the others"
            return 3, f"cpu\t{tmp_path}/cpu\n"
        return 0, json_outputs if argv[-2:] == ["-json"] or "output" in argv else ""

    json_outputs = '{"model_bucket_name": {"value": "models-bucket"}}'
    monkeypatch.setattr(cli, "run_step", fake_step)
    monkeypatch.setattr(cli, "terraform", lambda *a, capture=False: json_outputs if capture else "")
    assert cli.deploy_models("state-bucket", None) == 3
    uploads = [s for s in steps if s[:3] == ["aws", "s3", "sync"]]
    assert uploads and uploads[0][-1] == "s3://models-bucket/cpu/"


def test_the_listing_of_written_repositories_is_parsed_strictly() -> None:
    assert cli.written_repositories("cpu\t/x/cpu\ngpu\t/x/gpu\n") == [("cpu", "/x/cpu"), ("gpu", "/x/gpu")]
    with pytest.raises(ValueError, match="pool<TAB>directory"):
        cli.written_repositories("cpu /x/cpu")


def test_inferentia_gets_neuron_traces_and_a_cpu_trace_is_refused(tmp_path: Path, artifacts: Path) -> None:
    """High item: Inferentia was handed build/models' CPU TorchScript. Now only a torch_neuronx
    trace under build/models/neuron/ qualifies, recognised by its calls into the Neuron runtime."""
    from deploy.model_repositories import is_neuron_trace, missing_artifacts

    model = MODELS["text_embedding"]
    name = model.accelerated.torchscript_artifact
    assert not is_neuron_trace(artifacts / name)
    staged = tmp_path / "artifacts"
    (staged / "neuron").mkdir(parents=True)
    assert missing_artifacts("inferentia", [model], staged) == [f"{staged}/neuron/{name} (torch_neuronx trace)"]
    (staged / "neuron" / name).symlink_to(artifacts / name)
    assert "a CPU torch.jit trace" in missing_artifacts("inferentia", [model], staged)[0]
    import zipfile

    with zipfile.ZipFile(staged / "neuron" / "traced.pt", "w") as archive:  # the shape of a Neuron trace's code
        archive.writestr("traced/code/__torch__.py",
                         "def forward(self, x):\n  return torch.ops.neuron.forward_v2([x], self.model)\n")
    assert is_neuron_trace(staged / "neuron" / "traced.pt")


@pytest.mark.integration
def test_the_deployed_inferentia_model_refuses_to_run_without_torch_neuronx(tmp_path: Path, artifacts: Path) -> None:
    """High item: the Neuron model used to fall back to the CPU silently when torch_neuronx was
    missing; the deployed one fails to load, naming it (this machine has no torch_neuronx)."""
    repo = tmp_path / "inf2"
    write_model(repo, MODELS["text_embedding"], Target("inferentia"), artifacts)
    make_self_contained(repo)
    onnx_dir = repo / "text_embedding_onnx"
    assert "NEURON = False" not in (onnx_dir / "1" / "model.py").read_text()
    triton = _triton(tmp_path, _copy_out(repo, tmp_path), "inf2-without-neuron")
    try:
        triton.start()
        with pytest.raises(RuntimeError, match="exited"):
            triton.wait_ready(timeout_s=120)
        assert "torch_neuronx is missing" in triton.log_path.read_text(errors="replace")
    finally:
        triton.stop()


def test_a_pool_marked_share_tiers_is_uploaded_with_its_tiers_priority_levels(tmp_path: Path, artifacts: Path) -> None:
    """The cluster's repositories follow the fleet file's ``share_tiers`` as the local ones do."""
    from deploy.model_repositories import main
    from router_lib.config import load_fleet
    from router_lib.priority import tier_priorities
    from tests.fleet_files import fleet_copy

    fleet_copy(tmp_path, share_tiers=frozenset({"cpu"}))
    assert main(["--fleet", str(tmp_path / "fleet.yaml"), "--out", str(tmp_path / "out"), "--pools", "cpu",
                 "--artifacts", str(artifacts)]) == 0
    levels = len(tier_priorities(load_fleet(tmp_path / "fleet.yaml").tiers).by_tier())
    assert "priority_levels" not in (tmp_path / "out" / "cpu" / "text_embedding_tokenizer" / "config.pbtxt").read_text()
    for config in ("text_embedding_onnx", "digits_classifier"):
        text = (tmp_path / "out" / "cpu" / config / "config.pbtxt").read_text()
        # the tiers' levels, then the batcher wake-up level the pod's batcher-wake container uses
        assert f"priority_levels: {levels + 1}" in text and "batcher_wake_level" in text, config
    fleet_copy(tmp_path)
    assert main(["--fleet", str(tmp_path / "fleet.yaml"), "--out", str(tmp_path / "out"), "--pools", "cpu",
                 "--artifacts", str(artifacts)]) == 0
    assert "priority_levels" not in (tmp_path / "out" / "cpu" / "digits_classifier" / "config.pbtxt").read_text()
