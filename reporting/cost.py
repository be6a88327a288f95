"""Cost of a run: the local fleet as provisioned, the traffic as routed, and the planner's fleets.

Three figures, because each answers a different question and none alone is honest:

- **provisioned**: the local fleet (every pool's replicas x $/h) for the run's length, per 1M
  requests.  At a laptop's load this is dominated by idle accelerators.
- **capacity-priced (as routed)**: each request charged the cost per inference of the pool that
  served it, at that pool's safe throughput for the request's tier (``router_lib``'s capacity
  table: price / (3600 x safe utilisation x throughput)); what the traffic costs when pools are
  sized to it, which is what the routing policy minimises.
- **planner**: the MILP's cheapest heterogeneous fleet and best single-accelerator fleet of each
  kind for the run's measured demand (peak items/s over 5-s windows, per model and tier).

``plan_for_run`` (needs ``router_lib`` and the fleet files) is computed when a run is recorded and
stored in ``plan.json``; ``cost_section`` only reads the run, so reports regenerate unchanged.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

from reporting.run_data import RunData, recorded_trace

DEMAND_WINDOW_S = 5.0


def demand_items_per_s(run: RunData, window_s: float = DEMAND_WINDOW_S) -> tuple[dict[str, float], dict[str, float]]:
    """(peak, mean) items/s per ``"model/tier"``; a batch of 8 counts 8 (the pools run items)."""
    windows: dict[str, Counter[int]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    for r in run.records:
        key = f"{r.model}/{r.tier}"
        windows[key][int((r.t_unix_s - run.started_unix_s) // window_s)] += r.batch
        totals[key] += r.batch
    duration = max(run.duration_s, window_s)
    peak = {k: max(c.values()) / window_s for k, c in sorted(windows.items())}
    mean = {k: totals[k] / duration for k in sorted(totals)}
    return peak, mean


def _plan_summary(plan: Any, label: str, mean_rps: float) -> dict[str, Any]:
    cost = plan.cost_per_hour_usd if plan.feasible else None
    return {
        "label": label, "feasible": bool(plan.feasible), "reason": plan.reason,
        "cost_per_hour_usd": round(cost, 4) if cost is not None else None,
        "usd_per_million_requests": round(cost / (3600.0 * mean_rps) * 1e6, 4) if cost and mean_rps > 0 else None,
        "pools": [{"name": p.name, "replicas": p.replicas, "instance_type": p.instance_type} for p in plan.pools],
    }


def plan_for_run(run: RunData, fleet: Any, *, simulate_run: bool = True) -> dict[str, Any]:
    """``plan.json``: capacity prices, planner fleets for the measured demand, simulator prediction."""
    from router_lib.domain import Accelerator
    from router_lib.planner import plan_fleet, plan_single_accelerator
    from router_lib.policy_stages import build_capacity_table
    from router_lib.policy_types import PolicySettings

    table = build_capacity_table(fleet, PolicySettings())
    capacity: dict[str, dict[str, dict[str, float | None]]] = defaultdict(lambda: defaultdict(dict))
    for model, entries in table.serving.items():
        for e in entries:
            for tier, c in e.cost_per_million.items():
                capacity[e.name][model][tier] = None if math.isinf(c) else round(c, 6)
    peak, mean = demand_items_per_s(run)
    demand = {tuple(k.split("/", 1)): v for k, v in peak.items()}
    mean_rps = len(run.records) / run.duration_s if run.duration_s > 0 else 0.0
    het = plan_fleet(demand, fleet)  # type: ignore[arg-type]
    kinds = sorted({p.accelerator for p in fleet.pools}, key=lambda a: a.value)
    singles = {a.value: _plan_summary(plan_single_accelerator(demand, fleet, Accelerator(a)),  # type: ignore[arg-type]
                                      f"only {a.value}", mean_rps) for a in kinds}
    out: dict[str, Any] = {
        "capacity_cost_per_million": {p: dict(m) for p, m in capacity.items()},
        "demand_peak_items_per_s": {k: round(v, 3) for k, v in peak.items()},
        "demand_mean_items_per_s": {k: round(v, 3) for k, v in mean.items()},
        "heterogeneous": _plan_summary(het, "heterogeneous (planner)", mean_rps),
        "single_accelerator": singles,
    }
    if simulate_run:
        from reporting.calibrated import simulate_calibrated

        out["simulated"] = simulate_recorded_load(run, fleet)
        out["simulated_calibrated"] = simulate_calibrated(run, fleet)
    return out


def simulate_recorded_load(run: RunData, fleet: Any, seed: int = 1) -> dict[str, Any]:
    """Replay the run's arrivals through the simulator with the fleet's pools, profiles and
    policy: the prediction for exactly the measured load."""
    from router_lib.simulator import SimSettings, simulate

    trace = recorded_trace(run)
    _peak, mean = demand_items_per_s(run)
    result = simulate(fleet, trace, SimSettings(seed=seed),
                      initial_demand={tuple(k.split("/", 1)): v for k, v in mean.items()})  # type: ignore[misc]
    by_tier = {}
    for tier, s in result.by_tier.items():
        by_tier[tier] = {"p50_ms": round(s.p50_ms, 3), "p95_ms": round(s.p95_ms, 3), "p99_ms": round(s.p99_ms, 3),
                         "compliance": None if s.compliance is None else round(s.compliance, 6), "items": s.count}
    return {"by_tier": by_tier, "seed": seed, "unroutable": result.unroutable_requests,
            "by_pool_requests": {p: s.requests for p, s in result.by_pool.items()}}


def cost_section(run: RunData) -> dict[str, Any]:
    """The report's cost figures from the run and its recorded ``plan.json``."""
    n = len(run.records)
    hours = run.duration_s / 3600.0
    provisioned = sum(p.replicas * p.price_per_hour_usd for p in run.pools)
    served: Counter[str] = Counter(r.pool for r in run.records if r.pool)
    used = [p for p in run.pools if served[p.name] >= max(1, 0.01 * n)]
    out: dict[str, Any] = {
        "requests": n,
        "provisioned_per_hour_usd": round(provisioned, 4),
        "provisioned_usd_per_million_requests": round(provisioned * hours / n * 1e6, 4) if n else None,
        "pools_used": [p.name for p in used],
        "pools_used_per_hour_usd": round(sum(p.replicas * p.price_per_hour_usd for p in used), 4),
    }
    capacity: Mapping[str, Mapping[str, Mapping[str, float | None]]] = run.plan.get("capacity_cost_per_million", {})
    if capacity and n:
        total, priced = 0.0, 0
        for r in run.records:
            c = capacity.get(r.pool, {}).get(r.model, {}).get(r.tier)
            if c is not None:
                total += c * r.batch
                priced += 1
        out["routed_usd_per_million_requests"] = round(total / priced, 4) if priced else None
    for key in ("heterogeneous", "single_accelerator", "demand_peak_items_per_s"):
        if key in run.plan:
            out[key] = run.plan[key]
    singles = [s for s in run.plan.get("single_accelerator", {}).values() if s.get("feasible")]
    if singles:
        best = min(singles, key=lambda s: s["cost_per_hour_usd"])
        out["best_single_accelerator"] = best["label"]
        het = run.plan.get("heterogeneous", {})
        if het.get("feasible") and best["cost_per_hour_usd"]:
            out["planner_saving_pct"] = round(100.0 * (1 - het["cost_per_hour_usd"] / best["cost_per_hour_usd"]), 1)
    return out
