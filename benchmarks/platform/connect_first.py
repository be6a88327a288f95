"""What a load generator's connection set-up adds to the first requests of a run.

Every run of the platform benchmark starts its locust users at one instant, and before
2026-11-30 each user opened its connection to Envoy (TCP, and HTTP/2 for gRPC) inside its first
*measured* request.  A run of the steady shape has ~180 bronze requests, so its bronze p99 is the
second-slowest request: one of those first ones.  The simulator models no connection set-up, so
that p99 measured the load generator's start, not the platform.

This benchmark runs the mixed-tier workload on one platform (``fleet.demo.yaml``: real CPU pool,
emulated GPU and Inferentia pools with synthetic outputs), alternating short runs of the burst
shape with and without ``LOAD_CONNECT_FIRST`` (``locustfiles/settings.py``: users open their
connections in ``on_start``), after one discarded run that warms the platform itself.  Per run:
each class's latency among the requests sent in the run's first 50 ms (one per user); the slowest
request sent within 0.5 s of the burst's start, when locust adds users mid-run (the first version
of the set-up, ``grpc.channel_ready_future``, blocked the gevent loop there for 0.2 s, delaying
every request in flight); and the bronze p99 after the first second.  Side by side in one
process, so the machine's load touches both arms alike.

    python -m benchmarks.platform.connect_first --pairs 3 --duration-s 24
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from localnet.signals import interrupt_on_stop_signals
from reporting.sla import nearest_rank

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "benchmarks" / "results" / "platform"
WORK = ROOT / "build" / "bench" / "connect_first"
FIRST_S = 0.05  # the requests sent in the first 50 ms: every user's first
SPAWN_AT_S = 20.0  # the burst shape's first burst (locustfiles/schedule.py: burst_every_s): users added
SPAWN_WINDOW_S = 0.5
TARGETS = ("none: this measures the load generator, not the platform (no issue sets a target for it). "
           "Baseline: the same workload and platform without the set-up (the off arm), alternating with it.")


def first_requests(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per class (tier/model/protocol/batch): latencies of the requests of the run's first
    ``FIRST_S``; the slowest request sent within ``SPAWN_WINDOW_S`` of ``SPAWN_AT_S`` (users
    added); and the bronze p99 (nearest rank) of the successful requests after the first second."""
    if not rows:
        raise ValueError("a run with no requests: nothing to compare")
    t0 = min(r["t_unix_s"] for r in rows)
    first: dict[str, list[float]] = {}
    for r in rows:
        if r["t_unix_s"] - t0 < FIRST_S:
            first.setdefault(f"{r['tier']}/{r['model']}/{r['protocol']}/b{r['batch']}", []).append(r["latency_ms"])
    later = sorted(r["latency_ms"] for r in rows if r["tier"] == "bronze" and r["t_unix_s"] - t0 >= 1.0 and r["ok"])
    spawn = [r["latency_ms"] for r in rows if abs(r["t_unix_s"] - t0 - SPAWN_AT_S) <= SPAWN_WINDOW_S]
    return {"requests": len(rows), "failed": sum(not r["ok"] for r in rows),
            "first_ms": {k: sorted(v) for k, v in sorted(first.items())},
            "first_max_ms": max(x for v in first.values() for x in v),
            "users_added_max_ms": max(spawn) if spawn else None,
            "later_bronze_p99_ms": nearest_rank(later, 0.99) if later else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=3, help="runs per arm (alternating)")
    ap.add_argument("--duration-s", type=float, default=24.0, help="> 20.5 s to include the first burst")
    ap.add_argument("--fleet", type=Path, default=ROOT / "fleet.demo.yaml")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.pairs < 1 or args.duration_s <= SPAWN_AT_S + SPAWN_WINDOW_S:
        ap.error(f"--pairs must be >= 1 and --duration-s > {SPAWN_AT_S + SPAWN_WINDOW_S:g} (to include the first burst)")
    from local_platform.platform import LocalPlatform, PlatformPorts
    from locustfiles.runner import LocustRun, run_locust

    shutil.rmtree(WORK, ignore_errors=True)
    platform = LocalPlatform(fleet_path=args.fleet, workdir=WORK / "platform", ports=PlatformPorts(http=0, grpc=0))
    started = time.time()
    print(f"starting the platform ({args.fleet.name})", flush=True)
    platform.start()
    runs: list[dict[str, Any]] = []
    try:
        d = platform.describe()
        arms = [True] + [bool(i % 2) for i in range(2 * args.pairs)]  # a discarded warm-up run, then off, on, ...
        for i, connect_first in enumerate(arms):
            out = WORK / f"run{i}"
            spec = LocustRun(d["http_endpoint"], d["grpc_endpoint"], shape="burst", duration_s=args.duration_s,
                             seed=2, connect_first=connect_first)
            run_locust(spec, out, out / "requests.jsonl")
            rows = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines() if line]
            summary = {"run": i, "connect_first": connect_first, "discarded": i == 0, **first_requests(rows)}
            runs.append(summary)
            print(f"run {i + 1}/{len(arms)} connect_first={connect_first}: slowest first request "
                  f"{summary['first_max_ms']:.1f} ms, slowest as users were added {summary['users_added_max_ms']} ms, "
                  f"later bronze p99 {summary['later_bronze_p99_ms']} ms", flush=True)
    finally:
        platform.stop()
    kept = [r for r in runs if not r["discarded"]]
    arm = {name: [r for r in kept if r["connect_first"] is value] for name, value in (("on", True), ("off", False))}
    classes = sorted({c for r in kept for c in r["first_ms"]})
    table = {c: {a: statistics.median(max(r["first_ms"][c]) for r in rs if c in r["first_ms"]) for a, rs in arm.items()}
             for c in classes}
    result = {
        "command": f"python -m benchmarks.platform.connect_first --pairs {args.pairs} --duration-s {args.duration_s:g}",
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)),
        "machine": f"{os.cpu_count()} cores; 1-min load average {os.getloadavg()[0]:.2f} at the end",
        "fleet": str(args.fleet.relative_to(ROOT) if args.fleet.is_relative_to(ROOT) else args.fleet),
        "emulation": "real CPU pool; GPU and Inferentia pools emulated (real Triton, profile timing, synthetic outputs)",
        "targets": TARGETS,
        "runs": runs,
        "first_request_max_ms_median": table,
        "slowest_first_request_ms": {a: [r["first_max_ms"] for r in rs] for a, rs in arm.items()},
        "slowest_as_users_were_added_ms": {a: [r["users_added_max_ms"] for r in rs] for a, rs in arm.items()},
        "later_bronze_p99_ms": {a: [r["later_bronze_p99_ms"] for r in rs] for a, rs in arm.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "connect_first.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["# Connection set-up in a run's first requests", "",
             f"`{result['command']}`, {result['date_utc']} UTC, {result['machine']}. Fleet `{result['fleet']}`: "
             f"{result['emulation']}.", "",
             f"{args.pairs} runs per arm of {args.duration_s:g} s (burst shape: 12 users started at once, 3x from "
             f"{SPAWN_AT_S:g} s), alternating, on one platform after a discarded warm-up run. *off*: each user's "
             "first request opens its connection to Envoy; *on*: users connect in `on_start` (the default since "
             "2026-11-30).", "",
             f"Targets: {TARGETS}", "",
             "| class (tier/model/protocol/batch) | slowest of its first requests, median over runs: off | on |",
             "|---|---|---|"]
    lines += [f"| {c} | {v['off']:.1f} ms | {v['on']:.1f} ms |" for c, v in table.items()]
    lines += ["", f"Slowest first request per run: off {result['slowest_first_request_ms']['off']} ms, "
              f"on {result['slowest_first_request_ms']['on']} ms.",
              f"Slowest request sent within {SPAWN_WINDOW_S:g} s of {SPAWN_AT_S:g} s, as locust added users, per run: "
              f"off {result['slowest_as_users_were_added_ms']['off']} ms, "
              f"on {result['slowest_as_users_were_added_ms']['on']} ms.",
              f"Bronze p99 after the first second, per run: off {result['later_bronze_p99_ms']['off']} ms, "
              f"on {result['later_bronze_p99_ms']['on']} ms.", ""]
    (args.out / "connect_first.md").write_text("\n".join(lines))
    print(f"wrote {args.out / 'connect_first.md'}", flush=True)
    return 0


if __name__ == "__main__":
    interrupt_on_stop_signals()  # Triton/Envoy started here are stopped on SIGTERM or SIGHUP too (localnet.signals)
    raise SystemExit(main())
