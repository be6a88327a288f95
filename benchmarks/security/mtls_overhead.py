"""What mTLS on the Envoy -> Triton gRPC hop costs, side by side in one run.

Two real tritonservers serving the real digits classifier on this CPU (one plaintext, one whose
gRPC port requires a client certificate), two real Envoys (concurrency 1) fed by two ADS servers,
one of them over mTLS.  Paths, measured interleaved request by request (the order rotates):
  direct      - straight to the plaintext Triton's gRPC port (context: no Envoy);
  envoy-plain - Envoy -> Triton in plaintext (the platform with --no-mtls);
  envoy-mtls  - Envoy -> Triton over mTLS (make up's default).
Then closed-loop throughput, each path in turn for ``--seconds`` with ``--threads`` clients.
Every figure is the median of ``--repeats`` repeats with their min..max.

    PYTHONPATH=. .venv/bin/python -m benchmarks.security.mtls_overhead [--requests 1500 --repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from benchmarks.common import ROOT, write_results
from fleet.triton_process import GrpcTls, TritonProcess, prepare_backend_dir
from localnet.ports import free_port
from localnet.signals import interrupt_on_stop_signals
from model_repository.definitions import load_models
from model_repository.triton_config import Target, write_repository
from xds_server import DataPlaneSettings, Endpoint, EnvoyProcess, PoolEndpoints, XdsServer, build_snapshot, even_routes
from xds_server.bootstrap import write_envoy_bootstrap
from xds_server.certs import ensure_certs
from xds_server.tls import CertDir, Role, UpstreamTls

MODEL = "digits_classifier"
OUT = ROOT / "benchmarks" / "results" / "security"
PATHS = ("direct", "envoy-plain", "envoy-mtls")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


class Plane:
    """One Triton, one ADS server and one Envoy; mTLS on both hops when ``certs`` is given."""

    def __init__(self, root: Path, artifacts: Path, certs: CertDir | None) -> None:
        root.mkdir(parents=True)
        triton_id = certs.identity(Role.TRITON) if certs else None
        repo = write_repository(root / "repo", [(load_models()[MODEL], Target("cpu"))], artifacts)
        self.triton = TritonProcess(f"bench-{root.name}", repo, prepare_backend_dir(root / "backends"),
                                    root / "triton.log",
                                    grpc_tls=GrpcTls(triton_id.cert, triton_id.key, triton_id.ca_cert) if triton_id else None)
        self.xds = XdsServer(port=0, tls=certs.identity(Role.XDS_SERVER) if certs else None)
        self.settings = DataPlaneSettings(http_port=free_port(), grpc_port=free_port(),
                                          upstream_tls=UpstreamTls.to(Role.TRITON, certs) if certs else None)
        self.certs, self.root = certs, root
        self.envoy: EnvoyProcess | None = None

    def start(self) -> Plane:
        self.triton.start()
        self.triton.wait_ready(timeout_s=90)
        self.xds.start()
        pool = PoolEndpoints(pool="cpu", accelerator="cpu", emulated=False, models=(MODEL,),
                             replicas=(Endpoint("127.0.0.1", self.triton.ports.http, self.triton.ports.grpc),))
        version = self.xds.set_snapshot(build_snapshot([pool], even_routes([pool], self.settings), self.settings))
        bootstrap = write_envoy_bootstrap(
            self.root / "envoy.yaml", node_id=f"envoy-{self.root.name}", xds_port=self.xds.port,
            xds_tls=UpstreamTls.to(Role.XDS_SERVER, self.certs) if self.certs else None)
        self.envoy = EnvoyProcess(bootstrap, concurrency=1, log_path=self.root / "envoy.log").start()
        self.envoy.wait_ready(timeout_s=30)
        if not self.xds.wait_acked(version, timeout_s=10):
            raise RuntimeError(f"Envoy of {self.root.name} did not ACK its snapshot")
        return self

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        self.xds.stop()
        self.triton.stop()


def _request() -> service_pb2.ModelInferRequest:
    x = np.load(ROOT / "build" / "models" / "digits_holdout.npz")["x"][:1].astype(np.float32)
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="float_input", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(x.tobytes())
    return request


def _latencies(stubs: dict[str, Any], request: Any, n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {p: [] for p in stubs}
    names = list(stubs)
    for i in range(n):
        for name in names[i % len(names):] + names[:i % len(names)]:
            started = time.perf_counter()
            stubs[name].ModelInfer(request, timeout=10, metadata=[("x-sla-tier", "gold")])
            out[name].append(time.perf_counter() - started)
    return out


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _throughput(stub: Any, request: Any, threads: int, seconds: float, pids: list[int]) -> tuple[float, float]:
    """(requests per second, CPU ms per request of ``pids``: Envoy and tritonserver on the path).
    CPU per request holds up on a busy machine, where wall-clock figures swing with the load."""
    counts = [0] * threads
    cpu_before = sum(_cpu_s(pid) for pid in pids)
    deadline = time.perf_counter() + seconds

    def worker(i: int) -> None:
        while time.perf_counter() < deadline:
            stub.ModelInfer(request, timeout=10, metadata=[("x-sla-tier", "gold")])
            counts[i] += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    cpu_ms = (sum(_cpu_s(pid) for pid in pids) - cpu_before) * 1000
    return sum(counts) / seconds, cpu_ms / max(1, sum(counts))


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def _plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, label in ((axes[0], "p50_ms", "p50 latency, ms"), (axes[1], "throughput_rps", "throughput, req/s")):
        med = [summary[p][key]["median"] for p in PATHS]
        err = [[m - summary[p][key]["min"] for p, m in zip(PATHS, med, strict=True)],
               [summary[p][key]["max"] - m for p, m in zip(PATHS, med, strict=True)]]
        ax.bar(PATHS, med, yerr=err, capsize=4, color=["#999999", "#4c72b0", "#dd8452"])
        ax.set_title(label)
    fig.suptitle("mTLS on Envoy -> Triton gRPC (digits_classifier, real, this CPU); median, min..max of repeats")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.security.mtls_overhead", description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1500, help="sequential requests per path per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=4, help="closed-loop clients for the throughput phase")
    ap.add_argument("--seconds", type=float, default=3.0, help="throughput phase per path per repeat")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mtls-bench-") as tmp:
        root = Path(tmp)
        certs = CertDir(ensure_certs(root / "certs").out)
        planes = {"plain": Plane(root / "plain", ROOT / "build" / "models", None),
                  "mtls": Plane(root / "mtls", ROOT / "build" / "models", certs)}
        try:
            for plane in planes.values():
                plane.start()
            channels = {
                "direct": grpc.insecure_channel(planes["plain"].triton.grpc_url),
                "envoy-plain": grpc.insecure_channel(f"127.0.0.1:{planes['plain'].settings.grpc_port}"),
                "envoy-mtls": grpc.insecure_channel(f"127.0.0.1:{planes['mtls'].settings.grpc_port}"),
            }
            stubs = {name: service_pb2_grpc.GRPCInferenceServiceStub(ch) for name, ch in channels.items()}
            request = _request()
            _latencies(stubs, request, 100)  # warm connections and caches
            runs: dict[str, dict[str, list[float]]] = {
                p: {"p50_ms": [], "p99_ms": [], "throughput_rps": [], "cpu_ms_per_request": []} for p in PATHS}
            pids = {"direct": [planes["plain"].triton.pid],
                    "envoy-plain": [planes["plain"].triton.pid, planes["plain"].envoy.pid],  # type: ignore[union-attr]
                    "envoy-mtls": [planes["mtls"].triton.pid, planes["mtls"].envoy.pid]}  # type: ignore[union-attr]
            for repeat in range(args.repeats):
                lat = _latencies(stubs, request, args.requests)
                for p in PATHS:
                    runs[p]["p50_ms"].append(_percentile(lat[p], 50) * 1000)
                    runs[p]["p99_ms"].append(_percentile(lat[p], 99) * 1000)
                order = PATHS[repeat % 3:] + PATHS[:repeat % 3]
                for p in order:
                    rps, cpu_ms = _throughput(stubs[p], request, args.threads, args.seconds, pids[p])  # type: ignore[arg-type]
                    runs[p]["throughput_rps"].append(rps)
                    runs[p]["cpu_ms_per_request"].append(cpu_ms)
                print(f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(
                    f"{p} p50 {runs[p]['p50_ms'][-1]:.3f} ms {runs[p]['throughput_rps'][-1]:.0f} req/s" for p in PATHS),
                    flush=True)
            handshakes = planes["mtls"].envoy.admin_get("/stats?filter=ssl.handshake")  # type: ignore[union-attr]
            for ch in channels.values():
                ch.close()
        finally:
            for plane in planes.values():
                plane.stop()
    summary = {p: {k: _spread(v) for k, v in runs[p].items()} for p in PATHS}
    added_p50 = [m - p for m, p in zip(runs["envoy-mtls"]["p50_ms"], runs["envoy-plain"]["p50_ms"], strict=True)]
    ratio = [m / p for m, p in zip(runs["envoy-mtls"]["throughput_rps"], runs["envoy-plain"]["throughput_rps"],
                                   strict=True)]
    added_cpu = [m - p for m, p in zip(runs["envoy-mtls"]["cpu_ms_per_request"],
                                       runs["envoy-plain"]["cpu_ms_per_request"], strict=True)]
    result = {"paths": summary, "mtls_added_p50_ms": _spread(added_p50), "mtls_throughput_ratio": _spread(ratio),
              "mtls_added_cpu_ms_per_request": _spread(added_cpu),
              "settings": vars(args) | {"out": str(args.out)}, "envoy_ssl_handshakes": handshakes.strip().splitlines(),
              "emulated": "nothing: real Triton serving the real ONNX model on this CPU; real Envoy 1.40"}
    rows = [f"| {p} | {summary[p]['p50_ms']['median']:.3f} ({summary[p]['p50_ms']['min']:.3f}..{summary[p]['p50_ms']['max']:.3f})"
            f" | {summary[p]['p99_ms']['median']:.3f} | {summary[p]['throughput_rps']['median']:.0f} "
            f"({summary[p]['throughput_rps']['min']:.0f}..{summary[p]['throughput_rps']['max']:.0f}) "
            f"| {summary[p]['cpu_ms_per_request']['median']:.3f} |" for p in PATHS]
    markdown = "\n".join([
        "# mTLS on the Envoy -> Triton gRPC hop: what it costs",
        "",
        "Real Triton 2.51 serving the real digits classifier (ONNX) on this CPU, real Envoy 1.40 (concurrency 1),",
        f"gRPC ModelInfer, batch 1. Latency: {args.requests} sequential requests per path per repeat, interleaved;",
        f"throughput: {args.threads} closed-loop clients for {args.seconds:g} s per path. Median of {args.repeats} repeats"
        " (min..max). Envoy keeps its upstream connections, so the TLS handshake is paid once per connection:",
        "what remains is per-request encryption.",
        "",
        "| path | p50 ms | p99 ms | throughput req/s | CPU ms per request (Envoy + tritonserver) |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"mTLS adds **{result['mtls_added_p50_ms']['median']:+.3f} ms** p50 "
        f"({result['mtls_added_p50_ms']['min']:+.3f}..{result['mtls_added_p50_ms']['max']:+.3f}) and keeps "
        f"**{result['mtls_throughput_ratio']['median']:.2f}x** the plaintext throughput "
        f"({result['mtls_throughput_ratio']['min']:.2f}..{result['mtls_throughput_ratio']['max']:.2f}); it costs "
        f"**{result['mtls_added_cpu_ms_per_request']['median']:+.3f} CPU ms** per request in Envoy and tritonserver "
        f"({result['mtls_added_cpu_ms_per_request']['min']:+.3f}..{result['mtls_added_cpu_ms_per_request']['max']:+.3f}),"
        " the figure that holds up on a busy machine (the stub process that runs the model is not counted: it is"
        " the same on every path).",
        "The machine is a shared 2-core VM: compare the paths of this run with each other, not with other runs.",
        "",
        "![mTLS overhead](mtls_overhead.png)",
    ])
    write_results(args.out, "mtls_overhead", result, markdown)
    _plot(summary, args.out / "mtls_overhead.png")
    print(markdown)
    return 0


if __name__ == "__main__":
    interrupt_on_stop_signals()  # Triton/Envoy started here are stopped on SIGTERM or SIGHUP too (localnet.signals)
    raise SystemExit(main())
