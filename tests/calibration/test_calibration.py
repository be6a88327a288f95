"""The online calibration against synthetic Triton statistics from a known service curve."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from router_lib.calibration import (
    CalibrationSettings,
    CalibrationState,
    EndToEnd,
    StatsReading,
    calibrated_fleet,
    calibration_of,
    mean_over_median,
    observe,
    pool_calibrations,
    prior_shaped,
)
from router_lib.domain import PoolMode
from router_lib.latency_model import predicted_p99_ms
from tests.calibration.synthetic import FakeReplica, linear_curve, reading
from tests.router_lib.builders import CPU, GPU, fleet, profile

TRUE = linear_curve(2.0, 0.5)  # mean ms of one execution of a batch of b: 2.5 ms at 1, 18 ms at 32
BATCHES = (1, 4, 8, 32)
SETTINGS = CalibrationSettings()


def off_prior(factor: float = 1.4, tail: float = 1.5):  # noqa: ANN201
    """A GPU profile ``factor`` times slower than the truth (in p50 terms), as an offline prior."""
    p = profile("m", GPU, {1: 1.0, 32: 1.0}, tail=tail)
    median = {b: TRUE(b) / mean_over_median(p) * factor for b in (1, 8, 32)}
    return replace(p, latency_ms_by_batch=median)


def run_ticks(replicas: dict[tuple[str, str], FakeReplica], ticks: int, per_tick: int, state=None,  # noqa: ANN001
              rng: random.Random | None = None, settings: CalibrationSettings = SETTINGS) -> CalibrationState:
    rng = rng or random.Random(3)
    state = observe(state, reading(replicas), settings, 1000.0)  # the baseline
    for t in range(ticks):
        for r in replicas.values():
            for b in BATCHES:
                r.run(b, rng.randint(per_tick // 2, per_tick))
        state = observe(state, reading(replicas), settings, 1001.0 + t)
    return state


def test_synthetic_statistics_from_a_known_curve_are_recovered_within_5_percent() -> None:
    prior = off_prior(1.4)
    replicas = {("gpu", f"r{i}"): FakeReplica("m", TRUE, rng=random.Random(i)) for i in range(2)}
    state = run_ticks(replicas, ticks=40, per_tick=60)
    cal = calibration_of(state, prior, ("gpu",), SETTINGS)
    for b in BATCHES:
        est = cal.batch(b)
        assert est is not None and est.executions > 1000
        assert est.mean_ms == pytest.approx(TRUE(b), rel=0.05), b
        assert est.confident and est.relative_standard_error < 0.02
    # the calibrated profile holds the p50 (mean / log-normal factor) and the latency model takes it
    calibrated = cal.profile()
    assert calibrated.provenance.kind == "online"
    assert calibrated.latency_ms(8) * mean_over_median(prior) == pytest.approx(TRUE(8), rel=0.05)
    assert predicted_p99_ms(calibrated, 0.3) < predicted_p99_ms(prior, 0.3)


def test_the_prior_dominates_with_few_samples_and_fades_with_many() -> None:
    prior = off_prior(1.6)
    prior_mean = prior.latency_ms(8) * mean_over_median(prior)
    r = FakeReplica("m", TRUE)
    state = observe(None, reading({("gpu", "a"): r}), SETTINGS, 0.0)
    r.run(8, 2)
    few = calibration_of(observe(state, reading({("gpu", "a"): r}), SETTINGS, 1.0), prior, ("gpu",), SETTINGS)
    est = few.batch(8)
    assert est is not None and est.executions == 2
    assert abs(est.mean_ms - prior_mean) < abs(est.mean_ms - TRUE(8))  # nearer the prior
    assert not est.confident and not few.confident
    many = calibration_of(run_ticks({("gpu", "a"): r}, 60, 80), prior, ("gpu",), SETTINGS).batch(8)
    assert many is not None and many.mean_ms == pytest.approx(TRUE(8), rel=0.03)
    assert many.relative_standard_error < est.relative_standard_error


@pytest.mark.parametrize("factor", [0.1, 5.0], ids=["prior-10x-too-fast", "prior-5x-too-slow"])
def test_a_prior_the_data_contradict_is_dropped_once_the_data_outweigh_it(factor: float) -> None:
    prior = off_prior(factor)
    r = FakeReplica("m", TRUE)
    state = observe(None, reading({("gpu", "a"): r}), SETTINGS, 0.0)
    r.run(8, 10)  # fewer than the prior's 20 pseudo-executions: the prior still counts
    state = observe(state, reading({("gpu", "a"): r}), SETTINGS, 1.0)
    early = calibration_of(state, prior, ("gpu",), SETTINGS).batch(8)
    assert early is not None and not early.prior_rejected
    r.run(8, 30)
    state = observe(state, reading({("gpu", "a"): r}), SETTINGS, 2.0)
    late = calibration_of(state, prior, ("gpu",), SETTINGS).batch(8)
    assert late is not None and late.prior_rejected and late.mean_ms == late.observed_mean_ms


def test_a_replica_restart_starts_a_new_baseline_and_its_warm_up_is_not_learned() -> None:
    prior = off_prior(1.0)
    r = FakeReplica("m", TRUE)
    state = run_ticks({("gpu", "a"): r}, 10, 60)
    before = calibration_of(state, prior, ("gpu",), SETTINGS).batch(1)
    r.restart()
    r.run(1, 1, extra_ms=200.0)  # the first execution after a start: warm-up
    state = observe(state, reading({("gpu", "a"): r}), SETTINGS, 2000.0)
    assert state.restarts_seen == 1
    after = calibration_of(state, prior, ("gpu",), SETTINGS).batch(1)
    assert before is not None and after is not None and after.executions == before.executions
    r.run(1, 50)
    state = observe(state, reading({("gpu", "a"): r}), SETTINGS, 2001.0)
    later = calibration_of(state, prior, ("gpu",), SETTINGS).batch(1)
    assert later is not None and later.executions == before.executions + 50
    assert later.mean_ms == pytest.approx(TRUE(1), rel=0.05)


def test_a_vanished_replica_is_forgotten_and_its_return_is_a_baseline() -> None:
    r = FakeReplica("m", TRUE)
    state = run_ticks({("gpu", "a"): r}, 2, 10)
    n = state.service[("m", "gpu", 1)].executions
    state = observe(state, StatsReading(), SETTINGS, 10.0)
    r.run(1, 30)
    state = observe(state, reading({("gpu", "a"): r}), SETTINGS, 11.0)
    assert state.service[("m", "gpu", 1)].executions == n


def test_memory_makes_the_estimate_follow_a_service_time_that_drifts() -> None:
    settings = CalibrationSettings(memory_executions=2000)
    prior = off_prior(1.0)
    r = FakeReplica("m", TRUE)
    state = run_ticks({("gpu", "a"): r}, 40, 60, settings=settings)
    r.curve = linear_curve(4.0, 1.0)  # twice as slow now
    state = run_ticks({("gpu", "a"): r}, 120, 60, state=state, settings=settings)
    est = calibration_of(state, prior, ("gpu",), settings).batch(4)
    assert est is not None and est.mean_ms == pytest.approx(2 * TRUE(4), rel=0.05)


@pytest.mark.parametrize("flush_every", [1, 5], ids=["edge-every-tick", "edge-flushes-every-5-ticks"])
def test_overhead_outside_triton_is_end_to_end_minus_triton_request_time(flush_every: int) -> None:
    """Envoy publishes its histogram sums every few seconds: the edge's counters then move in
    steps while Triton's move every tick; over the period the means still line up."""
    r = FakeReplica("m", TRUE)
    edge, published = [0.0, 0.0], [0.0, 0.0]

    def read() -> StatsReading:
        return StatsReading({("gpu", "a"): {"m": r.stats()}}, {("m", "gpu"): EndToEnd(*published)})

    state = observe(None, read(), SETTINGS, 0.0)
    for t in range(20):
        before_req, before_ns = r.requests, r.request_ns
        r.run(1, 100)
        edge[0] += r.requests - before_req
        edge[1] += (r.request_ns - before_ns) / 1e6 + 0.7 * (r.requests - before_req)  # 0.7 ms outside
        if (t + 1) % flush_every == 0:
            published[:] = edge
        state = observe(state, read(), SETTINGS, 1.0 + t)
    cal = calibration_of(state, off_prior(1.0), ("gpu",), SETTINGS)
    assert cal.overhead_ms == pytest.approx(0.7, abs=0.02) and cal.overhead_requests == 2000


def test_the_fleet_gets_a_calibrated_profile_only_where_confident() -> None:
    prior = off_prior(1.4)
    cpu_prior = profile("m", CPU, {1: 5.0, 8: 30.0})
    f = fleet([("gpu", GPU, 1.0, 1), ("cpu", CPU, 0.1, 1)], [prior, cpu_prior])
    f = replace(f, pools=tuple(replace(p, mode=PoolMode.REAL) for p in f.pools))
    r = FakeReplica("m", TRUE)
    state = run_ticks({("gpu", "a"): r}, 3, 20)  # ~180 executions per batch: not enough
    assert calibrated_fleet(f, state, SETTINGS) is f
    state = run_ticks({("gpu", "a"): r}, 40, 60, state=state)
    out = calibrated_fleet(f, state, SETTINGS)
    gpu = out.profile("m", GPU)
    assert gpu is not None and gpu.provenance.kind == "online"
    assert gpu.latency_ms(32) == pytest.approx(TRUE(32) / mean_over_median(prior), rel=0.05)
    assert out.profile("m", CPU) is cpu_prior  # never observed: the offline profile stays
    assert calibrated_fleet(f, state, replace(SETTINGS, use_for_decisions=False)) is f
    emulated = replace(f, pools=tuple(replace(p, mode=PoolMode.EMULATED) for p in f.pools))
    assert calibrated_fleet(emulated, state, SETTINGS) is emulated  # it measured the emulation
    assert calibrated_fleet(emulated, state, replace(SETTINGS, calibrate_emulated=True)) is not emulated
    views = pool_calibrations(f, state, SETTINGS)
    assert [(c.model, c.pools, c.confident) for c in views] == [("m", ("gpu",), True), ("m", ("cpu",), False)]


def test_an_ensemble_is_calibrated_from_its_steps_added_up() -> None:
    tokenizer, model = linear_curve(0.5, 0.05), linear_curve(2.0, 0.5)
    steps = {"tok": FakeReplica("tok", tokenizer, rng=random.Random(1)),
             "onnx": FakeReplica("onnx", model, rng=random.Random(2))}

    def read() -> StatsReading:
        return StatsReading({("cpu", "a"): {name: r.stats() for name, r in steps.items()}},
                            ensembles={"embed": ("onnx", "tok")})

    state = observe(None, read(), SETTINGS, 0.0)
    for t in range(30):
        for r in steps.values():
            r.run(1, 60)
            r.run(8, 40)
        state = observe(state, read(), SETTINGS, 1.0 + t)
    cal = calibration_of(state, profile("embed", CPU, {1: 3.0, 8: 8.0}), ("cpu",), SETTINGS)
    for b in (1, 8):
        est = cal.batch(b)
        assert est is not None and est.executions == 30 * (60 if b == 1 else 40)
        assert est.mean_ms == pytest.approx(tokenizer(b) + model(b), rel=0.05)


def test_state_survives_json_round_trip() -> None:
    state = run_ticks({("gpu", "a"): FakeReplica("m", TRUE)}, 3, 20)
    back = CalibrationState.from_json(json.loads(json.dumps(state.to_json())), "record")
    assert back.service == state.service and back.updated_unix_s == state.updated_unix_s
    assert back.baselines == {}  # counters of the previous reading are not persisted


@pytest.mark.parametrize(("data", "message"), [
    ({"service": [{"model": "m", "pool": "p", "batch_size": 0, "executions": 1, "total_ms": 1,
                   "window_sq_ms2": 1, "windows": 1}]}, r"service\[0\]\.batch_size"),
    ({"service": [{"model": "m", "pool": "p", "batch_size": 1}]}, "missing field 'executions'"),
    ({"service": [{"model": "m", "pool": "p", "batch_size": 1, "executions": -1, "total_ms": 1,
                   "window_sq_ms2": 1, "windows": 1}]}, "negative"),
], ids=["batch-size-0", "missing-field", "negative-sums"])
def test_a_bad_persisted_state_is_named(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CalibrationState.from_json(data, "record")


@pytest.mark.parametrize(("field", "value"), [
    ("prior_executions", -1), ("max_relative_error", 0.0), ("max_relative_error", 1.5), ("memory_executions", 1),
])
def test_bad_settings_are_named(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"calibration.{field}"):
        CalibrationSettings(**{field: value})


def test_prior_shaped_keeps_the_measured_points_and_scales_the_prior_between_and_beyond_them() -> None:
    prior = profile("m", GPU, {1: 1.0, 2: 1.0, 8: 1.0, 16: 1.2, 64: 1.3})
    table = prior_shaped(prior, {2: 2.0, 16: 3.0})  # ratios 2.0 at batch 2, 2.5 at batch 16
    assert table[2] == 2.0 and table[16] == 3.0  # measured: as measured
    assert table[1] == pytest.approx(2.0)  # below the first measured size: its ratio held
    assert table[8] == pytest.approx(1.0 * (2.0 + (2.5 - 2.0) * (8 - 2) / (16 - 2)))  # ratio interpolated
    assert table[64] == pytest.approx(1.3 * 2.5)  # beyond the last: its ratio held
    # one scale per curve: the prior's shape (batch 64 no faster than batch 2) survives calibration
    assert table[64] >= table[2]
    assert prior_shaped(prior, {}) == dict(prior.latency_ms_by_batch)
    assert prior_shaped(prior, {4: 3.0})[4] == 3.0  # a measured size the prior has no point at joins the table
    for bad in ({0: 1.0}, {2: 0.0}, {2: float("nan")}):
        with pytest.raises(ValueError, match="measured latency at batch"):
            prior_shaped(prior, bad)


def test_a_calibrated_profile_scales_the_sizes_it_has_no_confident_data_for() -> None:
    prior = off_prior(1.4)
    r = FakeReplica("m", TRUE, rng=random.Random(5))
    state = observe(None, reading({("gpu", "a"): r}), SETTINGS, 0.0)
    for t in range(40):
        r.run(1, 60)  # only batch 1 runs (a quiet hour): 2,400 executions
        state = observe(state, reading({("gpu", "a"): r}), SETTINGS, 1.0 + t)
    cal = calibration_of(state, prior, ("gpu",), SETTINGS)
    assert [b.batch_size for b in cal.batches if b.confident] == [1]
    learned = cal.profile()
    ratio = learned.latency_ms(1) / prior.latency_ms(1)
    assert ratio == pytest.approx(1 / 1.4, rel=0.05)  # the prior was 1.4x slow at batch 1 ...
    for b in (8, 32):  # ... and the curve is brought to that level, not left on the prior's
        assert learned.latency_ms(b) == pytest.approx(prior.latency_ms(b) * ratio, rel=1e-9)
