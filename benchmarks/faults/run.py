"""Fault and soak benchmark (issue 16, item 8): under steady mixed load through Envoy, SIGKILL and
SIGSTOP of each process kind, a slow pool and a full disk for the state file, each with its
expected outcome asserted; then a soak of the same load with a fault every ``--fault-every-s``:
0 accepted requests lost, control server memory growth under 10 %.

    python -m benchmarks.faults.run                      # the full run: 30-minute soak
    python -m benchmarks.faults.run --soak-s 300 --fault-every-s 60   # the short version

The platform is ``fleet.demo.yaml`` (the real CPU pool, GPU and Inferentia pools emulated with
synthetic outputs) with the CPU and GPU pools at 2 replicas each, so that one replica and the whole
pool are different faults.  Results: ``benchmarks/results/faults/faults.{md,json}`` and ``timeline.png``.
Exit status 1 when any scenario or the soak failed its expected outcome (the report says why).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import ROOT
from benchmarks.faults import scenarios as sc
from benchmarks.faults.load import MixedLoad, load_digits
from benchmarks.faults.report import write_report
from local_platform.platform import LocalPlatform, PlatformPorts
from localnet.signals import interrupt_on_stop_signals

OUT = ROOT / "benchmarks" / "results" / "faults"
WORK = ROOT / "build" / "bench" / "faults"

SCENARIOS: dict[str, Callable[[sc.FaultBench], sc.Result]] = {
    "replica-sigkill": lambda b: sc.triton_sigkill(b, whole_pool=False),
    "pool-sigkill": lambda b: sc.triton_sigkill(b, whole_pool=True),
    "replica-sigstop": lambda b: sc.triton_sigstop(b, whole_pool=False),
    "pool-sigstop": lambda b: sc.triton_sigstop(b, whole_pool=True),
    "envoy-sigkill": lambda b: sc.envoy_fault(b, signal.SIGKILL),
    "envoy-sigstop": lambda b: sc.envoy_fault(b, signal.SIGSTOP),
    "control-sigkill": lambda b: sc.control_fault(b, signal.SIGKILL),
    "control-sigstop": lambda b: sc.control_fault(b, signal.SIGSTOP),
    "slow-pool": lambda b: sc.slow_pool(b),
    "state-disk-full": lambda b: sc.state_disk_full(b),
}
# Soak faults: those the platform promises to ride out with 0 lost, that leave the control
# server's process in place (its memory is measured across the whole soak).
SOAK_FAULTS: dict[str, Callable[[sc.FaultBench], sc.Result]] = {
    "replica-sigkill": SCENARIOS["replica-sigkill"],
    "slow-pool": lambda b: sc.slow_pool(b, slow_s=20.0),
    "pool-sigkill": SCENARIOS["pool-sigkill"],
    "state-disk-full": lambda b: sc.state_disk_full(b, full_s=10.0),
}


def bench_fleet(dest: Path, replicas: int = 2) -> Path:
    """fleet.demo.yaml with the CPU and GPU pools at ``replicas`` each (paths made absolute): one
    replica and the whole pool are then different faults whichever of them serves gold."""
    src = ROOT / "fleet.demo.yaml"
    raw = yaml.safe_load(src.read_text())
    for key in ("prices", "tiers", "profiles"):
        if key in raw:
            raw[key] = str((src.parent / raw[key]).resolve())
    for pool in raw["pools"]:
        if pool["name"] in ("cpu", "gpu"):
            pool["replicas"] = replicas
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(raw, sort_keys=False))
    return dest


def soak(b: sc.FaultBench, duration_s: float, fault_every_s: float) -> dict[str, Any]:
    start = b.mark(f"soak: {duration_s:.0f} s, a fault every {fault_every_s:.0f} s")
    faults: list[dict[str, Any]] = []
    names = list(SOAK_FAULTS)
    i = 0
    next_fault = start + fault_every_s / 2
    while b.load.now() < start + duration_s:
        now = b.load.now()
        if now >= next_fault and start + duration_s - now > 45:
            name = names[i % len(names)]
            i += 1
            result = SOAK_FAULTS[name](b)
            b.mark(f"{name}: {'passed' if result.passed else 'FAILED'}")
            faults.append(result.to_json())
            b.settle()
            next_fault += fault_every_s
            continue
        elapsed = now - start
        if int(elapsed) % 60 == 0:
            print(f"  soak {elapsed:5.0f} / {duration_s:.0f} s: {len(b.load.records)} requests so far", flush=True)
        time.sleep(1.0)
    end = b.mark("soak: end")
    window = b.load.window(start, end)
    counts = {k: sum(r.outcome == k for r in window) for k in ("ok", "lost", "refused", "shed")}
    memory = sc.memory_growth(b.memory, start, end)
    checks = [
        {"ok": counts["lost"] == 0, "check": f"0 accepted requests lost over the soak (lost {counts['lost']} of {len(window)})"},
        {"ok": memory["growth"] is not None and memory["growth"] < 0.10 and not memory["why"],
         "check": f"control server memory growth < 10 % ({memory['growth']}; {memory.get('first_mb')} -> "
                  f"{memory.get('last_mb')} MB{'; ' + memory['why'] if memory['why'] else ''})"},
    ]
    lost = sorted({f"{r.proto} {r.model}/{r.tier}: {r.detail}" for r in window if r.outcome == "lost"})[:5]
    return {"duration_s": round(end - start, 1), "fault_every_s": fault_every_s, "counts": counts, "memory": memory,
            "faults": faults, "checks": checks, "passed": all(c["ok"] for c in checks), "lost_examples": lost}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--soak-s", type=float, default=1800.0, help="soak duration (the full run: 1800)")
    ap.add_argument("--fault-every-s", type=float, default=180.0, help="a soak fault this often")
    ap.add_argument("--scenarios", nargs="*", default=list(SCENARIOS), choices=list(SCENARIOS),
                    help="which fault scenarios to run before the soak (none: --scenarios with no name)")
    ap.add_argument("--rate-rps", type=float, default=30.0, help="the mixed load's total request rate (bounded)")
    ap.add_argument("--workers", type=int, default=8, help="load threads (requests in flight at most)")
    ap.add_argument("--hang-timeout-s", type=float, default=10.0,
                    help="the platform's liveness timeout for the control server and Envoy")
    ap.add_argument("--tier-timeouts", type=float, default=2.0, metavar="FACTOR",
                    help="per-try timeout = each tier's bound x FACTOR, as `make up` runs (0: off, one route timeout)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--artifacts", type=Path, default=ROOT / "build" / "models")
    args = ap.parse_args(argv)
    if args.soak_s < 0 or args.fault_every_s <= 0:
        ap.error("--soak-s must be >= 0 and --fault-every-s > 0")
    short = args.soak_s < 1800
    shutil.rmtree(WORK, ignore_errors=True)
    fleet = bench_fleet(WORK / "fleet.faults.yaml")
    platform = LocalPlatform(fleet_path=fleet, workdir=WORK / "run", artifacts=args.artifacts,
                             ports=PlatformPorts(http=0, grpc=0), interval_s=0.5, hang_timeout_s=args.hang_timeout_s,
                             tier_timeouts=args.tier_timeouts or None)
    print("starting the platform (fleet.demo.yaml, cpu x2, gpu x2) ...", flush=True)
    started = time.monotonic()
    platform.start()
    d = platform.describe()
    load = MixedLoad(d["http_endpoint"], d["grpc_endpoint"], load_digits(args.artifacts), rate_rps=args.rate_rps,
                     workers=args.workers)
    bench = sc.FaultBench(platform, load)
    data_plane = sc.data_plane_facts(d["envoy_admin"])
    print(f"data plane: {data_plane}", flush=True)
    results: list[sc.Result] = []
    soak_result: dict[str, Any] | None = None
    loads = [os.getloadavg()[0]]  # the machine is shared: the report says how busy it was
    try:
        load.start()
        bench.start()
        bench.settle()
        time.sleep(10)  # a baseline before the first fault
        for name in args.scenarios:
            print(f"== {name}", flush=True)
            results.append(SCENARIOS[name](bench))
            loads.append(os.getloadavg()[0])
            bench.mark(f"{name}: {'passed' if results[-1].passed else 'FAILED'}")
            for c in results[-1].checks:
                print(f"     {'ok  ' if c['ok'] else 'FAIL'} {c['check']}", flush=True)
            bench.settle()
        if args.soak_s > 0:
            print(f"== soak ({args.soak_s:.0f} s{', the short version' if short else ''})", flush=True)
            soak_result = soak(bench, args.soak_s, args.fault_every_s)
            for c in soak_result["checks"]:
                print(f"     {'ok  ' if c['ok'] else 'FAIL'} {c['check']}", flush=True)
    finally:
        loads.append(os.getloadavg()[0])
        load.stop()
        bench.stop()
        platform.stop()
    write_report(args.out, results, soak_result, load, bench, short=short, wall_s=time.monotonic() - started,
                 rate_rps=args.rate_rps, workers=args.workers, hang_timeout_s=args.hang_timeout_s, data_plane=data_plane,
                 tier_timeouts=args.tier_timeouts or None,
                 load_average={"start": loads[0], "end": loads[-1], "max": max(loads)})
    failed = [r.name for r in results if not r.passed] + (["soak"] if soak_result and not soak_result["passed"] else [])
    print(f"results: {args.out}; {'all passed' if not failed else 'FAILED: ' + ', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    interrupt_on_stop_signals()  # Triton/Envoy started here are stopped on SIGTERM or SIGHUP too (localnet.signals)
    sys.exit(main())
