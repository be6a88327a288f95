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
from typing import NamedTuple

from router_lib.policy_candidates import RouteCandidate
from router_lib.policy_filters import HealthFilter, SlaFilter, TierIsolation
from router_lib.policy_stages import CapacityTable, apportion
from router_lib.policy_types import PolicyInputs, RoutePool, Smoothed
from router_lib.routes import PoolModel, Reason, ReasonKind, RouteKey

TINY_DEMAND = 1e-6  # zero demand still needs a route: the first pool in order takes it


class Tick:
    """Per-decision working values shared by the routes of one tick (not part of the state): the
    filters for this tick and what is planned on each pool so far.  Per-pool values are lists
    indexed like ``Fleet.pools`` (``ModelOnPool.pool_index``): the picker reads them a few hundred
    times a decision."""

    def __init__(self, inputs: PolicyInputs, table: CapacityTable, smoothed: Mapping[PoolModel, Smoothed]) -> None:
        self.settings = inputs.settings
        known = inputs.metrics.ready_replicas
        pools = inputs.fleet.pools
        self.pool_names = tuple(p.name for p in pools)
        self.ready = {p.name: inputs.pool_ready.get(p.name, known.get(p.name, p.replicas)) for p in pools}
        self.unhealthy = HealthFilter(self.settings.max_error_rate).unhealthy(table.pool_models, inputs.metrics,
                                                                               self.ready)
        self.unhealthy_by_model: dict[str, dict[str, Reason]] = {}
        for key, why in self.unhealthy.items():
            self.unhealthy_by_model.setdefault(key.model, {})[key.pool] = why
        ready = [self.ready[name] for name in self.pool_names]
        self.sla = SlaFilter(self.settings, smoothed, ready)
        self.ready_by_index = ready
        self.used_u = [0.0] * len(pools)  # utilisation planned this tick
        self.cap_u = [1.0] * len(pools)  # safe utilisation of the strictest tier placed on the pool
        self.strictest_rank = [len(table.tiers_strictest_first)] * len(pools)  # of the tiers placed on it
        self.rank = 0  # rank of the tier being placed (0 = strictest)
        self.protected: frozenset[str] = frozenset()  # pools carrying a tier stricter than that
        # Pools whose tiers share them through priority levels: a looser tier waits behind the
        # stricter one there, so isolation does not keep it off them.
        self.shared = frozenset(p.name for p in pools if p.share_tiers)

    def start_tier(self, rank: int) -> None:
        """Pools whose strictest tier is stricter than ``rank`` stay protected while one tier is placed."""
        self.rank = rank
        if self.settings.tier_isolation:
            self.protected = frozenset(n for n, r in zip(self.pool_names, self.strictest_rank, strict=True)
                                       if r < rank and n not in self.shared)


class Placement(NamedTuple):
    """One route's outcome, as lists aligned with the pools serving the model (fleet order):
    req/s per pool, the reason per pool (None: not needed, 0 req/s), excluded by a filter."""

    takes: list[float]
    reasons: list[Reason | None]
    excluded: list[bool]


def pick(route: RouteKey, demand: float, table: CapacityTable, tick: Tick, previous: Mapping[str, int] | None,
         was_feasible: frozenset[RoutePool] | None, feasible_now: set[RoutePool]) -> Placement:
    """Filter and fill one route (steps 1-2 of the module docstring, 3 via :func:`fallback`).

    ``feasible_now`` is updated with the feasibility of every candidate assessed.
    """
    bound = table.tier_bound_ms[route.tier]
    n = len(table.pool_names[route.model])
    takes = [0.0] * n
    reasons: list[Reason | None] = [None] * n
    excluded = [False] * n
    # per feasible pool, in placement order: (candidate, predicted ms, req/s within its room,
    # its utilisation and utilisation cap planned before this route, ready replicas x X)
    feasible: list[tuple[RouteCandidate, float, float, float, float, float]] = []
    remaining = demand
    unhealthy, check = tick.unhealthy, tick.sla.check
    used_u, cap_u, ready = tick.used_u, tick.cap_u, tick.ready_by_index
    protected = tick.protected
    # pools that held weight last tick: assessed even when not needed (an excluded one must drop
    # at once); once the demand is placed and none is left to visit, the rest need no look
    held = len(previous) - list(previous.values()).count(0) if previous else 0
    for c in TierIsolation.order(table.ranked[route], protected):
        if previous and previous.get(c.name):
            held -= 1
        elif remaining <= 0:
            if held <= 0:
                break
            continue  # not needed
        i = c.pool_index
        why = unhealthy.get(c.pool_model) if unhealthy else None  # usually empty: skip the hashing
        used = used_u[i]
        if why is None:
            predicted, why = check(c, bound, used, None if was_feasible is None else c.key in was_feasible)
        if why is not None:
            reasons[c.slot], excluded[c.slot] = why, True
            feasible_now.discard(c.key)
            continue
        feasible_now.add(c.key)
        take = 0.0
        cap = cap_u[i]
        if remaining > 0:
            room = ((cap if cap < c.safe_utilisation else c.safe_utilisation) - used) \
                * ready[i] * c.on_pool.throughput_per_replica
            if room > 0:
                take = remaining if remaining < room else room
                remaining -= take
        takes[c.slot] = take
        feasible.append((c, predicted, take, used, cap, ready[i] * c.on_pool.throughput_per_replica))
    if not feasible:
        return fallback(route.model, demand, table, tick, Placement(takes, reasons, excluded))
    over: dict[int, float] = {}  # slot -> req/s beyond the pool's room
    if remaining > 1e-9:  # over every safe capacity: spread the excess by capacity, sparing
        # pools that carry a stricter tier when others can take it
        spill = [f for f in feasible if f[0].name not in protected] or feasible
        total = 0.0
        for f in spill:
            total += f[5]
        for f in spill:
            c = f[0]
            over[c.slot] = extra = remaining * ready[c.pool_index] * c.on_pool.throughput_per_replica / total
            takes[c.slot] += extra
    rank = tick.rank
    strictest = tick.strictest_rank
    cheapest = ReasonKind.CHEAPEST
    for c, predicted, within, used, cap, capacity in feasible:
        take = takes[c.slot]
        if over and c.slot in over:
            text = (f"{c.cost_text}, predicted {predicted:.1f} ms, takes {within:.0f} req/s "
                    f"+{over[c.slot]:.0f} over safe capacity")
        else:
            text = f"{c.cost_text}, predicted {predicted:.1f} ms, takes {within:.0f} req/s"
        reasons[c.slot] = Reason(cheapest, text)
        if take > 0:
            i = c.pool_index
            used_u[i] = used + take / capacity
            cap_u[i] = cap if cap < c.safe_utilisation else c.safe_utilisation
            if take > TINY_DEMAND and strictest[i] > rank:  # an idle route's placeholder weight
                strictest[i] = rank  # is not traffic to protect
    return Placement(takes, reasons, excluded)


def fallback(model: str, demand: float, table: CapacityTable, tick: Tick, placed: Placement) -> Placement:
    """No pool meets the bound: fill healthy pools in fallback order (GPU -> Inferentia -> CPU),
    each up to ``max_utilisation``; what is left goes to the first."""
    order = table.fallback_order[model]
    reasons, excluded = placed.reasons, placed.excluded
    healthy = [e for e in order if e.pool_model not in tick.unhealthy]
    takes = [0.0] * len(placed.takes)
    if not healthy:
        first = order[0].slot
        takes[first] = demand
        reasons[first] = Reason(ReasonKind.NO_HEALTHY_POOL,
                                "no healthy pool: first in fallback order (Envoy priorities back it)")
        excluded[first] = False
        return Placement(takes, reasons, excluded)
    u_max = tick.settings.max_utilisation
    used_u, cap_u, ready = tick.used_u, tick.cap_u, tick.ready_by_index
    remaining = demand
    for e in healthy:
        i = e.pool_index
        room = (min(cap_u[i], u_max) - used_u[i]) * ready[i] * e.throughput_per_replica
        take = min(remaining, room) if room > 0 else 0.0
        takes[e.slot], remaining = take, remaining - take
    if remaining > 1e-9:
        takes[healthy[0].slot] += remaining
    for e in healthy:
        i, take = e.pool_index, takes[e.slot]
        if take > 0:
            used_u[i] = used_u[i] + take / (ready[i] * e.throughput_per_replica)
            cap_u[i] = min(cap_u[i], u_max)
        was = reasons[e.slot]
        reasons[e.slot] = Reason(ReasonKind.FALLBACK, f"fallback (no pool meets the bound; {was or 'not assessed'}): "
                                                      f"takes {take:.0f} req/s")
        excluded[e.slot] = False
    return Placement(takes, reasons, excluded)


def target_weights(takes: list[float], total: int) -> list[int]:
    """Integer weights from req/s shares (same order); remainder ties go to the pool taking more,
    then to the earlier one."""
    takers = [i for i, v in enumerate(takes) if v > 0]
    out = [0] * len(takes)
    if len(takers) <= 1:
        out[takers[0] if takers else 0] = total
        return out
    takers.sort(key=takes.__getitem__, reverse=True)  # stable: ties keep the earlier pool first
    for i, weight in zip(takers, apportion([takes[i] for i in takers], total), strict=True):
        out[i] = weight
    return out
