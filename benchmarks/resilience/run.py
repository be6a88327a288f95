"""Resilience benchmark: overload by tier, priority sharing, a hung replica, per-try timeouts vs
hedging, and the cost of the edge's admission filter.  Writes benchmarks/results/resilience/.

    PYTHONPATH=. .venv/bin/python -m benchmarks.resilience.run [--repeats 3] [--quick]

Real Envoy, real ADS server, real Triton replicas of emulated accelerator pools (synthetic
outputs, time dilated x10: service times and tier bounds alike; see harness.py); the admission
cost is measured against the small KServe fakes so the upstream adds as little as possible.
Each figure is the median of ``--repeats`` runs with its min and max.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import requests
from tritonclient.grpc import service_pb2, service_pb2_grpc

from benchmarks.common import ROOT, write_results
from benchmarks.resilience.harness import (
    MODEL,
    Bed,
    bound_ms,
    capacity_per_s,
    median_spread,
    open_loop,
    summarize,
    within_bound,
)
from localnet.ports import free_port
from localnet.signals import interrupt_on_stop_signals
from router_lib.config import load_tiers
from router_lib.priority import tier_priorities
from xds_server import DataPlaneSettings, EnvoyProcess, RouteWeights, XdsServer, write_envoy_bootstrap
from xds_server.inputs import OverloadSettings, RetrySettings
from xds_server.naming import cluster_name
from xds_server.testbed import DataPlane, FakePool

OUT = ROOT / "benchmarks" / "results" / "resilience"
WARMUP_S = 1.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- overload and priority ----------------------------------------------------------------------

def overload_runs(bed: Bed, repeats: int, duration_s: float) -> dict[str, Any]:
    capacity = capacity_per_s(bed, "shared")
    rates = {"gold": 0.45 * capacity, "silver": 1.05 * capacity, "bronze": 1.5 * capacity}
    runs = []
    for i in range(repeats):
        bed.publish({t: "shared" for t in ("gold", "silver", "bronze")})
        open_loop(bed.url, {"gold": 5.0}, 0.5, seed=900 + i)
        outcomes = open_loop(bed.url, rates, duration_s, seed=10 + i)
        tiers = summarize(outcomes, warmup_s=WARMUP_S)
        runs.append({"tiers": {t: s.as_dict() for t, s in tiers.items()},
                     "gold_within_bound": within_bound(tiers["gold"], outcomes, bound_ms(bed, "gold") or 0, WARMUP_S),
                     "served_per_s": sum(s.ok for s in tiers.values()) / (duration_s - WARMUP_S)})
        log(f"3x overload run {i + 1}/{repeats}: gold p99 {tiers['gold'].p99_ms} ms, shed gold/silver/bronze "
            f"{tiers['gold'].shed_fraction:.2f}/{tiers['silver'].shed_fraction:.2f}/{tiers['bronze'].shed_fraction:.2f}")
    return {"capacity_per_s": capacity, "rates_per_s": rates, "duration_s": duration_s, "runs": runs}


def priority_vs_fifo_runs(bed: Bed, repeats: int, duration_s: float) -> dict[str, Any]:
    capacity = capacity_per_s(bed, "shared")
    rates = {"gold": 0.2 * capacity, "silver": 1.2 * capacity}
    out: dict[str, Any] = {"rates_per_s": rates, "duration_s": duration_s, "fifo": [], "priority": []}
    for i in range(repeats):
        for label, pool in (("fifo", "fifo"), ("priority", "shared")):
            bed.publish({t: pool for t in ("gold", "silver", "bronze")})
            open_loop(bed.url, {"gold": 5.0}, 0.5, seed=800 + i)
            outcomes = open_loop(bed.url, rates, duration_s, seed=20 + i)
            tiers = summarize(outcomes, warmup_s=WARMUP_S)
            out[label].append({"tiers": {t: s.as_dict() for t, s in tiers.items() if s.sent},
                               "gold_within_bound": within_bound(tiers["gold"], outcomes, bound_ms(bed, "gold") or 0,
                                                                 WARMUP_S)})
            log(f"silver load on {label} run {i + 1}/{repeats}: gold p99 {tiers['gold'].p99_ms} ms, "
                f"within bound {out[label][-1]['gold_within_bound']:.3f}")
    return out


# -- hung replica: no per-try timeout vs per-try retry vs per-try hedge --------------------------

def _ejected(bed: Bed, port: int) -> bool:
    prefix = f"{cluster_name(MODEL, 'pair', 'http')}::127.0.0.1:{port}::health_flags::"
    return any(line.startswith(prefix) and "failed_outlier_check" in line
               for line in bed.envoy.admin_get("/clusters").splitlines())  # type: ignore[union-attr]


def _wait_uneject(bed: Bed, port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _ejected(bed, port) and time.monotonic() < deadline:
        time.sleep(0.2)


def hung_runs(bed: Bed, repeats: int, duration_s: float) -> dict[str, Any]:
    base = bed.settings
    gold_ms = base.retry.per_try_timeout_ms("gold")
    # "before" last: its stuck requests (held until the client gives up) leave the replica a
    # backlog to drain after SIGCONT, which would get it ejected before the next variant's SIGSTOP.
    variants = {
        "per-try timeout, retry": dataclasses.replace(base.retry, hedge_tiers=()),
        "per-try timeout, hedge": dataclasses.replace(base.retry, hedge_tiers=("gold",)),
        "no per-try timeout (before)": dataclasses.replace(base.retry, per_try_timeouts_ms=(), hedge_tiers=()),
    }
    rate = 0.6 * capacity_per_s(bed, "pair")
    out: dict[str, Any] = {"rate_per_s": rate, "duration_s": duration_s, "gold_per_try_ms": gold_ms, "variants": {}}
    for name, retry in variants.items():
        runs = []
        for i in range(repeats):
            bed.publish({t: "pair" for t in ("gold", "silver", "bronze")}, dataclasses.replace(base, retry=retry))
            hung = bed.supervisor.replicas("pair")[1]
            _wait_uneject(bed, hung.http_port)
            open_loop(bed.url, {"gold": rate}, 1.0, seed=700 + i)
            marks: dict[str, float] = {}

            def hang(pid: int = hung.pid, port: int = hung.http_port, marks: dict[str, float] = marks) -> None:
                time.sleep(1.5)
                os.kill(pid, signal.SIGSTOP)
                marks["stopped"] = time.monotonic()
                deadline = time.monotonic() + duration_s
                while time.monotonic() < deadline:
                    if "ejected" not in marks and _ejected(bed, port):
                        marks["ejected"] = time.monotonic()
                    time.sleep(0.01)

            watcher = threading.Thread(target=hang)
            watcher.start()
            try:
                outcomes = open_loop(bed.url, {"gold": rate}, duration_s, seed=30 + i, timeout_s=30.0)
            finally:
                watcher.join()
                os.kill(hung.pid, signal.SIGCONT)  # type: ignore[arg-type]
            gold = summarize(outcomes)["gold"]
            ok = [o.latency_ms for o in outcomes if o.status == 200]
            # "failed" here: no answer before the client's 30 s timeout (held by the hung replica).
            runs.append({"gold": gold.as_dict(), "max_ms": round(max(ok), 1) if ok else None,
                         "gold_within_bound": within_bound(gold, outcomes, bound_ms(bed, "gold") or 0),
                         "ejection_ms": round((marks["ejected"] - marks["stopped"]) * 1000, 1)
                         if "ejected" in marks else None})
            log(f"hung replica, {name}, run {i + 1}/{repeats}: gold failed {gold.failed}, p99 {gold.p99_ms} ms, "
                f"max {runs[-1]['max_ms']} ms, ejected after {runs[-1]['ejection_ms']} ms")
        out["variants"][name] = runs
    bed.publish({t: "pair" for t in ("gold", "silver", "bronze")}, base)
    return out


# -- the admission filter's cost per request ------------------------------------------------------

def _plane(settings: DataPlaneSettings) -> DataPlane:
    xds = XdsServer(port=0)
    xds.start()
    workdir = Path(tempfile.mkdtemp(prefix="admission-cost-"))
    plane = DataPlane({"gpu": FakePool.start("gpu", (MODEL,))}, settings, xds, None, workdir)  # type: ignore[arg-type]
    routes = [RouteWeights.of(MODEL, t, (("gpu", 100),)) for t in ("gold", "silver", "bronze")]
    plane.xds.wait_acked(plane.publish(routes), timeout_s=10)
    plane.envoy = EnvoyProcess(write_envoy_bootstrap(workdir / "envoy.yaml", node_id="cost", xds_port=xds.port),
                               concurrency=1, log_path=workdir / "envoy.log").start()
    plane.envoy.wait_ready(timeout_s=30)
    return plane


def _latencies_ms(plane: DataPlane, proto: str, n: int) -> list[float]:
    body = {"inputs": [{"name": "float_input", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}
    out = []
    if proto == "http":
        with requests.Session() as session:
            url = f"http://{plane.http_url}/v2/models/{MODEL}/infer"
            for _ in range(n):
                t = time.perf_counter()
                session.post(url, json=body, headers={"x-sla-tier": "bronze"}, timeout=10).raise_for_status()
                out.append((time.perf_counter() - t) * 1000)
        return out
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.raw_input_contents.append(np.zeros(64, np.float32).tobytes())
    with grpc.insecure_channel(plane.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(n):
            t = time.perf_counter()
            stub.ModelInfer(request, metadata=[("x-sla-tier", "bronze")], timeout=10)
            out.append((time.perf_counter() - t) * 1000)
    return out


def admission_cost(repeats: int, n: int) -> dict[str, Any]:
    """Sequential requests through Envoy with the admission filter off and on, interleaved, each
    against a fresh Envoy (same upstream kind) so neither runs warmer."""
    levels = tuple(sorted(tier_priorities(load_tiers(ROOT / "data" / "tiers.yaml")).by_tier().items()))
    results: dict[str, Any] = {}
    for proto in ("http", "grpc"):
        per: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
        for i in range(repeats):
            for label in ("off", "on"):
                overload = OverloadSettings(priority_levels=levels) if label == "on" else OverloadSettings()
                plane = _plane(DataPlaneSettings(http_port=free_port(), grpc_port=free_port(), overload=overload,
                                                 retry=RetrySettings()))
                try:
                    _latencies_ms(plane, proto, 200)  # warm
                    values = _latencies_ms(plane, proto, n)
                finally:
                    plane.stop()
                per[label].append({"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99))})
                log(f"admission cost {proto} {label} run {i + 1}/{repeats}: p50 {per[label][-1]['p50_ms']:.3f} ms")
        deltas = [on["p50_ms"] - off["p50_ms"] for on, off in zip(per["on"], per["off"], strict=True)]
        results[proto] = {"off": per["off"], "on": per["on"], "p50_added_ms": median_spread(deltas)}
    return results


def _section(run: Any, *args: Any) -> dict[str, Any]:
    """A section's results with when it ran and how busy this shared machine was meanwhile."""
    started, load_before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), os.getloadavg()[0]
    out = run(*args)
    out["measured"] = {"started_utc": started, "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    return out


# -- report ---------------------------------------------------------------------------------------

def _ms(values: list[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "none answered"
    s = median_spread(present)
    missing = f"; none answered in {len(values) - len(present)} of {len(values)} runs" if len(present) < len(values) else ""
    return f"{s['median']:.0f} ({s['min']:.0f}-{s['max']:.0f}{missing})"


def _share(values: list[float]) -> str:
    s = median_spread(values)
    return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"


def markdown(results: dict[str, Any], dilation: float) -> str:
    lines = [
        "# Resilience benchmark: overload by tier, priority sharing, a hung replica, admission cost",
        "",
        f"Emulated GPU pools (synthetic outputs) on this machine's CPU, time dilated x{dilation:g}: service times "
        "and tier bounds alike (gold 500 ms = 50 ms undilated). Real Envoy, ADS server and Triton; open-loop "
        "Poisson load through Envoy's REST listener. Median of the repeats (min-max). "
        "The machine is a 2-core VM shared with other work (load average in the environment below).",
        "",
    ]
    for note in results.get("notes", []):
        lines += [f"Note: {note}", ""]
    o = results.get("overload")
    if o:
        lines += [f"## 3x overload of a shared pool (capacity {o['capacity_per_s']:.1f} req/s; offered "
                  + ", ".join(f"{t} {r:.1f}" for t, r in o["rates_per_s"].items()) + " req/s)", "",
                  "| tier | p99 ms (answered) | within bound | shed (429 + retry-after) | failed |", "|---|---|---|---|---|"]
        for tier in ("gold", "silver", "bronze"):
            rs = [r["tiers"][tier] for r in o["runs"]]
            within = _share([r["gold_within_bound"] for r in o["runs"]]) if tier == "gold" else "-"
            lines.append(f"| {tier} | {_ms([r['p99_ms'] for r in rs])} | {within} | "
                         f"{_share([r['shed_fraction'] for r in rs])} | {sum(r['failed'] for r in rs)} |")
        lines += ["", f"Served {_share([r['served_per_s'] for r in o['runs']])} req/s of a capacity of "
                  f"{o['capacity_per_s']:.1f}.", _when(o), ""]
    p = results.get("priority_vs_fifo")
    if p:
        lines += ["## The same silver load on one FIFO queue vs priority levels (issue 12)", "",
                  "Offered " + ", ".join(f"{t} {r:.1f}" for t, r in p["rates_per_s"].items()) + " req/s.", "",
                  "| queue | gold p99 ms | gold within bound | silver shed |", "|---|---|---|---|"]
        for label in ("fifo", "priority"):
            rs = p[label]
            lines.append(f"| {label} | {_ms([r['tiers']['gold']['p99_ms'] for r in rs])} | "
                         f"{_share([r['gold_within_bound'] for r in rs])} | "
                         f"{_share([r['tiers']['silver']['shed_fraction'] for r in rs])} |")
        lines += ["", _when(p), ""]
    h = results.get("hung")
    if h:
        lines += [f"## A SIGSTOPped replica (of 2), gold at {h['rate_per_s']:.1f} req/s, per-try timeout "
                  f"{h['gold_per_try_ms']:.0f} ms", "",
                  "| Envoy | gold failed | gold p99 ms | gold max ms | within bound | ejected after ms |",
                  "|---|---|---|---|---|---|"]
        for name, rs in h["variants"].items():
            lines.append(f"| {name} | {sum(r['gold']['failed'] for r in rs)} of {sum(r['gold']['sent'] for r in rs)} | "
                         f"{_ms([r['gold']['p99_ms'] for r in rs])} | {_ms([r['max_ms'] for r in rs])} | "
                         f"{_share([r['gold_within_bound'] for r in rs])} | {_ejection([r['ejection_ms'] for r in rs])} |")
        lines += ["", "\"failed\": no answer before the client's 30 s timeout (held by the hung replica).", _when(h), ""]
    a = results.get("admission_cost")
    if a:
        lines += ["## Cost of the admission filter per request (priority written at the edge)", "",
                  "Sequential requests through Envoy to a KServe fake, filter off vs on, fresh Envoy each run.", "",
                  "| listener | p50 off ms | p50 on ms | p50 added ms |", "|---|---|---|---|"]
        for proto in ("http", "grpc"):
            r = a[proto]
            added = r["p50_added_ms"]
            lines.append(f"| {proto} | {_ms3([x['p50_ms'] for x in r['off']])} | {_ms3([x['p50_ms'] for x in r['on']])} | "
                         f"{added['median']:.3f} ({added['min']:.3f} to {added['max']:.3f}) |")
        lines += ["", _when(a), ""]
    return "\n".join(lines)


def _ejection(values: list[float | None]) -> str:
    return _ms(values) if any(v is not None for v in values) else "not ejected (nothing fails fast)"


def _when(section: dict[str, Any]) -> str:
    m = section.get("measured")
    if not m:
        return ""
    before, after = m["load_average_1m"]
    return f"Measured from {m['started_utc']}; load average (1 min) of this shared 2-core machine {before} -> {after}."


def _ms3(values: list[float]) -> str:
    s = median_spread([round(v, 3) for v in values])
    return f"{statistics.median(values):.3f} ({s['min']:.2f}-{s['max']:.2f})"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    o = results.get("overload")
    if o:
        tiers = ("gold", "silver", "bronze")
        shed = [statistics.median(r["tiers"][t]["shed_fraction"] for r in o["runs"]) for t in tiers]
        axes[0].bar(tiers, shed, color=["#d4a017", "#9e9e9e", "#a0522d"])
        axes[0].set_ylim(0, 1)
        axes[0].set_title("3x overload: share shed (429), median of runs")
    p = results.get("priority_vs_fifo")
    if p:
        labels = ["fifo", "priority"]
        within = [statistics.median(r["gold_within_bound"] for r in p[label]) for label in labels]
        axes[1].bar(labels, within, color=["#888888", "#d4a017"])
        axes[1].axhline(0.99, color="red", linestyle="--", label="p99 target")
        axes[1].set_ylim(0, 1.05)
        axes[1].set_title("gold answered within its bound, under a silver overload")
        axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 repeat, shorter runs (a smoke test)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--only", choices=("overload", "priority", "hung", "cost"), action="append")
    parser.add_argument("--report-only", type=Path, help="rewrite summary.md and summary.png from this summary.json")
    args = parser.parse_args()
    if args.report_only:
        # The run's own environment (command, date, load) is kept: only the rendering changes.
        saved = json.loads(args.report_only.read_text())
        env = saved["environment"]
        (args.out / "summary.md").write_text(
            markdown(saved, saved["emulation"]["time_dilation"]).rstrip() + "\n\n"
            f"Command: `{env['command']}`  \nDate: {env['date_utc']}  \nMachine: {env['machine']['cpu']}, "
            f"{env['machine']['cores']} cores, load average {env['machine'].get('load_average_1m')} at the end  \n")
        plot(saved, args.out / "summary.png")
        return
    repeats = 1 if args.quick else args.repeats
    duration = 5.0 if args.quick else 10.0
    only = set(args.only or ("overload", "priority", "hung", "cost"))
    results: dict[str, Any] = {}
    artifacts = Path(os.environ.get("TMAS_MODELS_DIR", ROOT / "build" / "models"))
    with Bed.running({"shared": 1, "fifo": 1, "pair": 2}, priorities={"shared": True}, artifacts=artifacts) as bed:
        dilation = bed.fleet.time_dilation
        log(f"bed up: capacity of one replica {capacity_per_s(bed, 'shared'):.1f} req/s, dilation x{dilation:g}")
        if "overload" in only:
            results["overload"] = _section(overload_runs, bed, repeats, duration)
        if "priority" in only:
            results["priority_vs_fifo"] = _section(priority_vs_fifo_runs, bed, repeats, duration * 0.8)
        if "hung" in only:
            results["hung"] = _section(hung_runs, bed, repeats, duration * 0.8)
    if "cost" in only:
        results["admission_cost"] = _section(admission_cost, repeats, 300 if args.quick else 1500)
    results["emulation"] = {"pools": "emulated GPU, synthetic outputs", "time_dilation": dilation,
                            "note": "service times and tier bounds x dilation; Envoy, client and machine noise are not"}
    md = markdown(results, dilation)
    json_path, md_path = write_results(args.out, "summary", results, md)
    plot(results, args.out / "summary.png")
    log(f"wrote {json_path}, {md_path}, {args.out / 'summary.png'}")
    print(json.dumps({k: v for k, v in results.items() if k == "admission_cost"}, indent=1)[:2000])


if __name__ == "__main__":
    interrupt_on_stop_signals()  # Triton/Envoy started here are stopped on SIGTERM or SIGHUP too (localnet.signals)
    main()
