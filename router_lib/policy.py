"""The routing policy: ``decide(inputs, state, now_s) -> (RoutingDecision, PolicyState)``.

A pure function of its arguments (no clock, no globals, no I/O): the control server and the
simulator call the same code.  Per tick, for each tier from the strictest bound to best effort
and each model, three stages run over the pools that serve the model:

1. **Filter** (``_assess``): a pool is *excluded* when it has 0 ready replicas, the model is not
   ready on it, its error rate exceeds ``max_error_rate``, or - for a tier with a bound - its
   predicted p99 (``router_lib.latency_model``: profile service time at the pool's planned
   utilisation, x tail factor, + time to drain the live queue) exceeds ``headroom x bound``, or
   its measured p99 exceeds the bound.  Both thresholds have hysteresis.
2. **Score**: feasible pools are ordered by cost per request at the tier's safe throughput,
   ``price_per_hour / (3600 x safe_utilisation x X)`` (cheapest first; ties by fallback order).
3. **Pick** (``_fill``): the cheapest pool takes the demand up to its room (safe utilisation minus
   what stricter routes already planned on it, shared by all models of the pool), the rest
   spills in cost order; demand beyond all rooms is spread over the feasible pools by capacity.
   No feasible pool: the tiers' fallback order (GPU -> Inferentia -> CPU) among ready pools.
   Bronze (no bound) is the same with ``max_utilisation`` as the room: cheapest capacity.

Shares become integer weights (largest remainder), then :func:`bounded_step` limits how fast
they move.  Demand and queue signals are smoothed fast-up / slow-down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from router_lib.domain import Accelerator, PoolSpec
from router_lib.latency_model import backlog_ms, predicted_p99_ms
from router_lib.policy_stages import (
    CapacityTable,
    bounded_step,
    build_capacity_table,
    fast_up_slow_down,
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


@dataclass
class _Candidate:
    pool: PoolSpec
    ready: int
    excluded: bool
    reason: str
    throughput: float = 0.0  # X x ready replicas, req/s of this model at full batch
    safe_u: float = 0.0
    cost_per_million: float = math.inf
    predicted_ms: float = 0.0
    take: float = 0.0


def _smooth_signals(inputs: PolicyInputs, state: PolicyState | None, alpha: float) -> dict[tuple[str, str], Smoothed]:
    out: dict[tuple[str, str], Smoothed] = {}
    previous = state.smoothed if state else {}
    for key, m in inputs.metrics.items():
        before = previous.get(key)
        # The queue gauge is an instant sample, the noisiest input: plain EWMA both ways.  A
        # measured p99 over the bound is a fact, not noise: it rises at once.
        queue = m.queue_depth if before is None else before.queue_depth + alpha * (m.queue_depth - before.queue_depth)
        p99 = m.p99_ms
        if p99 is not None and before is not None and before.p99_ms is not None:
            p99 = fast_up_slow_down(before.p99_ms, p99, alpha)
        out[key] = Smoothed(queue, p99)
    return out


def _demand(inputs: PolicyInputs, state: PolicyState | None, now_s: float, tiers: tuple[str, ...]
            ) -> tuple[dict[RouteKey, float], dict[RouteKey, tuple[tuple[float, float], ...]]]:
    """Demand per route: the highest raw rate over the last ``demand_window_s`` (and its history)."""
    observed: dict[str, float] = {}
    for (_pool, model), m in inputs.metrics.items():
        observed[model] = observed.get(model, 0.0) + m.request_rate_per_s
    given = inputs.demand_per_s or {}
    history = state.demand_history if state else {}
    oldest = now_s - inputs.settings.demand_window_s
    out: dict[RouteKey, float] = {}
    kept: dict[RouteKey, tuple[tuple[float, float], ...]] = {}
    for model in inputs.fleet.models:
        for tier in tiers:
            key = (model, tier)
            raw = given[key] if key in given else observed.get(model, 0.0) / len(tiers)
            samples = tuple(s for s in history.get(key, ()) if s[0] > oldest) + ((now_s, raw),)
            kept[key] = samples
            out[key] = max(v for _, v in samples)
    return out, kept


def _assess(pool: PoolSpec, model: str, tier: str, inputs: PolicyInputs, table: CapacityTable,
            smoothed: dict[tuple[str, str], Smoothed], used_u: dict[str, float], was_feasible: bool | None
            ) -> _Candidate:
    """Filter stage: is this pool healthy, and is it predicted to meet the tier's bound?"""
    settings = inputs.settings
    ready = inputs.pool_ready.get(pool.name, inputs.metrics.ready_replicas.get(pool.name, pool.replicas))
    if ready <= 0:
        return _Candidate(pool, 0, True, "unhealthy: 0 ready replicas")
    metrics = inputs.metrics.get((pool.name, model))
    if metrics is not None and not metrics.ready:
        return _Candidate(pool, ready, True, f"unhealthy: {model} not ready on this pool")
    if metrics is not None and metrics.error_rate > settings.max_error_rate:
        return _Candidate(pool, ready, True, f"unhealthy: error rate {metrics.error_rate:.0%}")
    profile = inputs.fleet.profiles.get((model, pool.accelerator))
    capacity = table.by_key.get((model, pool.accelerator, tier))
    if profile is None or capacity is None:
        return _Candidate(pool, ready, True, f"no {pool.accelerator.value} profile for {model}")
    throughput = capacity.full_batch_throughput_per_s * ready
    cost = (pool.price_per_hour_usd / (3600.0 * capacity.safe_throughput_per_s) * 1e6
            if capacity.safe_throughput_per_s > 0 else math.inf)
    signals = smoothed.get((pool.name, model))
    backlog = backlog_ms(profile, signals.queue_depth, ready) if signals else 0.0
    u = used_u.get(pool.name, 0.0)
    predicted = predicted_p99_ms(profile, u, backlog)
    cand = _Candidate(pool, ready, False, "", throughput, capacity.safe_utilisation, cost, predicted)
    bound = table.tier_bound_ms[tier]
    if bound is None:
        return cand
    # Hysteresis: a feasible pool keeps its place up to (1 + h) x the threshold, an excluded one
    # returns only under (1 - h) x; with no history (first decision) the threshold itself.
    slack = 1.0 if was_feasible is None else (1.0 + settings.hysteresis if was_feasible else 1.0 - settings.hysteresis)
    threshold = settings.headroom * bound * slack
    if predicted > threshold or capacity.safe_utilisation <= 0:
        cand.excluded = True
        cand.reason = f"predicted p99 {predicted:.1f} ms > {threshold:.1f} ms (bound {bound:g} ms x headroom)"
    elif settings.use_observed_p99 and signals and signals.p99_ms is not None and signals.p99_ms > bound * slack:
        cand.excluded = True
        cand.reason = f"measured p99 {signals.p99_ms:.1f} ms > bound {bound:g} ms"
    return cand


def _room(c: _Candidate, used_u: dict[str, float], cap_u: dict[str, float]) -> float:
    limit = min(cap_u.get(c.pool.name, 1.0), c.safe_u)
    return max(0.0, limit - used_u.get(c.pool.name, 0.0)) * c.throughput


def _fill(order: list[_Candidate], demand: float, used_u: dict[str, float], cap_u: dict[str, float],
          fallback: bool) -> None:
    """Pick stage: cheapest first up to its room, spill in order, spread any overflow by capacity."""
    remaining = demand
    for c in order:
        take = min(remaining, _room(c, used_u, cap_u))
        c.take, remaining = take, remaining - take
        c.reason = (f"fallback: no pool meets the bound; takes {take:.0f} req/s" if fallback
                    else f"cost ${c.cost_per_million:.2f}/1M, predicted p99 {c.predicted_ms:.1f} ms; "
                         f"takes {take:.0f} req/s")
    if remaining > 1e-9:
        total = sum(c.throughput for c in order) or 1.0
        for c in order:
            extra = remaining * c.throughput / total
            c.take += extra
            c.reason += f" +{extra:.0f} over safe capacity"
    for c in order:
        if c.take > 0 and c.throughput > 0:
            used_u[c.pool.name] = used_u.get(c.pool.name, 0.0) + c.take / c.throughput
            cap_u[c.pool.name] = min(cap_u.get(c.pool.name, 1.0), c.safe_u)


def _fallback_order(cands: list[_Candidate], table: CapacityTable) -> list[_Candidate]:
    def key(c: _Candidate) -> tuple[int, float, str]:
        rank = table.fallback_rank.get(c.pool.accelerator, len(table.fallback_rank))
        return rank, c.pool.price_per_hour_usd, c.pool.name
    return sorted(cands, key=key)


def decide(inputs: PolicyInputs, state: PolicyState | None, now_s: float) -> tuple[RoutingDecision, PolicyState]:
    """One routing decision.  See the module docstring for the stages and formulas."""
    settings = inputs.settings
    fleet = inputs.fleet
    key = (id(fleet), id(settings))
    table = state.capacity if state is not None and state.capacity_key == key else None
    if not isinstance(table, CapacityTable):
        table = build_capacity_table(fleet, settings)
    alpha = smoothing_alpha(now_s - state.time_s, settings.smoothing_tau_s) if state else 1.0
    smoothed = _smooth_signals(inputs, state, alpha)
    demand, demand_history = _demand(inputs, state, now_s, table.tiers_strictest_first)
    previous_feasible = state.feasible if state else frozenset()
    previous_weights = state.weights if state else {}
    pools_by_model = {m: [p for p in fleet.pools if m in p.models] for m in fleet.models}
    used_u: dict[str, float] = {}
    cap_u: dict[str, float] = {}
    routes: dict[RouteKey, tuple[PoolWeight, ...]] = {}
    unroutable: dict[RouteKey, str] = {}
    weights_out: dict[RouteKey, dict[str, int]] = {}
    feasible: set[tuple[str, str, str]] = set()
    for tier in table.tiers_strictest_first:
        for model in fleet.models:
            route = (model, tier)
            pools = pools_by_model.get(model, [])
            if not pools:
                unroutable[route] = f"no pool serves {model}"
                continue
            cands = [_assess(p, model, tier, inputs, table, smoothed, used_u,
                             None if state is None else (model, tier, p.name) in previous_feasible) for p in pools]
            ok = [c for c in cands if not c.excluded]
            feasible.update((model, tier, c.pool.name) for c in ok)
            d = max(demand.get(route, 0.0), _TINY_DEMAND)
            if ok:
                order = sorted(ok, key=lambda c: (c.cost_per_million, table.fallback_rank.get(c.pool.accelerator, 99),
                                                  c.pool.name))
                _fill(order, d, used_u, cap_u, fallback=False)
            else:
                ready = [c for c in cands if c.ready > 0 and c.throughput > 0] or \
                        [c for c in cands if c.ready > 0]
                order = _fallback_order(ready or cands, table)
                for c in order:  # fallback pools run up to max utilisation, whatever the tier
                    c.safe_u = settings.max_utilisation
                    c.excluded = False
                _fill(order, d, used_u, cap_u, fallback=True)
                if not ready:
                    order[0].reason = "no ready pool: first in fallback order (Envoy priorities back it)"
                    order[0].take = d
            target_by_pool = dict(zip([c.pool.name for c in order],
                                      largest_remainder([c.take for c in order], settings.total_weight), strict=True))
            names = [c.pool.name for c in cands]
            target = [target_by_pool.get(n, 0) for n in names]
            prev = previous_weights.get(route)
            if prev is None or set(prev) != set(names):
                final = target
            else:
                final = bounded_step([prev[n] for n in names], target, [c.excluded for c in cands], settings)
            weights_out[route] = dict(zip(names, final, strict=True))
            routes[route] = tuple(PoolWeight(c.pool.name, w, c.reason if w or c.excluded or c.take
                                             else c.reason or "not needed: cheaper pools have room")
                                  for c, w in zip(cands, final, strict=True))
    decision = RoutingDecision(routes, unroutable, now_s)
    new_state = PolicyState(now_s, smoothed, demand, demand_history, weights_out, frozenset(feasible), table, key)
    return decision, new_state


def accelerator_rank(order: tuple[Accelerator, ...], accelerator: Accelerator) -> int:
    """Position of ``accelerator`` in a fallback order (unknown kinds last)."""
    return order.index(accelerator) if accelerator in order else len(order)
