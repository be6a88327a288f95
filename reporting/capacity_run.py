"""One capacity run folder (``local_platform.capacity_experiment``), read and checked once.

A folder holds ``run.json`` (what ran), ``records.jsonl`` (every request as the client saw it,
wall clock) and ``timeline.jsonl`` (the control server's ``/status`` once a wall second).  This
module is the boundary: a missing or mistyped field of ``run.json`` is an error naming the file
and the field; a timeline line the sampler wrote for a failed ``/status`` read (``{"t_unix_s",
"error"}``) or cut short when the run stopped is counted as a gap, not guessed at.  Inside, the
analysis trusts the frozen values built here.

Clocks: every ``t_unix_s`` is wall time.  The fleet ran in time dilated ``dilation`` times, so a
platform second is ``dilation`` wall seconds; :meth:`CapacityRun.platform_s` converts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from locustfiles.records import RequestRecord, read_records

RUN = "run.json"
RECORDS = "records.jsonl"
TIMELINE = "timeline.jsonl"


class CapacityRunError(ValueError):
    """A run folder that cannot be read as a capacity run; the message names the file and field."""


@dataclass(frozen=True)
class PoolSpec:
    """A pool as ``run.json`` declares it."""

    name: str
    accelerator: str
    instance_type: str
    price_per_hour_usd: float
    min_replicas: int
    max_replicas: int
    outputs: str  # "synthetic" | "real"


@dataclass(frozen=True)
class PoolSample:
    """One pool in one timeline sample.  ``existing``: replicas that exist (ready, starting or
    terminating), the ones the ledger bills."""

    desired: int
    ready: int
    starting: int
    existing: int


@dataclass(frozen=True)
class TimelineSample:
    t_unix_s: float
    pools: Mapping[str, PoolSample]
    spent_usd: float | None  # the ledger's integral so far, platform time (None: not reported)


@dataclass(frozen=True)
class CapacityRun:
    """A run as the analysis sees it.  ``duration_s`` is platform seconds; ``tier_bounds_ms`` are
    already dilated (wall ms, as the client measured); ``flap_guard_s`` is on the decider's clock,
    which is wall time (``control.server`` passes the autoscaling block through undilated)."""

    fleet: str
    folder: str
    autoscaled: bool
    dilation: float
    started_unix_s: float
    duration_s: float
    workload: str
    seed: int | None
    max_late_ms: float | None
    pools: Mapping[str, PoolSpec]
    tier_bounds_ms: Mapping[str, float | None]
    target_compliance: Mapping[str, float | None]
    flap_guard_s: float
    emulation: str
    notes: tuple[str, ...]
    records: tuple[RequestRecord, ...]
    timeline: tuple[TimelineSample, ...]
    timeline_gaps: int = 0  # lines that held no status (a failed read, a cut line)

    @property
    def ended_unix_s(self) -> float:
        """Wall clock at the end of the workload (its platform duration x dilation after the start)."""
        return self.started_unix_s + self.duration_s * self.dilation

    def platform_s(self, t_unix_s: float) -> float:
        """Platform seconds since the workload started."""
        return (t_unix_s - self.started_unix_s) / self.dilation

    @property
    def instance_types(self) -> tuple[str, ...]:
        return tuple(sorted({p.instance_type for p in self.pools.values()}))


def _field(raw: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in raw:
        raise CapacityRunError(f"{where}: missing field {key!r}")
    value = raw[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int to isinstance; a flag where a number belongs is a mistake, not a 1
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise CapacityRunError(f"{where}: field {key!r} must be {names}, got {value!r}")
    return value


def _optional_numbers(raw: Mapping[str, Any], key: str, where: str) -> dict[str, float | None]:
    table = _field(raw, key, dict, where)
    out: dict[str, float | None] = {}
    for name, value in table.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise CapacityRunError(f"{where}: {key}.{name} must be a number or null, got {value!r}")
        out[str(name)] = None if value is None else float(value)
    return out


def _pool_spec(name: str, raw: Any, where: str) -> PoolSpec:
    if not isinstance(raw, dict):
        raise CapacityRunError(f"{where}: pools.{name} must be an object, got {raw!r}")
    here = f"{where}: pools.{name}"
    bounds = _field(raw, "bounds", list, here)
    if len(bounds) != 2 or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
        raise CapacityRunError(f"{here}: bounds must be [min, max] replicas, got {bounds!r}")
    outputs = _field(raw, "outputs", str, here)
    if outputs not in ("synthetic", "real"):
        raise CapacityRunError(f"{here}: outputs must be 'synthetic' or 'real', got {outputs!r}")
    return PoolSpec(name, _field(raw, "accelerator", str, here), _field(raw, "instance_type", str, here),
                    float(_field(raw, "price_per_hour_usd", (int, float), here)), bounds[0], bounds[1], outputs)


def parse_timeline_line(raw: Mapping[str, Any]) -> TimelineSample | None:
    """A sample, or None for a line without status (the sampler's ``{"t_unix_s", "error"}``)."""
    if "pools" not in raw or not isinstance(raw.get("pools"), list):
        return None
    pools = {}
    for p in raw["pools"]:
        ready, starting = int(p["ready_replicas"]), int(p.get("starting_replicas", 0))
        replicas = p.get("replicas")
        existing = len(replicas) if isinstance(replicas, list) else ready + starting
        pools[str(p["name"])] = PoolSample(int(p["desired_replicas"]), ready, starting, existing)
    cost = raw.get("cost") or {}
    spent = cost.get("spent_usd")
    return TimelineSample(float(raw["t_unix_s"]), pools, None if spent is None else float(spent))


def read_timeline(path: Path) -> tuple[tuple[TimelineSample, ...], int]:
    """The samples in time order, and how many lines held none."""
    samples, gaps = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            sample = parse_timeline_line(json.loads(line))
        except (ValueError, KeyError, TypeError):
            sample = None  # a line cut short when the run stopped
        if sample is None:
            gaps += 1
        else:
            samples.append(sample)
    return tuple(sorted(samples, key=lambda s: s.t_unix_s)), gaps


def load_run(folder: Path | str) -> CapacityRun:
    """Read and check one run folder; :class:`CapacityRunError` names what is wrong."""
    folder = Path(folder)
    where = str(folder / RUN)
    for name in (RUN, RECORDS, TIMELINE):
        if not (folder / name).is_file():
            raise CapacityRunError(f"{folder}: no {name} (a capacity run folder holds {RUN}, {RECORDS}, {TIMELINE})")
    try:
        meta = json.loads((folder / RUN).read_text())
    except ValueError as e:
        raise CapacityRunError(f"{where}: not JSON ({e})") from None
    if not isinstance(meta, dict):
        raise CapacityRunError(f"{where}: must hold a JSON object")
    dilation = float(_field(meta, "dilation", (int, float), where))
    if dilation <= 0:
        raise CapacityRunError(f"{where}: dilation must be > 0, got {dilation}")
    duration = float(_field(meta, "duration_s", (int, float), where))
    if duration <= 0:
        raise CapacityRunError(f"{where}: duration_s must be > 0, got {duration}")
    pools = {str(n): _pool_spec(str(n), p, where) for n, p in _field(meta, "pools", dict, where).items()}
    if not pools:
        raise CapacityRunError(f"{where}: pools is empty")
    autoscaling = meta.get("autoscaling") or {}
    guard = autoscaling.get("flap_guard_s", 0.0) if isinstance(autoscaling, dict) else 0.0
    if isinstance(guard, bool) or not isinstance(guard, int | float) or guard < 0:
        raise CapacityRunError(f"{where}: autoscaling.flap_guard_s must be a number >= 0, got {guard!r}")
    max_late = meta.get("max_late_ms")
    seed = meta.get("seed")
    timeline, gaps = read_timeline(folder / TIMELINE)
    return CapacityRun(
        fleet=_field(meta, "name", str, where), folder=str(folder),
        autoscaled=_field(meta, "autoscaled", bool, where), dilation=dilation,
        started_unix_s=float(_field(meta, "started_unix_s", (int, float), where)), duration_s=duration,
        workload=str(meta.get("workload", "")), seed=seed if isinstance(seed, int) else None,
        max_late_ms=float(max_late) if isinstance(max_late, int | float) else None, pools=pools,
        tier_bounds_ms=_optional_numbers(meta, "tier_bounds_ms", where),
        target_compliance=_optional_numbers(meta, "target_compliance", where), flap_guard_s=float(guard),
        emulation=str(meta.get("emulation", "")), notes=tuple(str(n) for n in meta.get("notes", ())),
        records=tuple(sorted(read_records(folder / RECORDS), key=lambda r: r.t_unix_s)),
        timeline=timeline, timeline_gaps=gaps,
    )
