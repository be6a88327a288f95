"""The conflict rules between deciders (``control.decide.resolve``), as a table."""

from __future__ import annotations

import pytest

from control.decide import resolve
from router_lib.capacity import CapacityDecision, CapacityReason, PoolCapacity
from router_lib.routes import Reason, ReasonKind, RouteKey, RouteWeights
from tests.router_lib.builders import EMBED, THREE_POOLS

KEY = RouteKey(EMBED, "gold")


def plans(**state: str) -> CapacityDecision:
    """``plans(cpu="ready", gpu="draining", inf="empty")``; pools not named are ready."""
    out = {}
    for pool in ("cpu", "gpu", "inf"):
        s = state.get(pool, "ready")
        out[pool] = PoolCapacity(pool, 1, 0 if s == "empty" else 1, s == "draining", CapacityReason.HOLD, s)
    return CapacityDecision(out)


def route(**weights: int) -> dict[RouteKey, RouteWeights]:
    return {KEY: RouteWeights.of(EMBED, "gold", weights, {p: Reason(ReasonKind.CHEAPEST) for p in weights})}


@pytest.mark.parametrize(("weights", "states", "expected", "kinds"), [
    pytest.param({"cpu": 60, "gpu": 40}, {}, {"cpu": 60, "gpu": 40}, {"cpu": "cheapest", "gpu": "cheapest"},
                 id="nothing-to-resolve"),
    pytest.param({"cpu": 60, "gpu": 40}, {"cpu": "draining"}, {"cpu": 0, "gpu": 100},
                 {"cpu": "draining", "gpu": "cheapest"}, id="drained-pool-loses-its-weight-to-the-others"),
    pytest.param({"cpu": 50, "gpu": 30, "inf": 20}, {"cpu": "empty"}, {"cpu": 0, "gpu": 60, "inf": 40},
                 {"cpu": "not_ready", "gpu": "cheapest", "inf": "cheapest"}, id="freed-weight-goes-in-proportion"),
    pytest.param({"cpu": 100, "gpu": 0, "inf": 0}, {"cpu": "draining"}, {"cpu": 0, "gpu": 100, "inf": 0},
                 {"cpu": "draining", "gpu": "reassigned", "inf": "cheapest"},
                 id="whole-route-goes-first-in-fallback-order-gpu"),
    pytest.param({"cpu": 100}, {"cpu": "draining", "gpu": "empty"}, {"cpu": 0, "inf": 100},
                 {"cpu": "draining", "inf": "reassigned"}, id="fallback-skips-an-empty-pool"),
    pytest.param({"cpu": 100}, {"gpu": "empty", "inf": "empty", "cpu": "draining"}, {"cpu": 100},
                 {"cpu": "reassigned"}, id="the-only-pool-with-replicas-keeps-it-although-draining"),
])
def test_resolve_rules(weights, states, expected, kinds):
    routes, unroutable = resolve(route(**weights), plans(**states), THREE_POOLS, 100)
    assert routes[KEY].as_dict() == expected
    assert {p.pool: p.reason.kind.value for p in routes[KEY].pools} == kinds
    assert routes[KEY].total == 100 and not unroutable


def test_a_model_with_no_ready_replica_anywhere_is_unroutable():
    routes, unroutable = resolve(route(cpu=100), plans(cpu="empty", gpu="empty", inf="empty"), THREE_POOLS, 100)
    assert KEY not in routes
    assert unroutable[KEY] == f"no ready replica serves {EMBED}"
