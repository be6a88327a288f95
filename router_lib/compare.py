"""Heterogeneous fleet (plan + policy) versus the best single-kind fleet of each accelerator.

For a workload, every fleet kind is sized the same way, on the same seeded trace, with the policy
in the loop (``router_lib.simulator``):

1. the MILP planner (``router_lib.planner``) sizes it for the peak demand; a plan that misses the
   SLAs in simulation is re-planned with less latency headroom (``HEADROOMS``), and a kind the
   latency model rules out is planned with none (the simulation, not the model, says it misses);
2. a plan that meets them is right-sized (fewest replicas per pool, dearest first);
3. the simulation-in-the-loop search (``router_lib.planner_search``) takes remove and swap moves
   while one lowers the cost and the SLAs hold.  A single-kind fleet moves within its kinds; the
   heterogeneous search starts from its own plan *and* from every single-kind fleet that met the
   SLAs, over every kind, so it is never dearer than the best of them (:attr:`Comparison.never_worse`
   checks it on every run).

Single-kind fleets are fair: an accelerator's instances serve the models the accelerator cannot
run on their host vCPUs (``planner.host_cpu_kinds``: the models' CPU profiles, that instance's
price), as a real Inferentia-only or GPU-only fleet would, so no kind is infeasible for that reason.

The planner's error is reported per fleet: its MILP plan at the default headroom against the
smallest fleet the simulation showed meeting the SLAs.  The saving is against the cheapest
single-kind fleet that meets the SLAs in simulation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from router_lib.domain import Accelerator, Fleet
from router_lib.planner import (
    InstanceKind,
    Plan,
    host_cpu_kinds,
    instance_kinds,
    plan_fleet,
    plan_single_accelerator,
    single_kind_kinds,
)
from router_lib.planner_search import (
    Judge,
    SearchLimits,
    SearchResult,
    Start,
    describe,
    fleet_cost,
    meets_targets,
    right_size,
    search_fleet,
)
from router_lib.simulator import SimResult, SimSettings
from router_lib.workload import Workload, make_trace

Progress = Callable[[str], None]
HETEROGENEOUS = "heterogeneous"
HEADROOMS = (0.8, 0.7, 0.6, 0.5, 0.4)
NO_HEADROOM = 1.0
HOLDOUT_SEED_OFFSET = 1000  # the second trace's seeds: the workload's and the simulator's, plus this


def single_label(accelerator: Accelerator) -> str:
    return f"{accelerator.value} only"


@dataclass(frozen=True)
class FleetOutcome:
    """One fleet kind's result.  ``plan``: the last plan simulated (at ``headroom``); ``milp_plan``:
    the planner's own answer at the default headroom, and ``milp_met_sla`` whether it met the SLAs
    in simulation (None when it was not simulated: infeasible under the latency model);
    ``search``: how the final fleet was found (None without search); ``adopted``: where it was
    found instead, when sizing the heterogeneous fleet reached a cheaper fleet of this one kind
    (the baseline is the cheapest single-kind fleet the whole comparison saw meet the SLAs);
    ``holdout_meets_sla``: whether the final fleet also meets them on a second trace of the same
    workload drawn with other seeds: every fleet is sized on one trace, and the search stops at
    fleets that only just meet the SLAs on it, so this says how much of that is luck."""

    label: str
    plan: Plan
    planned_cost_per_hour_usd: float
    fleet: Fleet | None = None
    sim: SimResult | None = None
    meets_sla: bool = False
    headroom: float | None = None  # the planner/policy headroom with which it met the SLAs
    milp_plan: Plan | None = None
    milp_met_sla: bool | None = None
    search: SearchResult | None = None
    adopted: str | None = None  # set when the fleet was reached while sizing another fleet kind
    holdout_meets_sla: bool | None = None  # the final fleet on a second trace (other seeds); None: not run

    @property
    def cost_per_hour_usd(self) -> float:
        return fleet_cost(self.fleet) if self.fleet is not None else math.inf

    @property
    def planner_error_pct(self) -> float | None:
        """(MILP plan's $/h - smallest simulated fleet meeting the SLAs) / the latter, in %:
        positive when the planner buys too much.  None when either is missing."""
        milp = self.milp_plan
        if milp is None or not milp.feasible or not self.meets_sla or self.cost_per_hour_usd <= 0:
            return None
        return 100.0 * (milp.cost_per_hour_usd / self.cost_per_hour_usd - 1.0)


@dataclass(frozen=True)
class Comparison:
    workload: Workload
    outcomes: tuple[FleetOutcome, ...]
    simulations: int = 0
    simulated_s: float = 0.0

    @property
    def heterogeneous(self) -> FleetOutcome:
        return next(o for o in self.outcomes if o.label == HETEROGENEOUS)

    @property
    def best_single(self) -> FleetOutcome | None:
        singles = [o for o in self.outcomes if o.label != HETEROGENEOUS and o.meets_sla]
        return min(singles, key=lambda o: o.cost_per_hour_usd) if singles else None

    @property
    def saving_pct(self) -> float | None:
        """1 - heterogeneous / cheapest single-kind fleet meeting the SLAs, in %."""
        best, het = self.best_single, self.heterogeneous
        if best is None or not het.meets_sla:
            return None
        return 100.0 * (1.0 - het.cost_per_hour_usd / best.cost_per_hour_usd)

    @property
    def never_worse(self) -> bool:
        """The heterogeneous fleet meets the SLAs and costs no more than any single-kind fleet that
        meets them (true when none does and it does)."""
        best, het = self.best_single, self.heterogeneous
        if best is None:
            return het.meets_sla or not any(o.meets_sla for o in self.outcomes)
        return het.meets_sla and het.cost_per_hour_usd <= best.cost_per_hour_usd + 1e-9


def every_kind(base: Fleet) -> tuple[InstanceKind, ...]:
    """What the heterogeneous search may buy: every profiled kind and every host-CPU kind (the
    latter are never cheaper than a CPU instance, but a single-kind start may hold them)."""
    return instance_kinds(base) + tuple(k for a in Accelerator for k in host_cpu_kinds(base, a))


def _plan(label: str, peak: dict[tuple[str, str], float], base: Fleet, settings: SimSettings) -> Plan:
    if label == HETEROGENEOUS:
        return plan_fleet(peak, base, settings=settings.policy)
    return plan_single_accelerator(peak, base, Accelerator(label.removesuffix(" only")), settings=settings.policy,
                                   host_cpu=True)


def _planned_fleet(label: str, peak: dict[tuple[str, str], float], base: Fleet, settings: SimSettings,
                   judge: Judge, right_sizing: bool, progress: Progress | None) -> FleetOutcome:
    """Steps 1 and 2 of the module docstring for one fleet kind."""
    headrooms = (settings.policy.headroom, *(h for h in HEADROOMS if h < settings.policy.headroom))
    headrooms = headrooms if right_sizing else headrooms[:1]
    first = _plan(label, peak, base, settings)
    if right_sizing and not first.feasible:
        headrooms = (NO_HEADROOM,)  # the latency model rules it out: let the simulation say
    milp_met: bool | None = None
    attempt: tuple[Plan, Fleet, SimResult, SimSettings, bool] | None = None
    for headroom in headrooms:
        tuned = replace(settings, policy=replace(settings.policy, headroom=headroom))
        plan = _plan(label, peak, base, tuned)
        if not plan.feasible:
            break
        fleet = plan.to_fleet(base)
        if progress:
            progress(f"  {label}: headroom {headroom:g}: planned ${plan.cost_per_hour_usd:.3f}/h "
                     f"({describe(fleet)}); simulating {len(judge.trace)} requests")
        ok, result = judge.judge(fleet, tuned)
        attempt = (plan, fleet, result, tuned, ok)
        if headroom == headrooms[0] and first.feasible:
            milp_met = ok  # the planner's own answer (the first headroom is the settings' default)
        if ok:
            break
    if attempt is None:
        if progress:
            progress(f"  {label}: infeasible ({first.reason})")
        return FleetOutcome(label, first, first.cost_per_hour_usd, milp_plan=first)
    plan, fleet, result, tuned, ok = attempt
    if right_sizing and ok:
        fleet, result = right_size(fleet, tuned, judge, progress)
    return FleetOutcome(label, plan, plan.cost_per_hour_usd, fleet, result, ok, tuned.policy.headroom,
                        milp_plan=first, milp_met_sla=milp_met)


def _searched(outcome: FleetOutcome, starts: Sequence[Start], kinds: Sequence[InstanceKind], judge: Judge,
              settings: SimSettings, limits: SearchLimits, progress: Progress | None) -> FleetOutcome:
    """Step 3: the search from the outcome's own fleet (when it met the SLAs) and ``starts``."""
    own = [Start("MILP plan" if outcome.label == HETEROGENEOUS else outcome.label, outcome.fleet,
                 _settings_of(settings, outcome))] if outcome.fleet is not None and outcome.meets_sla else []
    found = search_fleet(own + list(starts), kinds, judge, limits=limits, progress=progress)
    if found is None:
        return outcome
    if progress:
        progress(f"  {outcome.label}: ${found.cost_per_hour_usd:.3f}/h ({describe(found.fleet)}) from "
                 f"{found.start} after {len(found.moves)} moves ({found.stopped})")
    return replace(outcome, fleet=found.fleet, sim=found.sim, meets_sla=True,
                   headroom=found.settings.policy.headroom, search=found)


def compare(workload: Workload, base: Fleet, *, settings: SimSettings | None = None, right_sizing: bool = True,
            limits: SearchLimits | None = None, holdout: bool = True, progress: Progress | None = None) -> Comparison:
    """Size each fleet kind on the same trace (module docstring); ``right_sizing=False`` simulates
    the MILP plans as they are (no re-planning, right-sizing or search); ``holdout`` re-simulates
    each final fleet on a second trace (:attr:`FleetOutcome.holdout_meets_sla`)."""
    settings = settings or SimSettings()
    limits = limits or SearchLimits()
    peak = workload.peak_demand()
    judge = Judge(make_trace(workload), workload.mean_demand())
    singles: list[FleetOutcome] = []
    for accelerator in Accelerator:
        label = single_label(accelerator)
        outcome = _planned_fleet(label, peak, base, settings, judge, right_sizing, progress)
        if right_sizing:
            outcome = _searched(outcome, (), single_kind_kinds(base, accelerator), judge, settings, limits,
                                    progress)
        singles.append(outcome)
    het = _planned_fleet(HETEROGENEOUS, peak, base, settings, judge, right_sizing, progress)
    if right_sizing:
        starts = [Start(o.label, o.fleet, _settings_of(settings, o)) for o in singles
                  if o.meets_sla and o.fleet is not None]
        het = _searched(het, starts, every_kind(base), judge, settings, limits, progress)
        singles = [_cheapest_seen(o, single_kind_kinds(base, a), judge, progress)
                   for o, a in zip(singles, Accelerator, strict=True)]
    outcomes = (het, *singles)
    if holdout:
        second = Judge(make_trace(workload, seed=workload.seed + HOLDOUT_SEED_OFFSET), judge.mean_demand)
        outcomes = tuple(_on_second_trace(o, second, settings) for o in outcomes)
    return Comparison(workload, outcomes, judge.simulations, judge.simulated_s)


def _on_second_trace(outcome: FleetOutcome, second: Judge, settings: SimSettings) -> FleetOutcome:
    if outcome.fleet is None or not outcome.meets_sla:
        return outcome
    tuned = _settings_of(settings, outcome)
    ok, _result = second.judge(outcome.fleet, replace(tuned, seed=tuned.seed + HOLDOUT_SEED_OFFSET))
    return replace(outcome, holdout_meets_sla=ok)


def _cheapest_seen(outcome: FleetOutcome, kinds: Sequence[InstanceKind], judge: Judge,
                   progress: Progress | None) -> FleetOutcome:
    """The single-kind baseline is the cheapest fleet of its kinds that the comparison saw meet the
    SLAs: sizing the heterogeneous fleet may reach one its own search did not (a different pool
    layout), and a saving against a weaker baseline would be no saving."""
    seen = judge.cheapest_met(kinds)
    if seen is None or fleet_cost(seen[0]) >= outcome.cost_per_hour_usd - 1e-9:
        return outcome
    fleet, settings, result = seen
    if progress:
        progress(f"  {outcome.label}: ${fleet_cost(fleet):.3f}/h ({describe(fleet)}), reached while sizing the "
                 f"heterogeneous fleet, replaces ${outcome.cost_per_hour_usd:.3f}/h")
    return replace(outcome, fleet=fleet, sim=result, meets_sla=True, headroom=settings.policy.headroom,
                   adopted="reached while sizing the heterogeneous fleet")


def _settings_of(settings: SimSettings, outcome: FleetOutcome) -> SimSettings:
    headroom = outcome.headroom if outcome.headroom is not None else settings.policy.headroom
    return replace(settings, policy=replace(settings.policy, headroom=headroom))


def cost_vs_load(workload: Workload, base: Fleet, factors: tuple[float, ...],
                 settings: SimSettings | None = None) -> dict[str, list[float]]:
    """Planned $/h per fleet kind at each load factor (inf where infeasible): the planner only,
    single-kind fleets with their host CPUs."""
    settings = settings or SimSettings()
    out: dict[str, list[float]] = {HETEROGENEOUS: []}
    out.update({single_label(a): [] for a in Accelerator})
    for f in factors:
        peak = workload.scaled(f).peak_demand()
        out[HETEROGENEOUS].append(plan_fleet(peak, base, settings=settings.policy).cost_per_hour_usd)
        for a in Accelerator:
            out[single_label(a)].append(plan_single_accelerator(peak, base, a, settings=settings.policy,
                                                                host_cpu=True).cost_per_hour_usd)
    return out


__all__ = ["HETEROGENEOUS", "Comparison", "FleetOutcome", "compare", "cost_vs_load", "meets_targets", "right_size"]
