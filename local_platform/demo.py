"""``python -m local_platform demo-routing``: the platform under a short mixed-tier load, and what it shows.

Starts the local platform (Triton pools, control server, Envoy on 8000/8001 by default), runs
the mixed-tier locust workload with a load step (``locustfiles/``), samples the control plane
once a second, then prints and writes the report (``reporting/``): per tier p50/p95/p99 and SLA
compliance, where the traffic went (real vs emulated pools), cost against the planner's best
single-accelerator fleet, the simulator's prediction, and the control plane's weight changes.

Exit status 0 only when every tier with a target met it; otherwise the report says which tier
missed and why.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from pathlib import Path

from local_platform.platform import LocalPlatform, PlatformPorts
from reporting.analysis import build_report
from reporting.page import render_markdown
from reporting.plots import write_plots
from reporting.recorder import record_run
from router_lib.domain import EmulatedOutputs
from tracing.demo import DemoTraces

log = logging.getLogger(__name__)
DEMO_SHAPE = "step"


def write_report(run_folder: Path, out: Path) -> tuple[str, bool]:
    """Report for the run recorded in ``run_folder``: plots + ``report.md`` in ``out``."""
    from reporting.run_data import load_run

    report = build_report(load_run(run_folder))
    plots = write_plots(report, out)
    markdown = render_markdown(report, {k: os.path.relpath(v, out) for k, v in plots.items()})
    (out / "report.md").write_text(markdown)
    return markdown, report.verdict.passed


def run_demo(args: argparse.Namespace) -> int:
    started = time.monotonic()
    out: Path = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"starting the local platform ({args.fleet}) ...", flush=True)
    # A fresh work folder: the control server resumes persisted state found there, and state left by
    # an earlier platform (other replicas, other ports) was seen to keep pools at "0 ready replicas".
    shutil.rmtree(out / "platform", ignore_errors=True)
    traces = DemoTraces.start(out)  # OpenTelemetry: every request traced to a local receiver (docs/tracing.md)
    platform = LocalPlatform(fleet_path=args.fleet, workdir=out / "platform",
                             ports=PlatformPorts(http=args.http_port, grpc=args.grpc_port))
    platform.start()
    try:
        d = platform.describe()
        print(f"platform up in {time.monotonic() - started:.0f} s: HTTP {d['http_endpoint']}, gRPC {d['grpc_endpoint']}, "
              f"control {d['control_admin']}/status", flush=True)
        print(f"running {args.duration_s} s of mixed-tier load (shape {DEMO_SHAPE}: a 2x load step in the middle "
              "third) ...", flush=True)
        notes = ["Local platform on one shared machine: the CPU pool is real; GPU and Inferentia pools are "
                 "emulated (real Triton processes on this CPU, timed to the accelerator's profile)."]
        synthetic = [p.name for p in platform.fleet.pools if p.outputs is EmulatedOutputs.SYNTHETIC]
        if synthetic:
            notes.append(f"SYNTHETIC OUTPUTS from {', '.join(synthetic)} (fleet {args.fleet}): these emulated pools "
                         "answered with zeros of the right shape instead of running the model, so their timing is "
                         "the accelerator profile's and not this CPU's. A timing study of the routing, not of the "
                         "answers; `python -m local_platform demo-routing --fleet fleet.yaml` runs every model for real.")
            print("NOTE: " + notes[-1], flush=True)
        record_run(platform, out / "run", label="demo", shape=DEMO_SHAPE, duration_s=float(args.duration_s),
                   base_users=args.users, notes=tuple(notes))
    finally:
        print("draining and stopping the platform ...", flush=True)
        platform.stop()
    markdown, passed = write_report(out / "run", out)
    markdown += "\n" + traces.finish(out, out / "report.md")  # the slowest gold request's waterfall
    print()
    print(markdown)
    print(f"report: {out / 'report.md'} (plots beside it); run data: {out / 'run'}; "
          f"demo took {time.monotonic() - started:.0f} s")
    if not passed:
        print("DEMO FAILED: not every tier met its SLA target (see the Verdict above).")
    return 0 if passed else 1
