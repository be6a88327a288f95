"""Filters: which candidate pools may carry a route now, and why the others may not.

Three filters, each declaring the ``PoolModelMetrics`` fields it reads (``consumes``):

* :class:`HealthFilter`: the pool cannot serve the model at all now (0 ready replicas, model not
  ready, error rate over ``max_error_rate``).  Per (pool, model), once per decision, every tier.
* :class:`SlaFilter`: the pool would break the tier's latency bound: predicted latency at the
  utilisation already planned on it this tick over ``headroom x bound``, or measured p99 over the
  bound (hysteresis on both).  Per (pool, model, tier), when the picker reaches the pool.
* :class:`TierIsolation`: a tier rule, and a soft filter: a looser tier keeps pools that carry a
  stricter tier's traffic only as a second choice, after every pool that carries none.

A hard filter returns the :class:`Reason` it excludes a candidate for, or None.  They are applied
lazily, in score order, by the picker (``router_lib.policy_picker``): the SLA filter depends on the
utilisation the picker has already planned, and a pool the picker never reaches (cheaper pools
took the demand) is never assessed, which is most of what keeps a decision under a millisecond.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from router_lib.latency_model import drain_time_ms, predicted_latency_ms
from router_lib.metrics import FleetMetrics
from router_lib.policy_candidates import RouteCandidate
from router_lib.policy_types import UNHEALTHY_NO_REPLICA, PolicySettings, Smoothed
from router_lib.routes import PoolModel, Reason, ReasonKind

__all__ = ["FILTERS", "HealthFilter", "SlaFilter", "TierIsolation"]


class HealthFilter:
    """Excludes a (pool, model) that cannot serve now, for every tier, with no smoothing.

    0 ready replicas (``ready`` per pool, from discovery), the model not ready on the pool
    (``PoolModelMetrics.ready``), or an error rate over ``max_error_rate``
    (``PoolModelMetrics.error_rate``).  A breach acts at once: sending requests to a pool that
    fails them costs more than any smoothing saves.
    """

    name: ClassVar[str] = "health"
    consumes: ClassVar[frozenset[str]] = frozenset({"ready", "error_rate"})

    def __init__(self, max_error_rate: float) -> None:
        self.max_error_rate = max_error_rate

    def unhealthy(self, pool_models: Mapping[str, Sequence[PoolModel]], metrics: FleetMetrics,
                  ready: Mapping[str, int]) -> dict[PoolModel, Reason]:
        """(pool, model) -> why it is excluded; ``pool_models``: pool -> the models it serves."""
        out: dict[PoolModel, Reason] = {}
        for pool, keys in pool_models.items():
            if ready[pool] <= 0:
                for key in keys:
                    out[key] = UNHEALTHY_NO_REPLICA
        limit = self.max_error_rate
        for (pool, model), m in metrics.by_pool_model.items():
            if (pool, model) in out:
                continue
            if not m.ready:
                out[PoolModel(pool, model)] = Reason(ReasonKind.MODEL_NOT_READY, f"unhealthy: {m.model} not ready on this pool")
            elif m.error_rate > limit:
                out[PoolModel(pool, model)] = Reason(ReasonKind.ERROR_RATE, f"unhealthy: error rate {100 * m.error_rate:.0f}%")
        return out


class SlaFilter:
    """Excludes a pool from a tier with a bound when it would break the bound.

    Predicted latency (``latency_model.predicted_latency_ms`` at the tier's compliance quantile,
    at ``u``, the pool's utilisation already planned this tick) plus the time to drain its queue
    (``drain_time_ms`` of the smoothed ``queue_depth``) plus, on an emulated pool whose host is
    slower than its profile, ``tail x lag x (1 + queued executions)`` (``emulation_lag_ms``):
    over ``headroom x bound`` -> excluded.  Measured p99 (``p99_ms``, Envoy) over the bound ->
    excluded, when ``use_observed_p99`` (the profile may be wrong; measurement wins).

    Hysteresis: a pool feasible last time keeps its place up to ``(1 + h)`` x the threshold, an
    excluded one returns only under ``(1 - h)`` x; with no history, the threshold itself.
    The signals are the smoothed ones (``router_lib.policy_signals``).
    """

    name: ClassVar[str] = "sla_feasibility"
    consumes: ClassVar[frozenset[str]] = frozenset({"queue_depth", "p99_ms", "emulation_lag_ms"})

    __slots__ = ("headroom", "slack_feasible", "slack_excluded", "use_measured", "smoothed", "ready")

    def __init__(self, settings: PolicySettings, smoothed: Mapping[PoolModel, Smoothed],
                 ready: Sequence[int]) -> None:
        """``ready``: ready replicas per pool, indexed like ``Fleet.pools``."""
        self.headroom = settings.headroom
        self.slack_feasible, self.slack_excluded = 1.0 + settings.hysteresis, 1.0 - settings.hysteresis
        self.use_measured = settings.use_observed_p99
        self.smoothed = smoothed
        self.ready = ready

    def check(self, c: RouteCandidate, bound_ms: float | None, utilisation: float,
              was_feasible: bool | None) -> tuple[float, Reason | None]:
        """(predicted latency ms, why ``c`` breaks the bound or None).  Bronze (no bound): never."""
        e = c.on_pool
        signals = self.smoothed.get(c.pool_model)
        if signals is None:
            predicted = predicted_latency_ms(c.tail_latency_ms, e.batch_thresholds, utilisation, 0.0)
            measured_p99 = None
        else:
            queue, measured_p99, lag, _ = signals
            ready = self.ready[c.pool_index]
            backlog = drain_time_ms(queue, ready, e.throughput_per_replica)
            predicted = predicted_latency_ms(c.tail_latency_ms, e.batch_thresholds, utilisation, backlog)
            if lag > 0.0:
                # An emulated pool whose host cannot keep up with its profile: every execution a
                # request waits for (its own and the queued ones ahead of it) finishes lag_ms late.
                queued_executions = queue / (ready * e.instances * e.max_batch)
                predicted += c.tail * lag * (1.0 + queued_executions)
        if bound_ms is None:
            return predicted, None
        slack = 1.0 if was_feasible is None else (self.slack_feasible if was_feasible else self.slack_excluded)
        threshold = self.headroom * bound_ms * slack
        if predicted > threshold or c.safe_utilisation <= 0:
            return predicted, Reason(ReasonKind.PREDICTED_OVER_BOUND,
                                     f"predicted {predicted:.1f} ms > {threshold:.1f} ms (bound {bound_ms:g} ms x headroom)")
        if measured_p99 is not None and self.use_measured and measured_p99 > bound_ms * slack:
            return predicted, Reason(ReasonKind.MEASURED_OVER_BOUND,
                                     f"measured p99 {measured_p99:.1f} ms > bound {bound_ms:g} ms")
        return predicted, None


class TierIsolation:
    """A looser tier tries the pools that carry no stricter tier's traffic first.

    ``protected``: pools already carrying a stricter tier this tick.  They stay candidates, after
    the others (each group in score order): excluding them outright would leave a burst unplaced
    when the other pools are full, and sharing a pool is better than dropping requests.  The
    picker also spreads a looser tier's excess over unprotected pools only, when there are any.
    """

    name: ClassVar[str] = "tier_isolation"
    consumes: ClassVar[frozenset[str]] = frozenset()

    @staticmethod
    def order(candidates: Sequence[RouteCandidate], protected: frozenset[str]) -> Sequence[RouteCandidate]:
        if not protected:
            return candidates
        first = [c for c in candidates if c.name not in protected]
        if not first or len(first) == len(candidates):
            return candidates
        return first + [c for c in candidates if c.name in protected]


FILTERS = (HealthFilter, SlaFilter, TierIsolation)
