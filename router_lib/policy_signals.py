"""What the policy makes of the live metrics before filtering: smoothed signals per (pool, model)
and the demand per route.

Both trade in the same direction on purpose: a rise (a queue, a breach, a burst) is acted on at
once, a fall only gradually.  Acting late on a rise costs SLA; acting late on a fall only costs a
little money for a few seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from router_lib.policy_types import PolicyInputs, PolicyState, Smoothed
from router_lib.routes import PoolModel, RouteKey


def smooth_signals(inputs: PolicyInputs, state: PolicyState | None, alpha: float, now_s: float,
                   keys: Mapping[tuple[str, str], PoolModel]) -> dict[PoolModel, Smoothed]:
    """Queue depth: plain EWMA (an instant gauge, the noisiest input).  Measured p99 and emulation
    lag: rise at once (a breach is a fact), fall by EWMA; when the window has no measurement (the
    pool got no traffic) the last one holds for ``measured_hold_s``, then is forgotten.

    ``keys`` interns the (pool, model) keys of the fleet (any other gets a new :class:`PoolModel`).
    These are the fields :class:`~router_lib.policy_filters.SlaFilter` declares it consumes.
    """
    out: dict[PoolModel, Smoothed] = {}
    previous = state.smoothed if state else {}
    hold = inputs.settings.measured_hold_s
    # tuple.__new__ builds a Smoothed without the named tuple's Python-level __new__, which was
    # half the cost of smoothing 100 signals a tick
    new = tuple.__new__
    for raw_key, m in inputs.metrics.by_pool_model.items():
        key = keys.get(raw_key) or PoolModel(*raw_key)
        before = previous.get(key)
        measured = m.p99_ms is not None or m.emulation_lag_ms is not None
        if before is None:
            out[key] = new(Smoothed, (m.queue_depth, m.p99_ms, m.emulation_lag_ms or 0.0, now_s if measured else 0.0))
            continue
        queue_before, p99_before, lag_before, seen_before = before
        queue = queue_before + alpha * (m.queue_depth - queue_before)
        held = now_s - seen_before <= hold
        p99 = m.p99_ms
        if p99 is None:
            p99 = p99_before if held else None
        elif p99_before is not None and p99 < p99_before:
            p99 = p99_before + alpha * (p99 - p99_before)
        lag = m.emulation_lag_ms
        if lag is None:
            lag = lag_before if held else 0.0
        elif lag < lag_before:
            lag = lag_before + alpha * (lag - lag_before)
        out[key] = new(Smoothed, (queue, p99, lag, now_s if measured else seen_before))
    if previous.keys() - out.keys():  # no sample at all this tick: a measurement still holds
        for key, before in previous.items():
            if key not in out and now_s - before.seen_s <= hold and (before.p99_ms is not None or before.lag_ms):
                out[key] = Smoothed(0.0, before.p99_ms, before.lag_ms, before.seen_s)
    return out


class DemandEstimate:
    """Demand per route: the highest raw rate over the last ``demand_window_s``.

    The raw rate is ``PolicyInputs.demand_per_s`` when given.  Without per-route figures, each
    model's observed rate (``PoolModelMetrics.request_rate_per_s`` summed over pools) is split over
    the tiers by their shares of all traffic (``FleetMetrics.tier_rate_per_s``: Envoy's per-tier
    virtual clusters), evenly when those are unknown.
    """

    name: ClassVar[str] = "demand"
    consumes: ClassVar[frozenset[str]] = frozenset({"request_rate_per_s"})

    @staticmethod
    def estimate(inputs: PolicyInputs, state: PolicyState | None, now_s: float,
                 routes_by_tier: Mapping[str, tuple[RouteKey, ...]]
                 ) -> tuple[dict[RouteKey, float], dict[RouteKey, tuple[tuple[float, float], ...]]]:
        """-> (demand per route, the history to keep).  The history is a decreasing sequence of
        (time, rate) (a sample followed by a higher one can never be the maximum again), so it
        stays a few entries long."""
        given = inputs.demand_per_s
        observed: dict[str, float] = {}
        tiers = tuple(routes_by_tier)
        share = {t: 1.0 / len(tiers) for t in tiers}
        if given is None:
            for (_pool, model), m in inputs.metrics.by_pool_model.items():
                observed[model] = observed.get(model, 0.0) + m.request_rate_per_s
            by_tier = {t: inputs.metrics.tier_rate_per_s.get(t, 0.0) for t in tiers}
            if sum(by_tier.values()) > 0:
                share = {t: r / sum(by_tier.values()) for t, r in by_tier.items()}
        history = state.demand_history if state else {}
        oldest = now_s - inputs.settings.demand_window_s
        out: dict[RouteKey, float] = {}
        kept: dict[RouteKey, tuple[tuple[float, float], ...]] = {}
        for tier, routes in routes_by_tier.items():
            for key in routes:
                raw = given.get(key, 0.0) if given is not None else observed.get(key.model, 0.0) * share[tier]
                samples = [s for s in history.get(key, ()) if s[0] > oldest and s[1] > raw]
                samples.append((now_s, raw))
                kept[key] = tuple(samples)
                out[key] = samples[0][1]
        return out, kept
