"""``python -m local_platform up | status | demo``: the local platform for people.

- ``up``: start every pool, the control server and Envoy; print the endpoints and a status table;
  serve until Ctrl-C, then drain and stop everything.
- ``status``: the table for a running platform (pools, replicas, ports, health, models, real or
  emulated, and the weights per model and tier).
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
from pathlib import Path
from typing import Any

from fleet.triton_process import PROJECT_ROOT
from local_platform.platform import LocalPlatform, PlatformPorts, http_json


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
    lines.append(f"snapshot {status.get('snapshot_version')}; last error: {status.get('last_error') or 'none'}")
    lines.append("EMULATED pools are real Triton processes on this CPU timed to the accelerator's profile.")
    return "\n".join(lines)


def cmd_up(args: argparse.Namespace) -> int:
    platform = LocalPlatform(fleet_path=args.fleet, ports=PlatformPorts(http=args.http_port, grpc=args.grpc_port),
                             with_prometheus=shutil.which("prometheus") is not None)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("starting the local platform (Triton pools, control server, Envoy) ...", flush=True)
    platform.start()
    try:
        d = platform.describe()
        print(f"\nKServe v2 HTTP: http://{d['http_endpoint']}   gRPC: {d['grpc_endpoint']}")
        print(f"control server: {d['control_admin']}/status   Envoy admin: {d['envoy_admin']}")
        if d["prometheus"]:
            print(f"Prometheus: {d['prometheus']}  (dashboards as PNG: make dashboards-png PROMETHEUS_URL={d['prometheus']})")
        print("send `x-sla-tier: gold|silver|bronze` (default silver)\n")
        print(status_table(platform.status()))
        print("\nserving until Ctrl-C ...", flush=True)
        stop.wait()
    finally:
        print("draining and stopping ...", flush=True)
        platform.stop()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    info_path = PROJECT_ROOT / "build" / "run" / "platform.json"
    if not info_path.exists():
        print("no local platform is running (start one with `make up`)", file=sys.stderr)
        return 1
    info = json.loads(info_path.read_text())
    try:
        status = http_json(f"{info['control_admin']}/status", timeout_s=5)
    except OSError as e:
        print(f"the control server at {info['control_admin']} does not answer: {e}", file=sys.stderr)
        return 1
    print(f"HTTP {info['http_endpoint']}  gRPC {info['grpc_endpoint']}  control {info['control_admin']}")
    print(status_table(status))
    return 0


def cmd_demo_routing(args: argparse.Namespace) -> int:
    from local_platform.demo import run_demo

    return run_demo(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from local_platform.capacity_demo import run_demo

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
