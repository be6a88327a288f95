"""The calibration in the control loop: read -> learn -> the deciders use the calibrated profile,
persisted in the record, shown in /status; and the statistics adapter against fake answers."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace

from prometheus_client import CollectorRegistry

from control.actuator_fixed import FixedFleetActuator
from control.loop import ControlLoop
from control.metrics_export import ControlPlaneMetrics
from control.ports import ReplicaSet
from control.record import ControlRecord
from control.stats_source import TritonStatsSource
from control.status import render_status
from router_lib.calibration import CalibrationSettings, StatsReading
from router_lib.domain import PoolMode
from router_lib.routes import RouteKey
from tests.calibration.synthetic import FakeReplica, linear_curve, reading
from tests.calibration.test_calibration_stats import REAL
from tests.control.fakes import Clock, FakeDiscovery, FakeMetrics, FakeSink, MemoryStore, replicas
from tests.router_lib.builders import EMBED, THREE_POOLS, metrics

GOLD = RouteKey(EMBED, "gold")
# the three-pool fleet with a real CPU pool (emulated pools' calibrations are shown, not used)
FLEET = replace(THREE_POOLS, pools=tuple(replace(p, mode=PoolMode.REAL) if p.name == "cpu" else p
                                         for p in THREE_POOLS.pools))


TRUE_CPU = linear_curve(1.0, 0.5)  # 1.5 ms at batch 1, 5 ms at 8: far faster than the CPU profile says


class FakeStats:
    """The CPU pool's replicas run ``per_tick`` executions of batch 1 and of batch 8 between reads."""

    def __init__(self, per_tick: int = 200) -> None:
        self.replicas = {("cpu", f"r{i}"): FakeReplica(EMBED, TRUE_CPU, rng=random.Random(i)) for i in range(2)}
        self.per_tick = per_tick
        self.error: Exception | None = None
        self.last_errors: dict[str, str] = {}

    def read(self, replicas: ReplicaSet) -> StatsReading:
        if self.error:
            raise self.error
        out = reading(self.replicas)
        for r in self.replicas.values():
            r.run(1, self.per_tick)
            r.run(8, self.per_tick)
        return out


def make_loop(stats: FakeStats, store: MemoryStore | None = None,
              settings: CalibrationSettings | None = None) -> tuple[ControlLoop, MemoryStore, Clock]:
    store = store or MemoryStore()
    clock = Clock()
    loop = ControlLoop(fleet=FLEET, discovery=FakeDiscovery(replicas(cpu=2, gpu=1, inf=1)),
                       metrics=FakeMetrics(metrics({("cpu", EMBED): {"request_rate_per_s": 5.0}})), sink=FakeSink(),
                       store=store, actuator=FixedFleetActuator({p.name: p.replicas for p in THREE_POOLS.pools}),
                       clock=clock, wall_clock=lambda: 1.7e9 + clock.t, stats=stats, calibration=settings)
    loop.ledger_save_interval_s = 0.0
    return loop, store, clock


def ticks(loop: ControlLoop, clock: Clock, n: int):  # noqa: ANN201
    for _ in range(n):
        view = loop.tick()
        clock.advance(1.0)
    return view


def test_a_cpu_pool_faster_than_its_profile_takes_gold_once_the_calibration_is_confident() -> None:
    # the prior says 30 ms at batch 1, 200 ms at 8 (gold goes to inf); Triton shows 1.5 and 5 ms
    loop, store, clock = make_loop(FakeStats())
    first = loop.tick()
    assert first.routes[GOLD].as_dict().get("cpu", 0) == 0
    view = ticks(loop, clock, 2)
    assert view.routes[GOLD].as_dict().get("cpu", 0) == 0  # ~400 executions per batch size: not yet
    view = ticks(loop, clock, 3)  # ~1,000 and more: confident
    (cpu,) = [c for c in view.decision.calibration if c.pools == ("cpu",)]
    assert cpu.confident and abs(cpu.batch(8).mean_ms - TRUE_CPU(8)) < 0.05 * TRUE_CPU(8)
    assert view.routes[GOLD].as_dict()["cpu"] > 0  # the policy moves weight in steps
    status = render_status(FLEET, view, None)["calibration"]
    entry = next(e for e in status if e["pools"] == ["cpu"])
    assert entry["batch_1"]["prior_p50_ms"] == 30.0 and entry["batch_1"]["calibrated_p50_ms"] < 2.0
    assert entry["max_batch"]["batch_size"] == 8 and entry["max_batch"]["prior_p50_ms"] == 200.0
    assert entry["max_batch"]["confident"] and entry["max_batch"]["executions"] >= 1000
    assert entry["used_for_decisions"] and not entry["emulated"]
    assert store.record["calibration"]["service"][0]["pool"] == "cpu"


def test_the_exported_cost_per_request_follows_the_calibrated_latency_model() -> None:
    # the gauge is the policy's own figure: priced first from the offline profile, then again from
    # the calibrated one (one latency model), not left at the prior's figure
    registry = CollectorRegistry()
    loop, _, clock = make_loop(FakeStats())
    loop.observer = ControlPlaneMetrics(registry, FLEET, loop.settings)

    def cpu_gold_usd() -> float | None:
        return registry.get_sample_value("router_cost_per_1k_requests_usd",
                                         {"pool": "cpu", "model": EMBED, "tier": "gold"})

    ticks(loop, clock, 1)
    before = cpu_gold_usd()  # 30 ms at batch 1 never fits gold's bound: no figure or an infinite one
    ticks(loop, clock, 5)
    after = cpu_gold_usd()
    assert after is not None and math.isfinite(after) and after > 0
    assert before is None or not math.isfinite(before) or after < before


def test_an_emulated_pools_calibration_is_shown_but_not_used_unless_asked() -> None:
    stats = FakeStats()
    stats.replicas = {("inf", key[1]): r for key, r in stats.replicas.items()}  # the same numbers, on inf
    loop, _, clock = make_loop(stats)
    view = ticks(loop, clock, 5)
    (inf,) = [c for c in view.decision.calibration if c.pools == ("inf",)]
    assert inf.confident
    entry = next(e for e in render_status(FLEET, view, None)["calibration"] if e["pools"] == ["inf"])
    assert entry["emulated"] and not entry["used_for_decisions"]
    assert view.routes[GOLD].as_dict().get("cpu", 0) == 0  # nothing learned was used


def test_the_calibration_is_only_shown_when_not_to_be_used() -> None:
    loop, _, clock = make_loop(FakeStats(), settings=CalibrationSettings(use_for_decisions=False))
    view = ticks(loop, clock, 5)
    assert any(c.confident for c in view.decision.calibration)
    assert view.routes[GOLD].as_dict().get("cpu", 0) == 0


def test_the_learned_sums_survive_a_restart_and_older_records_still_load() -> None:
    loop, store, clock = make_loop(FakeStats())
    ticks(loop, clock, 5)
    saved = store.record["calibration"]
    again, _, _ = make_loop(FakeStats(), store=MemoryStore(store.record))
    assert again.resume()
    assert again._states.calibration is not None
    assert again._states.calibration.to_json()["service"] == saved["service"]
    old = dict(store.record)
    del old["calibration"]
    assert ControlRecord.from_json(old, "old record").decider_states(0.0).calibration is None


def test_an_unreadable_statistics_source_is_named_and_routing_goes_on() -> None:
    stats = FakeStats()
    stats.error = OSError("connection refused")
    loop, _, _ = make_loop(stats)
    view = loop.tick()
    assert view.routes and "connection refused" in view.metrics_errors["statistics"]


ENVOY = """# TYPE envoy_cluster_upstream_rq_time histogram
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="digits_classifier--cpu--http",le="+Inf"} 4
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="digits_classifier--cpu--http"} 10.5
envoy_cluster_upstream_rq_time_count{envoy_cluster_name="digits_classifier--cpu--http"} 4
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="digits_classifier--cpu--grpc",le="+Inf"} 1
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="digits_classifier--cpu--grpc"} 2.5
envoy_cluster_upstream_rq_time_count{envoy_cluster_name="digits_classifier--cpu--grpc"} 1
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="_xds--grpc"} 99
"""


def test_the_statistics_adapter_reads_every_serving_replica_and_names_a_bad_one() -> None:
    answers = {"http://127.0.0.1:9000/v2/models/stats": json.dumps(REAL),
               "http://127.0.0.1:9010/v2/models/stats": "<html>",
               "http://envoy/stats/prometheus": ENVOY}

    def fetch(url: str, timeout_s: float) -> str:
        return answers[url]

    source = TritonStatsSource({"cpu": ("digits_classifier",), "gpu": ()}, "http://envoy/stats/prometheus",
                               fetch=fetch)
    out = source.read(replicas(cpu=2))
    assert list(out.by_replica) == [("cpu", "127.0.0.1:9000")]
    assert out.by_replica[("cpu", "127.0.0.1:9000")]["digits_classifier"].by_batch[4].executions == 5
    assert "not JSON" in source.last_errors["http://127.0.0.1:9010/v2/models/stats"]
    e2e = out.end_to_end[("digits_classifier", "cpu")]
    assert (e2e.requests, e2e.total_ms) == (5, 13.0)


def test_the_statistics_adapter_reads_an_ensembles_steps_under_their_own_names() -> None:
    source = TritonStatsSource({"cpu": ("ens",)}, composing={"digits_classifier": "ens"},
                               fetch=lambda url, timeout_s: json.dumps(REAL))
    out = source.read(replicas(cpu=1))
    assert list(out.by_replica[("cpu", "127.0.0.1:9000")]) == ["digits_classifier"]
    assert out.ensembles == {"ens": ("digits_classifier",)}
