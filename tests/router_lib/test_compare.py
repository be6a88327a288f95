"""What 'meets the SLAs' means in the comparison, right-sizing, never-worse and the planner error."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from router_lib.compare import HETEROGENEOUS, Comparison, FleetOutcome, meets_targets
from router_lib.domain import Tier, TierSet
from router_lib.planner import Plan
from router_lib.planner_search import Judge, right_size
from router_lib.simulator import SimSettings, simulate
from router_lib.workload import Stream, Workload, make_trace
from tests.router_lib.builders import CPU, GPU, fleet, profile

TIERS = TierSet({"gold": Tier("gold", 50.0, 0.999), "bronze": Tier("bronze", None)}, "gold", (GPU, CPU))


def one_pool(replicas: int):  # type: ignore[no-untyped-def]
    return fleet([("cpu", CPU, 0.1, replicas)], [profile("m", CPU, {1: 10.0}, max_batch=1, tail=1.0)], TIERS)


def trace(gold: float, bronze: float):  # type: ignore[no-untyped-def]
    return make_trace(Workload("w", "", 30.0, 4, (Stream("m", "gold", gold), Stream("m", "bronze", bronze))))


def test_a_fleet_whose_bronze_queue_grows_without_bound_does_not_meet_the_slas() -> None:
    f = one_pool(1)  # 100 req/s of capacity, 150 offered
    result = simulate(f, trace(1.0, 149.0), SimSettings(service_distribution="deterministic"))
    assert result.by_tier["bronze"].p99_ms > 1000 and not meets_targets(result, f)


def test_right_sizing_removes_replicas_the_simulation_shows_are_not_needed() -> None:
    f = one_pool(10)  # 1000 req/s of capacity for 100 offered
    t = trace(50.0, 50.0)
    judge = Judge(t, {("m", "gold"): 50.0, ("m", "bronze"): 50.0})
    sized, result = right_size(f, SimSettings(service_distribution="deterministic"), judge)
    assert meets_targets(result, sized)
    assert 1 <= sized.pools[0].replicas < 10
    if sized.pools[0].replicas > 1:  # one fewer would miss
        fewer = one_pool(sized.pools[0].replicas - 1)
        assert not meets_targets(simulate(fewer, t, SimSettings(service_distribution="deterministic")), fewer)


def _outcome(label: str, cost: float, meets: bool, milp_cost: float | None = None) -> FleetOutcome:
    f = one_pool(1)
    f = replace(f, pools=(replace(f.pools[0], price_per_hour_usd=cost),))
    plan = Plan(True, "optimal", (), milp_cost if milp_cost is not None else cost)
    return FleetOutcome(label, plan, plan.cost_per_hour_usd, f, None, meets, 0.8, milp_plan=plan)


W = Workload("w", "", 1.0, 1, (Stream("m", "gold", 1.0),))


@pytest.mark.parametrize(("het", "single", "never_worse"), [
    (0.9, 1.5, True), (1.5, 1.5, True), (1.6, 1.5, False),
], ids=["cheaper", "equal", "dearer"])
def test_never_worse_means_no_dearer_than_the_cheapest_single_kind_fleet_meeting_the_slas(
        het: float, single: float, never_worse: bool) -> None:
    c = Comparison(W, (_outcome(HETEROGENEOUS, het, True), _outcome("cpu only", single, True),
                       _outcome("gpu only", 0.1, False)))
    assert c.never_worse is never_worse
    assert c.best_single is not None and c.best_single.label == "cpu only"


def test_a_heterogeneous_fleet_missing_the_slas_is_not_never_worse() -> None:
    c = Comparison(W, (_outcome(HETEROGENEOUS, 0.1, False), _outcome("cpu only", 1.0, True)))
    assert not c.never_worse and c.saving_pct is None


def test_planner_error_is_the_milp_cost_over_the_smallest_simulated_fleet() -> None:
    assert _outcome("cpu only", 1.0, True, milp_cost=1.5).planner_error_pct == pytest.approx(50.0)
    assert _outcome("cpu only", 2.0, True, milp_cost=1.5).planner_error_pct == pytest.approx(-25.0)
    assert _outcome("cpu only", 1.0, False, milp_cost=1.5).planner_error_pct is None
    assert math.isinf(FleetOutcome("x", Plan(False, "no"), math.inf).cost_per_hour_usd)
