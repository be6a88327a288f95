from __future__ import annotations

import math

import pytest

from profiler.analysis import (
    capacity_by_tier,
    latency_table_ms,
    percentile,
    server_times,
    tail_ratio,
    usd_per_million,
)
from router_lib.domain import Tier, TierSet
from tests.profiler.builders import point

TIERS = TierSet({"gold": Tier("gold", 50.0), "silver": Tier("silver", 150.0), "bronze": Tier("bronze", None)},
                "silver", ())


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([1.0], 99, 1.0),
    ([1.0, 2.0, 3.0, 4.0, 5.0], 50, 3.0),
    ([1.0, 2.0, 3.0, 4.0, 5.0], 100, 5.0),
    ([1.0, 2.0], 50, 1.5),
    (list(map(float, range(1, 101))), 99, 99.01),
], ids=["single", "odd-median", "max", "interpolated", "p99-of-100"])
def test_percentile_matches_numpy_linear(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 50))


def test_server_times_are_per_request_deltas() -> None:
    def stats(n: int, queue_ns: int, infer_ns: int, execs: int, infs: int) -> dict:
        return {"execution_count": str(execs), "inference_count": str(infs),
                "inference_stats": {"success": {"count": str(n)}, "queue": {"count": str(n), "ns": str(queue_ns)},
                                    "compute_input": {"count": str(n), "ns": "0"},
                                    "compute_infer": {"count": str(n), "ns": str(infer_ns)},
                                    "compute_output": {"count": str(n), "ns": "0"}}}

    t = server_times(stats(10, 1_000_000, 5_000_000, 10, 10), stats(20, 3_000_000, 25_000_000, 15, 20))
    assert t.requests == 10
    assert t.queue_ms == pytest.approx(0.2)
    assert t.compute_ms == pytest.approx(2.0)
    assert t.avg_execution_batch == pytest.approx(2.0)  # 10 inferences in 5 executions: batching happened


def test_usd_per_million_at_one_per_second_is_the_hourly_price_over_3600() -> None:
    assert usd_per_million(0.145, 1.0) == pytest.approx(0.145 / 3600 * 1e6)
    assert usd_per_million(0.145, 0.0) == math.inf


def test_each_tier_gets_the_busiest_point_within_its_bound() -> None:
    points = [point(1, 1, p99=12, requests=100), point(1, 4, p99=45, requests=300),
              point(1, 8, p99=140, requests=350), point(8, 8, p99=900, requests=60)]
    caps = {c.tier: c for c in capacity_by_tier(points, TIERS, 0.145)}
    assert caps["gold"].point is points[1]
    assert caps["silver"].point is points[2]
    assert caps["bronze"].point is points[3]  # 480 inferences/s, no bound
    assert caps["gold"].usd_per_million_inferences == pytest.approx(usd_per_million(0.145, 300.0))


def test_a_point_with_errors_is_never_capacity_and_an_unmet_tier_says_so() -> None:
    caps = {c.tier: c for c in capacity_by_tier([point(1, 8, p99=10, errors=3), point(1, 1, p99=60)], TIERS, 1.0)}
    assert caps["gold"].point is None and caps["gold"].usd_per_million_inferences == math.inf
    assert caps["silver"].point is not None and caps["silver"].point.concurrency == 1


def test_profile_numbers_come_from_concurrency_one() -> None:
    points = [point(1, 1, p50=10, p99=15), point(8, 1, p50=40, p99=100), point(1, 4, p50=30, p99=300)]
    assert latency_table_ms(points) == {1: 10.0, 8: 40.0}
    assert tail_ratio(points) == 2.5  # the worse of 1.5 and 2.5; the loaded point's queueing is not a tail


def test_profile_numbers_need_a_concurrency_one_point() -> None:
    with pytest.raises(ValueError, match="concurrency-1"):
        latency_table_ms([point(1, 2)])
