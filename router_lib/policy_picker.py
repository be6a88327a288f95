"""The picker: turns a route's ranked candidates, the filters' verdicts and the capacity left on
each pool into requests per second per pool, then into integer weights.

Cost-first filling, in the ranked order (``router_lib.policy_scorers``):

1. Walk the candidates best first.  Apply the hard filters (``router_lib.policy_filters``) to each
   as it is reached; a feasible pool takes the demand up to its *room*: (safe utilisation of the
   strictest tier it carries - utilisation already planned on it this tick) x ready replicas x X.
   Once the demand is placed, only pools that held weight last tick are still assessed (an
   excluded one must drop at once); the rest are "not needed".
2. Demand beyond every room is spread over the feasible pools in proportion to their capacity,
   over the pools carrying no stricter tier when there are any (isolation).
3. No feasible pool: the tiers' fallback order (GPU -> Inferentia -> CPU) among healthy pools,
   each up to ``max_utilisation``; what is left goes to the first.  No healthy pool: the first
   pool in fallback order takes it all (Envoy's priorities back it up).

Filling in rank order rather than in proportion to scores is what makes this cost-first: a
dearer pool gets traffic only when cheaper ones are full or out, which is the cheapest placement
that meets the bounds (the same placement the planner's program would choose for this fleet).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from router_lib.policy_filters import HealthFilter, SlaFilter
from router_lib.policy_stages import CapacityTable, largest_remainder
from router_lib.policy_types import PolicyInputs, RoutePool, Smoothed
from router_lib.routes import PoolModel, Reason, ReasonKind, RouteKey

TINY_DEMAND = 1e-6  # zero demand still needs a route: the first pool in order takes it


class Tick:
    """Per-decision working values shared by the routes of one tick (not part of the state):
    the filters for this tick and the utilisation planned on each pool so far."""

    def __init__(self, inputs: PolicyInputs, table: CapacityTable, smoothed: Mapping[PoolModel, Smoothed]) -> None:
        self.settings = inputs.settings
        known = inputs.metrics.ready_replicas
        self.ready = {p.name: inputs.pool_ready.get(p.name, known.get(p.name, p.replicas)) for p in inputs.fleet.pools}
        self.unhealthy = HealthFilter(self.settings.max_error_rate).unhealthy(table.pool_models, inputs.metrics,
                                                                               self.ready)
        self.unhealthy_by_model: dict[str, dict[str, Reason]] = {}
        for key, why in self.unhealthy.items():
            self.unhealthy_by_model.setdefault(key.model, {})[key.pool] = why
        self.sla = SlaFilter(self.settings, smoothed, self.ready)
        self.used_u: dict[str, float] = {}  # pool -> utilisation planned this tick
        self.cap_u: dict[str, float] = {}  # pool -> safe utilisation of the strictest tier placed on it
        self.strictest_rank: dict[str, int] = {}  # pool -> rank of the strictest tier placed on it
        self.rank = 0  # rank of the tier being placed (0 = strictest)
        self.protected: frozenset[str] = frozenset()  # pools carrying a tier stricter than that

    def start_tier(self, rank: int) -> None:
        """Pools whose strictest tier is stricter than ``rank`` stay protected while one tier is placed."""
        self.rank = rank
        self.protected = frozenset(n for n, r in self.strictest_rank.items() if r < rank)


@dataclass(frozen=True)
class Placement:
    """One route's outcome: req/s per pool, the reason per pool, the pools the filters excluded.
    Pools absent from ``takes``/``reasons`` were not needed (0 req/s)."""

    takes: dict[str, float]
    reasons: dict[str, Reason]
    excluded: set[str]


def pick(route: RouteKey, demand: float, table: CapacityTable, tick: Tick, previous: Mapping[str, int] | None,
         was_feasible: frozenset[RoutePool] | None, feasible_now: set[RoutePool]) -> Placement:
    """Filter and fill one route (steps 1-2 of the module docstring, 3 via :func:`fallback`).

    ``feasible_now`` is updated with the feasibility of every candidate assessed.
    """
    tier = route.tier
    bound = table.tier_bound_ms[tier]
    takes: dict[str, float] = {}
    reasons: dict[str, Reason] = {}
    excluded: set[str] = set()
    feasible = []  # (candidate, predicted ms, req/s within its room), in the order they were placed
    remaining = demand
    unhealthy, sla = tick.unhealthy, tick.sla
    used_u, cap_u, ready = tick.used_u, tick.cap_u, tick.ready
    protected = tick.protected
    ranked = table.ranked[route]
    if protected:  # the isolation rule (policy_filters.TierIsolation), on (candidate, key) pairs
        ranked = (*(x for x in ranked if x[0].name not in protected), *(x for x in ranked if x[0].name in protected))
    for e, key in ranked:
        name = e.name
        if remaining <= 0 and not (previous and previous.get(name)):
            continue  # not needed, and holds no weight that might have to drop at once
        why = unhealthy.get(e.pool_model)
        if why is None:
            predicted, why = sla.check(e, tier, bound, used_u.get(name, 0.0),
                                       None if was_feasible is None else key in was_feasible)
        if why is not None:
            reasons[name], takes[name] = why, 0.0
            excluded.add(name)
            feasible_now.discard(key)
            continue
        feasible_now.add(key)
        take = 0.0
        if remaining > 0:
            room = (min(cap_u.get(name, 1.0), e.safe_utilisation[tier]) - used_u.get(name, 0.0)) \
                * ready[name] * e.throughput_per_replica
            take = min(remaining, room) if room > 0 else 0.0
            remaining -= take
        takes[name] = take
        feasible.append((e, predicted, take))
    if not feasible:
        return fallback(route.model, demand, table, tick, Placement(takes, reasons, excluded))
    over: dict[str, float] = {}
    if remaining > 1e-9:  # over every safe capacity: spread the excess by capacity, sparing
        # pools that carry a stricter tier when others can take it
        spill = [e for e, _, _ in feasible if e.name not in protected] or [e for e, _, _ in feasible]
        total = sum(ready[e.name] * e.throughput_per_replica for e in spill)
        for e in spill:
            over[e.name] = extra = remaining * ready[e.name] * e.throughput_per_replica / total
            takes[e.name] += extra
    rank = tick.rank
    strictest = tick.strictest_rank
    for e, predicted, within in feasible:
        name = e.name
        take = takes[name]
        text = f"cost ${e.cost_per_million[tier]:.3f}/1M, predicted {predicted:.1f} ms, takes {within:.0f} req/s"
        if name in over:
            text += f" +{over[name]:.0f} over safe capacity"
        reasons[name] = Reason(ReasonKind.CHEAPEST, text)
        if take > 0:
            used_u[name] = used_u.get(name, 0.0) + take / (ready[name] * e.throughput_per_replica)
            cap_u[name] = min(cap_u.get(name, 1.0), e.safe_utilisation[tier])
            if take > TINY_DEMAND:  # an idle route's placeholder weight is not traffic to protect
                strictest[name] = min(strictest.get(name, rank), rank)
    return Placement(takes, reasons, excluded)


def fallback(model: str, demand: float, table: CapacityTable, tick: Tick, placed: Placement) -> Placement:
    """No pool meets the bound: fill healthy pools in fallback order (GPU -> Inferentia -> CPU),
    each up to ``max_utilisation``; what is left goes to the first."""
    order = table.fallback_order[model]
    reasons, excluded = placed.reasons, placed.excluded
    healthy = [e for e in order if e.pool_model not in tick.unhealthy]
    takes = {e.name: 0.0 for e in order}
    if not healthy:
        first = order[0].name
        takes[first] = demand
        reasons[first] = Reason(ReasonKind.NO_HEALTHY_POOL,
                                "no healthy pool: first in fallback order (Envoy priorities back it)")
        excluded.discard(first)
        return Placement(takes, reasons, excluded)
    u_max = tick.settings.max_utilisation
    used_u, cap_u, ready = tick.used_u, tick.cap_u, tick.ready
    remaining = demand
    for e in healthy:
        name = e.name
        room = (min(cap_u.get(name, 1.0), u_max) - used_u.get(name, 0.0)) * ready[name] * e.throughput_per_replica
        take = min(remaining, room) if room > 0 else 0.0
        takes[name], remaining = take, remaining - take
    if remaining > 1e-9:
        takes[healthy[0].name] += remaining
    for e in healthy:
        name = e.name
        if takes[name] > 0:
            used_u[name] = used_u.get(name, 0.0) + takes[name] / (ready[name] * e.throughput_per_replica)
            cap_u[name] = min(cap_u.get(name, 1.0), u_max)
        was = reasons.get(name)
        reasons[name] = Reason(ReasonKind.FALLBACK, f"fallback (no pool meets the bound; {was or 'not assessed'}): "
                                                    f"takes {takes[name]:.0f} req/s")
        excluded.discard(name)
    return Placement(takes, reasons, excluded)


def target_weights(names: tuple[str, ...], takes: Mapping[str, float], total: int) -> list[int]:
    """Integer weights (one per name) from req/s shares; remainder ties go to the pool taking more."""
    takers = [n for n in names if takes.get(n, 0.0) > 0]
    if len(takers) == 1:
        only = takers[0]
        return [total if n == only else 0 for n in names]
    if not takers:
        return largest_remainder([0.0] * len(names), total)
    takers.sort(key=lambda n: -takes[n])
    by_pool = dict(zip(takers, largest_remainder([takes[n] for n in takers], total), strict=True))
    return [by_pool.get(n, 0) for n in names]
