"""A recorded load run on disk, and its in-memory form.

A run folder holds:

- ``requests.jsonl``: one :class:`locustfiles.records.RequestRecord` per request;
- ``status.jsonl``: the control server's ``/status`` sampled about once a second, trimmed to
  what the report uses (weights and reasons per route; per-pool live metrics);
- ``run.json``: what was run (label, shape and its schedule, start/end, pools with prices and
  real/emulated, tiers), Triton emulation counters (deltas over the run), machine load;
- ``plan.json``: the cost figures computed from ``router_lib`` when the run was recorded
  (capacity prices per pool/model/tier, planner fleets for the measured demand, simulator
  prediction), so a report can be regenerated later without re-planning.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from locustfiles.records import RequestRecord, read_records

REQUESTS = "requests.jsonl"
STATUS = "status.jsonl"
RUN = "run.json"
PLAN = "plan.json"
TRITON_STATS = "triton_stats.json"  # Triton statistics extension per replica, before and after the run


@dataclass(frozen=True)
class PoolInfo:
    name: str
    accelerator: str
    instance_type: str
    price_per_hour_usd: float
    replicas: int
    emulated: bool

    @property
    def label(self) -> str:
        return f"{self.name} ({'emulated' if self.emulated else 'real'})"


@dataclass(frozen=True)
class TierInfo:
    name: str
    bound_ms: float | None
    target: float | None


@dataclass(frozen=True)
class StatusSample:
    """``weights``/``reasons``: (model, tier) -> pool -> value.  ``pool_metrics``: pool -> model -> dict."""

    t_unix_s: float
    weights: Mapping[tuple[str, str], Mapping[str, int]]
    reasons: Mapping[tuple[str, str], Mapping[str, str]]
    pool_metrics: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)


def trim_status(status: Mapping[str, Any], t_unix_s: float) -> dict[str, Any]:
    """The part of a control-server ``/status`` the report keeps (one line of ``status.jsonl``)."""
    return {
        "t_unix_s": round(t_unix_s, 3),
        "routes": [{"model": r["model"], "tier": r["tier"], "weights": r["weights"], "reasons": r.get("reasons", {})}
                   for r in status.get("routes", [])],
        "pools": {p["name"]: p.get("metrics", {}) for p in status.get("pools", [])},
    }


def parse_status_line(raw: Mapping[str, Any]) -> StatusSample:
    weights = {(r["model"], r["tier"]): {k: int(v) for k, v in r["weights"].items()} for r in raw["routes"]}
    reasons = {(r["model"], r["tier"]): dict(r.get("reasons", {})) for r in raw["routes"]}
    return StatusSample(float(raw["t_unix_s"]), weights, reasons, raw.get("pools", {}))


@dataclass(frozen=True)
class RunData:
    label: str
    shape: str
    started_unix_s: float
    ended_unix_s: float
    pools: tuple[PoolInfo, ...]
    tiers: tuple[TierInfo, ...]
    records: tuple[RequestRecord, ...]
    samples: tuple[StatusSample, ...]
    schedule: tuple[tuple[float, float], ...] = ()  # (t_s from start, load multiplier) at each change
    emulation: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # pool -> counter -> delta
    load_average: tuple[float, float] = (0.0, 0.0)  # 1-min load average at start and end
    cpu_cores: int = 0
    plan: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    triton: Mapping[str, Mapping[str, Mapping[str, float]]] = field(default_factory=dict)  # pool -> model -> counter delta

    @property
    def duration_s(self) -> float:
        return max(0.0, self.ended_unix_s - self.started_unix_s)

    def pool(self, name: str) -> PoolInfo | None:
        return next((p for p in self.pools if p.name == name), None)

    def tier(self, name: str) -> TierInfo | None:
        return next((t for t in self.tiers if t.name == name), None)


def run_meta(run: RunData) -> dict[str, Any]:
    """``run.json`` for ``run`` (everything but the records, samples and plan)."""
    return {
        "label": run.label, "shape": run.shape, "started_unix_s": run.started_unix_s,
        "ended_unix_s": run.ended_unix_s,
        "pools": [vars(p) for p in run.pools], "tiers": [vars(t) for t in run.tiers],
        "schedule": [list(c) for c in run.schedule], "emulation": run.emulation,
        "load_average": list(run.load_average), "cpu_cores": run.cpu_cores, "notes": list(run.notes),
    }


def load_run(folder: Path | str) -> RunData:
    folder = Path(folder)
    meta = json.loads((folder / RUN).read_text())
    samples = []
    status_path = folder / STATUS
    if status_path.exists():
        for line in status_path.read_text().splitlines():
            if line.strip():
                try:
                    samples.append(parse_status_line(json.loads(line)))
                except (ValueError, KeyError):
                    continue  # a sample cut short when the run stopped
    plan_path = folder / PLAN
    return RunData(
        label=meta["label"], shape=meta["shape"], started_unix_s=float(meta["started_unix_s"]),
        ended_unix_s=float(meta["ended_unix_s"]),
        pools=tuple(PoolInfo(**p) for p in meta["pools"]), tiers=tuple(TierInfo(**t) for t in meta["tiers"]),
        records=tuple(sorted(read_records(folder / REQUESTS), key=lambda r: r.t_unix_s)),
        samples=tuple(sorted(samples, key=lambda s: s.t_unix_s)),
        schedule=tuple((float(t), float(m)) for t, m in meta.get("schedule", [])),
        emulation=meta.get("emulation", {}), load_average=tuple(meta.get("load_average", (0.0, 0.0))),  # type: ignore[arg-type]
        cpu_cores=int(meta.get("cpu_cores", 0)),
        plan=json.loads(plan_path.read_text()) if plan_path.exists() else {}, notes=tuple(meta.get("notes", ())),
        triton=meta.get("triton", {}),
    )


def recorded_trace(run: RunData) -> Any:
    """The run's own arrivals as a simulator trace: each item of a batch is one arrival, and the
    items of one request share its index in ``run.records`` (``Trace.request_id``), so the
    simulator routes and executes them as the one request they were."""
    import numpy as np

    from router_lib.workload import Trace

    models = tuple(sorted({r.model for r in run.records}))
    tiers = tuple(sorted({r.tier for r in run.records}))
    times, m_idx, t_idx, owner = [], [], [], []
    for i, r in enumerate(run.records):
        for _ in range(max(1, r.batch)):
            times.append(r.t_unix_s - run.started_unix_s)
            m_idx.append(models.index(r.model))
            t_idx.append(tiers.index(r.tier))
            owner.append(i)
    order = np.argsort(np.array(times), kind="stable")  # stable: a request's items stay together
    return Trace(np.array(times)[order], np.array(m_idx, dtype=np.int32)[order], np.array(t_idx, dtype=np.int32)[order],
                 models, tiers, max(run.duration_s, 1.0), request_id=np.array(owner, dtype=np.int64)[order])
