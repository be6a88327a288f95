"""The routing policy: ``decide(inputs, state, now_s) -> (RoutingDecision, PolicyState)``.

A pure function of its arguments (no clock, no globals, no I/O): the control server and the
simulator call the same code.  Per tick, for each tier from the strictest bound to best effort
and each model, three stages run over the pools that serve the model:

1. **Filter** (``_health``, ``_assess``): a pool is *excluded* when it has 0 ready replicas, the
   model is not ready on it, or its error rate exceeds ``max_error_rate`` (weight 0 at once, no
   smoothing); and, for a tier with a bound, when its predicted latency exceeds ``headroom x bound``
   or its measured p99 exceeds the bound (both with hysteresis).  The prediction is
   ``router_lib.latency_model``'s, at the tier's target-compliance quantile (p99.9 for 99.9%):
   ``tail_q x L(b(u)) x (1 + min(1, rho/(1-rho))) + backlog`` where ``u``
   is the pool's utilisation already planned this tick (stricter routes, other models) and
   ``backlog = smoothed queue depth / (ready replicas x X)`` is the time to drain the live queue.
2. **Score**: pools are ordered by cost per request at the tier's safe throughput,
   ``price_per_hour / (3600 x safe_utilisation x X)``, cheapest first (ties: fallback order).
   This order depends only on prices and profiles, so it is computed once per fleet.
3. **Pick** (``_route``): the cheapest feasible pool takes the demand up to its room (safe
   utilisation of the strictest tier it carries minus its planned utilisation, x ready
   replicas x X); the rest spills in cost order; demand beyond every room is spread over the
   feasible pools by capacity.  Isolation: a looser tier tries pools that carry no stricter
   traffic first (and spreads its excess there), so bronze bursts do not land on gold's pools.
   No feasible pool: the tiers' fallback order (GPU -> Inferentia -> CPU) among healthy pools, up
   to ``max_utilisation``.  Bronze (no bound) is the same with ``max_utilisation`` as the room,
   i.e. the cheapest capacity.  Pools not needed once the demand is placed are not assessed
   (weight 0, "not needed"), which keeps a decision for 10 models x 3 tiers x 10 pools around a
   millisecond (figures: benchmarks/router/README.md).

Shares become integer weights (largest remainder), then :func:`bounded_step` limits how fast
they move.  Demand is the highest rate of the last ``demand_window_s``; queue depth and p99 are
smoothed by EWMA (p99 rises at once).
"""

from __future__ import annotations

from collections.abc import Mapping

from router_lib.policy_stages import (
    CapacityTable,
    ModelOnPool,
    bounded_step,
    build_capacity_table,
    largest_remainder,
    smoothing_alpha,
)
from router_lib.policy_types import (
    PolicyInputs,
    PolicySettings,
    PolicyState,
    PoolWeight,
    RouteKey,
    RoutingDecision,
    Smoothed,
)

__all__ = ["decide", "PolicyInputs", "PolicySettings", "PolicyState", "PoolWeight", "RoutingDecision"]

_TINY_DEMAND = 1e-6  # zero demand still needs a route: the first pool in order takes it
NOT_NEEDED = "not needed: cheaper feasible pools cover the demand"
UNHEALTHY_NO_REPLICA = "unhealthy: 0 ready replicas"


def _smooth_signals(inputs: PolicyInputs, state: PolicyState | None, alpha: float, now_s: float
                    ) -> dict[tuple[str, str], Smoothed]:
    """Queue depth: plain EWMA (an instant gauge, the noisiest input).  Measured p99 and emulation
    lag: rise at once (a breach is a fact), fall by EWMA; when the window has no measurement (the
    pool got no traffic) the last one holds for ``measured_hold_s``, then is forgotten."""
    out: dict[tuple[str, str], Smoothed] = {}
    previous = state.smoothed if state else {}
    hold = inputs.settings.measured_hold_s
    for key, m in inputs.metrics.by_pool_model.items():
        before = previous.get(key)
        measured = m.p99_ms is not None or m.emulation_lag_ms is not None
        if before is None:
            out[key] = Smoothed(m.queue_depth, m.p99_ms, m.emulation_lag_ms or 0.0, now_s if measured else 0.0)
            continue
        queue = before.queue_depth + alpha * (m.queue_depth - before.queue_depth)
        held = now_s - before.seen_s <= hold
        p99 = m.p99_ms
        if p99 is None:
            p99 = before.p99_ms if held else None
        elif before.p99_ms is not None and p99 < before.p99_ms:
            p99 = before.p99_ms + alpha * (p99 - before.p99_ms)
        lag = m.emulation_lag_ms
        if lag is None:
            lag = before.lag_ms if held else 0.0
        elif lag < before.lag_ms:
            lag = before.lag_ms + alpha * (lag - before.lag_ms)
        out[key] = Smoothed(queue, p99, lag, now_s if measured else before.seen_s)
    for key, before in previous.items():  # no sample at all this tick: a measurement still holds
        if key not in out and now_s - before.seen_s <= hold and (before.p99_ms is not None or before.lag_ms):
            out[key] = Smoothed(0.0, before.p99_ms, before.lag_ms, before.seen_s)
    return out


def _demand(inputs: PolicyInputs, state: PolicyState | None, now_s: float, tiers: tuple[str, ...]
            ) -> tuple[dict[RouteKey, float], dict[RouteKey, tuple[tuple[float, float], ...]]]:
    """Demand per route: the highest raw rate over the last ``demand_window_s``.

    The history kept is a decreasing sequence (a sample followed by a higher one can never be
    the maximum again), so it stays a few entries long.
    """
    given = inputs.demand_per_s
    observed: dict[str, float] = {}
    share = {t: 1.0 / len(tiers) for t in tiers}
    if given is None:
        # No per-route figures: split each model's observed rate over the tiers by the tiers'
        # shares of all traffic (Envoy's per-tier virtual clusters), evenly when those are unknown.
        for (_pool, model), m in inputs.metrics.by_pool_model.items():
            observed[model] = observed.get(model, 0.0) + m.request_rate_per_s
        by_tier = {t: inputs.metrics.tier_rate_per_s.get(t, 0.0) for t in tiers}
        if sum(by_tier.values()) > 0:
            share = {t: r / sum(by_tier.values()) for t, r in by_tier.items()}
    history = state.demand_history if state else {}
    oldest = now_s - inputs.settings.demand_window_s
    out: dict[RouteKey, float] = {}
    kept: dict[RouteKey, tuple[tuple[float, float], ...]] = {}
    for model in inputs.fleet.models:
        for tier in tiers:
            key = (model, tier)
            raw = given.get(key, 0.0) if given is not None else observed.get(model, 0.0) * share[tier]
            samples = [s for s in history.get(key, ()) if s[0] > oldest and s[1] > raw]
            samples.append((now_s, raw))
            kept[key] = tuple(samples)
            out[key] = samples[0][1]
    return out, kept


class _Tick:
    """Per-decision working values shared by the routes of one tick (not part of the state)."""

    def __init__(self, inputs: PolicyInputs, smoothed: dict[tuple[str, str], Smoothed]) -> None:
        self.inputs = inputs
        self.settings = inputs.settings
        self.smoothed = smoothed
        self.metrics = inputs.metrics.by_pool_model
        known = inputs.metrics.ready_replicas
        self.ready = {p.name: inputs.pool_ready.get(p.name, known.get(p.name, p.replicas)) for p in inputs.fleet.pools}
        self.unhealthy = _health(inputs, self.ready)
        self.unhealthy_by_model: dict[str, dict[str, str]] = {}
        for (pool, model), why in self.unhealthy.items():
            self.unhealthy_by_model.setdefault(model, {})[pool] = why
        s = inputs.settings
        self.headroom = s.headroom
        self.slack_feasible, self.slack_excluded = 1.0 + s.hysteresis, 1.0 - s.hysteresis
        self.use_observed = s.use_observed_p99
        self.used_u: dict[str, float] = {}
        self.cap_u: dict[str, float] = {}
        self.strictest_rank: dict[str, int] = {}  # pool -> rank of the strictest tier placed on it
        self.rank = 0  # rank of the tier being placed (0 = strictest)
        self.protected: frozenset[str] = frozenset()  # pools carrying a tier stricter than that

    def start_tier(self, rank: int) -> None:
        """Pools whose strictest tier is stricter than ``rank`` stay fixed while one tier is placed."""
        self.rank = rank
        self.protected = frozenset(n for n, r in self.strictest_rank.items() if r < rank)


def _health(inputs: PolicyInputs, ready: dict[str, int]) -> dict[tuple[str, str], str]:
    """Filter, health part: (pool, model) -> why the pool cannot serve the model at all now.

    0 ready replicas, the model not ready on the pool, or an error rate over ``max_error_rate``.
    """
    out: dict[tuple[str, str], str] = {}
    for pool in inputs.fleet.pools:
        if ready[pool.name] <= 0:
            for model in pool.models:
                out[(pool.name, model)] = UNHEALTHY_NO_REPLICA
    limit = inputs.settings.max_error_rate
    for key, m in inputs.metrics.by_pool_model.items():
        if key in out:
            continue
        if not m.ready:
            out[key] = f"unhealthy: {m.model} not ready on this pool"
        elif m.error_rate > limit:
            out[key] = f"unhealthy: error rate {100 * m.error_rate:.0f}%"
    return out


def _assess(e: ModelOnPool, tier: str, bound: float | None, tick: _Tick, was_feasible: bool | None
            ) -> tuple[float, str | None]:
    """Filter, latency part: (predicted p99 ms, why it breaks the tier's bound or None)."""
    ready = tick.ready[e.name]
    signals = tick.smoothed.get(e.pool_model)
    backlog = signals.queue_depth / (ready * e.throughput_per_replica) * 1000.0 if signals else 0.0
    predicted = e.predicted_p99_ms(tick.used_u.get(e.name, 0.0), backlog, tier)
    if signals is not None and signals.lag_ms > 0.0:
        # An emulated pool whose host cannot keep up with its profile: every execution a request
        # waits for (its own and the queued ones ahead of it) finishes lag_ms late.
        queued_executions = signals.queue_depth / (ready * e.instances * e.max_batch)
        predicted += e.tail_by_tier[tier] * signals.lag_ms * (1.0 + queued_executions)
    if bound is None:
        return predicted, None
    # Hysteresis: a feasible pool keeps its place up to (1 + h) x the threshold, an excluded one
    # returns only under (1 - h) x; with no history (first decision) the threshold itself.
    slack = 1.0 if was_feasible is None else (tick.slack_feasible if was_feasible else tick.slack_excluded)
    threshold = tick.headroom * bound * slack
    if predicted > threshold or e.safe_utilisation[tier] <= 0:
        return predicted, f"predicted {predicted:.1f} ms > {threshold:.1f} ms (bound {bound:g} ms x headroom)"
    if tick.use_observed and signals is not None and signals.p99_ms is not None and signals.p99_ms > bound * slack:
        return predicted, f"measured p99 {signals.p99_ms:.1f} ms > bound {bound:g} ms"
    return predicted, None


def _route(model: str, tier: str, demand: float, table: CapacityTable, tick: _Tick,
           previous: Mapping[str, int] | None, was_feasible: frozenset[tuple[str, str, str]] | None,
           feasible_now: set[tuple[str, str, str]]) -> tuple[dict[str, float], dict[str, str], set[str]]:
    """Filter, score and pick for one (model, tier): (req/s per pool, reason per pool, excluded).

    Pools absent from the returned takes/reasons were not needed (0 req/s, reason NOT_NEEDED or
    their health reason).  ``feasible_now`` is updated with what was assessed this tick.
    """
    bound = table.tier_bound_ms[tier]
    takes: dict[str, float] = {}
    reasons: dict[str, str] = {}
    excluded: set[str] = set()
    feasible: list[tuple[ModelOnPool, float]] = []
    remaining = demand
    unhealthy = tick.unhealthy
    used_u, cap_u, ready = tick.used_u, tick.cap_u, tick.ready
    rank = tick.rank
    strictest = tick.strictest_rank
    protected = tick.protected
    order = table.cost_order[(model, tier)]
    if protected:
        # Isolation: a looser tier fills pools that carry no stricter traffic first, so its
        # bursts land where they cannot hurt a stricter tier (cost order within each group).
        order = tuple([x for x in order if x[0].name not in protected] + [x for x in order if x[0].name in protected])
    for e, key in order:
        name = e.name
        if remaining <= 0 and not (previous and previous[name]):
            continue  # not needed, and holds no weight that might have to drop at once
        why = unhealthy.get(e.pool_model)
        if why is None:
            predicted, why = _assess(e, tier, bound, tick, None if was_feasible is None else key in was_feasible)
        if why is not None:
            reasons[name], takes[name] = why, 0.0
            excluded.add(name)
            feasible_now.discard(key)
            continue
        feasible_now.add(key)
        tier_u = e.safe_utilisation[tier]
        take = 0.0
        if remaining > 0:
            room = (min(cap_u.get(name, 1.0), tier_u) - used_u.get(name, 0.0)) * ready[name] * e.throughput_per_replica
            take = min(remaining, room) if room > 0 else 0.0
            remaining -= take
        takes[name] = take
        feasible.append((e, tier_u))
        reasons[name] = f"cost ${e.cost_per_million[tier]:.3f}/1M, predicted {predicted:.1f} ms, takes {take:.0f} req/s"
    if not feasible:
        return _fallback(model, demand, table, tick, reasons, excluded)
    if remaining > 1e-9:  # over every safe capacity: spread the excess by capacity, sparing
        # pools that carry a stricter tier when others can take it
        spill = [(e, u) for e, u in feasible if e.name not in protected] or feasible
        total = sum(ready[e.name] * e.throughput_per_replica for e, _ in spill)
        for e, _ in spill:
            extra = remaining * ready[e.name] * e.throughput_per_replica / total
            takes[e.name] += extra
            reasons[e.name] += f" +{extra:.0f} over safe capacity"
    for e, tier_u in feasible:
        take = takes[e.name]
        if take > 0:
            name = e.name
            used_u[name] = used_u.get(name, 0.0) + take / (ready[name] * e.throughput_per_replica)
            cap_u[name] = min(cap_u.get(name, 1.0), tier_u)
            if take > _TINY_DEMAND:  # an idle route's placeholder weight is not traffic to protect
                strictest[name] = min(strictest.get(name, rank), rank)
    return takes, reasons, excluded


def _fallback(model: str, demand: float, table: CapacityTable, tick: _Tick, reasons: dict[str, str],
              excluded: set[str]) -> tuple[dict[str, float], dict[str, str], set[str]]:
    """No pool meets the bound: fill healthy pools in fallback order (GPU -> Inferentia -> CPU),
    each up to ``max_utilisation``; what is left goes to the first."""
    order = table.fallback_order[model]
    healthy = [e for e in order if e.pool_model not in tick.unhealthy]
    takes = {e.pool.name: 0.0 for e in order}
    if not healthy:
        first = order[0].pool.name
        takes[first] = demand
        reasons[first] = "no healthy pool: first in fallback order (Envoy priorities back it)"
        excluded.discard(first)
        return takes, reasons, excluded
    u_max = tick.settings.max_utilisation
    remaining = demand
    for e in healthy:
        name = e.pool.name
        room = (min(tick.cap_u.get(name, 1.0), u_max) - tick.used_u.get(name, 0.0)) * tick.ready[name] \
            * e.throughput_per_replica
        take = min(remaining, room) if room > 0 else 0.0
        takes[name], remaining = take, remaining - take
    if remaining > 1e-9:
        takes[healthy[0].pool.name] += remaining
    for e in healthy:
        name = e.pool.name
        if takes[name] > 0:
            tick.used_u[name] = tick.used_u.get(name, 0.0) + takes[name] / (tick.ready[name] * e.throughput_per_replica)
            tick.cap_u[name] = min(tick.cap_u.get(name, 1.0), u_max)
        was = reasons.get(name, "not assessed")
        reasons[name] = f"fallback (no pool meets the bound; {was}): takes {takes[name]:.0f} req/s"
        excluded.discard(name)
    return takes, reasons, excluded


def _target_weights(names: tuple[str, ...], takes: dict[str, float], total: int) -> list[int]:
    """Integer weights from req/s shares; remainder ties go to the pool taking more."""
    takers = [n for n, v in takes.items() if v > 0]
    if len(takers) == 1:
        only = takers[0]
        return [total if n == only else 0 for n in names]
    preference = sorted(names, key=lambda n: -takes.get(n, 0.0))
    by_pool = dict(zip(preference, largest_remainder([takes.get(n, 0.0) for n in preference], total), strict=True))
    return [by_pool[n] for n in names]


def _pool_weights(model: str, names: tuple[str, ...], weights: list[int], reasons: dict[str, str], tick: _Tick,
                  table: CapacityTable) -> tuple[PoolWeight, ...]:
    """One PoolWeight per pool serving the model; the constant weight-0 cases are shared objects."""
    unhealthy = tick.unhealthy_by_model.get(model)
    out = []
    for n, w in zip(names, weights, strict=True):
        reason = reasons.get(n)
        if reason is None:
            if w == 0:
                why = unhealthy.get(n) if unhealthy else None
                out.append(table.not_needed[n] if why is None else
                           table.no_replica[n] if why is UNHEALTHY_NO_REPLICA else PoolWeight(n, 0, why))
                continue
            reason = "draining: weight moving to the target at most max_step per tick"
        out.append(PoolWeight(n, w, reason))
    return tuple(out)


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
    smoothed = _smooth_signals(inputs, state, alpha, now_s)
    demand, demand_history = _demand(inputs, state, now_s, table.tiers_strictest_first)
    was_feasible = state.feasible if state else None
    previous_weights = state.weights if state else {}
    tick = _Tick(inputs, smoothed)
    routes: dict[RouteKey, tuple[PoolWeight, ...]] = {}
    unroutable: dict[RouteKey, str] = {}
    weights_out: dict[RouteKey, dict[str, int]] = {}
    feasible: set[tuple[str, str, str]] = set(was_feasible or ())
    total = settings.total_weight
    for rank, tier in enumerate(table.tiers_strictest_first):
        tick.start_tier(rank)
        for model in fleet.models:
            route = (model, tier)
            names = table.pool_names.get(model, ())
            if not names:
                unroutable[route] = f"no pool serves {model}"
                continue
            prev = previous_weights.get(route)
            takes, reasons, excluded = _route(model, tier, max(demand.get(route, 0.0), _TINY_DEMAND), table, tick,
                                              prev, was_feasible, feasible)
            target = _target_weights(names, takes, total)
            if prev is None or prev.keys() != table.pool_name_sets[model]:
                final = target
            else:
                before = [prev[n] for n in names]
                final = target if before == target else bounded_step(before, target, [n in excluded for n in names],
                                                                      settings)
            weights_out[route] = dict(zip(names, final, strict=True))
            routes[route] = _pool_weights(model, names, final, reasons, tick, table)
    decision = RoutingDecision(routes, unroutable, now_s)
    new_state = PolicyState(now_s, smoothed, demand, demand_history, weights_out, frozenset(feasible), table,
                            (fleet, settings))
    return decision, new_state


