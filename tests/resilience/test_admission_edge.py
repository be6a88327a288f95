"""The edge's per-tier admission filter, through the real Envoy, against an upstream that echoes
what it received: each tier's request reaches the pool with its Triton ``priority`` (REST JSON and
gRPC), whatever the client wrote, without disturbing the rest of the request; and a reply the pool
shed comes back as 429 / RESOURCE_EXHAUSTED with a retry hint."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests
from tritonclient.grpc import service_pb2, service_pb2_grpc

from localnet.ports import free_port
from router_lib.config import load_tiers
from tests.resilience.echo_upstream import SHED_MARKER, STOPPING_MARKER, TRIES, EchoUpstream
from xds_server import (
    DataPlaneSettings,
    Endpoint,
    EnvoyProcess,
    PoolEndpoints,
    RouteWeights,
    XdsServer,
    build_snapshot,
    write_envoy_bootstrap,
)
from xds_server.overload import tier_resilience
from xds_server.testbed import ROOT

pytestmark = pytest.mark.integration
LEVELS = {"gold": 1, "silver": 2, "bronze": 3}


class Edge:
    def __init__(self, settings: DataPlaneSettings, envoy: EnvoyProcess) -> None:
        self.settings, self.envoy = settings, envoy

    def rest(self, body: bytes, tier: str | None = None, headers: dict[str, str] | None = None) -> requests.Response:
        h = {"content-type": "application/json", **({"x-sla-tier": tier} if tier else {}), **(headers or {})}
        return requests.post(f"http://127.0.0.1:{self.settings.http_port}/v2/models/m/infer", data=body, headers=h,
                             timeout=10)

    def received(self, body: bytes, tier: str | None = None, headers: dict[str, str] | None = None) -> dict:
        response = self.rest(body, tier, headers)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def edge() -> Iterator[Edge]:
    upstream = EchoUpstream()
    settings = DataPlaneSettings(http_port=free_port(), grpc_port=free_port(),
                                 **tier_resilience(load_tiers(ROOT / "data" / "tiers.yaml")))
    pool = PoolEndpoints("echo", "gpu", True, ("m",), (Endpoint("127.0.0.1", upstream.http_port, upstream.grpc_port),))
    routes = [RouteWeights.of("m", tier, (("echo", settings.total_weight),)) for tier in LEVELS]
    xds = XdsServer(port=0)
    xds.start()
    envoy = None
    try:
        version = xds.set_snapshot(build_snapshot([pool], routes, settings))
        workdir = Path(tempfile.mkdtemp(prefix="admission-"))
        envoy = EnvoyProcess(write_envoy_bootstrap(workdir / "envoy.yaml", node_id="admission", xds_port=xds.port),
                             concurrency=1, log_path=workdir / "envoy.log").start()
        envoy.wait_ready(timeout_s=30)
        assert xds.wait_acked(version, timeout_s=10)
        yield Edge(settings, envoy)
    finally:
        if envoy is not None:
            envoy.stop()
        xds.stop()
        upstream.stop()


INPUT = {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.5, 2.5]}


@pytest.mark.parametrize(("body", "expected_parameters"), [
    pytest.param({"inputs": [INPUT]}, {}, id="no-parameters"),
    pytest.param({"parameters": {}, "inputs": [INPUT]}, {}, id="empty-parameters"),
    pytest.param({"inputs": [INPUT], "parameters": {"sequence_id": 7, "tag": "a}\"{"}},
                 {"sequence_id": 7, "tag": "a}\"{"}, id="client-parameters-kept"),
    pytest.param({"id": "x\"}{[", "inputs": [{**INPUT, "parameters": {"binary_data_size": 8}}]}, {},
                 id="nested-parameters-and-braces-in-strings"),
    pytest.param({"inputs": [INPUT], "parameters": {"priority": 1}}, {}, id="client-cannot-pick-its-priority"),
])
@pytest.mark.parametrize("tier", ["gold", "silver", "bronze", None])
def test_each_tier_reaches_the_pool_with_its_priority_and_the_rest_unchanged(edge, body, expected_parameters, tier):
    raw = edge.received(json.dumps(body).encode(), tier)["body"]
    level = LEVELS[tier or edge.settings.default_tier]
    # Whichever of duplicate keys a parser keeps (Triton: the first; Python: the last), it is ours.
    first = json.loads(raw, object_pairs_hook=lambda pairs: {k: v for k, v in reversed(pairs)})
    last = json.loads(raw)
    for got in (first, last):
        assert got["parameters"] == {**expected_parameters, "priority": level}
    assert {k: v for k, v in got.items() if k != "parameters"} == {k: v for k, v in body.items() if k != "parameters"}


def test_the_binary_tensor_extension_keeps_its_tensors_and_a_correct_header_length(edge):
    header = json.dumps({"inputs": [{"name": "x", "shape": [2], "datatype": "INT32",
                                     "parameters": {"binary_data_size": 8}}]}).encode()
    tensors = bytes(range(8))
    got = edge.received(header + tensors, "bronze", {"inference-header-content-length": str(len(header)),
                                                     "content-type": "application/octet-stream"})
    raw = got["body"].encode("latin-1")
    length = int(got["headers"]["inference-header-content-length"])
    assert json.loads(raw[:length])["parameters"] == {"priority": 3}
    assert raw[length:] == tensors


def test_a_body_that_is_not_a_json_object_passes_unchanged(edge):
    assert edge.received(b"[1, 2]", "gold")["body"] == "[1, 2]"
    assert edge.received(b"not json", "gold")["body"] == "not json"


def test_an_unknown_tier_is_still_refused_by_the_route(edge):
    assert edge.rest(json.dumps({"inputs": [INPUT]}).encode(), "platinum").status_code == 400


def test_a_shed_rest_request_is_429_with_a_retry_hint_naming_its_tier(edge):
    before = TRIES["http:" + SHED_MARKER]
    response = edge.rest(json.dumps({"id": SHED_MARKER, "inputs": [INPUT]}).encode(), "bronze")
    assert TRIES["http:" + SHED_MARKER] - before == 1, "a shed is not retried"
    assert response.status_code == 429
    assert response.headers["retry-after"] == str(edge.settings.overload.retry_after_s)
    assert "bronze" in response.json()["error"] and "queue" in response.json()["error"]


def _grpc(edge: Edge, tier: str, request: service_pb2.ModelInferRequest):  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(f"127.0.0.1:{edge.settings.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        return stub.ModelInfer.with_call(request, metadata=[("x-sla-tier", tier)], timeout=10)


@pytest.mark.parametrize("tier", ["gold", "bronze"])
def test_grpc_requests_reach_the_pool_with_their_tier_priority_even_if_the_client_set_one(edge, tier):
    request = service_pb2.ModelInferRequest(model_name="m", id="r1")
    request.parameters["priority"].int64_param = 1
    request.parameters["sequence_id"].int64_param = 9
    response, _call = _grpc(edge, tier, request)
    assert response.parameters["priority"].int64_param == LEVELS[tier]
    assert response.parameters["sequence_id"].int64_param == 9
    assert response.id == "r1"


@pytest.mark.parametrize("tier", ["gold", "bronze"])
def test_a_shed_grpc_request_is_resource_exhausted_with_a_pushback_and_not_retried(edge, tier):
    before = TRIES["grpc:" + SHED_MARKER]
    with pytest.raises(grpc.RpcError) as raised:
        _grpc(edge, tier, service_pb2.ModelInferRequest(model_name="m", id=SHED_MARKER))
    # The shed reached the upstream once: it is the pool's answer, not a dead replica's, so
    # the router did not retry it (as REST does not retry a 503).
    assert TRIES["grpc:" + SHED_MARKER] - before == 1
    error = raised.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    assert tier in error.details()
    trailers = dict(error.trailing_metadata() or ()) | dict(error.initial_metadata() or ())
    assert trailers["grpc-retry-pushback-ms"] == str(edge.settings.overload.retry_after_s * 1000)


def test_an_unavailable_that_is_not_a_shed_is_still_retried(edge):
    """A replica that is stopping answers UNAVAILABLE too; failover needs those retried."""
    before = TRIES["grpc:" + STOPPING_MARKER]
    with pytest.raises(grpc.RpcError) as raised:
        _grpc(edge, "gold", service_pb2.ModelInferRequest(model_name="m", id=STOPPING_MARKER))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert TRIES["grpc:" + STOPPING_MARKER] - before == edge.settings.retry.num_retries + 1
