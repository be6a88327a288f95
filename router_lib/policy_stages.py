"""Small pieces the policy is built from: signal smoothing, the capacity table (the scorer's
input), integer weights from shares, and the bounded weight step.  Each is a pure function.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from router_lib.domain import Fleet, PoolSpec
from router_lib.latency_model import (
    batch_thresholds,
    full_batch_throughput_per_s,
    operating_batch_from,
    safe_utilisation,
    tail_factor,
)
from router_lib.policy_types import PolicySettings, PoolWeight


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
class ModelOnPool:
    """Static facts of one model on one pool: what the filter and scorer need, precomputed.

    ``latency_by_batch[b]`` is the profile's ``latency_ms(b)`` (index 0 unused);
    ``throughput_per_replica`` is ``X``; ``safe_utilisation``/``cost_per_million`` are per tier
    (cost = pool price / (3600 x safe utilisation x X) x 1e6, inf when the tier does not fit).
    """

    pool: PoolSpec
    name: str
    pool_model: tuple[str, str]  # (pool, model): the metrics key, built once
    latency_by_batch: tuple[float, ...]
    batch_thresholds: tuple[float, ...]
    max_batch: int
    tail_by_tier: Mapping[str, float]  # execution-time quantile / median at the tier's target compliance
    throughput_per_replica: float
    safe_utilisation: Mapping[str, float]
    cost_per_million: Mapping[str, float]
    fallback_rank: int
    instances: int = 1  # per replica: executions that run at once

    def predicted_p99_ms(self, utilisation: float, backlog_ms: float, tier: str) -> float:
        """Same formula as ``latency_model.predicted_p99_ms`` at the tier's compliance quantile."""
        if utilisation >= 1.0:
            return math.inf
        thresholds = self.batch_thresholds
        if utilisation <= thresholds[1]:  # the common case: batch 1 keeps up
            b = 1
        else:
            b = operating_batch_from(thresholds, utilisation)
        busy = utilisation / thresholds[b]
        factor = 2.0 if busy >= 1.0 else 1.0 + min(1.0, max(0.0, busy) / (1.0 - busy))
        return self.tail_by_tier[tier] * self.latency_by_batch[b] * factor + backlog_ms


@dataclass(frozen=True)
class CapacityTable:
    """Everything about the fleet that depends on neither metrics nor time, built once per
    (fleet, settings) and carried in the policy state: the safe-utilisation scan is the only
    costly formula, and the cost order of pools per route is static (prices and profiles)."""

    serving: Mapping[str, tuple[ModelOnPool, ...]]  # model -> pools in fleet order
    # (model, tier) -> (pool facts, (model, tier, pool) feasibility key), cheapest first
    cost_order: Mapping[tuple[str, str], tuple[tuple[ModelOnPool, tuple[str, str, str]], ...]]
    fallback_order: Mapping[str, tuple[ModelOnPool, ...]]  # model -> GPU, Inferentia, CPU, then price
    tier_bound_ms: Mapping[str, float | None]
    tiers_strictest_first: tuple[str, ...]
    pool_names: Mapping[str, tuple[str, ...]]  # model -> names of the pools serving it, fleet order
    pool_name_sets: Mapping[str, frozenset[str]]  # the same, as sets
    not_needed: Mapping[str, PoolWeight]  # pool -> PoolWeight(pool, 0, NOT_NEEDED), shared
    no_replica: Mapping[str, PoolWeight]  # pool -> PoolWeight(pool, 0, UNHEALTHY_NO_REPLICA), shared


def build_capacity_table(fleet: Fleet, settings: PolicySettings) -> CapacityTable:
    bounds = {name: tier.p99_ms for name, tier in fleet.tiers.tiers.items()}
    quantiles = {name: tier.target_compliance or 0.99 for name, tier in fleet.tiers.tiers.items()}
    order = tuple(sorted(bounds, key=lambda t: (bounds[t] is None, bounds[t] or 0.0, t)))
    rank = {acc: i for i, acc in enumerate(fleet.tiers.fallback_order)}
    serving: dict[str, tuple[ModelOnPool, ...]] = {}
    for model in fleet.models:
        entries = []
        for pool in fleet.pools:
            profile = fleet.profiles.get((model, pool.accelerator))
            if model not in pool.models or profile is None:
                continue
            x = full_batch_throughput_per_s(profile)
            safe = {t: safe_utilisation(profile, b, settings.headroom, settings.max_utilisation, quantiles[t])
                    for t, b in bounds.items()}
            cost = {t: pool.price_per_hour_usd / (3600.0 * u * x) * 1e6 if u > 0 else math.inf
                    for t, u in safe.items()}
            entries.append(ModelOnPool(
                pool, pool.name, (pool.name, model), (0.0, *(profile.latency_ms(b) for b in range(1, profile.max_batch_size + 1))),
                batch_thresholds(profile),
                profile.max_batch_size, {t: tail_factor(profile, q) for t, q in quantiles.items()}, x, safe, cost,
                rank.get(pool.accelerator, len(rank)), profile.instances_per_replica))
        serving[model] = tuple(entries)
    cost_order = {
        (model, tier): tuple((e, (model, tier, e.name)) for e in sorted(
            entries, key=lambda e, t=tier: (e.cost_per_million[t], e.fallback_rank, e.name)))  # type: ignore[misc]
        for model, entries in serving.items() for tier in bounds
    }
    fallback = {model: tuple(sorted(entries, key=lambda e: (e.fallback_rank, e.pool.price_per_hour_usd, e.pool.name)))
                for model, entries in serving.items()}
    from router_lib.policy import NOT_NEEDED, UNHEALTHY_NO_REPLICA

    names = {model: tuple(e.pool.name for e in entries) for model, entries in serving.items()}
    return CapacityTable(serving, cost_order, fallback, bounds, order, names,
                         {model: frozenset(n) for model, n in names.items()},
                         {p.name: PoolWeight(p.name, 0, NOT_NEEDED) for p in fleet.pools},
                         {p.name: PoolWeight(p.name, 0, UNHEALTHY_NO_REPLICA) for p in fleet.pools})


def largest_remainder(shares: Sequence[float], total: int) -> list[int]:
    """Integers >= 0 summing to ``total``, proportional to ``shares`` (Hamilton's method).

    Ties in the remainders go to the earlier index (the caller orders pools by preference).
    All-zero shares give everything to index 0.
    """
    if not shares:
        return []
    positive = [i for i, x in enumerate(shares) if x > 0]
    if len(positive) == 1:  # the common case: one pool takes everything
        out = [0] * len(shares)
        out[positive[0]] = total
        return out
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
    if list(previous) == list(target):
        return list(target)
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
