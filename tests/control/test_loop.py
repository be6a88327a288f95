"""The control loop tick by tick, with fake ports and an injected clock."""

from __future__ import annotations

import threading
import time

import pytest

from control.actuator_fixed import FixedFleetActuator
from control.loop import ControlLoop
from control.status import render_status
from router_lib.metrics import MetricsUnavailableError
from router_lib.routes import ReasonKind, RouteKey
from tests.control.fakes import Clock, FakeDiscovery, FakeMetrics, FakeSink, MemoryStore, replicas
from tests.router_lib.builders import EMBED, THREE_POOLS, metrics

TIERS = ("gold", "silver", "bronze")


def make_loop(store: MemoryStore | None = None, **ready: int):
    ready = ready or {"cpu": 2, "gpu": 1, "inf": 1}
    parts = {
        "discovery": FakeDiscovery(replicas(**ready)),
        "metrics": FakeMetrics(metrics({("cpu", EMBED): {"request_rate_per_s": 5.0}})),
        "sink": FakeSink(),
        "store": store or MemoryStore(),
        "clock": Clock(),
    }
    loop = ControlLoop(fleet=THREE_POOLS, actuator=FixedFleetActuator({p.name: p.replicas for p in THREE_POOLS.pools}),
                       wall_clock=lambda: 1.7e9, **parts)
    return loop, parts


def test_a_tick_reads_decides_and_writes_a_route_per_model_and_tier():
    loop, parts = make_loop()
    view = loop.tick()
    assert set(view.routes) == {RouteKey(EMBED, t) for t in TIERS}
    assert all(r.total == 100 for r in view.routes.values())
    (pools, weights), = parts["sink"].published
    assert weights == {tuple(k): r.as_dict() for k, r in view.routes.items()}
    assert {p.pool: len(p.replicas) for p in pools} == {"cpu": 2, "gpu": 1, "inf": 1}
    assert parts["metrics"].targets[-1]["cpu"] == tuple(r.metrics_url for r in parts["discovery"].current.by_pool["cpu"])
    assert parts["store"].record["version"] == 1
    assert parts["store"].record["routes"][0]["weights"] == view.routes[RouteKey(EMBED, "bronze")].as_dict()


def test_a_tick_that_changes_nothing_pushes_nothing_and_saves_nothing():
    loop, parts = make_loop()
    loop.tick()
    parts["clock"].advance(1.0)
    loop.tick()
    assert len(parts["sink"].published) == 1
    assert parts["store"].saves == 1


def test_a_failing_metrics_source_keeps_the_routes_in_force_and_says_why():
    loop, parts = make_loop()
    before = loop.tick().routes
    parts["metrics"].error = MetricsUnavailableError("prometheus down")
    view = loop.tick()
    assert view.routes == before
    assert "prometheus down" in view.last_error
    assert len(parts["sink"].published) == 1


def test_a_discovery_failure_keeps_the_last_replica_set():
    loop, parts = make_loop()
    first = loop.tick()
    parts["discovery"].error = "runtime file: malformed"
    view = loop.tick()
    assert view.replicas == first.replicas and view.routes == first.routes
    assert view.last_error == "discovery: runtime file: malformed"


def test_a_slow_scrape_blocks_neither_status_nor_a_drain():
    loop, parts = make_loop()
    loop.tick()
    parts["metrics"].block.clear()
    parts["metrics"].entered.clear()
    ticking = threading.Thread(target=loop.tick)
    ticking.start()
    try:
        assert parts["metrics"].entered.wait(5), "the tick never reached the scrape"
        started = time.perf_counter()
        status = render_status(THREE_POOLS, loop.view, parts["sink"].status())
        version = loop.drain("cpu", timeout_s=1.0)
        elapsed = time.perf_counter() - started
        assert ticking.is_alive(), "the scrape should still be blocked"
        assert status["routes"] and version == parts["sink"].version
        assert elapsed < 2.0, f"status and drain waited {elapsed:.2f}s behind a scrape"
        assert all(r.as_dict().get("cpu", 0) == 0 for r in loop.view.routes.values())
    finally:
        parts["metrics"].block.set()
        ticking.join(10)


def test_a_drained_pool_gets_weight_0_in_the_same_tick_even_where_it_is_the_cheapest():
    loop, parts = make_loop()
    silver = RouteKey(EMBED, "silver")
    assert loop.tick().routes[silver].as_dict()["cpu"] == 100  # the cheapest pool meeting silver takes it
    loop.drain("cpu")
    route = loop.view.routes[silver]
    assert route.as_dict()["cpu"] == 0 and route.total == 100
    assert parts["store"].record["drains"] == ["cpu"]
    loop.undrain("cpu")
    parts["clock"].advance(60)
    for _ in range(10):  # weights step back at most max_step per tick
        parts["clock"].advance(1)
        loop.tick()
    assert loop.view.routes[silver].as_dict()["cpu"] == 100


def test_an_unknown_pool_cannot_be_drained():
    loop, _ = make_loop()
    with pytest.raises(KeyError, match="unknown pool 'tpu'"):
        loop.drain("tpu")


def test_a_restarted_loop_republishes_the_persisted_routes_then_continues_from_them():
    store = MemoryStore()
    first, _ = make_loop(store)
    first.drain("gpu")
    in_force = first.tick().routes
    second, parts = make_loop(store)
    assert second.resume()
    (_pools, republished), = parts["sink"].published
    assert republished == {tuple(k): r.as_dict() for k, r in in_force.items()}
    assert second.view.drains == frozenset({"gpu"})
    parts["clock"].advance(1.0)
    assert {k: r.as_dict() for k, r in second.tick().routes.items()} == {k: r.as_dict() for k, r in in_force.items()}


def test_a_state_store_failure_keeps_routing_and_is_reported():
    store = MemoryStore()
    store.error = OSError(28, "No space left on device")
    loop, parts = make_loop(store)
    view = loop.tick()
    assert view.routes and len(parts["sink"].published) == 1
    assert "state store: OSError" in view.last_error
    store.error = None
    loop.drain("gpu")
    assert store.record["drains"] == ["gpu"]


def test_a_refused_snapshot_keeps_the_routes_in_force():
    loop, parts = make_loop()
    before = loop.tick().routes
    parts["sink"].refuse = ("cluster x: no endpoints",)
    loop.drain("cpu")
    assert loop.view.routes == before
    assert loop.view.last_error == "cluster x: no endpoints"


def test_a_pool_with_no_ready_replica_gets_no_weight_and_the_actuator_reports_the_fixed_fleet():
    loop, _ = make_loop(cpu=2, gpu=0, inf=1)
    view = loop.tick()
    for route in view.routes.values():
        assert route.as_dict().get("gpu", 0) == 0
    assert view.actuation.applied == {"cpu": True, "gpu": True, "inf": True}
    assert next(p for p in view.decision.capacity.pools.values() if p.pool == "gpu").routable is False


def test_status_shows_reasons_by_kind():
    loop, parts = make_loop()
    loop.tick()
    status = render_status(THREE_POOLS, loop.view, parts["sink"].status())
    silver = next(r for r in status["routes"] if r["tier"] == "silver")
    assert silver["reason_kinds"] == {"cpu": ReasonKind.CHEAPEST.value, "gpu": ReasonKind.NOT_NEEDED.value,
                                      "inf": ReasonKind.NOT_NEEDED.value}
    assert status["state_record_version"] == 1


def test_the_ledger_bills_every_replica_and_is_shown_and_persisted():
    loop, parts = make_loop()
    wall = Clock(1.7e9)
    loop.wall_clock = wall
    loop.tick()
    wall.advance(3600.0)
    parts["clock"].advance(3600.0)
    loop.tick()
    status = render_status(THREE_POOLS, loop.view, parts["sink"].status())
    prices = {p.name: p.price_per_hour_usd for p in THREE_POOLS.pools}
    expected = 2 * prices["cpu"] + prices["gpu"] + prices["inf"]  # replicas(cpu=2, gpu=1, inf=1) for an hour
    assert status["cost"]["spent_usd"] == pytest.approx(expected)
    assert status["cost"]["fleet_per_hour_usd"] == pytest.approx(expected)
    assert sum(status["cost"]["attributed_usd"].values()) == pytest.approx(expected, rel=1e-4)
    assert parts["store"].record["ledger"]["usd_by_pool"]["cpu"] == pytest.approx(2 * prices["cpu"])


def autoscaled_loop(**bounds: tuple[int, int]):
    import dataclasses

    from control.ports import ActuationResult

    fleet = dataclasses.replace(THREE_POOLS, pools=tuple(
        dataclasses.replace(p, min_replicas=bounds[p.name][0], max_replicas=bounds[p.name][1]) if p.name in bounds else p
        for p in THREE_POOLS.pools))

    class Recorder:
        def __init__(self) -> None:
            self.requests: list[dict[str, int]] = []

        def apply(self, desired):
            self.requests.append(dict(desired))
            return ActuationResult(dict(desired), dict.fromkeys(desired, True))

    parts = {"discovery": FakeDiscovery(replicas(cpu=2, gpu=1, inf=1)),
             "metrics": FakeMetrics(metrics({("cpu", EMBED): {"request_rate_per_s": 5.0}})),
             "sink": FakeSink(), "store": MemoryStore(), "clock": Clock()}
    actuator = Recorder()
    loop = ControlLoop(fleet=fleet, actuator=actuator, wall_clock=parts["clock"], **parts)
    return loop, parts, actuator


def test_a_queue_on_an_autoscaled_pool_asks_for_replicas_in_the_same_tick():
    loop, parts, actuator = autoscaled_loop(cpu=(1, 8))
    loop.tick()
    assert actuator.requests[-1]["cpu"] == 2  # nothing asks for a change
    parts["clock"].advance(1.0)
    parts["metrics"].current = metrics({("cpu", EMBED): {"request_rate_per_s": 5.0, "queue_depth": 40.0}})
    view = loop.tick()
    assert actuator.requests[-1]["cpu"] > 2
    assert view.decision.capacity.pools["cpu"].kind.value == "queue_up"


def test_a_pool_the_plan_empties_loses_its_weight_in_the_same_tick():
    loop, parts, actuator = autoscaled_loop(gpu=(0, 2))
    for _ in range(3):  # the first ticks never scale down at once (a fresh decider holds what runs)
        loop.tick()
        parts["clock"].advance(400.0)  # past the default 300 s scale-down window
    view = loop.tick()
    gpu = view.decision.capacity.pools["gpu"]
    assert (gpu.desired_replicas, gpu.draining) == (0, True), gpu.reason
    assert actuator.requests[-1]["gpu"] == 0
    assert all(r.as_dict().get("gpu", 0) == 0 for r in view.routes.values())
