"""Pieces the policy is built from that hold no per-tick logic: the per-fleet capacity table
(candidates ranked by the scorers), EWMA weights, integer weights from shares, and the bounded
weight step.  Each is a pure function.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from router_lib.domain import Fleet
from router_lib.policy_candidates import ModelOnPool, RouteCandidate, model_on_pool
from router_lib.policy_scorers import DEFAULT_SCORERS, WeightedScorer, rank
from router_lib.policy_types import NOT_NEEDED, UNHEALTHY_NO_REPLICA, PolicySettings
from router_lib.routes import PoolModel, PoolWeight, RouteKey

__all__ = ["CapacityTable", "ModelOnPool", "RouteCandidate", "apportion", "bounded_step", "build_capacity_table", "largest_remainder",
           "smoothing_alpha"]


def smoothing_alpha(dt_s: float, tau_s: float) -> float:
    """EWMA weight of a new sample after ``dt_s``: ``1 - exp(-dt / tau)`` (1 on the first tick)."""
    if dt_s <= 0 or tau_s <= 0:
        return 1.0 if tau_s <= 0 else 0.0
    return 1.0 - math.exp(-dt_s / tau_s)


@dataclass(frozen=True)
class CapacityTable:
    """Everything about the fleet that depends on neither metrics nor time, built once per
    (fleet, settings) and carried in the policy state: the safe-utilisation scan is the only
    costly formula, and the scorers' ranking of pools per route is static (prices and profiles)."""

    serving: Mapping[str, tuple[ModelOnPool, ...]]  # model -> its candidates, fleet order
    ranked: Mapping[RouteKey, tuple[RouteCandidate, ...]]  # route -> its candidates, best score first
    fallback_order: Mapping[str, tuple[ModelOnPool, ...]]  # model -> GPU, Inferentia, CPU, then price
    tier_bound_ms: Mapping[str, float | None]
    tiers_strictest_first: tuple[str, ...]
    routes_by_tier: Mapping[str, tuple[RouteKey, ...]]  # tier -> one key per model, fleet order
    pool_names: Mapping[str, tuple[str, ...]]  # model -> names of the pools serving it, fleet order
    pool_name_sets: Mapping[str, frozenset[str]]  # the same, as sets
    pool_models: Mapping[str, tuple[PoolModel, ...]]  # pool -> a key per model configured on it
    keys: Mapping[tuple[str, str], PoolModel]  # (pool, model) -> the shared PoolModel key
    slots: Mapping[str, Mapping[str, int]]  # model -> pool name -> its index in pool_names[model]
    # model -> PoolWeight(pool, 0, NOT_NEEDED) per pool serving it, fleet order: a route's weights
    # start from this row (shared objects) and replace only what the decision says otherwise
    idle_rows: Mapping[str, tuple[PoolWeight, ...]]
    no_replica: Mapping[str, PoolWeight]  # pool -> PoolWeight(pool, 0, UNHEALTHY_NO_REPLICA), shared


def build_capacity_table(fleet: Fleet, settings: PolicySettings,
                         scorers: Sequence[WeightedScorer] = DEFAULT_SCORERS) -> CapacityTable:
    bounds = {name: tier.p99_ms for name, tier in fleet.tiers.tiers.items()}
    quantiles = {name: tier.target_compliance or 0.99 for name, tier in fleet.tiers.tiers.items()}
    order = tuple(sorted(bounds, key=lambda t: (bounds[t] is None, bounds[t] or 0.0, t)))
    serving: dict[str, tuple[ModelOnPool, ...]] = {}
    for model in fleet.models:
        entries: list[ModelOnPool] = []
        for index, pool in enumerate(fleet.pools):
            profile = fleet.profiles.get((model, pool.accelerator))
            if model not in pool.models or profile is None:
                continue
            entries.append(model_on_pool(pool, profile, bounds, quantiles, settings,
                                         fallback_rank=fleet.fallback_rank(pool.accelerator),
                                         pool_index=index, slot=len(entries)))
        serving[model] = tuple(entries)
    routes_by_tier = {tier: tuple(RouteKey(model, tier) for model in fleet.models) for tier in order}
    ranked = {route: tuple(RouteCandidate.of(e, route) for e in rank(serving[route.model], route.tier, scorers))
              for routes in routes_by_tier.values() for route in routes}
    fallback = {model: tuple(sorted(entries, key=lambda e: fleet.fallback_key(e.pool)))
                for model, entries in serving.items()}
    names = {model: tuple(e.pool.name for e in entries) for model, entries in serving.items()}
    # One PoolModel object per (pool, model), shared: dict lookups then succeed on identity.
    keys: dict[tuple[str, str], PoolModel] = {e.pool_model: e.pool_model for es in serving.values() for e in es}
    for p in fleet.pools:
        for m in p.models:
            keys.setdefault((p.name, m), PoolModel(p.name, m))
    pool_models = {p.name: tuple(keys[(p.name, m)] for m in p.models) for p in fleet.pools}
    not_needed = {p.name: PoolWeight(p.name, 0, NOT_NEEDED) for p in fleet.pools}
    return CapacityTable(serving, ranked, fallback, bounds, order, routes_by_tier, names,
                         {model: frozenset(n) for model, n in names.items()}, pool_models, keys,
                         {model: {name: slot for slot, name in enumerate(n)} for model, n in names.items()},
                         {model: tuple(not_needed[name] for name in n) for model, n in names.items()},
                         {p.name: PoolWeight(p.name, 0, UNHEALTHY_NO_REPLICA) for p in fleet.pools})


def largest_remainder(shares: Sequence[float], total: int) -> list[int]:
    """Integers >= 0 summing to ``total``, proportional to ``shares`` (Hamilton's method).

    Ties in the remainders go to the earlier index (the caller orders pools by preference).
    All-zero shares give everything to index 0.  Only the positive shares are worked on: the
    remainders add up to the count of missing units and each is < 1, so a zero share, whose
    remainder is 0, never gets one.
    """
    out = [0] * len(shares)
    positive = [i for i, x in enumerate(shares) if x > 0]
    if len(positive) <= 1:  # the common case: one pool takes everything
        if out:
            out[positive[0] if positive else 0] = total
        return out
    for i, units in zip(positive, apportion([shares[i] for i in positive], total), strict=True):
        out[i] = units
    return out


def apportion(shares: Sequence[float], total: int) -> list[int]:
    """:func:`largest_remainder` of shares that are all > 0."""
    s = sum(shares)
    floor = math.floor
    units = []
    remainders = []  # (-remainder, index): sorted, the largest remainder first, then the earlier index
    for i, x in enumerate(shares):
        exact = x * total / s
        unit = floor(exact + 1e-9)
        units.append(unit)
        remainders.append((unit - exact, i))
    missing = total - sum(units)
    if missing > 0:
        remainders.sort()
        for _, i in remainders[:missing]:
            units[i] += 1
    return units


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
