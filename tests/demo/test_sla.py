"""SLA compliance and percentiles on known latency lists."""

from __future__ import annotations

import math

import pytest

from reporting.sla import compliance, nearest_rank, summarise_tier


@pytest.mark.parametrize(("values", "q", "expected"), [
    pytest.param([5.0], 0.99, 5.0, id="one-value-is-every-percentile"),
    pytest.param([float(i) for i in range(1, 101)], 0.99, 99.0, id="p99-of-1..100-is-99"),
    pytest.param([float(i) for i in range(1, 101)], 0.50, 50.0, id="p50-of-1..100-is-50"),
    pytest.param([float(i) for i in range(1, 1001)], 0.999, 999.0, id="p99.9-of-1..1000-is-999"),
    pytest.param([1.0, 2.0, 3.0], 1.0, 3.0, id="p100-is-the-max"),
    pytest.param([10.0, 20.0], 0.51, 20.0, id="rank-rounds-up"),
])
def test_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert nearest_rank(values, q) == expected


def test_nearest_rank_of_nothing_is_nan() -> None:
    assert math.isnan(nearest_rank([], 0.99))


@pytest.mark.parametrize(("latencies", "ok", "bound", "expected"), [
    pytest.param([10.0, 20.0, 30.0, 40.0], [True] * 4, 50.0, 1.0, id="all-within"),
    pytest.param([10.0, 20.0, 30.0, 60.0], [True] * 4, 50.0, 0.75, id="one-over-the-bound"),
    pytest.param([10.0, 50.0], [True, True], 50.0, 1.0, id="exactly-on-the-bound-is-within"),
    pytest.param([10.0, 20.0], [True, False], 50.0, 0.5, id="a-fast-error-is-a-miss"),
    pytest.param([1.0] * 999 + [51.0], [True] * 1000, 50.0, 0.999, id="999-of-1000-meets-99.9"),
    pytest.param([1.0] * 998 + [51.0] * 2, [True] * 1000, 50.0, 0.998, id="998-of-1000-misses-99.9"),
    pytest.param([], [], 50.0, 1.0, id="no-requests-comply-vacuously"),
    pytest.param([900.0], [True], None, None, id="best-effort-has-no-compliance"),
])
def test_compliance(latencies: list[float], ok: list[bool], bound: float | None, expected: float | None) -> None:
    assert compliance(latencies, ok, bound) == expected


def test_compliance_rejects_mismatched_lists() -> None:
    with pytest.raises(ValueError, match="same length"):
        compliance([1.0, 2.0], [True], 50.0)


def test_tier_summary_counts_errors_in_compliance_but_not_in_percentiles() -> None:
    s = summarise_tier("gold", [10.0, 20.0, 30.0, 5000.0], [True, True, True, False], 50.0, 0.999)
    assert (s.requests, s.errors, s.over_bound) == (4, 1, 0)
    assert s.compliance == 0.75 and not s.met
    assert s.p99_ms == 30.0 and s.max_ms == 30.0


@pytest.mark.parametrize(("compliance_share", "target", "met"), [
    pytest.param(0.999, 0.999, True, id="at-target-meets"),
    pytest.param(0.998, 0.999, False, id="below-target-misses"),
    pytest.param(None, None, True, id="best-effort-always-meets"),
])
def test_met(compliance_share: float | None, target: float | None, met: bool) -> None:
    n_over = 0 if compliance_share is None else round((1 - compliance_share) * 1000)
    lat = [1.0] * (1000 - n_over) + [100.0] * n_over
    bound = None if compliance_share is None else 50.0
    assert summarise_tier("t", lat, [True] * 1000, bound, target).met is met
