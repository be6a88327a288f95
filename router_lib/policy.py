"""The routing policy: ``decide(inputs, state, now_s) -> (RoutingDecision, PolicyState)``.

A pure function of its arguments (no clock, no globals, no I/O): the control server and the
simulator call the same code.  Per tick, the live metrics are smoothed and the demand per route
estimated (``policy_signals``); then, for each tier from the strictest bound to best effort and
each model, the route goes through the stages of an endpoint picker:

1. **Filters** (``policy_filters``): health (0 ready replicas, model not ready, error rate),
   SLA feasibility (predicted latency at the utilisation already planned this tick over
   ``headroom x bound``, or measured p99 over the bound; with hysteresis), and tier isolation (a
   looser tier tries pools carrying no stricter traffic first).
2. **Scorers** (``policy_scorers``): cost per request at the tier's safe throughput, as a score in
   [0, 1].  Static (prices and profiles), so the ranking is computed once per fleet
   (``policy_stages.build_capacity_table``).
3. **Picker** (``policy_picker``): the best-ranked feasible pool takes the demand up to its room,
   the rest spills in rank order, demand beyond every room is spread by capacity; no feasible
   pool: the tiers' fallback order.  Shares become integer weights (largest remainder), then
   :func:`~router_lib.policy_stages.bounded_step` limits how fast they move.

Why cost-first placement (fill the cheapest feasible pool, then the next) rather than a blend of
scores: every tier's bound is a hard constraint and cost is the one thing to minimise, so the
cheapest placement that meets the bounds is the answer, and filling in cost order finds it for
one route at a time.  A latency score mixed into the ranking would buy latency no tier asked for
(or give up some the tier needs); live signals therefore act as filters.  Pools not needed once
the demand is placed are never assessed, which keeps a decision for 10 models x 3 tiers x 10
pools under a millisecond (figures: benchmarks/router/README.md).

:data:`CONSUMED_METRICS` names the ``PoolModelMetrics`` fields the stages read (each filter and
scorer declares its own), so a metrics collector can ask for exactly those.
"""

from __future__ import annotations

from router_lib.policy_filters import FILTERS
from router_lib.policy_picker import TINY_DEMAND, Placement, Tick, pick, target_weights
from router_lib.policy_scorers import DEFAULT_SCORERS
from router_lib.policy_signals import DemandEstimate, smooth_signals
from router_lib.policy_stages import CapacityTable, bounded_step, build_capacity_table, smoothing_alpha
from router_lib.policy_types import (
    NOT_NEEDED,
    UNHEALTHY_NO_REPLICA,
    PolicyInputs,
    PolicySettings,
    PolicyState,
    PoolWeight,
    RoutePool,
    RoutingDecision,
)
from router_lib.routes import Reason, ReasonKind, RouteKey, RouteWeights

__all__ = [
    "CONSUMED_FLEET_METRICS",
    "CONSUMED_METRICS",
    "NOT_NEEDED",
    "UNHEALTHY_NO_REPLICA",
    "PolicyInputs",
    "PolicySettings",
    "PolicyState",
    "PoolWeight",
    "RoutingDecision",
    "decide",
]

# The PoolModelMetrics fields the policy reads: what its filters, scorers and demand estimate
# declare.  (request_rate_per_s is read only when PolicyInputs.demand_per_s is None.)
CONSUMED_METRICS: frozenset[str] = frozenset().union(
    *(f.consumes for f in FILTERS), *(s.scorer.consumes for s in DEFAULT_SCORERS), DemandEstimate.consumes)
# The FleetMetrics fields it reads besides the per-(pool, model) ones.
CONSUMED_FLEET_METRICS: frozenset[str] = frozenset({"ready_replicas", "tier_rate_per_s"})

STEPPING = Reason(ReasonKind.STEPPING, "stepping: weight moving to the target at most max_step per tick")


def _pool_weights(route: RouteKey, names: tuple[str, ...], weights: list[int], placed: Placement, tick: Tick,
                  table: CapacityTable) -> RouteWeights:
    """One PoolWeight per pool serving the model.  The weight-0 cases that do not change (not
    needed, no replica) are shared objects: a decision holds ~300 PoolWeights."""
    out = list(table.idle_rows[route.model])
    reasons = placed.reasons
    for slot, reason in enumerate(reasons):
        w = weights[slot]
        if reason is None:
            if w == 0:
                continue  # not needed (or unhealthy, below)
            reason = STEPPING
        out[slot] = PoolWeight(names[slot], w, reason)
    unhealthy = tick.unhealthy_by_model.get(route.model)
    if unhealthy:  # unhealthy pools the picker did not reach: their health is their reason
        slots = table.slots[route.model]
        for pool, why in unhealthy.items():
            at = slots.get(pool)
            if at is not None and reasons[at] is None and weights[at] == 0:
                out[at] = table.no_replica[pool] if why.kind is ReasonKind.NO_REPLICA else PoolWeight(pool, 0, why)
    return RouteWeights(route, tuple(out))


def _same(built_for: tuple[object, object], fleet: object, settings: object) -> bool:
    """Was the capacity table built for this fleet and these settings?  Identity first (free),
    then value equality (a caller that rebuilds equal objects every tick still reuses the table)."""
    old_fleet, old_settings = built_for
    return (old_fleet is fleet or old_fleet == fleet) and (old_settings is settings or old_settings == settings)


def decide(inputs: PolicyInputs, state: PolicyState | None, now_s: float) -> tuple[RoutingDecision, PolicyState]:
    """One routing decision.  See the module docstring for the stages and formulas."""
    settings = inputs.settings
    fleet = inputs.fleet
    table = state.capacity if state is not None and _same(state.capacity_for, fleet, settings) else None
    if not isinstance(table, CapacityTable):
        table = build_capacity_table(fleet, settings)
    alpha = smoothing_alpha(now_s - state.time_s, settings.smoothing_tau_s) if state else 1.0
    smoothed = smooth_signals(inputs, state, alpha, now_s, table.keys)
    demand, demand_history = DemandEstimate.estimate(inputs, state, now_s, table.routes_by_tier)
    was_feasible = state.feasible if state else None
    previous_weights = state.weights if state else {}
    tick = Tick(inputs, table, smoothed)
    routes: dict[RouteKey, RouteWeights] = {}
    unroutable: dict[RouteKey, str] = {}
    weights_out: dict[RouteKey, dict[str, int]] = {}
    feasible: set[RoutePool] = set(was_feasible or ())
    total = settings.total_weight
    for rank, tier in enumerate(table.tiers_strictest_first):
        tick.start_tier(rank)
        for route in table.routes_by_tier[tier]:
            model = route.model
            names = table.pool_names.get(model, ())
            if not names:
                unroutable[route] = f"no pool serves {model}"
                continue
            prev = previous_weights.get(route)
            placed = pick(route, max(demand.get(route, 0.0), TINY_DEMAND), table, tick, prev, was_feasible, feasible)
            final = target_weights(placed.takes, total)
            weights = dict(zip(names, final, strict=True))
            # From the previous weights (same pools), step towards the target; anything else
            # (first decision, pools added or removed) starts at the target.
            if prev is not None and prev != weights and prev.keys() == table.pool_name_sets[model]:
                final = bounded_step([prev[n] for n in names], final, placed.excluded, settings)
                weights = dict(zip(names, final, strict=True))
            weights_out[route] = weights
            routes[route] = _pool_weights(route, names, final, placed, tick, table)
    decision = RoutingDecision(routes, unroutable, now_s)
    new_state = PolicyState(now_s, smoothed, demand, demand_history, weights_out, frozenset(feasible), table,
                            (fleet, settings))
    return decision, new_state
