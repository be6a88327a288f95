"""Priority levels on an ensemble's host step: do they stall requests?  (issue 16 item 2, issue 12 item 4)

One Triton replica of fleet.demo.yaml's inf2 pool (emulated Inferentia, synthetic outputs, timed to
the inf2 profile; the tokenizer is the real Python-backend tokenizer) serving ``text_embedding``
(tokenizer -> accelerated step).  Three users send one request at a time each, with exponential
think times (gold every 0.10 s, silver 0.15 s, bronze 0.12 s on average: a few dozen requests a
second, far below capacity), each at its tier's Triton ``priority``, straight to Triton (no Envoy).
Three repository variants, interleaved within every repeat:

- ``fifo``: no levels anywhere (one FIFO queue per step);
- ``levels on every step``: ``TierSharing(host_steps=True)``, the tokenizer queues by level too;
- ``levels on the accelerated step``: the shipped ``TierSharing`` (host steps FIFO).

Reported per variant and tier: requests, p50, p99, max, and how many took over 50 ms (gold's
bound), medians over repeats and the worst repeat.  Run: ``python -m benchmarks.resilience.host_step_priority``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import statistics
import threading
import time
from pathlib import Path

import requests

from benchmarks.resilience import interleaved
from fleet.triton_process import TritonProcess, prepare_backend_dir
from localnet.signals import interrupt_on_stop_signals
from model_repository.definitions import load_models
from model_repository.triton_config import TierSharing, target_for_pool, tier_sharing, write_repository
from router_lib.config import load_fleet
from router_lib.priority import tier_priorities

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "benchmarks" / "results" / "resilience"
MEAN_GAP_S = {"gold": 0.10, "silver": 0.15, "bronze": 0.12}
SLOW_MS = 50.0
VARIANTS = ("fifo", "levels on every step", "levels on the accelerated step")


def _sharing(variant: str, fleet, profile) -> TierSharing | None:  # type: ignore[no-untyped-def]
    if variant == "fifo":
        return None
    shipped = tier_sharing(fleet.tiers, profile, dilation=fleet.time_dilation)
    return dataclasses.replace(shipped, host_steps=variant == "levels on every step")


def run_once(variant: str, seconds: float, workdir: Path, seed: int) -> dict[str, dict[str, float]]:
    fleet = load_fleet(ROOT / "fleet.demo.yaml")
    pool = fleet.pool("inf2")
    profile = fleet.profile("text_embedding", pool.accelerator)
    assert profile is not None
    target = target_for_pool(pool, profile, _sharing(variant, fleet, profile))
    repo = write_repository(workdir / "repo", [(load_models()["text_embedding"], target)], ROOT / "build" / "models")
    triton = TritonProcess("host-step-probe", repo, prepare_backend_dir(workdir / "backends"), workdir / "triton.log")
    triton.start()
    levels = tier_priorities(fleet.tiers).by_tier()
    latencies: dict[str, list[float]] = {tier: [] for tier in MEAN_GAP_S}
    errors = dict.fromkeys(MEAN_GAP_S, 0)
    try:
        triton.wait_ready()
        url = f"http://{triton.http_url}/v2/models/text_embedding/infer"
        for _ in range(5):  # warm the stub and the tokenizer
            requests.post(url, json=_body(None), timeout=10)
        stop = time.monotonic() + seconds

        def user(tier: str, rng: random.Random) -> None:
            session = requests.Session()
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                r = session.post(url, json=_body(levels[tier]), timeout=30)
                latencies[tier].append((time.perf_counter() - t0) * 1000)
                errors[tier] += r.status_code != 200
                time.sleep(rng.expovariate(1 / MEAN_GAP_S[tier]))

        threads = [threading.Thread(target=user, args=(tier, random.Random(seed + i)))
                   for i, tier in enumerate(MEAN_GAP_S)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        triton.stop()
    out = {}
    for tier, values in latencies.items():
        d = sorted(values)
        out[tier] = {"requests": len(d), "errors": errors[tier], "p50_ms": d[len(d) // 2],
                     "p99_ms": d[min(len(d) - 1, int(len(d) * 0.99))], "max_ms": d[-1],
                     "over_50ms": sum(1 for x in d if x > SLOW_MS)}
    return out


def _body(level: int | None) -> dict:
    body: dict = {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["route me please"]}]}
    if level is not None:
        body["parameters"] = {"priority": level}
    return body


def summarize(runs: dict[str, list[dict[str, dict[str, float]]]]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for variant, repeats in runs.items():
        out[variant] = {}
        for tier in MEAN_GAP_S:
            rows = [r[tier] for r in repeats]
            out[variant][tier] = {
                "requests": sum(r["requests"] for r in rows), "errors": sum(r["errors"] for r in rows),
                "p50_ms_median": statistics.median(r["p50_ms"] for r in rows),
                "p99_ms_median": statistics.median(r["p99_ms"] for r in rows),
                "max_ms_median": statistics.median(r["max_ms"] for r in rows),
                "max_ms_worst": max(r["max_ms"] for r in rows),
                "over_50ms_total": sum(r["over_50ms"] for r in rows),
                "repeats_with_a_stall_over_90ms": sum(1 for r in rows if r["max_ms"] > 90),
            }
    return out


def write_report(summary: dict, runs: dict, meta: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "host_step_priority.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=2))
    fig, axes = plt.subplots(1, len(MEAN_GAP_S), figsize=(12, 3.6), sharey=True)
    for ax, tier in zip(axes, MEAN_GAP_S, strict=True):
        for i, variant in enumerate(VARIANTS):
            ys = [r[tier]["max_ms"] for r in runs[variant]]
            ax.scatter([i] * len(ys), ys, alpha=0.7)
        ax.axhline(SLOW_MS, color="red", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(VARIANTS)), ["fifo", "every step", "accel. step"])
        ax.set_title(f"{tier}: slowest request per repeat")
    axes[0].set_ylabel("ms")
    fig.tight_layout()
    fig.savefig(out / "host_step_priority.png", dpi=110)
    lines = [
        "# Priority levels on an ensemble's host step (Triton 2.51)", "",
        f"Measured {meta['when']} on {meta['machine']}; load average {meta['load_before']} before, "
        f"{meta['load_after']} after. Command: `{meta['command']}`.", "",
        "One Triton replica of fleet.demo.yaml's inf2 pool: **emulated** Inferentia with **synthetic outputs** "
        "(zeros of the right shape, timed to the inf2 profile); the tokenizer step is the real Python-backend "
        "tokenizer. Three closed-loop users with exponential think times (gold 0.10 s, silver 0.15 s, bronze "
        "0.12 s mean), each at its tier's `priority`, straight to Triton (no Envoy). "
        f"{meta['repeats']} repeats x {meta['seconds']} s per variant, variants interleaved in every repeat. "
        "Far below capacity: any wait is the scheduler's, not a queue of work.", "",
        "| variant | tier | requests | errors | p50 ms (median) | p99 ms (median) | max ms (median) | max ms (worst) | over 50 ms (all repeats) | repeats with a stall > 90 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        for tier, s in summary[variant].items():
            lines.append(f"| {variant} | {tier} | {s['requests']} | {s['errors']} | {s['p50_ms_median']:.1f} | "
                         f"{s['p99_ms_median']:.1f} | {s['max_ms_median']:.1f} | {s['max_ms_worst']:.1f} | "
                         f"{s['over_50ms_total']} | {s['repeats_with_a_stall_over_90ms']} of {meta['repeats']} |")
    met = {v: summary[v]["gold"]["over_50ms_total"] == 0 for v in VARIANTS}
    lines += ["", "Baseline and target: `fifo` (no levels, the configuration before sharing) is the baseline: same "
              "replica, same arrivals, interleaved. The target for a shared pool is gold's bound: no gold request "
              "over 50 ms at this light load. " + "; ".join(f"`{v}`: {'met' if ok else 'missed'}" for v, ok in met.items())
              + "."]
    lines += ["", "![slowest request per repeat](host_step_priority.png)", "",
              "What it shows: whether declaring priority levels on the host step (as well as the accelerated "
              "step) adds scheduler stalls at light load on this Triton build. Since 2026-11-30 every replica with "
              "levels runs the batcher waker (`fleet/batcher_wake.py`): the stalls this benchmark first found were "
              "Triton's missed batcher wake-up (`batcher_wakeup.md`), which the waker bounds at 20 ms. What it does "
              "not show: a real Inferentia (the accelerated step is emulated) or behaviour under overload (see "
              "`summary.md`); the machine is shared, so single slow requests also happen in `fifo`."]
    (out / "host_step_priority.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = interleaved.parse_args(__doc__.splitlines()[0], argv, repeats=5, seconds=20.0, out=OUT)
    load_before = round(os.getloadavg()[0], 2)
    runs = interleaved.run_interleaved(
        VARIANTS, args.repeats, "host-step-",
        lambda variant, repeat, tmp: run_once(variant, args.seconds, tmp, seed=repeat),
        lambda _repeat, _variant, r: f"slowest {max(t['max_ms'] for t in r.values()):.1f} ms")
    meta = interleaved.meta(args, "benchmarks.resilience.host_step_priority", load_before)
    summary = summarize(runs)
    write_report(summary, runs, meta, args.out)
    print((args.out / "host_step_priority.md").read_text())
    return 0


if __name__ == "__main__":
    interrupt_on_stop_signals()  # Triton/Envoy started here are stopped on SIGTERM or SIGHUP too (localnet.signals)
    raise SystemExit(main())
