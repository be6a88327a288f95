"""Live signals that may raise a pool's target within one tick, and the capacity arithmetic they share.

Each signal reads what the pool's ready replicas are doing now and asks for a replica count;
the decider takes the highest (signals only ever raise the target: a fall goes through the
planner, behind the scale-down window).  The three signals, each with its formula:

* queue: Triton's pending requests summed over the pool's models, ``q`` per ready replica; past
  ``queue_per_replica_up`` it asks for ``ceil(queue / queue_per_replica_up)`` replicas, the count
  at which the same queue would sit at the threshold (the HPA's proportional rule).
* latency: the worst measured p95/p99 over the pool's models against ``latency_up_fraction`` x
  the strictest carried tier's bound; past it, ``ceil(ready * measured / limit)`` replicas (at
  least one more, at most twice as many: latency grows faster than linearly near saturation, so
  the ratio overshoots rather than falls short, and the step cap and the window bound the cost).
* utilisation: ``u = sum_m rate_m / (ready * X_m)`` with ``X`` the full-batch throughput per
  replica (``router_lib.latency_model``); it asks for ``ceil(sum_m rate_m / S_m)`` replicas with
  ``S_m`` the safe throughput per replica under the strictest carried tier, the planner's own
  capacity constraint, so it fires exactly when the pool is past the planner's safe utilisation.

A pool with no ready replica has no signal of its own: its demand is the planner's to place.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from router_lib.capacity_types import CapacityReason, CapacitySettings
from router_lib.domain import Fleet, PoolSpec, Tier
from router_lib.latency_model import full_batch_throughput_per_s, safe_utilisation
from router_lib.metrics import PoolModelMetrics
from router_lib.policy_types import PolicySettings

LATENCY_RATIO_CAP = 2.0  # latency asks for at most twice the ready replicas per tick (see above)


@dataclass(frozen=True)
class LiveNeed:
    """A signal that fired: the replicas it asks for, its kind, and a sentence with the numbers."""

    replicas: int
    kind: CapacityReason
    why: str


def strictest_tier(fleet: Fleet, names: Iterable[str]) -> Tier | None:
    """The carried tier with the lowest bound (None when none is carried or none has a bound)."""
    bounded = [fleet.tiers.tiers[n] for n in names if n in fleet.tiers.tiers and fleet.tiers.tiers[n].p99_ms]
    return min(bounded, key=lambda t: (t.p99_ms or 0.0, t.name), default=None)


def safe_throughput_per_replica(fleet: Fleet, pool: PoolSpec, model: str, tier: Tier | None,
                                policy: PolicySettings) -> float:
    """``S``: req/s of ``model`` one replica of ``pool`` carries within ``tier`` (None: best
    effort), at the tier's target-compliance quantile, as the planner computes it (0: cannot)."""
    profile = fleet.profile(model, pool.accelerator)
    if profile is None:
        return 0.0
    bound = tier.p99_ms if tier else None
    quantile = (tier.target_compliance if tier else None) or 0.99
    u = safe_utilisation(profile, bound, policy.headroom, policy.max_utilisation, quantile)
    return u * full_batch_throughput_per_s(profile)


def meets_tier(fleet: Fleet, pool: PoolSpec, model: str, tier: Tier, policy: PolicySettings) -> bool:
    """The pool serves ``model`` and one lightly loaded replica meets ``tier``'s bound."""
    return model in pool.models and safe_throughput_per_replica(fleet, pool, model, tier, policy) > 0


def unit_cost_usd(fleet: Fleet, pool: PoolSpec, carried: Iterable[str], policy: PolicySettings) -> float:
    """$/h per req/s of useful capacity: the pool's price over the mean safe throughput per replica
    of its models under the strictest tier it carries (inf when it can carry none).  The trims for
    the machine limit and the budget take replicas from the highest first."""
    tier = strictest_tier(fleet, carried)
    rates = [safe_throughput_per_replica(fleet, pool, m, tier, policy) for m in pool.models]
    useful = sum(rates) / len(rates) if rates else 0.0
    return pool.price_per_hour_usd / useful if useful > 0 else math.inf


def queue_need(queue_depth: float, ready: int, settings: CapacitySettings) -> LiveNeed | None:
    threshold = settings.queue_per_replica_up
    per_replica = queue_depth / ready
    if per_replica <= threshold:
        return None
    wanted = max(ready + 1, math.ceil(queue_depth / threshold))
    return LiveNeed(wanted, CapacityReason.QUEUE_UP,
                    f"queue {per_replica:.1f}/replica > {threshold:g}: wants {wanted}")


def latency_need(worst: tuple[str, float] | None, tier: Tier | None, ready: int,
                 settings: CapacitySettings) -> LiveNeed | None:
    """``worst``: (quantile name, ms), the highest measured p95/p99 on the pool."""
    if worst is None or tier is None or tier.p99_ms is None:
        return None
    limit = settings.latency_up_fraction * tier.p99_ms
    name, measured = worst
    if measured <= limit:
        return None
    ratio = min(measured / limit, LATENCY_RATIO_CAP)
    wanted = max(ready + 1, math.ceil(ready * ratio))
    return LiveNeed(wanted, CapacityReason.LATENCY_UP,
                    f"{name} {measured:.0f} ms > {settings.latency_up_fraction:g} x {tier.name} "
                    f"{tier.p99_ms:g} ms: wants {wanted}")


def utilisation_need(fleet: Fleet, pool: PoolSpec, rates: Mapping[str, float], tier: Tier | None, ready: int,
                     policy: PolicySettings) -> LiveNeed | None:
    """``rates``: req/s per model measured on the pool."""
    busy = safe_replicas = 0.0
    for model, rate in rates.items():
        profile = fleet.profile(model, pool.accelerator)
        safe = safe_throughput_per_replica(fleet, pool, model, tier, policy)
        if profile is None or safe <= 0 or rate <= 0:
            continue  # no profile, or the tier is out of reach: the latency signal speaks for it
        busy += rate / full_batch_throughput_per_s(profile)
        safe_replicas += rate / safe
    wanted = math.ceil(safe_replicas - 1e-9)
    if wanted <= ready:
        return None
    u, u_safe = busy / ready, busy / safe_replicas
    tier_name = tier.name if tier else "best effort"
    return LiveNeed(wanted, CapacityReason.UTILISATION_UP,
                    f"utilisation {u:.2f} > safe {u_safe:.2f} ({tier_name}): wants {wanted}")


def _worst_latency(entries: Iterable[PoolModelMetrics]) -> tuple[str, float] | None:
    measured = [(m.p99_ms, "p99") for m in entries if m.p99_ms is not None]
    measured += [(m.p95_ms, "p95") for m in entries if m.p95_ms is not None]
    if not measured:
        return None
    ms, name = max(measured)
    return name, ms


def live_needs(fleet: Fleet, pool: PoolSpec, entries: Iterable[PoolModelMetrics], ready: int,
               carried: Iterable[str], settings: CapacitySettings) -> list[LiveNeed]:
    """The signals that fire on ``pool`` (``entries``: its metrics, one per model), highest ask first."""
    if ready <= 0:
        return []
    entries = list(entries)
    tier = strictest_tier(fleet, carried)
    rates: dict[str, float] = {}
    for m in entries:
        rates[m.model] = rates.get(m.model, 0.0) + m.request_rate_per_s
    needs = [
        queue_need(sum(m.queue_depth for m in entries), ready, settings),
        latency_need(_worst_latency(entries), tier, ready, settings),
        utilisation_need(fleet, pool, rates, tier, ready, settings.policy),
    ]
    return sorted((n for n in needs if n is not None), key=lambda n: -n.replicas)
