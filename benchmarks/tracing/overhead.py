"""What OpenTelemetry tracing costs on the request path: Envoy and Triton, tracing off / 1% / 100%.

One real Triton (the CPU pool's ``digits_classifier``, the sub-millisecond model where a proxy's
cost shows most) in OpenTelemetry trace mode, three real Envoys built by the platform's own
builders (``xds_server.build_snapshot`` with ``DataPlaneSettings.tracing``), all exporting to the
local receiver (``python -m tracing receive``, its own process):

* ``direct``: the client to Triton's gRPC port, Triton tracing off (the reference);
* ``off``: through Envoy without the tracing field, Triton tracing off;
* ``1%``: Envoy ``random_sampling`` 1%, Triton untraced (the default for load runs);
* ``1%+triton``: the same with Triton tracing every request (``PLATFORM_TRITON_TRACE_RATE=1``);
* ``100%``: every request traced at the edge and in Triton (the demo's setting).

Triton's level is switched between phases through its trace-setting endpoint
(``POST /v2/trace/setting``): its mode is fixed at start, level OFF stops tracing.  The phases
where Triton traces run with one connection only: with four, tritonserver 2.51 in OpenTelemetry
mode crashed (SIGSEGV) within a minute at any rate (docs/tracing.md), twice in this benchmark.  Phases rotate
in each repeat; figures are medians over repeats of each phase against that repeat's ``off`` phase,
with min-max spread.  Closed loop, one connection (latency) and four (throughput), gRPC raw bytes
(``benchmarks.xds.grpc_loadgen``).  CPU per request of Envoy, of Triton with its stub processes
and of the receiver is read from /proc around each phase.

    PYTHONPATH=. .venv/bin/python -m benchmarks.tracing.overhead [--seconds 3 --repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import requests  # noqa: E402

from benchmarks.common import cpu_s  # noqa: E402
from benchmarks.xds.grpc_loadgen import ClosedLoop, model_infer_request  # noqa: E402
from fleet.triton_process import PROJECT_ROOT, TritonProcess, find_stub_pids, prepare_backend_dir  # noqa: E402
from localnet.ports import free_port  # noqa: E402
from localnet.signals import interrupt_on_stop_signals  # noqa: E402
from model_repository.definitions import load_models  # noqa: E402
from model_repository.triton_config import Target, write_repository  # noqa: E402
from tracing.settings import TracingSettings  # noqa: E402
from xds_server import (  # noqa: E402
    DataPlaneSettings,
    Endpoint,
    EnvoyProcess,
    PoolEndpoints,
    XdsServer,
    build_snapshot,
    even_routes,
    write_envoy_bootstrap,
)

MODEL = "digits_classifier"
RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "tracing"
# variant -> (Envoy's sample ratio, None: no tracing field; Triton traces every request?)
VARIANTS: dict[str, tuple[float | None, bool]] = {"off": (None, False), "1%": (0.01, False),
                                                  "1%+triton": (0.01, True), "100%": (1.0, True)}
ENVOYS = {"off": None, "1%": 0.01, "100%": 1.0}  # the 1%+triton phase uses the 1% Envoy


def _settle(spans_file: Path, quiet_s: float = 5.5, timeout_s: float = 15.0) -> None:
    """Wait until no span has arrived for ``quiet_s`` (Envoy flushes every 5 s, Triton every 1 s):
    the previous phase's spans must not be charged to the next one."""
    deadline = time.monotonic() + timeout_s
    size, since = spans_file.stat().st_size, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = spans_file.stat().st_size
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return


def _triton_trace(triton: TritonProcess, on: bool) -> None:
    body: dict[str, Any] = {"trace_level": ["TIMESTAMPS"], "trace_rate": "1"} if on else {"trace_level": ["OFF"]}
    r = requests.post(f"http://{triton.http_url}/v2/trace/setting", json=body, timeout=5)
    r.raise_for_status()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(seconds: float, repeats: int, workdir: Path) -> dict[str, Any]:
    receiver_out = workdir / "spans.jsonl"
    receiver = subprocess.Popen([sys.executable, "-m", "tracing", "receive", f"--out={receiver_out}", "--port=0",
                                 "--until-stdin-closes"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    endpoint = json.loads(receiver.stdout.readline())["endpoint"]  # type: ignore[union-attr]
    env_before = dict(os.environ)
    os.environ.update(TracingSettings(endpoint, sample_ratio=1.0).to_env())  # Triton starts in trace mode
    models = load_models()
    repo = write_repository(workdir / "repo", [(models[MODEL], Target("cpu", instances=1))],
                            PROJECT_ROOT / "build" / "models")
    triton = TritonProcess("cpu-0", repo, prepare_backend_dir(workdir / "backends"), workdir / "triton.log")
    xds = XdsServer(port=0)
    envoys: dict[str, EnvoyProcess] = {}
    ports: dict[str, int] = {}
    loops: dict[str, ClosedLoop] = {}
    try:
        triton.start()
        xds.start()
        triton.wait_ready()
        pools = [PoolEndpoints("cpu", "cpu", False, (MODEL,), (Endpoint("127.0.0.1", triton.ports.http,
                                                                          triton.ports.grpc),))]
        for name, ratio in ENVOYS.items():
            tracing = TracingSettings(endpoint, sample_ratio=ratio) if ratio is not None else None
            settings = DataPlaneSettings(http_port=free_port(), grpc_port=free_port(), tracing=tracing)
            node = f"trace-bench-{name.strip('%')}"
            xds.set_snapshot(build_snapshot(pools, even_routes(pools, settings), settings), node_id=node)
            bootstrap = write_envoy_bootstrap(workdir / f"envoy-{node}.yaml", node_id=node, xds_port=xds.port,
                                              tracing=TracingSettings(endpoint))
            envoys[name] = EnvoyProcess(bootstrap, concurrency=2, log_path=workdir / f"envoy-{node}.log").start()
            ports[name] = settings.grpc_port
        for e in envoys.values():
            e.wait_ready(timeout_s=30)
        payload = model_infer_request(MODEL)
        targets = {"direct": triton.grpc_url, **{n: f"127.0.0.1:{ports[n.split('+')[0]]}" for n in VARIANTS}}
        phases: list[dict[str, Any]] = []
        for repeat in range(repeats):
            order = list(targets)[repeat % len(targets):] + list(targets)[:repeat % len(targets)]
            for name in order:
                _triton_trace(triton, VARIANTS.get(name, (None, False))[1])
                triton_traced = VARIANTS.get(name, (None, False))[1]
                for connections in ((1,) if triton_traced else (1, 4)):
                    loop = loops.setdefault(f"{name}/{connections}", ClosedLoop(targets[name], payload,
                                                                                 connections=connections))
                    loop.check()
                    loop.run(0.5)  # warm: connections up, Envoy's worker and Triton's caches hot
                    _settle(receiver_out)
                    envoy = envoys.get(name.split("+")[0])
                    pids: dict[str, list[int]] = {"envoy": [envoy.pid] if envoy is not None and envoy.pid else [],
                            "triton": [triton.pid or 0, *find_stub_pids(triton.shm_prefix)],
                            "receiver": [receiver.pid]}
                    cpu_before = {k: cpu_s(v) for k, v in pids.items()}
                    result = loop.run(seconds)
                    cpu = {k: cpu_s(v) - cpu_before[k] for k, v in pids.items()}
                    n = max(result.requests, 1)
                    phases.append({
                        "repeat": repeat, "variant": name, "connections": connections, "requests": result.requests,
                        "errors": result.errors, "req_per_s": result.req_per_s,
                        "p50_ms": 1e3 * statistics.median(result.latencies_s),
                        "p99_ms": 1e3 * _pct(result.latencies_s, 0.99),
                        **{f"{k}_cpu_us_per_req": 1e6 * v / n for k, v in cpu.items()},
                    })
                    print(f"repeat {repeat + 1}/{repeats} {name:>6} x{connections}: {result.req_per_s:7.0f} req/s "
                          f"p50 {phases[-1]['p50_ms']:.3f} ms, envoy {phases[-1]['envoy_cpu_us_per_req']:.0f} us/req, "
                          f"triton {phases[-1]['triton_cpu_us_per_req']:.0f} us/req, errors {result.errors}",
                          flush=True)
        time.sleep(6)  # Envoy flushes spans every 5 s: let the last batch land before counting
        spans = sum(1 for _ in open(receiver_out))
        return {"phases": phases, "spans_received": spans}
    finally:
        for loop in loops.values():
            loop.close()
        for e in envoys.values():
            e.stop()
        xds.stop()
        triton.stop()
        os.environ.clear()
        os.environ.update(env_before)
        if receiver.stdin:
            receiver.stdin.close()
        receiver.wait(timeout=10)


def summarise(phases: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant and connection count: the median over repeats of (phase - that repeat's ``off``)."""
    out: dict[str, Any] = {}
    by = {(p["repeat"], p["variant"], p["connections"]): p for p in phases}
    repeats = sorted({p["repeat"] for p in phases})
    for connections in (1, 4):
        for variant in ("direct", *VARIANTS):
            if (repeats[0], variant, connections) not in by:
                continue  # not run (Triton-traced phases run with one connection only)
            rows = [(by[(r, variant, connections)], by[(r, "off", connections)]) for r in repeats]

            def stat(values: list[float]) -> dict[str, float]:
                return {"median": statistics.median(values), "min": min(values), "max": max(values)}
            out[f"{variant}/x{connections}"] = {
                "p50_ms": stat([p["p50_ms"] for p, _ in rows]),
                "p50_delta_vs_off_ms": stat([p["p50_ms"] - o["p50_ms"] for p, o in rows]),
                "p99_ms": stat([p["p99_ms"] for p, _ in rows]),
                "req_per_s": stat([p["req_per_s"] for p, _ in rows]),
                "throughput_vs_off": stat([p["req_per_s"] / o["req_per_s"] for p, o in rows]),
                "envoy_cpu_us_per_req": stat([p["envoy_cpu_us_per_req"] for p, _ in rows]),
                "triton_cpu_us_per_req": stat([p["triton_cpu_us_per_req"] for p, _ in rows]),
                "receiver_cpu_us_per_req": stat([p["receiver_cpu_us_per_req"] for p, _ in rows]),
                "errors": sum(p["errors"] for p, _ in rows),
            }
    return out


def write_results(summary: dict[str, Any], raw: dict[str, Any], args: argparse.Namespace, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    command = (f"PYTHONPATH=. .venv/bin/python -m benchmarks.tracing.overhead --seconds {args.seconds:g} "
               f"--repeats {args.repeats}")
    (out / "summary.json").write_text(json.dumps({"command": command, "model": MODEL, "summary": summary,
                                                  "spans_received": raw["spans_received"],
                                                  "phases": raw["phases"]}, indent=1))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    names = ["direct", *VARIANTS]
    for ax, key, label in ((axes[0], "envoy_cpu_us_per_req", "Envoy CPU per request (us), 1 connection"),
                           (axes[1], "triton_cpu_us_per_req", "Triton CPU per request (us), 1 connection")):
        conn = "x1"
        shown = [n for n in names if f"{n}/{conn}" in summary]
        med = [summary[f"{n}/{conn}"][key]["median"] for n in shown]
        lo = [m - summary[f"{n}/{conn}"][key]["min"] for n, m in zip(shown, med, strict=True)]
        hi = [summary[f"{n}/{conn}"][key]["max"] - m for n, m in zip(shown, med, strict=True)]
        ax.bar(shown, med, yerr=[lo, hi], color="#4c72b0", capsize=4)
        ax.set_title(label, fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        ax.axhline(0, color="black", linewidth=0.5)
    fig.suptitle(f"Tracing cost, {MODEL} over gRPC (median of {args.repeats} repeats, min-max bars)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "overhead.png", dpi=110)
    plt.close(fig)
    lines = [
        "# What OpenTelemetry tracing costs on the request path", "",
        f"Command: `{command}` ({MODEL}, gRPC, real Envoy 1.40 and real Triton 2.51 on this shared 2-core VM; "
        "the receiver is the local one, `python -m tracing receive`). Medians over repeats of each phase against "
        "the same repeat's `off` phase, [min, max] over repeats.", "",
        "| path | connections | p50 ms | p50 vs off, ms | p99 ms | req/s | throughput vs off | Envoy CPU us/req "
        "| Triton CPU us/req | receiver CPU us/req | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for connections in (1, 4):
        for n in names:
            if f"{n}/x{connections}" not in summary:
                continue
            s = summary[f"{n}/x{connections}"]

            def f(key: str, fmt: str = "{:.3f}", s: dict[str, Any] = s) -> str:
                v = s[key]
                return f"{fmt.format(v['median'])} [{fmt.format(v['min'])}, {fmt.format(v['max'])}]"
            lines.append(f"| {n} | {connections} | {f('p50_ms')} | {f('p50_delta_vs_off_ms')} | {f('p99_ms')} | "
                         f"{f('req_per_s', '{:.0f}')} | {f('throughput_vs_off', '{:.2f}')} | "
                         f"{f('envoy_cpu_us_per_req', '{:.0f}')} | {f('triton_cpu_us_per_req', '{:.0f}')} | "
                         f"{f('receiver_cpu_us_per_req', '{:.0f}')} | {s['errors']} |")
    lines += ["", f"Spans received over the run: {raw['spans_received']}.", "", "![tracing overhead](overhead.png)", "",
              "`direct` is Triton without Envoy (Triton tracing off). `1%` is the default for load runs: Envoy "
              "samples 1 request in 100, Triton is not traced (Triton 2.51 cannot follow the edge's decision, and "
              "its OpenTelemetry mode crashed under concurrent load; docs/tracing.md). `1%+triton` adds Triton "
              "tracing every request (`PLATFORM_TRITON_TRACE_RATE=1`), so the sampled requests' traces reach into "
              "Triton; it and `100%` (the demo's setting) run with one connection only, for that crash. Latency columns are at the mercy of the shared machine's load (other sessions' "
              "benchmarks ran at the same time); CPU per request is the steadier measure of cost."]
    (out / "overhead.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="trace-bench-") as tmp:
        raw = run(args.seconds, args.repeats, Path(tmp))
    summary = summarise(raw["phases"])
    write_results(summary, raw, args, args.out)
    print((args.out / "overhead.md").read_text())
    return 0


if __name__ == "__main__":
    interrupt_on_stop_signals()  # Triton/Envoy started here are stopped on SIGTERM or SIGHUP too (localnet.signals)
    raise SystemExit(main())
