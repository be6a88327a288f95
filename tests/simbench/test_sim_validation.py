"""The sim-vs-measured logic of the platform benchmark (``benchmarks/platform/sim_validation.py``),
on synthetic runs: no Triton, no Envoy, no locust."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.platform import sim_validation as sv
from locustfiles.records import RequestRecord
from locustfiles.schedule import Schedule
from reporting.run_data import PoolInfo, RunData, StatusSample, TierInfo
from tests.router_lib.builders import CPU, fleet, profile

T0 = 1_000_000.0


def run_of(records: list[RequestRecord], *, duration_s: float = 10.0, triton: dict | None = None,
           weights: dict | None = None) -> RunData:
    samples = (StatusSample(T0, weights or {}, {}),)
    return RunData(label="r", shape="steady", started_unix_s=T0, ended_unix_s=T0 + duration_s,
                   pools=(PoolInfo("cpu", "cpu", "c-small", 0.1, 1, False),), tiers=(TierInfo("gold", 50.0, 0.999),),
                   records=tuple(sorted(records, key=lambda r: r.t_unix_s)), samples=samples, triton=triton or {})


def rec(t: float, latency_ms: float, *, tier: str = "gold", model: str = "m", batch: int = 1, ok: bool = True,
        protocol: str = "grpc") -> RequestRecord:
    return RequestRecord(T0 + t, tier, model, protocol, "cpu", False, latency_ms, ok, batch, "" if ok else "boom")


def test_local_load_counts_requests_sent_within_a_second_either_side() -> None:
    times = np.array([0.0, 0.5, 0.9, 5.0])
    assert sv.local_load_rps(times).tolist() == [1.5, 1.5, 1.5, 0.5]


def test_runnable_per_core_averages_the_samples_around_each_time_and_is_nan_where_there_are_none() -> None:
    samples = [(T0 + 0.0, 2.0), (T0 + 0.5, 4.0), (T0 + 9.0, 8.0)]
    out = sv.runnable_per_core(np.array([T0 + 0.2, T0 + 5.0, T0 + 9.0]), samples, cores=2)
    assert out[0] == pytest.approx(1.5)
    assert math.isnan(out[1])
    assert out[2] == pytest.approx(4.0)


def test_a_request_table_fills_times_without_a_cpu_sample_with_the_runs_mean() -> None:
    run = run_of([rec(0.1, 5.0), rec(8.0, 6.0)])
    table = sv.RequestTable.of(run, [(T0 + 0.1, 4.0)], cores=2)
    assert table.features["runnable_per_core"].tolist() == [2.0, 2.0]


def test_residuals_are_drawn_from_calibration_requests_at_a_similar_load() -> None:
    # Light load: overhead 1 ms; heavy load: 100 ms.  A request at heavy load must draw ~100 ms.
    n = 400
    loads = np.r_[np.full(n, 1.0), np.full(n, 10.0)]
    table = sv.RequestTable(tiers=np.array(["gold"] * 2 * n, dtype=object), classes=np.array(["c"] * 2 * n, dtype=object),
                            features={"load_rps": loads, "runnable_per_core": loads},
                            measured_ms=np.r_[np.full(n, 1.0), np.full(n, 100.0)], ok=np.ones(2 * n, dtype=bool))
    res = sv.Residuals.fit([(table, np.zeros(2 * n))], "runnable_per_core")
    rng = np.random.default_rng(0)
    assert set(res.draw("c", np.full(50, 10.0), rng, k=100).tolist()) == {100.0}
    assert set(res.draw("c", np.full(50, 0.5), rng, k=100).tolist()) == {1.0}


def test_conditioned_on_the_simulated_server_latency_a_long_queue_keeps_a_small_residual() -> None:
    # Where the replay queued a request 50 ms, the real request took 52 ms: residual 2 ms; where the
    # replay saw no queue, the real one took 30 ms (it queued outside the simulator's view).
    # Independent draws would add a 28 ms residual to a 50 ms queue; conditioned, the sum stays ~52.
    n = 300
    server = np.r_[np.full(n, 50.0), np.full(n, 1.0)]
    measured = np.r_[np.full(n, 52.0), np.full(n, 30.0)]
    table = sv.RequestTable(tiers=np.array(["gold"] * 2 * n, dtype=object), classes=np.array(["c"] * 2 * n, dtype=object),
                            features={"load_rps": np.ones(2 * n), "runnable_per_core": np.ones(2 * n)},
                            measured_ms=measured, ok=np.ones(2 * n, dtype=bool))
    res = sv.Residuals.fit([(table, server)], "server_ms")
    rng = np.random.default_rng(0)
    assert set(res.draw("c", np.full(50, 50.0), rng, k=100).tolist()) == {2.0}
    predicted = sv.predict_tier_quantiles(table, server, res, draws=5)
    assert predicted["gold"][0.99] == pytest.approx(52.0)
    independent = sv.predict_tier_quantiles(table, server, sv.Residuals.fit([(table, server)], "load_rps"), draws=5)
    assert independent["gold"][0.99] == pytest.approx(50.0 + 29.0)  # the two tails added


def test_a_joint_feature_draws_from_requests_near_in_both_server_latency_and_load() -> None:
    # Four corners: (short queue | long queue) x (light | heavy load), each with its own overhead.
    # Either feature alone mixes two corners; jointly, each query draws only its own corner's.
    n = 200
    server = np.repeat([1.0, 50.0, 1.0, 50.0], n)
    load = np.repeat([10.0, 10.0, 80.0, 80.0], n)
    overhead = np.repeat([2.0, 1.0, 30.0, 5.0], n)
    table = sv.RequestTable(tiers=np.array(["gold"] * 4 * n, dtype=object), classes=np.array(["c"] * 4 * n, dtype=object),
                            features={"load_rps": load, "runnable_per_core": np.ones(4 * n)},
                            measured_ms=server + overhead, ok=np.ones(4 * n, dtype=bool))
    joint = sv.Residuals.fit([(table, server)], "server_ms+load_rps")
    rng = np.random.default_rng(0)
    for s_ms, rps, want in ((1.0, 10.0, 2.0), (50.0, 10.0, 1.0), (1.0, 80.0, 30.0), (50.0, 80.0, 5.0)):
        got = joint.draw("c", np.column_stack([np.full(40, s_ms), np.full(40, rps)]), rng, k=100)
        assert set(got.tolist()) == {want}, (s_ms, rps)
    # a load above any calibrated one draws from the heaviest calibrated load (ranks clamp)
    assert set(joint.draw("c", np.array([[1.0, 120.0]] * 20), rng, k=50).tolist()) == {30.0}
    # the prediction reproduces the calibration run it was fitted on (each request its own corner)
    assert sv.predict_tier_quantiles(table, server, joint, draws=3) == sv.measured_tier_quantiles(table)
    alone = sv.Residuals.fit([(table, server)], "server_ms")
    assert set(alone.draw("c", np.full(400, 1.0), rng, k=400).tolist()) == {2.0, 30.0}  # the mix the joint one avoids


def test_joint_neighbours_break_ties_at_random_not_by_calibration_order() -> None:
    # 1,000 calibration requests with equal features (a deterministic service time, one load level):
    # the k drawn from must spread over all of them, not be the first k in time order.
    n = 1000
    table = sv.RequestTable(tiers=np.array(["gold"] * n, dtype=object), classes=np.array(["c"] * n, dtype=object),
                            features={"load_rps": np.full(n, 5.0), "runnable_per_core": np.ones(n)},
                            measured_ms=np.arange(n, dtype=float), ok=np.ones(n, dtype=bool))
    res = sv.Residuals.fit([(table, np.zeros(n))], "server_ms+load_rps")
    idx = res.neighbours("c", np.array([[0.0, 5.0]]), k=100)
    assert idx.shape == (1, 100) and len(set(idx[0].tolist())) == 100
    assert idx.max() > 500 and idx.min() < 500
    with pytest.raises(ValueError, match="expected 2 feature values per request, got 1"):
        res.neighbours("c", np.array([[0.0]]))


@pytest.mark.parametrize("feature", ["server_ms+cpu_percent", "load_rps+load_rps", "server_ms+"])
def test_a_joint_feature_names_known_features_each_once(feature: str) -> None:
    with pytest.raises(ValueError, match="feature must be one of"):
        sv.Residuals.fit([], feature)


def test_an_unknown_request_class_or_feature_is_refused_by_name() -> None:
    res = sv.Residuals({"a": (np.array([1.0]), np.array([1.0]))})
    with pytest.raises(KeyError, match="no calibration residuals for request class 'b'"):
        res.draw("b", np.array([1.0]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="feature must be one of"):
        sv.Residuals.fit([], "cpu_percent")


def test_failed_requests_are_not_calibrated_on() -> None:
    table = sv.RequestTable(tiers=np.array(["gold", "gold"], dtype=object), classes=np.array(["c", "c"], dtype=object),
                            features={"load_rps": np.ones(2), "runnable_per_core": np.ones(2)},
                            measured_ms=np.array([5.0, 9000.0]), ok=np.array([True, False]))
    res = sv.Residuals.fit([(table, np.zeros(2))])
    assert res.by_class["c"][1].tolist() == [5.0]


def test_prediction_reproduces_the_p99_of_the_distribution_it_was_calibrated_on() -> None:
    rng = np.random.default_rng(3)
    n = 3000
    overhead = rng.lognormal(mean=1.0, sigma=0.8, size=n)
    server = np.full(n, 2.0)
    table = sv.RequestTable(tiers=np.array(["gold"] * n, dtype=object), classes=np.array(["c"] * n, dtype=object),
                            features={"load_rps": np.ones(n), "runnable_per_core": np.ones(n)},
                            measured_ms=server + overhead, ok=np.ones(n, dtype=bool))
    res = sv.Residuals.fit([(table, server)])
    other = rng.lognormal(mean=1.0, sigma=0.8, size=n) + 2.0  # a fresh sample of the same process
    fresh = sv.RequestTable(table.tiers, table.classes, table.features, other, table.ok)
    predicted = sv.predict_tier_p99(fresh, server, res, draws=15, seed=1, )["gold"]
    measured = sv.measured_tier_p99(fresh)["gold"]
    assert predicted == pytest.approx(measured, rel=0.15)


def test_a_batch_is_its_items_in_the_trace_and_the_slowest_item_is_the_request() -> None:
    run = run_of([rec(0.0, 1.0, batch=3), rec(0.5, 1.0)])
    trace, owner = sv.request_trace(run)
    assert len(trace) == 4
    assert owner.tolist() == [0, 0, 0, 1]


def test_server_latency_per_request_comes_from_the_simulated_queue() -> None:
    # One CPU replica, 1 instance, 10 ms for one item, 16 ms for three: a batch of 3 sent at once
    # runs as one execution (16 ms, not three of 10); a lone request later takes 10 ms.
    f = fleet([("cpu", CPU, 0.1, 1)], [profile("m", CPU, {1: 10.0, 3: 16.0}, max_batch=4)])
    run = run_of([rec(0.0, 1.0, batch=3), rec(5.0, 1.0)], weights={("m", "gold"): {"cpu": 100}})
    assert sv.simulate_server_ms(run, f).tolist() == pytest.approx([16.0, 10.0])


def test_a_batch_request_takes_one_instance_and_a_request_after_it_the_other() -> None:
    # Two instances; a batch of 8 and, 1 ms later, a single request.  Triton runs the batch on one
    # instance and the single on the other at once; split into items, the batch took both
    # instances and the single waited (what the platform benchmark's replay did until 2026-11-30).
    f = fleet([("cpu", CPU, 0.1, 1)], [profile("m", CPU, {1: 3.0, 8: 12.0}, instances=2, max_batch=16)])
    run = run_of([rec(0.0, 1.0, batch=8), rec(0.001, 1.0)], weights={("m", "gold"): {"cpu": 100}})
    assert sv.simulate_server_ms(run, f).tolist() == pytest.approx([12.0, 3.0])


def test_a_request_is_never_split_and_a_batch_closes_at_the_first_request_that_does_not_fit() -> None:
    # One instance busy with a single for 3 ms; meanwhile three batches of 3 queue (max batch 8):
    # the next execution takes two of them (6 items), not 8 items of three requests.
    f = fleet([("cpu", CPU, 0.1, 1)], [profile("m", CPU, {1: 3.0, 6: 6.0, 8: 8.0}, max_batch=8)])
    run = run_of([rec(0.0, 1.0), *[rec(0.001 * (i + 1), 1.0, batch=3) for i in range(3)]],
                 weights={("m", "gold"): {"cpu": 100}})
    server = sv.simulate_server_ms(run, f)
    # the single: 3 ms; two batches of 3 start at 3 ms and end at 9 ms; the third starts then.
    # (latency_ms(3) on the profile's curve between 1 -> 3 ms and 6 -> 6 ms is 4.2 ms)
    assert server[0] == pytest.approx(3.0)
    assert server[1] == pytest.approx(9.0 - 1.0) and server[2] == pytest.approx(9.0 - 2.0)
    assert server[3] == pytest.approx(9.0 - 3.0 + f.profiles[("m", CPU)].latency_ms(3))


def test_a_request_larger_than_the_profiles_max_batch_is_refused_by_name() -> None:
    f = fleet([("cpu", CPU, 0.1, 1)], [profile("m", CPU, {1: 10.0}, max_batch=1)])
    run = run_of([rec(0.0, 1.0, batch=3)], weights={("m", "gold"): {"cpu": 100}})
    with pytest.raises(ValueError, match="batch 3 for m on cpu is larger than the profile's max_batch_size 1"):
        sv.simulate_server_ms(run, f)


def test_service_times_are_scaled_to_what_triton_measured_at_the_measured_batch() -> None:
    # 100 executions of 8 items, each from 2 requests of 4: Triton charges each request the whole
    # 12 ms of its execution, so the duration counter holds 200 x 12 ms, not 100 x 12 ms.
    f = fleet([("cpu", CPU, 0.1, 1)], [profile("m", CPU, {1: 1.0, 8: 4.0})])
    triton = {"cpu": {"m": {"nv_inference_exec_count": 100.0, "nv_inference_count": 800.0,
                            "nv_inference_request_success": 200.0,
                            "nv_inference_compute_infer_duration_us": 200 * 12_000.0}}}
    scales = sv.service_scales(f, [run_of([], triton=triton)])
    assert scales[("cpu", "m")].ratio == pytest.approx(3.0)
    scaled = sv.scaled_fleet(f, scales)
    assert scaled.profiles[("m", CPU)].latency_ms(1) == pytest.approx(3.0)
    assert scaled.profiles[("m", CPU)].latency_ms(8) == pytest.approx(12.0)


def test_scaling_per_pool_is_refused_when_two_pools_share_an_accelerator() -> None:
    f = fleet([("a", CPU, 0.1, 1), ("b", CPU, 0.1, 1)], [profile("m", CPU, {1: 1.0})])
    with pytest.raises(ValueError, match="one pool per accelerator"):
        sv.scaled_fleet(f, {})


def test_counters_of_several_calibration_runs_add_up() -> None:
    a = run_of([], triton={"cpu": {"m": {"nv_inference_exec_count": 1.0}}})
    b = run_of([], triton={"cpu": {"m": {"nv_inference_exec_count": 2.0}}, "inf2": {"m": {"nv_inference_count": 4.0}}})
    assert sv.summed_triton([a, b]) == {"cpu": {"m": {"nv_inference_exec_count": 3.0}},
                                        "inf2": {"m": {"nv_inference_count": 4.0}}}


def test_a_pair_compares_the_median_simulated_with_the_median_measured_and_reports_the_spread() -> None:
    p = sv.pair("router / step", "gold", "validation", [10.0, 12.0, 20.0], [13.0, 13.5, 14.0], [1.0, 1.0, 1.0])
    assert p["measured_p99_ms"] == 12.0 and p["simulated_p99_ms"] == 13.5
    assert p["gap_pct"] == 12.5 and p["within_target"] and not p["within_goal"]
    assert p["within_measured_range"]
    assert not sv.pair("r / s", "gold", "validation", [10.0, 12.0], [30.0])["within_measured_range"]
    assert p["measured_spread"] == {"median": 12.0, "min": 10.0, "max": 20.0, "range_pct": 83.3, "n": 3}
    assert p["uncalibrated_gap_pct"] == pytest.approx(-91.7)


def _pairs(n: int, shapes: tuple[str, ...], gap: float) -> list[dict]:
    return [sv.pair(f"router / {shapes[i % len(shapes)]}", "gold", "validation", [100.0], [100.0 * (1 + gap)])
            for i in range(n)]


@pytest.mark.parametrize(("pairs", "met"), [
    pytest.param(_pairs(15, ("steady", "step", "burst"), 0.1), True, id="15-pairs-3-shapes-within-15pct-met"),
    pytest.param(_pairs(15, ("steady", "step", "burst"), 0.2), False, id="a-gap-of-20pct-is-not-met"),
    pytest.param(_pairs(14, ("steady", "step", "burst"), 0.0), False, id="too-few-pairs-is-not-met"),
    pytest.param(_pairs(15, ("steady", "step"), 0.0), False, id="too-few-shapes-is-not-met"),
    pytest.param(_pairs(15, ("steady", "step", "burst"), 0.0)
                 + [sv.pair("router / stairs", "gold", "calibration", [1.0], [9.0])], True,
                 id="calibration-pairs-do-not-count"),
])
def test_the_verdict_needs_every_validation_pair_within_15pct_over_enough_pairs_and_shapes(pairs: list, met: bool) -> None:
    assert sv.verdict(pairs)["met"] is met


@pytest.mark.parametrize(("t", "m"), [(0.0, 1.0), (26.0, 1.5), (51.0, 2.0), (99.0, 3.0)])
def test_the_stairs_calibration_shape_climbs_through_the_other_shapes_levels(t: float, m: float) -> None:
    assert Schedule("stairs", 100.0).multiplier(t) == m


def test_the_stairs_shape_ends_with_the_run() -> None:
    assert Schedule("stairs", 100.0).multiplier(100.0) is None


def stats_doc(**models: dict[int, tuple[int, float]]) -> dict:
    """A Triton statistics document: model -> {batch size: (executions, ms per execution)}."""
    return {"model_stats": [
        {"name": name, "version": "1", "inference_stats": {"success": {"count": sum(n for n, _ in by.values()), "ns": 1}},
         "batch_stats": [{"batch_size": b, "compute_infer": {"count": n, "ns": int(n * ms * 1e6)}}
                         for b, (n, ms) in by.items()]}
        for name, by in models.items()]}


def test_batch_sizes_run_often_enough_take_the_time_triton_measured_and_the_rest_keep_the_profile() -> None:
    # Profile: 1 ms at 1, 8 ms at 8 (linear).  Measured over two runs: batch 1 at 3 ms (100 + 100
    # executions), batch 8 at 9 ms (40), batch 4 only 5 times (too few: the profile stays there).
    f = fleet([("cpu", CPU, 0.1, 1)], [profile("m", CPU, {1: 1.0, 8: 8.0})])
    run1 = {"before": {"cpu": {"0": stats_doc(m={1: (10, 1.0)})}},
            "after": {"cpu": {"0": stats_doc(m={1: (110, (10 * 1.0 + 100 * 3.0) / 110), 8: (40, 9.0), 4: (5, 2.0)})}}}
    run2 = {"before": {"cpu": {"0": stats_doc(m={1: (4, 1.0)})}},  # another platform: counters started again
            "after": {"cpu": {"0": stats_doc(m={1: (104, (4 * 1.0 + 100 * 3.0) / 104)})}}}
    calibrated, used = sv.batch_calibrated_fleet(f, [run1, run2], {})
    prof = calibrated.profiles[("m", CPU)]
    assert prof.latency_ms(1) == pytest.approx(3.0, rel=0.01)  # 200 executions at 3 ms, the prior as one at 1
    assert prof.latency_ms(8) == pytest.approx(9.0, rel=0.01)
    assert prof.latency_ms(4) == pytest.approx(3.0 + (9.0 - 3.0) * 3 / 7, rel=0.01)  # interpolated, not the 5 runs
    assert {(u.batch_size, round(u.executions)) for u in used} == {(1, 200), (8, 40)}


def test_an_ensemble_is_calibrated_from_its_steps_at_each_batch_size() -> None:
    f = fleet([("cpu", CPU, 0.1, 1)], [profile("e", CPU, {1: 1.0, 4: 4.0})])
    before = {"cpu": {"0": stats_doc(e_tok={1: (0, 0.0)}, e_onnx={1: (0, 0.0)})}}
    after = {"cpu": {"0": stats_doc(e_tok={1: (50, 0.5)}, e_onnx={1: (50, 2.0)})}}
    calibrated, _used = sv.batch_calibrated_fleet(f, [{"before": before, "after": after}],
                                                  {"e": ("e_tok", "e_onnx")})
    assert calibrated.profiles[("e", CPU)].latency_ms(1) == pytest.approx(2.5, rel=0.02)


def test_batch_calibration_needs_one_pool_per_accelerator() -> None:
    f = fleet([("a", CPU, 0.1, 1), ("b", CPU, 0.1, 1)], [profile("m", CPU, {1: 1.0})])
    with pytest.raises(ValueError, match="one pool per accelerator"):
        sv.batch_calibrated_fleet(f, [], {})
