"""Pure arithmetic over measurements: percentiles, Triton statistics deltas, the highest load that
keeps each tier's p99 bound, dollars per million inferences, and the profile's numbers.

Conventions: a *request* is one gRPC ModelInfer call carrying ``batch_size`` items; an *inference*
is one item (a sentence, an image).  The router counts inferences, so capacities and prices here
are per inference; request rates are kept beside them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from router_lib.domain import TierSet


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in [0, 100]) of an ascending sequence (numpy's default)."""
    if not sorted_values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass(frozen=True)
class ServerTimes:
    """Triton's own view of one model over a measurement window (statistics API deltas).
    Per-request averages in ms; ``avg_execution_batch`` is inferences per execution (dynamic
    batching merges requests when it is above the request batch size)."""

    requests: int
    queue_ms: float
    compute_ms: float
    compute_infer_ms: float
    executions: int
    inferences: int

    @property
    def avg_execution_batch(self) -> float:
        return self.inferences / self.executions if self.executions else 0.0


def _ns(stats: Mapping[str, Any], key: str) -> tuple[int, int]:
    part = stats.get("inference_stats", {}).get(key, {})
    return int(part.get("count", 0)), int(part.get("ns", 0))


def server_times(before: Mapping[str, Any], after: Mapping[str, Any]) -> ServerTimes:
    """Delta of two ``model_stats`` entries (tritonclient ``get_inference_statistics(as_json=True)``)."""
    n = _ns(after, "success")[0] - _ns(before, "success")[0]

    def per_request_ms(key: str) -> float:
        return (_ns(after, key)[1] - _ns(before, key)[1]) / max(n, 1) / 1e6

    return ServerTimes(
        requests=n,
        queue_ms=per_request_ms("queue"),
        compute_ms=sum(per_request_ms(k) for k in ("compute_input", "compute_infer", "compute_output")),
        compute_infer_ms=per_request_ms("compute_infer"),
        executions=int(after.get("execution_count", 0)) - int(before.get("execution_count", 0)),
        inferences=int(after.get("inference_count", 0)) - int(before.get("inference_count", 0)),
    )


@dataclass(frozen=True)
class Point:
    """One (batch size, concurrency) setting measured from the client, with Triton's view."""

    batch_size: int
    concurrency: int
    measure_s: float
    requests: int
    errors: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    server: Mapping[str, ServerTimes]

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.measure_s

    @property
    def inferences_per_s(self) -> float:
        return self.requests * self.batch_size / self.measure_s


def summarise(batch_size: int, concurrency: int, measure_s: float, latencies_ms: Sequence[float], errors: int,
              server: Mapping[str, ServerTimes]) -> Point:
    lat = sorted(latencies_ms)
    return Point(batch_size, concurrency, measure_s, len(lat), errors,
                 percentile(lat, 50), percentile(lat, 90), percentile(lat, 95), percentile(lat, 99),
                 sum(lat) / len(lat) if lat else math.nan, server)


def usd_per_million(price_per_hour_usd: float, per_s: float) -> float:
    """Dollars per million at a sustained ``per_s`` on one instance costing ``price_per_hour_usd``."""
    if per_s <= 0:
        return math.inf
    return price_per_hour_usd / (per_s * 3600.0) * 1e6


@dataclass(frozen=True)
class TierCapacity:
    """The highest measured load on one replica whose p99 stays within the tier's bound."""

    tier: str
    p99_bound_ms: float | None
    point: Point | None  # None: no measured setting meets the bound
    usd_per_million_inferences: float

    @property
    def inferences_per_s(self) -> float:
        return self.point.inferences_per_s if self.point else 0.0


def capacity_by_tier(points: Sequence[Point], tiers: TierSet, price_per_hour_usd: float) -> list[TierCapacity]:
    """For each tier, the point with the most inferences/s among those with p99 <= bound (bronze:
    among all).  Points with errors never qualify: a load that fails requests is not capacity."""
    out = []
    clean = [p for p in points if p.errors == 0 and p.requests > 0]
    for name, tier in tiers.tiers.items():
        ok = [p for p in clean if tier.p99_ms is None or p.p99_ms <= tier.p99_ms]
        best = max(ok, key=lambda p: p.inferences_per_s, default=None)
        cost = usd_per_million(price_per_hour_usd, best.inferences_per_s) if best else math.inf
        out.append(TierCapacity(name, tier.p99_ms, best, cost))
    return out


def latency_table_ms(points: Sequence[Point]) -> dict[int, float]:
    """``latency_ms_by_batch`` for the profile: client p50 at concurrency 1 for each batch size.

    At concurrency 1 each request is exactly one execution of its batch (no queue, nothing to merge
    with), so its p50 is the profile's "p50 of one execution" as a client sees it: the execution
    plus the loopback gRPC hop (and, for an ensemble, every step).  Measuring it at the client is
    the conservative choice for a router that predicts client-side p99 from it.
    """
    table = {p.batch_size: round(p.p50_ms, 3) for p in points if p.concurrency == 1 and p.requests > 0}
    if not table:
        raise ValueError("no concurrency-1 measurement: the latency table needs one per batch size")
    return dict(sorted(table.items()))


def tail_ratio(points: Sequence[Point]) -> float:
    """``p99_over_p50`` for the profile: the largest p99/p50 among the concurrency-1 points (the tail
    of a single execution, without queueing; the largest, so the router errs on the safe side)."""
    ratios = [p.p99_ms / p.p50_ms for p in points if p.concurrency == 1 and p.requests > 0 and p.p50_ms > 0]
    if not ratios:
        raise ValueError("no concurrency-1 measurement to take the tail ratio from")
    return round(max(1.0, max(ratios)), 3)
