"""Cost of routing gRPC ModelInfer by the model name in the body (the Lua field-1 parser).

Same Envoy, same upstream, same routes; three paths measured interleaved, request by request:
  direct  - straight to the upstream's gRPC port (no Envoy), for context;
  header  - an extra Envoy listener without the Lua filter, the client sends ``x-model`` itself
            (what clients would have to do without body routing);
  body    - the real gRPC listener: clients unchanged, Lua reads the model from the body.
``body - header`` is the price of keeping clients unchanged.  Sizes: a small request and 1 MiB.

    PYTHONPATH=. .venv/bin/python -m benchmarks.xds.grpc_model_routing_cost [--requests 2000]
"""

from __future__ import annotations

import argparse
import time

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from benchmarks.xds.common import percentile, write_results
from localnet.ports import free_port
from localnet.signals import interrupt_on_stop_signals
from xds_server import RouteWeights, Snapshot, build_snapshot
from xds_server.listeners import envoy_listener
from xds_server.naming import GRPC_ROUTES
from xds_server.protos import CLUSTER, ENDPOINT, LISTENER, ROUTE, to_message
from xds_server.testbed import DataPlane

ROUTES = [RouteWeights.of("text_embedding", t, (("cpu", 100),)) for t in ("gold", "silver", "bronze")]


def with_header_listener(snapshot: Snapshot, port: int) -> Snapshot:
    extra = to_message(
        LISTENER,
        envoy_listener(name="grpc-header", port=port, route_name=GRPC_ROUTES, filters=[], settings=snapshot.settings),
    )
    resources = {t: list(snapshot.resources[t].values()) for t in (CLUSTER, ENDPOINT, ROUTE)}
    resources[LISTENER] = [*snapshot.resources[LISTENER].values(), extra]
    return Snapshot.from_resources(
        resources,
        api_listeners=snapshot.api_listeners,
        pools=snapshot.pools,
        routes=snapshot.routes,
        settings=snapshot.settings,
    )


def measure(stubs: dict[str, tuple[object, list[tuple[str, str]]]], request: object, n: int) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {name: [] for name in stubs}
    names = list(stubs)
    for i in range(n):
        for name in names[i % len(names) :] + names[: i % len(names)]:  # rotate the order every round
            stub, metadata = stubs[name]
            started = time.perf_counter()
            stub.ModelInfer(request, metadata=metadata, timeout=10)  # type: ignore[attr-defined]
            latencies[name].append(time.perf_counter() - started)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--large-requests", type=int, default=200)
    args = parser.parse_args()
    plane = DataPlane.start({"cpu": ("text_embedding",)}, ROUTES)
    header_port = free_port()
    try:
        snapshot = with_header_listener(build_snapshot(plane.pool_endpoints(), ROUTES, plane.settings), header_port)
        assert plane.xds.wait_acked(plane.xds.set_snapshot(snapshot), timeout_s=10)
        direct = f"127.0.0.1:{plane.pools['cpu'].endpoint.grpc_port}"
        options = [("grpc.max_send_message_length", 8 << 20), ("grpc.max_receive_message_length", 8 << 20)]
        channels = {
            name: grpc.insecure_channel(url, options=options)
            for name, url in (("direct", direct), ("header", f"127.0.0.1:{header_port}"), ("body", plane.grpc_url))
        }
        stubs = {
            "direct": (service_pb2_grpc.GRPCInferenceServiceStub(channels["direct"]), []),
            "header": (service_pb2_grpc.GRPCInferenceServiceStub(channels["header"]), [("x-model", "text_embedding")]),
            "body": (service_pb2_grpc.GRPCInferenceServiceStub(channels["body"]), []),
        }
        results: dict[str, dict[str, float]] = {}
        table = [("request", "path", "n", "p50 ms", "p99 ms", "p50 added vs header ms")]
        for label, size, n in (("small (64 B)", 64, args.requests), ("1 MiB", 1 << 20, args.large_requests)):
            request = service_pb2.ModelInferRequest(model_name="text_embedding", id="bench")
            request.inputs.add(name="IN", datatype="UINT8", shape=[size])
            request.raw_input_contents.append(b"\1" * size)
            measure(stubs, request, 50)  # warm up connections
            latencies = measure(stubs, request, n)
            header_p50 = percentile(latencies["header"], 50)
            for path, values in latencies.items():
                p50, p99 = percentile(values, 50), percentile(values, 99)
                results[f"{label} {path}"] = {"n": n, "p50_ms": round(p50 * 1000, 3), "p99_ms": round(p99 * 1000, 3)}
                table.append(
                    (
                        label,
                        path,
                        str(n),
                        f"{p50 * 1000:.3f}",
                        f"{p99 * 1000:.3f}",
                        f"{(p50 - header_p50) * 1000:+.3f}" if path != "header" else "",
                    )
                )
        for channel in channels.values():
            channel.close()
    finally:
        plane.stop()
    write_results("grpc_model_routing_cost", {"results": results, "envoy_concurrency": 1}, table)


if __name__ == "__main__":
    interrupt_on_stop_signals()  # Triton/Envoy started here are stopped on SIGTERM or SIGHUP too (localnet.signals)
    main()
