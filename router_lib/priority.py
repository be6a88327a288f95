"""How SLA tiers share one Triton pool: a Triton priority level per tier, and a queue policy each.

Triton's dynamic batcher keeps one queue per priority level (1 is served first) and applies a
queue policy per level (a maximum queue size, a timeout, reject or delay).  A request picks its
level with the KServe v2 ``priority`` request parameter; 0 or absent means the model's
``default_priority_level``.  Separate model entries per tier would be separate schedulers, so
priority only works when every tier's request reaches the *same* model: the edge (Envoy) sets
``priority`` from the tier header (``xds_server.overload``), and the model config written by
``model_repository.triton_config`` declares the levels and policies from this one mapping.

The decision that shapes this module: levels follow the tiers' bounds, tightest first (gold,
silver), best-effort tiers last; the policy of each level is derived from its tier:

- a tier with a bound is never shed by size, and a request still queued after ``queue_timeout
  = bound x timeout_factor`` is rejected (it has missed its bound already; the client gets 429
  with a retry hint instead of a late answer).  The tightest tier gets no timeout at all: Envoy's
  per-try timeout covers it and it must never be shed by its own pool;
- a best-effort tier gets a bounded queue (``best_effort_max_queue``) and a timeout: under
  overload it is what Triton rejects first (``Exceeds maximum queue size``), which the edge turns
  into 429 / RESOURCE_EXHAUSTED with a retry hint.

Head-of-line blocking: a gold request that arrives while a batch runs waits for it, then for its
own batch, which the batcher may fill with lower tiers' requests.  ``largest_batch_within`` picks
the largest batch whose two executions fit in the tightest bound; the model config caps batches
there (``preferred_batch_size``) on a pool where tiers share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from router_lib.domain import TierSet

__all__ = ["LevelPolicy", "TierPriorities", "largest_batch_within", "shared_batch_cap", "tier_priorities"]

HEADROOM_SHARE = 0.2  # of the tightest bound left to what is not batch time (Envoy, client, noise)


@dataclass(frozen=True)
class LevelPolicy:
    """Triton's ``ModelQueuePolicy`` of one priority level.  ``max_queue_size`` 0: unbounded;
    ``timeout_ms`` None: no timeout (Triton's ``default_timeout_microseconds: 0``)."""

    tier: str
    level: int
    max_queue_size: int = 0
    timeout_ms: float | None = None

    def __post_init__(self) -> None:
        if self.level < 1:
            raise ValueError(f"tier {self.tier}: priority level must be >= 1 (1 is served first), got {self.level}")
        if self.max_queue_size < 0:
            raise ValueError(f"tier {self.tier}: max_queue_size must be >= 0, got {self.max_queue_size}")
        if self.timeout_ms is not None and self.timeout_ms <= 0:
            raise ValueError(f"tier {self.tier}: timeout_ms must be > 0 or None, got {self.timeout_ms}")

    @property
    def sheds(self) -> bool:
        return self.max_queue_size > 0 or self.timeout_ms is not None


@dataclass(frozen=True)
class TierPriorities:
    """Tier -> Triton priority level and queue policy; ``default_level``: the default tier's
    level, which a request without ``priority`` (a proxyless client, a direct call) gets."""

    policies: tuple[LevelPolicy, ...]
    default_level: int

    def __post_init__(self) -> None:
        levels = sorted(p.level for p in self.policies)
        if levels != list(range(1, len(levels) + 1)):
            raise ValueError(f"priority levels must be 1..{len(levels)} with no gaps, got {levels}")
        if len({p.tier for p in self.policies}) != len(self.policies):
            raise ValueError("a tier appears twice in the priority levels")
        if not 1 <= self.default_level <= len(levels):
            raise ValueError(f"default_level {self.default_level} is not one of the levels {levels}")

    @property
    def levels(self) -> int:
        return len(self.policies)

    def level_of(self, tier: str) -> int:
        for p in self.policies:
            if p.tier == tier:
                return p.level
        raise KeyError(f"tier {tier!r} has no priority level; known: {[p.tier for p in self.policies]}")

    def by_tier(self) -> Mapping[str, int]:
        return {p.tier: p.level for p in self.policies}


def tier_priorities(tiers: TierSet, *, timeout_factor: float = 1.0, best_effort_max_queue: int = 8,
                    best_effort_timeout_ms: float = 1000.0) -> TierPriorities:
    """Levels from the tiers' bounds (tightest first, best-effort tiers last, ties by name)."""
    if timeout_factor <= 0:
        raise ValueError(f"timeout_factor must be > 0, got {timeout_factor}")
    if best_effort_max_queue < 1:
        raise ValueError(f"best_effort_max_queue must be >= 1, got {best_effort_max_queue}")
    bounded = sorted((t for t in tiers.tiers.values() if t.p99_ms is not None), key=lambda t: (t.p99_ms, t.name))
    best_effort = sorted((t for t in tiers.tiers.values() if t.p99_ms is None), key=lambda t: t.name)
    policies = []
    for i, tier in enumerate(bounded):
        assert tier.p99_ms is not None
        timeout = None if i == 0 else tier.p99_ms * timeout_factor
        policies.append(LevelPolicy(tier.name, i + 1, 0, timeout))
    for j, tier in enumerate(best_effort):
        policies.append(LevelPolicy(tier.name, len(bounded) + j + 1, best_effort_max_queue, best_effort_timeout_ms))
    by_tier = {p.tier: p.level for p in policies}
    return TierPriorities(tuple(policies), by_tier[tiers.default_tier])


def largest_batch_within(latency_ms: Callable[[int], float], bound_ms: float, max_batch_size: int,
                         overhead_ms: float = 0.0) -> int:
    """The largest batch ``b`` with ``2 x latency_ms(b) + overhead_ms <= bound_ms`` (a request
    waits for the running batch, then runs in its own); 1 when even that does not fit."""
    best = 1
    for b in range(1, max_batch_size + 1):
        if 2 * latency_ms(b) + overhead_ms <= bound_ms:
            best = b
    return best


def shared_batch_cap(tiers: TierSet, latency_ms: Callable[[int], float], max_batch_size: int,
                     headroom_share: float = HEADROOM_SHARE) -> int | None:
    """The batch a pool whose tiers share it is capped at: the largest whose head-of-line wait
    fits the tightest bound less ``headroom_share`` of it; None when no tier has a bound."""
    if not 0 <= headroom_share < 1:
        raise ValueError(f"headroom_share must be in [0, 1), got {headroom_share}")
    bounds = [t.p99_ms for t in tiers.tiers.values() if t.p99_ms is not None]
    if not bounds:
        return None
    tightest = min(bounds)
    return largest_batch_within(latency_ms, tightest, max_batch_size, headroom_share * tightest)
