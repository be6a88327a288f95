"""The simulator against queueing theory, and its bookkeeping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from router_lib.simulator import SimSettings, simulate
from router_lib.workload import Stream, Workload, make_trace
from tests.router_lib.builders import CPU, GPU, fleet, profile, tiers


def one_pool(service_ms: float, instances: int, tail: float = 1.0):
    return fleet([("pool", CPU, 1.0, 1)], [profile("m", CPU, {1: service_ms}, instances=instances, max_batch=1,
                                                   tail=tail)], tiers(bronze=None))


def poisson_trace(rate: float, duration_s: float, seed: int = 3):
    return make_trace(Workload("t", "", duration_s, seed, (Stream("m", "bronze", rate),)))


def erlang_c_wait_ms(arrival_per_s: float, service_ms: float, servers: int) -> float:
    """Mean wait in queue of M/M/c (Erlang C)."""
    a = arrival_per_s * service_ms / 1000.0
    rho = a / servers
    top = a ** servers / math.factorial(servers) / (1 - rho)
    p_wait = top / (sum(a ** k / math.factorial(k) for k in range(servers)) + top)
    return p_wait / (servers / (service_ms / 1000.0) - arrival_per_s) * 1000.0


def test_md1_mean_wait_matches_the_closed_form_within_5_percent() -> None:
    service_ms, rate = 10.0, 70.0  # rho = 0.7
    result = simulate(one_pool(service_ms, 1), poisson_trace(rate, 2000.0),
                      SimSettings(service_distribution="deterministic", network_overhead_ms=0.0))
    rho = rate * service_ms / 1000.0
    expected = rho * service_ms / (2 * (1 - rho))  # Pollaczek-Khinchine for deterministic service
    assert result.mean_wait_ms == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize(("servers", "rate"), [(1, 60.0), (2, 150.0), (4, 320.0)], ids=["M/M/1", "M/M/2", "M/M/4"])
def test_mmc_mean_wait_matches_erlang_c_within_5_percent(servers: int, rate: float) -> None:
    service_ms = 10.0
    result = simulate(one_pool(service_ms, servers), poisson_trace(rate, 1500.0, seed=11),
                      SimSettings(service_distribution="exponential", network_overhead_ms=0.0))
    assert result.mean_wait_ms == pytest.approx(erlang_c_wait_ms(rate, service_ms, servers), rel=0.05)


def test_lognormal_tail_has_the_profiles_p99_over_p50_at_low_load() -> None:
    result = simulate(one_pool(10.0, 8, tail=1.5), poisson_trace(20.0, 300.0), SimSettings(network_overhead_ms=0.0))
    stats = result.by_tier["bronze"]
    assert stats.p50_ms == pytest.approx(10.0, rel=0.05)
    assert stats.p99_ms / stats.p50_ms == pytest.approx(1.5, rel=0.1)


def test_batching_raises_throughput_past_the_batch_1_capacity() -> None:
    # batch 1: 10 ms (100 req/s); batch 8: 20 ms (400 req/s).  300 req/s only fits with batching.
    f = fleet([("pool", GPU, 1.0, 1)], [profile("m", GPU, {1: 10.0, 8: 20.0}, tail=1.0)], tiers(bronze=None))
    result = simulate(f, poisson_trace(300.0, 60.0), SimSettings(service_distribution="deterministic"))
    assert result.by_tier["bronze"].p99_ms < 100.0


def test_results_are_seeded_and_costs_add_up() -> None:
    f = fleet([("cpu", CPU, 0.5, 2), ("gpu", GPU, 2.0, 1)],
              [profile("m", CPU, {1: 5.0}, instances=2), profile("m", GPU, {1: 1.0, 8: 2.0})], tiers(gold=50, bronze=None))
    wl = Workload("w", "", 60.0, 5, (Stream("m", "gold", 300.0), Stream("m", "bronze", 200.0, "bursty")))
    a = simulate(f, make_trace(wl))
    b = simulate(f, make_trace(wl))
    assert a.by_tier == b.by_tier and a.by_pool == b.by_pool
    assert a.cost_per_hour_usd == pytest.approx(0.5 * 2 + 2.0)
    assert sum(p.requests for p in a.by_pool.values()) == a.requests
    # every pool's cost is charged to some route: the route costs add back to the fleet's cost
    total = sum(a.usd_per_million_by_route[r] * a.by_route[r].count for r in a.by_route) / 1e6
    assert total == pytest.approx(a.cost_per_hour_usd * 60.0 / 3600.0, rel=1e-6)
    assert a.decisions == 61 and np.isfinite(a.decide_ms_mean)  # one at t=0, then one per 1 s tick


@pytest.mark.parametrize("shared", [False, True], ids=["fifo", "priority"])
def test_a_shared_pool_serves_gold_first_as_a_non_preemptive_priority_queue(shared: bool) -> None:
    """M/D/1 with two classes (Cobham): W0 = sum(lambda_i S^2) / 2; gold W0 / (1 - rho_gold), silver
    W0 / ((1 - rho_gold)(1 - rho)); FIFO: both rho S / (2 (1 - rho))."""
    import dataclasses

    service_ms, gold, silver = 10.0, 30.0, 40.0
    f = fleet([("pool", CPU, 1.0, 1)], [profile("m", CPU, {1: service_ms}, max_batch=1, tail=1.0)],
              tiers(gold=50.0, silver=150.0))
    f = dataclasses.replace(f, pools=tuple(dataclasses.replace(p, share_tiers=shared) for p in f.pools))
    trace = make_trace(Workload("t", "", 1500.0, 5, (Stream("m", "gold", gold), Stream("m", "silver", silver))))
    result = simulate(f, trace, SimSettings(service_distribution="deterministic", network_overhead_ms=0.0))
    s = service_ms / 1000.0
    rho_gold, rho = gold * s, (gold + silver) * s
    w0 = (gold + silver) * s * s / 2 * 1000.0
    expected = ({"gold": w0 / (1 - rho_gold), "silver": w0 / ((1 - rho_gold) * (1 - rho))} if shared
                else dict.fromkeys(("gold", "silver"), rho * service_ms / (2 * (1 - rho))))
    for ki, tier in enumerate(trace.tiers):
        waited = result.item_latency_ms[trace.tier_index == ki] - service_ms
        assert float(np.mean(waited)) == pytest.approx(expected[tier], rel=0.06), tier


def test_items_of_one_request_share_a_replica_and_an_execution_and_a_bad_request_id_is_refused() -> None:
    from router_lib.workload import Trace

    # Two replicas of one instance each; a request of 4 items at t=0.  As one request it runs once
    # on one replica (latency_ms(4) = 8 ms); as 4 separate items least-request spreads them over
    # both replicas, two executions of 2 items (latency_ms(2)).
    f = fleet([("cpu", CPU, 0.1, 2)], [profile("m", CPU, {1: 2.0, 2: 4.0, 4: 8.0}, max_batch=4)])
    times = np.zeros(4)
    idx = np.zeros(4, dtype=np.int32)
    grouped = Trace(times, idx, idx, ("m",), ("gold",), 1.0, request_id=np.zeros(4, dtype=np.int64))
    single = Trace(times, idx, idx, ("m",), ("gold",), 1.0)
    settings = SimSettings(network_overhead_ms=0.0, service_distribution="deterministic")
    assert simulate(f, grouped, settings).by_tier["gold"].p50_ms == pytest.approx(8.0)
    assert simulate(f, single, settings).by_tier["gold"].p99_ms < 8.0
    with pytest.raises(ValueError, match="request_id has 3 entries for 4 arrivals"):
        Trace(times, idx, idx, ("m",), ("gold",), 1.0, request_id=np.zeros(3, dtype=np.int64))
