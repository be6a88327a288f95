"""Generated Triton configs per target (golden files: UPDATE_GOLDEN=1 rewrites them), the
TensorRT build step up to where TensorRT is needed, and the repository layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from model_repository.definitions import load_models
from model_repository.tensorrt import Toolchain, build_engines, find_toolchain, trtexec_command
from model_repository.triton_config import (
    Target,
    accelerated_config,
    ensemble_config,
    target_for_pool,
    to_pbtxt,
    tokenizer_config,
    write_repository,
)
from router_lib.config import load_fleet

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("golden")
MODELS = load_models()
FLEET = load_fleet(ROOT / "fleet.yaml")


def _targets() -> list[tuple[str, Target]]:
    inf2 = FLEET.pool("inf2")
    return [
        ("cpu", Target("cpu", instances=2)),
        ("gpu", Target("gpu", instances=1)),
        ("inferentia", Target("inferentia", instances=2)),
        ("emulated-inf2", target_for_pool(inf2, FLEET.profile("text_embedding", inf2.accelerator))),  # type: ignore[arg-type]
    ]


CASES = [(t, m) for t, _ in _targets() for m in MODELS if not (t.endswith("inf2") or t == "inferentia") or m == "text_embedding"]


@pytest.mark.parametrize(("target", "model"), CASES, ids=[f"{t}-{m}" for t, m in CASES])
def test_generated_config_matches_golden(target, model):
    tgt = dict(_targets())[target]
    m = MODELS[model]
    text = to_pbtxt(accelerated_config(m, tgt))
    if m.kind == "ensemble":
        text += "\n# --- tokenizer ---\n" + to_pbtxt(tokenizer_config(m)) + "\n# --- ensemble ---\n" + to_pbtxt(ensemble_config(m))
    golden = GOLDEN / f"{target}.{model}.pbtxt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"missing golden {golden}; run with UPDATE_GOLDEN=1"
    assert text == golden.read_text()


def test_cpu_config_is_the_one_the_official_onnxruntime_backend_reads():
    cfg = accelerated_config(MODELS["text_embedding"], Target("cpu", instances=2))
    assert cfg.backend == "onnxruntime" and cfg.default_model_filename == "model.onnx"
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 0
    # Round-trips through Triton's own schema: no invented fields.
    text_format.Parse(to_pbtxt(cfg), mc.ModelConfig())


def test_gpu_config_uses_tensorrt_and_inferentia_uses_the_neuron_python_model():
    gpu = accelerated_config(MODELS["text_embedding"], Target("gpu"))
    assert gpu.platform == "tensorrt_plan" and gpu.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    inf = accelerated_config(MODELS["text_embedding"], Target("inferentia", instances=2))
    assert inf.backend == "python" and inf.parameters["artifact"].string_value == "model.pt"


def test_a_model_without_torchscript_has_no_inferentia_variant():
    with pytest.raises(ValueError, match="no Inferentia variant"):
        accelerated_config(MODELS["digits_classifier"], Target("inferentia"))


def test_emulated_config_says_emulated_and_carries_the_profile():
    inf2 = FLEET.pool("inf2")
    cfg = accelerated_config(MODELS["text_embedding"], target_for_pool(inf2, FLEET.profile("text_embedding", inf2.accelerator)))  # type: ignore[arg-type]
    p = {k: v.string_value for k, v in cfg.parameters.items()}
    assert cfg.backend == "emulated" and p["emulated"] == "true" and p["pool"] == "inf2"
    assert p["accelerator"] == "inferentia" and p["latency_ms_by_batch"] == '{"1": 1.0, "16": 10.9}'
    assert cfg.instance_group[0].count == 2  # one per NeuronCore, from the profile


def test_ensemble_batch_size_never_exceeds_its_steps():
    m = MODELS["text_embedding"]
    ens, tok, acc = ensemble_config(m), tokenizer_config(m), accelerated_config(m, Target("cpu"))
    assert ens.max_batch_size <= min(tok.max_batch_size, acc.max_batch_size)


def test_trtexec_command_line_builds_the_dynamic_shape_profile(tmp_path):
    cmd = trtexec_command("/usr/bin/trtexec", tmp_path / "text_embedding.onnx", tmp_path / "text_embedding.plan")
    assert cmd[0] == "/usr/bin/trtexec" and f"--onnx={tmp_path / 'text_embedding.onnx'}" in cmd
    assert "--minShapes=input_ids:1x16,attention_mask:1x16" in cmd
    assert "--maxShapes=input_ids:32x256,attention_mask:32x256" in cmd
    assert "--fp16" in cmd and f"--saveEngine={tmp_path / 'text_embedding.plan'}" in cmd


def test_tensorrt_step_says_skipped_with_the_reason_when_absent(tmp_path):
    result = build_engines(tmp_path, Toolchain("none", reason="no TensorRT here: test"))
    assert result == "skipped: no TensorRT here: test"
    assert list(tmp_path.iterdir()) == []  # nothing faked


def test_this_machine_has_no_tensorrt_and_says_so():
    tc = find_toolchain()
    if tc.kind != "none":
        pytest.skip(f"TensorRT found ({tc.kind}); the skip path is covered above")
    assert "no TensorRT here" in tc.reason


def test_repository_layout_links_artifacts(tmp_path, artifacts):
    inf2 = FLEET.pool("inf2")
    t = target_for_pool(inf2, FLEET.profile("text_embedding", inf2.accelerator))  # type: ignore[arg-type]
    repo = write_repository(tmp_path / "repo", [(MODELS["text_embedding"], t)], artifacts)
    assert sorted(p.name for p in repo.iterdir()) == ["text_embedding", "text_embedding_onnx", "text_embedding_tokenizer"]
    assert (repo / "text_embedding_onnx" / "1" / "model.onnx").resolve() == (artifacts / "text_embedding.onnx").resolve()
    assert (repo / "text_embedding_tokenizer" / "1" / "tokenizer.json").exists()


def test_missing_artifact_tells_how_to_build(tmp_path):
    with pytest.raises(FileNotFoundError, match="make models"):
        write_repository(tmp_path / "repo", [(MODELS["digits_classifier"], Target("cpu"))], tmp_path / "nothing")
