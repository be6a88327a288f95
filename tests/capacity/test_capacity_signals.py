"""The live signals judge each model by what the plan sends the pool, and a batching replica's
normal queue is not a shortfall."""

from __future__ import annotations

import math

from router_lib.capacity_signals import forming_batches, live_needs, queue_need, safe_throughput_per_replica
from router_lib.capacity_types import CapacityReason, CapacitySettings
from router_lib.metrics import PoolModelMetrics
from tests.router_lib.builders import CPU, INF, fleet, profile

# One CPU pool serving a fast model (gold) and a slow one (bronze): a = 5 ms, b = 30 ms per request.
TWO_MODELS = fleet([("cpu", CPU, 0.2, 2)], [profile("a", CPU, {1: 5.0}), profile("b", CPU, {1: 30.0})])
SETTINGS = CapacitySettings()


def test_each_model_is_judged_by_the_tiers_the_plan_sends_it_not_the_pools_strictest() -> None:
    pool = TWO_MODELS.pool("cpu")
    gold, bronze = TWO_MODELS.tiers.tiers["gold"], TWO_MODELS.tiers.tiers["bronze"]
    s_gold = safe_throughput_per_replica(TWO_MODELS, pool, "b", gold, SETTINGS.policy)
    s_bronze = safe_throughput_per_replica(TWO_MODELS, pool, "b", bronze, SETTINGS.policy)
    assert 0 < s_gold < s_bronze  # b barely fits gold's bound on this CPU
    rate = 2.5 * s_bronze  # b's bronze traffic needs 3 replicas at bronze's utilisation
    entries = [PoolModelMetrics("cpu", "b", request_rate_per_s=rate), PoolModelMetrics("cpu", "a")]
    by_plan = live_needs(TWO_MODELS, pool, entries, 2, ("gold", "bronze"), SETTINGS,
                         model_tiers={"a": ("gold",), "b": ("bronze",)})
    pool_wide = live_needs(TWO_MODELS, pool, entries, 2, ("gold", "bronze"), SETTINGS)
    assert [(n.kind, n.replicas) for n in by_plan] == [(CapacityReason.UTILISATION_UP, 3)]
    assert pool_wide[0].replicas == math.ceil(rate / s_gold) > 3  # what judging b at gold would buy
    assert "(best effort)" in by_plan[0].why  # bronze has no bound


def test_spill_another_pool_carries_counts_on_the_pool_the_plan_places_it_on() -> None:
    pool = TWO_MODELS.pool("cpu")
    bronze = TWO_MODELS.tiers.tiers["bronze"]
    s = safe_throughput_per_replica(TWO_MODELS, pool, "b", bronze, SETTINGS.policy)
    own = [PoolModelMetrics("cpu", "b", request_rate_per_s=1.5 * s)]
    assert live_needs(TWO_MODELS, pool, own, 2, ("bronze",), SETTINGS, model_tiers={"b": ("bronze",)}) == []
    owed = live_needs(TWO_MODELS, pool, own, 2, ("bronze",), SETTINGS, spill_per_s={"b": s},
                      model_tiers={"b": ("bronze",)})
    assert [n.replicas for n in owed] == [3]


def test_a_batching_replica_may_hold_one_forming_batch_per_instance_in_its_queue() -> None:
    inf = fleet([("inf", INF, 0.75, 1)], [profile("e", INF, {1: 1.0, 16: 10.0}, instances=2)])
    batches = forming_batches(inf, inf.pool("inf"), ["e"])
    assert batches == 32  # 2 instances x batch 16
    assert queue_need(30.0, 1, SETTINGS, batches) is None  # 8 per replica would call this a shortfall
    need = queue_need(70.0, 1, SETTINGS, batches)
    assert need is not None and need.replicas == 3  # ceil(70 / 32)
    # a replica that does not batch keeps the configured threshold
    assert queue_need(30.0, 1, SETTINGS, 1) is not None
