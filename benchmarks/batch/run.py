"""Batch jobs on the local platform (issue 15): gold p99 with and without a job, job throughput
against spare capacity, and a large embedding job with a worker and the control server SIGKILLed
mid-job (0 lost, 0 duplicated, equal to ONNX Runtime on a random sample).

    python -m benchmarks.batch.run [--rows 100000] [--repeats 3] [--window-s 25] [--gold-rps 8]

Phases, all on one ``LocalPlatform`` (``fleet.yaml``: the CPU pool is real; the GPU and Inferentia
pools are emulated and run the real model on this CPU, so their outputs are real and their timing
lags their profiles on a 2-core machine):

1. per repeat, side by side: (a) gold alone: open-loop Poisson gold embedding requests at
   ``--gold-rps`` for ``--window-s``; (b) the same gold arrivals while a batch worker (with the
   control plane's headroom) works a job; (c) a saturating bronze-only run: the worker alone, no
   gold, AIMD only.  Spare capacity = (c) minus the gold demand measured during (b).
2. the big job: ``--rows`` rows, one worker SIGKILLed at 25%, a second started, the control server
   SIGKILLed at 50% and restarted 5 s later; results checked row by row, 1,000 sampled rows against
   a direct ONNX Runtime run.

Results: ``benchmarks/results/batch/`` (README.md, summary.json, plots).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from batch.reference import check_embeddings
from batch.store_sqlite import SqliteJobStore
from benchmarks.common import ROOT, environment, stop_process
from local_platform.platform import LocalPlatform, PlatformPorts
from localnet.signals import interrupt_on_stop_signals
from locustfiles.open_loop import Phase, RouteMix, run_open_loop
from model_repository.definitions import load_models

OUT = ROOT / "benchmarks" / "results" / "batch"
WORK = ROOT / "build" / "benchmarks" / "batch"


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def corpus(path: Path, rows: int, seed: int = 7) -> Path:
    """Sentences of varied length (one to three of the test sentences, plus a number)."""
    sentences = (ROOT / "tests" / "data" / "sentences.txt").read_text().splitlines()
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(rows):
            text = " ".join(rng.choice(sentences) for _ in range(rng.choice((1, 1, 2, 3))))
            f.write(json.dumps({"id": f"doc-{i}", "TEXT": f"{text} #{i}"}) + "\n")
    return path


def batch_cli(store: Path, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "batch", "--store", str(store), *args], cwd=ROOT, text=True,
                          capture_output=True, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout.strip()


def start_worker(store: Path, platform: LocalPlatform, log: Path, *, control: bool, extra: tuple[str, ...] = ()
                 ) -> subprocess.Popen[bytes]:
    d = platform.describe()
    args = ["--endpoint", d["http_endpoint"], *(("--control", d["control_admin"]) if control else ())]
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "batch", "--store", str(store), "worker", *args,
                                 "--senders", "4", "--lease-s", "15", *extra], cwd=ROOT, stdout=f,
                                stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def written(store: SqliteJobStore, job: str) -> int:
    return store.job(job).rows_written


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def gold_window(platform: LocalPlatform, rps: float, window_s: float, seed: int) -> dict[str, Any]:
    result = run_open_loop(platform.describe()["http_endpoint"], [Phase(window_s, rps)],
                           [RouteMix("text_embedding", "gold", 1.0)], seed=seed, workers=16)
    ok = [r.latency_ms for r in result.records if r.ok]
    return {"load_average_1m": round(os.getloadavg()[0], 2), "requests": len(result.records), "failed": len(result.failed), "p99_ms": round(p99(ok), 2),
            "p50_ms": round(statistics.median(ok), 2) if ok else None,
            "rate_per_s": round(len(result.records) / window_s, 3),
            "pools": sorted({r.pool for r in result.records if r.pool})}


def rows_per_s_during(store: SqliteJobStore, job: str, seconds: float) -> float:
    start, t0 = written(store, job), time.monotonic()
    time.sleep(seconds)
    return (written(store, job) - start) / (time.monotonic() - t0)


def side_by_side(platform: LocalPlatform, store_dir: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    store = SqliteJobStore(store_dir)
    feed = corpus(WORK / "feed.jsonl", 40_000, seed=11)  # more than the windows consume at ~100-200 rows/s
    job = batch_cli(store_dir, "submit", "--model", "text_embedding", "--input", str(feed))
    repeats = []
    log = WORK / "worker-side-by-side.log"
    for r in range(args.repeats):
        say(f"repeat {r + 1}/{args.repeats}: gold alone, {args.gold_rps:g} req/s for {args.window_s:g} s")
        alone = gold_window(platform, args.gold_rps, args.window_s, seed=100 + r)
        say(f"  gold p99 {alone['p99_ms']} ms; now gold + batch job (worker with the control plane's headroom)")
        worker = start_worker(store_dir, platform, log, control=True)
        try:
            time.sleep(5)  # the worker's first claims and its first headroom reading
            base = written(store, job)
            t0 = time.monotonic()
            with_job = gold_window(platform, args.gold_rps, args.window_s, seed=100 + r)
            with_job["job_rows_per_s"] = round((written(store, job) - base) / (time.monotonic() - t0), 2)
        finally:
            stop_process(worker, 30)
        say(f"  gold p99 {with_job['p99_ms']} ms with the job ({with_job['job_rows_per_s']} rows/s);"
            " now bronze only, saturating (AIMD, no headroom cap)")
        worker = start_worker(store_dir, platform, log, control=False, extra=("--senders", "8"))
        try:
            time.sleep(5)
            saturating = rows_per_s_during(store, job, args.window_s)
        finally:
            stop_process(worker, 30)
        spare = max(0.0, saturating - with_job["rate_per_s"])
        repeats.append({"gold_alone": alone, "gold_with_job": with_job, "bronze_only_rows_per_s": round(saturating, 2),
                        "bronze_only_load_average_1m": round(os.getloadavg()[0], 2),
                        "spare_rows_per_s": round(spare, 2),
                        "job_over_spare": round(with_job["job_rows_per_s"] / spare, 3) if spare else None})
        say(f"  saturating bronze-only {saturating:.1f} rows/s; spare {spare:.1f}; job/spare "
            f"{repeats[-1]['job_over_spare']}")
    batch_cli(store_dir, "cancel", job)
    return repeats


def big_job(platform: LocalPlatform, store_dir: Path, rows: int, artifacts: Path, budget_s: float) -> dict[str, Any]:
    store = SqliteJobStore(store_dir)
    inputs = corpus(WORK / f"corpus-{rows}.jsonl", rows)
    job = batch_cli(store_dir, "submit", "--model", "text_embedding", "--input", str(inputs))
    log = WORK / "worker-big-job.log"
    t0 = time.monotonic()
    timeline: list[tuple[float, int]] = []
    events: list[dict[str, Any]] = []

    def tick() -> int:
        n = written(store, job)
        timeline.append((round(time.monotonic() - t0, 1), n))
        return n

    def until(target: int, what: str) -> None:
        last = 0.0
        while tick() < target:
            if time.monotonic() - t0 > budget_s:
                raise TimeoutError(f"the {budget_s:g} s budget ran out {what}")
            if time.monotonic() - last > 30:
                view = store.job(job)
                p = view.progress(time.time())
                say(f"  {what}: {view.rows_written}/{rows} ({p.rows_per_s:.1f} rows/s, ETA {p.eta_s or 0:.0f} s)")
                last = time.monotonic()
            time.sleep(1.0)

    say(f"big job {job}: {rows} rows")
    first = start_worker(store_dir, platform, log, control=True)
    until(rows // 4, "to 25%")
    deadline = time.monotonic() + 20
    while store.job(job).rows_sent == 0 and time.monotonic() < deadline:  # kill it with rows leased
        time.sleep(0.05)
    view = store.job(job)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    events.append({"t_s": round(time.monotonic() - t0, 1), "event": "worker SIGKILLed", "rows_written": view.rows_written,
                   "rows_leased": view.rows_sent})
    say(f"  worker SIGKILLed at {view.rows_written} rows ({view.rows_sent} leased)")
    second = start_worker(store_dir, platform, log, control=True, extra=("--exit-when-idle",))
    try:
        until(rows // 2, "to 50%")
        platform.kill_control_server()
        events.append({"t_s": round(time.monotonic() - t0, 1), "event": "control server SIGKILLed",
                       "rows_written": written(store, job)})
        say("  control server SIGKILLed; restarting it in 5 s")
        time.sleep(5)
        platform.start_control_server()
        events.append({"t_s": round(time.monotonic() - t0, 1), "event": "control server restarted",
                       "rows_written": written(store, job)})
        until(rows, "to 100%")
        second.wait(timeout=120)
        finished = True
    except TimeoutError as e:  # report what was done, and say so
        say(f"  {e}: cancelling, checking the rows written so far")
        events.append({"t_s": round(time.monotonic() - t0, 1), "event": f"budget ran out: {e}",
                       "rows_written": written(store, job)})
        finished = False
    finally:
        stop_process(second, 30)
    elapsed = time.monotonic() - t0
    if not finished:
        batch_cli(store_dir, "cancel", job)
    done = written(store, job)
    out = WORK / "big-job-results.jsonl"
    batch_cli(store_dir, "results", job, "--out", str(out), *(() if finished else ("--partial",)))
    with open(out) as f:  # streamed: a 100k-row result file is ~400 MB of JSON
        ids = [json.loads(line)["id"] for line in f]
    expected = [f"doc-{i}" for i in range(done)]
    status = json.loads(batch_cli(store_dir, "status", job, "--json"))
    say("  checking 1,000 random real-output rows against ONNX Runtime")
    check = check_embeddings(model=load_models()["text_embedding"], artifacts=artifacts,
                             inputs=store.job_dir(job) / "input.jsonl", results=out, row_pools=store.row_pools(job),
                             fleet=platform.fleet, sample=1000)
    return {"rows": rows, "finished": finished, "rows_written": done, "elapsed_s": round(elapsed, 1),
            "rows_per_s": round(done / elapsed, 2),
            "lost": len(set(expected) - set(ids)), "duplicated": len(ids) - len(set(ids)),
            "in_input_order": ids == expected, "failed": status["rows"]["failed"], "retries": status["retries"],
            "cost_usd": status["cost_usd"], "by_pool": status["by_pool"], "reference": check.to_json(),
            "events": events, "timeline": timeline[:: max(1, len(timeline) // 200)]}


def plots(summary: dict[str, Any]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reps = summary["side_by_side"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = range(1, len(reps) + 1)
    ax.bar([x - 0.2 for x in xs], [r["gold_alone"]["p99_ms"] for r in reps], 0.4, label="gold alone")
    ax.bar([x + 0.2 for x in xs], [r["gold_with_job"]["p99_ms"] for r in reps], 0.4, label="gold + batch job")
    ax.axhline(50, color="red", linestyle="--", label="gold bound 50 ms")
    ax.set_xlabel("repeat")
    ax.set_ylabel("gold p99 (ms)")
    ax.set_title("Gold p99 with and without the batch job")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "gold_p99.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([x - 0.2 for x in xs], [r["spare_rows_per_s"] for r in reps], 0.4, label="spare capacity")
    ax.bar([x + 0.2 for x in xs], [r["gold_with_job"]["job_rows_per_s"] for r in reps], 0.4, label="job throughput")
    ax.set_xlabel("repeat")
    ax.set_ylabel("rows/s")
    ax.set_title("Job throughput vs spare capacity")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "throughput_vs_spare.png", dpi=110)
    plt.close(fig)

    big = summary.get("big_job")
    if big:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        t, n = zip(*big["timeline"], strict=True)
        ax.plot(t, n)
        for e in big["events"]:
            ax.axvline(e["t_s"], color="grey", linestyle=":")
            ax.text(e["t_s"], max(n) * 0.05, e["event"], rotation=90, fontsize=7)
        ax.set_xlabel("s since submit")
        ax.set_ylabel("rows written")
        ax.set_title(f"{big['rows']}-row job: worker and control server SIGKILLed"
                     + ("" if big["finished"] else " (budget ran out)"))
        fig.tight_layout()
        fig.savefig(OUT / "big_job_progress.png", dpi=110)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--window-s", type=float, default=25.0)
    p.add_argument("--gold-rps", type=float, default=8.0)
    p.add_argument("--skip-big-job", action="store_true")
    p.add_argument("--big-job-budget-s", type=float, default=2700.0,
                   help="stop the big job after this long and report what was done (default: %(default)s)")
    args = p.parse_args(argv)

    WORK.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    artifacts = ROOT / "build" / "models"
    store_dir = WORK / f"store-{int(time.time())}"
    platform = LocalPlatform(workdir=WORK / "platform", artifacts=artifacts, ports=PlatformPorts(http=0, grpc=0),
                             interval_s=1.0)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    summary: dict[str, Any] = {"environment": environment(), "settings": vars(args), "commit": commit}
    previous = OUT / "summary.json"
    if args.skip_big_job and previous.exists():  # keep the last big job's figures, marked as such
        old = json.loads(previous.read_text())
        if "big_job" in old:
            summary["big_job"] = old["big_job"]
            summary["big_job_run"] = old.get("big_job_run") or {"environment": old["environment"],
                                                                 "commit": old.get("commit")}
    say("starting the local platform (fleet.yaml)")
    platform.start()
    try:
        summary["side_by_side"] = side_by_side(platform, store_dir, args)
        (OUT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if not args.skip_big_job:
            summary["big_job"] = big_job(platform, store_dir, args.rows, artifacts, args.big_job_budget_s)
    finally:
        platform.stop()
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plots(summary)
    from benchmarks.batch.report import render
    (OUT / "README.md").write_text(render(summary))
    say(f"results in {OUT}")
    return 0


if __name__ == "__main__":
    interrupt_on_stop_signals()  # Triton/Envoy started here are stopped on SIGTERM or SIGHUP too (localnet.signals)
    raise SystemExit(main())
