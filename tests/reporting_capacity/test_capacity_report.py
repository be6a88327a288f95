"""Capacity report: metrics on hand-made runs (known answers), the summary's shape, issue #11's
verdicts, and the whole path from the trimmed real run to summary.json, report.md and PNGs."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from locustfiles.records import RequestRecord
from reporting.capacity import summarise, summarise_run, summarise_runs, write_summary
from reporting.capacity_metrics import (
    changes_per_pool,
    demand_rise_onsets,
    desired_changes,
    flaps_per_pool,
    integrate_ideal,
    ledger_usd_between,
    replica_cost_usd,
    step_responses,
    tier_latencies,
    window_p99_ms,
)
from reporting.capacity_run import CapacityRun, CapacityRunError, PoolSample, PoolSpec, TimelineSample, load_run

FIXTURES = Path(__file__).parent / "fixtures"
T0 = 1_000.0
PNG = b"\x89PNG\r\n\x1a\n"
BOUNDS = {"gold": 100.0, "silver": 300.0, "bronze": None}  # wall ms, already dilated
TARGETS = {"gold": 0.999, "silver": 0.999, "bronze": None}
INSTANCE = {"cpu": "c7g.xlarge", "gpu": "g5.xlarge", "inf2": "inf2.xlarge"}


def sample(t: float, pools: Mapping[str, tuple[int, int, int]], spent: float | None = None) -> TimelineSample:
    """``pools``: name -> (desired, ready, existing); ``t`` wall seconds after T0."""
    return TimelineSample(T0 + t, {n: PoolSample(d, r, max(0, e - r), e) for n, (d, r, e) in pools.items()}, spent)


def rec(t: float, tier: str = "gold", latency_ms: float = 10.0, ok: bool = True) -> RequestRecord:
    return RequestRecord(T0 + t, tier, "m", "http", "cpu", True, latency_ms, ok)


def desired_timeline(desired: Sequence[int], pool: str = "cpu", step_s: float = 1.0) -> list[TimelineSample]:
    return [sample(i * step_s, {pool: (d, d, d)}) for i, d in enumerate(desired)]


def make_run(fleet: str = "heterogeneous", *, pools: Sequence[str] = ("cpu", "gpu"), autoscaled: bool = True,
             cost_usd: float = 1.0, dilation: float = 10.0, wall_s: float = 20.0, gold_over: int = 0,
             failed: int = 0, timeline: Sequence[TimelineSample] | None = None,
             records: Sequence[RequestRecord] | None = None) -> CapacityRun:
    """A run whose ledger says ``cost_usd`` over the workload, with 1000 fast gold and silver
    requests, ``gold_over`` of the gold ones 10x over the bound and ``failed`` silver ones failed."""
    if timeline is None:
        timeline = [sample(0.0, {p: (1, 1, 1) for p in pools}, 0.0), sample(wall_s, {p: (1, 1, 1) for p in pools}, cost_usd)]
    if records is None:
        records = [rec(i * wall_s / 1000, "gold", 1000.0 if i < gold_over else 10.0) for i in range(1000)]
        records += [rec(i * wall_s / 1000, "silver", ok=i >= failed) for i in range(1000)]
    specs = {p: PoolSpec(p, p, INSTANCE[p], 1.0, 0, 10, "synthetic") for p in pools}
    return CapacityRun(fleet=fleet, folder=f"/runs/{fleet}", autoscaled=autoscaled, dilation=dilation,
                       started_unix_s=T0, duration_s=wall_s / dilation, workload="w", seed=1, max_late_ms=1.0,
                       pools=specs, tier_bounds_ms=BOUNDS, target_compliance=TARGETS, flap_guard_s=5.0,
                       emulation="every pool emulated, synthetic outputs, time dilated x10", notes=(),
                       records=tuple(sorted(records, key=lambda r: r.t_unix_s)), timeline=tuple(timeline))


# --- cost ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("window", "expected_usd"), [
    pytest.param((0.0, 20.0), (3.6 * 10 + 10.8 * 10) / 2 / 3600, id="two-steps-of-rate-over-the-window"),
    pytest.param((5.0, 15.0), (3.6 * 5 + 10.8 * 5) / 2 / 3600, id="clipped-to-the-window"),
    pytest.param((-10.0, 10.0), 3.6 * 10 / 2 / 3600, id="time-before-the-first-sample-is-not-counted"),
    pytest.param((10.0, 30.0), 10.8 * 20 / 2 / 3600, id="the-last-sample-holds-to-the-end"),
])
def test_replica_cost_integrates_price_times_existing_replicas_in_platform_hours(window, expected_usd):
    # 1 replica then 3 (one of them still starting: it is paid for) at $3.6/h; dilation 2
    timeline = [sample(0.0, {"cpu": (1, 1, 1)}), sample(10.0, {"cpu": (3, 2, 3)}), sample(20.0, {"cpu": (3, 3, 3)})]
    got = replica_cost_usd(timeline, {"cpu": 3.6}, T0 + window[0], T0 + window[1], 2.0)
    assert got == pytest.approx(expected_usd)


@pytest.mark.parametrize(("t0", "t1", "expected"), [
    pytest.param(0.0, 10.0, 1.0, id="between-samples"),
    pytest.param(5.0, 15.0, 0.5, id="interpolated-at-both-ends"),
    pytest.param(-5.0, 5.0, 0.5, id="held-before-the-first-sample"),
    pytest.param(25.0, 99.0, 0.5, id="held-after-the-last-sample"),
])
def test_ledger_cost_is_the_difference_over_the_window(t0, t1, expected):
    timeline = [sample(0.0, {}, 0.0), sample(10.0, {}, 1.0), sample(20.0, {}, 1.0), sample(30.0, {}, 2.0)]
    assert ledger_usd_between(timeline, T0 + t0, T0 + t1) == pytest.approx(expected)


def test_ledger_without_spent_figures_is_unknown():
    assert ledger_usd_between([sample(0.0, {"cpu": (1, 1, 1)})], T0, T0 + 1) is None


def test_ideal_cost_is_integrated_over_platform_time():
    usd, mids, values = integrate_ideal(lambda t: 3600.0 * t, duration_s=2.0, step_s=0.5)
    assert usd == pytest.approx(2.0)  # integral of t dt from 0 to 2
    assert mids == [0.25, 0.75, 1.25, 1.75] and len(values) == 4


def test_summary_reports_the_ledger_and_its_cross_check():
    timeline = [sample(-5.0, {"cpu": (1, 1, 1)}, 0.5), sample(0.0, {"cpu": (2, 2, 2)}, 1.0),
                sample(20.0, {"cpu": (2, 2, 2)}, 2.0)]
    row = summarise_run(make_run(pools=("cpu",), timeline=timeline))
    assert row["integrated_cost_usd"] == pytest.approx(1.0)  # not 2.0: the ledger ran before the workload
    assert row["ledger_spent_usd_at_end"] == pytest.approx(2.0)
    assert row["replica_integral_usd"] == pytest.approx(2 * 1.0 * 20 / 10 / 3600)  # 2 x $1/h x 2 platform s
    assert row["cost_source"] == "ledger"


# --- latency ------------------------------------------------------------------------------------

def test_within_bound_counts_failures_as_outside_and_best_effort_as_success_share():
    records = [rec(0, "gold", 50), rec(0, "gold", 100), rec(0, "gold", 101), rec(0, "gold", 10, ok=False),
               rec(0, "bronze", 5000), rec(0, "bronze", 1, ok=False)]
    got = {t.tier: t for t in tier_latencies(records, BOUNDS)}
    assert got["gold"].within_bound == pytest.approx(0.5)  # 50 and 100 (at the bound) of 4
    assert got["gold"].failed == 1 and got["gold"].p99_ms == 101
    assert got["bronze"].within_bound == pytest.approx(0.5)  # no bound: the share that succeeded
    assert got["silver"].requests == 0 and got["silver"].within_bound is None and got["silver"].p99_ms is None


def test_window_p99_is_per_wall_second_of_send_time_over_successes():
    records = [rec(0.1, latency_ms=5), rec(0.9, latency_ms=7), rec(1.5, latency_ms=500, ok=False), rec(2.2, latency_ms=9)]
    assert window_p99_ms(records, T0, 3) == {"gold": [7, None, 9]}


# --- replica changes and flaps ------------------------------------------------------------------

@pytest.mark.parametrize(("desired", "guard_s", "changes", "flaps"), [
    pytest.param([1, 1, 1], 5.0, 0, 0, id="steady"),
    pytest.param([1, 2, 4, 4, 8], 5.0, 3, 0, id="only-up"),
    pytest.param([1, 1, 2, 2, 1], 5.0, 2, 1, id="down-2s-after-up-within-guard"),
    pytest.param([1, 1, 2, 2, 1], 2.0, 2, 0, id="reversal-exactly-at-the-guard-is-allowed"),
    pytest.param([1, 2, 3, 2, 3], 10.0, 4, 2, id="two-reversals"),
    pytest.param([1, 2, 1, 2], 0.0, 3, 0, id="no-guard-no-flaps"),
])
def test_replica_changes_and_flaps_from_a_desired_sequence(desired, guard_s, changes, flaps):
    found = desired_changes(desired_timeline(desired))
    assert changes_per_pool(found) == ({"cpu": changes} if changes else {})
    assert sum(flaps_per_pool(found, guard_s).values()) == flaps


def test_a_pool_appearing_is_not_a_change_and_every_pool_is_listed():
    timeline = [sample(0, {"cpu": (1, 1, 1)}), sample(1, {"cpu": (1, 1, 1), "gpu": (2, 0, 0)}),
                sample(2, {"cpu": (1, 1, 1), "gpu": (3, 0, 0)})]
    found = desired_changes(timeline)
    assert [(c.pool, c.before, c.after) for c in found] == [("gpu", 2, 3)]
    assert changes_per_pool(found, ["cpu", "gpu"]) == {"cpu": 0, "gpu": 1}


# --- demand rises and step response -------------------------------------------------------------

@pytest.mark.parametrize(("counts", "sigmas", "onsets"), [
    pytest.param([10] * 5 + [20] * 3 + [10] * 2 + [30], 0.0, [5, 10], id="each-rise-once-at-its-first-second"),
    pytest.param([10] * 5 + [12], 0.0, [], id="exactly-20-percent-is-not-a-rise"),
    pytest.param([30] * 5 + [37], 0.0, [5], id="23-percent-is-a-rise-without-the-noise-guard"),
    pytest.param([30] * 5 + [37], 2.0, [], id="but-within-2-poisson-sigmas-of-30"),
    pytest.param([10] * 5 + [20], 2.0, [5], id="doubling-passes-the-noise-guard"),
    pytest.param([50, 0, 0, 0, 0], 0.0, [], id="the-first-5-seconds-have-no-baseline"),
])
def test_demand_rise_onsets(counts, sigmas, onsets):
    assert demand_rise_onsets(counts, noise_sigmas=sigmas) == onsets


def _step_timeline() -> list[TimelineSample]:
    # cpu asked for 2 at t=2; the second replica is ready at t=4
    desired = [1, 1, 2, 2, 2, 2, 2, 2]
    ready = [1, 1, 1, 1, 2, 2, 2, 2]
    return [sample(i, {"cpu": (d, r, d)}) for i, (d, r) in enumerate(zip(desired, ready, strict=True))]


@pytest.mark.parametrize(("gold_p99", "broke", "restore_wall_s"), [
    pytest.param([10, 200, 200, 200, 200, 150, 50, 50], True, 2.0, id="breach-then-back-2s-after-ready"),
    pytest.param([10, 200, 200, 50, 50, 50, 50, 50], True, 0.0, id="back-before-ready"),
    pytest.param([10, 200, 200, 200, 200, 200, 200, 200], True, None, id="never-back"),
    pytest.param([10, 20, 30, 40, 50, 60, 70, 80], False, None, id="never-broke"),
    pytest.param([10, 200, None, 200, None, None, 90, 90], True, 2.0, id="windows-without-requests-prove-nothing"),
])
def test_step_response_times_the_decision_and_the_restore(gold_p99, broke, restore_wall_s):
    timeline = _step_timeline()
    steps = step_responses(timeline, desired_changes(timeline), rise_windows=[1], p99={"gold": gold_p99},
                           bounds_ms=BOUNDS, t0_unix_s=T0)
    assert len(steps) == 1
    s = steps[0]
    assert (s.before, s.after) == (1, 2)
    assert s.decision_delay_wall_s == pytest.approx(1.0)  # rise in window 1 (t=1), decision seen at t=2
    assert s.ready_unix_s == pytest.approx(T0 + 4)
    assert s.sla_broke is broke
    assert s.restore_wall_s == (None if restore_wall_s is None else pytest.approx(restore_wall_s))


def test_a_scale_up_without_an_earlier_rise_has_no_delay_and_scale_downs_are_not_steps():
    timeline = desired_timeline([1, 2, 1])
    steps = step_responses(timeline, desired_changes(timeline), rise_windows=[5], p99={}, bounds_ms=BOUNDS, t0_unix_s=T0)
    assert [(s.before, s.after, s.decision_delay_wall_s) for s in steps] == [(1, 2, None)]


# --- the summary --------------------------------------------------------------------------------

REQUIRED = {"fleet": str, "autoscaled": bool, "integrated_cost_usd": float, "duration_s": float, "within_bound": dict,
            "failed_requests": int, "replica_changes": int, "outputs": dict, "dilation": float}


def _by_name(summary: Mapping, name: str) -> Mapping:
    return next(t for t in summary["targets"] if t["name"].startswith(name))


def test_summary_has_the_required_keys_and_types_and_is_json():
    summary = summarise([make_run(), make_run("cpu only", pools=("cpu",))], tick_s=1.0, ideal=lambda t: 1.0)
    assert {"runs", "targets", "notes", "units", "comparison", "ideal"} <= set(summary)
    for row in summary["runs"]:
        for key, kind in REQUIRED.items():
            assert isinstance(row[key], kind), key
        assert set(row["within_bound"]) == {"gold", "silver", "bronze"}
        assert row["outputs"] == {p: "synthetic" for p in row["outputs"]}
        assert row["cost_vs_ideal"] == pytest.approx(row["integrated_cost_usd"] / (2.0 / 3600))
    for t in summary["targets"]:
        assert set(t) >= {"name", "value", "target", "met"} and t["met"] in (True, False, None)
    assert all(isinstance(n, str) for n in summary["notes"])
    json.dumps(summary, allow_nan=False)


@pytest.mark.parametrize(("het_usd", "singles", "cost_met", "ceiling_met", "baseline"), [
    pytest.param(0.6, [("cpu only", 1.0, 0), ("gpu only", 0.8, 0)], True, True, "gpu only", id="0.75x-of-the-cheapest"),
    pytest.param(0.7, [("cpu only", 1.0, 0), ("gpu only", 0.8, 0)], False, True, "gpu only", id="cheaper-not-enough"),
    pytest.param(0.9, [("cpu only", 1.0, 0), ("gpu only", 0.8, 0)], False, False, "gpu only", id="dearer"),
    pytest.param(0.6, [("cpu only", 1.0, 0), ("gpu only", 0.5, 10)], True, True, "cpu only",
                 id="a-cheaper-fleet-that-missed-the-slas-is-no-baseline"),
    pytest.param(0.6, [("gpu only", 0.5, 10)], None, None, None, id="no-baseline-not-judged"),
])
def test_cost_targets(het_usd, singles, cost_met, ceiling_met, baseline):
    runs = [make_run(cost_usd=het_usd)]
    runs += [make_run(name, pools=(name.split()[0],), cost_usd=usd, gold_over=over) for name, usd, over in singles]
    summary = summarise(runs, tick_s=1.0)
    assert summary["comparison"]["cheapest_single_meeting_slas"] == baseline
    assert _by_name(summary, "heterogeneous autoscaled cost vs")["met"] is cost_met
    assert _by_name(summary, "heterogeneous autoscaled cost never above")["met"] is ceiling_met


@pytest.mark.parametrize(("static_usd", "met"), [(1.3, True), (1.2, False)])
def test_static_peak_provisioning_target(static_usd, met):
    runs = [make_run(cost_usd=1.0), make_run("heterogeneous, static for the peak", autoscaled=False, cost_usd=static_usd)]
    summary = summarise(runs, tick_s=1.0)
    target = _by_name(summary, "static peak provisioning")
    assert target["met"] is met and target["value"] == pytest.approx(static_usd)


def test_no_static_run_no_static_target():
    assert not any("static" in t["name"] for t in summarise([make_run()], tick_s=1.0)["targets"])


@pytest.mark.parametrize(("gold_over", "failed", "gold_met", "failed_met"), [
    pytest.param(0, 0, True, True, id="all-within"),
    pytest.param(1, 0, True, True, id="99.9-percent-is-enough"),
    pytest.param(2, 0, False, True, id="99.8-percent-is-not"),
    pytest.param(0, 1, True, False, id="one-failed-request"),
])
def test_sla_and_failure_targets(gold_over, failed, gold_met, failed_met):
    summary = summarise([make_run(gold_over=gold_over, failed=failed)], tick_s=1.0)
    assert _by_name(summary, "gold requests within bound")["met"] is gold_met
    assert _by_name(summary, "failed requests")["met"] is failed_met
    assert summary["runs"][0]["meets_slas"] is (gold_met and failed_met)


def _stepped_run(decision_at_s: int, slow_from_s: int | None = None) -> CapacityRun:
    """10 requests per wall second, 40 from t=10; cpu asks for 2 replicas at ``decision_at_s``, ready 2 s
    later; gold is 10x over its bound from ``slow_from_s`` until the replica is ready."""
    records = []
    for second in range(20):
        n = 10 if second < 10 else 40
        ready_at = decision_at_s + 2
        slow = slow_from_s is not None and slow_from_s <= second < ready_at
        records += [rec(second + i / n, latency_ms=1000.0 if slow else 10.0) for i in range(n)]
    timeline = [sample(t, {"cpu": (2 if t >= decision_at_s else 1, 2 if t >= decision_at_s + 2 else 1, 2),
                           "gpu": (0, 0, 0)}, spent=t / 20) for t in range(21)]
    return make_run(timeline=timeline, records=records)


@pytest.mark.parametrize(("decision_at_s", "met"), [(11, True), (12, True), (14, False)])
def test_scale_decision_within_one_tick_of_a_load_step(decision_at_s, met):
    summary = summarise([_stepped_run(decision_at_s)], tick_s=1.0)
    target = _by_name(summary, "scale decision within one control tick")
    assert target["met"] is met
    assert target["value"] == pytest.approx((decision_at_s - 10) / 10.0)  # platform s at dilation 10
    restore = _by_name(summary, "SLA restored")
    assert restore["met"] is None and restore["value"] == "n/a"  # nothing broke: not judged
    assert summary["runs"][0]["step_responses"][0]["restore_platform_s"] == "n/a"


def test_sla_restore_target_in_platform_seconds():
    summary = summarise([_stepped_run(11, slow_from_s=10)], tick_s=1.0)
    step = summary["runs"][0]["step_responses"][0]
    assert step["sla_broke"] is True and step["ready_t_platform_s"] == pytest.approx(1.3)
    assert step["restore_platform_s"] == pytest.approx(0.0)  # the window from ready (t=13) on is fast again
    assert _by_name(summary, "SLA restored")["met"] is True


def test_without_a_heterogeneous_autoscaled_run_nothing_is_judged():
    summary = summarise([make_run("cpu only", pools=("cpu",))], tick_s=1.0)
    assert [t["met"] for t in summary["targets"]] == [None]


# --- reading run folders ------------------------------------------------------------------------

def _copy_run(src: Path, dst: Path, **changes: object) -> Path:
    dst.mkdir(parents=True)
    meta = json.loads((src / "run.json").read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    (dst / "run.json").write_text(json.dumps(meta))
    (dst / "records.jsonl").write_text((src / "records.jsonl").read_text())
    lines = (src / "timeline.jsonl").read_text()
    (dst / "timeline.jsonl").write_text(json.dumps({"t_unix_s": 1.0, "error": "refused"}) + "\n" + lines + '{"t_un')
    return dst


@pytest.mark.parametrize(("changes", "message"), [
    pytest.param({"dilation": None}, "missing field 'dilation'", id="missing"),
    pytest.param({"dilation": True}, "field 'dilation' must be int or float", id="flag-for-a-number"),
    pytest.param({"dilation": 0}, "dilation must be > 0", id="zero-dilation"),
    pytest.param({"pools": {"cpu": {"accelerator": "cpu", "instance_type": "x", "price_per_hour_usd": 1,
                                    "bounds": [1], "outputs": "synthetic"}}}, "pools.cpu: bounds", id="bad-bounds"),
    pytest.param({"tier_bounds_ms": {"gold": "50"}}, "tier_bounds_ms.gold", id="bound-as-text"),
])
def test_a_bad_run_file_names_the_field(tmp_path, changes, message):
    folder = _copy_run(FIXTURES / "heterogeneous", tmp_path / "bad", **changes)
    with pytest.raises(CapacityRunError, match=message.replace(".", r"\.").replace("[", r"\[")):
        load_run(folder)


def test_timeline_lines_without_status_are_gaps_not_samples(tmp_path):
    run = load_run(_copy_run(FIXTURES / "heterogeneous", tmp_path / "gappy"))
    assert run.timeline_gaps == 2  # the sampler's error line and a line cut short
    assert len(run.timeline) == len(load_run(FIXTURES / "heterogeneous").timeline)


# --- the trimmed real run, end to end -----------------------------------------------------------

def test_real_runs_write_summary_report_and_plots(tmp_path):
    folders = sorted(p for p in FIXTURES.iterdir() if p.is_dir())
    summary = summarise_runs(folders, tick_s=1.0, ideal=lambda t: 0.5, machine="the fixture's machine")
    paths = write_summary(summary, tmp_path)

    saved = json.loads((tmp_path / "summary.json").read_text())
    assert [r["fleet"] for r in saved["runs"]] == ["cpu only", "gpu only", "heterogeneous", "inf2 only (+ host CPU)"]
    for row in saved["runs"]:
        assert row["dilation"] == 40.0 and row["duration_s"] == 2.5
        assert set(row["outputs"].values()) == {"synthetic"}
        # the ledger and price x replicas agree to a few percent (sampled once a wall second)
        assert row["ledger_vs_replica_integral"] == pytest.approx(1.0, abs=0.05)
        assert 0 <= row["within_bound"]["gold"] <= 1 and not math.isnan(row["integrated_cost_usd"])
    assert saved["comparison"]["heterogeneous"] == "heterogeneous"
    assert saved["ideal"]["cost_usd"] == pytest.approx(0.5 * 2.5 / 3600, rel=1e-4)

    page = (tmp_path / "report.md").read_text()
    for text in ("| fleet |", "Issue #11 targets", "synthetic outputs", "dilated x40", "platform s", "What they do not show"):
        assert text in page
    assert any(v in page for v in ("| met |", "| **missed** |"))

    pngs = [paths[name] for name in ("cost", "replicas", "p99")]
    for png in pngs:
        assert png.read_bytes()[:8] == PNG and png.name in page
