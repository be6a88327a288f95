"""The shared latency formulas: operating batch, predicted p99, safe utilisation."""

from __future__ import annotations

import math

import pytest

from router_lib.latency_model import (
    Z99,
    cost_per_million_usd,
    drain_time_ms,
    operating_batch,
    predicted_p99_ms,
    safe_utilisation,
    tail_factor,
)
from router_lib.policy import PolicySettings
from router_lib.policy_stages import build_capacity_table
from tests.router_lib.builders import CPU, EMBED, GPU, THREE_POOLS, profile

LINEAR_CPU = profile("m", CPU, {1: 10.0, 32: 320.0})  # no batching gain: stays at batch 1
GPU_LIKE = profile("m", GPU, {1: 10.0, 32: 20.0})  # big fixed cost: batches grow with load


@pytest.mark.parametrize(("p", "u", "batch"), [
    (LINEAR_CPU, 0.0, 1), (LINEAR_CPU, 0.9, 1), (LINEAR_CPU, 1.0, 1),
    (GPU_LIKE, 0.0, 1), (GPU_LIKE, 0.5, 11), (GPU_LIKE, 1.0, 32),
], ids=["cpu-idle", "cpu-busy", "cpu-saturated-batching-gains-nothing", "gpu-idle", "gpu-half", "gpu-saturated"])
def test_operating_batch_is_the_smallest_that_keeps_up(p, u: float, batch: int) -> None:  # type: ignore[no-untyped-def]
    assert operating_batch(p, u) == batch


def test_predicted_p99_grows_with_load_and_is_infinite_at_saturation() -> None:
    values = [predicted_p99_ms(GPU_LIKE, u / 10) for u in range(10)]
    assert values == sorted(values) and values[0] == pytest.approx(12.0)  # tail 1.2 x 10 ms
    assert math.isinf(predicted_p99_ms(GPU_LIKE, 1.0))


@pytest.mark.parametrize(("bound", "expected"), [
    (None, 0.8),   # best effort: max utilisation
    (1.0, 0.0),    # tighter than one execution: nothing fits
    (1000.0, 0.8),
], ids=["bronze", "impossible", "loose"])
def test_safe_utilisation_edges(bound: float | None, expected: float) -> None:
    assert safe_utilisation(GPU_LIKE, bound, 0.8, 0.8) == pytest.approx(expected)


def test_safe_utilisation_meets_the_bound_it_was_computed_for() -> None:
    for p in (LINEAR_CPU, GPU_LIKE, *THREE_POOLS.profiles.values()):
        for bound in (20.0, 50.0, 150.0):
            u = safe_utilisation(p, bound, 0.8, 0.8)
            if u > 0:
                assert predicted_p99_ms(p, u) <= 0.8 * bound + 1e-9


def test_the_policys_precomputed_table_predicts_the_same_as_the_formula() -> None:
    table = build_capacity_table(THREE_POOLS, PolicySettings())
    for entry in table.serving[EMBED]:
        prof = THREE_POOLS.profiles[(EMBED, entry.pool.accelerator)]
        for u in (0.0, 0.1, 0.33, 0.5, 0.79, 0.95):
            assert entry.predicted_p99_ms(u, 3.0, "gold") == pytest.approx(predicted_p99_ms(prof, u, 3.0))


@pytest.mark.parametrize(("ratio", "quantile", "expected"), [
    (1.0, 0.999, 1.0), (2.0, 0.99, 2.0), (2.0, 0.999, 2.0 ** (3.0902 / 2.3263)), (2.0, 0.5, 1.0),
], ids=["deterministic", "p99-is-the-profile", "p99.9-log-normal", "median"])
def test_tail_factor_scales_the_profiles_p99_ratio_to_the_tiers_quantile(ratio: float, quantile: float,
                                                                       expected: float) -> None:
    assert tail_factor(profile("m", CPU, {1: 1.0}, tail=ratio), quantile) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(("price", "utilisation", "throughput", "expected"), [
    (3.6, 1.0, 1.0, 1000.0),
    (3.6, 0.5, 1.0, 2000.0),
    (0.75, 0.8, 2666.6666666666665, 0.09765625),
    (1.0, 0.0, 100.0, math.inf),
    (1.0, 0.5, 0.0, math.inf),
], ids=["one-request-a-second-at-1-dollar-per-1000-s", "half-busy-costs-twice", "inf-pool-gold-capacity",
        "no-safe-utilisation", "no-throughput"])
def test_cost_per_million_usd(price: float, utilisation: float, throughput: float, expected: float) -> None:
    assert cost_per_million_usd(price, utilisation, throughput) == pytest.approx(expected)


@pytest.mark.parametrize(("queue", "replicas", "expected"), [
    (0.0, 2, 0.0), (100.0, 2, 500.0), (100.0, 0, math.inf),
], ids=["no-queue", "two-replicas-at-100-per-s", "no-replica"])
def test_drain_time_ms(queue: float, replicas: int, expected: float) -> None:
    assert drain_time_ms(queue, replicas, 100.0) == expected


def test_the_policys_capacity_table_prices_with_cost_per_million_usd() -> None:
    table = build_capacity_table(THREE_POOLS, PolicySettings())
    for entry in table.serving[EMBED]:
        for tier, u in entry.safe_utilisation.items():
            assert entry.cost_per_million[tier] == cost_per_million_usd(entry.pool.price_per_hour_usd, u,
                                                                        entry.throughput_per_replica)


def test_z99_is_the_standard_normal_99th_percentile() -> None:
    assert Z99 == pytest.approx(2.3263478740408408)
