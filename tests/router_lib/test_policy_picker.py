"""The picker as tables: cost-first filling up to each pool's room, spill-over, the excess spread
by capacity, isolation, fallback, and integer weights from the shares.

THREE_POOLS (tests/router_lib/builders.py), model ``embed``, ready cpu 2, gpu 1, inf 1.  Room for
gold (safe utilisation x replicas x X): inf 2133 req/s, gpu 640, cpu 2 x 6.7; for bronze: inf 2133,
cpu 2 x 64, gpu 640.  Capacity (replicas x X): inf 2667, gpu 800, cpu 160.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from router_lib.domain import Fleet
from router_lib.policy import PolicyInputs, PolicySettings
from router_lib.policy_picker import TINY_DEMAND, Placement, Tick, pick, target_weights
from router_lib.policy_stages import CapacityTable, build_capacity_table
from router_lib.policy_types import RoutePool
from router_lib.routes import ReasonKind, RouteKey
from tests.router_lib.builders import CPU, EMBED, GPU, INF, THREE_POOLS, fleet, metrics, profile, tiers

READY = {"cpu": 2, "gpu": 1, "inf": 1}
TABLE = build_capacity_table(THREE_POOLS, PolicySettings())
NAMES = TABLE.pool_names[EMBED]  # cpu, gpu, inf: the order of a placement's lists


def place(demands: Mapping[str, float], *, ready: Mapping[str, int] = READY, f: Fleet = THREE_POOLS,
          table: CapacityTable = TABLE, settings: PolicySettings | None = None) -> dict[str, Placement]:
    """Pick every tier of ``embed`` in one tick, strictest first; -> tier -> placement."""
    tick = Tick(PolicyInputs(f, metrics(), dict(ready), settings or PolicySettings()), table, {})
    feasible: set[RoutePool] = set()
    out = {}
    for rank, tier in enumerate(table.tiers_strictest_first):
        tick.start_tier(rank)
        if tier in demands:
            out[tier] = pick(RouteKey(EMBED, tier), max(demands[tier], TINY_DEMAND), table, tick, None, None, feasible)
    return out


def takes(placement: Placement) -> dict[str, float]:
    return {n: round(v, 1) for n, v in zip(NAMES, placement.takes, strict=True)}


def kinds(placement: Placement) -> dict[str, str | None]:
    return {n: r.kind.value if r else None for n, r in zip(NAMES, placement.reasons, strict=True)}


@pytest.mark.parametrize(("tier", "demand", "expected"), [
    ("gold", 100.0, {"cpu": 0.0, "gpu": 0.0, "inf": 100.0}),
    ("gold", 2500.0, {"cpu": 0.0, "gpu": 366.7, "inf": 2133.3}),
    ("gold", 2780.0, {"cpu": 6.7, "gpu": 640.0, "inf": 2133.3}),
    ("bronze", 2200.0, {"cpu": 66.7, "gpu": 0.0, "inf": 2133.3}),
    ("gold", 0.0, {"cpu": 0.0, "gpu": 0.0, "inf": 0.0}),
], ids=["cheapest-takes-all-it-can", "the-rest-spills-in-rank-order", "every-room-used-in-rank-order",
        "bronze-spills-to-cpu-before-gpu", "no-demand-a-placeholder-on-the-first"])
def test_pick_fills_pools_cost_first_up_to_their_room(tier: str, demand: float, expected: dict[str, float]) -> None:
    assert takes(place({tier: demand})[tier]) == expected


def test_demand_beyond_every_room_is_spread_over_the_feasible_pools_by_capacity() -> None:
    placed = place({"gold": 10_000.0})["gold"]
    rooms = {"cpu": 2 * 80.0 / 12, "gpu": 640.0, "inf": 2133.333}
    excess = {n: v - rooms[n] for n, v in zip(NAMES, placed.takes, strict=True)}
    assert sum(placed.takes) == pytest.approx(10_000.0)
    assert excess["inf"] / excess["gpu"] == pytest.approx(2666.667 / 800.0, rel=1e-4)
    assert excess["gpu"] / excess["cpu"] == pytest.approx(800.0 / 160.0, rel=1e-4)
    assert all("over safe capacity" in str(r) for r in placed.reasons)


def test_a_looser_tier_goes_to_pools_without_stricter_traffic_and_spreads_its_excess_there() -> None:
    twins = fleet([("inf-a", INF, 0.75, 1), ("inf-b", INF, 0.75, 1)], [profile(EMBED, INF, {1: 2.0, 16: 12.0})])
    table = build_capacity_table(twins, PolicySettings())
    placed = place({"gold": 100.0, "bronze": 5000.0}, ready={"inf-a": 1, "inf-b": 1}, f=twins, table=table)
    gold, bronze = placed["gold"].takes, placed["bronze"].takes
    x = table.serving[EMBED][0].throughput_per_replica  # 1333 req/s each
    assert gold == [100.0, 0.0]
    # inf-a gets only its room (0.8 x X less gold's 100); all of the excess went to inf-b
    assert bronze[0] == pytest.approx(0.8 * x - 100.0)
    assert bronze[1] == pytest.approx(5000.0 - bronze[0])


@pytest.mark.parametrize(("ready", "expected_takes", "expected_kinds"), [
    ({"cpu": 2, "gpu": 1, "inf": 1}, {"cpu": 0.0, "gpu": 10.0, "inf": 0.0},
     {"cpu": "fallback", "gpu": "fallback", "inf": "fallback"}),
    ({"cpu": 1, "gpu": 0, "inf": 1}, {"cpu": 0.0, "gpu": 0.0, "inf": 10.0},
     {"cpu": "fallback", "gpu": "no_replica", "inf": "fallback"}),
    ({"cpu": 0, "gpu": 0, "inf": 0}, {"cpu": 0.0, "gpu": 10.0, "inf": 0.0},
     {"cpu": "no_replica", "gpu": "no_healthy_pool", "inf": "no_replica"}),
], ids=["gpu-first", "inferentia-when-gpu-is-down", "every-pool-down-first-in-fallback-order"])
def test_no_pool_meeting_the_bound_falls_back_gpu_then_inferentia_then_cpu(
        ready: dict[str, int], expected_takes: dict[str, float], expected_kinds: dict[str, str]) -> None:
    impossible = fleet([("cpu", CPU, 0.05, 2), ("gpu", GPU, 1.0, 1), ("inf", INF, 0.75, 1)],
                       [profile(EMBED, CPU, {1: 10.0}), profile(EMBED, GPU, {1: 5.0}), profile(EMBED, INF, {1: 2.0})],
                       tiers(gold=1.0))
    placed = place({"gold": 10.0}, ready=ready, f=impossible, table=build_capacity_table(impossible, PolicySettings()))
    assert takes(placed["gold"]) == expected_takes
    assert kinds(placed["gold"]) == expected_kinds


def test_pools_not_needed_are_not_assessed() -> None:
    placed = place({"gold": 100.0})["gold"]
    assert kinds(placed) == {"cpu": None, "gpu": None, "inf": ReasonKind.CHEAPEST.value}
    assert placed.excluded == [False, False, False]


@pytest.mark.parametrize(("shares", "expected"), [
    ([0.0, 0.0, 2133.3], [0, 0, 100]),
    ([0.0, 366.7, 2133.3], [0, 15, 85]),
    ([1.0, 1.0, 1.0], [34, 33, 33]),
    ([1.0, 3.0], [25, 75]),
    ([0.0, 0.0, 0.0], [100, 0, 0]),
], ids=["one-taker-takes-all", "proportional", "remainder-ties-to-the-earlier-pool", "exact",
        "no-taker-the-first-pool"])
def test_target_weights_are_integers_summing_to_the_total(shares: list[float], expected: list[int]) -> None:
    assert target_weights(shares, 100) == expected


def test_a_remainder_tie_goes_to_the_pool_taking_more() -> None:
    assert target_weights([1.0, 3.0], 2) == [0, 2]  # exact 0.5 and 1.5: both remainders 0.5


def test_without_tier_isolation_a_looser_tier_shares_the_cheapest_pool_up_to_the_stricter_tiers_cap() -> None:
    isolated = place({"gold": 100.0, "bronze": 50.0})
    settings = PolicySettings(tier_isolation=False)
    shared = place({"gold": 100.0, "bronze": 50.0}, table=build_capacity_table(THREE_POOLS, settings),
                   f=THREE_POOLS, settings=settings)
    assert takes(isolated["gold"]) == takes(shared["gold"]) == {"cpu": 0.0, "gpu": 0.0, "inf": 100.0}
    assert takes(isolated["bronze"])["inf"] == 0.0  # kept off the pool that carries gold
    assert takes(shared["bronze"]) == {"cpu": 0.0, "gpu": 0.0, "inf": 50.0}  # the cheapest per request


def test_a_pool_that_shares_its_tiers_by_priority_is_not_kept_from_a_looser_tier_even_with_isolation() -> None:
    import dataclasses

    shared_inf = dataclasses.replace(THREE_POOLS, pools=tuple(
        dataclasses.replace(p, share_tiers=p.name == "inf") for p in THREE_POOLS.pools))
    placed = place({"gold": 100.0, "bronze": 50.0}, f=shared_inf, table=build_capacity_table(shared_inf, PolicySettings()))
    assert PolicySettings().tier_isolation
    assert takes(placed["gold"]) == {"cpu": 0.0, "gpu": 0.0, "inf": 100.0}
    assert takes(placed["bronze"]) == {"cpu": 0.0, "gpu": 0.0, "inf": 50.0}  # behind gold, on the cheapest pool
    # Beyond gold's cap on the shared pool the looser tier spills as before.
    placed = place({"gold": 100.0, "bronze": 2200.0}, f=shared_inf, table=build_capacity_table(shared_inf, PolicySettings()))
    assert takes(placed["bronze"])["inf"] == pytest.approx(2133.3 - 100.0, abs=0.1)
