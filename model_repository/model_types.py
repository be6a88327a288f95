"""The values a model description becomes: tensors, steps, the model.  Shared by the built-in
loader (``definitions``) and the onboarded-model store (``user_models``), which both build them."""

from __future__ import annotations

from dataclasses import dataclass, field

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
class HostStep:
    """A Python model on the instance's host CPU on every target, before (``preprocess``) or after
    (``postprocess``) an onboarded model's accelerated step: the onboarded counterpart of the
    built-in tokenizer step.  ``kind`` names its code, ``python_models/<kind>/model.py``;
    ``parameters`` become its Triton config parameters; ``files`` are artifacts placed beside it."""

    name: str
    kind: str  # one of HOST_STEP_KINDS
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameters: tuple[tuple[str, str], ...] = ()
    files: tuple[str, ...] = ()


HOST_STEP_KINDS = ("image_preprocess", "class_labels")


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
    # An onboarded ensemble's host steps (a built-in ensemble has its tokenizer instead).
    preprocess: HostStep | None = None
    postprocess: HostStep | None = None
    # Accelerators (Accelerator values) whose instances run this model on their host CPU with ONNX
    # Runtime, because the accelerator's compiler cannot (e.g. a tree ensemble on Neuron).
    host_cpu_on: frozenset[str] = field(default_factory=frozenset)
    origin: str = "built-in"  # or the path of an onboarded model's description

    @property
    def composing_models(self) -> tuple[str, ...]:
        """Names of the Triton models behind the public one (excluding itself)."""
        if self.kind == "single":
            return ()
        if self.tokenizer is not None:
            return (self.tokenizer.name, self.accelerated.name)
        return tuple(s.name for s in (self.preprocess, self.accelerated, self.postprocess) if s is not None)

    @property
    def host_steps(self) -> tuple[HostStep, ...]:
        return tuple(s for s in (self.preprocess, self.postprocess) if s is not None)
