"""``make benchmark``: every benchmark of the project, one after another, each in its own process.

Each entry is a module run as ``python -m <module> [args]`` when it exists (areas land at
different times; a missing one is reported as skipped, never as a failure).  Separate processes
because benchmarks start Tritons, Envoys and locust, parse their own ``sys.argv``, and must not
share a process's state (gevent patching above all).  A summary of what ran, how long it took and
its exit status goes to ``benchmarks/results/run_all.{json,md}``; each benchmark writes its own
results folder (listed below) with the exact command, versions and machine.

A benchmark past its time limit gets SIGTERM, which every benchmark handles like Ctrl-C
(``localnet.signals``): it stops its locust runs and the Tritons and Envoys it started (those run
in sessions of their own and would outlive it, taking the CPUs from the benchmarks after it).  Only one that
has not exited ``GRACE_S`` later is killed.  SIGTERM or Ctrl-C to ``make benchmark`` itself stops
the running benchmark the same way.  Tritons, Envoys or Prometheus servers already running when a
benchmark starts (another session's, or left by a program killed with SIGKILL) share the CPUs with
it: they are listed on the terminal and in the summary, not stopped (they may be someone's).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, stop_process, write_results
from localnet.signals import interrupt_on_stop_signals

GRACE_S = 120.0  # a benchmark told to stop drains and stops its platform within this
PLATFORM_PROCESSES = ("tritonserver", "envoy", "prometheus")


@dataclass(frozen=True)
class Bench:
    name: str
    module: str
    args: tuple[str, ...]
    results: str
    timeout_s: int


BENCHES = (
    Bench("foundation", "benchmarks.foundation.triton_vs_ort", (), "benchmarks/results/triton_vs_ort.md", 600),
    Bench("router", "router_lib", ("compare", "--sensitivity", "--out", "benchmarks/router/results"),
          "benchmarks/router/results", 900),
    Bench("router-decide", "router_lib", ("decide-bench",), "benchmarks/router/results", 300),
    Bench("xds-convergence", "benchmarks.xds.convergence", (), "benchmarks/xds/results", 600),
    Bench("xds-grpc-routing-cost", "benchmarks.xds.grpc_model_routing_cost", (), "benchmarks/xds/results", 600),
    Bench("xds-scale", "benchmarks.xds.scale", (), "benchmarks/xds/results", 600),
    # Envoy with the shipped edge chain against direct Triton side by side, one variant per filter.
    Bench("envoy-overhead", "benchmarks.xds.envoy_overhead", ("--seconds", "1.5", "--repeats", "6", "--tier", "silver"),
          "benchmarks/results/overhead", 1200),
    # fleet.demo.yaml: the emulated pools keep their accelerator timing (synthetic outputs); with
    # fleet.yaml they run MiniLM on this 2-core CPU and lag (see README, make demo-real).
    # Simulator calibrated on stairs runs, validated on steady/step/burst; planner-sized baselines (~30 min).
    Bench("platform", "benchmarks.platform.load_bench", ("--fleet", "fleet.demo.yaml"),
          "benchmarks/results/platform", 3000),
    Bench("connect-first", "benchmarks.platform.connect_first", ("--pairs", "3", "--duration-s", "24"),
          "benchmarks/results/platform/connect_first.md", 600),
    # Autoscaled heterogeneous vs single-accelerator vs static fleets, side by side (emulated, x40).
    Bench("capacity", "benchmarks.capacity.run", ("--repeats", "3"), "benchmarks/results/capacity", 1800),
    # Canary releases: fault -> candidate at 0% in Envoy, mirroring overhead, model switching.
    Bench("release-rollback", "benchmarks.release.rollback", ("--rollbacks", "60"), "benchmarks/results/release", 900),
    Bench("release-mirror", "benchmarks.release.mirror_overhead", ("--pairs", "12", "--requests", "200"),
          "benchmarks/results/release", 600),
    Bench("release-switch", "benchmarks.release.switch", (), "benchmarks/results/release", 600),
    # Batch jobs on spare bronze capacity: the 100k-row job, gold p99 with and without it, SIGKILLs.
    Bench("batch", "benchmarks.batch.run", ("--repeats", "3", "--rows", "100000"), "benchmarks/results/batch", 3600),
    # The request path (issue 16): edge filters, mTLS, tracing, overload by tier, faults and the soak.
    Bench("edge-latency", "benchmarks.edge.latency", ("--requests", "400", "--repeats", "9"),
          "benchmarks/results/edge", 900),
    Bench("security-mtls", "benchmarks.security.mtls_overhead", (), "benchmarks/results/security", 600),
    Bench("tracing-overhead", "benchmarks.tracing.overhead", ("--seconds", "3", "--repeats", "5"),
          "benchmarks/results/tracing", 900),
    Bench("resilience", "benchmarks.resilience.run", ("--repeats", "3"), "benchmarks/results/resilience", 1200),
    # Priority levels on an ensemble's host step (why shared pools keep host steps FIFO).
    Bench("host-step-priority", "benchmarks.resilience.host_step_priority", ("--repeats", "5", "--seconds", "20"),
          "benchmarks/results/resilience", 900),
    # Triton's missed batcher wake-up with priority levels: levels vs levels + waker vs FIFO.
    Bench("batcher-wakeup", "benchmarks.resilience.batcher_wakeup", ("--repeats", "4", "--seconds", "40"),
          "benchmarks/results/resilience", 1200),
    # Faults under load (SIGKILL/SIGSTOP of each process kind, slow pool, full disk), then the 30-minute soak.
    Bench("faults", "benchmarks.faults.run", ("--soak-s", "1800"), "benchmarks/results/faults", 3600),
)


def run_bench(cmd: list[str], timeout_s: float, *, env: dict[str, str] | None = None,
              grace_s: float = GRACE_S) -> str:
    """Run ``cmd`` to its end or for ``timeout_s``, whichever is first; the status for the summary:
    ``ok``, ``exit N``, or ``timed out after T s`` with how it was stopped."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout_s:g} s, {stop_process(proc, grace_s)}"
    except BaseException:  # Ctrl-C or SIGTERM to this runner: the benchmark stops its processes first
        stop_process(proc, grace_s)
        raise
    return "ok" if rc == 0 else f"exit {rc}"


def running(names: tuple[str, ...] = PLATFORM_PROCESSES) -> list[str]:
    """``"<name> <pid>"`` of every live process whose command name (``/proc/<pid>/comm``) is one of
    ``names``, by pid."""
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            name = comm.read_text().strip()
            state = (comm.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if name in names and state != "Z":
            found.append((int(comm.parent.name), name))
    return [f"{name} {pid}" for pid, name in sorted(found)]


def available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES], help="run only these")
    ap.add_argument("--skip", nargs="+", default=[], choices=[b.name for b in BENCHES])
    args = ap.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    rows: list[dict[str, Any]] = []
    for b in BENCHES:
        if (args.only and b.name not in args.only) or b.name in args.skip:
            continue
        if not available(b.module):
            rows.append({"name": b.name, "module": b.module, "status": "skipped: module not present", "wall_s": 0})
            print(f"== {b.name}: skipped ({b.module} is not in this checkout)", flush=True)
            continue
        cmd = [sys.executable, "-m", b.module, *b.args]
        print(f"== {b.name}: {' '.join(cmd[1:])}", flush=True)
        others = running()
        if others:
            print(f"== {b.name}: already running, sharing the CPUs with it: {', '.join(others)}", flush=True)
        started = time.monotonic()
        status = run_bench(cmd, b.timeout_s, env=env)
        rows.append({"name": b.name, "module": b.module, "args": list(b.args), "status": status,
                     "wall_s": round(time.monotonic() - started, 1), "results": b.results,
                     "running_at_start": others})
    md = ["# make benchmark", "",
          "| benchmark | module | status | wall s | Triton/Envoy/Prometheus already running at its start | results |",
          "|---|---|---|---:|---|---|"]
    md += [f"| {r['name']} | `{r['module']}` | {r['status']} | {r['wall_s']} | "
           f"{', '.join(r.get('running_at_start', [])) or 'none'} | {r.get('results', '-')} |" for r in rows]
    write_results(ROOT / "benchmarks" / "results", "run_all", {"benchmarks": rows}, "\n".join(md))
    print("\n".join(md))
    return 0 if all(str(r["status"]) == "ok" or str(r["status"]).startswith("skipped") for r in rows) else 1


if __name__ == "__main__":
    interrupt_on_stop_signals()
    sys.exit(main())
