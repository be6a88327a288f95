"""The shadow comparator: the target of Envoy's request mirroring during a release.

Envoy mirrors a share of a model's live requests here and discards whatever it answers, so a
comparison cannot ride on the mirrored response: the comparator itself sends each mirrored
request to a stable replica and to a candidate replica (directly, not through Envoy, so the
routing metrics stay clean) and compares the two answers.  It speaks both of Triton's protocols:

* KServe v2 REST on its HTTP port (``POST /v2/models/<m>/infer``), asked of the replicas' HTTP ports;
* KServe v2 gRPC on its gRPC port (``inference.GRPCInferenceService/ModelInfer``, h2c), the mirrored
  ``ModelInferRequest`` sent unchanged (its ``model_version`` cleared, so each replica answers with
  its own version) to the replicas' gRPC ports.  The gRPC handler keeps the request as bytes and
  answers an empty ``ModelInferResponse``: parsing waits for the worker, off Envoy's mirror path.

What is compared:

* a classifier (an integer output, e.g. ``label``): the share of equal labels;
* an embedding model (float outputs only): the cosine similarity of the first output, per row.

It exports ``release_agreement_score_sum`` / ``_count`` (scores clamped to [0, 1], so the sum is a
counter), ``release_comparator_errors_total`` and ``release_comparator_dropped_total`` at
``/metrics``; the release watcher reads them like any other counter.  The live path never waits
for it: Envoy does not wait for a mirror, and this server answers at once and compares on a
bounded worker queue (full queue: the request is dropped and counted, never queued forever).

    python -m releases comparator --stable 127.0.0.1:8000[:8001] --candidate 127.0.0.1:9100[:9101] \
        [--port 0] [--grpc-port 0]
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import numpy as np
import requests
from tritonclient.grpc import InferResult, service_pb2

from releases.mirror_http import MirrorHttpServer
from xds_server.tls import ReplicaTls

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
GRPC_ERRORS = (grpc.RpcError, ValueError)

log = logging.getLogger(__name__)


def agreement(stable: dict[str, Any], candidate: dict[str, Any]) -> float:
    """Agreement in [0, 1] of two KServe v2 JSON answers (see the module docstring)."""
    outs_a = {o["name"]: o for o in stable.get("outputs", [])}
    outs_b = {o["name"]: o for o in candidate.get("outputs", [])}
    if not outs_a or set(outs_a) != set(outs_b):
        return 0.0
    names = sorted(outs_a)
    labels = [n for n in names if outs_a[n]["datatype"].startswith(("INT", "UINT", "BOOL"))]
    if labels:
        a, b = np.asarray(outs_a[labels[0]]["data"]), np.asarray(outs_b[labels[0]]["data"])
        return float(np.mean(a == b)) if a.shape == b.shape and a.size else 0.0
    first = next((n for n in names if outs_a[n]["datatype"].startswith("FP")), None)
    if first is None:
        return 1.0 if outs_a == outs_b else 0.0
    shape = outs_a[first].get("shape") or [-1]
    a = np.asarray(outs_a[first]["data"], dtype=np.float64).reshape(-1, shape[-1] if len(shape) > 1 else len(outs_a[first]["data"]))
    b = np.asarray(outs_b[first]["data"], dtype=np.float64)
    if b.size != a.size:
        return 0.0
    b = b.reshape(a.shape)
    cos = np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(np.clip(np.mean(cos), 0.0, 1.0))


def grpc_answer(response: service_pb2.ModelInferResponse) -> dict[str, Any]:
    """A gRPC ``ModelInferResponse`` as the KServe v2 JSON answer ``agreement`` reads (flat data)."""
    result = InferResult(response)
    outputs = []
    for o in response.outputs:
        data = result.as_numpy(o.name)
        outputs.append({"name": o.name, "datatype": o.datatype, "shape": list(o.shape),
                        "data": np.asarray(data).reshape(-1).tolist() if data is not None else []})
    return {"outputs": outputs}


@dataclass
class Comparator:
    """``stable`` / ``candidate``: ``host:port`` of the HTTP KServe endpoints to ask (round robin).
    ``grpc_port``: None = no gRPC listener; 0 = any free port.  Mirrored gRPC requests are asked of
    ``stable_grpc`` / ``candidate_grpc`` (``host:port`` of the replicas' gRPC endpoints)."""

    stable: Sequence[str]
    candidate: Sequence[str]
    port: int = 0
    grpc_port: int | None = None
    stable_grpc: Sequence[str] = ()
    candidate_grpc: Sequence[str] = ()
    # "asyncio": the lean front of releases.mirror_http (default); "threads": http.server's
    # ThreadingHTTPServer (kept to measure against: benchmarks/release/mirror_overhead.py)
    http_front: str = "asyncio"
    host: str = "127.0.0.1"
    workers: int = 2
    queue_size: int = 64
    timeout_s: float = 5.0
    # mTLS to the replicas' gRPC ports (a platform with mTLS on); None: plaintext.  The comparator's
    # own ports stay plaintext on loopback (Envoy's mirror clusters carry no TLS).
    replica_tls: ReplicaTls | None = None
    score_sum: float = 0.0
    score_count: int = 0
    errors: int = 0
    dropped: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    compared: dict[str, int] = field(default_factory=lambda: {"http": 0, "grpc": 0})
    _queue: queue.Queue[tuple[str, str, bytes] | None] = field(default_factory=queue.Queue)
    _threads: list[threading.Thread] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _front: MirrorHttpServer | None = None
    _grpc_server: grpc.Server | None = None
    _turn: int = 0

    def start(self) -> Comparator:
        if self.grpc_port is not None and (not self.stable_grpc or not self.candidate_grpc):
            raise ValueError("a comparator with a gRPC port needs the gRPC endpoints of a stable and a candidate "
                             "replica (HOST:HTTP_PORT:GRPC_PORT)")
        if self.http_front not in ("asyncio", "threads"):
            raise ValueError(f"http_front must be 'asyncio' or 'threads', got {self.http_front!r}")
        self._queue = queue.Queue(maxsize=self.queue_size)
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"comparator-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        if self.http_front == "asyncio":
            self._front = MirrorHttpServer(self.host, self.port, self.submit, self.metrics_text).start()
            self.port = self._front.port
        else:
            self._server = ThreadingHTTPServer((self.host, self.port), _handler(self))
            self._server.daemon_threads = True
            self.port = int(self._server.server_address[1])
            t = threading.Thread(target=self._server.serve_forever, name="comparator-http", daemon=True)
            t.start()
            self._threads.append(t)
        if self.grpc_port is not None:
            # Two threads suffice: the handler only queues the bytes (the comparing is the workers')
            from concurrent.futures import ThreadPoolExecutor

            self._grpc_server = grpc.server(ThreadPoolExecutor(max_workers=2, thread_name_prefix="comparator-grpc"))
            self._grpc_server.add_generic_rpc_handlers((_GrpcMirror(self),))
            self.grpc_port = self._grpc_server.add_insecure_port(f"{self.host}:{self.grpc_port}")
            self._grpc_server.start()
        return self

    @property
    def address(self) -> str:
        """``host:http_port`` or, with gRPC, ``host:http_port:grpc_port`` (``releases start --comparator``)."""
        return f"{self.host}:{self.port}" + (f":{self.grpc_port}" if self.grpc_port is not None else "")

    def submit(self, path: str, body: bytes, proto: str = "http") -> None:
        try:
            self._queue.put_nowait((proto, path, body))
        except queue.Full:
            with self._lock:
                self.dropped += 1

    def _ask_http(self, session: requests.Session, target: str, path: str, body: bytes) -> dict[str, Any]:
        r = session.post(f"http://{target}{path}", data=body, timeout=self.timeout_s,
                         headers={"Content-Type": "application/json"})
        r.raise_for_status()
        return dict(r.json())

    def _ask_grpc(self, channels: dict[str, grpc.Channel], target: str, request: service_pb2.ModelInferRequest,
                  ) -> dict[str, Any]:
        if target not in channels:
            channels[target] = self.replica_tls.channel(target) if self.replica_tls else grpc.insecure_channel(target)
        call = channels[target].unary_unary(MODEL_INFER, request_serializer=service_pb2.ModelInferRequest.SerializeToString,
                                            response_deserializer=service_pb2.ModelInferResponse.FromString)
        return grpc_answer(call(request, timeout=self.timeout_s))

    def _work(self) -> None:
        session = requests.Session()
        channels: dict[str, grpc.Channel] = {}
        while True:
            item = self._queue.get()
            if item is None:
                for channel in channels.values():
                    channel.close()
                return
            proto, path, body = item
            with self._lock:
                self._turn += 1
                turn = self._turn
            try:
                if proto == "grpc":
                    request = service_pb2.ModelInferRequest.FromString(body)
                    request.model_version = ""  # each replica answers with its own version
                    answers = [self._ask_grpc(channels, targets[turn % len(targets)], request)
                               for targets in (self.stable_grpc, self.candidate_grpc)]
                else:
                    answers = [self._ask_http(session, targets[turn % len(targets)], path, body)
                               for targets in (self.stable, self.candidate)]
                score = agreement(answers[0], answers[1])
                with self._lock:
                    self.score_sum += score
                    self.score_count += 1
                    self.compared[proto] += 1
            except (requests.RequestException, *GRPC_ERRORS, KeyError) as e:
                log.debug("comparison failed (%s): %s", proto, e)
                with self._lock:
                    self.errors += 1

    def metrics_text(self) -> str:
        with self._lock:
            return ("# TYPE release_agreement_score summary\n"
                    f"release_agreement_score_sum {self.score_sum}\n"
                    f"release_agreement_score_count {self.score_count}\n"
                    "# TYPE release_comparator_errors counter\n"
                    f"release_comparator_errors_total {self.errors}\n"
                    "# TYPE release_comparator_dropped counter\n"
                    f"release_comparator_dropped_total {self.dropped}\n"
                    "# TYPE release_comparator_compared counter\n"
                    + "".join(f'release_comparator_compared_total{{proto="{p}"}} {n}\n'
                              for p, n in sorted(self.compared.items())))

    def stop(self) -> None:
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None)
        if self._front is not None:
            self._front.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for _ in range(self.workers):
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass


class _GrpcMirror(grpc.GenericRpcHandler):
    """Serves ``ModelInfer`` only (any other method: UNIMPLEMENTED, which Envoy discards too)."""

    def __init__(self, comparator: Comparator) -> None:
        self.comparator = comparator

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if handler_call_details.method != MODEL_INFER:
            return None

        def infer(request: bytes, context: grpc.ServicerContext) -> bytes:
            self.comparator.submit(MODEL_INFER, request, "grpc")
            return b""  # an empty ModelInferResponse

        return grpc.unary_unary_rpc_method_handler(infer)


def _handler(comparator: Comparator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: object) -> None:
            pass

        def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/metrics"):
                self._send(200, comparator.metrics_text().encode(), "text/plain; version=0.0.4")
            else:
                self._send(200, b'{"comparator": true}')

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.startswith("/v2/models/") and self.path.endswith("/infer"):
                comparator.submit(self.path, body)
            self._send(200, json.dumps({"mirrored": True}).encode())

    return Handler
