"""Base locust users that call the platform through Envoy and report the pool that served.

Two protocols, one contract: each request carries the user's ``x-sla-tier``; each result is
reported through ``events.request.fire`` named ``<tier>/<model>/<pool>`` (so locust's stats split
by tier, model and serving pool) and appended to the records file (``records.py``).

- gRPC: tritonclient's generated stub (``service_pb2_grpc``) called with ``with_call``, because
  ``tritonclient.grpc.InferenceServerClient`` hides the response metadata that carries
  ``x-served-by``; the response is decoded with tritonclient's ``InferResult``.
- HTTP: tritonclient's binary request encoder over geventhttpclient (the client tritonclient.http
  itself uses), again because tritonclient.http does not expose response headers.

``grpc.experimental.gevent.init_gevent()`` must run before any channel exists, or gRPC calls in
locust run one at a time with no warning (FINDINGS): the locustfile imports this module first.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from typing import Any, ClassVar
from urllib.parse import urlsplit

import gevent
import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, events

from locustfiles.payloads import Batch, check_outputs, grpc_request, http_body, make_batch
from locustfiles.records import RecordWriter, RequestRecord
from locustfiles.settings import (
    GRPC_TARGET_ENV,
    RECORDS_ENV,
    SEED_ENV,
    connect_first,
    first_request_delay_s,
    next_due_s,
    pacing,
    pacing_period_s,
    require_loopback,
    start_phase,
)

grpc_gevent.init_gevent()

TIMEOUT_S = 10.0

_writer = RecordWriter(None)
_user_numbers: dict[str, itertools.count[int]] = {}


def grpc_target(http_host_url: str) -> str:
    target = os.environ.get(GRPC_TARGET_ENV) or f"{urlsplit(http_host_url).hostname}:8001"
    require_loopback(target.rsplit(":", 1)[0].strip("[]"), GRPC_TARGET_ENV)
    return target


@events.init.add_listener
def _open_records(environment: Any, **_: Any) -> None:
    global _writer
    _writer = RecordWriter(os.environ.get(RECORDS_ENV))
    host = environment.host or ""
    if host:
        require_loopback(urlsplit(host).hostname or "", "the -H host")


@events.quitting.add_listener
def _close_records(**_: Any) -> None:
    _writer.close()


def _header(resp: Any, name: str) -> str:
    """One response header as a string ("" when absent; the first when repeated)."""
    value = resp.get(name)
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value or "")


class InferenceUser(User):
    """One tier x model x protocol.  Subclasses set the class attributes below."""

    abstract = True
    model: ClassVar[str]
    tier: ClassVar[str]
    batch_size: ClassVar[int] = 1
    protocol: ClassVar[str]
    requests_per_s: ClassVar[float] = 1.0

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        name = type(self).__name__
        n = next(_user_numbers.setdefault(name, itertools.count()))
        # Same seed -> the same inputs per user, so runs against different fleets see identical load.
        seed = f"{os.environ.get(SEED_ENV, '1')}:{name}:{n}"
        self.rng = random.Random(seed)
        # Their own streams, so the inputs stay those of the same seed whatever the start phase and pacing.
        self.start_delay_s = first_request_delay_s(start_phase(os.environ), self.requests_per_s,
                                                   random.Random(f"{seed}:phase"))
        self.pacing = pacing(os.environ)
        self.pacing_rng = random.Random(f"{seed}:pacing")
        self.due_s = time.perf_counter()

    def wait_for_start_phase(self) -> None:
        """Called last in ``on_start`` (after the connection is open): the first request waits for its
        phase, and the pacing (``wait_time``) counts from it."""
        if self.start_delay_s > 0:
            gevent.sleep(self.start_delay_s)
        self.due_s = time.perf_counter()

    def wait_time(self) -> float:  # type: ignore[override]
        """Closed-loop pacing at ``requests_per_s`` (``LOAD_PACING``: random gaps by default, or exactly
        one period), anchored at this user's first request (locust's
        ``constant_throughput`` anchors at the user's creation, which would undo the start phase): the
        next request is due as ``next_due_s`` says."""
        now = time.perf_counter()
        self.due_s = next_due_s(self.due_s, pacing_period_s(self.pacing, self.requests_per_s, self.pacing_rng), now)
        return self.due_s - now

    def report(self, batch: Batch, started_unix_s: float, latency_ms: float, pool: str, emulated: bool,
               error: str, response_length: int) -> None:
        label = f"{self.tier}/{self.model}/{pool or 'none'}"
        self.environment.events.request.fire(
            request_type=self.protocol, name=label, response_time=latency_ms, response_length=response_length,
            exception=RuntimeError(error) if error else None, context={"tier": self.tier, "pool": pool},
        )
        _writer.write(RequestRecord(
            t_unix_s=round(started_unix_s, 4), tier=self.tier, model=self.model, protocol=self.protocol,
            pool=pool, emulated=emulated, latency_ms=round(latency_ms, 3), ok=not error, batch=batch.size,
            error=error[:200],
        ))


class GrpcInferenceUser(InferenceUser):
    abstract = True
    protocol = "grpc"

    def on_start(self) -> None:
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        self.channel = grpc.insecure_channel(grpc_target(self.host or "http://127.0.0.1:8000"))
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)
        self.metadata = (("x-sla-tier", self.tier),)
        if connect_first(os.environ):  # TCP + HTTP/2 to Envoy now, not in the first measured request
            # An RPC, not grpc.channel_ready_future: under gevent that one's connectivity polling
            # blocked the whole event loop for 0.2 s, delaying every request in flight whenever
            # users were added mid-run (measured: ~200 ms at each burst of the burst shape).
            try:
                self.stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=TIMEOUT_S)
            except grpc.RpcError:
                pass  # best effort: the first request connects (or fails, and is recorded as failed)
        self.wait_for_start_phase()

    def on_stop(self) -> None:
        self.channel.close()

    def infer(self) -> None:
        from tritonclient.grpc import InferResult

        batch = make_batch(self.model, self.batch_size, self.rng)
        request = grpc_request(batch)
        started = time.time()
        t0 = time.perf_counter()
        metadata: dict[str, str] = {}
        error, size = "", 0
        try:
            response, call = self.stub.ModelInfer.with_call(request, metadata=self.metadata, timeout=TIMEOUT_S)
            latency_ms = (time.perf_counter() - t0) * 1000.0
            metadata = dict(call.initial_metadata() or ())
            result = InferResult(response)
            error = check_outputs(batch, {o.name: result.as_numpy(o.name) for o in response.outputs})
            size = response.ByteSize()
        except grpc.RpcError as e:
            latency_ms = (time.perf_counter() - t0) * 1000.0
            metadata = {**dict(e.initial_metadata() or ()), **dict(e.trailing_metadata() or ())}  # type: ignore[attr-defined]
            error = f"{e.code().name}: {e.details()}"  # type: ignore[attr-defined]
        self.report(batch, started, latency_ms, str(metadata.get("x-served-by", "")),
                    metadata.get("x-emulated") == "true", error, size)


class HttpInferenceUser(InferenceUser):
    abstract = True
    protocol = "http"

    def on_start(self) -> None:
        from geventhttpclient import HTTPClient

        url = urlsplit(self.host or "http://127.0.0.1:8000")
        require_loopback(url.hostname or "", "the -H host")
        self.http = HTTPClient(url.hostname or "127.0.0.1", url.port or 80, concurrency=1, connection_timeout=TIMEOUT_S,
                               network_timeout=TIMEOUT_S)
        self.path = f"/v2/models/{self.model}/infer"
        if connect_first(os.environ):  # opens the kept-alive connection the requests reuse (concurrency=1)
            try:
                self.http.get("/v2/health/ready").read()
            except Exception:  # noqa: BLE001 - best effort: the first request connects (or fails, recorded)
                pass
        self.wait_for_start_phase()

    def on_stop(self) -> None:
        self.http.close()

    def infer(self) -> None:
        import tritonclient.http as httpclient

        batch = make_batch(self.model, self.batch_size, self.rng)
        body, json_size = http_body(batch)
        headers = {"x-sla-tier": self.tier, "Content-Type": "application/octet-stream",
                   "Inference-Header-Content-Length": str(json_size)}
        started = time.time()
        t0 = time.perf_counter()
        error, pool, emulated, size = "", "", False, 0
        try:
            resp = self.http.post(self.path, body=body, headers=headers)
            content = resp.read()
            latency_ms = (time.perf_counter() - t0) * 1000.0
            pool, emulated, size = _header(resp, "x-served-by"), _header(resp, "x-emulated") == "true", len(content)
            if resp.status_code != 200:
                error = f"HTTP {resp.status_code}: {content[:160].decode(errors='replace')}"
            else:
                header_length = _header(resp, "inference-header-content-length")
                result = httpclient.InferenceServerClient.parse_response_body(
                    content, header_length=int(header_length) if header_length else None,
                    content_encoding=_header(resp, "content-encoding") or None)
                error = check_outputs(batch, {o["name"]: result.as_numpy(o["name"])
                                              for o in result.get_response()["outputs"]})
        except Exception as e:  # noqa: BLE001 - any client failure is a failed request, reported as such
            latency_ms = (time.perf_counter() - t0) * 1000.0
            error = f"{type(e).__name__}: {e}"
        self.report(batch, started, latency_ms, pool, emulated, error, size)
