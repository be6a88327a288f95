"""Live signals that may raise a pool's target within one tick, and the capacity arithmetic they share.

Each signal reads what the pool's ready replicas are doing now and asks for a replica count;
the decider takes the highest (signals only ever raise the target: a fall goes through the
planner, behind the scale-down window).  The three signals, each with its formula:

* queue: Triton's pending requests summed over the pool's models, ``q`` per ready replica; past
  the threshold (``queue_per_replica_up``, or one forming batch per instance of a batching
  replica when that is more) it asks for ``ceil(queue / threshold)`` replicas, the count at which
  the same queue would sit at the threshold (the HPA's proportional rule).
* latency: the worst measured p95/p99 over the pool's models, each against
  ``latency_up_fraction`` x the bound of the tier it is judged by (below); past it, ``ceil(ready * measured / limit)`` replicas (at
  least one more, at most twice as many: latency grows faster than linearly near saturation, so
  the ratio overshoots rather than falls short, and the step cap and the window bound the cost).
* utilisation: ``u = sum_m rate_m / (ready * X_m)`` with ``X`` the full-batch throughput per
  replica (``router_lib.latency_model``); it asks for ``ceil(sum_m rate_m / S_m)`` replicas with
  ``S_m`` the safe throughput per replica under the tier ``m`` is judged by, the planner's own
  capacity constraint, so it fires exactly when the pool is past the planner's safe utilisation.

A model is judged by the strictest tier the plan sends it to this pool at (the planner sizes each
tier class apart: a CPU pool carrying gold for one model and bronze for another is not sized for
the second at gold's utilisation); a model the plan gives no tiers here, by the strictest tier the
pool carries.

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


def forming_batches(fleet: Fleet, pool: PoolSpec, models: Iterable[str]) -> int:
    """Requests a batching replica of ``pool`` normally holds in its queue: one forming batch
    per instance (``instances_per_replica x max_batch_size``), the largest over ``models``."""
    sizes = [p.instances_per_replica * p.max_batch_size
             for p in (fleet.profile(m, pool.accelerator) for m in models) if p is not None]
    return max(sizes, default=0)


def queue_need(queue_depth: float, ready: int, settings: CapacitySettings, batches: int = 0) -> LiveNeed | None:
    """``batches``: :func:`forming_batches`; the threshold per replica is the larger of it and
    ``queue_per_replica_up`` (an Inferentia replica with 2 cores x batch 16 holds up to 32 while
    it keeps up: 8 would call that a shortfall)."""
    threshold = max(settings.queue_per_replica_up, float(batches))
    per_replica = queue_depth / ready
    if per_replica <= threshold:
        return None
    wanted = max(ready + 1, math.ceil(queue_depth / threshold))
    return LiveNeed(wanted, CapacityReason.QUEUE_UP,
                    f"queue {per_replica:.1f}/replica > {threshold:g}: wants {wanted}")


def latency_need(entries: Iterable[PoolModelMetrics], tiers: Mapping[str, Tier | None], ready: int,
                 settings: CapacitySettings) -> LiveNeed | None:
    """The model furthest past ``latency_up_fraction`` of its tier's bound (``tiers``: model ->
    the tier it is judged by; absent or None: not judged) sets the ask."""
    worst: tuple[float, str, float, Tier] | None = None  # (measured / limit, quantile name, ms, tier)
    for m in entries:
        tier = tiers.get(m.model)
        if tier is None or tier.p99_ms is None:
            continue
        limit = settings.latency_up_fraction * tier.p99_ms
        for name, ms in (("p99", m.p99_ms), ("p95", m.p95_ms)):
            if ms is not None and (worst is None or ms / limit > worst[0]):
                worst = (ms / limit, name, ms, tier)
    if worst is None or worst[0] <= 1.0:
        return None
    ratio, name, measured, tier = worst
    wanted = max(ready + 1, math.ceil(ready * min(ratio, LATENCY_RATIO_CAP)))
    return LiveNeed(wanted, CapacityReason.LATENCY_UP,
                    f"{name} {measured:.0f} ms > {settings.latency_up_fraction:g} x {tier.name} "
                    f"{tier.p99_ms:g} ms: wants {wanted}")


def utilisation_need(fleet: Fleet, pool: PoolSpec, rates: Mapping[str, float], tiers: Mapping[str, Tier | None],
                     ready: int, policy: PolicySettings) -> LiveNeed | None:
    """``rates``: req/s per model measured on the pool; ``tiers``: model -> the tier its safe
    throughput is judged at (absent or None: best effort)."""
    busy = safe_replicas = 0.0
    for model, rate in rates.items():
        profile = fleet.profile(model, pool.accelerator)
        safe = safe_throughput_per_replica(fleet, pool, model, tiers.get(model), policy)
        if profile is None or safe <= 0 or rate <= 0:
            continue  # no profile, or the tier is out of reach: the latency signal speaks for it
        busy += rate / full_batch_throughput_per_s(profile)
        safe_replicas += rate / safe
    wanted = math.ceil(safe_replicas - 1e-9)
    if wanted <= ready:
        return None
    u, u_safe = busy / ready, busy / safe_replicas
    judged = sorted({t.name for m, t in tiers.items() if t is not None and rates.get(m, 0) > 0})
    return LiveNeed(wanted, CapacityReason.UTILISATION_UP,
                    f"utilisation {u:.2f} > safe {u_safe:.2f} ({'/'.join(judged) or 'best effort'}): wants {wanted}")


def live_needs(fleet: Fleet, pool: PoolSpec, entries: Iterable[PoolModelMetrics], ready: int,
               carried: Iterable[str], settings: CapacitySettings,
               spill_per_s: Mapping[str, float] | None = None,
               model_tiers: Mapping[str, Iterable[str]] | None = None) -> list[LiveNeed]:
    """The signals that fire on ``pool`` (``entries``: its metrics, one per model), highest ask first.

    Each model is judged by the strictest of its ``model_tiers`` (the tiers the plan sends it here),
    or, for a model without them, by the strictest tier the pool carries (``carried``).
    ``spill_per_s``: req/s per model that other pools carry for this one (the plan places the model
    here, routing sent the excess there): the utilisation signal counts it as this pool's load."""
    if ready <= 0:
        return []
    entries = list(entries)
    pool_tier = strictest_tier(fleet, carried)
    per_model = {m: strictest_tier(fleet, ts) for m, ts in (model_tiers or {}).items()}
    rates: dict[str, float] = dict(spill_per_s or {})
    for m in entries:
        rates[m.model] = rates.get(m.model, 0.0) + m.request_rate_per_s
    tiers = {m: per_model[m] if m in per_model else pool_tier for m in rates}
    needs = [
        queue_need(sum(m.queue_depth for m in entries), ready, settings,
                   forming_batches(fleet, pool, [m.model for m in entries])),
        latency_need(entries, tiers, ready, settings),
        utilisation_need(fleet, pool, rates, tiers, ready, settings.policy),
    ]
    return sorted((n for n in needs if n is not None), key=lambda n: -n.replicas)
