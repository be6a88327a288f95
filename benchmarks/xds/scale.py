"""Scale: one ADS server holding N simulated Envoy streams; one weight change must reach them all.

The clients are lightweight grpc.aio streams in a separate process, each on its own channel (one TCP
connection, as N Envoys would have) with its own node id.  Each subscribes like Envoy (CDS and LDS
wildcard, EDS and RDS by name) and ACKs every answer.  Per round: t0 = decision (before
build_snapshot), done = ``XdsServer.wait_acked(version, min_streams=N)`` returned, i.e. the server
has the last ACK.  Target: <= 1 s for N >= 500.

    PYTHONPATH=. .venv/bin/python -m benchmarks.xds.scale [--streams 500] [--rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from benchmarks.xds.common import summary_ms, write_results
from localnet.signals import interrupt_on_stop_signals
from xds_server import RouteWeights, XdsServer, build_snapshot
from xds_server.examples import three_pools, tiered_routes
from xds_server.protos import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xds_server.testbed import ROOT


async def _one_stream(port: int, index: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        outbox: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()
        first = discovery_pb2.DiscoveryRequest(type_url=CLUSTER)
        first.node.id = f"sim-envoy-{index}"
        outbox.put_nowait(first)
        outbox.put_nowait(discovery_pb2.DiscoveryRequest(type_url=LISTENER))

        async def requests():
            while True:
                yield await outbox.get()

        names: dict[str, list[str]] = {CLUSTER: [], LISTENER: [], ROUTE: ["grpc", "http"], ENDPOINT: []}
        subscribed_routes = False
        async for response in stub.StreamAggregatedResources(requests()):
            if response.type_url == CLUSTER:
                clusters = []
                for packed in response.resources:
                    cluster = cluster_pb2.Cluster()
                    packed.Unpack(cluster)
                    clusters.append(cluster.name)
                new = sorted(clusters) != names[ENDPOINT]
                names[ENDPOINT] = sorted(clusters)
            outbox.put_nowait(
                discovery_pb2.DiscoveryRequest(
                    type_url=response.type_url,
                    version_info=response.version_info,
                    response_nonce=response.nonce,
                    resource_names=names[response.type_url],
                )
            )
            if response.type_url == CLUSTER and new:
                outbox.put_nowait(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=names[ENDPOINT]))
            if response.type_url == LISTENER and not subscribed_routes:
                subscribed_routes = True
                outbox.put_nowait(discovery_pb2.DiscoveryRequest(type_url=ROUTE, resource_names=names[ROUTE]))


async def _clients(port: int, streams: int) -> None:
    tasks = [asyncio.create_task(_one_stream(port, i)) for i in range(streams)]
    reader = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await reader  # parent closed stdin: done
    for task in tasks:
        task.cancel()


def _routes(gold_gpu: int) -> list[RouteWeights]:
    return [
        RouteWeights.of("text_embedding", "gold", (("gpu", gold_gpu), ("inferentia", 100 - gold_gpu)))
        if (r.model, r.tier) == ("text_embedding", "gold")
        else r
        for r in tiered_routes()
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients-for-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clients_for_port:
        asyncio.run(_clients(args.clients_for_port, args.streams))
        return

    server = XdsServer(port=0)
    port = server.start()
    pools = three_pools()
    version = server.set_snapshot(build_snapshot(pools, _routes(50)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    clients = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.xds.scale", "--streams", str(args.streams), "--clients-for-port", str(port)],
        stdin=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    rounds = []
    try:
        assert server.wait_acked(version, timeout_s=120, min_streams=args.streams), "clients did not converge"
        initial_s = time.monotonic() - started
        for i in range(args.rounds):
            t0 = time.monotonic()
            version = server.set_snapshot(build_snapshot(pools, _routes(10 + i)))
            assert server.wait_acked(version, timeout_s=30, min_streams=args.streams), f"round {i} did not converge"
            rounds.append(time.monotonic() - t0)
            time.sleep(0.2)
    finally:
        clients.stdin.close()  # type: ignore[union-attr]
        clients.wait(timeout=30)
        server.stop()
    results = {
        "streams": args.streams,
        "rounds": args.rounds,
        "initial_connect_and_ack_all_s": round(initial_s, 3),
        "weight_change_to_last_ack": summary_ms(rounds),
        "target_ms": 1000,
    }
    s = results["weight_change_to_last_ack"]
    table = [
        ("measure", "streams", "p50 ms", "max ms"),
        ("weight change -> last ACK", str(args.streams), str(s["p50_ms"]), str(s["max_ms"])),
        ("initial connect -> all ACKed", str(args.streams), "", str(round(initial_s * 1000))),
    ]
    write_results(f"scale_{args.streams}", results, table)


if __name__ == "__main__":
    interrupt_on_stop_signals()  # Triton/Envoy started here are stopped on SIGTERM or SIGHUP too (localnet.signals)
    main()
