"""A tiny KServe v2 upstream (gRPC + HTTP) that says which pool it is, for tests with real Envoy.

Run as a process so a test can SIGKILL a whole "pool":
    python -m xds_server.fake_kserve --pool cpu --models a,b
It prints one JSON line ``{"http_port": .., "grpc_port": ..}`` once both ports listen.
ModelInfer echoes the model name and puts the pool in the response's ``parameters["pool"]``;
the HTTP infer answers JSON with the same.  Unknown models get NOT_FOUND / 404 like Triton.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc


class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, pool: str, models: set[str]) -> None:
        self.pool, self.models = pool, models

    def _check(self, name: str, context: grpc.ServicerContext) -> None:
        if name not in self.models:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{name}' is not found")

    def ServerLive(self, request, context):  # noqa: N802
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):  # noqa: N802
        return service_pb2.ServerReadyResponse(ready=True)

    def ModelReady(self, request, context):  # noqa: N802
        return service_pb2.ModelReadyResponse(ready=request.name in self.models)

    def ModelMetadata(self, request, context):  # noqa: N802
        self._check(request.name, context)
        return service_pb2.ModelMetadataResponse(name=request.name, versions=["1"], platform=f"fake:{self.pool}")

    def ModelInfer(self, request, context):  # noqa: N802
        self._check(request.model_name, context)
        response = service_pb2.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
        response.parameters["pool"].string_param = self.pool
        out = response.outputs.add(name="OUT", datatype="INT32", shape=[1])
        del out
        response.raw_output_contents.append((len(request.raw_input_contents)).to_bytes(4, "little"))
        return response


def http_handler(pool: str, models: set[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: dict | list) -> None:
            # Status line, headers and body in one write: a pool SIGKILLed between two writes left
            # Envoy a response already begun (headers forwarded) that no retry can finish; a
            # failover test saw 1 such truncated answer in ~3,900.
            data = json.dumps(body).encode()
            head = (f"{self.protocol_version} {status} {self.responses.get(status, ('',))[0]}\r\n"
                    f"content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n").encode()
            self.wfile.write(head + data)

        def _route(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            parts = self.path.split("?")[0].strip("/").split("/")
            if parts[:2] == ["v2", "health"]:
                return self._send(200, {})
            if parts == ["v2", "repository", "index"]:  # KServe v2 repository extension, as Triton answers
                return self._send(200, [{"name": m, "version": "1", "state": "READY"} for m in sorted(models)])
            if parts[:2] == ["v2", "models"] and len(parts) >= 3:
                model = parts[2]
                if model not in models:
                    return self._send(404, {"error": f"Request for unknown model: '{model}' is not found"})
                if parts[3:] == ["infer"]:
                    return self._send(200, {"model_name": model, "outputs": [], "parameters": {"pool": pool}})
                return self._send(200, {"name": model, "platform": f"fake:{pool}"})
            return self._send(200, {"name": "fake", "pool": pool})

        do_GET = do_POST = _route  # noqa: N815

    return Handler


def serve(pool: str, models: set[str], host: str = "127.0.0.1") -> tuple[grpc.Server, ThreadingHTTPServer, int, int]:
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(pool, models), grpc_server)
    grpc_port = grpc_server.add_insecure_port(f"{host}:0")
    grpc_server.start()
    http_server = ThreadingHTTPServer((host, 0), http_handler(pool, models))
    http_server.daemon_threads = True
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    return grpc_server, http_server, http_server.server_address[1], grpc_port


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pool", required=True)
    parser.add_argument("--models", required=True)
    args = parser.parse_args()
    grpc_server, _http, http_port, grpc_port = serve(args.pool, set(args.models.split(",")))
    print(json.dumps({"http_port": http_port, "grpc_port": grpc_port}), flush=True)
    # Exit when the parent closes our stdin (the test ended): no orphan servers.
    sys.stdin.read()
    grpc_server.stop(0)


if __name__ == "__main__":
    main()
