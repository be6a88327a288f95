"""One tick's decisions, composed in a fixed order; pure (no clock, no I/O, no globals).

Order within a tick, each stage reading what the one before decided:

0. **calibration** (``router_lib.calibration``) adds this tick's Triton statistics to the service
   times learned online; where a (model, accelerator)'s calibration is confident its profile
   replaces the offline one for every stage below (the fleet they see is the calibrated one);
1. **capacity** (``router_lib.capacity.decide_capacity``) decides, per pool, how many replicas it
   should run and whether it is being emptied or drained, from the planner's target for the
   demand routing estimated on the previous tick (plus the rows/s queued work wants,
   ``router_lib.backlog``) and the live queue, latency and utilisation;
2. **routing** (``router_lib.policy.decide``) places each (model, tier)'s demand on the cheapest
   pools that meet the tier, seeing a draining or not-yet-ready pool as having 0 ready replicas;
3. **releases** split a route between model versions inside the pools routing chose
   (``decide_releases``: ``router_lib.release.step_release`` for every release observed this
   tick, then each release's candidate share per tier as a ``VersionSplit``; the routes
   themselves pass through unchanged, the split composes with them in the snapshot);
4. **resolve** applies the rules that settle conflicts, in this one place (``resolve``):

   * a pool that is draining, or has no ready replica, carries weight 0 on every route, whatever
     a decider gave it (even when it is the cheapest): reason ``DRAINING`` / ``NOT_READY``;
   * the weight it loses goes to the route's other weighted, routable pools in proportion;
   * a route left with no weight goes whole to the first routable pool serving the model in
     fallback order (``REASSIGNED``); if no pool is routable, to the first pool that still has
     ready replicas although it drains (a route is never dropped while some replica can serve it);
   * a model with no ready replica anywhere has no route (``unroutable``).

No stage's output silently overrides another's: each rule that changed a weight says so in the
pool's reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from router_lib.calibration import (
    Calibration,
    CalibrationSettings,
    CalibrationState,
    StatsReading,
    calibrated_fleet,
    observe,
    pool_calibrations,
)
from router_lib.capacity import CapacityDecision, CapacityInputs, CapacitySettings, CapacityState, decide_capacity
from router_lib.cost_ledger import LedgerState, accrue, route_rates_by_pool
from router_lib.domain import Fleet
from router_lib.metrics import FleetMetrics
from router_lib.policy import decide as decide_routing
from router_lib.policy_stages import largest_remainder
from router_lib.policy_types import PolicyInputs, PolicySettings, PolicyState
from router_lib.release import ReleaseAction, ReleaseBook, ReleaseObservation, step_book
from router_lib.release_split import VersionSplit, release_splits
from router_lib.routes import PoolWeight, Reason, ReasonKind, RouteKey, RouteWeights


@dataclass(frozen=True)
class TickInputs:
    """What the loop read this tick.  ``ready``: serving replicas per pool (discovery);
    ``drains``: pools an operator asked to drain (e.g. before stopping their processes)."""

    fleet: Fleet
    metrics: FleetMetrics
    ready: Mapping[str, int]
    drains: frozenset[str] = frozenset()
    settings: PolicySettings = field(default_factory=PolicySettings)
    starting: Mapping[str, int] = field(default_factory=dict)  # started, not ready yet
    billed: Mapping[str, int] = field(default_factory=dict)  # every replica that exists (paid for)
    # Unix time: the clock of the capacity decider's windows and of the cost ledger, which must
    # survive a restart of the control server (the monotonic clock does not).
    wall_s: float = 0.0
    capacity: CapacitySettings | None = None  # None: the defaults, with ``settings`` as the policy's
    # by release name; a release without one this tick is not stepped (it keeps its state)
    release_observations: Mapping[str, ReleaseObservation] = field(default_factory=dict)
    # Triton's statistics this tick (None: not read; the calibration keeps its state) and how the
    # calibration is used (None: the defaults); see ``router_lib.calibration``.
    stats: StatsReading | None = None
    calibration: CalibrationSettings | None = None
    # rows/s that queued work wants per route (``router_lib.backlog``): capacity plans for it on
    # top of the demand routing measured; routing places only what is sent
    backlog_per_s: Mapping[RouteKey, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DeciderStates:
    """Every decider's state, carried from tick to tick (and persisted as one record)."""

    routing: PolicyState | None = None
    capacity: CapacityState | None = None
    releases: ReleaseBook = field(default_factory=ReleaseBook)
    ledger: LedgerState | None = None  # what the fleet has cost so far (not a decider: an account)
    calibration: CalibrationState | None = None  # service times learned online (the latency model's input)


@dataclass(frozen=True)
class TickDecision:
    capacity: CapacityDecision
    routes: Mapping[RouteKey, RouteWeights]  # what the data plane gets, after ``resolve``
    unroutable: Mapping[RouteKey, str]
    demand_per_s: Mapping[RouteKey, float] = field(default_factory=dict)  # routing's estimate
    splits: tuple[VersionSplit, ...] = ()  # releases in force: candidate share per route
    release_actions: tuple[ReleaseAction, ...] = ()
    calibration: tuple[Calibration, ...] = ()  # per (model, pool): prior vs learned (for /status)


def carried_tiers(weights: Mapping[RouteKey, Mapping[str, int]]) -> dict[str, tuple[str, ...]]:
    """The tiers each pool holds weight for (the routes in force): what its latency is judged by."""
    out: dict[str, set[str]] = {}
    for key, by_pool in weights.items():
        for pool, weight in by_pool.items():
            if weight > 0:
                out.setdefault(pool, set()).add(key[1])  # (model, tier): a RouteKey or a plain tuple
    return {pool: tuple(sorted(tiers)) for pool, tiers in out.items()}


def decide_releases(routes: Mapping[RouteKey, RouteWeights], book: ReleaseBook,
                    observations: Mapping[str, ReleaseObservation], wall_s: float
                    ) -> tuple[tuple[VersionSplit, ...], ReleaseBook, list[ReleaseAction]]:
    """Step every observed release, then say each one's candidate share of each of its routes.
    The routes are not changed here: a split composes with them in the snapshot, so whatever
    ``resolve`` does to a pool holds for both versions."""
    book, actions = step_book(book, observations, wall_s)
    return release_splits(book, routes), book, actions


def resolve(routes: Mapping[RouteKey, RouteWeights], capacity: CapacityDecision, fleet: Fleet,
            total_weight: int) -> tuple[dict[RouteKey, RouteWeights], dict[RouteKey, str]]:
    """Apply the conflict rules of the module docstring.  -> (routes, unroutable)."""
    out: dict[RouteKey, RouteWeights] = {}
    unroutable: dict[RouteKey, str] = {}
    plans = capacity.pools
    for key, route in routes.items():
        serving = [p.name for p in fleet.pools if key.model in p.models]
        blocked = {
            p.pool: (Reason(ReasonKind.DRAINING, f"draining: {plans[p.pool].reason}") if plans[p.pool].draining
                     else Reason(ReasonKind.NOT_READY, "not ready: no ready replica"))
            for p in route.pools if p.pool in plans and not plans[p.pool].routable
        }
        if not blocked:
            out[key] = route
            continue
        pools = [PoolWeight(p.pool, 0, blocked[p.pool]) if p.pool in blocked and p.weight else p for p in route.pools]
        freed = route.total - sum(p.weight for p in pools)
        keep = [i for i, p in enumerate(pools) if p.weight > 0]
        if keep and freed > 0:
            extra = largest_remainder([float(pools[i].weight) for i in keep], freed)
            for i, add in zip(keep, extra, strict=True):
                p = pools[i]
                pools[i] = PoolWeight(p.pool, p.weight + add, p.reason)
        elif not keep:
            candidates = sorted((n for n in serving if n in plans and plans[n].routable),
                                key=lambda n: fleet.fallback_key(fleet.pool(n)))
            why = "takes the route: its pools cannot serve it now (first in fallback order)"
            if not candidates:
                candidates = sorted((n for n in serving if n in plans and plans[n].ready_replicas > 0),
                                    key=lambda n: fleet.fallback_key(fleet.pool(n)))
                why = "takes the route although draining: no other pool has a ready replica"
            if not candidates:
                unroutable[key] = f"no ready replica serves {key.model}"
                continue
            first = candidates[0]
            listed = {p.pool for p in pools}
            pools = [PoolWeight(p.pool, total_weight, Reason(ReasonKind.REASSIGNED, why)) if p.pool == first else p
                     for p in pools]
            if first not in listed:
                pools.append(PoolWeight(first, total_weight, Reason(ReasonKind.REASSIGNED, why)))
        out[key] = RouteWeights(key, tuple(pools))
    return out, unroutable


def with_backlog(demand: Mapping[RouteKey, float], backlog: Mapping[RouteKey, float]) -> dict[RouteKey, float]:
    """What capacity plans for: the measured demand per route plus what queued work wants."""
    out = dict(demand)
    for key, rate in backlog.items():
        out[key] = out.get(key, 0.0) + rate
    return out


def decide_tick(inputs: TickInputs, states: DeciderStates, now_s: float) -> tuple[TickDecision, DeciderStates]:
    """Calibration, then capacity, routing, releases and ``resolve``; see the module docstring."""
    calibration_settings = inputs.calibration or CalibrationSettings()
    calibration = (observe(states.calibration, inputs.stats, calibration_settings, inputs.wall_s)
                   if inputs.stats is not None else states.calibration)
    calibrated = pool_calibrations(inputs.fleet, calibration, calibration_settings) if calibration else ()
    # every decider below sees the calibrated profiles (where confident): one latency model
    inputs = replace(inputs, fleet=calibrated_fleet(inputs.fleet, calibration, calibration_settings))
    previous = states.routing
    settings = inputs.capacity or CapacitySettings(policy=inputs.settings)
    capacity, capacity_state = decide_capacity(CapacityInputs(
        fleet=inputs.fleet, metrics=inputs.metrics, ready=inputs.ready, starting=inputs.starting,
        demand_per_s=with_backlog(previous.demand_per_s if previous else {}, inputs.backlog_per_s),
        carried_tiers=carried_tiers(previous.weights) if previous else {},
        drains=inputs.drains, settings=settings), states.capacity, inputs.wall_s)
    policy_inputs = PolicyInputs(inputs.fleet, inputs.metrics, capacity.routable_ready(), inputs.settings)
    routing, routing_state = decide_routing(policy_inputs, states.routing, now_s)
    splits, release_book, release_actions = decide_releases(routing.routes, states.releases,
                                                           inputs.release_observations, inputs.wall_s)
    routes, unroutable = resolve(routing.routes, capacity, inputs.fleet, inputs.settings.total_weight)
    unroutable = {**routing.unroutable, **unroutable}
    demand = dict(routing_state.demand_per_s)
    # platform time: in a dilated fleet a wall second is 1/k of a platform second
    ledger = accrue(states.ledger, inputs.wall_s / inputs.fleet.time_dilation, inputs.billed,
                    {p.name: p.price_per_hour_usd for p in inputs.fleet.pools}, route_rates_by_pool(routes, demand))
    decision = TickDecision(capacity, routes, unroutable, demand, splits, tuple(release_actions), calibrated)
    return decision, DeciderStates(routing_state, capacity_state, release_book, ledger, calibration)
