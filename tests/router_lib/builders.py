"""Small fleets built in code, so tests never depend on the provisional profile files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from router_lib.domain import (
    Accelerator,
    Fleet,
    PoolMode,
    PoolSpec,
    Prices,
    Profile,
    Provenance,
    Tier,
    TierSet,
)
from router_lib.metrics import FleetMetrics, PoolModelMetrics

CPU, GPU, INF = Accelerator.CPU, Accelerator.GPU, Accelerator.INFERENTIA
ITYPE = {CPU: "c-small", GPU: "g-small", INF: "i-small"}
PROV = Provenance(kind="reference", date="2026-11-28", source="test", assumption="test")


def profile(model: str, acc: Accelerator, latency: Mapping[int, float], *, instances: int = 1,
            max_batch: int | None = None, tail: float = 1.2) -> Profile:
    return Profile(model=model, accelerator=acc, instance_type=ITYPE[acc], latency_ms_by_batch=dict(latency),
                   instances_per_replica=instances, max_batch_size=max_batch or max(latency), provenance=PROV,
                   p99_over_p50=tail)


def tiers(**bounds: float | None) -> TierSet:
    bounds = bounds or {"gold": 50.0, "silver": 150.0, "bronze": None}
    return TierSet({n: Tier(n, b) for n, b in bounds.items()}, next(iter(bounds)), (GPU, INF, CPU))


def fleet(pools: Sequence[tuple[str, Accelerator, float, int]], profiles: Sequence[Profile],
          tier_set: TierSet | None = None) -> Fleet:
    """``pools``: (name, accelerator, price per hour, replicas)."""
    by_key = {(p.model, p.accelerator): p for p in profiles}
    specs = []
    prices: dict[str, float] = {}
    for name, acc, price, replicas in pools:
        models = tuple(sorted(m for (m, a) in by_key if a is acc))
        specs.append(PoolSpec(name=name, accelerator=acc, instance_type=ITYPE[acc], price_per_hour_usd=price,
                              replicas=replicas, mode=PoolMode.EMULATED, models=models))
        prices[ITYPE[acc]] = price
    models = tuple(sorted({m for s in specs for m in s.models}))
    return Fleet(tuple(specs), by_key, tier_set or tiers(), Prices(prices, "test", "2026-11-28", "test"), models)


def metrics(entries: Mapping[tuple[str, str], Mapping[str, object]] | None = None, t: float = 0.0) -> FleetMetrics:
    """FleetMetrics from {(pool, model): {field: value}}."""
    out = {}
    for (pool, model), fields in (entries or {}).items():
        out[(pool, model)] = PoolModelMetrics(pool=pool, model=model, **fields)  # type: ignore[arg-type]
    return FleetMetrics(out, t, {})


# A three-pool fleet in the shape of the real one: a cheap slow CPU (cheapest for bronze, dearest
# for gold, where its latency leaves it little room), a fast mid-price Inferentia, a fast GPU.
EMBED = "embed"
THREE_POOLS = fleet(
    [("cpu", CPU, 0.05, 2), ("gpu", GPU, 1.0, 1), ("inf", INF, 0.75, 1)],
    [profile(EMBED, CPU, {1: 30.0, 8: 200.0}, instances=2),
     profile(EMBED, GPU, {1: 5.0, 16: 20.0}),
     profile(EMBED, INF, {1: 2.0, 16: 12.0}, instances=2)],
)
