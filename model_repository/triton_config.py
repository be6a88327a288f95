"""Generate Triton model configurations and repositories, per target, from one model description.

Targets:

- ``cpu``: ``backend: "onnxruntime"`` -- the official C++ backend in the production image, the
  Python-based backend of the same name here.  The config is identical in both places.
- ``gpu``: ``platform: "tensorrt_plan"`` serving the engine the build step makes where TensorRT is.
- ``inferentia``: ``backend: "python"`` running ``python_models/neuron/model.py`` over a TorchScript
  artifact (``torch_neuronx.trace`` output on inf2).
- ``emulated``: ``backend: "emulated"``, the local stand-in for a GPU or Inferentia pool; its
  parameters carry the pool, accelerator and profile, and it says ``emulated`` everywhere.

Dynamic batching: ``max_queue_delay_microseconds: 0``.  A delay adds its full length to every lone
request (2 ms measured here), while with 0 Triton still batches whatever queued while an instance
was busy -- exactly the load at which batching matters.  The tokenizer step is host CPU work on
every target.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from model_repository.definitions import ModelDefinition, TensorSpec
from model_repository.model_types import HostStep
from router_lib.domain import Accelerator, PoolSpec, Profile, TierSet
from router_lib.priority import HEADROOM_SHARE, TierPriorities, shared_batch_cap, tier_priorities

PACKAGE_DIR = Path(__file__).resolve().parent
# The model-config parameter naming the wake-up level (``TierSharing.wake_level``); the waker
# (``fleet.batcher_wake``, standard library only so that it runs beside any Triton image) spells it too.
WAKE_LEVEL_PARAMETER = "batcher_wake_level"
TARGETS = ("cpu", "gpu", "inferentia", "emulated")


@dataclass(frozen=True)
class Target:
    """Where a repository will be served.  ``pool`` and ``profile`` only matter when emulated."""

    kind: str  # one of TARGETS
    instances: int = 1
    pool: PoolSpec | None = None
    profile: Profile | None = None
    # Tiers sharing this pool through Triton's priority levels (docs/overload.md); None: one FIFO
    # queue per model, as before.
    sharing: TierSharing | None = None


@dataclass(frozen=True)
class TierSharing:
    """Priority levels and queue policies (``router_lib.priority``; None: one FIFO queue) for every
    dynamically batched model of the repository, and ``max_batch``: the batch the accelerated step is capped at
    (``preferred_batch_size``) so that a gold request's head-of-line wait fits its bound
    (``router_lib.priority.largest_batch_within``); None: no cap.

    ``host_steps``: an ensemble's host steps (tokenizer, pre/post-processing on the CPU) get the
    levels too.  Off by default: on Triton 2.51, with levels on the Python-backend tokenizer as
    well, gold requests stalled up to 170 ms at a few dozen requests a second (6 of 935 over 50 ms);
    with levels on the accelerated step only, or none, no request of any tier took over 10 ms
    (``benchmarks/resilience/host_step_priority.py``, results in
    ``benchmarks/results/resilience/host_step_priority.md``; measured before the cause was found:
    Triton's missed batcher wake-up, which ``wake_level`` now bounds on every step with levels).  A host step costs milliseconds, so
    gold waits behind at most a few of them; the accelerated step, where the capacity is, keeps
    the levels."""

    priorities: TierPriorities | None
    max_batch: int | None = None
    host_steps: bool = False
    # One more level below the tiers' for ``fleet.batcher_wake`` (docs/overload.md): its requests
    # expire 1 us after they are queued, so they only wake the batcher and never execute.  Triton
    # 2.51's batcher, with any priority level, can miss the wake-up of an instance that frees
    # while it waits for one, leaving queued requests until the next arrival or 500 ms.
    wake_level: bool = True

    def __post_init__(self) -> None:
        if self.max_batch is not None and self.max_batch < 1:
            raise ValueError(f"TierSharing.max_batch must be >= 1, got {self.max_batch}")


def tier_sharing(tiers: TierSet, profile: Profile, *, headroom_share: float = HEADROOM_SHARE, timeout_factor: float = 0.75,
                 best_effort_max_queue: int = 8, best_effort_queue_ms: float = 1000.0,
                 dilation: float = 1.0) -> TierSharing:
    """The ``TierSharing`` of a pool whose tiers share it (docs/overload.md): levels and queue
    policies from the tiers (a bounded tier's queue timeout ``bound x timeout_factor``, below
    Envoy's per-try timeout of 1 x bound, so the pool sheds before Envoy retries; best effort
    ``best_effort_queue_ms`` x ``dilation``, the fleet's ``time_dilation``) and the batch cap that leaves
    ``headroom_share`` of the tightest bound to what is not batch time (Envoy, client, noise)."""
    cap = shared_batch_cap(tiers, profile.latency_ms, profile.max_batch_size, headroom_share)
    levels = tier_priorities(tiers, timeout_factor=timeout_factor, best_effort_max_queue=best_effort_max_queue,
                             best_effort_timeout_ms=best_effort_queue_ms * dilation)
    return TierSharing(levels, max_batch=cap)


def apply_tier_sharing(cfg: mc.ModelConfig, sharing: TierSharing | None, *, cap_batch: bool) -> None:
    """Declare the tiers' priority levels and queue policies on ``cfg``'s dynamic batcher.
    A request's ``priority`` parameter picks its level (set by the edge from its tier); one without
    gets the default tier's.  ``allow_timeout_override`` stays off: a client cannot lengthen its
    own queue timeout past its tier's."""
    if sharing is None:
        return
    batching = cfg.dynamic_batching
    if sharing.priorities is not None:
        batching.priority_levels = sharing.priorities.levels
        batching.default_priority_level = sharing.priorities.default_level
        for policy in sharing.priorities.policies:
            queue = batching.priority_queue_policy[policy.level]
            queue.timeout_action = mc.ModelQueuePolicy.REJECT
            queue.max_queue_size = policy.max_queue_size
            queue.default_timeout_microseconds = round(policy.timeout_ms * 1000) if policy.timeout_ms else 0
        if sharing.wake_level:
            level = sharing.priorities.levels + 1
            batching.priority_levels = level
            wake = batching.priority_queue_policy[level]
            wake.timeout_action = mc.ModelQueuePolicy.REJECT
            wake.default_timeout_microseconds = 1  # expired by the time the batcher looks: never executed
            _params(cfg, **{WAKE_LEVEL_PARAMETER: str(level)})
    if cap_batch and sharing.max_batch is not None and sharing.max_batch < cfg.max_batch_size:
        # With max_queue_delay 0 the batcher sends the largest preferred size it can form.
        batching.preferred_batch_size[:] = [sharing.max_batch]


def _tensor(cls: type, t: TensorSpec):  # type: ignore[no-untyped-def]
    if not t.dims:  # a [batch] tensor (e.g. skl2onnx's labels): Triton wants dims, so [1] reshaped to []
        return cls(name=t.name, data_type=mc.DataType.Value(t.data_type), dims=[1], reshape=mc.ModelTensorReshape(shape=[]))
    return cls(name=t.name, data_type=mc.DataType.Value(t.data_type), dims=list(t.dims))


def _params(cfg: mc.ModelConfig, **values: str) -> None:
    for k, v in values.items():
        cfg.parameters[k].string_value = v


def runtime_kind(model: ModelDefinition, target: Target) -> str:
    """The target whose config serves ``model`` on ``target``: an accelerator whose compiler cannot
    run the model (``model.host_cpu_on``) serves it on the instance's host CPU, as the CPU pool does."""
    return "cpu" if target.kind in ("gpu", "inferentia") and target.kind in model.host_cpu_on else target.kind


def accelerated_config(model: ModelDefinition, target: Target) -> mc.ModelConfig:
    step = model.accelerated
    cfg = mc.ModelConfig(name=step.name, max_batch_size=model.max_batch_size)
    cfg.input.extend(_tensor(mc.ModelInput, t) for t in step.inputs)
    cfg.output.extend(_tensor(mc.ModelOutput, t) for t in step.outputs)
    cfg.dynamic_batching.max_queue_delay_microseconds = 0
    group = cfg.instance_group.add()
    group.count = target.instances
    kind = runtime_kind(model, target)
    if kind == "cpu":
        cfg.backend = "onnxruntime"
        cfg.default_model_filename = "model.onnx"
        group.kind = mc.ModelInstanceGroup.KIND_CPU
        _params(cfg, intra_op_thread_count="1")
    elif kind == "gpu":
        cfg.platform = "tensorrt_plan"
        cfg.default_model_filename = "model.plan"
        group.kind = mc.ModelInstanceGroup.KIND_GPU
    elif kind == "inferentia":
        if not step.torchscript_artifact:
            raise ValueError(f"model {model.name!r} has no TorchScript artifact: no Inferentia variant")
        cfg.backend = "python"
        group.kind = mc.ModelInstanceGroup.KIND_MODEL  # one instance per NeuronCore
        _params(cfg, artifact="model.pt", torch_threads="1")
    elif kind == "emulated":
        if target.pool is None or target.profile is None:
            raise ValueError("an emulated target needs its pool and profile")
        cfg.backend = "emulated"
        cfg.default_model_filename = "model.onnx"
        group.kind = mc.ModelInstanceGroup.KIND_CPU
        table = {str(b): ms for b, ms in sorted(target.profile.latency_ms_by_batch.items())}
        _params(
            cfg, emulated="true", pool=target.pool.name, accelerator=target.pool.accelerator.value,
            instance_type=target.pool.instance_type, outputs=target.pool.outputs.value,
            latency_ms_by_batch=json.dumps(table), profile_provenance=target.profile.provenance.kind,
            public_model=model.name, intra_op_thread_count="1",
        )
    else:
        raise ValueError(f"unknown target {target.kind!r}; known: {TARGETS}")
    apply_tier_sharing(cfg, target.sharing, cap_batch=True)
    return cfg


def tokenizer_config(model: ModelDefinition) -> mc.ModelConfig:
    assert model.tokenizer is not None
    step = model.accelerated
    cfg = mc.ModelConfig(name=model.tokenizer.name, backend="python", max_batch_size=model.max_batch_size)
    cfg.input.extend(_tensor(mc.ModelInput, t) for t in model.inputs)
    cfg.output.extend(_tensor(mc.ModelOutput, t) for t in step.inputs)
    cfg.dynamic_batching.max_queue_delay_microseconds = 0
    cfg.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    _params(cfg, pad_buckets=",".join(str(b) for b in model.tokenizer.pad_buckets))
    return cfg


def _shared(cfg: mc.ModelConfig, target: Target) -> mc.ModelConfig:
    """A host step of a shared pool: one FIFO queue unless ``TierSharing.host_steps`` (the
    ensemble hands each step its request's priority; a step without levels ignores it)."""
    if target.sharing is not None and target.sharing.host_steps:
        apply_tier_sharing(cfg, target.sharing, cap_batch=False)
    return cfg


def host_step_config(model: ModelDefinition, step: HostStep) -> mc.ModelConfig:
    """An onboarded ensemble's host step: the Python backend over ``python_models/<kind>/model.py``."""
    cfg = mc.ModelConfig(name=step.name, backend="python", max_batch_size=model.max_batch_size)
    cfg.input.extend(_tensor(mc.ModelInput, t) for t in step.inputs)
    cfg.output.extend(_tensor(mc.ModelOutput, t) for t in step.outputs)
    cfg.dynamic_batching.max_queue_delay_microseconds = 0
    cfg.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    _params(cfg, **dict(step.parameters))
    return cfg


def _host_ensemble_config(model: ModelDefinition) -> mc.ModelConfig:
    """preprocess? -> accelerated -> postprocess?, wired by tensor name: a tensor that is one of the
    model's inputs or outputs keeps its public name, any other flows between steps as ``_<name>``
    (a step's output may feed the next step and be a public output at once, e.g. class ids)."""
    public = {t.name for t in (*model.inputs, *model.outputs)}
    cfg = mc.ModelConfig(name=model.name, platform="ensemble", max_batch_size=model.max_batch_size)
    cfg.input.extend(_tensor(mc.ModelInput, t) for t in model.inputs)
    cfg.output.extend(_tensor(mc.ModelOutput, t) for t in model.outputs)
    for step in (model.preprocess, model.accelerated, model.postprocess):
        if step is None:
            continue
        s = cfg.ensemble_scheduling.step.add(model_name=step.name, model_version=-1)
        for t in step.inputs:
            s.input_map[t.name] = t.name if t.name in public else f"_{t.name}"
        for t in step.outputs:
            s.output_map[t.name] = t.name if t.name in public else f"_{t.name}"
    return cfg


def ensemble_config(model: ModelDefinition) -> mc.ModelConfig:
    if model.tokenizer is None:
        return _host_ensemble_config(model)
    step = model.accelerated
    cfg = mc.ModelConfig(name=model.name, platform="ensemble", max_batch_size=model.max_batch_size)
    cfg.input.extend(_tensor(mc.ModelInput, t) for t in model.inputs)
    cfg.output.extend(_tensor(mc.ModelOutput, t) for t in model.outputs)
    tok = cfg.ensemble_scheduling.step.add(model_name=model.tokenizer.name, model_version=-1)
    tok.input_map[model.inputs[0].name] = model.inputs[0].name
    for t in step.inputs:
        tok.output_map[t.name] = f"_{t.name}"
    acc = cfg.ensemble_scheduling.step.add(model_name=step.name, model_version=-1)
    for t in step.inputs:
        acc.input_map[t.name] = f"_{t.name}"
    acc.output_map[step.outputs[0].name] = model.outputs[0].name
    return cfg


def to_pbtxt(cfg: mc.ModelConfig) -> str:
    return text_format.MessageToString(cfg)


def _link(src: Path, dst: Path) -> None:
    if not src.exists():
        raise FileNotFoundError(f"missing artifact {src}: run `make models` first (for an onboarded model, "
                                "`python -m model_repository add --replace` with its ONNX again)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    os.symlink(src.resolve(), dst)


def _write_model(repo: Path, cfg: mc.ModelConfig, files: dict[str, Path]) -> None:
    d = repo / cfg.name
    (d / "1").mkdir(parents=True, exist_ok=True)
    (d / "config.pbtxt").write_text(to_pbtxt(cfg))
    for name, src in files.items():
        _link(src, d / "1" / name)


def write_model(repo: Path, model: ModelDefinition, target: Target, artifacts: Path) -> None:
    """Write ``model`` (and its composing models) for ``target`` into repository ``repo``."""
    step = model.accelerated
    acc_cfg = accelerated_config(model, target)
    if runtime_kind(model, target) in ("cpu", "emulated"):
        files = {"model.onnx": artifacts / step.artifact}
    elif runtime_kind(model, target) == "gpu":
        files = {}
        engine = (artifacts / step.artifact).with_suffix(".plan")
        if engine.exists():
            files["model.plan"] = engine
    else:
        assert step.torchscript_artifact
        files = {"model.pt": artifacts / step.torchscript_artifact,
                 "model.py": PACKAGE_DIR / "python_models" / "neuron" / "model.py"}
    _write_model(repo, acc_cfg, files)
    for host in model.host_steps:
        _write_model(repo, _shared(host_step_config(model, host), target), {
            "model.py": PACKAGE_DIR / "python_models" / host.kind / "model.py",
            **{f: artifacts / f for f in host.files}})
    if model.kind == "ensemble" and not model.host_steps:
        _write_model(repo, _shared(tokenizer_config(model), target), {
            "model.py": PACKAGE_DIR / "python_models" / "tokenizer" / "model.py",
            "tokenizer.json": artifacts / "tokenizer.json",
        })
    if model.kind == "ensemble":
        _write_model(repo, ensemble_config(model), {})


def write_repository(repo: Path, models: list[tuple[ModelDefinition, Target]], artifacts: Path) -> Path:
    """A fresh repository at ``repo`` holding each (model, target)."""
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    for model, target in models:
        write_model(repo, model, target, artifacts)
    return repo


def target_for_pool(pool: PoolSpec, profile: Profile, sharing: TierSharing | None = None) -> Target:
    """The local target that serves ``pool``: real CPU pools run ONNX Runtime, others are emulated.
    ``sharing``: the tiers share the pool through Triton priority levels (None: as before)."""
    if pool.emulated:
        return Target("emulated", instances=profile.instances_per_replica, pool=pool, profile=profile, sharing=sharing)
    if pool.accelerator is not Accelerator.CPU:
        raise ValueError(f"pool {pool.name!r}: only CPU pools can be real on this machine")
    return Target("cpu", instances=profile.instances_per_replica, pool=pool, profile=profile, sharing=sharing)
