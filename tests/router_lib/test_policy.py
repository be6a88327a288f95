"""Routing policy as tables: filtering, cost order, spill-over, fallback, health, stability.

The fleet (tests/router_lib/builders.py THREE_POOLS) has, for gold (p99 <= 50 ms, headroom 0.8):
inf 2133 req/s safe at $0.10/1M, gpu 640 req/s at $0.43/1M, cpu 2 x 6.7 req/s at $2.08/1M; for
bronze: inf 2133 at $0.10/1M, cpu 2 x 64 at $0.22/1M, gpu 640 at $0.43/1M.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import pytest

from router_lib.domain import Fleet
from router_lib.metrics import FleetMetrics
from router_lib.policy import PolicyInputs, PolicySettings, PolicyState, decide
from router_lib.policy_stages import bounded_step, largest_remainder
from tests.router_lib.builders import CPU, EMBED, GPU, INF, THREE_POOLS, fleet, metrics, profile, tiers

READY = {"cpu": 2, "gpu": 1, "inf": 1}


def weights_for(tier: str, demand: float, *, ready: Mapping[str, int] = READY,
                signals: Mapping[tuple[str, str], Mapping[str, object]] | None = None,
                f: Fleet = THREE_POOLS) -> dict[str, int]:
    inputs = PolicyInputs(f, metrics(signals), dict(ready), PolicySettings(), {(EMBED, tier): demand})
    decision, _ = decide(inputs, None, 0.0)
    return decision.weights(EMBED, tier)


@pytest.mark.parametrize(("tier", "demand", "ready", "signals", "expected"), [
    ("gold", 100, READY, None, {"inf": 100, "gpu": 0, "cpu": 0}),
    ("gold", 2500, READY, None, {"inf": 85, "gpu": 15, "cpu": 0}),
    ("gold", 0, READY, None, {"inf": 100, "gpu": 0, "cpu": 0}),
    ("gold", 100, READY, {("inf", EMBED): {"queue_depth": 2000.0}}, {"inf": 0, "gpu": 100, "cpu": 0}),
    ("gold", 100, READY, {("inf", EMBED): {"p99_ms": 80.0}}, {"inf": 0, "gpu": 100, "cpu": 0}),
    ("gold", 100, {"cpu": 2, "gpu": 1, "inf": 0}, None, {"inf": 0, "gpu": 100, "cpu": 0}),
    ("gold", 100, READY, {("inf", EMBED): {"ready": False}}, {"inf": 0, "gpu": 100, "cpu": 0}),
    ("gold", 100, READY, {("inf", EMBED): {"error_rate": 0.9}}, {"inf": 0, "gpu": 100, "cpu": 0}),
    ("bronze", 100, READY, None, {"inf": 100, "gpu": 0, "cpu": 0}),
    ("bronze", 100, {"cpu": 2, "gpu": 1, "inf": 0}, None, {"inf": 0, "gpu": 0, "cpu": 100}),
    ("bronze", 2200, READY, None, {"inf": 97, "gpu": 0, "cpu": 3}),
    ("gold", 100, READY, {("inf", EMBED): {"emulation_lag_ms": 60.0}}, {"inf": 0, "gpu": 100, "cpu": 0}),
    ("gold", 100, READY, {("inf", EMBED): {"emulation_lag_ms": 3.0}}, {"inf": 100, "gpu": 0, "cpu": 0}),
    ("gold", 100, READY, {("inf", EMBED): {"emulation_lag_ms": 10.0, "queue_depth": 64.0}},
     {"inf": 0, "gpu": 100, "cpu": 0}),
], ids=["cheapest-feasible-takes-all", "spills-in-cost-order", "zero-demand-still-routed",
        "deep-queue-breaks-bound", "measured-p99-breaks-bound", "unhealthy-pool-excluded",
        "model-not-ready", "failing-pool", "bronze-cheapest-capacity", "bronze-next-cheapest",
        "bronze-spills-to-cpu-before-gpu", "emulation-lag-breaks-bound", "small-lag-tolerated",
        "lag-times-queued-executions-breaks-bound"])
def test_weights(tier: str, demand: float, ready: Mapping[str, int],
                 signals: Mapping[tuple[str, str], Mapping[str, object]] | None, expected: dict[str, int]) -> None:
    assert weights_for(tier, demand, ready=ready, signals=signals) == expected


def test_no_feasible_pool_falls_back_gpu_then_inferentia_then_cpu() -> None:
    impossible = fleet([("cpu", CPU, 0.05, 2), ("gpu", GPU, 1.0, 1), ("inf", INF, 0.75, 1)],
                       [profile(EMBED, CPU, {1: 10.0}), profile(EMBED, GPU, {1: 5.0}), profile(EMBED, INF, {1: 2.0})],
                       tiers(gold=1.0))
    assert weights_for("gold", 10, f=impossible) == {"cpu": 0, "gpu": 100, "inf": 0}
    assert weights_for("gold", 10, f=impossible, ready={"cpu": 1, "gpu": 0, "inf": 1}) == \
        {"cpu": 0, "gpu": 0, "inf": 100}
    assert weights_for("gold", 10, f=impossible, ready={"cpu": 1, "gpu": 0, "inf": 0}) == \
        {"cpu": 100, "gpu": 0, "inf": 0}


def test_every_pool_down_still_gives_a_valid_route_to_the_first_in_fallback_order() -> None:
    assert weights_for("gold", 10, ready={"cpu": 0, "gpu": 0, "inf": 0}) == {"cpu": 0, "gpu": 100, "inf": 0}


def test_a_model_no_pool_serves_is_unroutable_with_a_reason() -> None:
    f = THREE_POOLS
    ghost = Fleet(f.pools, f.profiles, f.tiers, f.prices, (*f.models, "ghost"))
    decision, _ = decide(PolicyInputs(ghost, metrics(), READY), None, 0.0)
    assert ("ghost", "gold") not in decision.routes
    assert "no pool serves ghost" in decision.unroutable[("ghost", "gold")]
    assert any("UNROUTABLE" in line for line in decision.explain())


def test_explain_gives_every_pool_a_reason() -> None:
    decision, _ = decide(PolicyInputs(THREE_POOLS, metrics({("inf", EMBED): {"queue_depth": 5000.0}}), READY,
                                      demand_per_s={(EMBED, "gold"): 100}), None, 0.0)
    lines = "\n".join(decision.explain())
    assert "predicted " in lines and "> 40.0 ms" in lines
    assert all(str(pw.reason) for route in decision.routes.values() for pw in route.pools)


def test_an_unhealthy_pool_drops_to_zero_at_once_despite_the_step_limit() -> None:
    inputs = PolicyInputs(THREE_POOLS, metrics(), READY, PolicySettings(max_step=5), {(EMBED, "gold"): 100})
    _, state = decide(inputs, None, 0.0)
    down = PolicyInputs(THREE_POOLS, metrics(), {**READY, "inf": 0}, PolicySettings(max_step=5), {(EMBED, "gold"): 100})
    decision, _ = decide(down, state, 1.0)
    assert decision.weights(EMBED, "gold") == {"cpu": 0, "gpu": 100, "inf": 0}


def test_weight_moves_are_bounded_per_tick_and_converge() -> None:
    settings = PolicySettings(max_step=10, deadband=0)
    inputs = PolicyInputs(THREE_POOLS, metrics(), READY, settings, {(EMBED, "bronze"): 100})
    _, state = decide(inputs, None, 0.0)
    # inf goes away as a bronze candidate only by price: make cpu the cheapest by doubling inf's price
    pricier = fleet([("cpu", CPU, 0.05, 2), ("gpu", GPU, 1.0, 1), ("inf", INF, 30.0, 1)],
                    [THREE_POOLS.profiles[(EMBED, a)] for a in (CPU, GPU, INF)])
    history = []
    for tick in range(1, 15):
        d, state = decide(PolicyInputs(pricier, metrics(), READY, settings, {(EMBED, "bronze"): 100}), state, tick)
        history.append(d.weights(EMBED, "bronze")["cpu"])
    steps = [b - a for a, b in zip([0, *history], history, strict=False)]
    assert max(steps) <= 10 and history[-1] == 100


@pytest.mark.parametrize(("previous", "target", "excluded", "expected"), [
    ([100, 0, 0], [0, 100, 0], [False, False, False], [75, 25, 0]),
    ([100, 0, 0], [0, 100, 0], [True, False, False], [0, 100, 0]),
    ([50, 50, 0], [51, 49, 0], [False, False, False], [50, 50, 0]),
    ([40, 40, 20], [0, 100, 0], [False, False, True], [15, 85, 0]),
], ids=["step-limited", "excluded-drops-now", "deadband-holds", "freed-weight-follows-target"])
def test_bounded_step(previous: list[int], target: list[int], excluded: list[bool], expected: list[int]) -> None:
    got = bounded_step(previous, target, excluded, PolicySettings(max_step=25, deadband=2))
    assert got == expected and sum(got) == 100


@pytest.mark.parametrize(("shares", "expected"), [
    ([1, 1, 1], [34, 33, 33]), ([0.0, 0.0], [100, 0]), ([2133, 367], [85, 15]), ([1e-9, 0, 5], [0, 0, 100]),
])
def test_largest_remainder_sums_exactly(shares: list[float], expected: list[int]) -> None:
    assert largest_remainder(shares, 100) == expected


def test_weights_settle_under_noisy_metrics() -> None:
    """Demand noise of +-20% around a split point and noisy queues and p99s must not make weights flap."""
    rng = random.Random(7)
    state: PolicyState | None = None
    history: list[dict[str, int]] = []
    for tick in range(300):
        demand = 2300 * (1 + rng.uniform(-0.2, 0.2))
        noisy = metrics({(pool, EMBED): {"queue_depth": rng.uniform(0, 20), "p99_ms": rng.uniform(5, 30)}
                         for pool in ("inf", "gpu", "cpu")}, t=tick)
        decision, state = decide(PolicyInputs(THREE_POOLS, noisy, READY, PolicySettings(), {(EMBED, "gold"): demand}),
                                 state, float(tick))
        history.append(decision.weights(EMBED, "gold"))
    changes = sum(1 for a, b in zip(history[150:], history[151:], strict=False) if a != b)
    assert changes <= 3, f"weights changed {changes} times in 150 ticks"
    assert history[-1]["gpu"] > 0 and history[-1]["inf"] > 0


def test_bronze_goes_to_pools_carrying_no_gold_when_it_can() -> None:
    twins = fleet([("inf-a", INF, 0.75, 1), ("inf-b", INF, 0.75, 1)], [profile(EMBED, INF, {1: 2.0, 16: 12.0})])
    decision, _ = decide(PolicyInputs(twins, metrics(), {"inf-a": 1, "inf-b": 1}, PolicySettings(),
                                      {(EMBED, "gold"): 100, (EMBED, "bronze"): 100}), None, 0.0)
    gold, bronze = decision.weights(EMBED, "gold"), decision.weights(EMBED, "bronze")
    assert gold == {"inf-a": 100, "inf-b": 0} and bronze == {"inf-a": 0, "inf-b": 100}


def test_without_per_route_demand_the_observed_rate_is_split_over_the_tiers() -> None:
    observed = metrics({("gpu", EMBED): {"request_rate_per_s": 7500.0}})  # 2500 per tier
    _, state = decide(PolicyInputs(THREE_POOLS, observed, READY, PolicySettings(), None), None, 0.0)
    assert state.demand_per_s == {(EMBED, t): pytest.approx(2500.0) for t in ("gold", "silver", "bronze")}


def test_demand_falls_only_after_the_stabilisation_window() -> None:
    settings = PolicySettings(demand_window_s=30.0)
    state = None
    for t, rate in ((0, 1000.0), (10, 100.0), (29, 100.0), (31, 100.0)):
        _, state = decide(PolicyInputs(THREE_POOLS, metrics(), READY, settings, {(EMBED, "gold"): rate}), state, float(t))
        expected = 1000.0 if t < 30 else 100.0
        assert state.demand_per_s[(EMBED, "gold")] == expected, t


def test_the_capacity_table_is_reused_for_equal_inputs_and_rebuilt_for_new_ones() -> None:
    _, state = decide(PolicyInputs(THREE_POOLS, metrics(), READY, PolicySettings()), None, 0.0)
    _, again = decide(PolicyInputs(THREE_POOLS, metrics(), READY, PolicySettings()), state, 1.0)  # equal settings
    assert again.capacity is state.capacity
    _, changed = decide(PolicyInputs(THREE_POOLS, metrics(), READY, PolicySettings(headroom=0.5)), again, 2.0)
    assert changed.capacity is not state.capacity


def test_without_per_route_demand_envoys_tier_shares_split_the_model_rate() -> None:
    observed = FleetMetrics(metrics({("gpu", EMBED): {"request_rate_per_s": 1000.0}}).by_pool_model, 0.0, {},
                            {"gold": 10.0, "silver": 30.0, "bronze": 60.0})
    _, state = decide(PolicyInputs(THREE_POOLS, observed, READY, PolicySettings(), None), None, 0.0)
    assert state.demand_per_s == {(EMBED, "gold"): pytest.approx(100.0), (EMBED, "silver"): pytest.approx(300.0),
                                  (EMBED, "bronze"): pytest.approx(600.0)}


def test_a_pool_excluded_by_its_measured_p99_is_held_out_while_idle_then_tried_again() -> None:
    """Excluded, it gets no traffic and so no new measurement: the last one holds for
    measured_hold_s (no flapping back every tick), then the pool may be tried again."""
    settings = PolicySettings(measured_hold_s=20.0)
    demand = {(EMBED, "gold"): 100.0}
    state = None
    history = []
    for t in range(0, 41):
        signals = {("inf", EMBED): {"p99_ms": 90.0}} if t == 0 else None  # breach once, then idle
        decision, state = decide(PolicyInputs(THREE_POOLS, metrics(signals, float(t)), dict(READY), settings, demand),
                                 state, float(t))
        history.append(decision.weights(EMBED, "gold")["inf"])
    assert history[0] == 0
    assert all(w == 0 for w in history[:20]), history
    assert history[-1] == 100, history
