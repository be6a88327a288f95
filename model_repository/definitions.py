"""Model descriptions: one per model, every target derived from it.

Built-in models are described in ``model_repository/models.yaml``; models onboarded with
``python -m model_repository add`` each in their own file in the user-model store
(``model_repository.user_models``).  ``load_models()`` returns both, so everything that serves,
routes or profiles models (the fleet, the control server, the profiler) sees onboarded models
without knowing where they came from.

A model is either ``single`` (one accelerated step) or an ``ensemble`` of a host-side tokenizer
step and an accelerated step.  Only the accelerated step differs between targets (ONNX Runtime,
TensorRT, Neuron); that is the one piece an emulated pool times against its profile.
"""

from __future__ import annotations

import os
from pathlib import Path

from model_repository.model_types import (  # noqa: F401 - re-exported: the types' historical home
    DATA_TYPES,
    AcceleratedStep,
    ModelDefinition,
    TensorSpec,
    TokenizerStep,
)
from router_lib.config import ConfigError, _Reader, read_yaml

MODELS_FILE = Path(__file__).with_name("models.yaml")
# Where onboarded models' descriptions live; TMAS_USER_MODELS_DIR moves it (tests, other checkouts:
# the control server is a child process and inherits it).
USER_MODELS_DIR = Path(__file__).with_name("user_models")
USER_MODELS_ENV = "TMAS_USER_MODELS_DIR"


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


def user_models_dir() -> Path:
    return Path(os.environ.get(USER_MODELS_ENV) or USER_MODELS_DIR)


def load_models(path: Path | str = MODELS_FILE, user_dir: Path | str | None = None) -> dict[str, ModelDefinition]:
    """Built-in models from ``path`` and onboarded ones from ``user_dir`` (default: ``user_models_dir()``;
    only when ``path`` is the built-in file).  A name in both is an error naming both files."""
    models = load_builtin_models(path)
    if user_dir is None and Path(path) != MODELS_FILE:
        return models
    from model_repository.user_models import load_user_models

    for name, model in load_user_models(Path(user_dir) if user_dir is not None else user_models_dir()).items():
        if name in models or any(name in m.composing_models for m in models.values()):
            raise ConfigError(model.origin, "name", f"{name!r} is already a built-in model ({path})")
        models[name] = model
    return models


def load_builtin_models(path: Path | str = MODELS_FILE) -> dict[str, ModelDefinition]:
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
