"""The shared latency formulas: operating batch, predicted p99, safe utilisation."""

from __future__ import annotations

import math

import pytest

from router_lib.latency_model import operating_batch, predicted_p99_ms, safe_utilisation, tail_factor
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
