"""The planner's target per pool: ``plan_fleet(demand x headroom)`` mapped onto the fleet's pools,
cached while demand stays put, and re-planned without the loosest tiers when over budget.

Mapping: the planner gives replicas per group (accelerator kind x tier class).  A pool runs
every tier class of its kind (routing keeps the classes apart by weight, not by pool), so a
pool's target is the sum of its accelerator's groups.  When several usable pools share an
accelerator, the kind's replicas are split evenly between them, the remainder going first to
the pools running more replicas now (fewer starts), and whatever a pool's max cannot hold moving
to the others (what none can hold stays on the first, where the bounds then say MAX).

Re-planning a running fleet charges each replica to start ``start_penalty`` of its price (the
planner's re-planning term; ``CapacitySettings``), so near-equal mixes do not swap back and forth.

Budget: the plan's cost is its targets within each pool's bounds at the pools' prices, plus what
drained pools keep running.  Over the budget, the plan is made again without the loosest tier's
demand, then without the next, never without the strictest tier; if that alone is over, it is
kept and the plan says the budget is exceeded.  What the budget has left after the last tier shed
buys back the largest share of that tier's demand that fits (bisected, ``TRIM_STEPS`` re-plans): a
big batch backlog over the budget gets the replicas the budget pays for, not none.  Nothing is
shed silently: the shed routes go back in the decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from router_lib.capacity_state import CachedPlan, Placement
from router_lib.capacity_types import CapacityInputs
from router_lib.domain import Accelerator, Fleet, PoolSpec
from router_lib.planner import Plan, plan_fleet
from router_lib.routes import RouteKey

TRIM_STEPS = 6  # bisection steps for the share of the last tier shed that the budget still buys (1/64)


def known_demand(inputs: CapacityInputs) -> tuple[dict[RouteKey, float], tuple[str, ...]]:
    """Demand with a positive rate on a known tier, and a note for each route left out."""
    tiers = inputs.fleet.tiers.tiers
    demand = {RouteKey(*k): float(v) for k, v in inputs.demand_per_s.items() if v > 0 and k[1] in tiers}
    unknown = sorted(RouteKey(*k) for k in inputs.demand_per_s if k[1] not in tiers)
    notes = tuple(f"demand for {k} ignored: unknown tier {k.tier!r}" for k in unknown)
    return demand, notes


def demand_moved(demand: Mapping[RouteKey, float], planned: Mapping[RouteKey, float], tolerance: float) -> bool:
    """Some route's demand differs from the planned one by more than ``tolerance`` of it (a route
    new to the plan always counts as moved)."""
    for key in demand.keys() | planned.keys():
        now, then = demand.get(key, 0.0), planned.get(key, 0.0)
        if abs(now - then) > tolerance * then or (then == 0.0 and now > 0.0):
            return True
    return False


def tiers_loosest_first(fleet: Fleet) -> list[str]:
    """Tier names, loosest bound first (best effort before any bound)."""
    tiers = fleet.tiers.tiers.values()
    return [t.name for t in sorted(tiers, key=lambda t: (t.p99_ms is not None, -(t.p99_ms or 0.0), t.name))]


def split_kind(total: int, pools: Sequence[PoolSpec], current: Mapping[str, int]) -> dict[str, int]:
    """Spread ``total`` replicas of one accelerator over its usable pools (module docstring)."""
    order = sorted(pools, key=lambda p: (-current.get(p.name, 0), p.name))
    base, extra = divmod(total, len(order))
    out = {p.name: base + (1 if i < extra else 0) for i, p in enumerate(order)}
    spill = 0
    for p in order:
        high = p.replica_bounds[1]
        spill += max(0, out[p.name] - high)
        out[p.name] = min(out[p.name], high)
    for p in order:
        room = p.replica_bounds[1] - out[p.name]
        moved = min(room, spill)
        out[p.name] += moved
        spill -= moved
    out[order[0].name] += spill
    return out


def map_plan(plan: Plan, usable: Sequence[PoolSpec], current: Mapping[str, int]) -> dict[str, int]:
    """Replicas per usable pool from the plan's groups (module docstring)."""
    by_kind: dict[Accelerator, int] = {}
    for group in plan.pools:
        by_kind[group.accelerator] = by_kind.get(group.accelerator, 0) + group.replicas
    out = {p.name: 0 for p in usable}
    for accelerator, total in by_kind.items():
        pools = [p for p in usable if p.accelerator is accelerator]
        if pools:
            out.update(split_kind(total, pools, current))
    return out


def placed_models(plan: Plan, usable: Sequence[PoolSpec], targets: Mapping[str, int]
                  ) -> dict[str, dict[str, Placement]]:
    """Per usable pool with a target: model -> the tiers and req/s (with the headroom) the plan
    sends its kind, the req/s shared among the kind's pools in proportion to their targets."""
    out: dict[str, dict[str, Placement]] = {}
    kind_total: dict[tuple[Accelerator, str], int] = {}
    for p in usable:
        key = (p.accelerator, p.instance_type)
        kind_total[key] = kind_total.get(key, 0) + targets.get(p.name, 0)
    for p in usable:
        key = (p.accelerator, p.instance_type)
        if targets.get(p.name, 0) <= 0:
            continue
        share = targets[p.name] / kind_total[key]
        tiers: dict[str, set[str]] = {}
        rates: dict[str, float] = {}
        for g in plan.pools:
            if (g.accelerator, g.instance_type) == key:
                for (m, t), rate in g.traffic.items():
                    tiers.setdefault(m, set()).add(t)
                    rates[m] = rates.get(m, 0.0) + rate * share
        out[p.name] = {m: Placement(tuple(sorted(ts)), rates[m]) for m, ts in sorted(tiers.items())}
    return out


def within_budget(cost_usd: float, budget_usd: float | None) -> bool:
    """``cost <= budget`` up to float rounding (3 x $0.20 is 0.6000000000000001)."""
    return budget_usd is None or cost_usd <= budget_usd + 1e-9


def bounded_cost_usd(targets: Mapping[str, int], fleet: Fleet, fixed_cost_usd: float) -> float:
    """$/h of ``targets`` held within each pool's bounds, plus what drained pools keep running."""
    total = fixed_cost_usd
    for name, n in targets.items():
        pool = fleet.pool(name)
        low, high = pool.replica_bounds
        total += min(max(n, low), high) * pool.price_per_hour_usd
    return total


def _plan(demand: Mapping[RouteKey, float], inputs: CapacityInputs, usable: Sequence[PoolSpec],
          current: Mapping[str, int]) -> tuple[Plan, dict[str, int]]:
    settings = inputs.settings
    padded = {(k.model, k.tier): v * settings.headroom for k, v in demand.items()}
    allowed = sorted({p.accelerator for p in usable}, key=lambda a: a.value)
    if not allowed:
        return Plan(False, "no pool may run replicas (all drained or max 0)"), {}
    running: dict[tuple[Accelerator, str], int] = {}
    for p in usable:
        key = (p.accelerator, p.instance_type)
        running[key] = running.get(key, 0) + current.get(p.name, 0)
    most: dict[tuple[Accelerator, str], int] = {}
    for p in usable:
        key = (p.accelerator, p.instance_type)
        most[key] = most.get(key, 0) + p.replica_bounds[1]
    plan = plan_fleet(padded, inputs.fleet, allowed_accelerators=allowed, settings=settings.policy,
                      running=running, start_penalty=settings.start_penalty, max_per_kind=most)
    if not plan.feasible:  # more demand than the pools' max can carry: plan past them (the bounds then say MAX)
        plan = plan_fleet(padded, inputs.fleet, allowed_accelerators=allowed, settings=settings.policy,
                          running=running, start_penalty=settings.start_penalty)
    return plan, (map_plan(plan, usable, current) if plan.feasible else {})


def made_for(inputs: CapacityInputs, usable: Sequence[PoolSpec], fixed_cost_usd: float) -> str:
    """What a plan depends on besides demand, as text a cached plan is compared by (the usable
    pools, the budget, the headroom, the policy's settings and the profiles)."""
    pools = [(p.name, p.accelerator.value, p.replica_bounds, p.price_per_hour_usd) for p in usable]
    # the latency model too: a calibration learned online replaces a profile mid-run
    profiles = sorted((m, a.value, tuple(sorted(p.latency_ms_by_batch.items())), p.p99_over_p50)
                      for (m, a), p in inputs.fleet.profiles.items())
    return repr((pools, inputs.fleet.budget_per_hour_usd, round(fixed_cost_usd, 9), inputs.settings.headroom,
                 inputs.settings.policy, profiles))


def fresh_plan(demand: Mapping[RouteKey, float], inputs: CapacityInputs, usable: Sequence[PoolSpec],
               current: Mapping[str, int], fixed_cost_usd: float) -> CachedPlan:
    """Plan ``demand``; over the budget, shed the loosest tiers one by one (module docstring)."""
    key = made_for(inputs, usable, fixed_cost_usd)
    plan, targets = _plan(demand, inputs, usable, current)
    if not plan.feasible:
        return CachedPlan(dict(demand), key, False, plan.reason)
    budget = inputs.fleet.budget_per_hour_usd
    cost = bounded_cost_usd(targets, inputs.fleet, fixed_cost_usd)
    if budget is None or within_budget(cost, budget):
        return CachedPlan(dict(demand), key, True, f"{plan.reason}, ${cost:.2f}/h", targets, targets,
                          placed=placed_models(plan, usable, targets))
    sheddable = tiers_loosest_first(inputs.fleet)[:-1]  # the strictest tier is never shed
    dropped: list[str] = []
    kept_plan, kept_targets, kept_cost = plan, targets, cost
    for tier in sheddable:
        if not any(k.tier == tier for k in demand):
            continue  # nothing to shed: no re-plan
        dropped.append(tier)
        rest = {k: v for k, v in demand.items() if k.tier not in dropped}
        trial, trial_targets = _plan(rest, inputs, usable, current)
        if not trial.feasible:  # not expected (less demand than a feasible plan): keep the last one
            dropped.pop()
            break
        kept_plan, kept_targets = trial, trial_targets
        kept_cost = bounded_cost_usd(trial_targets, inputs.fleet, fixed_cost_usd)
        if within_budget(kept_cost, budget):
            break
    shed = tuple(sorted((k for k in demand if k.tier in dropped),
                        key=lambda k: (dropped.index(k.tier), k.model)))
    over = not within_budget(kept_cost, budget)
    kept_share = 0.0
    if dropped and not over:  # the budget left after shedding buys part of the last tier shed
        last = dropped[-1]
        rest = {k: v for k, v in demand.items() if k.tier not in dropped}
        low, high = 0.0, 1.0
        for _ in range(TRIM_STEPS):
            share = (low + high) / 2
            trial, trial_targets = _plan({**rest, **{k: v * share for k, v in demand.items() if k.tier == last}},
                                         inputs, usable, current)
            trial_cost = bounded_cost_usd(trial_targets, inputs.fleet, fixed_cost_usd) if trial.feasible else budget + 1
            if trial.feasible and within_budget(trial_cost, budget):
                low, kept_plan, kept_targets, kept_cost = share, trial, trial_targets, trial_cost
            else:
                high = share
        kept_share = low
    shed_text = ", ".join(dropped) or "nothing"
    if kept_share > 0:
        shed_text = ", ".join([*dropped[:-1], f"{dropped[-1]} to {kept_share:.0%} of its demand"])
    why = (f"{kept_plan.reason}, ${kept_cost:.2f}/h after shedding {shed_text} "
           f"(all demand: ${cost:.2f}/h > budget ${budget:.2f}/h)")
    if over:
        why += (f"; budget exceeded: the strictest tier alone (with min replicas and drained pools) "
                f"needs ${kept_cost:.2f}/h")
    return CachedPlan(dict(demand), key, True, why, kept_targets, targets, shed, over,
                      placed_models(kept_plan, usable, kept_targets))


def plan_targets(inputs: CapacityInputs, demand: Mapping[RouteKey, float], usable: Sequence[PoolSpec],
                 cached: CachedPlan | None, current: Mapping[str, int],
                 fixed_cost_usd: float) -> tuple[CachedPlan, bool]:
    """-> (plan, reused).  The cached plan is reused while it was made for the same pools, budget
    and settings (:func:`made_for`) and no route's demand moved by more than ``replan_tolerance``."""
    if (cached is not None and cached.made_for == made_for(inputs, usable, fixed_cost_usd)
            and not demand_moved(demand, cached.demand_per_s, inputs.settings.replan_tolerance)):
        return cached, True
    return fresh_plan(demand, inputs, usable, current, fixed_cost_usd), False
