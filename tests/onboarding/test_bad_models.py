"""Every way a model or a request can be unfit gets its own precise error, and changes nothing:
no description, artifact, profile or staging file is left behind (the whole folder tree is compared
before and after)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

from model_repository.onnx_inspect import OnboardingError
from profiler.onboarding import OnboardRequest, onboard
from tests.onboarding import onnx_builders as b

ROOT = Path(__file__).resolve().parents[2]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    d = {k: tmp_path / k for k in ("store", "artifacts", "profiles", "inputs")}
    for p in d.values():
        p.mkdir()
    # An onboarded model already in the store, so that its name is taken.
    (d["store"] / "already_here.yaml").write_text(
        "name: already_here\ndescription: fixture\nmax_batch_size: 8\n"
        "inputs: [{name: x, data_type: TYPE_FP32, dims: [4]}]\noutputs: [{name: y, data_type: TYPE_FP32, dims: [3]}]\n"
        "artifact: already_here.onnx\nplacement: {gpu: {runs_on: accelerator, reason: r}, "
        "inferentia: {runs_on: host_cpu, reason: r}}\n")
    return d


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


# (id, builds the request's files in tmp -> overrides of OnboardRequest, expected error substring)
Case = tuple[str, Callable[[Path, dict[str, Path]], dict], str]
CASES: list[Case] = [
    ("file-missing", lambda t, d: {"onnx": t / "nope.onnx"}, "nope.onnx: file not found"),
    ("not-onnx", lambda t, d: {"onnx": _write(t / "notes.onnx", b"this is not a protobuf \xff\xfe")},
     "not an ONNX model"),
    ("float64-input", lambda t, d: {"onnx": b.save(b.linear(in_type=TensorProto.DOUBLE), t / "m.onnx")},
     "input 'x' has element type DOUBLE, which the pools cannot serve; supported: FLOAT, FLOAT16, INT64, INT32, "
     "UINT8, BOOL (cast to float32 in the graph"),
    ("string-output", lambda t, d: {"onnx": b.save(b.linear(out_type=TensorProto.STRING), t / "m.onnx")},
     "output 'y' has element type STRING"),
    ("no-batch-axis", lambda t, d: {"onnx": b.save(b.linear(in_shape=[1, 4]), t / "m.onnx")},
     "input 'x' has a fixed first dimension 1 (shape [1, 4]): the pools batch requests along axis 0, so it must be "
     "dynamic; export with dynamic_axes={'x': {0: 'batch'}}"),
    ("scalar-input", lambda t, d: {"onnx": b.save(b.linear(in_shape=[]), t / "m.onnx")},
     "input 'x' is a scalar"),
    ("opset-too-new", lambda t, d: {"onnx": b.save(b.linear(opset=23), t / "m.onnx")},
     "opset 23 of ai.onnx (default domain) is outside what the pools can run (9..21"),
    ("opset-too-old", lambda t, d: {"onnx": b.save(b.linear(opset=7), t / "m.onnx")},
     "opset 7 of ai.onnx (default domain) is outside what the pools can run (9..21"),
    ("ir-version-too-new", lambda t, d: {"onnx": b.save(_ir(b.linear(), 11), t / "m.onnx")},
     "IR version 11 is newer than Triton 24.10's ONNX Runtime 1.19 reads (<= 10)"),
    ("custom-domain", lambda t, d: {"onnx": b.save(b.custom_domain(), t / "m.onnx")},
     "operator domain 'com.example' (ops ['MagicOp']) is a custom domain no pool can run"),
    ("sequence-output", lambda t, d: {"onnx": b.save(b.sequence_output(), t / "m.onnx")},
     "output 'seq' is a sequence, not a tensor: Triton serves tensors only (skl2onnx: convert with"),
    ("checker-rejects", lambda t, d: {"onnx": b.save(b.dangling_input(), t / "m.onnx")},
     "onnx.checker rejects the graph"),
    ("batch-dependent", lambda t, d: {"onnx": b.save(b.batch_dependent(), t / "m.onnx")},
     "an item's outputs depend on the other items in its batch"),
    ("name-built-in", lambda t, d: {"name": "digits_classifier"},
     "model name 'digits_classifier' is already taken by a built-in model"),
    ("name-composing-step", lambda t, d: {"name": "text_embedding_tokenizer"},
     "already taken: a step of the built-in model 'text_embedding'"),
    ("name-onboarded", lambda t, d: {"name": "already_here"},
     "model name 'already_here' is already taken by an onboarded model"),
    ("name-invalid", lambda t, d: {"name": "My-Model"},
     "model name 'My-Model' must start with a lowercase letter and use only a-z, 0-9 and '_'"),
    ("max-batch-zero", lambda t, d: {"max_batch_size": 0}, "--max-batch-size must be in 1..1024, got 0"),
    ("inputs-missing-array", lambda t, d: {"inputs": _npz(t / "s.npz", other=np.zeros((2, 4), np.float32))},
     "arrays must be named as the model's inputs ['x']; missing ['x']; unexpected ['other']"),
    ("inputs-wrong-shape", lambda t, d: {"inputs": _npz(t / "s.npz", x=np.zeros((2, 5), np.float32))},
     "array 'x' has shape [2, 5]; dimension 1 must be 4"),
    ("inputs-wrong-dtype", lambda t, d: {"inputs": _npz(t / "s.npz", x=np.zeros((2, 4), np.int64))},
     "array 'x' has dtype int64, the input is TYPE_FP32 (float32)"),
    ("tolerance-unknown-output", lambda t, d: {"tolerances": {"nope": __import__(
        "model_repository.user_models", fromlist=["OutputTolerance"]).OutputTolerance()}},
     "--tolerance nope: the model has no output 'nope'; outputs: ['y', 'label']"),
]


def _ir(model, version: int):  # type: ignore[no-untyped-def]
    model.ir_version = version
    return model


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_model_gets_its_precise_error_and_changes_nothing(tmp_path, dirs, make, expected):
    good = b.save(b.linear(), dirs["inputs"] / "good.onnx")
    overrides = make(dirs["inputs"], dirs)
    req = OnboardRequest(**{"name": "new_model", "onnx": good, "store": dirs["store"], "artifacts": dirs["artifacts"],
                            "profiles": dirs["profiles"], **overrides})
    before = _tree(tmp_path)
    with pytest.raises(OnboardingError) as err:
        onboard(req)
    assert expected in str(err.value)
    assert _tree(tmp_path) == before


def test_every_problem_of_a_model_is_listed_at_once(tmp_path):
    """A user fixes them in one export: fixed batch axis and float64 are both named."""
    path = b.save(b.linear(in_type=TensorProto.DOUBLE, in_shape=[1, 4]), tmp_path / "m.onnx")
    req = OnboardRequest("m", path, tmp_path / "s", tmp_path / "a", tmp_path / "p")
    with pytest.raises(OnboardingError) as err:
        onboard(req)
    assert "element type DOUBLE" in str(err.value) and "fixed first dimension 1" in str(err.value)


def test_the_command_line_reports_the_error_and_exits_2(tmp_path):
    """Through `python -m model_repository add` (which hands over to the profiler's process)."""
    bad = b.save(b.linear(in_shape=[1, 4]), tmp_path / "bad.onnx")
    proc = subprocess.run(
        [sys.executable, "-m", "model_repository", "add", "--name", "bad_one", "--onnx", str(bad),
         "--store", str(tmp_path / "store"), "--artifacts", str(tmp_path / "art"), "--profiles", str(tmp_path / "p")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr
    assert "error: --onnx" in proc.stderr and "fixed first dimension 1" in proc.stderr
    assert not (tmp_path / "store").exists() and not (tmp_path / "art").exists()


def test_registration_that_fails_removes_everything_it_wrote(tmp_path, dirs):
    """Step 6 puts files in place, then proves the fleet serves the model; a fleet whose pools all
    list their models (none this one) fails that proof, and the step takes back what it wrote."""
    import shutil

    import yaml

    from profiler.onboarding import check_request, estimates, register

    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump({
        "prices": str(ROOT / "data" / "prices.yaml"), "tiers": str(ROOT / "data" / "tiers.yaml"),
        "profiles": str(dirs["profiles"]),
        "pools": [{"name": "cpu", "accelerator": "cpu", "instance_type": "c7g.xlarge", "replicas": 1, "mode": "real",
                   "models": ["already_here"]}]}))
    (dirs["profiles"] / "already_here.cpu.yaml").write_text(yaml.safe_dump({
        "model": "already_here", "accelerator": "cpu", "instance_type": "c7g.xlarge", "instances_per_replica": 1,
        "max_batch_size": 8, "latency_ms_by_batch": {1: 1.0}, "provenance": {"kind": "measured", "date": "2026-11-29",
                                                                              "machine": "test"}}))
    good = b.save(b.linear(), dirs["inputs"] / "good.onnx")
    req = OnboardRequest("new_model", good, dirs["store"], dirs["artifacts"], dirs["profiles"], fleet=fleet)
    checked = check_request(req)
    staging = tmp_path / "staging"
    staging.mkdir()
    shutil.copy(good, staging / "new_model.onnx")
    cpu = {"model": "new_model", "accelerator": "cpu", "instance_type": "c7g.xlarge", "instances_per_replica": 1,
           "max_batch_size": 64, "latency_ms_by_batch": {1: 0.5, 64: 0.9}, "p99_over_p50": 2.0,
           "provenance": {"kind": "measured", "date": "2026-11-29", "machine": "test"}}
    before = {k: _tree(v) for k, v in dirs.items()}
    with pytest.raises(OnboardingError, match="no pool serves new_model: every pool lists its models"):
        register(req, checked, staging, {"cpu": cpu, **estimates(checked, cpu)}, {})
    assert {k: _tree(v) for k, v in dirs.items()} == before


def test_an_output_without_a_declared_shape_gets_it_from_shape_inference(tmp_path):
    from model_repository.onnx_inspect import check_onnx

    model = b.linear()
    model.graph.output[0].type.tensor_type.ClearField("shape")
    sig, _ = check_onnx(b.save(model, tmp_path / "m.onnx"))
    assert sig.outputs[0].shape == ("batch", 3)
