"""Read an ONNX graph's serving contract and check that every pool can serve it.

``inspect_onnx`` turns a file into a ``GraphSignature`` (inputs and outputs with their element
types and shapes, the opsets it imports, the operator types it uses); ``signature_problems`` is a
pure function of that signature and says, precisely, what stops the pools serving it.  The one
decision that shapes this module: **axis 0 is the batch axis**.  Triton's dynamic batcher
concatenates requests along it and every pool's config says ``max_batch_size > 0``, so every input
and every output must have a dynamic first dimension and nothing may be a scalar.

Opsets the pools can run (``SUPPORTED_OPSETS``), and why those bounds:

* default domain ``ai.onnx`` 9..21.  Upper bound: the production CPU image is Triton 24.10
  (server 2.51, the version this repository runs locally) whose ONNX Runtime 1.19 implements
  opsets up to 21.  Lower bound: TensorRT's ONNX parser is backward compatible to opset 9 only
  (NVIDIA's ONNX opset guide).  ONNX Runtime here (1.32) would run newer graphs; production would
  not, so the check follows production.
* ``ai.onnx.ml`` 1..5 (tree ensembles, scalers: ONNX Runtime only; such graphs are placed on the
  host CPU of accelerator instances, see ``placement``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SUPPORTED_OPSETS: Mapping[str, tuple[int, int]] = {"": (9, 21), "ai.onnx": (9, 21), "ai.onnx.ml": (1, 5)}
# ONNX Runtime 1.19 (Triton 24.10) reads models up to IR version 10 (ONNX 1.16); onnx.helper.make_model
# writes the newest IR its own version knows unless told otherwise.
MAX_IR_VERSION = 10

# ONNX element type name -> Triton data type.  Only types every pool's runtime accepts at the model
# boundary; the rest get a precise refusal (``UNSUPPORTED_TYPE_HINTS``).
TRITON_TYPES: Mapping[str, str] = {
    "FLOAT": "TYPE_FP32", "FLOAT16": "TYPE_FP16", "INT64": "TYPE_INT64", "INT32": "TYPE_INT32",
    "UINT8": "TYPE_UINT8", "BOOL": "TYPE_BOOL",
}
UNSUPPORTED_TYPE_HINTS: Mapping[str, str] = {
    "DOUBLE": "cast to float32 in the graph (TensorRT and Neuron have no float64)",
    "STRING": "strings need a host-side step (a tokenizer, like text_embedding's); onboard the numeric graph",
    "BFLOAT16": "export in float32 or float16; the compilers choose bf16 themselves",
}

# Graph operators only ONNX Runtime's CPU provider runs: TensorRT and Neuron reject them.
HOST_ONLY_DOMAINS = frozenset({"ai.onnx.ml"})


class OnboardingError(ValueError):
    """Something about the model or the request stops onboarding.  ``str()`` says what and where."""


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output.  ``shape`` entries: an int (fixed), a str (a named dynamic axis),
    or None (dynamic, unnamed).  ``elem_type`` is ONNX's name (``FLOAT``, ``INT64``...);
    ``kind`` is ``tensor`` or what else the value is (``sequence``, ``map``...)."""

    name: str
    elem_type: str
    shape: tuple[int | str | None, ...] | None  # None: rank unknown
    kind: str = "tensor"

    @property
    def batch_dynamic(self) -> bool:
        return bool(self.shape) and not isinstance(self.shape[0], int)  # type: ignore[index]

    @property
    def triton_dims(self) -> tuple[int, ...]:
        """Dims after the batch axis, -1 where dynamic (Triton's convention)."""
        assert self.shape is not None
        return tuple(d if isinstance(d, int) else -1 for d in self.shape[1:])

    def describe(self) -> str:
        if self.kind != "tensor":
            return f"{self.name}: {self.kind}"
        dims = "?" if self.shape is None else "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"
        return f"{self.name}: {self.elem_type} {dims}"


@dataclass(frozen=True)
class GraphSignature:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    opsets: Mapping[str, int]  # domain -> version ("" is the default domain)
    op_types: frozenset[tuple[str, str]]  # (domain, op_type)
    ir_version: int

    @property
    def host_only_ops(self) -> tuple[str, ...]:
        return tuple(sorted(f"{d}.{op}" for d, op in self.op_types if d in HOST_ONLY_DOMAINS))


def _value_info(v) -> TensorInfo:  # type: ignore[no-untyped-def]
    from onnx import TensorProto

    which = v.type.WhichOneof("value")
    if which != "tensor_type":
        kind = {"sequence_type": "sequence", "map_type": "map", "optional_type": "optional",
                "sparse_tensor_type": "sparse tensor"}.get(str(which), str(which))
        return TensorInfo(v.name, "", None, kind)
    tt = v.type.tensor_type
    elem = TensorProto.DataType.Name(tt.elem_type)
    if not tt.HasField("shape"):
        return TensorInfo(v.name, elem, None)
    dims: list[int | str | None] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(str(d.dim_param))
        else:
            dims.append(None)
    return TensorInfo(v.name, elem, tuple(dims))


def load_onnx(path: Path):  # type: ignore[no-untyped-def]
    """The parsed model, or an ``OnboardingError`` that says why the file is not one."""
    import onnx
    from google.protobuf.message import DecodeError

    if not path.exists():
        raise OnboardingError(f"--onnx {path}: file not found")
    if not path.is_file():
        raise OnboardingError(f"--onnx {path}: not a file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise OnboardingError(f"--onnx {path}: not an ONNX model (the protobuf does not parse: {e})") from None
    if not model.graph.node and not model.graph.output:
        raise OnboardingError(f"--onnx {path}: not an ONNX model (no graph: empty or not a ModelProto)")
    if any(t.HasField("data_location") and t.data_location == onnx.TensorProto.EXTERNAL
           for t in model.graph.initializer):
        raise OnboardingError(f"--onnx {path}: weights in external data files are not supported; save the model "
                              "as one file (onnx.save(model, path, save_as_external_data=False))")
    return model


def signature_of(model) -> GraphSignature:  # type: ignore[no-untyped-def]
    initializers = {t.name for t in model.graph.initializer}
    ops: set[tuple[str, str]] = set()

    def walk(graph) -> None:  # type: ignore[no-untyped-def]
        for n in graph.node:
            ops.add((n.domain or "", n.op_type))
            for a in n.attribute:
                if a.g.node:
                    walk(a.g)
                for g in a.graphs:
                    walk(g)

    walk(model.graph)
    return GraphSignature(
        inputs=tuple(_value_info(v) for v in model.graph.input if v.name not in initializers),
        outputs=tuple(_value_info(v) for v in model.graph.output),
        opsets={(o.domain or ""): int(o.version) for o in model.opset_import},
        op_types=frozenset(ops),
        ir_version=int(model.ir_version),
    )


def inspect_onnx(path: Path) -> GraphSignature:
    return signature_of(load_onnx(path))


def _tensor_problems(role: str, t: TensorInfo) -> list[str]:
    where = f"{role} {t.name!r}"
    if t.kind != "tensor":
        hint = " (skl2onnx: convert with options={id(model): {'zipmap': False}})" if t.kind == "sequence" else ""
        return [f"{where} is a {t.kind}, not a tensor: Triton serves tensors only{hint}"]
    problems = []
    if t.elem_type not in TRITON_TYPES:
        hint = UNSUPPORTED_TYPE_HINTS.get(t.elem_type, "")
        problems.append(f"{where} has element type {t.elem_type}, which the pools cannot serve; supported: "
                        f"{', '.join(TRITON_TYPES)}" + (f" ({hint})" if hint else ""))
    if t.shape is None:
        problems.append(f"{where} has no declared shape: the pools need its rank and a dynamic batch axis "
                        "(export with shapes, e.g. torch.onnx.export(..., input_names=..., dynamic_axes=...))")
    elif len(t.shape) == 0:
        problems.append(f"{where} is a scalar: the pools batch along axis 0, so it needs a batch axis")
    elif not t.batch_dynamic:
        problems.append(f"{where} has a fixed first dimension {t.shape[0]} (shape {t.describe().split(' ', 2)[-1]}): "
                        "the pools batch requests along axis 0, so it must be dynamic; export with "
                        f"dynamic_axes={{'{t.name}': {{0: 'batch'}}}}")
    return problems


def signature_problems(sig: GraphSignature) -> list[str]:
    """Every reason the pools cannot serve ``sig``, most basic first; empty when it is fine."""
    problems = []
    for domain, version in sorted(sig.opsets.items()):
        if domain not in SUPPORTED_OPSETS:
            used = sorted(op for d, op in sig.op_types if d == domain)
            if used:
                problems.append(f"operator domain {domain!r} (ops {used}) is a custom domain no pool can run")
            continue
        lo, hi = SUPPORTED_OPSETS[domain]
        if not lo <= version <= hi:
            label = domain or "ai.onnx (default domain)"
            problems.append(f"opset {version} of {label} is outside what the pools can run ({lo}..{hi}: "
                            "Triton 24.10's ONNX Runtime 1.19 and TensorRT's parser); convert it with "
                            f"onnx.version_converter.convert_version(model, {min(max(version, lo), hi)})")
    if sig.ir_version > MAX_IR_VERSION:
        problems.append(f"IR version {sig.ir_version} is newer than Triton 24.10's ONNX Runtime 1.19 reads "
                        f"(<= {MAX_IR_VERSION}); set model.ir_version = {MAX_IR_VERSION} before saving (or export with "
                        "an older onnx package)")
    if "" not in sig.opsets and "ai.onnx" not in sig.opsets:
        problems.append("the model imports no default-domain opset (opset_import has no ai.onnx entry)")
    if not sig.inputs:
        problems.append("the graph has no inputs (every tensor is an initializer)")
    if not sig.outputs:
        problems.append("the graph has no outputs")
    for t in sig.inputs:
        problems += _tensor_problems("input", t)
    for t in sig.outputs:
        problems += _tensor_problems("output", t)
    names = [t.name for t in (*sig.inputs, *sig.outputs)]
    for n in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"tensor name {n!r} is both an input and an output (Triton needs distinct names)")
    return problems


def _with_inferred_output_shapes(model):  # type: ignore[no-untyped-def]
    """Some exporters leave graph outputs without a shape; ONNX shape inference usually recovers it
    (the batch axis included).  A graph inference cannot handle is returned as it was."""
    from onnx import shape_inference

    if all(o.type.WhichOneof("value") != "tensor_type" or o.type.tensor_type.HasField("shape")
           for o in model.graph.output):
        return model
    try:
        return shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - the checks below report what is still missing
        return model


def check_onnx(path: Path) -> tuple[GraphSignature, object]:
    """Load, run ``onnx.checker`` and the pool checks; -> (signature, model) or ``OnboardingError``
    listing every problem found (not just the first: a user fixes them in one export)."""
    import onnx

    model = load_onnx(path)
    model = _with_inferred_output_shapes(model)
    sig = signature_of(model)
    problems = signature_problems(sig)
    if not any(p.startswith("opset") for p in problems):  # the checker itself rejects unknown opsets
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            problems.insert(0, f"onnx.checker rejects the graph: {first}")
    if problems:
        raise OnboardingError(f"--onnx {path}: cannot be served by the pools:\n  - " + "\n  - ".join(problems))
    return sig, model


def placement_for(sig: GraphSignature, has_torchscript: bool) -> dict[str, tuple[str, str]]:
    """Per accelerator: (``accelerator`` | ``host_cpu``, why).  Graphs the accelerator's compiler
    cannot take run with ONNX Runtime on that instance's host CPU instead of being refused."""
    host_ops = sig.host_only_ops
    if host_ops:
        why = (f"uses {', '.join(host_ops[:4])}{'...' if len(host_ops) > 4 else ''}, which only ONNX Runtime "
               "runs (a tree ensemble or other ai.onnx.ml graph): ONNX Runtime on the instance's host CPU")
        return {"gpu": ("host_cpu", f"TensorRT cannot parse it: {why}"),
                "inferentia": ("host_cpu", f"Neuron cannot compile it: {why}")}
    gpu = ("accelerator", "TensorRT fp16 engine built from the ONNX (on the GPU image, where TensorRT is)")
    if has_torchscript:
        inf = ("accelerator", "torch_neuronx.trace of the TorchScript (on an inf2 with the Neuron SDK)")
    else:
        inf = ("host_cpu", "Neuron compiles PyTorch (torch_neuronx.trace), not ONNX, and no --torchscript was "
               "given: ONNX Runtime on the instance's host CPU")
    return {"gpu": gpu, "inferentia": inf}


def tensorrt_shapes(sig: GraphSignature,
                    max_batch_size: int) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] | None:
    """TensorRT's (min, opt, max) shapes per input: batch 1, min(8, max), max.  None when a
    non-batch dimension is dynamic: its range is the model owner's to state, not ours to guess."""
    out = {}
    for t in sig.inputs:
        if t.shape is None or any(not isinstance(d, int) for d in t.shape[1:]):
            return None
        rest = tuple(int(d) for d in t.shape[1:])  # type: ignore[arg-type]
        out[t.name] = ((1, *rest), (min(8, max_batch_size), *rest), (max_batch_size, *rest))
    return out
