"""What Envoy adds to a KServe v2 gRPC request, and what each part of the shipped chain costs.

Side by side in one run, against one real Triton replica (the local fleet's real CPU pool, serving
``digits_classifier`` and ``text_embedding``):

* ``direct``: the client to Triton's gRPC port;
* ``shipped``: through Envoy configured exactly as the platform ships it: the listeners, routes and
  clusters come from ``xds_server.build_snapshot`` with the control server's own settings
  (``control.server.dataplane_settings``) and the edge parts issue 16 says ship on
  (``benchmarks.xds.shipped_chain``: closed JWT authentication, strict validation, tracing,
  per-tier admission), the bootstrap from ``xds_server.bootstrap``, the worker count the local
  platform gives Envoy (``shared_host_concurrency``);
* one variant per part of the chain with only that part removed (each HTTP filter, each costly HCM
  field such as tracing or access logs), the chain off (router only), stats off, the other worker
  count (``benchmarks.xds.envoy_variants``).  Filters other sessions add to the platform appear here
  without a change to this file.

Every variant is its own Envoy (with its own ADS server), all running at once and idle but for the
phase that loads them, so phases rotate through all paths in each repeat: drift on the shared
machine reaches every path alike.  The figures are the median over repeats of each repeat's own
comparison with that repeat's direct phase, with the min-max spread.  CPU time per request of
Envoy, Triton (with its stub processes) and the client is read from /proc around each phase.

    PYTHONPATH=. .venv/bin/python -m benchmarks.xds.envoy_overhead [--seconds 1.5 --repeats 6]
    (then README.md, summary.json and overhead.png from ``benchmarks.xds.overhead_report``)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import yaml

from benchmarks.common import cpu_idle_settings, cpu_s
from benchmarks.xds.common import percentile
from benchmarks.xds.envoy_variants import Variant, apply, bootstrap_for, http_filters, one_at_a_time
from benchmarks.xds.grpc_loadgen import ClosedLoop, PhaseResult, model_infer_request
from benchmarks.xds.shipped_chain import shipped_chain
from localnet.ports import free_port
from localnet.signals import interrupt_on_stop_signals
from xds_server import EnvoyProcess, PoolEndpoints, RouteWeights, XdsServer, build_snapshot, validate_bootstrap
from xds_server.bootstrap import envoy_bootstrap
from xds_server.envoy_process import shared_host_concurrency
from xds_server.inputs import DataPlaneSettings, Endpoint
from xds_server.naming import GRPC_LISTENER
from xds_server.tracing import with_collector

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("digits_classifier", "text_embedding")
RESULTS = ROOT / "benchmarks" / "results" / "overhead"


# -- CPU accounting from /proc ---------------------------------------------------------------------
def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            kids.setdefault(int(fields[1]), []).append(int(entry))
    return kids


def process_tree(pid: int) -> list[int]:
    kids, tree, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(kids.get(p, []))
    return tree


def _threads(pids: list[int]) -> list[int]:
    tids = []
    for pid in pids:
        try:
            tids += [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
    return tids


def renice(pids: list[int], nice: int) -> None:
    """Every thread of these processes to ``nice`` (Linux schedules threads; new ones inherit it)."""
    for tid in _threads(pids):
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError:
            pass


def pin(pids: list[int], cpus: set[int]) -> None:
    """Every thread of these processes to ``cpus`` (threads created later inherit it)."""
    for tid in _threads(pids):
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            pass


# -- the system under test -------------------------------------------------------------------------
@dataclasses.dataclass
class EnvoyPath:
    variant: Variant
    xds: XdsServer
    envoy: EnvoyProcess
    grpc_port: int

    def stop(self) -> None:
        self.envoy.stop()
        self.xds.stop()


def start_envoy_path(variant: Variant, settings: DataPlaneSettings, pools: list[PoolEndpoints],
                     routes: list[RouteWeights], workdir: Path) -> EnvoyPath:
    """An ADS server and an Envoy serving ``variant`` of the snapshot built from these inputs, on
    listener ports of its own."""
    settings = dataclasses.replace(settings, http_port=free_port(), grpc_port=free_port())
    snapshot = apply(build_snapshot(pools, routes, settings), variant)
    problems = snapshot.consistent()
    if problems:
        raise SystemExit(f"variant {variant.name}: inconsistent snapshot: {problems}")
    xds = XdsServer(port=0)
    xds_port = xds.start()
    slug = variant.name.replace(" ", "_").replace(".", "_")
    path = workdir / f"envoy-{slug}.yaml"
    # The platform's bootstrap, with the collector cluster when the edge traces (xds_server.bootstrap).
    bootstrap = with_collector(envoy_bootstrap(node_id=f"bench-{slug}", xds_port=xds_port), settings.tracing)
    path.write_text(yaml.safe_dump(bootstrap_for(bootstrap, variant), sort_keys=False))
    validate_bootstrap(path)
    envoy = EnvoyProcess(path, concurrency=variant.concurrency, log_path=workdir / f"envoy-{slug}.log")
    xds.set_snapshot(snapshot)
    envoy.start().wait_ready(timeout_s=60)
    if not xds.wait_acked(snapshot.version, timeout_s=30):
        raise SystemExit(f"variant {variant.name}: Envoy did not ACK the snapshot")
    return EnvoyPath(variant, xds, envoy, settings.grpc_port)


def upstream_reuse(path: EnvoyPath) -> dict[str, int]:
    """Connections Envoy opened to Triton's gRPC port, and requests it sent over them (its stats)."""
    totals = {"connections": 0, "requests": 0}
    regex = r"^cluster\.[^.]+--grpc\.upstream_(cx|rq)_total$"
    for line in path.envoy.admin_get("/stats?filter=" + urllib.parse.quote(regex, safe="")).splitlines():
        name, _, value = line.partition(": ")
        key = "connections" if name.endswith("upstream_cx_total") else "requests"
        totals[key] += int(value)
    return totals


def start_triton(workdir: Path) -> tuple[Any, Any, Any]:
    """One replica of the real CPU pool serving both models, from the local fleet's own machinery."""
    from fleet.supervisor import FleetSupervisor
    from model_repository.definitions import load_models
    from router_lib.config import load_fleet

    shutil.copytree(ROOT / "profiles", workdir / "profiles")
    (workdir / "fleet.yaml").write_text(yaml.safe_dump({
        "prices": str(ROOT / "data" / "prices.yaml"), "tiers": str(ROOT / "data" / "tiers.yaml"),
        "profiles": "profiles",
        "pools": [{"name": "cpu", "accelerator": "cpu", "instance_type": "c7g.xlarge", "replicas": 1,
                   "mode": "real", "models": list(MODELS)}],
    }))
    models = load_models()
    fleet = load_fleet(workdir / "fleet.yaml", tuple(models))
    supervisor = FleetSupervisor(fleet, models, ROOT / "build" / "models", workdir / "run")
    supervisor.start()
    (replica,) = supervisor.replicas("cpu")
    return supervisor, fleet, replica


# -- one run -------------------------------------------------------------------------------------------
def summarise(phases: list[dict[str, Any]], paths: list[str]) -> dict[str, Any]:
    """Per path: medians over repeats (and min, max) of p50/p99, req/s, the comparison with the same
    repeat's direct phase, and CPU per request."""
    out: dict[str, Any] = {}
    direct = {p["repeat"]: p for p in phases if p["path"] == "direct"}
    for path in paths:
        mine = [p for p in phases if p["path"] == path]
        rows: dict[str, list[float]] = {k: [] for k in (
            "p50_ms", "p99_ms", "req_per_s", "added_p50_ms", "throughput_x_direct",
            "envoy_cpu_us_per_req", "triton_cpu_us_per_req", "client_cpu_us_per_req")}
        for p in mine:
            d = direct[p["repeat"]]
            rows["p50_ms"].append(p["p50_ms"])
            rows["p99_ms"].append(p["p99_ms"])
            rows["req_per_s"].append(p["req_per_s"])
            rows["added_p50_ms"].append(p["p50_ms"] - d["p50_ms"])
            rows["throughput_x_direct"].append(p["req_per_s"] / d["req_per_s"])
            for k in ("envoy_cpu_us_per_req", "triton_cpu_us_per_req", "client_cpu_us_per_req"):
                rows[k].append(p[k])
        out[path] = {k: {"median": round(statistics.median(v), 4), "min": round(min(v), 4), "max": round(max(v), 4)}
                     for k, v in rows.items()}
        out[path]["requests"] = sum(p["requests"] for p in mine)
        out[path]["errors"] = sum(p["errors"] for p in mine)
        errors = [p["first_error"] for p in mine if p["first_error"]]
        if errors:
            out[path]["first_error"] = errors[0]
    return out


def measure_model(model: str, *, triton_grpc: str, triton_pid: int, envoys: list[EnvoyPath], seconds: float,
                  repeats: int, connections: int, progress: Callable[[str], None],
                  credentials: tuple[tuple[str, str], ...] = (), tier: str = "gold") -> dict[str, Any]:
    payload = model_infer_request(model)
    # The tier header as a gold client sends it; x-model for the variant without the Lua filter
    # (with it, the filter removes the client's value and writes the body's, the same name here).
    # The credentials (a bearer token) go to Envoy only: Triton itself authenticates nobody.
    metadata = (("x-sla-tier", tier), ("x-model", model))
    loops: dict[str, tuple[ClosedLoop, list[int]]] = {"direct": (ClosedLoop(triton_grpc, payload, metadata, connections), [])}
    for e in envoys:
        loops[e.variant.name] = (ClosedLoop(f"127.0.0.1:{e.grpc_port}", payload, (*metadata, *credentials), connections),
                                 [e.envoy.pid or 0])
    for name, (loop, _) in loops.items():
        # A first request can outlive a tight tier's per-try timeout on a busy machine (gold: 50 ms,
        # cold Triton); a path that never answers in 10 tries is broken and stops the benchmark.
        for attempt in range(10):
            try:
                loop.check()
                break
            except grpc.RpcError as exc:
                if attempt == 9:
                    raise SystemExit(f"{model} via {name}: the path does not serve: {exc}") from exc
                time.sleep(0.5)
        loop.run(0.5)  # warm up: connections, Envoy's upstream pool, Triton's first runs
    names = list(loops)
    phases = []
    for repeat in range(repeats):
        order = names[repeat % len(names):] + names[:repeat % len(names)]  # rotate: no path always first
        for name in order:
            loop, envoy_pids = loops[name]
            triton_pids = process_tree(triton_pid)
            e0, t0 = cpu_s(envoy_pids), cpu_s(triton_pids)
            result: PhaseResult = loop.run(seconds)
            e1, t1 = cpu_s(envoy_pids), cpu_s(triton_pids)
            n = max(result.requests, 1)
            phases.append({
                "repeat": repeat, "path": name, "requests": result.requests, "errors": result.errors,
                "first_error": result.first_error,
                "req_per_s": result.req_per_s,
                "p50_ms": percentile(result.latencies_s, 50) * 1000 if result.latencies_s else float("nan"),
                "p99_ms": percentile(result.latencies_s, 99) * 1000 if result.latencies_s else float("nan"),
                "envoy_cpu_us_per_req": (e1 - e0) / n * 1e6,
                "triton_cpu_us_per_req": (t1 - t0) / n * 1e6,
                "client_cpu_us_per_req": result.client_cpu_s / n * 1e6,
                "load_average_1m": os.getloadavg()[0],
            })
            last = phases[-1]
            progress(f"{model} x{connections} repeat {repeat + 1}/{repeats} {name:>28}: {last['req_per_s']:7.1f} req/s "
                     f"p50 {last['p50_ms']:.3f} ms, envoy {last['envoy_cpu_us_per_req']:.0f} us/req")
    for loop, _ in loops.values():
        loop.close()
    return {"summary": summarise(phases, names), "phases": phases}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seconds", type=float, default=3.0, help="per phase")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--connections", type=int, default=4, help="client connections, one request in flight each")
    parser.add_argument("--latency-connections", type=int, default=1,
                        help="also compare direct and shipped at this many connections (0: skip)")
    parser.add_argument("--concurrency", type=int, default=shared_host_concurrency(),
                        help="Envoy worker threads of the shipped variant (default: the local platform's, "
                             "xds_server.envoy_process.shared_host_concurrency)")
    for part in ("auth", "validation", "tracing"):
        parser.add_argument(f"--no-{part}", action="store_true", help=f"build the shipped chain without {part}")
    parser.add_argument("--tier-timeouts", type=float, default=2.0, metavar="FACTOR",
                        help="per-try timeouts = each tier's bound x FACTOR, as make up runs them (0: off)")
    parser.add_argument("--admission", action="store_true",
                        help="add per-tier admission (priority writing and shed mapping), which make up does not ship")
    parser.add_argument("--tier", default="gold", help="the x-sla-tier every request asks for")
    parser.add_argument("--nice", type=int, default=0,
                        help="run Triton, every Envoy and the client at this nice value (e.g. -5 as root): on a "
                             "machine shared with other work, the measured processes then get the CPU first")
    parser.add_argument("--envoy-core", type=int, default=None, metavar="CPU",
                        help="the cluster's topology on one machine: every Envoy on this CPU alone, Triton and the "
                             "client on the others (direct and via Envoy alike), so Envoy's CPU is not taken from "
                             "Triton; default: every process on every CPU")
    parser.add_argument("--client-core", type=int, default=None, metavar="CPU",
                        help="with --envoy-core: the client on this CPU (e.g. Envoy's), Triton on the others, so "
                             "the direct path crosses cores as the Envoy path does (in the cluster both cross the "
                             "network); default: the client with Triton")
    parser.add_argument("--only", default="", help="comma-separated variant names to run (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.client_core is not None and args.envoy_core is None:
        parser.error("--client-core needs --envoy-core (without it every process runs on every CPU)")
    models = [m for m in args.models.split(",") if m]
    workdir = Path(tempfile.mkdtemp(prefix="envoy-overhead-"))
    started = time.time()

    def progress(line: str) -> None:
        print(f"[{time.time() - started:6.1f}s] {line}", flush=True)

    idle = cpu_idle_settings()  # read before: a diagnostic may change it around a run (halt_poll_diagnostic)
    supervisor, fleet, replica = start_triton(workdir)
    envoys: list[EnvoyPath] = []
    shipped = None
    try:
        pool = PoolEndpoints(pool="cpu", accelerator="cpu", emulated=False, models=MODELS,
                             replicas=(Endpoint("127.0.0.1", replica.http_port, replica.grpc_port),))
        from model_repository.definitions import load_models

        shipped = shipped_chain(fleet, {m: d for m, d in load_models().items() if m in MODELS}, workdir,
                                auth=not args.no_auth, validation=not args.no_validation,
                                tracing=not args.no_tracing, tier_timeouts=args.tier_timeouts or None,
                                admission=args.admission)
        settings, chain_parts = shipped.settings, shipped.parts
        progress(f"shipped parts: {', '.join(chain_parts) or 'none'}")
        routes = [RouteWeights.of(m, t, (("cpu", settings.total_weight),)) for m in MODELS for t in settings.tiers]
        reference = build_snapshot([pool], routes, settings)
        chain = http_filters(reference, GRPC_LISTENER)
        progress(f"shipped gRPC listener chain: {chain}")
        variants = one_at_a_time(reference, GRPC_LISTENER, concurrency=args.concurrency, bootstrap={})
        if args.only:
            wanted = {"shipped", *args.only.split(",")}
            variants = [v for v in variants if v.name in wanted]
        for v in variants:
            envoys.append(start_envoy_path(v, settings, [pool], routes, workdir))
            progress(f"envoy '{v.name}' ready (pid {envoys[-1].envoy.pid}, {v.concurrency} workers)")
        if args.nice:
            renice([*process_tree(replica.pid), os.getpid(), *(e.envoy.pid or 0 for e in envoys)], args.nice)
        if args.envoy_core is not None:
            cpus = set(range(os.cpu_count() or 1))
            if args.envoy_core not in cpus or len(cpus) < 2:
                raise SystemExit(f"--envoy-core {args.envoy_core}: needs one of CPUs {sorted(cpus)} and at least one more")
            client = {args.client_core} if args.client_core is not None else cpus - {args.envoy_core}
            triton = cpus - {args.envoy_core} - ({args.client_core} if args.client_core is not None else set())
            if not client <= cpus or not triton:
                raise SystemExit(f"--client-core {args.client_core}: needs one of CPUs {sorted(cpus)} and one left "
                                 "for Triton besides Envoy's and the client's")
            pin([e.envoy.pid or 0 for e in envoys], {args.envoy_core})
            pin(process_tree(replica.pid), triton)
            pin([os.getpid()], client)
            progress(f"Envoy pinned to CPU {args.envoy_core}, Triton to {sorted(triton)}, the client to {sorted(client)}")
        by_model = {}
        for model in models:
            by_model[f"{model} x{args.connections}"] = measure_model(
                model, triton_grpc=f"127.0.0.1:{replica.grpc_port}", triton_pid=replica.pid, envoys=envoys,
                seconds=args.seconds, repeats=args.repeats, connections=args.connections, progress=progress,
                credentials=shipped.client_metadata, tier=args.tier)
            if args.latency_connections:
                # The hop alone, without queueing behind the client's other requests: direct vs shipped only.
                by_model[f"{model} x{args.latency_connections}"] = measure_model(
                    model, triton_grpc=f"127.0.0.1:{replica.grpc_port}", triton_pid=replica.pid,
                    envoys=[e for e in envoys if e.variant.name == "shipped"], seconds=args.seconds,
                    repeats=args.repeats, connections=args.latency_connections, progress=progress,
                    credentials=shipped.client_metadata, tier=args.tier)
        reuse = {e.variant.name: upstream_reuse(e) for e in envoys}
    finally:
        for e in envoys:
            e.stop()
        if shipped is not None:
            shipped.stop()
        supervisor.stop()
    document = {
        "benchmark": "envoy_overhead",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, shared with other sessions' work",
        "command": "PYTHONPATH=. .venv/bin/python -m benchmarks.xds.envoy_overhead "
                   f"--seconds {args.seconds:g} --repeats {args.repeats} --connections {args.connections} "
                   f"--latency-connections {args.latency_connections} --tier {args.tier} "
                   f"--concurrency {args.concurrency}" + "".join(f" --no-{p}" for p in ("auth", "validation", "tracing")
                           if getattr(args, f"no_{p}")) + f" --tier-timeouts {args.tier_timeouts:g}"
                   + (" --admission" if args.admission else "") + (f" --nice {args.nice}" if args.nice else "")
                   + (f" --envoy-core {args.envoy_core}" if args.envoy_core is not None else "")
                   + (f" --client-core {args.client_core}" if args.client_core is not None else "")
                   + (f" --only '{args.only}'" if args.only else "") + (f" --out {args.out}" if args.out != RESULTS else ""),
        "shipped_grpc_chain": chain,
        "variants": [{"name": v.name, "concurrency": v.concurrency, "without_filters": sorted(v.without_filters),
                      "without_hcm_fields": sorted(v.without_hcm_fields),
                      "without_route_parts": sorted(v.without_route_parts),
                      "without_cluster_fields": sorted(v.without_cluster_fields), "bootstrap_change": v.bootstrap_change,
                      "note": v.note} for v in variants],
        "seconds_per_phase": args.seconds, "repeats": args.repeats, "connections": args.connections, "tier": args.tier,
        "nice": args.nice, "shipped_parts": list(chain_parts), "envoy_core": args.envoy_core,
        "client_core": args.client_core, "cpu_idle": idle,
        "upstream_connections": reuse,
        "models": by_model,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "raw.json").write_text(json.dumps(document, indent=1) + "\n")
    progress(f"wrote {args.out / 'raw.json'}")
    from benchmarks.xds import overhead_report

    overhead_report.main([str(args.out)])  # README.md, summary.json, overhead.png beside it


if __name__ == "__main__":
    interrupt_on_stop_signals()  # Triton/Envoy started here are stopped on SIGTERM or SIGHUP too (localnet.signals)
    main()
