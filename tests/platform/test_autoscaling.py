"""Capacity follows demand, end to end: real Triton replicas started and stopped by the local
supervisor on the control server's word, real Envoy, an open-loop load with a step up and down.

The fleet is emulated in time dilated x10 (service times and tier bounds x10, arrival rates as
sent): emulated replicas sleep for their service time, so several of them fit on this machine
and each one really adds capacity.  The profiles are made for the test (a slow CPU model that
needs several replicas at a few dozen requests per second, and a GPU that is cheaper only at high
load), so that one run shows a scale-up, a scale-down after the window, and a pool that empties
and comes back.  Outputs are synthetic; this test checks capacity, not answers.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from local_platform.platform import LocalPlatform, PlatformPorts
from locustfiles.open_loop import Phase, RouteMix, run_open_loop

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROFILES = {
    "cpu": ("c7g.xlarge", 1, 8, "{1: 10.0, 8: 30.0}"),
    "gpu": ("g5.xlarge", 1, 32, "{1: 2.5, 32: 10.0}"),
}
FLEET = f"""\
prices: {ROOT / "data" / "prices.yaml"}
tiers: {ROOT / "data" / "tiers.yaml"}
profiles: profiles
time_dilation: 10
autoscaling: {{scale_down_window_s: 8, flap_guard_s: 4}}
pools:
  - {{name: cpu, accelerator: cpu, instance_type: c7g.xlarge, replicas: 1, min_replicas: 1, max_replicas: 4,
     mode: emulated, outputs: synthetic}}
  - {{name: gpu, accelerator: gpu, instance_type: g5.xlarge, replicas: 1, min_replicas: 0, max_replicas: 2,
     mode: emulated, outputs: synthetic}}
"""
MIX = [RouteMix("digits_classifier", "gold", 0.2), RouteMix("digits_classifier", "silver", 0.6),
       RouteMix("digits_classifier", "bronze", 0.2)]
LOW, HIGH = Phase(14, 10), Phase(24, 150)
BOUND_MS = {"gold": 500.0, "silver": 1500.0}  # x10 dilation


def write_fleet(folder: Path) -> Path:
    (folder / "profiles").mkdir(parents=True)
    for acc, (itype, instances, max_batch, latency) in PROFILES.items():
        (folder / "profiles" / f"digits_classifier.{acc}.yaml").write_text(
            f"model: digits_classifier\naccelerator: {acc}\ninstance_type: {itype}\n"
            f"instances_per_replica: {instances}\nmax_batch_size: {max_batch}\nlatency_ms_by_batch: {latency}\n"
            "p99_over_p50: 1.2\nprovenance: {kind: reference, date: '2026-11-29', source: test profile, "
            "assumption: made for this test}\n")
    (folder / "fleet.yaml").write_text(FLEET)
    return folder / "fleet.yaml"


def test_capacity_follows_a_load_step_up_and_down_with_no_failed_request(tmp_path):
    platform = LocalPlatform(fleet_path=write_fleet(tmp_path), workdir=tmp_path / "run",
                             ports=PlatformPorts(http=0, grpc=0), interval_s=0.5)
    platform.start()
    timeline: list[tuple[float, dict[str, tuple[int, int]], str]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.5):
            status = platform.status()
            pools = {p["name"]: (p["desired_replicas"], p["ready_replicas"]) for p in status["pools"]}
            timeline.append((time.time(), pools, " | ".join(f"{p['name']}: {p['capacity_reason']}"
                                                            for p in status["pools"])))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = run_open_loop(f"127.0.0.1:{platform.ports.http}", [LOW, HIGH, Phase(35, 10)], MIX, workers=48)
    finally:
        stop.set()
        watcher.join(5)
        platform.stop()
    start = result.started_unix_s
    step_up, step_down = start + LOW.duration_s, start + LOW.duration_s + HIGH.duration_s
    story = "\n".join(f"{t - start:6.1f} s {pools} {why}" for t, pools, why in timeline)

    assert not result.failed, f"{len(result.failed)} failed, e.g. {result.failed[:3]}\n{story}"
    # Low load: the dear GPU pool empties (the planner serves its traffic on the CPU pool).
    assert any(pools["gpu"] == (0, 0) for t, pools, _ in timeline if t < step_up), story
    # The step: the CPU pool grows and the GPU pool comes back, within a few seconds.
    high = [(t, pools) for t, pools, _ in timeline if step_up <= t < step_down]
    assert max(pools["cpu"][1] for _, pools in high) > 1, story
    assert any(pools["gpu"][1] >= 1 for _, pools in high), story
    first_gpu_ask = min(t for t, pools in high if pools["gpu"][0] >= 1)
    assert first_gpu_ask - step_up < 5.0, story
    # Once capacity arrived, every tier is within its (dilated) bound again.
    settled = [r for r in result.records if step_down - 8 <= r.t_unix_s < step_down]
    for tier, bound in BOUND_MS.items():
        latencies = sorted(r.latency_ms for r in settled if r.tier == tier)
        p99 = latencies[max(0, int(0.99 * len(latencies)) - 1)]
        assert p99 <= bound, f"{tier}: p99 {p99:.0f} ms > {bound:.0f} ms once scaled up\n{story}"
    # The load drops: capacity follows, but only once the drop has lasted the scale-down window.
    def desired(pools: dict[str, tuple[int, int]]) -> int:
        return sum(d for d, _ in pools.values())

    at_drop = desired(high[-1][1])
    shrunk = [(t, pools) for t, pools, _ in timeline if t >= step_down and desired(pools) < at_drop]
    assert shrunk, f"capacity never shrank after the load dropped\n{story}"
    # The window runs from when the pool's target fell below what it holds (the decider says "8 s
    # window holds" while it waits): the drop, or later; or earlier, if a shortfall raised the pool
    # just before the drop while its plan was already lower (one run: 1 -> 2 at 37.0 s, drop at
    # 38 s, back to 1 at 45.0 s).  The window began after the last sample that shows no wait; a
    # shrink less than the window after it fails (to the timeline's 0.5 s resolution).
    shrink_t, shrink_pools = shrunk[0]
    before = [pools for t, pools, _ in timeline if t < shrink_t]
    pool = next(name for name, (d, _) in shrink_pools.items() if d < before[-1][name][0])

    def waits(why: str) -> bool:
        return "window holds" in why.split(f"{pool}: ", 1)[-1].split(" | ", 1)[0]

    last_not_waiting = max(t for t, _, why in timeline if t < shrink_t and not waits(why))
    assert shrink_t - last_not_waiting >= 8.0 - 0.5, (
        f"{pool} shrank {shrink_t - last_not_waiting:.1f} s after its target fell "
        f"({shrink_t - step_down:.1f} s after the drop)\n{story}")
