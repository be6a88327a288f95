"""``python -m local_platform up | status | demo``: the local platform for people.

- ``up``: start every pool, the control server and Envoy; print the endpoints and a status table;
  serve until Ctrl-C (or SIGTERM), saying whenever a process dies and comes back; then drain every
  pool, stop its Tritons, then Envoy, then the control server.
- ``status``: the table for a running platform (pools, replicas, ports, health, models, real or
  emulated, and the weights per model and tier), and every process's restarts and last exit.
- ``demo``: ``up`` plus a short mixed-tier load and a report (see ``locustfiles/`` and ``demo.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fleet.restarts import ProcessEvent, read_processes
from fleet.triton_process import PROJECT_ROOT
from local_platform.platform import LocalPlatform, PlatformPorts, http_json
from localnet.signals import interrupt_on_stop_signals, on_stop_signals, say

DEFAULT_WORKDIR = PROJECT_ROOT / "build" / "run"


def status_table(status: dict[str, Any]) -> str:
    lines = [f"{'pool':<10} {'accelerator':<11} {'mode':<9} {'$/h':>6} {'ready':>5}  {'replicas (http/grpc/metrics)':<34} models"]
    for p in status["pools"]:
        reps = ", ".join(f"{r['http_port']}/{r['grpc_port']}/{r['metrics_port']}{'' if r['alive'] else ' DOWN'}"
                         for r in p["replicas"]) or "-"
        mode = p["mode"].upper() if p["emulated"] else p["mode"]
        flag = " (draining)" if p.get("draining") else ""
        lines.append(f"{p['name']:<10} {p['accelerator']:<11} {mode:<9} {p['price_per_hour_usd']:>6.3f} "
                     f"{p['ready_replicas']:>5}  {reps:<34} {', '.join(p['models'])}{flag}")
    lines.append("")
    lines.append("routes (weights per pool; reasons in /status):")
    for r in status["routes"]:
        ws = "  ".join(f"{pool}={w}" for pool, w in sorted(r["weights"].items()))
        lines.append(f"  {r['model']:<18} {r['tier']:<7} {ws}")
    for rel in status.get("releases") or []:  # canary releases (docs/releases.md)
        shares = ", ".join(f"{t} {p:g}%" for t, p in rel["candidate_weight_pct"].items())
        why = rel.get("rollback_reason") or rel.get("holding") or rel.get("reason") or ""
        lines.append(f"release {rel['name']}: {rel['model']} v{rel['stable_version']} -> v{rel['candidate_version']} "
                     f"{rel['phase']} stage {rel['stage']}/{rel['last_stage']}: candidate {shares}" + (f" ({why})" if why else ""))
    for b in status.get("backlog") or []:  # queued work capacity plans for (router_lib.backlog)
        waiting = f"{b['rows_waiting']} rows waiting, " if b.get("rows_waiting") is not None else ""
        lines.append(f"backlog {b['source']}: {b['model']}/{b['tier']} {waiting}asks {b['rows_per_s']:g} rows/s "
                     f"(expires in {b['expires_in_s']:g} s unless refreshed)")
    lines.append(f"snapshot {status.get('snapshot_version')}; last error: {status.get('last_error') or 'none'}")
    lines.append("EMULATED pools are real Triton processes on this CPU timed to the accelerator's profile.")
    return "\n".join(lines)


def _ago(now: float, then: float | None) -> str:
    if then is None:
        return "-"
    seconds = max(0.0, now - then)
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def processes_table(processes: list[dict[str, Any]], now: float) -> str:
    """Every supervised process: state, pid, restarts, last unplanned exit and when it came back."""
    lines = [f"{'process':<16} {'kind':<15} {'state':<10} {'pid':>7} {'restarts':>8}  last exit"]
    for p in processes:
        if p["kind"] == "pool":
            continue
        last = "-"
        if p.get("last_exit"):
            last = f"{p['last_exit']} {_ago(now, p.get('last_exit_unix_s'))}"
            if p.get("last_restart_unix_s"):
                last += f", back {_ago(now, p['last_restart_unix_s'])}"
        if p.get("note") and p["state"] in ("restarting", "failed"):
            last += f" ({p['note']})"
        lines.append(f"{p['name']:<16} {p['kind']:<15} {p['state']:<10} {p.get('pid') or '-':>7} "
                     f"{p.get('restarts', 0):>8}  {last}")
    return "\n".join(lines)


class EventPrinter:
    """What ``up`` says on the terminal about processes once it serves: deaths and restarts always;
    on the way out, each pool drained and stopped, then Envoy, then the control server."""

    QUIET = {"started", "stopping"}

    def __init__(self) -> None:
        self.serving = False

    def __call__(self, ev: ProcessEvent) -> None:
        if not self.serving or ev.event in self.QUIET or (ev.kind == "triton" and ev.event == "stopped"):
            return
        stamp = time.strftime("%H:%M:%S", time.localtime(ev.unix_s))
        who = f"pool {ev.name}" if ev.kind == "pool" else ev.name
        pid = f" (pid {ev.pid})" if ev.pid and ev.event in ("died", "hung", "restarted") else ""
        detail = f": {ev.detail}" if ev.detail and ev.event not in ("stopped",) else ""
        print(f"{stamp} {who} {ev.event}{pid}{detail}", flush=True)


def cmd_up(args: argparse.Namespace) -> int:
    platform = LocalPlatform(fleet_path=args.fleet, workdir=args.workdir, artifacts=args.artifacts,
                             ports=PlatformPorts(http=args.http_port, grpc=args.grpc_port),
                             with_prometheus=args.prometheus and shutil.which("prometheus") is not None,
                             mtls_dir=None if args.no_mtls else args.mtls_dir,
                             tier_timeouts=args.tier_timeouts or None)
    printer = EventPrinter()
    platform.lifecycle.add_listener(printer)
    # The printer says it once; the supervisors' own warnings would repeat it on the terminal.
    for name in ("fleet.supervisor", "local_platform.supervised"):
        logging.getLogger(name).setLevel(logging.ERROR)
    stop = threading.Event()
    signals_seen: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        # Every child runs in its own session: this is the only process the terminal's Ctrl-C
        # reaches, whichever process group it is sent to, so the shutdown order is ours.
        # SIGHUP (the terminal was closed) too: the platform stops instead of dying under its
        # children (localnet.signals); under nohup SIGHUP stays ignored.
        signals_seen.append(signum)
        stop.set()
        if len(signals_seen) == 1:
            say(f"\n{signal.Signals(signum).name}: draining every pool, then stopping Envoy and the control "
                "server ...")
        else:
            say("still stopping (each pool is drained, then its Tritons exit within seconds) ...")

    on_stop_signals(on_signal, with_sigint=True)
    print("starting the local platform (Triton pools, control server, Envoy) ...", flush=True)
    platform.start()  # stops what it started if it fails
    try:
        if not stop.is_set():
            d = platform.describe()
            print(f"\nKServe v2 HTTP: http://{d['http_endpoint']}   gRPC: {d['grpc_endpoint']}")
            print(f"control server: {d['control_admin']}/status   Envoy admin: {d['envoy_admin']}")
            print("mTLS Envoy <-> control server and Envoy <-> Triton gRPC: "
                  + (f"on, certificates in {d['mtls']} (docs/security.md)" if d.get("mtls") else "off (--no-mtls)"))
            if d["prometheus"]:
                print(f"Prometheus: {d['prometheus']}  (dashboards as PNG: make dashboards-png PROMETHEUS_URL={d['prometheus']})")
            print("send `x-sla-tier: gold|silver|bronze` (default silver)\n")
            print(status_table(platform.status()))
            print(f"\nprocesses are supervised (restarted with backoff); `make status` shows restarts. "
                  f"Events: {platform.workdir / 'events.jsonl'}")
            print("serving until Ctrl-C ...", flush=True)
            printer.serving = True
            stop.wait()
    finally:
        printer.serving = True
        platform.stop()
    print("stopped: every pool drained and stopped, then Envoy, then the control server", flush=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    info_path = args.workdir / "platform.json"
    processes = read_processes(args.workdir)
    if not info_path.exists():
        print("no local platform is running (start one with `make up`)", file=sys.stderr)
        if processes:
            print(f"the last one's processes ({args.workdir / 'processes.json'}):\n"
                  f"{processes_table(processes, time.time())}", file=sys.stderr)
        return 1
    info = json.loads(info_path.read_text())
    print(f"HTTP {info['http_endpoint']}  gRPC {info['grpc_endpoint']}  control {info['control_admin']}")
    if info.get("mtls"):
        from xds_server.certs import status_line

        print(status_line(Path(info["mtls"])))
    code = 0
    try:
        status = http_json(f"{info['control_admin']}/status", timeout_s=5)
        print(status_table(status))
    except OSError as e:
        print(f"the control server at {info['control_admin']} does not answer: {e} "
              "(it is supervised: see its state below)", file=sys.stderr)
        code = 1
    print()
    print(processes_table(processes, time.time()))
    return code


def cmd_demo_routing(args: argparse.Namespace) -> int:
    from local_platform.demo import run_demo

    interrupt_on_stop_signals()  # its pools, Envoy and control server are stopped on SIGTERM or SIGHUP too
    return run_demo(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from local_platform.capacity_demo import run_demo

    interrupt_on_stop_signals()  # its fleets' processes are stopped on SIGTERM or SIGHUP too
    return run_demo(args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m local_platform", description=__doc__.splitlines()[0])
    ap.add_argument("--log-level", default="WARNING")
    sub = ap.add_subparsers(dest="cmd", required=True)
    demo = sub.add_parser("demo", help="capacity follows demand: fleets side by side, what each cost")
    demo.set_defaults(fn=cmd_demo)
    from local_platform.capacity_demo import add_arguments

    add_arguments(demo)
    for name, fn in (("up", cmd_up), ("status", cmd_status), ("demo-routing", cmd_demo_routing)):
        p = sub.add_parser(name)
        p.set_defaults(fn=fn)
        if name in ("up", "status"):
            p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                           help="the platform's work folder (runtime file, state, logs, processes.json)")
        if name == "up":
            p.add_argument("--no-prometheus", dest="prometheus", action="store_false",
                           help="do not start Prometheus even when it is installed")
            p.add_argument("--artifacts", type=Path, default=PROJECT_ROOT / "build" / "models",
                           help="the built models (make models)")
            p.add_argument("--mtls-dir", type=Path, default=PROJECT_ROOT / "build" / "certs",
                           help="mTLS between Envoy, the control server and Triton's gRPC ports with these "
                                "certificates (made or renewed if needed: make certs); docs/security.md")
            p.add_argument("--no-mtls", action="store_true",
                           help="plaintext between the platform's processes (every port stays on loopback)")
            p.add_argument("--tier-timeouts", type=float, default=2.0, metavar="FACTOR",
                           help="per-try timeout of each tier = its p99 bound x FACTOR, gold hedged, hung replicas "
                                "ejected (docs/overload.md); 0: one route timeout per request")
        if name != "status":
            p.add_argument("--fleet", type=Path, default=PROJECT_ROOT / "fleet.yaml")
            p.add_argument("--http-port", type=int, default=8000)
            p.add_argument("--grpc-port", type=int, default=8001)
        if name == "demo-routing":
            p.add_argument("--duration-s", type=int, default=90)
            p.add_argument("--users", type=int, default=6,
                           help="locust users at base load (12 is about 40 req/s; the step doubles it)")
            p.add_argument("--out", type=Path, default=PROJECT_ROOT / "build" / "demo")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.fn(args))


if __name__ == "__main__":
    raise SystemExit(main())
