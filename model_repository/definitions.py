"""Model descriptions (``model_repository/models.yaml``): one per model, every target derived from it.

A model is either ``single`` (one accelerated step) or an ``ensemble`` of a host-side tokenizer
step and an accelerated step.  Only the accelerated step differs between targets (ONNX Runtime,
TensorRT, Neuron); that is the one piece an emulated pool times against its profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from router_lib.config import ConfigError, _Reader, read_yaml

MODELS_FILE = Path(__file__).with_name("models.yaml")
DATA_TYPES = ["TYPE_STRING", "TYPE_FP32", "TYPE_FP16", "TYPE_INT64", "TYPE_INT32", "TYPE_BOOL", "TYPE_UINT8"]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class TokenizerStep:
    name: str
    max_seq_length: int
    pad_buckets: tuple[int, ...]


@dataclass(frozen=True)
class AcceleratedStep:
    name: str
    artifact: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    torchscript_artifact: str | None = None


@dataclass(frozen=True)
class ModelDefinition:
    name: str
    description: str
    kind: str  # "single" | "ensemble"
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    accelerated: AcceleratedStep
    tokenizer: TokenizerStep | None = None

    @property
    def composing_models(self) -> tuple[str, ...]:
        """Names of the Triton models behind the public one (excluding itself)."""
        if self.kind == "single":
            return ()
        assert self.tokenizer is not None
        return (self.tokenizer.name, self.accelerated.name)


def _tensors(r: _Reader, key: str) -> tuple[TensorSpec, ...]:
    items = r.list(key)
    if not items:
        raise ConfigError(r.path, f"{r.where}.{key}", "must list at least one tensor")
    out = []
    for i in range(len(items)):
        t = _Reader(r.path, items[i], f"{r.where}.{key}[{i}]")
        t.unknown_keys({"name", "data_type", "dims"})
        dims = t.list("dims")
        for d in dims:
            if not isinstance(d, int) or isinstance(d, bool) or d == 0 or d < -1:
                raise ConfigError(r.path, f"{t.where}.dims", f"must be positive integers or -1, got {dims!r}")
        out.append(TensorSpec(t.str("name"), t.enum("data_type", str, DATA_TYPES), tuple(dims)))
    return tuple(out)


def load_models(path: Path | str = MODELS_FILE) -> dict[str, ModelDefinition]:
    path = Path(path)
    root = _Reader(path, read_yaml(path))
    table = root.mapping("models")
    out: dict[str, ModelDefinition] = {}
    for name in table:
        r = root.child("models").child(name)
        r.unknown_keys({"description", "kind", "max_batch_size", "inputs", "outputs", "tokenizer", "accelerated"})
        kind = r.enum("kind", str, ["single", "ensemble"])
        acc = r.child("accelerated")
        acc.unknown_keys({"name", "artifact", "torchscript_artifact", "inputs", "outputs"})
        inputs = _tensors(r, "inputs")
        outputs = _tensors(r, "outputs")
        if kind == "single":
            acc_inputs, acc_outputs = inputs, outputs
            if acc.has("inputs") or acc.has("outputs"):
                raise ConfigError(path, f"{acc.where}", "a single model takes its tensors from the model itself")
        else:
            acc_inputs, acc_outputs = _tensors(acc, "inputs"), _tensors(acc, "outputs")
        step = AcceleratedStep(
            name=acc.str("name"), artifact=acc.str("artifact"), inputs=acc_inputs, outputs=acc_outputs,
            torchscript_artifact=acc.str("torchscript_artifact", default=None),
        )
        tok = None
        if kind == "ensemble":
            t = r.child("tokenizer")
            t.unknown_keys({"name", "max_seq_length", "pad_buckets"})
            buckets = tuple(int(b) for b in t.list("pad_buckets"))
            max_len = t.int("max_seq_length", minimum=1)
            if list(buckets) != sorted(buckets) or not buckets or buckets[-1] != max_len:
                raise ConfigError(path, f"{t.where}.pad_buckets",
                                  f"must be ascending and end at max_seq_length {max_len}, got {list(buckets)}")
            tok = TokenizerStep(t.str("name"), max_len, buckets)
        elif r.has("tokenizer"):
            raise ConfigError(path, f"{r.where}.tokenizer", "only an ensemble has a tokenizer step")
        elif step.name != name:
            raise ConfigError(path, f"{acc.where}.name", f"a single model's step must be named {name!r}")
        out[str(name)] = ModelDefinition(
            name=str(name), description=r.str("description"), kind=kind,
            max_batch_size=r.int("max_batch_size", minimum=1), inputs=inputs, outputs=outputs,
            accelerated=step, tokenizer=tok,
        )
    return out
