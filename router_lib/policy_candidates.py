"""The candidates the routing policy chooses between: one model on one pool, with the static facts
every stage needs (latency tables, safe utilisation and cost per tier), computed once per fleet.

Static means "depends on the fleet and the settings only": prices, profiles, tiers, headroom.
Nothing here reads metrics or time, so a :class:`ModelOnPool` is built when the capacity table is
(``router_lib.policy_stages``) and shared by every decision until the fleet or settings change.
A :class:`RouteCandidate` is the same candidate seen from one route, its tier's values looked up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from router_lib.domain import PoolSpec, Profile
from router_lib.latency_model import (
    batch_thresholds,
    cost_per_million_usd,
    full_batch_throughput_per_s,
    predicted_latency_ms,
    safe_utilisation,
    tail_factor,
    tail_latency_by_batch,
)
from router_lib.policy_types import PolicySettings, RoutePool
from router_lib.routes import PoolModel, RouteKey


@dataclass(frozen=True)
class ModelOnPool:
    """Static facts of one model on one pool: what the filters, scorers and picker read.

    Per tier (keys: tier names): ``tail_latency_by_tier[t][b]`` is the execution time of a batch
    of ``b`` at the tier's target-compliance quantile (index 0 unused), ``tail_by_tier[t]`` that
    quantile over the median; ``safe_utilisation[t]`` the busiest the pool may be planned for the
    tier; ``cost_per_million[t]`` $ per 1M requests at that utilisation (inf when the tier does not
    fit).  ``throughput_per_replica`` is ``X`` (full batches, every instance), req/s.
    """

    pool: PoolSpec
    name: str
    pool_model: PoolModel  # the metrics key, built once
    batch_thresholds: tuple[float, ...]
    max_batch: int
    tail_by_tier: Mapping[str, float]
    tail_latency_by_tier: Mapping[str, tuple[float, ...]]
    throughput_per_replica: float
    safe_utilisation: Mapping[str, float]
    cost_per_million: Mapping[str, float]
    fallback_rank: int  # position of the pool's accelerator in the tiers' fallback order
    # Positions, so that per-decision values live in lists rather than dicts keyed by name:
    pool_index: int  # of the pool in Fleet.pools
    slot: int  # of the pool among those serving the model (fleet order): a route's weights' index
    instances: int = 1  # per replica: executions that run at once

    def predicted_p99_ms(self, utilisation: float, backlog_ms: float, tier: str) -> float:
        """``latency_model.predicted_latency_ms`` at the tier's compliance quantile."""
        return predicted_latency_ms(self.tail_latency_by_tier[tier], self.batch_thresholds, utilisation, backlog_ms)


def model_on_pool(pool: PoolSpec, profile: Profile, bounds_ms: Mapping[str, float | None],
                  quantiles: Mapping[str, float], settings: PolicySettings, *, fallback_rank: int,
                  pool_index: int, slot: int) -> ModelOnPool:
    """The static facts of ``profile``'s model on ``pool`` for every tier in ``bounds_ms``.

    This runs the safe-utilisation scan per tier, the one costly formula, which is why it happens
    once per fleet and not per decision.
    """
    x = full_batch_throughput_per_s(profile)
    safe = {t: safe_utilisation(profile, b, settings.headroom, settings.max_utilisation, quantiles[t])
            for t, b in bounds_ms.items()}
    return ModelOnPool(
        pool=pool,
        name=pool.name,
        pool_model=PoolModel(pool.name, profile.model),
        batch_thresholds=batch_thresholds(profile),
        max_batch=profile.max_batch_size,
        tail_by_tier={t: tail_factor(profile, q) for t, q in quantiles.items()},
        tail_latency_by_tier={t: tail_latency_by_batch(profile, q) for t, q in quantiles.items()},
        throughput_per_replica=x,
        safe_utilisation=safe,
        cost_per_million={t: cost_per_million_usd(pool.price_per_hour_usd, u, x) for t, u in safe.items()},
        fallback_rank=fallback_rank,
        instances=profile.instances_per_replica,
        pool_index=pool_index,
        slot=slot,
    )


@dataclass(frozen=True, slots=True)
class RouteCandidate:
    """A candidate of one route: :class:`ModelOnPool` with the route's tier's values looked up
    once per fleet, because the filters and the picker read them a few hundred times a decision.
    ``cost_text`` is the static start of its reason (``"cost $0.123/1M"``)."""

    on_pool: ModelOnPool
    key: RoutePool  # the feasibility key the hysteresis remembers
    name: str  # the pool's
    pool_index: int  # ModelOnPool.pool_index
    slot: int  # ModelOnPool.slot
    pool_model: PoolModel
    safe_utilisation: float
    tail_latency_ms: tuple[float, ...]  # ModelOnPool.tail_latency_by_tier[tier]
    tail: float  # ModelOnPool.tail_by_tier[tier]
    cost_text: str

    @classmethod
    def of(cls, e: ModelOnPool, route: RouteKey) -> RouteCandidate:
        tier = route.tier
        return cls(e, RoutePool(route.model, tier, e.name), e.name, e.pool_index, e.slot, e.pool_model,
                   e.safe_utilisation[tier],
                   e.tail_latency_by_tier[tier], e.tail_by_tier[tier], f"cost ${e.cost_per_million[tier]:.3f}/1M")
