"""The cost ledger: replicas x price x time, attributed to the routes each pool served."""

from __future__ import annotations

import pytest

from router_lib.cost_ledger import IDLE, LedgerState, accrue, route_rates_by_pool
from router_lib.routes import RouteKey, RouteWeights

PRICES = {"cpu": 0.145, "gpu": 1.006}


def test_an_hour_of_two_gpus_and_one_cpu_costs_their_prices():
    s = accrue(None, 0.0, {"cpu": 1, "gpu": 2}, PRICES, {})
    s = accrue(s, 3600.0, {"cpu": 1, "gpu": 2}, PRICES, {})
    assert s.usd_by_pool == pytest.approx({"cpu": 0.145, "gpu": 2.012})
    assert s.total_usd == pytest.approx(2.157) and s.fleet_per_hour_usd == pytest.approx(2.157)


def test_an_interval_is_charged_at_the_replicas_that_ran_in_it():
    s = accrue(None, 0.0, {"gpu": 1}, PRICES, {})
    s = accrue(s, 1800.0, {"gpu": 3}, PRICES, {})  # scaled up at the half hour
    s = accrue(s, 3600.0, {"gpu": 3}, PRICES, {})
    assert s.usd_by_pool["gpu"] == pytest.approx(1.006 * 0.5 + 3 * 1.006 * 0.5)


def test_cost_is_attributed_by_request_rate_and_an_idle_pool_books_idle():
    routes = {RouteKey("m", "gold"): RouteWeights.of("m", "gold", {"gpu": 75, "cpu": 25}),
              RouteKey("m", "bronze"): RouteWeights.of("m", "bronze", {"cpu": 100})}
    rates = route_rates_by_pool(routes, {RouteKey("m", "gold"): 40.0, RouteKey("m", "bronze"): 30.0})
    assert rates == {"gpu": {"m/gold": 30.0}, "cpu": {"m/gold": 10.0, "m/bronze": 30.0}}
    s = accrue(None, 0.0, {"cpu": 1, "gpu": 1}, PRICES, rates)
    s = accrue(s, 3600.0, {"cpu": 1, "gpu": 1}, PRICES, {"gpu": {}, "cpu": rates["cpu"]})
    assert s.usd_by_route["cpu"] == pytest.approx({"m/gold": 0.145 / 4, "m/bronze": 0.145 * 3 / 4})
    assert s.usd_by_route["gpu"] == pytest.approx({IDLE: 1.006})
    assert sum(s.attributed_usd().values()) == pytest.approx(s.total_usd)


def test_a_pool_scaled_to_zero_costs_nothing():
    s = accrue(None, 0.0, {"gpu": 0}, PRICES, {})
    s = accrue(s, 3600.0, {"gpu": 0}, PRICES, {})
    assert s.usd_by_pool["gpu"] == 0.0


def test_the_ledger_survives_a_json_round_trip():
    s = accrue(accrue(None, 0.0, {"cpu": 2}, PRICES, {}), 60.0, {"cpu": 2}, PRICES, {"cpu": {"m/gold": 1.0}})
    assert LedgerState.from_json(s.to_json()) == s
