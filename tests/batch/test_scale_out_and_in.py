"""A big batch job on an autoscaled fleet: the capacity decider scales a pool out for it within the
fleet's budget ceiling, and back in once the job is done (issue 15: "The capacity decider may scale
out for a big job within the budget ceiling and must scale back in afterwards").

Real Triton replicas started and stopped by the local supervisor on the control server's word, real
Envoy, a real ``python -m batch worker`` taking the control plane's headroom (``--platform`` names the
control server).  The fleet is emulated in time dilated x10 with synthetic outputs (as in
tests/platform/test_autoscaling.py): one CPU pool, a slow profile made for the test (5 rows/s per
replica), min 1 / max 4 replicas, and a budget that pays for 3.  The job is digits_classifier at the
bronze tier; its outputs are synthetic, so this checks capacity and exactly-once delivery, not answers.

The worker sends its default batches (up to 32 rows per request) and takes only the spare capacity
the routing policy leaves, so the rate it sends never passes what the pool has: what scales the pool
out is the job's backlog report (``router_lib.backlog``: rows not yet answered over
``--drain-target-s``, here 10 s, so 16 rows/s), which the capacity decider plans for within the
budget.  Before that report existed the decider counted only what was sent, in requests, and a
32-row job that kept the pool full was seen as 1.97 req/s: the plan held 1 replica for 60 s.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from batch.store_sqlite import SqliteJobStore
from local_platform.platform import LocalPlatform, PlatformPorts
from tests.batch.test_end_to_end import batch_cli, start_worker, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PRICE = 0.145  # c7g.xlarge, data/prices.yaml
BUDGET = 0.45  # $/h: pays for 3 replicas (0.435), not the pool's max of 4 (0.58)
MIN, MAX = 1, 4
WINDOW_S = 6.0  # the capacity decider's scale-down window
DEMAND_WINDOW_S = 4.0  # routing's demand estimate holds the highest rate this long (default 30 s)
ROWS = 160
FLEET = f"""\
prices: {ROOT / "data" / "prices.yaml"}
tiers: {ROOT / "data" / "tiers.yaml"}
profiles: profiles
time_dilation: 10
max_local_replicas: 6
budget_per_hour_usd: {BUDGET}
autoscaling: {{scale_down_window_s: {WINDOW_S:g}, flap_guard_s: 3}}
routing: {{demand_window_s: {DEMAND_WINDOW_S:g}}}
pools:
  - {{name: cpu, accelerator: cpu, instance_type: c7g.xlarge, replicas: {MIN}, min_replicas: {MIN},
     max_replicas: {MAX}, mode: emulated, outputs: synthetic}}
"""
# Dilated x10: a full batch of 32 takes 6.4 s of wall time, 5 rows/s per replica (4 at the policy's
# max utilisation 0.8): slow enough that this machine can offer a few replicas' worth of one-row requests.
PROFILE = ("model: digits_classifier\ninstance_type: c7g.xlarge\naccelerator: cpu\ninstances_per_replica: 1\n"
           "max_batch_size: 32\nlatency_ms_by_batch: {1: 5.0, 32: 640.0}\np99_over_p50: 1.2\n"
           "provenance: {kind: reference, date: '2026-11-29', source: test profile, assumption: made for this test}\n")


def write_fleet(folder: Path) -> Path:
    (folder / "profiles").mkdir(parents=True)
    (folder / "profiles" / "digits_classifier.cpu.yaml").write_text(PROFILE)
    (folder / "fleet.yaml").write_text(FLEET)
    return folder / "fleet.yaml"


def write_rows(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"d{i}", "float_input": [float((i + j) % 17) for j in range(64)]}) + "\n"
                            for i in range(n)))
    return path


def test_a_big_job_scales_the_pool_out_within_the_budget_and_back_in_after(tmp_path):
    fleet_path = write_fleet(tmp_path)
    platform = LocalPlatform(fleet_path=fleet_path, workdir=tmp_path / "run", ports=PlatformPorts(http=0, grpc=0),
                             interval_s=0.5)
    platform.start()
    timeline: list[tuple[float, int, int, float | None, float | None, str]] = []
    demand: list[tuple[float, float | None]] = []  # the control plane's estimate of the bronze route's req/s
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.25):
            try:
                status = platform.status()
            except OSError:
                continue
            cpu = next(p for p in status["pools"] if p["name"] == "cpu")
            desired_cost = (status.get("capacity") or {}).get("desired_cost_per_hour_usd")
            fleet_cost = (status.get("cost") or {}).get("fleet_per_hour_usd")
            now = time.time()
            timeline.append((now, cpu["desired_replicas"], cpu["ready_replicas"], desired_cost, fleet_cost,
                             cpu["capacity_reason"] or ""))
            demand.append((now, next((r["demand_per_s"] for r in status["routes"]
                                      if r["model"] == "digits_classifier" and r["tier"] == "bronze"), None)))

    def story() -> str:
        t0 = timeline[0][0] if timeline else 0.0
        return "\n".join(f"{t - t0:6.1f} s desired {d} ready {r} ${c}/h (fleet ${f}/h) bronze {q} req/s: {why}"
                         for (t, d, r, c, f, why), (_, q) in zip(timeline, demand, strict=False))

    def waiting(predicate, timeout_s: float, what: str, proc=None) -> None:  # type: ignore[no-untyped-def]
        try:
            wait_until(predicate, timeout_s, what, proc, log)
        except AssertionError as e:  # the timeline as it was at the failure, not when the wait began
            raise AssertionError(f"{e}\n{story()}") from None

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    worker = None
    log = tmp_path / "worker.log"
    store_dir = tmp_path / "store"
    try:
        inputs = write_rows(tmp_path / "digits.jsonl", ROWS)
        job = batch_cli(store_dir, "submit", "--model", "digits_classifier", "--input", str(inputs)).stdout.strip()
        store = SqliteJobStore(store_dir)
        started = time.time()
        worker = start_worker(store_dir, platform, log, "--fleet", str(fleet_path), "--exit-when-idle", "--drain-target-s", "10",
                              "--lease-s", "30")  # a 12-row batch takes 2.3 s here, more when queued: 4 s leases expire

        # (1) while the job runs, the pool grows past its minimum (desired, then a ready replica)
        waiting(lambda: any(t >= started and r > MIN for t, _, r, *_ in timeline), 60,
                "the pool to scale out for the job", worker)
        scaled_at = time.time()
        assert store.job(job).rows_written < ROWS, "the pool scaled out while the job ran"

        # (2) the job completes, every row answered exactly once, in input order
        waiting(lambda: store.job(job).state.terminal, 90, "the job to finish", worker)
        worker.wait(timeout=30)
        assert worker.returncode == 0, log.read_text()[-3000:]
        done_at = time.time()

        # (3) after the job the pool returns to its minimum within the scale-down window (+ margin)
        waiting(lambda: any(t >= done_at and d == MIN and r == MIN for t, d, r, *_ in timeline),
                DEMAND_WINDOW_S + WINDOW_S + 15, f"the pool to scale back in to {MIN}")
        back_at = next(t for t, d, r, *_ in timeline if t >= done_at and d == MIN and r == MIN)
    finally:
        stop.set()
        watcher.join(5)
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
        platform.stop()

    run = [row for row in timeline if started <= row[0] <= back_at]
    assert max(d for _, d, *_ in run) <= 3, f"the budget pays for 3 replicas\n{story()}"
    assert all(c is None or c <= BUDGET + 1e-9 for *_, c, _, _ in run), f"desired $/h over the budget\n{story()}"
    assert all(r * PRICE <= BUDGET + 1e-9 for _, _, r, *_ in run), f"ready replicas' $/h over the budget\n{story()}"
    assert all(f is None or f <= BUDGET + 1e-9 for *_, f, _ in run), f"the ledger's fleet $/h over the budget\n{story()}"
    print(f"scaled out {scaled_at - started:.1f} s after the worker started, job done {done_at - started:.1f} s, "
          f"back to {MIN} {back_at - done_at:.1f} s after it\n{story()}")

    status = json.loads(batch_cli(store_dir, "status", job, "--json").stdout)
    assert status["state"] == "completed" and status["rows"]["written"] == ROWS and status["rows"]["failed"] == 0
    assert set(status["by_pool"]) == {"cpu"} and status["rows"]["synthetic"] == ROWS  # counted apart, never evidence
    out = tmp_path / "results.jsonl"
    batch_cli(store_dir, "results", job, "--out", str(out))
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in results] == [f"d{i}" for i in range(ROWS)], "0 lost, 0 duplicated, input order"
    assert all(set(r) >= {"label", "probabilities"} for r in results)
