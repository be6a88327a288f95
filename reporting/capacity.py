"""Capacity runs compared: what each fleet cost over the same arrivals, whether it met the SLAs,
how its decider moved, and the verdict on issue #11's targets.

Entry points: :func:`summarise_runs` (run folders -> one JSON-ready summary) and
:func:`write_summary` (summary -> ``summary.json``, ``report.md`` and the PNGs).  The summary is
the one value both write from, so the page and the plots can be regenerated from
``summary.json`` alone.

Units, the decision that shapes every field: the fleets ran in time dilated ``k`` times, so a
time is reported in platform seconds (wall / k) unless its name says ``wall``; latency bounds
and p99s come in both (``*_wall_ms`` as the client measured them, ``*_platform_ms`` = / k);
money is platform-time money (the ledger accrues wall / k at list $/h).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reporting.capacity_metrics import (
    changes_per_pool,
    demand_rise_onsets,
    desired_changes,
    flaps_per_pool,
    integrate_ideal,
    ledger_usd_between,
    replica_cost_per_hour_usd,
    replica_cost_usd,
    requests_per_window,
    step_responses,
    tier_latencies,
    window_p99_ms,
)
from reporting.capacity_page import render_report
from reporting.capacity_plots import write_plots
from reporting.capacity_run import CapacityRun, load_run
from reporting.capacity_targets import compare_fleets, issue_targets, summary_notes

WINDOW_WALL_S = 1.0  # p99 and demand windows: one wall second, the timeline's own resolution
SUMMARY_JSON = "summary.json"
REPORT_MD = "report.md"

UNITS = {
    "time": "platform seconds (wall seconds / dilation) unless the field name says wall",
    "latency": "*_wall_ms as the client measured (dilated); *_platform_ms = wall ms / dilation",
    "cost": "USD at list $/h per hour of platform time",
    "demand": "requests per platform second (requests per wall second x dilation)",
}


def _r(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or math.isnan(x) else round(x, digits)


def fleet_kind(run: CapacityRun) -> str:
    """"single-accelerator" when every pool runs on one instance type (an inf2-only fleet serving a
    model on its instances' host CPUs is still one kind of machine), else "heterogeneous"."""
    return "single-accelerator" if len(run.instance_types) == 1 else "heterogeneous"


def sample_interval_wall_s(run: CapacityRun) -> float:
    """The timeline's median spacing: the resolution of every decision time (1 s if unknown)."""
    gaps = [b.t_unix_s - a.t_unix_s for a, b in zip(run.timeline, run.timeline[1:], strict=False)]
    return statistics.median(gaps) if gaps else 1.0


def _sla_misses(tiers: dict[str, Any], run: CapacityRun, failed: int) -> list[str]:
    misses = []
    for tier, target in run.target_compliance.items():
        if target is None:
            continue
        share = tiers.get(tier)
        if share is None or share < target - 1e-12:
            shown = "no requests" if share is None else f"{100 * share:.2f}%"
            misses.append(f"{tier} within bound {shown} < {100 * target:g}%")
    if failed:
        misses.append(f"{failed} failed requests")
    return misses


def _step(run: CapacityRun, s: Any) -> dict[str, Any]:
    def p(t: float | None) -> float | None:
        return None if t is None else _r(run.platform_s(t), 4)

    delay = s.decision_delay_wall_s
    restore: float | str | None = "n/a" if not s.sla_broke else (
        None if s.restore_wall_s is None else _r(s.restore_wall_s / run.dilation, 4))
    return {"pool": s.pool, "from": s.before, "to": s.after, "decided_t_platform_s": p(s.decided_unix_s),
            "demand_rise_t_platform_s": p(s.rise_unix_s), "decision_delay_wall_s": _r(delay, 3),
            "decision_delay_platform_s": None if delay is None else _r(delay / run.dilation, 4),
            "ready_t_platform_s": p(s.ready_unix_s), "sla_broke": s.sla_broke, "restore_platform_s": restore}


def summarise_run(run: CapacityRun, *, noise_sigmas: float = 2.0) -> dict[str, Any]:
    """One run's figures (see the module docstring for units)."""
    k, t0, t1 = run.dilation, run.started_unix_s, run.ended_unix_s
    prices = {name: p.price_per_hour_usd for name, p in run.pools.items()}
    ledger = ledger_usd_between(run.timeline, t0, t1)
    replica = replica_cost_usd(run.timeline, prices, t0, t1, k)
    cost = ledger if ledger is not None else replica
    tiers = tier_latencies(run.records, run.tier_bounds_ms)
    within = {t.tier: t.within_bound for t in tiers}  # unrounded: a verdict at 99.9% must not round up
    failed = sum(t.failed for t in tiers)
    misses = _sla_misses(within, run, failed)
    changes = desired_changes(run.timeline)
    pool_names = sorted(run.pools)
    n = max(1, math.ceil(run.duration_s * k / WINDOW_WALL_S - 1e-9))
    counts = requests_per_window([r.t_unix_s for r in run.records], t0, n, WINDOW_WALL_S)
    rises = demand_rise_onsets(counts, noise_sigmas=noise_sigmas)
    p99 = window_p99_ms(run.records, t0, n, WINDOW_WALL_S)
    steps = step_responses(run.timeline, changes, rises, p99, run.tier_bounds_ms, t0, WINDOW_WALL_S)
    by_pool_changes, by_pool_flaps = changes_per_pool(changes, pool_names), flaps_per_pool(changes, run.flap_guard_s, pool_names)
    return {
        "fleet": run.fleet, "folder": run.folder, "autoscaled": run.autoscaled, "kind": fleet_kind(run),
        "instance_types": list(run.instance_types), "dilation": k, "duration_s": run.duration_s,
        "duration_wall_s": run.duration_s * k, "workload": run.workload, "seed": run.seed,
        "integrated_cost_usd": _r(cost, 8), "cost_source": "ledger" if ledger is not None else "replica integral",
        "ledger_usd": _r(ledger, 8), "replica_integral_usd": _r(replica, 8),
        "ledger_vs_replica_integral": _r(ledger / replica, 4) if ledger is not None and replica > 0 else None,
        "ledger_spent_usd_at_end": _r(run.timeline[-1].spent_usd, 8) if run.timeline else None,
        "mean_cost_per_hour_usd": _r(cost / run.duration_s * 3600.0, 4),
        "requests": len(run.records), "requests_by_tier": {t.tier: t.requests for t in tiers},
        "within_bound": within, "p99_wall_ms": {t.tier: _r(t.p99_ms, 1) for t in tiers},
        "p99_platform_ms": {t.tier: _r(None if t.p99_ms is None else t.p99_ms / k, 2) for t in tiers},
        "tier_bounds_wall_ms": dict(run.tier_bounds_ms),
        "tier_bounds_platform_ms": {t: None if b is None else b / k for t, b in run.tier_bounds_ms.items()},
        "target_compliance": dict(run.target_compliance), "failed_requests": failed,
        "failed_by_tier": {t.tier: t.failed for t in tiers}, "meets_slas": not misses, "sla_misses": misses,
        "replica_changes": len(changes), "replica_changes_by_pool": by_pool_changes,
        "flaps": sum(by_pool_flaps.values()), "flaps_by_pool": by_pool_flaps, "flap_guard_wall_s": run.flap_guard_s,
        "demand_rises_t_platform_s": [_r(i * WINDOW_WALL_S / k, 4) for i in rises],
        "step_responses": [_step(run, s) for s in steps],
        "outputs": {name: p.outputs for name, p in sorted(run.pools.items())},
        "accelerators": {name: p.accelerator for name, p in sorted(run.pools.items())},
        "prices_per_hour_usd": prices, "max_late_wall_ms": _r(run.max_late_ms, 1), "emulation": run.emulation,
        "notes": list(run.notes), "timeline_samples": len(run.timeline), "timeline_gaps": run.timeline_gaps,
        "timeline_interval_wall_s": _r(sample_interval_wall_s(run), 3),
        "series": {
            "t_platform_s": [_r(run.platform_s(s.t_unix_s), 4) for s in run.timeline],
            "cost_per_hour_usd": [_r(replica_cost_per_hour_usd(s, prices), 4) for s in run.timeline],
            "replicas": {name: {f: [getattr(s.pools[name], f) if name in s.pools else None for s in run.timeline]
                                for f in ("desired", "ready", "existing")} for name in pool_names},
            "p99_windows": {"t_platform_s": [_r(i * WINDOW_WALL_S / k, 4) for i in range(n)],
                            "platform_ms": {t: [_r(None if v is None else v / k, 2) for v in vs] for t, vs in p99.items()}},
            "requests_per_platform_s": [c / WINDOW_WALL_S * k for c in counts],
        },
    }


def summarise(runs: Sequence[CapacityRun], *, tick_s: float,
              ideal: Callable[[float], float] | None = None, machine: str | None = None,
              noise_sigmas: float = 2.0, load_steps: bool = True) -> dict[str, Any]:
    """The comparison of ``runs`` (pure).  ``tick_s``: the control interval, wall seconds.
    ``ideal``: the planner's $/h at a platform time, integrated over the run when given."""
    if not runs:
        raise ValueError("no runs to summarise")
    if tick_s <= 0:
        raise ValueError(f"tick_s must be > 0, got {tick_s}")
    rows = [summarise_run(r, noise_sigmas=noise_sigmas) for r in runs]
    ideal_out = None
    if ideal is not None:
        first = runs[0]
        usd, ts, values = integrate_ideal(ideal, first.duration_s, WINDOW_WALL_S / first.dilation)
        ideal_out = {"cost_usd": _r(usd, 8), "t_platform_s": [_r(t, 4) for t in ts],
                     "cost_per_hour_usd": [_r(v, 4) for v in values]}
        for row in rows:
            row["cost_vs_ideal"] = _r(row["integrated_cost_usd"] / usd, 4) if usd > 0 else None
    comparison = compare_fleets(rows)
    for row in rows:
        row.update(comparison["ratios"][row["fleet"]])
    return {
        "units": UNITS, "tick_wall_s": tick_s, "window_wall_s": WINDOW_WALL_S,
        "demand_rise_rule": {"lookback_windows": 5, "rise_fraction": 0.2, "noise_sigmas": noise_sigmas},
        "ideal": ideal_out, "comparison": comparison, "runs": rows,
        "targets": issue_targets(rows, comparison, tick_s=tick_s, load_steps=load_steps),
        "notes": summary_notes(rows, machine=machine, noise_sigmas=noise_sigmas),
    }


def summarise_runs(folders: Sequence[Path | str], *, tick_s: float, ideal: Callable[[float], float] | None = None,
                   machine: str | None = None, load_steps: bool = True) -> dict[str, Any]:
    """Read every run folder and compare them (see :func:`summarise`)."""
    return summarise([load_run(f) for f in folders], tick_s=tick_s, ideal=ideal, machine=machine,
                     load_steps=load_steps)


def write_summary(summary: dict[str, Any], out_dir: Path | str) -> dict[str, Path]:
    """``summary.json``, ``report.md`` and the PNGs in ``out_dir``; returns their paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out / SUMMARY_JSON, "report": out / REPORT_MD}
    paths["summary"].write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n")
    plots = write_plots(summary, out)
    paths["report"].write_text(render_report(summary, {name: p.name for name, p in plots.items()}))
    return {**paths, **plots}
