"""SLA compliance: the share of a tier's requests answered within its bound, and percentiles.

The one decision here: a failed request is *not* within the bound, whatever its latency (a user
who got an error did not get an answer in 50 ms), and it counts in the denominator.  Percentiles
are over successful requests only (an error's latency says nothing about serving time) and use
the nearest-rank method, so p99 is a latency some request really had.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def nearest_rank(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0 < q <= 1) by nearest rank: the smallest value with at least
    ``q x n`` values at or below it.  NaN for an empty list."""
    if not sorted_values:
        return math.nan
    if not 0 < q <= 1:
        raise ValueError(f"q must be in (0, 1], got {q}")
    rank = max(1, math.ceil(q * len(sorted_values) - 1e-9))
    return float(sorted_values[rank - 1])


def compliance(latencies_ms: Sequence[float], ok: Sequence[bool], bound_ms: float | None) -> float | None:
    """Share of requests that succeeded within ``bound_ms`` (None: best effort, no bound).
    An empty run complies vacuously (1.0) only when there is a bound to comply with."""
    if bound_ms is None:
        return None
    if len(latencies_ms) != len(ok):
        raise ValueError("latencies_ms and ok must have the same length")
    if not latencies_ms:
        return 1.0
    within = sum(1 for lat, good in zip(latencies_ms, ok, strict=True) if good and lat <= bound_ms)
    return within / len(latencies_ms)


@dataclass(frozen=True)
class TierSummary:
    """What the report says about one tier.  ``compliance`` None = best effort."""

    tier: str
    bound_ms: float | None
    target: float | None
    requests: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    over_bound: int
    compliance: float | None

    @property
    def met(self) -> bool:
        """True when the tier has no target, or its compliance reaches it."""
        if self.target is None or self.compliance is None:
            return True
        return self.compliance >= self.target - 1e-12


def summarise_tier(tier: str, latencies_ms: Sequence[float], ok: Sequence[bool], bound_ms: float | None,
                   target: float | None) -> TierSummary:
    good = sorted(lat for lat, g in zip(latencies_ms, ok, strict=True) if g)
    errors = len(ok) - len(good)
    over = sum(1 for lat in good if bound_ms is not None and lat > bound_ms)
    return TierSummary(
        tier=tier, bound_ms=bound_ms, target=target, requests=len(latencies_ms), errors=errors,
        p50_ms=nearest_rank(good, 0.50), p95_ms=nearest_rank(good, 0.95), p99_ms=nearest_rank(good, 0.99),
        max_ms=good[-1] if good else math.nan, over_bound=over,
        compliance=compliance(latencies_ms, ok, bound_ms),
    )
