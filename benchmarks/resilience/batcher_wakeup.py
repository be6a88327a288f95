"""Triton's lost batcher wake-up with priority levels, and the waker that bounds it (docs/overload.md).

One Triton replica of fleet.demo.yaml's inf2 pool (emulated Inferentia, synthetic outputs timed to
the inf2 profile, 2 instances; the tokenizer is the real Python-backend tokenizer) serving
``text_embedding``.  Seven users send in waves, as the platform benchmark's load generator did
until its users started spread (``LOAD_START_PHASE=together``: every user starts at the same instant
and keeps the same pace): each wave, every user sends one
request at its tier's ``priority`` (3 gold, 3 silver, 1 bronze), 1.5 ms apart, and waits 50 ms after
its answer.  Two busy-looping processes share the machine's two cores with Triton and the client,
as Envoy, locust and the other pools do in the platform benchmark: the defect needs CPU contention.
Three variants, interleaved in every repeat:

- ``fifo``: no priority levels (one FIFO queue per step): the baseline;
- ``levels``: the shared pool's levels and queue policies, no waker;
- ``levels + waker``: the same, with the wake-up level and ``fleet.batcher_wake`` every 20 ms (shipped),
  as its own process (the k8s sidecar's form).

Per variant: requests, errors (sheds: silver's queue timeout), p50, p99, max, requests over 50 ms
(gold's bound) and over 150 ms, medians over repeats and the worst repeat.
Run: ``python -m benchmarks.resilience.batcher_wakeup``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from benchmarks.common import cpu_s
from benchmarks.resilience import interleaved
from fleet.batcher_wake import DEFAULT_PERIOD_MS
from fleet.triton_process import TritonProcess, prepare_backend_dir
from localnet.signals import interrupt_on_stop_signals
from model_repository.definitions import load_models
from model_repository.triton_config import target_for_pool, tier_sharing, write_repository
from router_lib.config import load_fleet
from router_lib.priority import tier_priorities

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "benchmarks" / "results" / "resilience"
VARIANTS = ("fifo", "levels", "levels + waker")
WAVE_TIERS = ("gold", "silver", "gold", "silver", "bronze", "gold", "silver")
THINK_S = 0.05
HOGS = 2
THRESHOLDS_MS = (50.0, 150.0)
IDLE_S = 5.0  # the idle window before the load, where the waker's own CPU is measured


def run_once(variant: str, seconds: float, workdir: Path) -> dict[str, float]:
    fleet = load_fleet(ROOT / "fleet.demo.yaml")
    pool = fleet.pool("inf2")
    profile = fleet.profile("text_embedding", pool.accelerator)
    assert profile is not None
    sharing = None if variant == "fifo" else tier_sharing(fleet.tiers, profile, dilation=fleet.time_dilation)
    if sharing is not None and variant == "levels":
        sharing = dataclasses.replace(sharing, wake_level=False)
    target = target_for_pool(pool, profile, sharing)
    repo = write_repository(workdir / "repo", [(load_models()["text_embedding"], target)], ROOT / "build" / "models")
    # The waker runs as its own process, as the k8s sidecar does (and as the local platform's runs
    # in the supervisor's process, not the load generator's): its threads do not share this
    # client's interpreter lock.
    triton = TritonProcess("wakeup-probe", repo, prepare_backend_dir(workdir / "backends"), workdir / "triton.log",
                           wake_period_s=None)
    triton.start()
    waker: subprocess.Popen[str] | None = None
    levels = tier_priorities(fleet.tiers).by_tier()
    hogs: list[subprocess.Popen[bytes]] = []
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    try:
        triton.wait_ready()
        if variant == "levels + waker":
            waker = subprocess.Popen([sys.executable, "-m", "fleet.batcher_wake", "--url", f"http://{triton.http_url}",
                                      "--period-ms", f"{DEFAULT_PERIOD_MS:g}"], cwd=ROOT, stderr=subprocess.PIPE,
                                     text=True)
            assert waker.stderr is not None
            first = waker.stderr.readline()  # "waking [...] every 20 ms", once it has read the configs
            if "waking ['text_embedding_onnx']" not in first:
                raise RuntimeError(f"the waker did not start waking the accelerated step: {first!r}")
        url = f"http://{triton.http_url}/v2/models/text_embedding/infer"
        for _ in range(5):  # warm the stubs and the tokenizer
            requests.post(url, json=_body(None), timeout=10).raise_for_status()
        # The waker's own cost, before any load: CPU of tritonserver (its HTTP front end and
        # scheduler see every wake-up) and of the waker, over an idle window.
        pids = {"triton": [triton.pid] if triton.pid else [], "waker": [waker.pid] if waker else []}
        before = {k: cpu_s(p) for k, p in pids.items()}
        time.sleep(IDLE_S)
        idle_cpu = {k: (cpu_s(p) - before[k]) / IDLE_S for k, p in pids.items()}
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(HOGS)]
        barrier = threading.Barrier(len(WAVE_TIERS))
        stop = time.monotonic() + seconds

        def user(i: int, tier: str) -> None:
            nonlocal errors
            session = requests.Session()
            body = _body(levels[tier] if sharing is not None else None)
            while True:
                barrier.wait()
                if time.monotonic() > stop:
                    return
                time.sleep(0.0015 * i)
                t0 = time.perf_counter()
                r = session.post(url, json=body, timeout=30)
                ms = (time.perf_counter() - t0) * 1000
                with lock:
                    latencies.append(ms)
                    errors += r.status_code != 200
                time.sleep(THINK_S)

        threads = [threading.Thread(target=user, args=(i, tier)) for i, tier in enumerate(WAVE_TIERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for h in hogs:
            h.kill()
            h.wait()
        wakes = skipped = 0
        if waker is not None:
            waker.terminate()
            _, err = waker.communicate(timeout=10)
            counts = re.search(r"sent (\d+), .*skipped (\d+)", err)
            if counts is None:
                raise RuntimeError(f"the waker said no counts: {err[-500:]!r}")
            wakes, skipped = int(counts.group(1)), int(counts.group(2))
        triton.stop()
    d = sorted(latencies)
    out = {"requests": len(d), "errors": errors, "p50_ms": d[len(d) // 2],
           "p99_ms": d[min(len(d) - 1, int(len(d) * 0.99))], "max_ms": d[-1], "wake_requests": wakes,
           "wake_ticks_skipped": skipped, "idle_triton_cpu_share": idle_cpu["triton"],
           "idle_waker_cpu_share": idle_cpu["waker"]}
    for ms in THRESHOLDS_MS:
        out[f"over_{ms:g}ms"] = sum(1 for x in d if x > ms)
    return out


def _body(level: int | None) -> dict:
    body: dict = {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["route me please"]}]}
    if level is not None:
        body["parameters"] = {"priority": level}
    return body


def summarize(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    out = {}
    for variant, rows in runs.items():
        s: dict[str, float] = {
            "requests": sum(r["requests"] for r in rows), "errors": sum(r["errors"] for r in rows),
            "p50_ms_median": statistics.median(r["p50_ms"] for r in rows),
            "p50_ms_min": min(r["p50_ms"] for r in rows), "p50_ms_max": max(r["p50_ms"] for r in rows),
            "p99_ms_median": statistics.median(r["p99_ms"] for r in rows),
            "p99_ms_min": min(r["p99_ms"] for r in rows), "p99_ms_max": max(r["p99_ms"] for r in rows),
            "max_ms_median": statistics.median(r["max_ms"] for r in rows),
            "max_ms_worst": max(r["max_ms"] for r in rows),
            "wake_requests": sum(r["wake_requests"] for r in rows),
            "wake_ticks_skipped": sum(r["wake_ticks_skipped"] for r in rows),
            "idle_triton_cpu_share_median": statistics.median(r["idle_triton_cpu_share"] for r in rows),
            "idle_waker_cpu_share_median": statistics.median(r["idle_waker_cpu_share"] for r in rows),
        }
        for ms in THRESHOLDS_MS:
            s[f"over_{ms:g}ms_total"] = sum(r[f"over_{ms:g}ms"] for r in rows)
        out[variant] = s
    return out


def write_report(summary: dict, runs: dict, meta: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "batcher_wakeup.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=2) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, variant in enumerate(VARIANTS):
        axes[0].scatter([i] * len(runs[variant]), [r["max_ms"] for r in runs[variant]], alpha=0.7)
        axes[1].scatter([i] * len(runs[variant]), [r["over_50ms"] for r in runs[variant]], alpha=0.7)
    for ax, title in zip(axes, ("slowest request per repeat (ms)", "requests over 50 ms per repeat"), strict=True):
        ax.set_xticks(range(len(VARIANTS)), VARIANTS)
        ax.set_title(title)
    axes[0].axhline(50, color="red", linestyle="--", linewidth=1)
    fig.tight_layout()
    fig.savefig(out / "batcher_wakeup.png", dpi=110)
    lines = [
        "# Triton's lost batcher wake-up with priority levels, and the waker", "",
        f"Measured {meta['when']} on {meta['machine']}; load average {meta['load_before']} before, "
        f"{meta['load_after']} after. Command: `{meta['command']}`.", "",
        "One Triton 2.51 replica of fleet.demo.yaml's inf2 pool: **emulated** Inferentia (2 instances) with "
        "**synthetic outputs** (zeros of the right shape, timed to the inf2 profile); the tokenizer is the real "
        "Python-backend tokenizer. Seven users send `text_embedding` requests in waves, straight to Triton (no "
        f"Envoy): each wave 3 gold, 3 silver and 1 bronze request 1.5 ms apart, then {THINK_S * 1000:.0f} ms after "
        f"each answer; {HOGS} busy-looping processes share the 2 cores (the defect needs CPU contention, which the "
        f"platform benchmark has: Envoy, locust and three pools on 2 cores). {meta['repeats']} repeats x "
        f"{meta['seconds']:g} s per variant, interleaved in every repeat.", "",
        "| variant | requests | errors (sheds) | p50 ms median (range) | p99 ms median (range) | max ms median | "
        "max ms worst | over 50 ms (all repeats) | over 150 ms (all repeats) | wake-up requests sent | "
        "wake-up ticks skipped (every sender waiting) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        s = summary[variant]
        lines.append(
            f"| {variant} | {s['requests']} | {s['errors']} | {s['p50_ms_median']:.1f} ({s['p50_ms_min']:.1f}-"
            f"{s['p50_ms_max']:.1f}) | {s['p99_ms_median']:.1f} ({s['p99_ms_min']:.1f}-{s['p99_ms_max']:.1f}) | "
            f"{s['max_ms_median']:.1f} | {s['max_ms_worst']:.1f} | {s['over_50ms_total']} | {s['over_150ms_total']} | "
            f"{s['wake_requests']} | {s['wake_ticks_skipped']} |")
    lines += ["", f"The waker's cost, idle ({IDLE_S:g} s before the load, no request but the wake-ups; CPU as a share "
              "of one core, median of the repeats): " + "; ".join(
                  f"`{v}`: tritonserver {summary[v]['idle_triton_cpu_share_median']:.1%}"
                  + (f", waker {summary[v]['idle_waker_cpu_share_median']:.1%}" if v == "levels + waker" else "")
                  for v in VARIANTS) + "."]
    met = {v: summary[v]["over_50ms_total"] == 0 for v in VARIANTS}
    lines += ["", "Baseline and target: `fifo` (no levels) is the baseline: same replica, same arrivals, interleaved. "
              "The target is that sharing a pool by tier costs no stall: no request over gold's 50-ms bound at this "
              "load, far below the pool's capacity. " + "; ".join(f"`{v}`: {'met' if ok else 'missed'}" for v, ok in met.items())
              + ".", "",
              "![slowest request and requests over 50 ms per repeat](batcher_wakeup.png)", "",
              "The cause, from Triton's source (`core/src/dynamic_batch_scheduler.cc`, `WaitForPayloadSlotAvailable`; "
              "`rate_limiter.cc`, `PayloadSlotAvailable`; `backend_model_instance.cc`, `BackendThread`): priority "
              "levels turn off the batcher's prefetching, so it waits for an idle instance; an instance signals the "
              "batcher when its execution ends but registers as idle only afterwards, so a batcher that checks in "
              "between sleeps again, until the next request arrives or 500 ms pass. The waker queues a request at a "
              "level of its own every 20 ms that expires in 1 us: it wakes the batcher and is rejected, never run. The "
              "wake-up can itself be missed (the same race), so the waker never waits for an answer before the next "
              "tick (4 sender threads; a tick is skipped only while all 4 wait).", "",
              "What it shows: how often the stall happens under wave-shaped load with CPU contention on this build, "
              "and that the waker bounds it. What it does not show: a real Inferentia (emulated, synthetic outputs), "
              "the rate on another machine (it is a race: it needs the batcher to run between two steps of an "
              "instance thread), or Envoy's share (direct to Triton)."]
    (out / "batcher_wakeup.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = interleaved.parse_args(__doc__.splitlines()[0], argv, repeats=3, seconds=40.0, out=OUT)
    load_before = round(os.getloadavg()[0], 2)
    runs = interleaved.run_interleaved(
        VARIANTS, args.repeats, "batcher-wakeup-", lambda variant, _repeat, tmp: run_once(variant, args.seconds, tmp),
        lambda _repeat, _variant, r: f"{r['requests']} requests, slowest {r['max_ms']:.1f} ms, {r['over_50ms']} over 50 ms")
    meta = interleaved.meta(args, "benchmarks.resilience.batcher_wakeup", load_before,
                            wake_period_ms=DEFAULT_PERIOD_MS, outputs="synthetic (emulated inf2)", emulated=True)
    summary = summarize(runs)
    write_report(summary, runs, meta, args.out)
    print((args.out / "batcher_wakeup.md").read_text())
    return 0


if __name__ == "__main__":
    interrupt_on_stop_signals()  # Triton/Envoy started here are stopped on SIGTERM or SIGHUP too (localnet.signals)
    raise SystemExit(main())
