"""Heterogeneous fleet (plan + policy) versus the best single-accelerator fleet of each kind.

For a workload: the planner sizes each fleet for the peak demand (``router_lib.planner``); the
simulator replays the same seeded trace through each fleet with the policy in the loop
(``router_lib.simulator``).  With right-sizing, a plan that misses the SLAs in simulation is
re-planned with less latency headroom, and a plan that meets them is shrunk pool by pool while
the simulation still meets every target: the planner's latency model is an approximation in both
directions, and a fair comparison compares the cheapest fleets that *measurably* meet the SLAs,
not two plans.  The saving is against the cheapest single-accelerator
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
    headroom: float | None = None  # the planner/policy headroom with which it met the SLAs

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


BEST_EFFORT_P99_LIMIT_MS = 1000.0
HEADROOMS = (0.8, 0.7, 0.6, 0.5, 0.4)
NO_HEADROOM = 1.0


def meets_targets(result: SimResult, fleet: Fleet, best_effort_p99_limit_ms: float = BEST_EFFORT_P99_LIMIT_MS) -> bool:
    """Every tier with a target compliance meets it, best-effort tiers keep up (p99 under
    ``best_effort_p99_limit_ms``: a fleet whose bronze queue grows without bound does not serve
    bronze, even if no bound was promised), and no request was unroutable."""
    if result.unroutable_requests:
        return False
    for name, tier in fleet.tiers.tiers.items():
        stats = result.by_tier.get(name)
        if stats is None or not stats.count:
            continue
        if tier.target_compliance is not None:
            if stats.compliance is None or stats.compliance < tier.target_compliance:
                return False
        elif tier.p99_ms is None and not stats.p99_ms <= best_effort_p99_limit_ms:
            return False
    return True


def _with_replicas(fleet: Fleet, pool: str, replicas: int) -> Fleet:
    pools = tuple(replace(p, replicas=replicas) if p.name == pool else p for p in fleet.pools)
    pools = tuple(p for p in pools if p.replicas > 0)
    return replace(fleet, pools=pools, models=tuple(sorted({m for p in pools for m in p.models})))


def right_size(fleet: Fleet, trace: Trace, settings: SimSettings, demand: dict[tuple[str, str], float],
               progress: Progress | None = None) -> tuple[Fleet, SimResult]:
    """Shrink each pool, dearest first, to the fewest replicas with which the simulation still
    meets every target (binary search per pool: ~log2(replicas) simulations each)."""
    best = simulate(fleet, trace, settings, initial_demand=demand)
    if not meets_targets(best, fleet):
        return fleet, best
    needed = set(trace.models)
    for pool in sorted(fleet.pools, key=lambda p: -p.price_per_hour_usd):
        current = next(p for p in fleet.pools if p.name == pool.name).replicas
        low, high = 0, current  # high is known to pass
        while low < high:
            mid = (low + high) // 2
            candidate = _with_replicas(fleet, pool.name, mid)
            ok = False
            if needed <= set(candidate.models):
                result = simulate(candidate, trace, settings, initial_demand=demand)
                ok = meets_targets(result, candidate)
            if progress:
                progress(f"    try {pool.name} x{mid}: {'meets' if ok else 'misses'} the SLAs")
            if ok:
                high, best_mid = mid, (candidate, result)
            else:
                low = mid + 1
        if high < current:
            fleet, best = best_mid
    return fleet, best


def _plan(label: str, peak: dict[tuple[str, str], float], base: Fleet, settings: SimSettings) -> Plan:
    if label == HETEROGENEOUS:
        return plan_fleet(peak, base, settings=settings.policy)
    return plan_single_accelerator(peak, base, Accelerator(label.removesuffix(" only")), settings=settings.policy)


def compare(workload: Workload, base: Fleet, *, settings: SimSettings | None = None, right_sizing: bool = True,
            progress: Progress | None = None) -> Comparison:
    """Plan, simulate and (optionally) right-size each fleet kind on the same trace.

    When a plan misses the SLAs in simulation, it is re-planned with a smaller latency headroom
    (``HEADROOMS``, the planner and the policy alike) until it meets them; right-sizing then
    removes what the simulation shows is not needed.  Both steps treat every fleet kind the same.
    """
    settings = settings or SimSettings()
    peak = workload.peak_demand()
    mean = workload.mean_demand()
    trace = make_trace(workload)
    outcomes = []
    for label in (HETEROGENEOUS, *(f"{a.value} only" for a in Accelerator)):
        first_plan: Plan | None = None
        attempt: tuple[Plan, Fleet, SimResult, SimSettings] | None = None
        headrooms = HEADROOMS if right_sizing else HEADROOMS[:1]
        if right_sizing and not _plan(label, peak, base, settings).feasible:
            # The latency model rules this fleet out; plan it with no headroom at all and let the
            # simulation say whether it really misses the SLAs.
            headrooms = (NO_HEADROOM,)
        for headroom in headrooms:
            tuned = replace(settings, policy=replace(settings.policy, headroom=headroom))
            plan = _plan(label, peak, base, tuned)
            first_plan = first_plan or plan
            if not plan.feasible:
                break
            fleet = plan.to_fleet(base)
            if progress:
                progress(f"  {label}: headroom {headroom:g}: planned ${plan.cost_per_hour_usd:.3f}/h "
                         f"({', '.join(f'{p.name} x{p.replicas}' for p in plan.pools)}); "
                         f"simulating {len(trace)} requests")
            attempt = (plan, fleet, simulate(fleet, trace, tuned, initial_demand=mean), tuned)
            if meets_targets(attempt[2], fleet):
                break
        if attempt is None:
            assert first_plan is not None
            if progress:
                progress(f"  {label}: infeasible ({first_plan.reason})")
            outcomes.append(FleetOutcome(label, first_plan, first_plan.cost_per_hour_usd))
            continue
        plan, fleet, result, tuned = attempt
        if right_sizing and meets_targets(result, fleet):
            fleet, result = right_size(fleet, trace, tuned, mean, progress)
        outcomes.append(FleetOutcome(label, plan, plan.cost_per_hour_usd, fleet, result, meets_targets(result, fleet),
                                     headroom=tuned.policy.headroom))
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
