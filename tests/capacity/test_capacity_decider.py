"""The capacity decider, driven tick by tick with an injected clock (``now_s`` is just an argument).

The fleets are built here.  ``cpu``: 10 ms per request, one instance, tail 1: 100 req/s at full
use, 80 req/s safe for every tier (max utilisation 0.8), $0.20/h.  ``gpu``: 1 ms: 1000 req/s,
800 safe, $1.00/h.  The planner adds 20% headroom to demand, so 100 req/s plans 120 req/s.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pytest

from router_lib.capacity import (
    CapacityDecision,
    CapacityInputs,
    CapacityReason,
    CapacitySettings,
    CapacityState,
    decide_capacity,
)
from router_lib.domain import Fleet
from router_lib.metrics import FleetMetrics
from router_lib.routes import RouteKey
from tests.router_lib.builders import CPU, GPU, fleet, metrics, profile

R = CapacityReason
M = "m"
QUIET = CapacitySettings(scale_down_window_s=0.0, flap_guard_s=0.0)  # no memory: each tick shows its own rule


def make_fleet(pools: Sequence[tuple[str, int, int, int]] = (("cpu", 1, 0, 10), ("gpu", 1, 0, 10)), *,
               cpu_ms: float = 10.0, budget: float | None = None, machine: int | None = None,
               cold_start_s: float = 0.0) -> Fleet:
    """``pools``: (name in {cpu, gpu}, replicas, min, max)."""
    kinds = {"cpu": (CPU, 0.20), "gpu": (GPU, 1.00)}
    f = fleet([(name, kinds[name][0], kinds[name][1], n) for name, n, _lo, _hi in pools],
              [profile(M, CPU, {1: cpu_ms}, tail=1.0), profile(M, GPU, {1: 1.0}, tail=1.0)])
    bounds = {name: (lo, hi) for name, _n, lo, hi in pools}
    specs = tuple(replace(p, min_replicas=bounds[p.name][0], max_replicas=bounds[p.name][1]) for p in f.pools)
    profiles = {k: replace(p, cold_start_s=cold_start_s) for k, p in f.profiles.items()}
    return replace(f, pools=specs, profiles=profiles, budget_per_hour_usd=budget, max_local_replicas=machine)


def inputs(f: Fleet, demand: Mapping[str, float], ready: Mapping[str, int], *,
           signals: Mapping[str, Mapping[str, object]] | None = None, starting: Mapping[str, int] | None = None,
           carried: Mapping[str, tuple[str, ...]] | None = None, drains: frozenset[str] = frozenset(),
           settings: CapacitySettings = QUIET) -> CapacityInputs:
    """``demand``: tier -> req/s of model m; ``signals``: pool -> metric fields of (pool, m)."""
    live: FleetMetrics = metrics({(pool, M): fields for pool, fields in (signals or {}).items()})
    return CapacityInputs(fleet=f, metrics=live, ready=ready, starting=starting or {},
                          demand_per_s={RouteKey(M, tier): rate for tier, rate in demand.items()},
                          carried_tiers=carried or {}, drains=drains, settings=settings)


def run(f: Fleet, demands: Sequence[Mapping[str, float]], settings: CapacitySettings,
        ) -> list[CapacityDecision]:
    """One tick per second; every desired replica is ready by the next tick."""
    state: CapacityState | None = None
    ready = {p.name: p.replicas for p in f.pools}
    out = []
    for now, demand in enumerate(demands):
        decision, state = decide_capacity(inputs(f, demand, ready, settings=settings), state, float(now))
        ready = decision.desired()
        out.append(decision)
    return out


# -- fast scale-up from live signals ------------------------------------------------------------

@pytest.mark.parametrize(("signals", "carried", "desired", "kind", "says"), [
    pytest.param({"queue_depth": 40.0}, (), 5, R.QUEUE_UP, "queue 20.0/replica > 8: wants 5", id="queue"),
    pytest.param({"p95_ms": 48.0}, ("gold", "bronze"), 3, R.LATENCY_UP, "p95 48 ms > 0.9 x gold 50 ms: wants 3",
                 id="p95-near-the-gold-bound"),
    pytest.param({"p99_ms": 120.0}, ("gold",), 4, R.LATENCY_UP, "p99 120 ms > 0.9 x gold 50 ms: wants 4",
                 id="p99-far-over-doubles-at-most"),
    # judged at the tier the plan sends the model here at (gold demand), not the carried bronze
    pytest.param({"request_rate_per_s": 180.0}, ("bronze",), 3, R.UTILISATION_UP,
                 "utilisation 0.90 > safe 0.80 (gold): wants 3", id="utilisation-past-safe"),
])
def test_a_live_signal_scales_up_within_one_tick(signals: dict[str, object], carried: tuple[str, ...],
                                                 desired: int, kind: CapacityReason, says: str) -> None:
    f = make_fleet((("cpu", 2, 0, 10),))
    decision, _ = decide_capacity(inputs(f, {"gold": 50}, {"cpu": 2}, signals={"cpu": signals},
                                         carried={"cpu": carried}), None, 0.0)
    pool = decision.pools["cpu"]
    assert (pool.desired_replicas, pool.kind) == (desired, kind)
    assert says in pool.reason and f"2 -> {desired}" in pool.reason


def test_signals_inside_the_band_hold() -> None:
    f = make_fleet((("cpu", 2, 0, 10),))
    quiet = {"queue_depth": 16.0, "p95_ms": 44.0, "p99_ms": 45.0, "request_rate_per_s": 150.0}  # 8/replica, u 0.75
    decision, _ = decide_capacity(inputs(f, {"gold": 120}, {"cpu": 2}, signals={"cpu": quiet},
                                         carried={"cpu": ("gold",)}), None, 0.0)
    pool = decision.pools["cpu"]
    assert (pool.desired_replicas, pool.kind) == (2, R.HOLD)
    assert pool.reason == "plan 2: holds 2"


def test_a_rise_is_capped_per_tick_and_continues_next_tick() -> None:
    f = make_fleet((("cpu", 1, 0, 20),))
    first, second = run(f, [{"bronze": 1000}] * 2, QUIET)  # 1200 planned / 80 = 15 replicas
    assert first.pools["cpu"].desired_replicas == 5 and "step capped at +4 (wants 15)" in first.pools["cpu"].reason
    assert first.pools["cpu"].kind is R.PLAN_UP
    assert second.pools["cpu"].desired_replicas == 10  # +max(4, 100% of 5)


# -- slow scale-down ----------------------------------------------------------------------------

def test_a_fall_in_demand_waits_for_the_window() -> None:
    f = make_fleet((("cpu", 1, 0, 10),))
    settings = CapacitySettings(scale_down_window_s=60.0, flap_guard_s=0.0)
    decisions = run(f, [{"gold": 300}] * 10 + [{"gold": 100}] * 70, settings)  # 5 replicas, then 2
    desired = [d.pools["cpu"].desired_replicas for d in decisions]
    assert desired[0] == 5 and decisions[0].pools["cpu"].kind is R.PLAN_UP
    assert set(desired[1:69]) == {5}  # the last target of 5 was seen at t=9: held until t=69
    assert decisions[30].pools["cpu"].kind is R.STABILISING
    assert "60 s window holds 5 (target 2)" in decisions[30].pools["cpu"].reason
    assert desired[69] == 2 and decisions[69].pools["cpu"].kind is R.PLAN_DOWN


def test_a_new_decider_never_scales_down_at_once() -> None:
    f = make_fleet((("cpu", 4, 0, 10),))
    decision, _ = decide_capacity(inputs(f, {"gold": 10}, {"cpu": 4}, settings=CapacitySettings()), None, 0.0)
    assert (decision.pools["cpu"].desired_replicas, decision.pools["cpu"].kind) == (4, R.STABILISING)


# -- bounds -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("demand", "bounds", "desired", "kind"), [
    pytest.param(0.0, (2, 6), 2, R.MIN, id="no-demand-stays-at-min"),
    pytest.param(2000.0, (2, 3), 3, R.MAX, id="high-demand-stops-at-max"),
    pytest.param(200.0, (2, 6), 3, R.PLAN_UP, id="inside-the-bounds-the-plan-rules"),
])
def test_min_and_max_bound_the_desired_replicas(demand: float, bounds: tuple[int, int], desired: int,
                                                kind: CapacityReason) -> None:
    f = make_fleet((("cpu", 2, *bounds),))
    decision, _ = decide_capacity(inputs(f, {"bronze": demand}, {"cpu": 2}), None, 0.0)
    assert (decision.pools["cpu"].desired_replicas, decision.pools["cpu"].kind) == (desired, kind)


# -- to zero and back ---------------------------------------------------------------------------

def test_a_pool_goes_to_zero_draining_and_comes_back_from_zero() -> None:
    f = make_fleet()
    low, high, high_ready, low_again = run(f, [{"gold": 50}, {"gold": 600}, {"gold": 600}, {"gold": 50}], QUIET)
    # 60 req/s: one cpu ($0.20) meets gold; the gpu empties, draining in the same tick.
    assert low.desired() == {"cpu": 1, "gpu": 0}
    assert (low.pools["gpu"].kind, low.pools["gpu"].draining, low.pools["gpu"].routable) == (R.TO_ZERO, True, False)
    assert low.routable_ready()["gpu"] == 0
    # 720 req/s: one gpu ($1.00) beats nine cpus ($1.80): the gpu comes back; the cpu, which
    # carries the load until then, stays (make before break) and empties once the gpu is ready.
    assert high.desired() == {"cpu": 1, "gpu": 1}
    assert (high.pools["gpu"].kind, high.pools["gpu"].draining) == (R.FROM_ZERO, False)
    assert high.pools["cpu"].kind is R.STABILISING and "waits for gpu to be ready" in high.pools["cpu"].reason
    assert high_ready.desired() == {"cpu": 0, "gpu": 1}
    assert low_again.pools["cpu"].kind is R.FROM_ZERO


def test_a_pool_keeps_its_replicas_until_the_pool_the_plan_asked_for_is_ready() -> None:
    # 720 req/s: the plan moves the load from 9 cpus to one gpu.  The gpu is asked for at t=0; at
    # t=1 the actuator has not reported it starting yet, at t=2 it starts, at t=3 it is ready.
    f = make_fleet((("cpu", 9, 0, 20), ("gpu", 0, 0, 10)))
    settings = CapacitySettings(scale_down_window_s=0.0, flap_guard_s=0.0, arrival_grace_s=30.0)
    d0, state = decide_capacity(inputs(f, {"gold": 600}, {"cpu": 9, "gpu": 0}, settings=settings), None, 0.0)
    assert d0.desired() == {"cpu": 9, "gpu": 1}
    d1, state = decide_capacity(inputs(f, {"gold": 600}, {"cpu": 9, "gpu": 0}, settings=settings), state, 1.0)
    assert d1.desired() == {"cpu": 9, "gpu": 1} and "waits for gpu" in d1.pools["cpu"].reason
    d2, state = decide_capacity(inputs(f, {"gold": 600}, {"cpu": 9, "gpu": 0}, starting={"gpu": 1},
                                       settings=settings), state, 2.0)
    assert d2.desired()["cpu"] == 9
    d3, state = decide_capacity(inputs(f, {"gold": 600}, {"cpu": 9, "gpu": 1}, settings=settings), state, 3.0)
    assert d3.desired() == {"cpu": 0, "gpu": 1}
    # a pool asked for that never starts is waited for only within the grace
    stuck, st = decide_capacity(inputs(f, {"gold": 600}, {"cpu": 9, "gpu": 0}, settings=settings), None, 0.0)
    late, _ = decide_capacity(inputs(f, {"gold": 600}, {"cpu": 9, "gpu": 0}, settings=settings), st, 31.0)
    assert stuck.desired()["cpu"] == 9 and late.desired()["cpu"] < 9


def test_an_overloaded_pool_waits_for_the_pool_the_plan_brings_up_instead_of_growing() -> None:
    # 720 req/s: the plan moves the load to one gpu (from zero); meanwhile the cpu, which still
    # carries it, queues.  Adding cpus for traffic that moves away is what the window would then
    # hold idle: the cpu waits while the gpu starts, and is raised only if the gpu never comes.
    f = make_fleet((("cpu", 1, 1, 10), ("gpu", 0, 0, 10)))
    queue = {"cpu": {"queue_depth": 80.0}}
    asked, state = decide_capacity(inputs(f, {"gold": 600}, {"cpu": 1, "gpu": 0}, signals=queue), None, 0.0)
    assert (asked.pools["gpu"].desired_replicas, asked.pools["gpu"].kind) == (1, R.FROM_ZERO)
    assert (asked.pools["cpu"].desired_replicas, asked.pools["cpu"].kind) == (1, R.COLD_START_WAIT)
    assert "the plan brings up gpu" in asked.pools["cpu"].reason
    starting, state = decide_capacity(inputs(f, {"gold": 600}, {"cpu": 1, "gpu": 0}, signals=queue,
                                             starting={"gpu": 1}), state, 1.0)
    assert starting.pools["cpu"].desired_replicas == 1
    # the gpu is ready: what the cpu still carries of m is spill from the gpu, where the plan puts
    # m.  It raises the gpu (600 own + 300 spilled req/s > 800 safe per gpu), not the cpu.
    spill = {"cpu": {"queue_depth": 80.0, "request_rate_per_s": 300.0}, "gpu": {"request_rate_per_s": 600.0}}
    ready, _ = decide_capacity(inputs(f, {"gold": 600}, {"cpu": 1, "gpu": 1}, signals=spill), state, 2.0)
    assert ready.pools["cpu"].desired_replicas == 1
    assert (ready.pools["gpu"].desired_replicas, ready.pools["gpu"].kind) == (2, R.UTILISATION_UP)
    assert "counting m 300.0 req/s carried elsewhere" in ready.pools["gpu"].reason


def test_a_pool_the_plan_places_a_model_on_is_judged_on_it_even_beside_spill() -> None:
    # The plan puts m on the cpu (60 req/s x 1.2: one cpu); its queue is its own shortfall.
    f = make_fleet((("cpu", 1, 1, 10), ("gpu", 0, 0, 10)))
    own = {"cpu": {"queue_depth": 80.0, "request_rate_per_s": 60.0}}
    d, _ = decide_capacity(inputs(f, {"gold": 60}, {"cpu": 1, "gpu": 0}, signals=own), None, 0.0)
    assert (d.pools["cpu"].kind, d.pools["cpu"].desired_replicas) == (R.QUEUE_UP, 5)  # 10, step cap +4


def test_a_re_plan_keeps_the_running_mix_unless_the_other_saves_more_than_the_start_penalty() -> None:
    # 700 req/s x 1.2 = 840: one gpu + one cpu ($1.20) or two gpus ($2.00) or 11 cpus ($2.20).
    # With 11 cpus running, starting one gpu costs 0.5 x $1.00 on top ($1.70): still cheaper.
    f = make_fleet((("cpu", 11, 0, 20), ("gpu", 0, 0, 10)))
    d, state = decide_capacity(inputs(f, {"gold": 700}, {"cpu": 11, "gpu": 0}), None, 0.0)
    assert d.desired() == {"cpu": 11, "gpu": 1}  # the cpus carry the load until the gpu is ready
    d, _ = decide_capacity(inputs(f, {"gold": 700}, {"cpu": 11, "gpu": 1}), state, 1.0)
    assert d.desired() == {"cpu": 1, "gpu": 1}
    # Near-equal mixes: cpu $0.20 x 5 = $1.00 against one gpu $1.00 for 384 req/s (320 x 1.2):
    # the running kind wins both ways.
    cpus = make_fleet((("cpu", 5, 0, 20), ("gpu", 0, 0, 10)))
    d, _ = decide_capacity(inputs(cpus, {"gold": 320}, {"cpu": 5, "gpu": 0}), None, 0.0)
    assert d.desired() == {"cpu": 5, "gpu": 0}
    gpus = make_fleet((("cpu", 0, 0, 20), ("gpu", 1, 0, 10)))
    d, _ = decide_capacity(inputs(gpus, {"gold": 320}, {"cpu": 0, "gpu": 1}), None, 0.0)
    assert d.desired() == {"cpu": 0, "gpu": 1}


def test_a_pool_being_emptied_is_not_brought_back_by_its_leftover_queue() -> None:
    f = make_fleet()
    low, state = decide_capacity(inputs(f, {"gold": 50}, {"cpu": 1, "gpu": 1}), None, 0.0)
    assert low.pools["gpu"].kind is R.TO_ZERO
    still, _ = decide_capacity(inputs(f, {"gold": 50}, {"cpu": 1, "gpu": 1}, signals={"gpu": {"queue_depth": 40.0}}),
                               state, 1.0)
    assert (still.pools["gpu"].desired_replicas, still.pools["gpu"].kind, still.pools["gpu"].draining) == (
        0, R.HOLD, True)


def test_the_last_pool_that_meets_a_tier_is_not_emptied() -> None:
    # A 45 ms cpu cannot meet gold (40 ms with the policy's 0.8 headroom); only the gpu can.
    f = make_fleet(cpu_ms=45.0)
    decision, _ = decide_capacity(inputs(f, {"bronze": 10}, {"cpu": 1, "gpu": 1}), None, 0.0)
    assert decision.desired() == {"cpu": 1, "gpu": 1}
    gpu = decision.pools["gpu"]
    assert gpu.kind is R.TIER_FLOOR and "kept at 1 so m/gold keeps a pool that meets it" in gpu.reason
    assert not gpu.draining


# -- cold start ---------------------------------------------------------------------------------

def test_starting_replicas_are_not_asked_for_twice() -> None:
    f = make_fleet((("cpu", 1, 0, 10),), cold_start_s=30.0)
    settings = CapacitySettings(flap_guard_s=0.0)
    up, state = decide_capacity(inputs(f, {"gold": 50}, {"cpu": 1}, signals={"cpu": {"queue_depth": 40.0}},
                                       settings=settings), None, 0.0)
    assert (up.pools["cpu"].desired_replicas, up.pools["cpu"].kind) == (5, R.QUEUE_UP)
    # Four replicas are starting; the queue has grown meanwhile: no more replicas for it.
    wait, state = decide_capacity(inputs(f, {"gold": 50}, {"cpu": 1}, starting={"cpu": 4},
                                         signals={"cpu": {"queue_depth": 80.0}}, settings=settings), state, 10.0)
    cpu = wait.pools["cpu"]
    assert (cpu.desired_replicas, cpu.kind, cpu.ready_replicas, cpu.starting_replicas) == (5, R.COLD_START_WAIT, 1, 4)
    assert "4 replica(s) starting (cold start ~30 s): waits for them" in cpu.reason
    # They are ready and the queue is gone: the window keeps them.
    done, _ = decide_capacity(inputs(f, {"gold": 50}, {"cpu": 5}, settings=settings), state, 40.0)
    assert (done.pools["cpu"].desired_replicas, done.pools["cpu"].kind) == (5, R.STABILISING)


# -- the budget ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("budget", "desired", "shed", "exceeded"), [
    pytest.param(2.0, 7, (), False, id="within-budget-nothing-shed"),
    pytest.param(1.0, 5, ("bronze",), False, id="bronze-shed-first"),
    pytest.param(1.2, 6, ("bronze",), False, id="what-the-budget-leaves-buys-part-of-the-last-tier-shed"),
    pytest.param(0.6, 3, ("bronze", "silver"), False, id="then-silver"),
    pytest.param(0.4, 3, ("bronze", "silver"), True, id="gold-alone-over-budget-is-kept-and-said"),
])
def test_the_budget_sheds_the_loosest_tiers_first_and_says_so(budget: float, desired: int, shed: tuple[str, ...],
                                                               exceeded: bool) -> None:
    # 150 req/s per tier: 540 planned req/s = 7 cpus ($1.40); without bronze 5 ($1.00); gold alone 3 ($0.60).
    f = make_fleet((("cpu", 1, 0, 20),), budget=budget)
    settings = CapacitySettings(max_step_up=10)
    decision, _ = decide_capacity(inputs(f, {"gold": 150, "silver": 150, "bronze": 150}, {"cpu": 1},
                                         settings=settings), None, 0.0)
    cpu = decision.pools["cpu"]
    assert cpu.desired_replicas == desired
    assert decision.shed == tuple(RouteKey(M, t) for t in shed)
    assert cpu.kind is (R.BUDGET if shed else R.PLAN_UP)
    if shed:
        assert "(7 before shedding for the budget)" in cpu.reason
        assert any(f"shed for the budget (loosest tier first): {', '.join(f'm/{t}' for t in shed)}" in n
                   for n in decision.notes)
    assert any("budget exceeded" in n for n in decision.notes) is exceeded
    assert decision.planned_cost_per_hour_usd == pytest.approx(0.2 * desired)
    if shed and not exceeded:  # what the kept replicas and the budget left carry of the last tier shed is said
        assert any(f"{shed[-1]} to " in n and "% of its demand" in n for n in decision.notes), decision.notes


def test_the_budget_trims_a_live_raise_down_to_the_plan() -> None:
    f = make_fleet((("cpu", 2, 0, 20),), budget=0.6)
    decision, _ = decide_capacity(inputs(f, {"gold": 100}, {"cpu": 2}, signals={"cpu": {"queue_depth": 80.0}}),
                                  None, 0.0)
    cpu = decision.pools["cpu"]  # the plan: 2; the queue: 6 ($1.20); the budget allows 3
    assert (cpu.desired_replicas, cpu.kind) == (3, R.BUDGET)
    assert "budget $0.60/h: trimmed 6 -> 3" in cpu.reason
    assert decision.desired_cost_per_hour_usd == pytest.approx(0.6)


# -- the machine limit --------------------------------------------------------------------------

def test_the_machine_limit_trims_the_dearest_capacity_first() -> None:
    # Both pools queue and ask for 5; 7 fit.  A cpu costs $0.0025/h per safe req/s, a gpu $0.00125.
    # No demand estimate yet (a restarted server): the signals alone, each pool's its own.
    f = make_fleet((("cpu", 2, 0, 10), ("gpu", 2, 0, 10)), machine=7)
    decision, _ = decide_capacity(inputs(f, {}, {"cpu": 2, "gpu": 2},
                                         signals={"cpu": {"queue_depth": 40.0}, "gpu": {"queue_depth": 40.0}}),
                                  None, 0.0)
    assert decision.desired() == {"cpu": 2, "gpu": 5}
    assert decision.pools["cpu"].kind is R.MACHINE_LIMIT
    assert "machine limit 7: trimmed 5 -> 2 ($0.0025/h per req/s of useful capacity)" in decision.pools["cpu"].reason
    assert decision.pools["gpu"].kind is R.QUEUE_UP


# -- no flapping --------------------------------------------------------------------------------

@pytest.mark.parametrize("noisy", ["demand", "queue"])
def test_a_signal_alternating_every_tick_changes_capacity_once(noisy: str) -> None:
    f = make_fleet((("cpu", 1, 0, 10),))
    state: CapacityState | None = None
    ready, desired = {"cpu": 1}, []
    for now in range(60):
        high = now % 2 == 1
        demand = {"gold": 300 if high and noisy == "demand" else 50}
        queue = 40.0 if high and noisy == "queue" else 0.0
        decision, state = decide_capacity(inputs(f, demand, ready, signals={"cpu": {"queue_depth": queue}},
                                                 settings=CapacitySettings()), state, float(now))
        ready = decision.desired()
        desired.append(ready["cpu"])
    changes = sum(a != b for a, b in zip([1, *desired], desired, strict=False))
    assert changes == 1 and desired[-1] == 5


def test_a_slow_square_wave_never_reverses_within_the_flap_guard() -> None:
    f = make_fleet((("cpu", 1, 0, 10),))
    settings = CapacitySettings(scale_down_window_s=10.0, flap_guard_s=30.0)
    decisions = run(f, [{"gold": 300 if (t // 10) % 2 == 0 else 50} for t in range(60)], settings)
    desired = [d.pools["cpu"].desired_replicas for d in decisions]
    changed_at = [t for t, (a, b) in enumerate(zip([1, *desired], desired, strict=False)) if a != b]
    # Up at once; down once the window and the guard allow; the demand estimate's rise at t=40 waits
    # (no queue or latency says the pool is short).
    assert changed_at == [0, 39]
    assert all(b - a >= 30 for a, b in zip(changed_at, changed_at[1:], strict=False))
    assert decisions[45].pools["cpu"].kind is R.STABILISING
    assert "flap guard: scaled down 6 s ago < 30 s" in decisions[45].pools["cpu"].reason


def test_a_measured_shortfall_overrides_the_flap_guard() -> None:
    f = make_fleet((("cpu", 5, 0, 10),))
    settings = CapacitySettings(scale_down_window_s=0.0, flap_guard_s=60.0)
    down, state = decide_capacity(inputs(f, {"gold": 50}, {"cpu": 5}, settings=settings), None, 0.0)
    assert down.pools["cpu"].desired_replicas == 1
    up, _ = decide_capacity(inputs(f, {"gold": 50}, {"cpu": 1}, signals={"cpu": {"queue_depth": 30.0}},
                                   settings=settings), state, 5.0)
    assert (up.pools["cpu"].desired_replicas, up.pools["cpu"].kind) == (4, R.QUEUE_UP)
    assert "overrides the flap guard" in up.pools["cpu"].reason


# -- drains, infeasible plans, the plan cache ---------------------------------------------------

def test_an_operator_drain_keeps_desired_and_stops_traffic() -> None:
    f = make_fleet()
    decision, _ = decide_capacity(inputs(f, {"gold": 600}, {"cpu": 1, "gpu": 1}, drains=frozenset({"gpu"})),
                                  None, 0.0)
    gpu = decision.pools["gpu"]
    assert (gpu.desired_replicas, gpu.draining, gpu.kind) == (1, True, R.DRAINED)
    assert decision.routable_ready() == {"cpu": 1, "gpu": 0}
    assert decision.pools["cpu"].desired_replicas == 5  # the plan puts the demand on the cpu (capped step)


def test_an_infeasible_plan_keeps_the_current_counts_and_says_why() -> None:
    f = make_fleet((("cpu", 3, 0, 10), ("gpu", 1, 0, 10)))
    tick = replace(inputs(f, {}, {"cpu": 3, "gpu": 1}), demand_per_s={RouteKey("unknown-model", "gold"): 5.0})
    decision, _ = decide_capacity(tick, None, 0.0)
    assert decision.desired() == {"cpu": 3, "gpu": 1}
    assert decision.pools["cpu"].kind is R.PLAN_INFEASIBLE
    assert "no feasible plan (no profile for unknown-model" in decision.pools["cpu"].reason


def test_the_plan_is_reused_while_demand_stays_within_tolerance() -> None:
    f = make_fleet()
    _, state = decide_capacity(inputs(f, {"gold": 100}, {}), None, 0.0)
    near, state_near = decide_capacity(inputs(f, {"gold": 109}, {}), state, 1.0)
    far, state_far = decide_capacity(inputs(f, {"gold": 111}, {}), state, 1.0)
    assert "cached" in near.notes[0] and state_near.plan is state.plan
    assert "cached" not in far.notes[0] and state_far.plan is not None
    assert state_far.plan.demand_per_s == {RouteKey(M, "gold"): 111.0}


def test_a_new_budget_replans_at_the_same_demand() -> None:
    _, state = decide_capacity(inputs(make_fleet(), {"gold": 100}, {}), None, 0.0)
    tighter = make_fleet(budget=0.1)
    decision, _ = decide_capacity(inputs(tighter, {"gold": 100}, {}), state, 1.0)
    assert "cached" not in decision.notes[0] and "budget exceeded" in decision.notes[0]


def test_pools_of_one_kind_share_its_replicas_evenly_the_busier_first() -> None:
    f = fleet([("cpu-a", CPU, 0.20, 1), ("cpu-b", CPU, 0.20, 2)], [profile(M, CPU, {1: 10.0}, tail=1.0)])
    f = replace(f, pools=tuple(replace(p, min_replicas=0, max_replicas=10) for p in f.pools))
    decision, _ = decide_capacity(inputs(f, {"bronze": 300}, {"cpu-a": 1, "cpu-b": 2}), None, 0.0)
    assert decision.desired() == {"cpu-a": 2, "cpu-b": 3}  # 360 req/s planned: 5 cpus


def test_demand_on_an_unknown_tier_is_ignored_and_said() -> None:
    f = make_fleet()
    decision, _ = decide_capacity(
        replace(inputs(f, {"gold": 50}, {"cpu": 1}), demand_per_s={RouteKey(M, "gold"): 50.0,
                                                                   RouteKey(M, "platinum"): 9.0}), None, 0.0)
    assert "demand for m/platinum ignored: unknown tier 'platinum'" in decision.notes


# -- state and settings -------------------------------------------------------------------------

def test_a_state_round_tripped_through_json_gives_identical_decisions() -> None:
    f = make_fleet(budget=1.5, machine=12)
    settings = CapacitySettings(scale_down_window_s=5.0, flap_guard_s=3.0)
    rng = random.Random(7)
    state: CapacityState | None = None
    ready = {"cpu": 1, "gpu": 1}
    for now in range(40):
        demand = {"gold": rng.choice([20, 100, 400, 900]), "bronze": rng.choice([0, 50, 300])}
        signals = {"cpu": {"queue_depth": rng.choice([0.0, 30.0]), "p99_ms": rng.choice([None, 20.0, 60.0])}}
        tick = inputs(f, demand, ready, signals=signals, carried={"cpu": ("gold",)}, settings=settings)
        decision, next_state = decide_capacity(tick, state, float(now))
        if state is not None:
            restored = CapacityState.from_json(json.loads(json.dumps(state.to_json())))
            assert restored == state
            assert decide_capacity(tick, restored, float(now)) == (decision, next_state)
        state, ready = next_state, decision.desired()


@pytest.mark.parametrize(("field", "value"), [
    ("headroom", 0.9), ("scale_down_window_s", -1.0), ("queue_per_replica_up", 0.0),
    ("latency_up_fraction", 1.5), ("max_step_up", 0), ("max_step_up", 2.5), ("max_step_up_fraction", -0.1),
    ("flap_guard_s", -5.0), ("replan_tolerance", 1.0), ("headroom", float("nan")), ("flap_guard_s", True),
    ("start_penalty", -0.1), ("arrival_grace_s", -1.0),
])
def test_invalid_settings_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"CapacitySettings\.{field} must be"):
        CapacitySettings(**{field: value})  # type: ignore[arg-type]


# -- properties over random demand --------------------------------------------------------------

@pytest.mark.parametrize("seed", range(12))
def test_desired_stays_in_bounds_and_the_plan_within_budget_unless_gold_alone_is_over(seed: int) -> None:
    rng = random.Random(seed)
    f = make_fleet((("cpu", rng.randint(0, 4), rng.randint(0, 2), rng.randint(3, 12)),
                    ("gpu", rng.randint(0, 2), 0, rng.randint(1, 3))), budget=rng.choice([0.5, 1.0, 2.0, 4.0]))
    state: CapacityState | None = None
    ready = {p.name: p.replicas for p in f.pools}
    for now in range(15):
        demand = {t: rng.choice([0.0, 10.0, 100.0, 500.0, 2000.0]) for t in ("gold", "silver", "bronze")}
        signals = {"cpu": {"queue_depth": rng.choice([0.0, 50.0])}}
        decision, state = decide_capacity(inputs(f, demand, ready, signals=signals, settings=CapacitySettings()),
                                          state, float(now))
        for pool in f.pools:
            low, high = pool.replica_bounds
            assert low <= decision.pools[pool.name].desired_replicas <= high, decision.explain()
        sheddable = {RouteKey(M, t) for t in ("silver", "bronze") if demand[t] > 0}
        assert f.budget_per_hour_usd is not None
        over = decision.planned_cost_per_hour_usd > f.budget_per_hour_usd + 1e-9
        assert not over or set(decision.shed) == sheddable, decision.explain()
        ready = decision.desired()


def test_a_new_latency_model_re_plans_even_when_demand_stays_put() -> None:
    # A calibration learned online replaces a profile: the cached plan was made for the old one.
    f = make_fleet((("cpu", 2, 0, 20), ("gpu", 0, 0, 10)))
    first, state = decide_capacity(inputs(f, {"gold": 100}, {"cpu": 2, "gpu": 0}), None, 0.0)
    same, _ = decide_capacity(inputs(f, {"gold": 100}, {"cpu": 2, "gpu": 0}), state, 1.0)
    assert "cached" in same.notes[0]
    slower = make_fleet((("cpu", 2, 0, 20), ("gpu", 0, 0, 10)), cpu_ms=20.0)
    replanned, _ = decide_capacity(inputs(slower, {"gold": 100}, {"cpu": 2, "gpu": 0}), state, 1.0)
    assert "cached" not in replanned.notes[0]
    assert replanned.desired()["cpu"] > first.desired()["cpu"]  # half the throughput per cpu


def test_spill_is_owed_to_the_plans_pools_only_from_a_pool_the_plan_does_not_send_the_model_to() -> None:
    from router_lib.capacity import _spill
    from router_lib.capacity_state import CachedPlan, Placement
    f = make_fleet((("cpu", 1, 0, 10), ("gpu", 1, 0, 10)))
    both = CachedPlan({}, "", True, "test", {"cpu": 1, "gpu": 1}, {"cpu": 1, "gpu": 1},
                      placed={"cpu": {M: Placement(("gold",), 50.0)}, "gpu": {M: Placement(("gold",), 500.0)}})
    busy = inputs(f, {}, {"cpu": 1, "gpu": 1}, signals={"cpu": {"request_rate_per_s": 50.0},
                                                         "gpu": {"request_rate_per_s": 700.0}})
    capped, owed = _spill(busy, both)
    # the gpu carries 200 req/s more than planned: demand the re-plan will place, nobody's shortfall
    assert capped == {"gpu": {M: 500.0}} and owed == {}
    gpu_only = replace(both, targets={"cpu": 0, "gpu": 1}, placed={"gpu": {M: Placement(("gold",), 500.0)}})
    spilled = inputs(f, {}, {"cpu": 1, "gpu": 1}, signals={"cpu": {"request_rate_per_s": 100.0},
                                                            "gpu": {"request_rate_per_s": 500.0}})
    capped, owed = _spill(spilled, gpu_only)
    # the cpu carries m although the plan sends it only to the gpu: that is the gpu's to carry
    assert capped == {"cpu": {M: 0.0}} and owed == {"gpu": {M: 100.0}}


def test_a_replica_asked_for_counts_as_running_for_the_start_penalty() -> None:
    # 700 req/s: one gpu + one cpu; the gpu is asked for (the cpus stay until it is ready).
    f = make_fleet((("cpu", 6, 0, 20), ("gpu", 0, 0, 10)))
    asked, state = decide_capacity(inputs(f, {"gold": 700}, {"cpu": 6, "gpu": 0}), None, 0.0)
    assert asked.desired() == {"cpu": 6, "gpu": 1}
    # Demand eases to 400 req/s before the gpu is reported starting: 6 cpus ($1.20) or one gpu
    # ($1.00).  Counting only ready + starting, the gpu would be a start ($1.00 + 0.5 x $1.00) and
    # the plan would swap back to the cpus; the gpu asked for is kept.
    eased, _ = decide_capacity(inputs(f, {"gold": 400}, {"cpu": 6, "gpu": 0}), state, 1.0)
    assert eased.desired()["gpu"] == 1


def test_the_plan_stays_within_the_pools_max_replicas() -> None:
    # 700 req/s: with the cpus running, the start penalty would keep the load on cpus (11 x $0.20
    # against a gpu start), but the cpu pool holds at most 4: the plan brings the gpu instead of
    # planning cpus that cannot run.
    f = make_fleet((("cpu", 4, 0, 4), ("gpu", 0, 0, 10)))
    d, _ = decide_capacity(inputs(f, {"gold": 700}, {"cpu": 4, "gpu": 0}), None, 0.0)
    assert d.desired()["gpu"] >= 1
    assert "max 4" not in d.pools["cpu"].reason
