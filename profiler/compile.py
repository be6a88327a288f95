"""Compile a model's ONNX into each target's artifact, and gate each on accuracy.

Targets and what "compile" means for each:

* ``onnxruntime`` (CPU pool): the fp32 ONNX as built; an offline graph-optimised copy
  (``optimized_model_filepath`` at ``ORT_ENABLE_EXTENDED``: the portable level -- ``ENABLE_ALL``
  adds layout transforms tied to the build CPU, and c7g is arm64 while this machine is x86); and
  int8 dynamic quantisation (``quantize_dynamic``), per-tensor and per-channel.  Every variant is
  run through the model's accuracy check (``profiler.accuracy``) and is ``accepted`` or
  ``rejected`` with the reason; a variant with nothing to quantise is ``skipped``.
* ``tensorrt`` (GPU pool): an engine via ``model_repository.tensorrt`` (Python builder or
  ``trtexec``).  ``skipped: <reason>`` where neither exists.
* ``neuron`` (Inferentia pool): ``torch_neuronx.trace`` of the TorchScript artifact, one static
  shape per (batch, sequence) bucket.  ``skipped: <reason>`` where torch-neuronx is absent.

Nothing is faked: a skipped target writes no file.  Engines and Neuron graphs can only be checked
for accuracy on their device, so they come back ``built`` (not ``accepted``) from this machine.
"""

from __future__ import annotations

import importlib.util
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from model_repository import tensorrt
from model_repository.definitions import ModelDefinition
from profiler.accuracy import AccuracyCheck

ACCEPTED, REJECTED, SKIPPED, BUILT = "accepted", "rejected", "skipped", "built"
# Node types dynamic quantisation can rewrite (ORT's registry for QDQ-free dynamic mode).
QUANTISABLE_OPS = frozenset({"MatMul", "Gemm", "Conv", "Attention", "LSTM", "EmbedLayerNormalization", "Gather"})
# Node types quantize_dynamic introduces; none of them in the output means nothing was quantised.
QUANTISED_OPS = frozenset({"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul",
                           "MatMulIntegerToFloat", "QLinearMatMul", "DynamicQuantizeLSTM", "QAttention"})


@dataclass(frozen=True)
class Variant:
    """One compiled artifact (or the reason there is none).  ``detail`` is the one-line why."""

    target: str  # onnxruntime | tensorrt | neuron
    name: str
    status: str  # accepted | rejected | skipped | built
    detail: str
    path: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def usable(self) -> bool:
        return self.status in (ACCEPTED, BUILT)

    def line(self) -> str:
        said = self.detail if self.detail.startswith(self.status) else f"{self.status}: {self.detail}"
        return f"{self.target}/{self.name}: {said}"


# --- ONNX Runtime ------------------------------------------------------------------------------

def optimize_onnx(src: Path, dst: Path) -> None:
    """Save ORT's graph-optimised model (``ORT_ENABLE_EXTENDED``, see module docstring)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), sess_options=opts, providers=["CPUExecutionProvider"])


def quantisable_node_count(path: Path) -> int:
    import onnx

    return sum(1 for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type in QUANTISABLE_OPS)


def quantize_int8(src: Path, dst: Path, per_channel: bool) -> int:
    """int8 dynamic quantisation of the weights; -> how many quantised nodes the result has.
    Not called for a graph without quantisable nodes (quantize_dynamic rejects some of those, e.g.
    skl2onnx's, which import the default domain twice)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(src, dst, per_channel=per_channel, weight_type=QuantType.QInt8)
    return sum(1 for n in onnx.load(str(dst), load_external_data=False).graph.node if n.op_type in QUANTISED_OPS)


def _gate(target: str, name: str, path: Path, check: AccuracyCheck, t0: float) -> Variant:
    verdict = check(path)
    status = ACCEPTED if verdict.passed else REJECTED
    detail = verdict.message if verdict.passed else f"rejected: fails the accuracy gate: {verdict.message}"
    return Variant(target, name, status, detail, path if verdict.passed else None, verdict.metrics,
                   time.monotonic() - t0)


def compile_onnxruntime(onnx_path: Path, out_dir: Path, check: AccuracyCheck,
                        variants: Sequence[str] = ("fp32", "ort_optimized", "int8_per_tensor", "int8_per_channel"),
                        progress: Callable[[str], None] = lambda _: None) -> list[Variant]:
    """Each requested ONNX Runtime variant of ``onnx_path``, gated by ``check``.

    ``fp32`` is the artifact itself, checked too: it proves the gate and the reference agree
    before any variant is judged by them.  A rejected variant's file is deleted.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = onnx_path.stem
    results = []
    for name in variants:
        progress(name)
        t0 = time.monotonic()
        if name == "fp32":
            results.append(_gate("onnxruntime", name, onnx_path, check, t0))
            continue
        dst = out_dir / f"{stem}.{name}.onnx"
        if name == "ort_optimized":
            optimize_onnx(onnx_path, dst)
        elif name in ("int8_per_tensor", "int8_per_channel"):
            n = quantisable_node_count(onnx_path) and quantize_int8(onnx_path, dst, per_channel=name.endswith("channel"))
            if n == 0:
                dst.unlink(missing_ok=True)
                results.append(Variant("onnxruntime", name, SKIPPED,
                                       "skipped: nothing to quantise (no MatMul/Gemm/Conv/Attention nodes: "
                                       "e.g. a tree ensemble)", seconds=time.monotonic() - t0))
                continue
        else:
            raise ValueError(f"unknown ONNX Runtime variant {name!r}")
        v = _gate("onnxruntime", name, dst, check, t0)
        if not v.usable:
            dst.unlink(missing_ok=True)
        results.append(v)
    return results


# --- TensorRT ----------------------------------------------------------------------------------

Runner = Callable[[list[str]], Any]


def _run_checked(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True)


def tensorrt_plan(onnx_path: Path, out_dir: Path, toolchain: tensorrt.Toolchain) -> list[str] | None:
    """The trtexec command that would build the engine, or None when the Python builder is used."""
    if toolchain.kind == "trtexec":
        assert toolchain.trtexec
        return tensorrt.trtexec_command(toolchain.trtexec, onnx_path, out_dir / f"{onnx_path.stem}.plan")
    return None


def compile_tensorrt(onnx_path: Path, out_dir: Path, toolchain: tensorrt.Toolchain | None = None,
                     run: Runner = _run_checked,
                     python_builder: Callable[[Path, Path], None] = tensorrt.build_with_python_api) -> Variant:
    """An fp16 engine where TensorRT exists; ``skipped: <reason>`` where it does not."""
    tc = toolchain or tensorrt.find_toolchain()
    if tc.kind == "none":
        return Variant("tensorrt", "fp16_engine", SKIPPED, f"skipped: {tc.reason}")
    t0 = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = out_dir / f"{onnx_path.stem}.plan"
    cmd = tensorrt_plan(onnx_path, out_dir, tc)
    if cmd is not None:
        run(cmd)
        how = "trtexec"
    else:
        python_builder(onnx_path, engine)
        how = "TensorRT Python builder"
    return Variant("tensorrt", "fp16_engine", BUILT,
                   f"built with {how}; accuracy is checked on the GPU pool (no GPU here)", engine,
                   seconds=time.monotonic() - t0)


# --- Neuron ------------------------------------------------------------------------------------

class NeuronTracer(Protocol):
    """The part of ``torch_neuronx`` the compiler uses."""

    def trace(self, func: Any, example_inputs: Any, *, compiler_args: list[str] | None = None,
              compiler_workdir: str | None = None) -> Any: ...


@dataclass(frozen=True)
class NeuronTraceCall:
    """One ``torch_neuronx.trace`` call: Neuron compiles static shapes, so one per bucket."""

    batch_size: int
    seq_length: int
    output: Path
    # fp32 matmuls: the accuracy gate compares with fp32; bf16 auto-cast is a separate variant to add.
    compiler_args: tuple[str, ...] = ("--auto-cast", "none")


def neuron_trace_calls(model: ModelDefinition, out_dir: Path, batch_sizes: Sequence[int],
                       seq_length: int = 128) -> list[NeuronTraceCall]:
    """The trace calls for ``model``: one per batch size at ``seq_length`` tokens."""
    if model.tokenizer is not None and seq_length not in model.tokenizer.pad_buckets:
        raise ValueError(f"seq_length {seq_length} is not one of the tokenizer's buckets {model.tokenizer.pad_buckets}")
    for b in batch_sizes:
        if not 1 <= b <= model.max_batch_size:
            raise ValueError(f"batch size {b} outside 1..{model.max_batch_size} for {model.name}")
    return [NeuronTraceCall(b, seq_length, out_dir / f"{model.name}.neuron.b{b}.s{seq_length}.pt")
            for b in batch_sizes]


def find_neuron() -> NeuronTracer | None:
    if importlib.util.find_spec("torch_neuronx") is None:
        return None
    import torch_neuronx  # pragma: no cover - only on inf2/trn hosts

    return torch_neuronx  # type: ignore[return-value]  # pragma: no cover


def compile_neuron(model: ModelDefinition, artifacts: Path, out_dir: Path, batch_sizes: Sequence[int] = (1,),
                   tracer: NeuronTracer | None = None, find: Callable[[], NeuronTracer | None] = find_neuron) -> Variant:
    """Neuron graphs from the TorchScript artifact; ``skipped: <reason>`` where impossible here."""
    if not model.accelerated.torchscript_artifact:
        return Variant("neuron", "neuron_fp32", SKIPPED,
                       f"skipped: {model.name} has no TorchScript artifact (Neuron cannot compile it)")
    neuron = tracer or find()
    if neuron is None:
        return Variant("neuron", "neuron_fp32", SKIPPED, "skipped: no torch-neuronx here")
    import torch

    t0 = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    module = torch.jit.load(str(artifacts / model.accelerated.torchscript_artifact))
    calls = neuron_trace_calls(model, out_dir, batch_sizes)
    for call in calls:
        example = tuple(torch.ones((call.batch_size, call.seq_length), dtype=torch.int64)
                        for _ in model.accelerated.inputs)
        traced = neuron.trace(module, example, compiler_args=list(call.compiler_args),
                              compiler_workdir=str(out_dir / f"workdir.b{call.batch_size}"))
        torch.jit.save(traced, str(call.output))
    return Variant("neuron", "neuron_fp32", BUILT,
                   f"traced {len(calls)} shape(s) {[(c.batch_size, c.seq_length) for c in calls]}; accuracy is "
                   "checked on the Inferentia pool", calls[0].output, seconds=time.monotonic() - t0)


# --- all targets -------------------------------------------------------------------------------

def compile_model(model: ModelDefinition, artifacts: Path, out_dir: Path, check: AccuracyCheck,
                  ort_variants: Sequence[str] | None = None,
                  progress: Callable[[str], None] = lambda _: None) -> list[Variant]:
    """Every target's variants for ``model``, in the order onnxruntime, tensorrt, neuron."""
    onnx_path = artifacts / model.accelerated.artifact
    kwargs = {"variants": ort_variants} if ort_variants is not None else {}
    results = compile_onnxruntime(onnx_path, out_dir, check, progress=progress, **kwargs)
    progress("tensorrt")
    results.append(compile_tensorrt(onnx_path, out_dir))
    progress("neuron")
    results.append(compile_neuron(model, artifacts, out_dir))
    return results
