"""One request through a real Envoy into a real Triton yields one linked trace.

Everything is configured the way the platform is: the OTEL_* environment names the collector
(here the local receiver), Triton's command line and Envoy's bootstrap read it, and the HCM's
tracing field comes from ``DataPlaneSettings.tracing`` over ADS.  The client sends a W3C
``traceparent``; the test waits (on the receiver's file, not a sleep) for the spans and checks
the tree: client span -> Envoy server span -> Envoy upstream span -> Triton InferRequest ->
the ensemble -> each step -> compute.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import requests
from tritonclient.grpc import service_pb2, service_pb2_grpc

from fleet.triton_process import TritonProcess, prepare_backend_dir
from localnet.ports import free_port
from model_repository.definitions import load_models
from model_repository.triton_config import Target, write_repository
from tracing.receiver import OtlpReceiver
from tracing.settings import TracingSettings
from tracing.traces import ENVOY_SERVICE, TRITON_SERVICE, Trace, group_traces, linked_problems, read_spans
from xds_server import (
    DataPlaneSettings,
    Endpoint,
    EnvoyProcess,
    PoolEndpoints,
    XdsServer,
    build_snapshot,
    even_routes,
    validate_bootstrap,
    write_envoy_bootstrap,
)

pytestmark = pytest.mark.integration
MODELS = ("text_embedding", "digits_classifier")


@dataclass
class TracedPlane:
    receiver: OtlpReceiver
    triton: TritonProcess
    envoy: EnvoyProcess
    settings: DataPlaneSettings
    xds: XdsServer
    pools: list[PoolEndpoints]

    def publish(self, settings: DataPlaneSettings) -> None:
        """New settings over ADS; returns once Envoy ACKed them."""
        version = self.xds.set_snapshot(build_snapshot(self.pools, even_routes(self.pools, settings), settings))
        assert self.xds.wait_acked(version, 10), "Envoy did not ACK the new listeners"
        self.settings = settings

    def envoy_counter(self, name: str) -> int:
        for line in self.envoy.admin_get("/stats?filter=" + name).splitlines():
            if line.startswith(name + ":"):
                return int(line.split(":", 1)[1])
        return 0

    def spans_of(self, trace_id: str, *, services: set[str], timeout_s: float = 30.0, linked: bool = True) -> Trace:
        """Wait until the receiver holds spans of ``trace_id`` from every one of ``services``
        (Envoy and Triton export in batches, every 1-5 s), linked into one Envoy -> Triton tree
        unless ``linked`` is False."""
        deadline = time.monotonic() + timeout_s
        while True:
            trace = group_traces(read_spans(self.receiver.out)).get(trace_id)
            seen = {s["service"] for s in trace.spans} if trace else set()
            if services <= seen and trace is not None and (not linked or not linked_problems(trace)):
                return trace
            if time.monotonic() > deadline:
                raise AssertionError(f"trace {trace_id}: services {sorted(seen)} after {timeout_s}s, wanted "
                                     f"{sorted(services)}; problems: {linked_problems(trace) if trace else 'no spans'}")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[TracedPlane]:
    root = tmp_path_factory.mktemp("traced")
    receiver = OtlpReceiver(root / "spans.jsonl").start()
    settings = TracingSettings(endpoint=receiver.endpoint, sample_ratio=1.0)
    models = load_models()
    repo = write_repository(root / "repo", [(models[m], Target("cpu", instances=1)) for m in MODELS], artifacts)
    triton = envoy = xds = None
    with pytest.MonkeyPatch.context() as env:
        for key, value in settings.to_env().items():
            env.setenv(key, value)  # what the platform's processes read (docs/tracing.md)
        try:
            triton = TritonProcess("cpu-0", repo, prepare_backend_dir(root / "backends"), root / "triton.log")
            triton.start()
            xds = XdsServer(port=0)
            xds.start()
            dataplane = DataPlaneSettings(http_port=free_port(), grpc_port=free_port(), tracing=settings)
            triton.wait_ready()
            pools = [PoolEndpoints("cpu", "cpu", False, MODELS,
                                   (Endpoint("127.0.0.1", triton.ports.http, triton.ports.grpc),))]
            xds.set_snapshot(build_snapshot(pools, even_routes(pools, dataplane), dataplane))
            bootstrap = write_envoy_bootstrap(root / "envoy.yaml", node_id="envoy-trace-test", xds_port=xds.port)
            validate_bootstrap(bootstrap)
            envoy = EnvoyProcess(bootstrap, concurrency=1, log_path=root / "envoy.log")
            envoy.start().wait_ready(timeout_s=30)
            yield TracedPlane(receiver, triton, envoy, dataplane, xds, pools)
        finally:
            if envoy is not None:
                envoy.stop()
            if xds is not None:
                xds.stop()
            if triton is not None:
                triton.stop()
            receiver.stop()


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def _names_under(trace: Trace, span_name: str) -> set[str]:
    parents = {s["span_id"] for s in trace.spans if s["name"] == span_name and s["service"] == TRITON_SERVICE}
    return {s["name"] for s in trace.spans if s["parent_span_id"] in parents}


def test_one_http_request_yields_linked_envoy_and_triton_spans_down_to_the_ensemble_steps(plane: TracedPlane) -> None:
    trace_id, client_span, traceparent = _traceparent()
    body = {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["a traced sentence"]}]}
    r = requests.post(f"http://127.0.0.1:{plane.settings.http_port}/v2/models/text_embedding/infer", json=body,
                      headers={"traceparent": traceparent, "x-sla-tier": "gold"}, timeout=30)
    assert r.status_code == 200, r.text

    trace = plane.spans_of(trace_id, services={ENVOY_SERVICE, TRITON_SERVICE})
    edge = trace.edge_span()
    assert edge is not None
    assert edge["parent_span_id"] == client_span, "Envoy's server span continues the client's trace context"
    assert edge["attributes"]["sla.tier"] == "gold"
    assert trace.roots() == [edge], "every other span hangs under Envoy's"
    assert _names_under(trace, "text_embedding") == {"text_embedding_tokenizer", "text_embedding_onnx"}
    assert _names_under(trace, "text_embedding_tokenizer") == {"compute"}
    assert _names_under(trace, "text_embedding_onnx") == {"compute"}
    triton_span = next(s for s in trace.spans if s["name"] == "InferRequest")
    # Nested in time as in the tree: Triton received the request after Envoy did, and began sending
    # the answer before Envoy's span ended (Triton's span itself ends when it releases the request,
    # which may be after Envoy has answered).
    sent = min(e["time_ns"] for e in triton_span["events"] if e["name"] == "HTTP_SEND_START")
    assert edge["start_ns"] <= triton_span["start_ns"] <= sent <= edge["end_ns"]


# Triton 2.51's gRPC front end drops the caller's trace context on some requests when the CPU is
# contended (its InferRequest span then starts a trace of its own): measured straight to Triton,
# no Envoy, 46 of 60 linked with three busy loops on 2 cores and 60 of 60 quiet; HTTP 30 of 30
# both ways (docs/tracing.md).  So the gRPC path is asked for one linked trace out of a few tries,
# and every try must still yield Envoy's spans and a Triton span somewhere.
GRPC_TRIES = 5


def test_a_grpc_request_is_traced_the_same_way(plane: TracedPlane) -> None:
    request = service_pb2.ModelInferRequest(model_name="digits_classifier")
    tensor = request.inputs.add(name="float_input", datatype="FP32", shape=[1, 64])
    tensor.contents.fp32_contents.extend([0.0] * 64)
    unlinked = []
    with grpc.insecure_channel(f"127.0.0.1:{plane.settings.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(GRPC_TRIES):
            trace_id, client_span, traceparent = _traceparent()
            stub.ModelInfer(request, metadata=(("traceparent", traceparent), ("x-sla-tier", "bronze")), timeout=30)
            # Envoy's spans, whether or not Triton kept the context (an unlinked try is still traced)
            edge_only = plane.spans_of(trace_id, services={ENVOY_SERVICE}, timeout_s=30, linked=False)
            try:
                trace = plane.spans_of(trace_id, services={ENVOY_SERVICE, TRITON_SERVICE}, timeout_s=10)
                break
            except AssertionError:
                unlinked.append(edge_only)
        else:
            raise AssertionError(f"none of {GRPC_TRIES} gRPC requests had Triton's span in its trace")
    edge = trace.edge_span()
    assert edge is not None and edge["parent_span_id"] == client_span
    assert edge["attributes"]["sla.tier"] == "bronze"
    assert {s["name"] for s in trace.of_service(TRITON_SERVICE)} >= {"InferRequest", "digits_classifier", "compute"}
    # A try whose context Triton dropped still has its Envoy spans, and Triton traced it on its
    # own: as many root InferRequest spans (no parent) as there were unlinked tries, at least.
    roots = [s for s in read_spans(plane.receiver.out)
             if s["service"] == TRITON_SERVICE and s["name"] == "InferRequest" and not s["parent_span_id"]]
    assert len(roots) >= len(unlinked)
    for t in unlinked:
        assert t.edge_span() is not None


def test_a_request_without_trace_context_starts_a_trace_at_the_edge(plane: TracedPlane) -> None:
    """A client that sends no ``traceparent`` still gets a trace (sampled at the edge: 100% here),
    and Triton's spans join Envoy's: the context Envoy started is what it forwards."""
    before = {s["trace_id"] for s in read_spans(plane.receiver.out)}
    request_id = secrets.token_hex(8)
    body = {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["no context"]}]}
    r = requests.post(f"http://127.0.0.1:{plane.settings.http_port}/v2/models/text_embedding/infer", json=body,
                      headers={"x-request-id": request_id}, timeout=30)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        new = [t for tid, t in group_traces(read_spans(plane.receiver.out)).items() if tid not in before]
        mine = [t for t in new if (e := t.edge_span()) is not None and e["attributes"].get("guid:x-request-id") == request_id]
        if mine and not linked_problems(mine[0]):
            assert mine[0].edge_span()["attributes"]["sla.tier"] == "silver"  # the default tier, recorded
            return
        time.sleep(0.2)
    raise AssertionError(f"no linked trace for x-request-id {request_id}")


def test_at_zero_sampling_a_client_can_still_ask_for_a_trace_with_x_client_trace_id(plane: TracedPlane) -> None:
    """Envoy does not follow a ``traceparent``'s sampled flag: the edge decides (random_sampling).
    ``x-client-trace-id`` is Envoy's way for a client to ask for its request to be traced
    (``client_sampling``, 100%): how an operator traces one slow request on a platform sampling 1%.
    Runs last in this module: it turns random sampling off."""
    assert plane.settings.tracing is not None
    plane.publish(dataclasses.replace(plane.settings, tracing=dataclasses.replace(plane.settings.tracing,
                                                                                   sample_ratio=0.0)))
    url = f"http://127.0.0.1:{plane.settings.http_port}/v2/models/digits_classifier/infer"
    body = {"inputs": [{"name": "float_input", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}
    sampled_before = plane.envoy_counter("http.http.tracing.random_sampling")
    _, _, unsampled = _traceparent()
    assert requests.post(url, json=body, headers={"traceparent": unsampled}, timeout=30).status_code == 200
    assert plane.envoy_counter("http.http.tracing.random_sampling") == sampled_before, "0% traced nothing at random"

    trace_id, client_span, traceparent = _traceparent()
    r = requests.post(url, json=body, headers={"traceparent": traceparent, "x-client-trace-id": "debug-1"}, timeout=30)
    assert r.status_code == 200
    trace = plane.spans_of(trace_id, services={ENVOY_SERVICE, TRITON_SERVICE})
    edge = trace.edge_span()
    assert edge is not None and edge["parent_span_id"] == client_span
