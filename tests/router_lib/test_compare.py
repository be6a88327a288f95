"""What 'meets the SLAs' means in the comparison, and right-sizing."""

from __future__ import annotations

from router_lib.compare import meets_targets, right_size
from router_lib.domain import Tier, TierSet
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
    sized, result = right_size(f, t, SimSettings(service_distribution="deterministic"), {})
    assert meets_targets(result, sized)
    assert 1 <= sized.pools[0].replicas < 10
    if sized.pools[0].replicas > 1:  # one fewer would miss
        fewer = one_pool(sized.pools[0].replicas - 1)
        assert not meets_targets(simulate(fewer, t, SimSettings(service_distribution="deterministic")), fewer)
