"""Scorers: how much the policy prefers each candidate pool for a route, as a value in [0, 1].

The shape follows the Gateway API Inference Extension's endpoint picker: a scorer returns one
score per candidate in [0, 1] (1 = most preferred), the range is checked in one place
(:func:`checked_scores`: a score outside it is a bug in that scorer, reported with its name, never
clipped), the scorer's weight lives outside it (:class:`WeightedScorer`), and each scorer declares
the ``PoolModelMetrics`` fields it reads (``consumes``) so the metrics collector knows what to ask
for.  :func:`rank` orders candidates by the weighted sum of their scores.

The one scorer today is :class:`CostScorer`, and it reads no live metric: the policy's job is the
cheapest placement that meets each tier's bound.  The bound is a constraint, not a preference, so
live latency signals act as filters (``router_lib.policy_filters``): a pool meets the bound or it
is out.  Blending a latency score into the ranking would trade a little cost for latency the tier
did not ask for, or the reverse.  A static ranking also means the order of pools per route is
computed once per fleet (``router_lib.policy_stages.build_capacity_table``), not per decision,
which is much of what keeps a decision under a millisecond.  :func:`rank` refuses a scorer that
reads live metrics for that reason: ranking per decision would need its own code path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from router_lib.policy_candidates import ModelOnPool


class ScoreRangeError(ValueError):
    """A scorer returned a value outside [0, 1] (or not one value per candidate)."""


class Scorer(Protocol):
    """Scores the candidates of one route.

    ``scores(candidates, tier)`` returns one float in [0, 1] per candidate, in their order; 1 is the
    most preferred.  ``consumes`` names the ``PoolModelMetrics`` fields the scorer reads (empty:
    only the candidates' static facts, i.e. prices and profiles).  Its weight is not its business.
    """

    @property
    def name(self) -> str: ...

    @property
    def consumes(self) -> frozenset[str]: ...

    def scores(self, candidates: Sequence[ModelOnPool], tier: str) -> Sequence[float]: ...


@dataclass(frozen=True)
class CostScorer:
    """Cost per request at the tier's safe throughput, relative to the cheapest candidate.

    Formula: ``cheapest / own`` with ``own = price_per_hour / (3600 x safe_utilisation x X)``
    (``ModelOnPool.cost_per_million``): 1 for the cheapest, 1/2 for a pool whose requests cost
    twice as much, 0 where the tier does not fit at all (safe utilisation 0, infinite cost).
    Inputs: the pool's price and the model's profile on it; no live metric.
    """

    name: ClassVar[str] = "cost"
    consumes: ClassVar[frozenset[str]] = frozenset()

    def scores(self, candidates: Sequence[ModelOnPool], tier: str) -> list[float]:
        costs = [c.cost_per_million[tier] for c in candidates]
        cheapest = min(costs, default=math.inf)
        return [0.0 if math.isinf(cost) else cheapest / cost for cost in costs]


@dataclass(frozen=True)
class WeightedScorer:
    """A scorer and its weight (> 0) in the sum :func:`rank` orders by."""

    scorer: Scorer
    weight: float

    def __post_init__(self) -> None:
        if not self.weight > 0 or math.isinf(self.weight):
            raise ValueError(f"scorer {self.scorer.name}: weight must be a finite number > 0, got {self.weight!r}")


DEFAULT_SCORERS: tuple[WeightedScorer, ...] = (WeightedScorer(CostScorer(), 1.0),)


def checked_scores(scorer: Scorer, candidates: Sequence[ModelOnPool], tier: str) -> list[float]:
    """``scorer.scores(candidates, tier)``, checked: one value per candidate, each in [0, 1].

    The one place the range is enforced.  Raises :class:`ScoreRangeError` naming the scorer, the
    candidate and the value (NaN fails too).
    """
    values = list(scorer.scores(candidates, tier))
    if len(values) != len(candidates):
        raise ScoreRangeError(f"scorer {scorer.name}: {len(values)} scores for {len(candidates)} candidates")
    for candidate, value in zip(candidates, values, strict=True):
        if not 0.0 <= value <= 1.0:
            raise ScoreRangeError(f"scorer {scorer.name}: score {value!r} for {candidate.name} "
                                  f"({tier}) is outside [0, 1]")
    return values


def rank(candidates: Sequence[ModelOnPool], tier: str,
         scorers: Sequence[WeightedScorer] = DEFAULT_SCORERS) -> tuple[ModelOnPool, ...]:
    """Candidates by weighted score, highest first; ties by the tiers' fallback order, then name.

    Only scorers that read no live metric are accepted (see the module docstring).
    """
    total = [0.0] * len(candidates)
    for weighted in scorers:
        if weighted.scorer.consumes:
            raise ValueError(f"scorer {weighted.scorer.name} reads live metrics {sorted(weighted.scorer.consumes)}; "
                             "the policy ranks pools once per fleet, so its scorers must not")
        for i, value in enumerate(checked_scores(weighted.scorer, candidates, tier)):
            total[i] += weighted.weight * value
    order = sorted(range(len(candidates)),
                   key=lambda i: (-total[i], candidates[i].fallback_rank, candidates[i].name))
    return tuple(candidates[i] for i in order)
