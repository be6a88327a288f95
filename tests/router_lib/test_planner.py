"""Planner cases whose optimum is known by hand, and infeasibility with a reason."""

from __future__ import annotations

import math

import pytest

from router_lib.domain import Accelerator
from router_lib.planner import host_cpu_kinds, plan_fleet, plan_single_accelerator, single_kind_kinds
from tests.router_lib.builders import CPU, GPU, INF, fleet, profile, tiers

# Kind "big" (GPU): 1 ms per request -> X = 1000 req/s, safe for bronze (max utilisation 0.8) 800 req/s, $1.00/h.
# Kind "small" (CPU): 8 ms per request -> X = 125 req/s, safe 100 req/s, $0.20/h.
TWO_KINDS = fleet(
    [("small", CPU, 0.20, 1), ("big", GPU, 1.00, 1)],
    [profile("m", CPU, {1: 8.0}, tail=1.0), profile("m", GPU, {1: 1.0}, tail=1.0)],
    tiers(bronze=None),
)


@pytest.mark.parametrize(("demand", "cost", "replicas"), [
    (250, 0.60, {"cpu-bronze": 3}),                 # 3 small (0.60) beat 1 big (1.00)
    (750, 1.00, {"gpu-bronze": 1}),                 # 1 big (1.00) beats 8 small (1.60)
    (900, 1.20, {"gpu-bronze": 1, "cpu-bronze": 1}),  # big + 1 small (1.20) beat 2 big or 9 small
    (100, 0.20, {"cpu-bronze": 1}),
], ids=["small-lumps-win", "one-big-wins", "mix-wins", "exactly-one-small"])
def test_hand_computed_optima(demand: float, cost: float, replicas: dict[str, int]) -> None:
    plan = plan_fleet({("m", "bronze"): demand}, TWO_KINDS)
    assert plan.feasible and plan.cost_per_hour_usd == pytest.approx(cost)
    assert {p.name: p.replicas for p in plan.pools} == replicas
    assert sum(plan.split("m", "bronze").values()) == pytest.approx(demand)


def test_the_tier_bound_limits_what_a_replica_may_carry() -> None:
    # 1 instance, batch 1 only, 10 ms, tail 1: gold 50 ms x 0.8 = 40 ms: 10/(1-u)... u/(1-u) <= 3 -> any u,
    # so u = max_utilisation 0.8 -> 80 req/s.  With a 15 ms bound (12 ms): u/(1-u) <= 0.2 -> u = 1/6.
    f = fleet([("cpu", CPU, 0.1, 1)], [profile("m", CPU, {1: 10.0}, tail=1.0)], tiers(gold=15.0, bronze=None))
    assert plan_fleet({("m", "bronze"): 160}, f).cost_per_hour_usd == pytest.approx(0.2)  # 2 x 80
    gold = plan_fleet({("m", "gold"): 160}, f)
    assert {p.name: p.replicas for p in gold.pools} == {"cpu-gold": math.ceil(160 / (100 / 6))}


def test_gold_and_bronze_share_a_gold_class_pool_when_that_is_cheaper() -> None:
    f = fleet([("cpu", CPU, 0.1, 1)], [profile("m", CPU, {1: 10.0}, tail=1.0)], tiers(gold=15.0, bronze=None))
    plan = plan_fleet({("m", "gold"): 10, ("m", "bronze"): 5}, f)
    # 10/16.7 + 5/16.7 = 0.9 replica of gold class -> 1 replica, cheaper than 1 gold + 1 bronze.
    assert {p.name: p.replicas for p in plan.pools} == {"cpu-gold": 1}


def test_single_accelerator_without_a_profile_for_a_model_is_infeasible_with_the_reason() -> None:
    f = fleet([("cpu", CPU, 0.1, 1), ("inf", INF, 0.7, 1)],
              [profile("digits", CPU, {1: 1.0}), profile("embed", CPU, {1: 5.0}), profile("embed", INF, {1: 1.0})])
    plan = plan_single_accelerator({("digits", "gold"): 10, ("embed", "gold"): 10}, f, Accelerator.INFERENTIA)
    assert not plan.feasible and "no profile for digits on inferentia" in plan.reason
    assert plan_single_accelerator({("digits", "gold"): 10}, f, Accelerator.CPU).feasible


def test_a_bound_no_kind_can_meet_is_infeasible_with_the_reason() -> None:
    f = fleet([("gpu", GPU, 1.0, 1)], [profile("m", GPU, {1: 10.0})], tiers(gold=5.0))
    plan = plan_fleet({("m", "gold"): 1}, f)
    assert not plan.feasible and "within the gold bound" in plan.reason


def test_unknown_tier_in_demand_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown tier"):
        plan_fleet({("m", "platinum"): 1}, TWO_KINDS)


def test_plan_to_fleet_keeps_replicas_prices_and_models() -> None:
    plan = plan_fleet({("m", "bronze"): 900}, TWO_KINDS)
    f = plan.to_fleet(TWO_KINDS)
    assert {(p.name, p.replicas, p.price_per_hour_usd, p.models) for p in f.pools} == {
        ("gpu-bronze", 1, 1.0, ("m",)), ("cpu-bronze", 1, 0.2, ("m",))}


# digits has no Inferentia profile; the GPU runs both models.
NO_NEURON_DIGITS = fleet(
    [("cpu", CPU, 0.1, 1), ("gpu", GPU, 1.0, 1), ("inf", INF, 0.7, 1)],
    [profile("digits", CPU, {1: 1.0}), profile("digits", GPU, {1: 1.0}), profile("embed", CPU, {1: 5.0}),
     profile("embed", GPU, {1: 2.0}), profile("embed", INF, {1: 1.0})])


def test_an_inferentia_only_fleet_serves_what_neuron_cannot_run_on_its_host_cpu_at_its_price() -> None:
    demand = {("digits", "gold"): 10, ("embed", "gold"): 10}
    plan = plan_single_accelerator(demand, NO_NEURON_DIGITS, Accelerator.INFERENTIA, host_cpu=True)
    assert plan.feasible
    host = next(p for p in plan.pools if "digits" in p.models)
    # the model's CPU profile (accelerator CPU) on an Inferentia instance, at that instance's price
    assert (host.name, host.accelerator, host.instance_type, host.price_per_hour_usd, host.models) == (
        "inferentia-host-gold", CPU, "i-small", 0.7, ("digits",))
    assert plan.cost_per_hour_usd == pytest.approx(1.4)  # one inf2 for embed, one for digits on its host
    assert {p.accelerator for p in plan.to_fleet(NO_NEURON_DIGITS).pools} == {INF, CPU}


def test_a_gpu_only_fleet_needs_no_host_cpu_because_the_gpu_runs_every_model() -> None:
    assert host_cpu_kinds(NO_NEURON_DIGITS, Accelerator.GPU) == ()
    assert [k.name for k in single_kind_kinds(NO_NEURON_DIGITS, Accelerator.GPU)] == ["gpu"]
    assert host_cpu_kinds(NO_NEURON_DIGITS, Accelerator.CPU) == ()


def test_a_model_no_cpu_can_run_either_stays_infeasible_on_the_host() -> None:
    f = fleet([("inf", INF, 0.7, 1)], [profile("embed", INF, {1: 1.0}), profile("other", GPU, {1: 1.0})])
    plan = plan_single_accelerator({("other", "gold"): 1}, f, Accelerator.INFERENTIA, host_cpu=True)
    assert not plan.feasible and "no profile for other on inferentia" in plan.reason


def _sharing(shared: bool, service_ms: float = 12.0):
    import dataclasses

    f = fleet([("cpu", CPU, 1.0, 1)], [profile("m", CPU, {1: service_ms}, max_batch=1, tail=1.0)],
              tiers(gold=50.0, silver=150.0, bronze=None))
    return dataclasses.replace(f, pools=tuple(dataclasses.replace(p, share_tiers=shared) for p in f.pools))


def test_a_kind_whose_tiers_share_its_pools_is_one_group_sized_for_the_sum_of_its_tiers() -> None:
    # 12 ms per request: 66.7 req/s per replica at max utilisation 0.8, under every tier (gold's
    # 40 ms at the default headroom, less one running 12 ms execution of a looser tier, still allows it)
    demand = {("m", "gold"): 30.0, ("m", "silver"): 30.0}
    shared = plan_fleet(demand, _sharing(True))
    assert shared.cost_per_hour_usd == 1.0 and [p.name for p in shared.pools] == ["cpu-shared"]
    assert shared.pools[0].share_tiers and shared.to_fleet(_sharing(True)).pools[0].share_tiers
    assert shared.split("m", "gold") == {"cpu-shared": 30.0} and shared.split("m", "silver") == {"cpu-shared": 30.0}
    assert plan_fleet(demand, _sharing(False)).cost_per_hour_usd == 1.0  # apart: silver rides the gold class


def test_a_shared_group_holds_each_class_to_its_bound_over_itself_and_the_classes_above() -> None:
    plan = plan_fleet({("m", "gold"): 100.0, ("m", "bronze"): 20.0}, _sharing(True))
    assert plan.pools[0].replicas == 2  # gold's row: 100 / 66.7; the total: 120 / 66.7
    plan = plan_fleet({("m", "gold"): 100.0, ("m", "bronze"): 40.0}, _sharing(True))
    assert plan.pools[0].replicas == 3  # the total row: 140 / 66.7


def test_gold_cannot_share_a_pool_whose_one_execution_takes_most_of_its_bound() -> None:
    # 25 ms executions: behind a running bronze batch gold waits up to 25 ms more, which its 40 ms
    # (the bound at the default headroom) cannot hold; alone on the kind it can (15 req/s per replica)
    assert not plan_fleet({("m", "gold"): 10.0, ("m", "bronze"): 10.0}, _sharing(True, 25.0)).feasible
    assert plan_fleet({("m", "gold"): 10.0}, _sharing(True, 25.0)).feasible
    assert plan_fleet({("m", "gold"): 10.0, ("m", "bronze"): 10.0}, _sharing(False, 25.0)).feasible
