"""The policy's scorers as tables: values in [0, 1] enforced in one place, weights outside the
scorer, metrics declared, and the ranking they give.

THREE_POOLS (tests/router_lib/builders.py), model ``embed``: cost per 1M requests at the tier's safe
throughput is, for gold, inf $0.098, gpu $0.434, cpu $2.083; for bronze, inf $0.098, cpu $0.217,
gpu $0.434.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import pytest

from router_lib.metrics import PoolModelMetrics
from router_lib.policy import CONSUMED_METRICS, PolicySettings
from router_lib.policy_candidates import ModelOnPool
from router_lib.policy_filters import FILTERS
from router_lib.policy_scorers import (
    DEFAULT_SCORERS,
    CostScorer,
    ScoreRangeError,
    WeightedScorer,
    checked_scores,
    rank,
)
from router_lib.policy_signals import DemandEstimate
from router_lib.policy_stages import build_capacity_table
from tests.router_lib.builders import EMBED, THREE_POOLS

CANDIDATES = build_capacity_table(THREE_POOLS, PolicySettings()).serving[EMBED]  # cpu, gpu, inf
METRIC_FIELDS = {f.name for f in dataclasses.fields(PoolModelMetrics)} - {"pool", "model"}


@dataclass(frozen=True)
class Fixed:
    """A scorer that gives fixed values (by pool name), to test what is around scorers."""

    values: tuple[tuple[str, float], ...]
    name: ClassVar[str] = "fixed"
    consumes: ClassVar[frozenset[str]] = frozenset()

    def scores(self, candidates: Sequence[ModelOnPool], tier: str) -> list[float]:
        by_pool = dict(self.values)
        return [by_pool[c.name] for c in candidates]


@dataclass(frozen=True)
class ReadsQueues(Fixed):
    consumes: ClassVar[frozenset[str]] = frozenset({"queue_depth"})


def by_pool(values: Sequence[float]) -> dict[str, float]:
    return {c.name: round(v, 3) for c, v in zip(CANDIDATES, values, strict=True)}


@pytest.mark.parametrize(("tier", "expected"), [
    ("gold", {"cpu": 0.047, "gpu": 0.225, "inf": 1.0}),
    ("bronze", {"cpu": 0.45, "gpu": 0.225, "inf": 1.0}),
], ids=["gold-cpu-barely-fits", "bronze-cpu-is-second"])
def test_the_cost_score_is_the_cheapest_cost_over_the_pools_own(tier: str, expected: dict[str, float]) -> None:
    assert by_pool(checked_scores(CostScorer(), CANDIDATES, tier)) == expected


def test_a_tier_that_does_not_fit_on_a_pool_scores_zero_there() -> None:
    unfit = dataclasses.replace(CANDIDATES[0], cost_per_million={"gold": math.inf})
    assert CostScorer().scores([unfit, CANDIDATES[2]], "gold") == [0.0, 1.0]
    assert CostScorer().scores([unfit], "gold") == [0.0]


@pytest.mark.parametrize("bad", [1.5, -0.1, math.nan, math.inf], ids=["above-one", "negative", "nan", "infinite"])
def test_a_score_outside_zero_to_one_is_refused_with_the_scorers_name(bad: float) -> None:
    with pytest.raises(ScoreRangeError, match=r"scorer fixed: score .* for gpu \(gold\) is outside \[0, 1\]"):
        checked_scores(Fixed((("cpu", 0.5), ("gpu", bad), ("inf", 1.0))), CANDIDATES, "gold")


def test_a_scorer_must_score_every_candidate() -> None:
    class Short(Fixed):
        def scores(self, candidates: Sequence[ModelOnPool], tier: str) -> list[float]:
            return [1.0]

    with pytest.raises(ScoreRangeError, match="1 scores for 3 candidates"):
        checked_scores(Short(()), CANDIDATES, "gold")


@pytest.mark.parametrize(("scorers", "expected"), [
    (DEFAULT_SCORERS, ["inf", "gpu", "cpu"]),
    ((WeightedScorer(Fixed((("cpu", 1.0), ("gpu", 0.0), ("inf", 0.5))), 1.0),), ["cpu", "inf", "gpu"]),
    ((WeightedScorer(CostScorer(), 1.0), WeightedScorer(Fixed((("cpu", 1.0), ("gpu", 0.0), ("inf", 0.0))), 1.0)),
     ["cpu", "inf", "gpu"]),
    ((WeightedScorer(CostScorer(), 10.0), WeightedScorer(Fixed((("cpu", 1.0), ("gpu", 0.0), ("inf", 0.0))), 1.0)),
     ["inf", "gpu", "cpu"]),
    ((WeightedScorer(Fixed((("cpu", 0.5), ("gpu", 0.5), ("inf", 0.5))), 1.0),), ["gpu", "inf", "cpu"]),
], ids=["cost-first", "another-scorer-alone", "equal-weights-blend", "the-weight-decides", "ties-in-fallback-order"])
def test_rank_orders_by_the_weighted_sum_of_scores(scorers: tuple[WeightedScorer, ...], expected: list[str]) -> None:
    assert [c.name for c in rank(CANDIDATES, "gold", scorers)] == expected


def test_rank_refuses_a_scorer_that_reads_live_metrics() -> None:
    with pytest.raises(ValueError, match=r"scorer fixed reads live metrics \['queue_depth'\]"):
        rank(CANDIDATES, "gold", (WeightedScorer(ReadsQueues((("cpu", 1.0), ("gpu", 1.0), ("inf", 1.0))), 1.0),))


@pytest.mark.parametrize("weight", [0.0, -1.0, math.inf, math.nan], ids=["zero", "negative", "infinite", "nan"])
def test_a_scorer_weight_is_a_finite_positive_number(weight: float) -> None:
    with pytest.raises(ValueError, match="scorer cost: weight must be a finite number > 0"):
        WeightedScorer(CostScorer(), weight)


@pytest.mark.parametrize("scorer", [s.scorer for s in DEFAULT_SCORERS], ids=[s.scorer.name for s in DEFAULT_SCORERS])
def test_every_scorer_declares_only_fields_of_pool_model_metrics(scorer: object) -> None:
    assert scorer.consumes <= METRIC_FIELDS  # type: ignore[attr-defined]


def test_consumed_metrics_is_what_the_filters_scorers_and_demand_estimate_declare() -> None:
    declared = set().union(*(f.consumes for f in FILTERS), *(s.scorer.consumes for s in DEFAULT_SCORERS),
                           DemandEstimate.consumes)
    assert CONSUMED_METRICS == declared
    assert CONSUMED_METRICS <= METRIC_FIELDS
    # a change here changes what the collector scrapes: make it on purpose
    assert CONSUMED_METRICS == {"ready", "error_rate", "queue_depth", "p99_ms", "emulation_lag_ms",
                                "request_rate_per_s"}
