"""Onboard an ONNX model onto every pool: ``python -m model_repository add`` runs this.

The pipeline, each step printed as it runs:

1. **check**: the name (free, usable everywhere), the ONNX graph (``model_repository.onnx_inspect``:
   types, batch axis, opsets), the sample inputs (the user's ``--inputs`` or generated from the
   input spec), and that ONNX Runtime runs the model on them with rows independent of their batch.
2. **configs**: each target's Triton config (cpu, gpu, inferentia) from the description; targets
   whose compiler cannot take the graph are placed on the instance's host CPU.
3. **compile + accuracy gate**: the ONNX Runtime variants (fp32, graph-optimised, int8), each
   compared with ONNX Runtime fp32 per output (``profiler.accuracy_generic``); a TensorRT engine
   and Neuron trace where their toolchains exist, ``skipped: <reason>`` here.
4. **CPU profile**: the profiler's sweep on a real Triton serving the CPU config.
5. **estimates** for GPU and Inferentia (``model_repository.estimates``), labelled as estimates.
6. **register**: the artifact, profiles and description are put in place last, then the fleet is
   loaded with them to prove the next ``make up`` serves the model (it is routed by tier like the
   built-in ones: the policy reads every profile).

With ``--preprocess image:...`` and/or ``--labels OUTPUT=FILE`` the model becomes an ensemble: a host
step turns uint8 photos into the graph's float input, another turns class ids into label strings
(``model_repository.image_steps``).  The accuracy gate still judges the ONNX alone (on the
preprocessed samples); the CPU profile measures the whole ensemble, photos in, labels out.

Nothing outside the staging folder changes until step 6, and a failure in step 6 removes what it
wrote: a model is onboarded completely or not at all.  Everything is written under paths the
caller gives (store, artifacts, profiles), so tests onboard into temporary folders.

This module lives in ``profiler`` because it composes the profiler (compile, gate, benchmark,
local Triton); ``model_repository`` sits below it and hands ``add`` over to it as a process.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_repository.definitions import AcceleratedStep, ModelDefinition, TensorSpec, load_models
from model_repository.model_types import HostStep
from model_repository.onnx_inspect import (
    TRITON_TYPES,
    GraphSignature,
    OnboardingError,
    check_onnx,
    placement_for,
    tensorrt_shapes,
)
from model_repository.user_models import OutputTolerance, check_name, description_document, write_description
from profiler.accuracy_generic import (
    batch_dependence,
    generate_samples,
    generic_check,
    read_samples,
    run_onnx,
)
from profiler.compile import ACCEPTED, BUILT, SKIPPED, Variant, compile_onnxruntime

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MAX_BATCH = 64
MAX_BATCH_LIMIT = 1024
ORT_VARIANTS = ("fp32", "ort_optimized", "int8_per_tensor", "int8_per_channel")


@dataclass(frozen=True)
class OnboardRequest:
    name: str
    onnx: Path
    store: Path
    artifacts: Path
    profiles: Path
    fleet: Path | None = None
    max_batch_size: int | None = None
    inputs: Path | None = None
    torchscript: Path | None = None
    description: str | None = None
    tolerances: dict[str, OutputTolerance] = field(default_factory=dict)
    preprocess: str | None = None  # "image:mean=M,std=S" (per channel: mean=a/b/c)
    labels: tuple[str, Path] | None = None  # (the class-id output, the label file)
    replace: bool = False
    profile_warmup_s: float = 0.5
    profile_measure_s: float = 2.0
    profile_concurrency: tuple[int, ...] = (1, 2, 4)
    instance_type: str = "c7g.xlarge"


@dataclass
class Checked:
    """What step 1 established; everything later is derived from it."""

    model: ModelDefinition
    signature: GraphSignature
    onnx_model: Any
    placement: dict[str, tuple[str, str]]
    samples: dict[str, np.ndarray]  # the ONNX graph's inputs: what the accuracy gate runs
    samples_source: str
    reference: dict[str, np.ndarray]
    public_samples: dict[str, np.ndarray]  # the model's inputs (= samples unless preprocessed): the profile's payload


def say(step: str, message: str) -> None:
    print(f"[add] {step}: {message}", flush=True)


# --- 1. check ------------------------------------------------------------------------------------

def _taken(name: str, store: Path, replacing: str | None) -> str | None:
    """Why ``name`` cannot be a new Triton model's name, or None.  ``replacing``: the onboarded
    model being onboarded again (``--replace``), whose own name and steps are free."""
    models = load_models(user_dir=store)
    composing = {step: m for m, d in models.items() for step in d.composing_models}
    if name in composing and composing[name] != replacing:
        owner = composing[name]
        kind = "built-in" if models[owner].origin == "built-in" else "onboarded"
        return f"model name {name!r} is already taken: a step of the {kind} model {owner!r}"
    if name in models and name != replacing:
        if models[name].origin == "built-in":
            return f"model name {name!r} is already taken by a built-in model (model_repository/models.yaml)"
        return (f"model name {name!r} is already taken by an onboarded model ({models[name].origin}); "
                f"pass --replace to onboard it again, or `python -m model_repository remove {name}` first")
    return None


def check_request(req: OnboardRequest) -> Checked:
    """Step 1, with no side effect: ``OnboardingError`` names everything wrong."""
    replacing = req.name if req.replace else None
    problem = check_name(req.name) or _taken(req.name, req.store, replacing)
    if problem:
        raise OnboardingError(problem)
    max_batch = DEFAULT_MAX_BATCH if req.max_batch_size is None else req.max_batch_size
    if not 1 <= max_batch <= MAX_BATCH_LIMIT:
        raise OnboardingError(f"--max-batch-size must be in 1..{MAX_BATCH_LIMIT}, got {max_batch}")
    if req.torchscript is not None and not req.torchscript.is_file():
        raise OnboardingError(f"--torchscript {req.torchscript}: file not found")
    sig, onnx_model = check_onnx(req.onnx)
    output_names = [t.name for t in sig.outputs]
    for out_name in req.tolerances:
        if out_name not in output_names:
            raise OnboardingError(f"--tolerance {out_name}: the model has no output {out_name!r}; outputs: {output_names}")
    acc_inputs = tuple(TensorSpec(t.name, TRITON_TYPES[t.elem_type], t.triton_dims) for t in sig.inputs)
    acc_outputs = tuple(TensorSpec(t.name, TRITON_TYPES[t.elem_type], t.triton_dims) for t in sig.outputs)
    pre, image_spec = _preprocess_step(req, acc_inputs)
    post, labels = _labels_step(req, acc_outputs)
    ensemble = pre is not None or post is not None
    step = AcceleratedStep(
        name=f"{req.name}_onnx" if ensemble else req.name, artifact=f"{req.name}.onnx",
        inputs=acc_inputs, outputs=acc_outputs,
        torchscript_artifact=f"{req.name}.torchscript.pt" if req.torchscript else None,
    )
    placement = placement_for(sig, has_torchscript=req.torchscript is not None)
    model = ModelDefinition(
        name=req.name, description=req.description or f"onboarded from {req.onnx.name}",
        kind="ensemble" if ensemble else "single", max_batch_size=max_batch,
        inputs=pre.inputs if pre else acc_inputs, outputs=acc_outputs + (post.outputs if post else ()),
        accelerated=step, host_cpu_on=frozenset(a for a, (p, _) in placement.items() if p == "host_cpu"),
        origin=str(req.store / f"{req.name}.yaml"), preprocess=pre, postprocess=post,
    )
    for composing in model.composing_models:
        problem = _taken(composing, req.store, replacing) if composing != req.name else None
        if problem:
            raise OnboardingError(f"{problem} (the name of a step of {req.name!r})")
    try:
        if req.inputs is not None:
            public, source = read_samples(req.inputs, model.inputs), f"{req.inputs} (given)"
        else:
            public, source = generate_samples(model.inputs), "generated from the input spec (seeded)"
        if image_spec is not None:
            from model_repository.image_steps import check_image_batch, preprocess

            assert pre is not None
            images = public[pre.inputs[0].name]
            problem = check_image_batch(images)
            if problem:
                raise ValueError(f"--inputs {req.inputs}: {pre.inputs[0].name}: {problem}")
            samples = {acc_inputs[0].name: preprocess(images, image_spec)}
            source += f", preprocessed by the {pre.name} step"
        else:
            samples = public
    except ValueError as e:
        raise OnboardingError(str(e)) from None
    batch = min(max_batch, 64)
    try:
        reference = run_onnx(req.onnx, samples, output_names, batch)
    except Exception as e:  # noqa: BLE001 - ORT raises its own types; the message is what matters
        raise OnboardingError(f"--onnx {req.onnx}: ONNX Runtime cannot run it on the sample inputs "
                              f"({source}): {str(e).strip().splitlines()[0]}") from None
    for t in model.accelerated.outputs:
        got = reference[t.name]
        if got.shape[0] != len(next(iter(samples.values()))):
            raise OnboardingError(f"output {t.name!r} has {got.shape[0]} rows for "
                                  f"{len(next(iter(samples.values())))} input rows: axis 0 is not a batch axis")
    dependent = batch_dependence(req.onnx, samples, output_names, batch, req.tolerances)
    if dependent:
        raise OnboardingError(f"--onnx {req.onnx}: {dependent}")
    if post is not None and labels is not None:
        ids = reference[post.inputs[0].name]
        if ids.size and (ids.min() < 0 or ids.max() >= len(labels)):
            raise OnboardingError(f"--labels {req.labels[1] if req.labels else ''}: names {len(labels)} classes but "
                                  f"output {post.inputs[0].name!r} returns class ids in {int(ids.min())}..{int(ids.max())} "
                                  "on the sample inputs")
    return Checked(model, sig, onnx_model, placement, samples, source, reference, public)


def _preprocess_step(req: OnboardRequest, acc_inputs: tuple[TensorSpec, ...]) -> tuple[HostStep | None, Any]:
    """``--preprocess image:mean=M,std=S``: a host step from uint8 [height, width, 3] photos
    (``IMAGE``) to the graph's one float [3, H, W] input."""
    if req.preprocess is None:
        return None, None
    from model_repository.image_steps import ImagePreprocess

    kind, _, spec = req.preprocess.partition(":")
    if kind != "image":
        raise OnboardingError(f"--preprocess {req.preprocess}: unknown preprocessing {kind!r}; known: image")
    values: dict[str, tuple[float, ...]] = {"mean": (0.0,), "std": (1.0,)}
    for part in filter(None, spec.split(",")):
        key, _, value = part.partition("=")
        if key not in values:
            raise OnboardingError(f"--preprocess {req.preprocess}: unknown setting {key!r}; known: mean, std")
        try:
            values[key] = tuple(float(v) for v in value.split("/"))
        except ValueError:
            raise OnboardingError(f"--preprocess {req.preprocess}: {key} must be a number or three "
                                  f"numbers a/b/c (per RGB channel), got {value!r}") from None
        if len(values[key]) not in (1, 3) or (key == "std" and min(values[key]) <= 0):
            raise OnboardingError(f"--preprocess {req.preprocess}: {key} must be one number or three (a/b/c)"
                                  + (", all positive" if key == "std" else ""))
    if len(acc_inputs) != 1 or acc_inputs[0].data_type != "TYPE_FP32" or len(acc_inputs[0].dims) != 3 \
            or acc_inputs[0].dims[0] != 3 or min(acc_inputs[0].dims[1:]) < 1:
        got = [f"{t.name} {t.data_type[5:]} {list(t.dims)}" for t in acc_inputs]
        raise OnboardingError(f"--preprocess image: the graph must take one FLOAT input [batch, 3, H, W] with "
                              f"fixed H and W (RGB, channels first); it takes {got}")

    def three(v: tuple[float, ...]) -> tuple[float, float, float]:
        return (v[0], v[0], v[0]) if len(v) == 1 else (v[0], v[1], v[2])

    image_spec = ImagePreprocess(acc_inputs[0].dims[1], acc_inputs[0].dims[2], three(values["mean"]),
                                 three(values["std"]))
    step = HostStep(name=f"{req.name}_preprocess", kind="image_preprocess",
                    inputs=(TensorSpec("IMAGE", "TYPE_UINT8", (-1, -1, 3)),), outputs=acc_inputs,
                    parameters=tuple(sorted(image_spec.parameters().items())))
    return step, image_spec


def _labels_step(req: OnboardRequest, acc_outputs: tuple[TensorSpec, ...]) -> tuple[HostStep | None, list[str] | None]:
    """``--labels OUTPUT=FILE``: a host step from the graph's class-id output to label strings (``labels``)."""
    if req.labels is None:
        return None, None
    from model_repository.image_steps import read_labels

    output, path = req.labels
    ids = next((t for t in acc_outputs if t.name == output), None)
    if ids is None:
        raise OnboardingError(f"--labels {output}={path}: the model has no output {output!r}; "
                              f"outputs: {[t.name for t in acc_outputs]}")
    if ids.data_type not in ("TYPE_INT64", "TYPE_INT32"):
        raise OnboardingError(f"--labels {output}={path}: output {output!r} is {ids.data_type[5:]}; class ids "
                              "must be INT64 or INT32")
    if "labels" in {t.name for t in acc_outputs}:
        raise OnboardingError("--labels: the model already has an output named 'labels', which the label step adds")
    try:
        labels = read_labels(path)
    except ValueError as e:
        raise OnboardingError(str(e)) from None
    step = HostStep(name=f"{req.name}_labels", kind="class_labels", inputs=(ids,),
                    outputs=(TensorSpec("labels", "TYPE_STRING", ids.dims),),
                    parameters=(("labels", f"{req.name}.labels.txt"),), files=(f"{req.name}.labels.txt",))
    return step, labels


# --- 2./3. configs, compile, gate ----------------------------------------------------------------

def write_configs(checked: Checked, out: Path) -> dict[str, str]:
    from model_repository.triton_config import (
        Target,
        accelerated_config,
        ensemble_config,
        host_step_config,
        to_pbtxt,
    )

    written = {}
    model = checked.model
    for kind, instances in (("cpu", 1), ("gpu", 1), ("inferentia", 2)):
        target = Target(kind, instances=instances)
        configs = [accelerated_config(model, target), *(host_step_config(model, h) for h in model.host_steps)]
        if model.kind == "ensemble":
            configs.append(ensemble_config(model))
        for cfg in configs:
            path = out / "triton" / kind / cfg.name / "config.pbtxt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(to_pbtxt(cfg))
        path = out / "triton" / kind / model.name / "config.pbtxt"
        where = "host CPU" if kind in checked.model.host_cpu_on else kind
        written[kind] = f"{path.relative_to(out)} (runs on: {where})"
    return written


def compile_gpu(checked: Checked, onnx_path: Path, out_dir: Path) -> Variant:
    from model_repository import tensorrt

    placement, why = checked.placement["gpu"]
    if placement == "host_cpu":
        return Variant("tensorrt", "fp16_engine", SKIPPED, f"skipped: placed on the host CPU: {why}")
    shapes = tensorrt_shapes(checked.signature, checked.model.max_batch_size)
    if shapes is None:
        return Variant("tensorrt", "fp16_engine", SKIPPED, "skipped: an input has a dynamic non-batch dimension; "
                       "TensorRT needs its range (build the engine with trtexec --minShapes/--optShapes/--maxShapes)")
    tc = tensorrt.find_toolchain()
    if tc.kind == "none":
        return Variant("tensorrt", "fp16_engine", SKIPPED, f"skipped: {tc.reason}")
    t0 = time.monotonic()  # pragma: no cover - needs TensorRT
    engine = out_dir / f"{checked.model.name}.plan"
    if tc.kind == "trtexec":
        import subprocess

        assert tc.trtexec
        subprocess.run(tensorrt.trtexec_command(tc.trtexec, onnx_path, engine, shapes=shapes), check=True)
    else:
        tensorrt.build_with_python_api(onnx_path, engine, shapes=shapes)
    return Variant("tensorrt", "fp16_engine", BUILT, "built; its accuracy gate runs on the GPU pool", engine,
                   seconds=time.monotonic() - t0)


def compile_inferentia(checked: Checked) -> Variant:
    from profiler.compile import find_neuron

    placement, why = checked.placement["inferentia"]
    if placement == "host_cpu":
        return Variant("neuron", "neuron_fp32", SKIPPED, f"skipped: placed on the host CPU: {why}")
    if find_neuron() is None:
        return Variant("neuron", "neuron_fp32", SKIPPED, "skipped: no torch-neuronx here (the TorchScript is "
                       "traced for Neuron on an inf2 with the Neuron SDK)")
    return Variant("neuron", "neuron_fp32", SKIPPED,  # pragma: no cover - only on inf2
                   "skipped: trace on the inf2 build host with `python -m profiler compile`")


# --- 4./5. profiles ------------------------------------------------------------------------------

def cpu_profile(req: OnboardRequest, checked: Checked, staging: Path,
                progress: Callable[[str], None]) -> tuple[dict[str, Any], dict[int, float]]:
    """-> the CPU profile document and, for an ensemble, its host steps' measured compute per
    request by batch size (concurrency 1): the part every accelerator's instance still runs on
    its CPU, which the accelerator estimates add."""
    from tqdm import tqdm

    from profiler.bench import SweepPlan
    from profiler.run import profile_model
    from router_lib.config import load_prices, load_tiers

    batches = tuple(sorted({1, min(8, checked.model.max_batch_size), checked.model.max_batch_size}))
    plan = SweepPlan(batches, req.profile_concurrency, req.profile_warmup_s, req.profile_measure_s, min_requests=20)
    bar = tqdm(total=len(plan.settings()), desc=f"profile {req.name} on the CPU pool", unit="setting", file=sys.stdout)

    def step(setting: tuple[int, int]) -> None:
        bar.set_postfix_str(f"batch {setting[0]} conc {setting[1]}")
        bar.update(1)

    try:
        run = profile_model(checked.model, staging, plan, tiers=load_tiers(ROOT / "data" / "tiers.yaml"),
                            prices=load_prices(ROOT / "data" / "prices.yaml"), instance_type=req.instance_type,
                            accelerator="cpu", instances=1, progress=step)
    finally:
        bar.close()
    progress(f"p50 ms by batch {run.document['latency_ms_by_batch']}")
    hosts = [h.name for h in checked.model.host_steps]
    host_ms = {p.batch_size: round(sum(p.server[h].compute_ms for h in hosts), 3)
               for p in run.points if p.concurrency == 1 and hosts}
    if host_ms:
        progress(f"host steps {hosts}: compute ms per request by batch {host_ms}")
    return run.document, host_ms


def estimates(checked: Checked, cpu_doc: dict[str, Any],
              host_ms: dict[int, float] | None = None) -> dict[str, dict[str, Any]]:
    from model_repository.estimates import count_flops, estimate_document

    flops = count_flops(checked.onnx_model)
    return {acc: estimate_document(model=checked.model.name, accelerator=acc,
                                   max_batch_size=checked.model.max_batch_size,
                                   flops=flops, placement=checked.placement[acc][0],
                                   cpu_latency_ms_by_batch=cpu_doc["latency_ms_by_batch"],
                                   cpu_p99_over_p50=float(cpu_doc["p99_over_p50"]),
                                   host_ms_by_batch=host_ms or None,
                                   date=time.strftime("%Y-%m-%d", time.gmtime()))
            for acc in ("gpu", "inferentia")}


# --- 6. register ---------------------------------------------------------------------------------

ESTIMATE_HEADER = ("# ESTIMATE written by `python -m model_repository add`, not a measurement: see provenance.\n"
                   "# Replace it with a measurement on the hardware (python -m profiler profile --accelerator ...).\n")


def _write_estimate(path: Path, doc: dict[str, Any]) -> None:
    """Atomically, after the router's own loader accepted it (as ``profile_io.write_profile``)."""
    import os
    import tempfile

    import yaml

    from router_lib.config import load_profile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(ESTIMATE_HEADER + yaml.safe_dump(doc, sort_keys=False, width=100))
        load_profile(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def register(req: OnboardRequest, checked: Checked, staging: Path, profiles: dict[str, dict[str, Any]],
             report: dict[str, Any]) -> list[str]:
    """Put everything in place; on any error remove what was put and re-raise.  -> pools serving it."""
    from profiler.profile_io import write_profile
    from router_lib.config import ConfigError, load_fleet

    name = req.name
    written: list[Path] = []
    try:
        req.artifacts.mkdir(parents=True, exist_ok=True)
        for f in (f"{name}.onnx", f"{name}.torchscript.pt", f"{name}.samples.npz", f"{name}.labels.txt"):
            if (staging / f).exists():
                dst = req.artifacts / f
                shutil.copy2(staging / f, dst)
                written.append(dst)
        for acc, doc in profiles.items():
            path = req.profiles / f"{name}.{acc}.yaml"
            written.append(path)
            if acc == "cpu":
                write_profile(path, doc)
            else:
                _write_estimate(path, doc)
        tolerances = {t.name: req.tolerances.get(t.name, OutputTolerance()) for t in checked.model.accelerated.outputs}
        import hashlib

        doc = description_document(checked.model, placement=checked.placement, tolerances=tolerances, source={
            "onnx": str(req.onnx.resolve()), "sha256": hashlib.sha256(req.onnx.read_bytes()).hexdigest(),
            "opsets": {(d or "ai.onnx"): v for d, v in sorted(checked.signature.opsets.items())},
            "samples": checked.samples_source, "onboarded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
        written.append(req.store / f"{name}.yaml")
        write_description(req.store, doc)
        models = load_models(user_dir=req.store)
        served: list[str] = []
        if req.fleet is not None:
            fleet = load_fleet(req.fleet, tuple(models))
            served = [p.name for p in fleet.pools if name in p.models]
            if not served:
                raise OnboardingError(f"{req.fleet}: no pool serves {name}: every pool lists its models "
                                      "(`models:`); add it to the pools that should serve it")
        out = req.artifacts / "onboarding" / name
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(staging / "triton", out / "triton")
        (out / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
        return served
    except (OnboardingError, ConfigError, OSError, ValueError):
        for p in written:
            p.unlink(missing_ok=True)
        raise


# --- the command ---------------------------------------------------------------------------------

def onboard(req: OnboardRequest) -> dict[str, Any]:
    """Run the whole pipeline; -> the report (also written to ``<artifacts>/onboarding/<name>/``)."""
    t_start = time.monotonic()
    timings: dict[str, float] = {}

    def timed(step: str, fn: Callable[[], Any]) -> Any:
        t0 = time.monotonic()
        say(step, "...")
        result = fn()
        timings[step] = round(time.monotonic() - t0, 2)
        return result

    checked: Checked = timed("1/6 check", lambda: check_request(req))
    sig = checked.signature
    say("1/6 check", f"inputs {[t.describe() for t in sig.inputs]}, outputs {[t.describe() for t in sig.outputs]}, "
        f"opsets {dict(sig.opsets)}; samples: {len(next(iter(checked.samples.values())))} rows "
        f"{checked.samples_source}")
    staging = req.artifacts / "onboarding" / f".{req.name}.staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        shutil.copy2(req.onnx, staging / f"{req.name}.onnx")
        if req.torchscript:
            shutil.copy2(req.torchscript, staging / f"{req.name}.torchscript.pt")
        np.savez(staging / f"{req.name}.samples.npz", **checked.public_samples)
        if req.labels is not None:
            shutil.copy2(req.labels[1], staging / f"{req.name}.labels.txt")
        configs = timed("2/6 configs", lambda: write_configs(checked, staging))
        for kind, line in configs.items():
            say("2/6 configs", f"{kind}: {line}")
        batch = min(checked.model.max_batch_size, 64)
        check = generic_check(checked.samples, checked.reference, req.tolerances, batch)

        def compile_all() -> list[Variant]:
            variants = compile_onnxruntime(staging / f"{req.name}.onnx", staging / "variants", check,
                                           variants=ORT_VARIANTS,
                                           progress=lambda v: say("3/6 compile", f"onnxruntime/{v} ..."))
            return [*variants, compile_gpu(checked, staging / f"{req.name}.onnx", staging / "variants"),
                    compile_inferentia(checked)]

        variants = timed("3/6 compile + accuracy gate", compile_all)
        for v in variants:
            say("3/6 compile", v.line())
        fp32 = next(v for v in variants if v.name == "fp32")
        if fp32.status != ACCEPTED:
            raise OnboardingError(f"the fp32 model fails its own accuracy gate ({fp32.detail}): "
                                  "ONNX Runtime is not deterministic on it")
        cpu_doc, host_ms = timed("4/6 CPU profile",
                                 lambda: cpu_profile(req, checked, staging, lambda m: say("4/6 CPU profile", m)))
        estimated = timed("5/6 estimates", lambda: estimates(checked, cpu_doc, host_ms))
        for acc, doc in estimated.items():
            say("5/6 estimates", f"{acc}: {doc['latency_ms_by_batch']} ms ({doc['provenance']['source'][:90]}...)")
        report: dict[str, Any] = {
            "model": req.name, "onnx": str(req.onnx), "signature": {
                "inputs": [t.describe() for t in sig.inputs], "outputs": [t.describe() for t in sig.outputs],
                "opsets": dict(sig.opsets)},
            "placement": {a: {"runs_on": p, "reason": r} for a, (p, r) in checked.placement.items()},
            "samples": checked.samples_source, "configs": configs,
            "variants": [{"target": v.target, "variant": v.name, "status": v.status, "detail": v.detail,
                          "metrics": v.metrics, "seconds": round(v.seconds, 2)} for v in variants],
            "profiles": {"cpu": cpu_doc, **estimated},
        }
        served = timed("6/6 register", lambda: register(req, checked, staging, {"cpu": cpu_doc, **estimated}, report))
        report["served_by_pools"] = served
        report["seconds"] = {**timings, "total": round(time.monotonic() - t_start, 2)}
        (req.artifacts / "onboarding" / req.name / "report.json").write_text(
            json.dumps(report, indent=1, default=str) + "\n")
        say("done", f"{req.name} onboarded in {report['seconds']['total']:.1f} s"
            + (f"; the next `make up` serves it on pools {served}" if served else "")
            + f"; report {req.artifacts / 'onboarding' / req.name / 'report.json'}")
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _tolerance(text: str) -> tuple[str, OutputTolerance]:
    """``OUTPUT=atol:1e-3,rtol:0,min_agreement:0.99`` (any subset)."""
    name, sep, spec = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected OUTPUT=atol:X,rtol:Y,min_agreement:Z, got {text!r}")
    values = {"atol": 1e-4, "rtol": 1e-3, "min_agreement": 1.0}
    for part in spec.split(","):
        key, _, value = part.partition(":")
        if key not in values:
            raise argparse.ArgumentTypeError(f"{text!r}: unknown tolerance {key!r}; known: {sorted(values)}")
        try:
            values[key] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: {key} must be a number, got {value!r}") from None
        if values[key] < 0 or (key == "min_agreement" and values[key] > 1):
            raise argparse.ArgumentTypeError(f"{text!r}: {key} out of range")
    return name, OutputTolerance(**values)


def _labels(text: str) -> tuple[str, Path]:
    """``OUTPUT=FILE``."""
    output, sep, path = text.partition("=")
    if not sep or not output or not path:
        raise argparse.ArgumentTypeError(f"expected OUTPUT=FILE (the class-id output and a label file), got {text!r}")
    return output, Path(path)


def default_profiles_dir(fleet: Path) -> Path:
    import yaml

    data = yaml.safe_load(fleet.read_text()) if fleet.is_file() else None
    rel = data.get("profiles", "profiles") if isinstance(data, dict) else "profiles"
    return (fleet.parent / rel).resolve()


def add_parser(sub: Any) -> argparse.ArgumentParser:
    from model_repository.definitions import user_models_dir

    a = sub.add_parser("add", help="onboard an ONNX model onto every pool (see docs/models.md)")
    a.add_argument("--name", required=True, help="model name: a-z, 0-9, '_' (the name clients call)")
    a.add_argument("--onnx", type=Path, required=True, help="the model: one .onnx file with a dynamic batch axis")
    a.add_argument("--max-batch-size", type=int, help=f"largest batch Triton forms (default {DEFAULT_MAX_BATCH})")
    a.add_argument("--inputs", type=Path, help=".npz of sample inputs, one array per input (default: generated)")
    a.add_argument("--torchscript", type=Path, help="the same model as TorchScript: lets Neuron run it on inf2")
    a.add_argument("--description", help="one line for `list` and the description file")
    a.add_argument("--tolerance", type=_tolerance, action="append", default=[],
                   help="per-output gate, OUTPUT=atol:X,rtol:Y,min_agreement:Z (repeatable)")
    a.add_argument("--preprocess", metavar="image:mean=M,std=S",
                   help="serve as an ensemble whose host step takes uint8 [height, width, 3] photos (input IMAGE), "
                        "resizes, centre-crops to the graph's [3, H, W] and applies (x - mean) / std; mean/std one "
                        "number or a/b/c per RGB channel")
    a.add_argument("--labels", type=_labels, metavar="OUTPUT=FILE",
                   help="add a host step that turns the class ids of OUTPUT into names from FILE (line k names "
                        "class k), returned as output 'labels'")
    a.add_argument("--replace", action="store_true", help="onboard again over an onboarded model of that name")
    a.add_argument("--fleet", type=Path, default=ROOT / "fleet.yaml", help="fleet whose pools will serve it")
    a.add_argument("--profiles", type=Path, help="profiles folder (default: the fleet file's)")
    a.add_argument("--store", type=Path, default=user_models_dir(), help="where descriptions of onboarded models live")
    a.add_argument("--artifacts", type=Path, default=ROOT / "build" / "models", help="built models folder")
    a.add_argument("--profile-measure-s", type=float, default=2.0, help="CPU profile: seconds per setting")
    a.add_argument("--profile-warmup-s", type=float, default=0.5)
    return a


def request_from(args: argparse.Namespace) -> OnboardRequest:
    return OnboardRequest(
        name=args.name, onnx=args.onnx, store=args.store, artifacts=args.artifacts,
        profiles=args.profiles or default_profiles_dir(args.fleet), fleet=args.fleet,
        max_batch_size=args.max_batch_size, inputs=args.inputs, torchscript=args.torchscript,
        description=args.description, tolerances=dict(args.tolerance), replace=args.replace,
        preprocess=args.preprocess, labels=args.labels,
        profile_measure_s=args.profile_measure_s, profile_warmup_s=args.profile_warmup_s,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model_repository", description=__doc__.splitlines()[0])
    add_parser(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)
    from router_lib.config import ConfigError

    try:
        onboard(request_from(args))
    except (OnboardingError, ConfigError) as e:  # ConfigError: a broken fleet or description file, named
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
