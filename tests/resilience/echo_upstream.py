"""An upstream that answers what it received (KServe v2 REST and gRPC), to check what the edge
writes into requests: the REST body and headers as received, and the gRPC request's ``priority``
parameter.  Runs in the test's process on loopback ports chosen at run time."""

from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

# A request carrying this (REST body, gRPC request id) is answered as a shed one.
SHED_MARKER = "shed-me"
# A gRPC request with this id is answered UNAVAILABLE as by a replica that is stopping.
STOPPING_MARKER = "stopping"
# How many tries of each marked request reached the upstream (Envoy's retries included).
TRIES: Counter[str] = Counter()
_TRIES_LOCK = threading.Lock()


def _count(marker: str) -> None:
    with _TRIES_LOCK:
        TRIES[marker] += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if SHED_MARKER.encode() in body:  # answer as Triton's queue policy does when it sheds
            _count("http:" + SHED_MARKER)
            return self._send(503, json.dumps({"error": "[request id: <id_unknown>] Exceeds maximum queue size"}).encode())
        data = json.dumps({"body": body.decode("latin-1"), "headers": {k.lower(): v for k, v in self.headers.items()}})
        self._send(200, data.encode())

    def _send(self, status: int, encoded: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(encoded)))
        self.end_headers()
        self.wfile.write(encoded)

    do_GET = do_POST  # noqa: N815


class _Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def ModelInfer(self, request, context):  # noqa: N802
        if request.id in (SHED_MARKER, STOPPING_MARKER):
            _count("grpc:" + request.id)
        if request.id == SHED_MARKER:
            context.abort(grpc.StatusCode.UNAVAILABLE, "Exceeds maximum queue size")
        if request.id == STOPPING_MARKER:
            context.abort(grpc.StatusCode.UNAVAILABLE, "Server is stopping")
        response = service_pb2.ModelInferResponse(model_name=request.model_name, id=request.id)
        for key, value in request.parameters.items():
            response.parameters[key].CopyFrom(value)
        return response


class EchoUpstream:
    def __init__(self) -> None:
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_Servicer(), self.grpc)
        self.grpc_port = self.grpc.add_insecure_port("127.0.0.1:0")
        self.grpc.start()

    @property
    def http_port(self) -> int:
        return self.http.server_address[1]

    def stop(self) -> None:
        self.http.shutdown()
        self.grpc.stop(0)
