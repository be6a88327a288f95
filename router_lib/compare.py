"""Heterogeneous fleet (plan + policy) versus the best single-accelerator fleet of each kind.

For a workload: the planner sizes each fleet for the peak demand (``router_lib.planner``); the
simulator replays the same seeded trace through each fleet with the policy in the loop
(``router_lib.simulator``).  With ``right_size`` each fleet is then shrunk one replica at a time
(dearest first) while the simulation still meets every tier's target compliance, because the
planner's latency model is conservative and a fair comparison compares the cheapest fleets that
*measurably* meet the SLAs, not two plans.  The saving is against the cheapest single-accelerator
fleet that meets the SLAs in simulation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from router_lib.domain import Accelerator, Fleet
from router_lib.planner import Plan, plan_fleet, plan_single_accelerator
from router_lib.simulator import SimResult, SimSettings, simulate
from router_lib.workload import Trace, Workload, make_trace

Progress = Callable[[str], None]
HETEROGENEOUS = "heterogeneous"


@dataclass(frozen=True)
class FleetOutcome:
    label: str
    plan: Plan
    planned_cost_per_hour_usd: float
    fleet: Fleet | None = None
    sim: SimResult | None = None
    meets_sla: bool = False

    @property
    def cost_per_hour_usd(self) -> float:
        return self.fleet_cost(self.fleet) if self.fleet is not None else math.inf

    @staticmethod
    def fleet_cost(fleet: Fleet) -> float:
        return sum(p.replicas * p.price_per_hour_usd for p in fleet.pools)


@dataclass(frozen=True)
class Comparison:
    workload: Workload
    outcomes: tuple[FleetOutcome, ...]

    @property
    def heterogeneous(self) -> FleetOutcome:
        return next(o for o in self.outcomes if o.label == HETEROGENEOUS)

    @property
    def best_single(self) -> FleetOutcome | None:
        singles = [o for o in self.outcomes if o.label != HETEROGENEOUS and o.meets_sla]
        return min(singles, key=lambda o: o.cost_per_hour_usd) if singles else None

    @property
    def saving_pct(self) -> float | None:
        """1 - heterogeneous / cheapest single-accelerator fleet meeting the SLAs, in %."""
        best, het = self.best_single, self.heterogeneous
        if best is None or not het.meets_sla:
            return None
        return 100.0 * (1.0 - het.cost_per_hour_usd / best.cost_per_hour_usd)


def meets_targets(result: SimResult, fleet: Fleet) -> bool:
    """Every tier with a target compliance meets it, and no request was unroutable."""
    if result.unroutable_requests:
        return False
    for name, tier in fleet.tiers.tiers.items():
        stats = result.by_tier.get(name)
        if tier.target_compliance is not None and stats is not None and stats.count:
            if stats.compliance is None or stats.compliance < tier.target_compliance:
                return False
    return True


def _with_replicas(fleet: Fleet, pool: str, replicas: int) -> Fleet:
    pools = tuple(replace(p, replicas=replicas) if p.name == pool else p for p in fleet.pools)
    pools = tuple(p for p in pools if p.replicas > 0)
    return replace(fleet, pools=pools, models=tuple(sorted({m for p in pools for m in p.models})))


def right_size(fleet: Fleet, trace: Trace, settings: SimSettings, demand: dict[tuple[str, str], float],
               progress: Progress | None = None) -> tuple[Fleet, SimResult]:
    """Remove replicas, dearest pool first, while the simulation still meets every target."""
    best = simulate(fleet, trace, settings, initial_demand=demand)
    if not meets_targets(best, fleet):
        return fleet, best
    needed = set(trace.models)
    improved = True
    while improved:
        improved = False
        for pool in sorted(fleet.pools, key=lambda p: -p.price_per_hour_usd):
            candidate = _with_replicas(fleet, pool.name, pool.replicas - 1)
            if not needed <= set(candidate.models):
                continue
            result = simulate(candidate, trace, settings, initial_demand=demand)
            if progress:
                progress(f"    try {pool.name} x{pool.replicas - 1}: "
                         f"{'meets' if meets_targets(result, candidate) else 'misses'} the SLAs")
            if meets_targets(result, candidate):
                fleet, best, improved = candidate, result, True
                break
    return fleet, best


def compare(workload: Workload, base: Fleet, *, settings: SimSettings | None = None, right_sizing: bool = True,
            progress: Progress | None = None) -> Comparison:
    settings = settings or SimSettings()
    peak = workload.peak_demand()
    mean = workload.mean_demand()
    trace = make_trace(workload)
    plans = {HETEROGENEOUS: plan_fleet(peak, base, settings=settings.policy)}
    for acc in Accelerator:
        plans[f"{acc.value} only"] = plan_single_accelerator(peak, base, acc, settings=settings.policy)
    outcomes = []
    for label, plan in plans.items():
        if not plan.feasible:
            if progress:
                progress(f"  {label}: infeasible ({plan.reason})")
            outcomes.append(FleetOutcome(label, plan, plan.cost_per_hour_usd))
            continue
        fleet = plan.to_fleet(base)
        if progress:
            progress(f"  {label}: planned ${plan.cost_per_hour_usd:.3f}/h "
                     f"({', '.join(f'{p.name} x{p.replicas}' for p in plan.pools)}); simulating {len(trace)} requests")
        if right_sizing:
            fleet, result = right_size(fleet, trace, settings, mean, progress)
        else:
            result = simulate(fleet, trace, settings, initial_demand=mean)
        outcomes.append(FleetOutcome(label, plan, plan.cost_per_hour_usd, fleet, result, meets_targets(result, fleet)))
    return Comparison(workload, tuple(outcomes))


def cost_vs_load(workload: Workload, base: Fleet, factors: tuple[float, ...],
                 settings: SimSettings | None = None) -> dict[str, list[float]]:
    """Planned $/h per fleet kind at each load factor (inf where infeasible): the planner only."""
    settings = settings or SimSettings()
    out: dict[str, list[float]] = {HETEROGENEOUS: []}
    out.update({f"{a.value} only": [] for a in Accelerator})
    for f in factors:
        peak = workload.scaled(f).peak_demand()
        out[HETEROGENEOUS].append(plan_fleet(peak, base, settings=settings.policy).cost_per_hour_usd)
        for a in Accelerator:
            out[f"{a.value} only"].append(plan_single_accelerator(peak, base, a, settings=settings.policy)
                                          .cost_per_hour_usd)
    return out
