"""The user-model store: one YAML description per onboarded model, ``<store>/<name>.yaml``.

Onboarded models live beside the built-in ones, not inside ``models.yaml``: that file is the
project's own and is reviewed like code, while these are written and removed by a command
(``python -m model_repository add/remove``).  A description is small text meant to be committed;
the ONNX file it names is copied into the artifacts folder (``build/models``, never committed, like
every built artifact) and its sha256 is recorded here, so a missing or changed file is named at
load time instead of being served.

A description is a ``single`` model (one accelerated step: the ONNX), or an ``ensemble`` of host
steps around it (``preprocess``, ``postprocess``: e.g. an image classifier taking uint8 photos and
returning label strings; ``model_types.HostStep``), where ``inputs``/``outputs`` are the public
tensors and ``accelerated`` the ONNX step's own.  ``placement`` says, per
accelerator, whether the accelerator's compiler runs it (``accelerator``) or the instance's host CPU
does (``host_cpu``), with the reason; ``accuracy`` holds the per-output tolerances the accuracy
gate applies to every compiled variant.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from model_repository.model_types import (
    DATA_TYPES,
    HOST_STEP_KINDS,
    AcceleratedStep,
    HostStep,
    ModelDefinition,
    TensorSpec,
)
from router_lib.config import ConfigError, _Reader, read_yaml

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
PLACEMENTS = ("accelerator", "host_cpu")
ACCELERATED_KINDS = ("gpu", "inferentia")
HEADER = ("# Onboarded by `python -m model_repository add`; remove with `python -m model_repository remove {name}`.\n"
          "# The ONNX file is {artifact} in the artifacts folder (build/models), checked against source.sha256.\n")


@dataclass(frozen=True)
class OutputTolerance:
    """How close a compiled variant's output must be to ONNX Runtime fp32 on the sample inputs.

    Float outputs: every element within ``atol + rtol * |reference|`` (numpy.allclose).  Integer and
    bool outputs (labels, masks): the share of rows equal to the reference must be at least
    ``min_agreement``."""

    atol: float = 1e-4
    rtol: float = 1e-3
    min_agreement: float = 1.0


def check_name(name: str) -> str | None:
    """None when ``name`` can be a model name everywhere it goes (Triton, Envoy clusters, metric
    labels, file names); otherwise why not."""
    if not NAME_PATTERN.match(name):
        return (f"model name {name!r} must start with a lowercase letter and use only a-z, 0-9 and '_' "
                "(at most 63 characters): it becomes a Triton model, Envoy cluster and file name")
    if "__" in name or name.endswith("_"):
        return f"model name {name!r} must not contain '__' or end with '_' (cluster names use '--' and '__')"
    return None


def description_path(store: Path, name: str) -> Path:
    return store / f"{name}.yaml"


def _tensor_docs(tensors: tuple[TensorSpec, ...]) -> list[dict[str, Any]]:
    return [{"name": t.name, "data_type": t.data_type, "dims": list(t.dims)} for t in tensors]


def description_document(model: ModelDefinition, *, placement: Mapping[str, tuple[str, str]],
                         tolerances: Mapping[str, OutputTolerance], source: Mapping[str, Any]) -> dict[str, Any]:
    """The YAML document for ``model``; ``placement``: accelerator -> (placement, reason)."""
    doc: dict[str, Any] = {
        "name": model.name,
        "description": model.description,
        "max_batch_size": model.max_batch_size,
        "inputs": _tensor_docs(model.inputs),
        "outputs": _tensor_docs(model.outputs),
        "artifact": model.accelerated.artifact,
    }
    if model.accelerated.torchscript_artifact:
        doc["torchscript_artifact"] = model.accelerated.torchscript_artifact
    if model.kind == "ensemble":
        doc["kind"] = "ensemble"
        doc["accelerated"] = {"name": model.accelerated.name, "inputs": _tensor_docs(model.accelerated.inputs),
                              "outputs": _tensor_docs(model.accelerated.outputs)}
        for key, step in (("preprocess", model.preprocess), ("postprocess", model.postprocess)):
            if step is not None:
                doc[key] = {"name": step.name, "kind": step.kind, "inputs": _tensor_docs(step.inputs),
                            "outputs": _tensor_docs(step.outputs), "parameters": dict(step.parameters),
                            "files": list(step.files)}
    doc["placement"] = {acc: {"runs_on": p, "reason": why} for acc, (p, why) in sorted(placement.items())}
    floats = {t.name for t in model.accelerated.outputs if t.data_type in ("TYPE_FP32", "TYPE_FP16")}
    doc["accuracy"] = {name: ({"atol": t.atol, "rtol": t.rtol} if name in floats else {"min_agreement": t.min_agreement})
                       for name, t in tolerances.items()}
    doc["source"] = dict(source)
    return doc


def write_description(store: Path, doc: Mapping[str, Any]) -> Path:
    """Write atomically, then read back with the loader: a description it rejects is never left."""
    store.mkdir(parents=True, exist_ok=True)
    path = description_path(store, str(doc["name"]))
    text = HEADER.format(name=doc["name"], artifact=doc["artifact"]) + yaml.safe_dump(dict(doc), sort_keys=False,
                                                                                         width=100)
    fd, tmp = tempfile.mkstemp(dir=store, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        read_description(Path(tmp), expected_name=str(doc["name"]))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _tensors(r: _Reader, key: str) -> tuple[TensorSpec, ...]:
    items = r.list(key)
    if not items:
        raise ConfigError(r.path, key, "must list at least one tensor")
    out = []
    for i, item in enumerate(items):
        t = _Reader(r.path, item, f"{key}[{i}]")
        t.unknown_keys({"name", "data_type", "dims"})
        dims = t.list("dims")
        if any(not isinstance(d, int) or isinstance(d, bool) or d == 0 or d < -1 for d in dims):
            raise ConfigError(r.path, f"{key}[{i}].dims", f"must be positive integers or -1, got {dims!r}")
        out.append(TensorSpec(t.str("name"), t.enum("data_type", str, DATA_TYPES), tuple(dims)))
    return tuple(out)


def read_description(path: Path, expected_name: str | None = None) -> tuple[ModelDefinition, dict[str, OutputTolerance]]:
    r = _Reader(path, read_yaml(path))
    r.unknown_keys({"name", "description", "max_batch_size", "inputs", "outputs", "artifact", "torchscript_artifact",
                    "placement", "accuracy", "source", "kind", "accelerated", "preprocess", "postprocess"})
    name = r.str("name")
    if expected_name is not None and name != expected_name:
        raise ConfigError(path, "name", f"must be {expected_name!r} (the file's name), got {name!r}")
    problem = check_name(name)
    if problem:
        raise ConfigError(path, "name", problem)
    inputs, outputs = _tensors(r, "inputs"), _tensors(r, "outputs")
    host_cpu = set()
    placement = r.mapping("placement")
    for acc in placement:
        if acc not in ACCELERATED_KINDS:
            raise ConfigError(path, f"placement.{acc}", f"unknown accelerator; known: {list(ACCELERATED_KINDS)}")
        p = r.child("placement").child(acc)
        p.unknown_keys({"runs_on", "reason"})
        if p.enum("runs_on", str, list(PLACEMENTS)) == "host_cpu":
            host_cpu.add(acc)
    kind = r.enum("kind", str, ["single", "ensemble"], default="single")
    acc_name, acc_inputs, acc_outputs, hosts = name, inputs, outputs, {}
    if kind == "ensemble":
        a = r.child("accelerated")
        a.unknown_keys({"name", "inputs", "outputs"})
        acc_name, acc_inputs, acc_outputs = a.str("name"), _tensors(a, "inputs"), _tensors(a, "outputs")
        for key in ("preprocess", "postprocess"):
            if r.has(key):
                hosts[key] = _host_step(r.child(key))
        if not hosts:
            raise ConfigError(path, "kind", "an ensemble needs a preprocess or postprocess step")
        _check_wiring(path, inputs, outputs, acc_inputs, acc_outputs, hosts)
    else:
        for key in ("accelerated", "preprocess", "postprocess"):
            if r.has(key):
                raise ConfigError(path, key, "only an ensemble (kind: ensemble) has steps")
    tolerances = {}
    for out_name in r.mapping("accuracy", default={}):
        if out_name not in {t.name for t in acc_outputs}:
            raise ConfigError(path, f"accuracy.{out_name}", f"names no output; outputs: {[t.name for t in acc_outputs]}")
        a = r.child("accuracy").child(out_name)
        a.unknown_keys({"atol", "rtol", "min_agreement"})
        agreement = a.float("min_agreement", minimum=0.0, default=1.0)
        if agreement > 1:
            raise ConfigError(path, f"accuracy.{out_name}.min_agreement", f"must be in [0, 1], got {agreement}")
        tolerances[str(out_name)] = OutputTolerance(a.float("atol", minimum=0.0, default=1e-4),
                                                    a.float("rtol", minimum=0.0, default=1e-3), agreement)
    step = AcceleratedStep(name=acc_name, artifact=r.str("artifact"), inputs=acc_inputs, outputs=acc_outputs,
                           torchscript_artifact=r.str("torchscript_artifact", default=None))
    model = ModelDefinition(name=name, description=r.str("description"), kind=kind,
                            max_batch_size=r.int("max_batch_size", minimum=1), inputs=inputs, outputs=outputs,
                            accelerated=step, host_cpu_on=frozenset(host_cpu), origin=str(path),
                            preprocess=hosts.get("preprocess"), postprocess=hosts.get("postprocess"))
    return model, tolerances


def _host_step(r: _Reader) -> HostStep:
    r.unknown_keys({"name", "kind", "inputs", "outputs", "parameters", "files"})
    params = r.mapping("parameters", default={})
    if any(not isinstance(v, str) for v in params.values()):
        raise ConfigError(r.path, f"{r.where}.parameters", "values must be strings (Triton model parameters)")
    files = r.list("files", default=[])
    if any(not isinstance(f, str) or "/" in f for f in files):
        raise ConfigError(r.path, f"{r.where}.files", f"must be file names in the artifacts folder, got {files!r}")
    name = r.str("name")
    problem = check_name(name)
    if problem:
        raise ConfigError(r.path, f"{r.where}.name", problem)
    return HostStep(name=name, kind=r.enum("kind", str, list(HOST_STEP_KINDS)), inputs=_tensors(r, "inputs"),
                    outputs=_tensors(r, "outputs"), parameters=tuple(sorted((str(k), v) for k, v in params.items())),
                    files=tuple(files))


def _check_wiring(path: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
                  acc_inputs: tuple[TensorSpec, ...], acc_outputs: tuple[TensorSpec, ...],
                  hosts: Mapping[str, HostStep]) -> None:
    """Every step's input is produced upstream (or is a public input) and every public output by
    some step: the ensemble connects tensors by name (``triton_config.ensemble_config``)."""
    available = {t.name for t in inputs}
    pre, post = hosts.get("preprocess"), hosts.get("postprocess")
    stages = [("preprocess", pre.inputs, pre.outputs)] if pre else []
    stages.append(("accelerated", acc_inputs, acc_outputs))
    stages += [("postprocess", post.inputs, post.outputs)] if post else []
    for label, ins, outs in stages:
        missing = [t.name for t in ins if t.name not in available]
        if missing:
            raise ConfigError(path, label, f"inputs {missing} are produced by no earlier step nor the model's inputs")
        available |= {t.name for t in outs}
    missing = [t.name for t in outputs if t.name not in available]
    if missing:
        raise ConfigError(path, "outputs", f"{missing} are produced by no step")


def load_user_models(store: Path) -> dict[str, ModelDefinition]:
    """Every ``<store>/*.yaml`` description; an absent store is an empty one."""
    if not store.is_dir():
        return {}
    out = {}
    for f in sorted(store.glob("*.yaml")):
        model, _ = read_description(f, expected_name=f.stem)
        out[model.name] = model
    return out


def tolerances_of(store: Path, name: str) -> dict[str, OutputTolerance]:
    return read_description(description_path(store, name), expected_name=name)[1]
