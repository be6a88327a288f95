"""Small pieces the policy is built from: signal smoothing, the capacity table (the scorer's
input), integer weights from shares, and the bounded weight step.  Each is a pure function.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from router_lib.domain import Accelerator, Fleet
from router_lib.latency_model import TierCapacity, full_batch_throughput_per_s, safe_utilisation
from router_lib.policy_types import PolicySettings


def smoothing_alpha(dt_s: float, tau_s: float) -> float:
    """EWMA weight of a new sample after ``dt_s``: ``1 - exp(-dt / tau)`` (1 on the first tick)."""
    if dt_s <= 0 or tau_s <= 0:
        return 1.0 if tau_s <= 0 else 0.0
    return 1.0 - math.exp(-dt_s / tau_s)


def fast_up_slow_down(previous: float | None, new: float, alpha: float) -> float:
    """Rise at once, decay by EWMA: a burst or a queue is acted on now, noise settles high.

    Acting late on a rise costs SLA; acting late on a fall only costs a little money for
    ``tau``, which is the trade this policy makes on purpose.
    """
    if previous is None or new >= previous:
        return new
    return previous + alpha * (new - previous)


@dataclass(frozen=True)
class CapacityTable:
    """Per (model, accelerator, tier): the per-replica :class:`TierCapacity`.  Built once per
    (fleet, settings) and carried in the policy state, because the safe-utilisation scan is the
    only costly formula and depends on neither metrics nor time."""

    by_key: Mapping[tuple[str, Accelerator, str], TierCapacity]
    tier_bound_ms: Mapping[str, float | None]
    tiers_strictest_first: tuple[str, ...]
    fallback_rank: Mapping[Accelerator, int]


def build_capacity_table(fleet: Fleet, settings: PolicySettings) -> CapacityTable:
    by_key: dict[tuple[str, Accelerator, str], TierCapacity] = {}
    bounds = {name: tier.p99_ms for name, tier in fleet.tiers.tiers.items()}
    for (model, acc), profile in fleet.profiles.items():
        x = full_batch_throughput_per_s(profile)
        price = fleet.prices.price_per_hour_usd.get(profile.instance_type, math.inf)
        for tier, bound in bounds.items():
            u = safe_utilisation(profile, bound, settings.headroom, settings.max_utilisation)
            by_key[(model, acc, tier)] = TierCapacity(u, x, price)
    order = sorted(bounds, key=lambda t: (bounds[t] is None, bounds[t] or 0.0, t))
    rank = {acc: i for i, acc in enumerate(fleet.tiers.fallback_order)}
    return CapacityTable(by_key, bounds, tuple(order), rank)


def largest_remainder(shares: Sequence[float], total: int) -> list[int]:
    """Integers >= 0 summing to ``total``, proportional to ``shares`` (Hamilton's method).

    Ties in the remainders go to the earlier index (the caller orders pools by preference).
    All-zero shares give everything to index 0.
    """
    if not shares:
        return []
    s = sum(max(0.0, x) for x in shares)
    if s <= 0:
        return [total] + [0] * (len(shares) - 1)
    exact = [max(0.0, x) * total / s for x in shares]
    floors = [int(math.floor(e + 1e-9)) for e in exact]
    missing = total - sum(floors)
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - floors[i]), i))
    for i in order[:missing]:
        floors[i] += 1
    return floors


def bounded_step(previous: Sequence[int], target: Sequence[int], excluded: Sequence[bool],
                 settings: PolicySettings) -> list[int]:
    """Move from ``previous`` towards ``target`` without flapping.

    1. Excluded pools (unhealthy or predicted to break the bound) drop to 0 at once; the weight
       they held goes where the target puts it.
    2. If no pool would move by more than ``deadband`` points, nothing moves (hysteresis).
    3. Otherwise every pool moves the same fraction of its way, chosen so that none moves by more
       than ``max_step`` points; rounding keeps the total exact.
    Both ends sum to ``total_weight`` and are 0 on excluded pools, so every step is valid.
    """
    total = settings.total_weight
    start = [0 if ex else w for w, ex in zip(previous, excluded, strict=True)]
    freed = total - sum(start)
    if freed > 0:
        extra = largest_remainder([float(t) for t in target], freed)
        start = [a + b for a, b in zip(start, extra, strict=True)]
    elif freed < 0:  # previous did not sum to total (settings changed): restart from target
        return list(target)
    deltas = [t - s for s, t in zip(start, target, strict=True)]
    largest = max((abs(d) for d in deltas), default=0)
    if largest <= settings.deadband:
        return start
    fraction = min(1.0, settings.max_step / largest)
    return largest_remainder([s + fraction * d for s, d in zip(start, deltas, strict=True)], total)
