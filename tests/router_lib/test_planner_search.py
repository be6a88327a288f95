"""The simulation-in-the-loop search: its moves, its budget, and the never-worse property over
random mixes (the fast version; the full one runs in ``python -m router_lib compare --sensitivity``)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from router_lib.compare import compare
from router_lib.domain import Tier, TierSet
from router_lib.planner import instance_kinds
from router_lib.planner_property import MixSpace, check_mixes, random_mix
from router_lib.planner_search import (
    Judge,
    SearchLimits,
    Start,
    candidate_moves,
    fleet_cost,
    keeps_up,
    search_fleet,
    with_replicas,
)
from router_lib.simulator import SimSettings
from router_lib.workload import Stream, Workload, make_trace
from tests.router_lib.builders import CPU, GPU, INF, fleet, profile

TIERS = TierSet({"gold": Tier("gold", 50.0, 0.999), "silver": Tier("silver", 150.0, 0.999),
                 "bronze": Tier("bronze", None)}, "silver", (GPU, INF, CPU))

# The shape of the real fleet at test scale: a cheap CPU slow on the big model, a mid-price
# Inferentia fast on it that cannot run the small model, and a dear GPU that runs both.
SHAPED = fleet(
    [("cpu", CPU, 0.15, 1), ("gpu", GPU, 1.0, 1), ("inf", INF, 0.75, 1)],
    [profile("embed", CPU, {1: 10.0, 8: 60.0}, instances=2, tail=2.0),
     profile("embed", GPU, {1: 8.0, 32: 33.0}, tail=1.3),
     profile("embed", INF, {1: 1.0, 16: 11.0}, instances=2, tail=1.05),
     profile("digits", CPU, {1: 1.0, 64: 2.0}, tail=2.0),
     profile("digits", GPU, {1: 1.0, 64: 1.3}, tail=1.3)],
    TIERS,
)
FAST = SimSettings(seed=3)


def test_moves_lower_the_cost_and_come_largest_saving_first() -> None:
    f = with_replicas(SHAPED, {"cpu": 3, "gpu": 0, "inf": 1})
    moves = candidate_moves(f, instance_kinds(SHAPED))
    assert moves and all(m.saving_per_hour_usd > 0 for m in moves)
    assert [m.saving_per_hour_usd for m in moves] == sorted((m.saving_per_hour_usd for m in moves), reverse=True)
    described = {m.description for m in moves}
    assert "swap 1 inf for 4 cpu" in described  # 4 x 0.15 = 0.60 < 0.75: as many as one inf pays for
    assert "remove 1 cpu" in described
    for m in moves:
        assert fleet_cost(m.apply(f)) == pytest.approx(fleet_cost(f) - m.saving_per_hour_usd)


def test_swapping_cheap_replicas_for_a_dear_one_takes_the_fewest_that_pay_for_it() -> None:
    f = with_replicas(SHAPED, {"cpu": 6, "gpu": 0, "inf": 0})
    swap = next(m for m in candidate_moves(f, instance_kinds(SHAPED)) if m.description.endswith("for 1 inferentia"))
    assert swap.removals == {"cpu": 6}  # 6 x 0.15 = 0.90 > 0.75 > 5 x 0.15
    assert {(p.name, p.replicas) for p in swap.apply(f).pools} == {("inferentia", 1)}


def test_two_pools_of_one_kind_can_merge_with_one_replica_fewer() -> None:
    f = with_replicas(SHAPED, {"cpu": 3, "gpu": 0, "inf": 0})
    split = with_replicas(f, {}, [replace(f.pool("cpu"), name="cpu-2", replicas=2)])
    merge = next(m for m in candidate_moves(split, instance_kinds(SHAPED)) if m.description.startswith("merge cpu-2"))
    assert {(p.name, p.replicas) for p in merge.apply(split).pools} == {("cpu", 4)}


def test_a_fleet_below_the_mean_demand_of_a_model_cannot_keep_up() -> None:
    one_cpu = with_replicas(SHAPED, {"cpu": 1, "gpu": 0, "inf": 0})  # embed on CPU: 2 x 8 / 60 ms = 267 req/s
    assert keeps_up(one_cpu, {("embed", "gold"): 200.0})
    assert not keeps_up(one_cpu, {("embed", "gold"): 300.0})
    assert not keeps_up(with_replicas(SHAPED, {"cpu": 0, "gpu": 0}), {("digits", "bronze"): 1.0})


def _workload(embed: float, digits: float) -> Workload:
    return Workload("w", "", 20.0, 5, (Stream("embed", "gold", embed), Stream("digits", "bronze", digits)))


def test_the_search_swaps_kinds_when_that_is_cheaper_and_the_slas_hold() -> None:
    w = _workload(1500.0, 200.0)  # embed on CPU: 267 req/s a replica at most; one inf: 2909
    judge = Judge(make_trace(w), w.mean_demand())
    cpu_only = with_replicas(SHAPED, {"cpu": 12, "gpu": 0, "inf": 0})
    found = search_fleet([Start("cpu only", cpu_only, FAST)], instance_kinds(SHAPED), judge)
    assert found is not None and found.stopped == "local optimum"
    assert found.cost_per_hour_usd < fleet_cost(cpu_only)
    assert any(m.startswith("swap") for m in found.moves)
    assert judge.judge(found.fleet, FAST)[0]


def test_the_search_stops_at_its_budget_with_a_fleet_that_meets_the_slas() -> None:
    w = _workload(100.0, 100.0)
    judge = Judge(make_trace(w), w.mean_demand())
    big = with_replicas(SHAPED, {"cpu": 10, "gpu": 2, "inf": 2})
    found = search_fleet([Start("big", big, FAST)], instance_kinds(SHAPED), judge,
                         limits=SearchLimits(max_simulations=3))
    assert found is not None and found.stopped == "budget: 3 simulations"
    assert judge.judge(found.fleet, FAST)[0] and found.cost_per_hour_usd < fleet_cost(big)


def test_a_start_that_misses_the_slas_is_never_the_answer() -> None:
    w = _workload(400.0, 200.0)
    judge = Judge(make_trace(w), w.mean_demand())
    too_small = with_replicas(SHAPED, {"cpu": 1, "gpu": 0, "inf": 0})
    assert search_fleet([Start("too small", too_small, FAST)], instance_kinds(SHAPED), judge) is None


def test_the_comparison_takes_the_cheapest_single_kind_fleet_it_saw_as_the_baseline() -> None:
    c = compare(_workload(60.0, 300.0), SHAPED, settings=FAST, limits=SearchLimits(max_simulations=15))
    assert c.never_worse
    for o in c.outcomes:
        assert o.meets_sla, o.label  # inferentia only included: digits runs on its host CPU
    best = c.best_single
    assert best is not None and c.heterogeneous.cost_per_hour_usd <= best.cost_per_hour_usd + 1e-9


def test_random_mixes_are_seeded() -> None:
    space = MixSpace(("embed", "digits"), ("gold", "silver", "bronze"), 5.0, 80.0, 20.0)
    assert random_mix(space, 7) == random_mix(space, 7)
    assert random_mix(space, 7) != random_mix(space, 8)


PROPERTY_MIXES = 50


def test_no_single_kind_fleet_beats_the_heterogeneous_one_on_random_mixes() -> None:
    """The fast version of the property (issue #12): 50 seeded mixes at test scale, each compared in
    full (plans, right-sizing, the search with a small budget), the heterogeneous fleet re-simulated.
    About 40 s on the shared 2-core VM (the issue asks for under 2 minutes)."""
    space = MixSpace(("embed", "digits"), ("gold", "silver", "bronze"), 10.0, 1200.0, 12.0)
    checks = check_mixes(SHAPED, space, range(PROPERTY_MIXES), settings=FAST,
                         limits=SearchLimits(max_simulations=12, time_limit_s=10.0))
    failing = [c.comparison.workload.description for c in checks if not c.holds]
    assert not failing
    assert len(checks) == PROPERTY_MIXES
    # The property is not vacuous: single-kind fleets met the SLAs, and mixing paid on some mixes.
    assert sum(c.comparison.best_single is not None for c in checks) >= PROPERTY_MIXES * 0.9
    assert sum((c.comparison.saving_pct or 0.0) > 1.0 for c in checks) >= 5
