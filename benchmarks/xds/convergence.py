"""Convergence: control decision -> Envoy ACK, and -> first request served by the new pool.

Real Envoy, the real ADS server, two fake KServe pools.  Two client threads (in a separate process) keep gRPC ModelInfer
(gold tier) going through Envoy; each round flips text_embedding/gold between 100% cpu and 100% gpu.
Per round: t0 = decision (just before build_snapshot), ack = XdsServer.wait_acked returned,
first = the first response served by the new pool (its receive time).  Target: p99 <= 50 ms.

    PYTHONPATH=. .venv/bin/python -m benchmarks.xds.convergence [--rounds 60]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time

from benchmarks.xds.common import summary_ms, write_results
from localnet.signals import interrupt_on_stop_signals
from xds_server import RouteWeights, build_snapshot
from xds_server.testbed import ROOT, DataPlane

POOLS = {"cpu": ("text_embedding",), "gpu": ("text_embedding",)}


def routes_to(pool: str) -> list[RouteWeights]:
    return [RouteWeights.of("text_embedding", tier, ((pool, 100),)) for tier in ("gold", "silver", "bronze")]


LOAD_CLIENT = """
import sys, threading, time, grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
lock = threading.Lock()
last = [None]
def run():
    with grpc.insecure_channel(sys.argv[1]) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="text_embedding")
        while True:
            try:
                pool = stub.ModelInfer(request, metadata=[("x-sla-tier", "gold")], timeout=5).parameters["pool"].string_param
            except grpc.RpcError as error:
                pool = "error:" + error.code().name
            now = time.monotonic()
            with lock:
                if pool != last[0] or pool.startswith("error"):
                    last[0] = pool
                    print(f"{now:.6f} {pool}", flush=True)
for _ in range(2):
    threading.Thread(target=run, daemon=True).start()
sys.stdin.read()
"""


class Load:
    """Closed-loop gRPC clients in another process (clients are not the control plane's process),
    reporting each change of serving pool with its CLOCK_MONOTONIC time, shared with this process."""

    def __init__(self, url: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", LOAD_CLIENT, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.changes: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            at, pool = line.split()
            self.changes.append((float(at), pool))

    @property
    def errors(self) -> int:
        return sum(1 for _, pool in self.changes if pool.startswith("error"))

    def first_at(self, pool: str, after: float, timeout_s: float = 2) -> float | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for at, served in reversed(self.changes):
                if at <= after:
                    break
                if served == pool:
                    return at
            time.sleep(0.0005)
        return None

    def stop(self) -> None:
        self.process.stdin.close()  # type: ignore[union-attr]
        self.process.kill()
        self.process.wait(timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    plane = DataPlane.start(POOLS, routes_to("cpu"))
    load = None
    to_ack, to_first, build = [], [], []
    try:
        assert plane.xds.wait_acked(plane.xds.current_version() or "", 10)
        load = Load(plane.grpc_url)
        assert load.first_at("cpu", after=0, timeout_s=10), "load did not start"
        pools = plane.pool_endpoints()
        current = "cpu"
        for _ in range(args.rounds):
            time.sleep(random.uniform(0.03, 0.08))
            target = "gpu" if current == "cpu" else "cpu"
            t0 = time.monotonic()
            snapshot = build_snapshot(pools, routes_to(target), plane.settings)
            version = plane.xds.set_snapshot(snapshot)
            built = time.monotonic()
            assert plane.xds.wait_acked(version, timeout_s=5)
            acked = time.monotonic()
            first = load.first_at(target, after=t0)
            assert first is not None, "no request reached the new pool"
            build.append(built - t0)
            to_ack.append(acked - t0)
            to_first.append(first - t0)
            current = target
    finally:
        if load is not None:
            load.stop()
        plane.stop()
    results = {
        "rounds": args.rounds,
        "client_errors": load.errors if load else None,
        "decision_to_published": summary_ms(build),
        "decision_to_ack": summary_ms(to_ack),
        "decision_to_first_request_at_new_pool": summary_ms(to_first),
        "target_p99_ms": 50,
    }
    table = [("measure", "n", "p50 ms", "p99 ms", "max ms")]
    for key in ("decision_to_published", "decision_to_ack", "decision_to_first_request_at_new_pool"):
        s = results[key]
        table.append((key, str(s["n"]), str(s["p50_ms"]), str(s["p99_ms"]), str(s["max_ms"])))
    table.append(("client errors during all rounds", str(results["client_errors"]), "", "", ""))
    write_results("convergence", results, table)


if __name__ == "__main__":
    interrupt_on_stop_signals()  # Triton/Envoy started here are stopped on SIGTERM or SIGHUP too (localnet.signals)
    main()
