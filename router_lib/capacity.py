"""The capacity decider: how many replicas each pool should run, a pure function of one tick.

``decide_capacity(inputs, state, now_s) -> (decision, state)``, in the shape of Ray Serve's
autoscaling policy: no clock, no I/O, the state goes back to the caller.  The one decision that
shapes it: the *planner* sets the level, *live signals* only add to it.  The MILP planner
(``router_lib.planner``) knows the cheapest fleet that meets every tier for the demand, so every
fall in capacity goes through it, behind a scale-down window and a flap guard; measurements
(queue, latency, utilisation) show a shortfall before demand estimates do, so they may raise a
pool within one tick but never lower one.

Per pool, in order (each step says what it did in the pool's ``reason``):

1. target from the plan (``capacity_plan``): cached while demand stays within tolerance; over
   the budget, re-planned without the loosest tiers; infeasible: the current count is kept;
2. live signals (``capacity_signals``) may raise it; while replicas are starting they are not
   asked for again for the same need (``COLD_START_WAIT``); traffic a pool carries beyond its
   plan, of a model the plan places elsewhere too, counts there, not here (``_spill``);
3. the pool's bounds, then the tier floor: a pool goes to 0 only when the plan gives it 0 and
   every (model, tier) keeps a pool that meets it;
4. the scale-down window, no fall while the plan brings up another pool (make before break), the
   step cap on a rise, the flap guard (``capacity_limits``);
5. fleet-wide: the machine limit, then the budget, trimmed where a replica buys the least.

An operator's drain leaves the pool's desired replicas as they were and marks it draining; a
pool going to 0 is draining in the same tick, so routing moves its traffic before it stops.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from router_lib.capacity_limits import (
    clamp_to_bounds,
    flap_guard_age_s,
    remember_target,
    stabilised,
    step_up_limit,
    tier_floor,
    trim,
)
from router_lib.capacity_plan import bounded_cost_usd, known_demand, plan_targets, within_budget
from router_lib.capacity_signals import live_needs, unit_cost_usd
from router_lib.capacity_state import CachedPlan, CapacityState, Placement, PoolMemory
from router_lib.capacity_types import (
    CapacityDecision,
    CapacityInputs,
    CapacityReason,
    CapacitySettings,
    PoolCapacity,
)
from router_lib.domain import PoolSpec

__all__ = [
    "CachedPlan",
    "CapacityDecision",
    "CapacityInputs",
    "CapacityReason",
    "CapacitySettings",
    "CapacityState",
    "PoolCapacity",
    "PoolMemory",
    "decide_capacity",
]

R = CapacityReason
# Live signals measured on the pool: they may reverse a recent scale-down (the SLA outranks the saving).
MEASURED = frozenset({R.QUEUE_UP, R.LATENCY_UP, R.UTILISATION_UP})


@dataclass(frozen=True)
class _Trace:
    """One pool on its way through the tick: the value so far and what shaped it."""

    pool: PoolSpec
    previous: int  # desired replicas last tick (the configured count on the first)
    ready: int
    starting: int
    value: int
    plan_target: int
    unshed_target: int = 0  # the plan's target before shedding for the budget
    raw: int = 0  # the target before the window, step cap and flap guard: what the window remembers
    driver: CapacityReason | None = None  # None: the plan; else a live signal or TIER_FLOOR
    bound: CapacityReason | None = None  # MIN / MAX when the bounds moved the target
    cut: CapacityReason | None = None  # MACHINE_LIMIT / BUDGET when a trim lowered it
    shed_cut: bool = False  # shedding for the budget lowered the plan's target
    infeasible: bool = False
    cold_wait: bool = False
    held: bool = False  # the window or the flap guard kept it above the target
    notes: tuple[str, ...] = ()

    def noted(self, note: str, **changes: object) -> _Trace:
        return replace(self, notes=(*self.notes, note), **changes)  # type: ignore[arg-type]


def _from_plan(pool: PoolSpec, previous: int, ready: int, starting: int, plan: CachedPlan) -> _Trace:
    if not plan.feasible:
        return _Trace(pool, previous, ready, starting, previous, previous, previous, infeasible=True,
                      notes=(f"no feasible plan ({plan.reason}): keeps {previous}",))
    target = plan.targets.get(pool.name, 0)
    unshed = plan.unshed.get(pool.name, target)
    note = f"plan {target}" + (f" ({unshed} before shedding for the budget)" if unshed > target else "")
    return _Trace(pool, previous, ready, starting, target, target, unshed, shed_cut=unshed > target, notes=(note,))


def _spill(inputs: CapacityInputs, plan: CachedPlan
           ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Traffic beyond what the plan places on a pool, where the plan places the model elsewhere
    too: -> (per pool, model -> the req/s it is judged on: the planned rate, 0 for a model the plan
    does not place there; per home pool, model -> req/s of it that pools the plan does not send
    it to carry).  Homes are the other pools the plan places the model on, with a ready replica (``arriving``
    covers pools still starting) and below their max; with none, the excess is nobody's spill."""
    if not plan.feasible or not plan.placed:
        return {}, {}
    capped: dict[str, dict[str, float]] = {}
    owed: dict[str, dict[str, float]] = {}
    for (pool, model), m in sorted(inputs.metrics.by_pool_model.items()):
        here = plan.placed.get(pool, {}).get(model)
        planned = here.rate_per_s if here else 0.0
        if m.request_rate_per_s <= planned:
            continue
        homes = [h for h, models in sorted(plan.placed.items())
                 if h != pool and model in models and models[model].rate_per_s > 0
                 and inputs.ready.get(h, 0) > 0 and plan.targets.get(h, 0) < inputs.fleet.pool(h).replica_bounds[1]]
        if not homes:
            continue
        capped.setdefault(pool, {})[model] = planned
        if here is not None:
            # The plan sends the model here too: the excess is demand the plan has not caught up
            # with yet (the re-plan places it), not another pool's shortfall.  Measured when it was
            # owed to the other home: a 3x step on Inferentia's text raised the CPU pool, and the
            # start penalty then kept the text there, on the dearer and slower kind.
            continue
        excess = m.request_rate_per_s - planned
        for h in homes:
            owed.setdefault(h, {})[model] = owed.get(h, {}).get(model, 0.0) + excess / len(homes)
    return capped, owed


def _with_live(t: _Trace, inputs: CapacityInputs, arriving: Sequence[str] = (),
               capped: Mapping[str, float] | None = None, owed: Mapping[str, float] | None = None,
               placed: Mapping[str, Placement] | None = None) -> _Trace:
    """Live signals raise the target; while replicas start, no further for the same need.  A pool
    being emptied (desired 0 last tick) is not raised by what its last replicas still report: its
    traffic is moving elsewhere, and it comes back only when the plan gives it replicas.

    ``arriving``: other pools the plan is bringing up (their plan target is above their ready
    replicas and they have replicas starting, or are asked for them now).  This pool's overload is
    then traffic the plan moves there once they are ready; raising this pool for it buys replicas
    that the window then holds idle (measured: a CPU pool went 1 -> 16 while one Inferentia
    replica started), so it waits for them instead, like for its own starting replicas.

    ``capped``: model -> the req/s this pool is judged on when it carries more of the model than
    the plan places here and the plan places the model elsewhere too (0: a model the plan does
    not send here is left out of every signal); ``owed``: req/s per model of this pool's planned
    traffic that others carry.  Spill is judged where the plan puts it: a CPU pool that carries an
    Inferentia model's excess would otherwise be sized for it at the CPU's (poor) capacity for that
    model (measured: CPU 1 -> 11 while the Inferentia pool, the plan's place for it, sat at its
    safe utilisation), while the pool the plan chose needs a fraction of a replica more.
    ``placed``: model -> what the plan sends here; its tiers are what the signals judge it by."""
    if t.previous == 0:
        return t
    capped = capped or {}
    entries = [replace(m, request_rate_per_s=capped[model]) if model in capped else m
               for (pool, model), m in inputs.metrics.by_pool_model.items()
               if pool == t.pool.name and capped.get(model, 1.0) > 0]
    tiers = {m: pl.tiers for m, pl in (placed or {}).items()}
    needs = live_needs(inputs.fleet, t.pool, entries, t.ready, inputs.carried_tiers.get(t.pool.name, ()),
                       inputs.settings, owed, tiers)
    if owed and needs and any(v > 0 for v in owed.values()):
        spilled = ", ".join(f"{m} {v:.1f} req/s" for m, v in sorted(owed.items()) if v > 0)
        needs[0] = replace(needs[0], why=f"{needs[0].why} (counting {spilled} carried elsewhere)")
    if not needs or needs[0].replicas <= t.value:
        return t
    need = needs[0]
    if arriving:  # keep what it has (no fall either: it carries the load until they are ready)
        value = max(t.value, min(need.replicas, max(t.previous, t.ready + t.starting)))
        return t.noted(f"{need.why}, but the plan brings up {', '.join(arriving)} for this demand: waits for it",
                       value=value, cold_wait=need.replicas > value)
    if t.starting <= 0:
        return t.noted(need.why, value=need.replicas, driver=need.kind)
    have = max(t.previous, t.ready + t.starting)
    value = max(t.value, min(need.replicas, have))
    cold_s = max((p.cold_start_s for (m, acc), p in inputs.fleet.profiles.items()
                  if acc is t.pool.accelerator and m in t.pool.models), default=0.0)
    wait = f"cold start ~{cold_s:g} s" if cold_s > 0 else "cold start unknown"
    note = f"{need.why}, but {t.starting} replica(s) starting ({wait}): waits for them"
    return t.noted(note, value=value, cold_wait=need.replicas > value,
                   driver=need.kind if value > t.value else t.driver)


def _with_bounds(t: _Trace) -> _Trace:
    low, high = t.pool.replica_bounds
    value = clamp_to_bounds(t.value, t.pool)
    if value > t.value:
        return t.noted(f"min {low}", value=value, raw=value, bound=R.MIN)
    if value < t.value:
        return t.noted(f"max {high}", value=value, raw=value, bound=R.MAX)
    return replace(t, raw=value)


def _with_tier_floor(t: _Trace, why: str | None) -> _Trace:
    if why is None or t.value > 0:
        return t
    return t.noted(why, value=1, raw=1, driver=R.TIER_FLOOR)


def _with_window(t: _Trace, targets: tuple[tuple[float, int], ...], window_s: float) -> _Trace:
    value = stabilised(t.value, t.previous, targets)
    if value > t.value:
        return t.noted(f"{window_s:g} s window holds {value} (target {t.value})", value=value, held=True)
    return t


def _with_arrivals(t: _Trace, arriving: Sequence[str]) -> _Trace:
    """Make before break: while the plan brings up other pools, this one does not shrink (its
    replicas carry the load those pools will take once ready).  Measured without it: a CPU pool
    went 6 -> 1 after its window while the Inferentia replica the plan had moved the load to was
    still starting, and gold broke its bound until it was ready."""
    others = [a for a in arriving if a != t.pool.name]
    if not others or t.value >= t.previous:
        return t
    return t.noted(f"waits for {', '.join(others)} to be ready before scaling down (target {t.value})",
                   value=t.previous, held=True)


def _with_step_cap(t: _Trace, settings: CapacitySettings) -> _Trace:
    limit = step_up_limit(t.previous, settings)
    if t.value > t.previous + limit:
        return t.noted(f"step capped at +{limit} (wants {t.value})", value=t.previous + limit)
    return t


def _with_flap_guard(t: _Trace, memory: PoolMemory | None, now_s: float, guard_s: float) -> _Trace:
    direction = (t.value > t.previous) - (t.value < t.previous)
    age = flap_guard_age_s(memory, direction, now_s, guard_s)
    if age is None:
        return t
    if direction > 0 and t.driver in MEASURED:
        return t.noted(f"a measured shortfall overrides the flap guard (down {age:.0f} s ago)")
    last = "down" if direction > 0 else "up"
    return t.noted(f"flap guard: scaled {last} {age:.0f} s ago < {guard_s:g} s", value=t.previous, held=True)


def _kind(t: _Trace) -> CapacityReason:
    """What settled the pool, by precedence: a trim or shedding, then the direction and its driver.
    A bound names the move only when the value sits on it (a step cap below max is not MAX)."""
    low, high = t.pool.replica_bounds
    on_bound = (t.bound is R.MIN and t.value == low) or (t.bound is R.MAX and t.value == high)
    if t.cut is not None:
        return t.cut
    if t.shed_cut and t.value < clamp_to_bounds(t.unshed_target, t.pool):
        return R.BUDGET
    if t.value > t.previous:
        if on_bound:
            return t.bound or R.PLAN_UP
        return R.FROM_ZERO if t.previous == 0 else t.driver or R.PLAN_UP
    if t.value < t.previous:
        if on_bound and t.bound is R.MAX:
            return R.MAX
        return R.TO_ZERO if t.value == 0 else R.PLAN_DOWN
    for flag, kind in ((t.cold_wait, R.COLD_START_WAIT), (t.held, R.STABILISING), (on_bound, t.bound),
                       (t.driver is R.TIER_FLOOR, R.TIER_FLOOR), (t.infeasible, R.PLAN_INFEASIBLE),
                       (t.starting > 0, R.COLD_START_WAIT)):
        if flag and kind is not None:
            return kind
    return R.HOLD


def _finish(t: _Trace) -> PoolCapacity:
    move = f"{t.previous} -> {t.value}" if t.value != t.previous else f"holds {t.value}"
    counts = f"; {t.ready} ready, {t.starting} starting" if t.starting else ""
    reason = "; ".join(t.notes) + f": {move}{counts}"
    return PoolCapacity(t.pool.name, t.value, t.ready, t.value == 0, _kind(t), reason, t.starting)


def _trim_fleet(traces: dict[str, _Trace], fixed: Mapping[str, int], floors: Mapping[str, int],
                unit: Mapping[str, float], over: Callable[[Mapping[str, int]], bool], kind: CapacityReason,
                what: str) -> dict[str, _Trace]:
    """Trim the traces until ``over`` is false (``fixed``: drained pools, counted but untouched)."""
    desired = {**fixed, **{n: t.value for n, t in traces.items()}}
    floors = {n: min(traces[n].value, f) for n, f in floors.items()}
    trimmed = trim(desired, floors, unit, over)
    out = dict(traces)
    for name, t in traces.items():
        if trimmed[name] < t.value:
            out[name] = t.noted(f"{what}: trimmed {t.value} -> {trimmed[name]} "
                                f"(${unit[name]:.4f}/h per req/s of useful capacity)",
                                value=trimmed[name], cut=kind)
    return out


def _pool_traces(inputs: CapacityInputs, plan: CachedPlan, previous: Mapping[str, int],
                 memory: Mapping[str, PoolMemory], now_s: float
                 ) -> tuple[dict[str, _Trace], dict[str, PoolMemory], dict[str, str]]:
    """Steps 1-4 of the module docstring for every pool not drained.
    -> (traces, each pool's window targets in its memory, the tier floor's keepers)."""
    fleet, settings = inputs.fleet, inputs.settings
    active = [p for p in fleet.pools if p.name not in inputs.drains]
    usable = [p for p in active if p.replica_bounds[1] > 0]
    planned = {p.name: _from_plan(p, previous[p.name], inputs.ready.get(p.name, 0), inputs.starting.get(p.name, 0),
                                  plan) for p in active}
    # Arriving: the plan wants more replicas than are ready, and they are starting, asked for now,
    # or were asked for within ``arrival_grace_s`` (an actuator reports a start a moment after the
    # ask: measured, a CPU pool emptied in that gap while the Inferentia replica was not yet
    # reported starting).  Past the grace a pool that never started is not waited for.
    def asked_recently(n: str) -> bool:
        changed = memory[n].changed_s if n in memory else None
        return changed is not None and now_s - changed <= settings.arrival_grace_s
    arriving = [n for n, t in planned.items()
                if t.plan_target > t.ready and (t.starting > 0 or t.previous < t.plan_target or asked_recently(n))]
    capped, owed = _spill(inputs, plan)
    placed = plan.placed if plan.feasible else {}
    traces = {n: _with_bounds(_with_live(t, inputs, [a for a in arriving if a != n], capped.get(n),
                                         owed.get(n), placed.get(n)))
              for n, t in planned.items()}
    keepers = tier_floor(fleet, usable, {n: t.value for n, t in traces.items()}, previous, settings.policy)
    remembered: dict[str, PoolMemory] = {}
    for name, t in traces.items():
        t = _with_tier_floor(t, keepers.get(name))
        before = memory.get(name) or PoolMemory(t.previous, ((now_s, t.previous),))  # a restart never drops at once
        targets = remember_target(before.targets, t.raw, now_s, settings.scale_down_window_s)
        t = _with_arrivals(_with_window(t, targets, settings.scale_down_window_s), arriving)
        traces[name] = _with_flap_guard(_with_step_cap(t, settings), memory.get(name), now_s, settings.flap_guard_s)
        remembered[name] = replace(before, targets=targets)
    return traces, remembered, keepers


def _with_fleet_limits(inputs: CapacityInputs, traces: dict[str, _Trace], drained: Mapping[str, int],
                       keepers: Mapping[str, str]) -> tuple[dict[str, _Trace], tuple[str, ...]]:
    """Step 5: the machine limit, then the budget.  -> (traces, notes on limits that floors break)."""
    fleet = inputs.fleet
    limit, budget = fleet.max_local_replicas, fleet.budget_per_hour_usd
    if limit is None and budget is None:
        return traces, ()
    notes: tuple[str, ...] = ()
    price = {p.name: p.price_per_hour_usd for p in fleet.pools}
    unit = {n: unit_cost_usd(fleet, t.pool, inputs.carried_tiers.get(n, ()), inputs.settings.policy)
            for n, t in traces.items()}
    # Trims never empty a pool the plan or the tier floor keeps: only the plan takes a pool to 0.
    floor = {n: max(t.pool.replica_bounds[0], 1 if n in keepers or t.plan_target > 0 else 0)
             for n, t in traces.items()}
    if limit is not None:
        traces = _trim_fleet(traces, drained, floor, unit, lambda d: sum(d.values()) > limit,
                             R.MACHINE_LIMIT, f"machine limit {limit}")
        total = sum(drained.values()) + sum(t.value for t in traces.values())
        if total > limit:
            notes += (f"machine limit {limit} exceeded: the floors (min replicas, planned pools, tier floor, "
                      f"drained pools) need {total}",)
    if budget is not None:
        plan_floor = {n: max(floor[n], clamp_to_bounds(t.plan_target, t.pool)) for n, t in traces.items()}
        traces = _trim_fleet(traces, drained, plan_floor, unit,
                             lambda d: not within_budget(sum(n * price[p] for p, n in d.items()), budget),
                             R.BUDGET, f"budget ${budget:.2f}/h")
        cost = sum(n * price[p] for p, n in drained.items()) + sum(t.value * price[n] for n, t in traces.items())
        if not within_budget(cost, budget):
            notes += (f"budget exceeded: desired ${cost:.2f}/h > ${budget:.2f}/h (the plan for the strictest "
                      "tier, min replicas and the tier floor are never trimmed)",)
    return traces, notes


def _remember(before: PoolMemory, t: _Trace, now_s: float) -> PoolMemory:
    """The pool's memory after this tick: its desired count, and when and which way it last changed."""
    if t.value == t.previous:
        return replace(before, desired=t.value)
    return replace(before, desired=t.value, changed_s=now_s, direction=1 if t.value > t.previous else -1)


def decide_capacity(inputs: CapacityInputs, state: CapacityState | None,
                    now_s: float) -> tuple[CapacityDecision, CapacityState]:
    """Desired replicas per pool for this tick, and the state for the next (module docstring)."""
    fleet, settings = inputs.fleet, inputs.settings
    memory = dict(state.pools) if state else {}
    previous = {p.name: memory[p.name].desired if p.name in memory else p.replicas for p in fleet.pools}
    drained = {p.name: previous[p.name] for p in fleet.pools if p.name in inputs.drains}
    usable = tuple(p for p in fleet.pools if p.name not in drained and p.replica_bounds[1] > 0)
    fixed_cost = sum(n * fleet.pool(name).price_per_hour_usd for name, n in drained.items())
    # What the fleet runs or has committed to: a replica asked for last tick and not yet reported
    # starting, or held by the window, is running as far as a re-plan's start penalty goes
    # (measured with ready + starting alone: the plan swapped 3 Inferentia + 1 CPU for 2 + 7 while
    # the third Inferentia replica, asked for, was not yet reported starting).
    current = {p.name: max(previous[p.name], inputs.ready.get(p.name, 0) + inputs.starting.get(p.name, 0))
               for p in fleet.pools}
    demand, demand_notes = known_demand(inputs)
    plan, reused = plan_targets(inputs, demand, usable, state.plan if state else None, current, fixed_cost)

    traces, remembered, keepers = _pool_traces(inputs, plan, previous, memory, now_s)
    traces, limit_notes = _with_fleet_limits(inputs, traces, drained, keepers)

    cached = f" (cached: demand within {settings.replan_tolerance:.0%} of the plan's)" if reused else ""
    notes = (f"plan for {sum(demand.values()):.1f} req/s x {settings.headroom:g} headroom: {plan.reason}{cached}",
             *demand_notes, *limit_notes)
    if plan.shed:
        notes += (f"shed for the budget (loosest tier first): {', '.join(map(str, plan.shed))}",)
    pools: dict[str, PoolCapacity] = {}
    new_memory: dict[str, PoolMemory] = {}
    for p in fleet.pools:
        if p.name in drained:
            n = drained[p.name]
            pools[p.name] = PoolCapacity(p.name, n, inputs.ready.get(p.name, 0), True, R.DRAINED,
                                         f"drained by an operator: desired stays {n}, no traffic",
                                         inputs.starting.get(p.name, 0))
            new_memory[p.name] = memory.get(p.name) or PoolMemory(n)
        else:
            pools[p.name] = _finish(traces[p.name])
            new_memory[p.name] = _remember(remembered[p.name], traces[p.name], now_s)
    planned_cost = bounded_cost_usd({n: t.plan_target for n, t in traces.items()}, fleet, fixed_cost)
    desired_cost = sum(c.desired_replicas * fleet.pool(n).price_per_hour_usd for n, c in pools.items())
    decision = CapacityDecision(pools, plan.shed, planned_cost, desired_cost, notes)
    return decision, CapacityState(new_memory, plan, now_s)
