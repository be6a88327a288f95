"""Envoy-routed vs direct (vs proxyless gRPC) for one model: added p50/p99 and throughput ratio.

Side by side in one run: phases of ``--seconds`` each rotate direct -> envoy -> proxyless, repeated
``--repeats`` times, so drift on a shared machine hits all paths alike.  ``--concurrency`` client
threads, each with its own tritonclient (tritonclient.http is not thread-safe; gRPC is used here).

Against a running platform (the lead's Triton fleet):
    PYTHONPATH=. .venv/bin/python -m benchmarks.xds.overhead --direct 127.0.0.1:<triton grpc> \\
        --envoy 127.0.0.1:8001 [--xds-bootstrap xds.json] --model text_embedding --tier gold
Self-contained demo against fake KServe pools (checks the script, not Triton):
    PYTHONPATH=. .venv/bin/python -m benchmarks.xds.overhead --demo
Targets (issue 4): added p50 <= 0.5 ms, throughput >= 0.85x direct via Envoy, >= 0.95x proxyless.

Superseded for Envoy's overhead by ``benchmarks.xds.envoy_overhead`` (issue 16 item 7: the shipped
edge chain, each part's cost, a lean raw-bytes client; results in benchmarks/results/overhead).
This script stays for the proxyless comparison; its tritonclient load costs more client CPU per
request, which on 2 cores lowers every path's throughput.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from benchmarks.xds.common import percentile, write_results
from localnet.signals import interrupt_on_stop_signals


def make_inputs(model: str, text: str) -> list[grpcclient.InferInput]:
    if model == "digits_classifier":
        data = grpcclient.InferInput("float_input", [1, 64], "FP32")
        data.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))
    else:  # text_embedding: TEXT, TYPE_STRING, batch of one
        data = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
        data.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
    return [data]


def run_phase(
    url: str, model: str, tier: str | None, inputs: list[grpcclient.InferInput], seconds: float, concurrency: int
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = [0]
    stop_at = time.perf_counter() + seconds
    headers = {"x-sla-tier": tier} if tier else None

    def worker() -> None:
        client = grpcclient.InferenceServerClient(url)
        mine = []
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                client.infer(model, inputs, headers=headers)
                mine.append(time.perf_counter() - started)
            except Exception:  # noqa: BLE001 - counted, reported; a benchmark must not stop on one error
                errors[0] += 1
        latencies.extend(mine)
        client.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--direct")
    parser.add_argument("--envoy")
    parser.add_argument("--xds-bootstrap", help="proxyless: GRPC_XDS_BOOTSTRAP file; dials xds:///<model>")
    parser.add_argument("--model", default="text_embedding")
    parser.add_argument("--tier", default=None)
    parser.add_argument("--text", default="The quick brown fox jumps over the lazy dog.")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--demo", action="store_true", help="run against fake pools started here")
    parser.add_argument("--platform", action="store_true",
                        help="start the real local platform (Triton pools, control server, Envoy) and compare "
                             "Envoy with the Triton replica the route sends this model/tier to")
    parser.add_argument("--name", default="overhead")
    args = parser.parse_args()
    plane = None
    if args.demo:
        from xds_server import RouteWeights, write_proxyless_bootstrap
        from xds_server.testbed import DataPlane

        routes = [RouteWeights.of(args.model, t, (("cpu", 100),)) for t in ("gold", "silver", "bronze")]
        plane = DataPlane.start({"cpu": (args.model,)}, routes)
        args.direct = f"127.0.0.1:{plane.pools['cpu'].endpoint.grpc_port}"
        args.envoy = plane.grpc_url
        args.xds_bootstrap = str(
            write_proxyless_bootstrap(plane.workdir / "xds.json", node_id="bench", xds_port=plane.xds.port)
        )
        args.name = "overhead_demo_fake_upstream"
    platform = None
    if args.platform:
        from local_platform.platform import LocalPlatform, PlatformPorts
        from xds_server import write_proxyless_bootstrap

        platform = LocalPlatform(workdir=Path(tempfile.mkdtemp(prefix="overhead-")), ports=PlatformPorts(http=0, grpc=0))
        platform.start()
        tier = args.tier or platform.fleet.tiers.default_tier
        route = next(r for r in platform.status()["routes"] if r["model"] == args.model and r["tier"] == tier)
        pool = max(route["weights"], key=lambda p: route["weights"][p])
        if route["weights"][pool] != 100:
            raise SystemExit(f"route {args.model}/{tier} is split {route['weights']}: direct has no single peer")
        args.direct = f"127.0.0.1:{platform.supervisor.replicas(pool)[0].grpc_port}"
        args.envoy = platform.describe()["grpc_endpoint"]
        args.xds_bootstrap = str(write_proxyless_bootstrap(platform.workdir / "xds.json", node_id="bench",
                                                           xds_port=platform.ports.xds))
        args.name = f"overhead_triton_{args.model}"
        print(f"direct = Triton replica of pool {pool} ({args.direct}); envoy = {args.envoy}", flush=True)
    paths = {"direct": args.direct, "envoy": args.envoy}
    if args.xds_bootstrap:
        os.environ["GRPC_XDS_BOOTSTRAP"] = args.xds_bootstrap
        paths["proxyless"] = f"xds:///{args.model}"
    paths = {k: v for k, v in paths.items() if v}
    inputs = make_inputs(args.model, args.text)
    latencies: dict[str, list[float]] = {p: [] for p in paths}
    errors = dict.fromkeys(paths, 0)
    busy_s = dict.fromkeys(paths, 0.0)
    try:
        for url in paths.values():
            run_phase(url, args.model, args.tier, inputs, 0.5, 1)  # warm up
        for _ in range(args.repeats):
            for path, url in paths.items():
                got, failed = run_phase(url, args.model, args.tier, inputs, args.seconds, args.concurrency)
                latencies[path] += got
                errors[path] += failed
                busy_s[path] += args.seconds
    finally:
        if plane is not None:
            plane.stop()
        if platform is not None:
            platform.stop()
    direct_p50 = percentile(latencies["direct"], 50) if "direct" in paths else None
    direct_rps = len(latencies["direct"]) / busy_s["direct"] if "direct" in paths else None
    results, table = (
        {},
        [("path", "requests", "errors", "req/s", "p50 ms", "p99 ms", "added p50 ms", "throughput x direct")],
    )
    for path in paths:
        values = latencies[path]
        rps = len(values) / busy_s[path]
        p50, p99 = percentile(values, 50), percentile(values, 99)
        results[path] = {
            "requests": len(values),
            "errors": errors[path],
            "req_per_s": round(rps, 1),
            "p50_ms": round(p50 * 1000, 3),
            "p99_ms": round(p99 * 1000, 3),
        }
        table.append(
            (
                path,
                str(len(values)),
                str(errors[path]),
                f"{rps:.1f}",
                f"{p50 * 1000:.3f}",
                f"{p99 * 1000:.3f}",
                f"{(p50 - direct_p50) * 1000:+.3f}" if direct_p50 is not None else "",
                f"{rps / direct_rps:.2f}" if direct_rps else "",
            )
        )
    write_results(
        args.name,
        {
            "model": args.model,
            "tier": args.tier,
            "concurrency": args.concurrency,
            "seconds_per_phase": args.seconds,
            "repeats": args.repeats,
            "paths": paths,
            "results": results,
        },
        table,
    )


if __name__ == "__main__":
    interrupt_on_stop_signals()  # Triton/Envoy started here are stopped on SIGTERM or SIGHUP too (localnet.signals)
    main()
