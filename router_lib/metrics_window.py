"""Window arithmetic: rates and quantiles from two cumulative samples, counter resets handled.

Prometheus counters and histogram buckets only grow, except when the process restarts.  As in
PromQL's ``rate()``, a decrease means a reset: the new value is then the whole delta (the
process counted it since it started).  A histogram is reset as a whole when its total count
(``+Inf`` bucket) decreased.

Quantiles follow PromQL's ``histogram_quantile``: find the bucket holding rank ``q * total`` and
interpolate linearly inside it; a rank in the ``+Inf`` bucket returns the highest finite bound
(a lower bound on the true value: size the buckets past the SLA bound so this does not matter).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from router_lib.metrics import FleetMetrics, PoolModelMetrics
from router_lib.metrics_text import EnvoyClusterSample, EnvoySample, TritonSample

Buckets = tuple[tuple[float, float], ...]


def counter_delta(previous: float | None, current: float) -> float:
    """Increase of a counter between two samples; a decrease is a reset (delta = current)."""
    if previous is None:
        return 0.0
    return current - previous if current >= previous else current


def bucket_delta(previous: Buckets, current: Buckets) -> Buckets:
    """Per-bucket increase of a cumulative histogram; the whole histogram reset if its count fell."""
    if not previous:
        return current
    prev_total = previous[-1][1]
    cur_total = current[-1][1] if current else 0.0
    if cur_total < prev_total:
        return current
    prev = dict(previous)
    return tuple((le, max(0.0, count - prev.get(le, 0.0))) for le, count in current)


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """The q-quantile of a cumulative histogram (bounds in the histogram's unit); None if empty."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for upper_bound, count in buckets:
        if count >= rank and count > lower_count:
            if math.isinf(upper_bound):
                return lower_bound
            return lower_bound + (upper_bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        if not math.isinf(upper_bound):
            lower_bound = upper_bound
        lower_count = max(lower_count, count)
    return lower_bound


@dataclass(frozen=True)
class ScrapeSnapshot:
    """Everything scraped at one instant.

    ``triton``: pool -> replica url -> sample, or None when that replica could not be scraped.
    ``envoy``: None when Envoy was not scraped (or could not be).
    """

    timestamp_s: float
    triton: Mapping[str, Mapping[str, TritonSample | None]] = field(default_factory=dict)
    envoy: EnvoySample | None = None


def _triton_delta(prev: ScrapeSnapshot | None, cur: ScrapeSnapshot, pool: str, model: str,
                  counter: str) -> float:
    total = 0.0
    prev_pool = prev.triton.get(pool, {}) if prev else {}
    for url, sample in cur.triton.get(pool, {}).items():
        before = prev_pool.get(url)
        if sample is None or before is None:
            continue  # a replica needs two good scrapes to contribute a delta
        now_value = sample.counters.get((model, counter))
        if now_value is None:
            continue
        total += counter_delta(before.counters.get((model, counter), 0.0), now_value)
    return total


def _envoy_window(prev: ScrapeSnapshot | None, cur: EnvoyClusterSample, key: tuple[str, str]
                  ) -> tuple[float, float, Buckets]:
    before = prev.envoy.clusters.get(key) if prev and prev.envoy else None
    if before is None:
        return 0.0, 0.0, ()
    return (counter_delta(before.rq_total, cur.rq_total), counter_delta(before.rq_5xx, cur.rq_5xx),
            bucket_delta(before.buckets, cur.buckets))


def fleet_metrics(prev: ScrapeSnapshot | None, cur: ScrapeSnapshot,
                  expected: Sequence[tuple[str, str]] = ()) -> FleetMetrics:
    """Combine two snapshots into :class:`FleetMetrics` over the window between them.

    ``expected`` (pool, model) pairs always appear in the result (not ready when no replica
    reported the model), so a pool that stopped answering is seen as down, not as missing.
    """
    window = max(0.0, cur.timestamp_s - prev.timestamp_s) if prev else 0.0
    ready_replicas = {pool: sum(1 for s in replicas.values() if s is not None)
                      for pool, replicas in cur.triton.items()}
    keys: set[tuple[str, str]] = set(expected)
    for pool, replicas in cur.triton.items():
        for sample in replicas.values():
            if sample is not None:
                keys.update((pool, m) for m in sample.models)
    if cur.envoy:
        keys.update((pool, model) for model, pool in cur.envoy.clusters)
    out: dict[tuple[str, str], PoolModelMetrics] = {}
    for pool, model in keys:
        samples = [s for s in cur.triton.get(pool, {}).values() if s is not None]
        scraped = pool in cur.triton
        ready = any(model in s.models for s in samples) if scraped else True
        queue = sum(s.pending.get(model, 0.0) for s in samples)
        ok = _triton_delta(prev, cur, pool, model, "nv_inference_request_success")
        failed = _triton_delta(prev, cur, pool, model, "nv_inference_request_failure")
        rate = (ok + failed) / window if window > 0 else 0.0
        error_rate = failed / (ok + failed) if ok + failed > 0 else 0.0
        p95 = p99 = None
        envoy = cur.envoy.clusters.get((model, pool)) if cur.envoy else None
        if envoy is not None:
            total, errors, buckets = _envoy_window(prev, envoy, (model, pool))
            rate = total / window if window > 0 else 0.0
            error_rate = min(1.0, errors / total) if total > 0 else 0.0
            p95 = histogram_quantile(0.95, buckets)
            p99 = histogram_quantile(0.99, buckets)
        executions = _triton_delta(prev, cur, pool, model, "emulation_executions_total")
        lag = _triton_delta(prev, cur, pool, model, "emulation_lag_ms_total")
        out[(pool, model)] = PoolModelMetrics(
            pool=pool, model=model, queue_depth=queue, request_rate_per_s=rate, p95_ms=p95, p99_ms=p99,
            error_rate=error_rate, ready=ready, emulation_lag_ms=lag / executions if executions > 0 else None,
            window_s=window,
        )
    tier_rates: dict[str, float] = {}
    if cur.envoy and prev and prev.envoy and window > 0:
        for tier, count in cur.envoy.tiers.items():
            if tier in prev.envoy.tiers:
                tier_rates[tier] = counter_delta(prev.envoy.tiers[tier], count) / window
    return FleetMetrics(out, cur.timestamp_s, ready_replicas, tier_rates)
