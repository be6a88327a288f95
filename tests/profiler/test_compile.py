"""Compile step: accuracy gate (real ORT quantisation of a tiny model), skipped toolchains, and the
command lines / builder calls the GPU and Neuron builds would make."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_repository import tensorrt
from model_repository.definitions import load_models
from profiler.accuracy import outputs_check
from profiler.compile import (
    ACCEPTED,
    BUILT,
    REJECTED,
    SKIPPED,
    compile_neuron,
    compile_onnxruntime,
    compile_tensorrt,
    neuron_trace_calls,
)
from tests.profiler.builders import add_model, matmul_model

MODELS = load_models()


def _reference_check(onnx_path: Path, min_cosine: float):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 64)).astype(np.float32)} for _ in range(16)]
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    reference = np.concatenate([sess.run(["y"], f)[0] for f in feeds])
    return outputs_check(feeds, "y", reference, min_cosine)


def test_quantised_variant_that_breaks_the_threshold_is_rejected_with_the_reason(tmp_path: Path) -> None:
    src = matmul_model(tmp_path / "tiny.onnx")
    [v] = compile_onnxruntime(src, tmp_path / "out", _reference_check(src, min_cosine=0.999999),
                              variants=("int8_per_tensor",))
    assert v.status == REJECTED
    assert v.detail.startswith("rejected: fails the accuracy gate: min cosine to the fp32 reference")
    assert "< threshold 0.999999" in v.detail
    assert v.path is None and not (tmp_path / "out" / "tiny.int8_per_tensor.onnx").exists()


def test_the_same_variant_passes_a_looser_gate_and_fp32_variants_pass_a_strict_one(tmp_path: Path) -> None:
    src = matmul_model(tmp_path / "tiny.onnx")
    loose = compile_onnxruntime(src, tmp_path / "a", _reference_check(src, 0.9), variants=("int8_per_channel",))
    assert loose[0].status == ACCEPTED and loose[0].path is not None and loose[0].path.exists()
    strict = compile_onnxruntime(src, tmp_path / "b", _reference_check(src, 0.999999),
                                 variants=("fp32", "ort_optimized"))
    assert [v.status for v in strict] == [ACCEPTED, ACCEPTED]


def test_a_graph_with_nothing_to_quantise_is_skipped_not_faked(tmp_path: Path) -> None:
    src = add_model(tmp_path / "add.onnx")
    [v] = compile_onnxruntime(src, tmp_path / "out", lambda p: pytest.fail("must not be checked"),
                              variants=("int8_per_channel",))
    assert v.status == SKIPPED and v.detail.startswith("skipped: nothing to quantise")
    assert not any((tmp_path / "out").iterdir())


# --- TensorRT ------------------------------------------------------------------------------------

def test_missing_tensorrt_is_skipped_with_the_reason(tmp_path: Path) -> None:
    v = compile_tensorrt(tmp_path / "m.onnx", tmp_path, tensorrt.Toolchain("none", reason="no TensorRT here: test"))
    assert (v.status, v.detail) == (SKIPPED, "skipped: no TensorRT here: test")
    assert not any(tmp_path.iterdir())


def test_on_this_machine_tensorrt_is_skipped() -> None:
    if tensorrt.find_toolchain().kind != "none":
        pytest.skip("TensorRT is installed here")
    v = compile_tensorrt(Path("x.onnx"), Path("/nonexistent"))
    assert v.status == SKIPPED and v.detail.startswith("skipped: no TensorRT here")


def test_trtexec_command_line_builds_an_fp16_engine_with_the_shape_profile(tmp_path: Path) -> None:
    ran: list[list[str]] = []
    v = compile_tensorrt(Path("/m/text_embedding.onnx"), tmp_path, tensorrt.Toolchain("trtexec", trtexec="/opt/trt/trtexec"),
                         run=ran.append)
    assert v.status == BUILT and v.path == tmp_path / "text_embedding.plan"
    assert ran == [[
        "/opt/trt/trtexec", "--onnx=/m/text_embedding.onnx", f"--saveEngine={tmp_path}/text_embedding.plan",
        "--skipInference", "--minShapes=input_ids:1x16,attention_mask:1x16",
        "--optShapes=input_ids:8x64,attention_mask:8x64", "--maxShapes=input_ids:32x256,attention_mask:32x256",
        "--fp16",
    ]]


class _FakeTensorRT(types.ModuleType):
    """Records the builder calls ``model_repository.tensorrt.build_with_python_api`` makes."""

    def __init__(self) -> None:
        super().__init__("tensorrt")
        self.calls: list[tuple[Any, ...]] = []
        rec = self.calls

        class Obj:
            def __init__(self, name: str) -> None:
                self.name = name

            def __getattr__(self, attr: str):  # type: ignore[no-untyped-def]
                def call(*args: Any) -> Any:
                    rec.append((f"{self.name}.{attr}", *args))
                    if attr == "parse":
                        return True
                    if attr == "build_serialized_network":
                        return b"ENGINE"
                    return Obj(attr)
                return call

        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda s, level: None})
        self.BuilderFlag = types.SimpleNamespace(FP16="FP16")
        self.Builder = lambda logger: Obj("builder")
        self.OnnxParser = lambda network, logger: Obj("parser")


def test_python_builder_sets_fp16_and_the_shape_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)  # a third-party module that does not exist here
    onnx_path = tmp_path / "text_embedding.onnx"
    onnx_path.write_bytes(b"onnx")
    v = compile_tensorrt(onnx_path, tmp_path, tensorrt.Toolchain("python"))
    assert v.status == BUILT and (tmp_path / "text_embedding.plan").read_bytes() == b"ENGINE"
    names = [c[0] for c in fake.calls]
    assert ("create_builder_config.set_flag", "FP16") in fake.calls
    assert ("create_optimization_profile.set_shape", "input_ids", (1, 16), (8, 64), (32, 256)) in fake.calls
    assert names.index("parser.parse") < names.index("builder.build_serialized_network")


# --- Neuron --------------------------------------------------------------------------------------

def test_missing_torch_neuronx_is_skipped(tmp_path: Path) -> None:
    v = compile_neuron(MODELS["text_embedding"], tmp_path, tmp_path, find=lambda: None)
    assert (v.status, v.detail) == (SKIPPED, "skipped: no torch-neuronx here")
    assert not any(tmp_path.iterdir())


def test_a_model_without_torchscript_has_no_neuron_variant(tmp_path: Path) -> None:
    v = compile_neuron(MODELS["digits_classifier"], tmp_path, tmp_path, find=lambda: pytest.fail("not looked up"))
    assert v.status == SKIPPED and "no TorchScript artifact" in v.detail


def test_neuron_trace_calls_are_one_static_shape_per_batch(tmp_path: Path) -> None:
    calls = neuron_trace_calls(MODELS["text_embedding"], tmp_path, [1, 16], seq_length=128)
    assert [(c.batch_size, c.seq_length, c.output.name) for c in calls] == [
        (1, 128, "text_embedding.neuron.b1.s128.pt"), (16, 128, "text_embedding.neuron.b16.s128.pt")]
    assert calls[0].compiler_args == ("--auto-cast", "none")
    with pytest.raises(ValueError, match="bucket"):
        neuron_trace_calls(MODELS["text_embedding"], tmp_path, [1], seq_length=100)
    with pytest.raises(ValueError, match="outside"):
        neuron_trace_calls(MODELS["text_embedding"], tmp_path, [64])


def test_neuron_trace_is_called_with_example_inputs_and_saved(tmp_path: Path) -> None:
    import dataclasses

    import torch

    class Tiny(torch.nn.Module):
        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return (ids * mask).float().sum(dim=1, keepdim=True)

    ids = torch.ones((1, 16), dtype=torch.int64)
    torch.jit.trace(Tiny(), (ids, ids)).save(str(tmp_path / "tiny.pt"))
    base = MODELS["text_embedding"]
    model = dataclasses.replace(base, accelerated=dataclasses.replace(base.accelerated, torchscript_artifact="tiny.pt"))
    seen: list[tuple[tuple[int, ...], ...]] = []

    class Tracer:
        def trace(self, func: Any, example_inputs: Any, *, compiler_args: Any = None, compiler_workdir: Any = None) -> Any:
            seen.append(tuple(tuple(t.shape) for t in example_inputs))
            assert compiler_args == ["--auto-cast", "none"]
            return torch.jit.trace(func, example_inputs)  # what torch_neuronx returns: a ScriptModule

    v = compile_neuron(model, tmp_path, tmp_path / "out", batch_sizes=(1, 4), tracer=Tracer())
    assert v.status == BUILT
    assert seen == [((1, 128), (1, 128)), ((4, 128), (4, 128))]
    assert (tmp_path / "out" / "text_embedding.neuron.b4.s128.pt").exists()
