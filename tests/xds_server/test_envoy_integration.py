"""Real Envoy + the real ADS server + small real KServe upstreams (one process per pool).

Counts successes and failures like go-control-plane's integration tier: routing by model (REST path
and gRPC body) and tier, weights, errors for unknown tier/model, who-served headers, convergence,
failover with zero failed requests, and proxyless gRPC.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from xds_server import RouteWeights, XdsServer, build_snapshot, write_proxyless_bootstrap
from xds_server.testbed import ROOT, DataPlane, FakePool

pytestmark = pytest.mark.integration

POOLS = {
    "cpu": ("text_embedding", "digits_classifier"),
    "gpu": ("text_embedding", "digits_classifier"),
    "inferentia": ("text_embedding",),
}
ROUTES = [
    RouteWeights.of("text_embedding", "gold", (("gpu", 70), ("inferentia", 30))),
    RouteWeights.of("text_embedding", "silver", (("cpu", 50), ("inferentia", 50))),
    RouteWeights.of("text_embedding", "bronze", (("cpu", 100),)),
    RouteWeights.of("digits_classifier", "gold", (("gpu", 100),)),
    RouteWeights.of("digits_classifier", "silver", (("cpu", 100),)),
    RouteWeights.of("digits_classifier", "bronze", (("cpu", 100),)),
]


@pytest.fixture(scope="module")
def plane():
    plane = DataPlane.start(POOLS, ROUTES)
    assert plane.xds.wait_acked(plane.publish(ROUTES), timeout_s=10)
    yield plane
    plane.stop()


@pytest.fixture
def restore(plane):
    yield
    assert plane.xds.wait_acked(plane.publish(ROUTES, plane.pool_endpoints()), timeout_s=10)


def _rest_infer(plane, model, tier=None, session=None):
    headers = {"x-sla-tier": tier} if tier else {}
    return (session or requests).post(
        f"http://{plane.http_url}/v2/models/{model}/infer", json={"inputs": []}, headers=headers, timeout=5
    )


def _grpc_infer(stub, model, tier=None):
    metadata = [("x-sla-tier", tier)] if tier else []
    response, call = stub.ModelInfer.with_call(
        service_pb2.ModelInferRequest(model_name=model), metadata=metadata, timeout=5
    )
    return response.parameters["pool"].string_param, dict(call.initial_metadata())


def _share(counter, pool):
    return counter[pool] / sum(counter.values())


def test_rest_requests_follow_the_weights_of_their_model_and_tier(plane):
    with requests.Session() as session:
        served = collections.Counter(
            _rest_infer(plane, "text_embedding", "gold", session).json()["parameters"]["pool"] for _ in range(300)
        )
        assert set(served) == {"gpu", "inferentia"}
        assert abs(_share(served, "gpu") - 0.7) < 0.12
        bronze = collections.Counter(
            _rest_infer(plane, "text_embedding", "bronze", session).headers["x-served-by"] for _ in range(20)
        )
        assert bronze == {"cpu": 20}


def test_an_absent_tier_means_silver(plane):
    with requests.Session() as session:
        served = {_rest_infer(plane, "digits_classifier", None, session).headers["x-served-by"] for _ in range(10)}
    assert served == {"cpu"}  # digits silver is 100% cpu, gold would be gpu


def test_responses_name_the_pool_that_served_and_whether_it_is_emulated(plane):
    response = _rest_infer(plane, "digits_classifier", "gold")
    assert (response.headers["x-served-by"], response.headers["x-emulated"]) == ("gpu", "true")
    with grpc.insecure_channel(plane.grpc_url) as channel:
        pool, metadata = _grpc_infer(service_pb2_grpc.GRPCInferenceServiceStub(channel), "digits_classifier", "gold")
    assert pool == metadata["x-served-by"] == "gpu"


def test_unchanged_grpc_clients_are_routed_by_the_model_in_the_body(plane):
    client = grpcclient.InferenceServerClient(plane.grpc_url)
    data = grpcclient.InferInput("IN", [1], "INT32")
    data.set_data_from_numpy(np.array([1], dtype=np.int32))
    served = collections.Counter()
    for model in ("text_embedding", "digits_classifier") * 20:
        result = client.infer(model, [data], headers={"x-sla-tier": "gold"})
        assert result.get_response().model_name == model
        served[(model, result.get_response().parameters["pool"].string_param)] += 1
    client.close()
    assert served[("digits_classifier", "gpu")] == 20
    assert {pool for model, pool in served if model == "text_embedding"} <= {"gpu", "inferentia"}


def test_a_client_sent_model_header_cannot_override_the_body(plane):
    with grpc.insecure_channel(plane.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(
            service_pb2.ModelInferRequest(model_name="digits_classifier"),
            metadata=[("x-model", "text_embedding"), ("x-sla-tier", "gold")],
            timeout=5,
        )
    assert (response.model_name, response.parameters["pool"].string_param) == ("digits_classifier", "gpu")


def test_unchanged_http_clients_work_through_envoy(plane):
    client = httpclient.InferenceServerClient(plane.http_url)
    assert client.is_server_ready()
    assert client.is_model_ready("text_embedding")
    data = httpclient.InferInput("IN", [1], "INT32")
    data.set_data_from_numpy(np.array([1], dtype=np.int32))
    result = client.infer("digits_classifier", [data], headers={"x-sla-tier": "bronze"})
    assert result.get_response()["parameters"]["pool"] == "cpu"
    client.close()


def test_health_and_metadata_pass_through_over_grpc(plane):
    client = grpcclient.InferenceServerClient(plane.grpc_url)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits_classifier")
    assert client.get_model_metadata("digits_classifier").name == "digits_classifier"
    client.close()


def test_an_unknown_tier_is_a_clear_400_or_invalid_argument(plane):
    response = _rest_infer(plane, "text_embedding", "platinum")
    assert response.status_code == 400
    assert "invalid x-sla-tier" in response.json()["error"]
    client = grpcclient.InferenceServerClient(plane.grpc_url)
    data = grpcclient.InferInput("IN", [1], "INT32")
    data.set_data_from_numpy(np.array([1], dtype=np.int32))
    with pytest.raises(InferenceServerException) as error:
        client.infer("text_embedding", [data], headers={"x-sla-tier": "platinum"})
    client.close()
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "expected one of gold, silver, bronze" in error.value.message()


def test_an_unknown_model_is_a_clear_404_or_not_found(plane):
    response = _rest_infer(plane, "no_such_model", "gold")
    assert response.status_code == 404
    assert "serves digits_classifier, text_embedding" in response.json()["error"]
    with grpc.insecure_channel(plane.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.ModelInfer(service_pb2.ModelInferRequest(model_name="no_such_model"), timeout=5)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "unknown model" in error.value.details()


def test_a_served_model_with_no_route_now_is_unavailable_with_a_retry_hint_not_unknown(plane, restore):
    # text_embedding loses every route (no ready replica in any pool serving it) while the pools
    # still list it: a client must be told to retry, not that the model does not exist.
    assert plane.xds.wait_acked(plane.publish([r for r in ROUTES if r.model != "text_embedding"]), timeout_s=10)
    response = _rest_infer(plane, "text_embedding", "gold")
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert "model text_embedding has no ready replica now" in response.json()["error"]
    with grpc.insecure_channel(plane.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            _grpc_infer(stub, "text_embedding", "gold")
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no ready replica" in error.value.details()
        assert _grpc_infer(stub, "digits_classifier", "gold") is not None  # the other model still served
    unknown = _rest_infer(plane, "no_such_model", "gold")
    assert unknown.status_code == 404 and "serves digits_classifier, text_embedding" in unknown.json()["error"]


def test_a_weight_change_is_acked_and_then_serves_at_the_new_pool(plane, restore):
    routes = [
        RouteWeights.of(r.model, r.tier, (("inferentia", 100),)) if (r.model, r.tier) == ("text_embedding", "gold") else r
        for r in ROUTES
    ]
    started = time.perf_counter()
    version = plane.publish(routes)
    assert plane.xds.wait_acked(version, timeout_s=5)
    acked_s = time.perf_counter() - started
    assert _rest_infer(plane, "text_embedding", "gold").headers["x-served-by"] == "inferentia"
    assert acked_s < 1.0


def test_envoy_rejected_no_update(plane):
    stats = plane.envoy.admin_get("/stats?filter=update_rejected")
    rejected = [line for line in stats.splitlines() if not line.endswith(": 0")]
    assert rejected == []


def test_a_config_envoy_rejects_is_nacked_and_the_last_good_one_keeps_serving(plane, restore):
    routes = [
        RouteWeights.of(r.model, r.tier, (("gpu", 0), ("inferentia", 0)))
        if (r.model, r.tier) == ("text_embedding", "gold")
        else r
        for r in ROUTES
    ]
    bad = build_snapshot(plane.pool_endpoints(), routes, plane.settings)
    assert any("all weights are zero" in p for p in bad.consistent())
    plane.xds.set_snapshot(bad, check=False)  # bypass the guard to see Envoy's own answer
    assert not plane.xds.wait_acked(bad.version, timeout_s=1)
    nacks = [t["last_nack"] for s in plane.xds.status() for t in s["types"].values() if t["last_nack"]]
    assert nacks, plane.xds.status()
    with requests.Session() as session:
        served = {_rest_infer(plane, "text_embedding", "gold", session).headers["x-served-by"] for _ in range(30)}
    assert served == {"gpu", "inferentia"}  # the last good weights (70/30) still route


def test_the_xds_server_going_away_fails_no_request_and_envoy_resyncs_on_return(plane):
    port = plane.xds.port
    plane.xds.stop()
    try:
        with requests.Session() as session:
            codes = collections.Counter(
                _rest_infer(plane, "digits_classifier", "gold", session).status_code for _ in range(30)
            )
        assert codes == {200: 30}
    finally:
        plane.xds = XdsServer(port=port)
        plane.xds.start()
    version = plane.publish(ROUTES)
    assert plane.xds.wait_acked(version, timeout_s=15)  # Envoy reconnects with backoff (~1-2 s)


def test_adding_a_pool_then_killing_it_under_load_fails_no_request(plane, restore):
    """Make before break (routes to the new pool only after its clusters are warm), then failover to
    priority 1 when the whole pool is SIGKILLed: zero failed requests throughout."""
    outcomes: collections.Counter[str] = collections.Counter()
    stop = threading.Event()

    def rest_load() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    response = _rest_infer(plane, "text_embedding", "gold", session)
                    outcomes[f"http {response.status_code} {response.headers.get('x-served-by')}"] += 1
                except requests.RequestException as error:
                    outcomes[f"http error {type(error).__name__}"] += 1

    def grpc_load() -> None:
        with grpc.insecure_channel(plane.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            while not stop.is_set():
                try:
                    pool, _ = _grpc_infer(stub, "text_embedding", "gold")
                    outcomes[f"grpc OK {pool}"] += 1
                except grpc.RpcError as error:
                    outcomes[f"grpc {error.code().name}"] += 1

    def wait_for(condition, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.01)
        return False

    spare = FakePool.start("spare", ("text_embedding",), accelerator="gpu")
    plane.extra.append(spare)
    threads = [threading.Thread(target=f) for f in (rest_load, rest_load, grpc_load, grpc_load)]
    for thread in threads:
        thread.start()
    try:
        assert wait_for(lambda: sum(outcomes.values()) > 20, 5)
        routes = [
            RouteWeights.of(r.model, r.tier, (("spare", 100),)) if r.model == "text_embedding" else r for r in ROUTES
        ]
        assert plane.xds.wait_acked(plane.publish(routes), timeout_s=10)
        assert wait_for(lambda: outcomes["grpc OK spare"] > 20 and outcomes["http 200 spare"] > 20, 5)
        spare.kill()
        served_before_kill = sum(outcomes.values())
        assert wait_for(lambda: sum(outcomes.values()) > served_before_kill + 200, 10)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    failed = {k: v for k, v in outcomes.items() if not (k.startswith("http 200") or k.startswith("grpc OK"))}
    assert failed == {}, outcomes
    assert outcomes["grpc OK gpu"] > 0 and outcomes["http 200 gpu"] > 0  # gpu is next in fallback order


PROXYLESS_CLIENT = """
import collections, json, sys
import numpy as np
import tritonclient.grpc as grpcclient
client = grpcclient.InferenceServerClient("xds:///text_embedding")
data = grpcclient.InferInput("IN", [1], "INT32")
data.set_data_from_numpy(np.array([1], dtype=np.int32))
counts = collections.Counter()
for tier in ["gold"] * 200 + [None] * 20:
    result = client.infer("text_embedding", [data], headers={"x-sla-tier": tier} if tier else None)
    counts[(tier or "default") + ":" + result.get_response().parameters["pool"].string_param] += 1
try:
    client.infer("text_embedding", [data], headers={"x-sla-tier": "platinum"})
except Exception as error:
    counts["platinum:" + str(error.status())] += 1
print(json.dumps(counts))
"""


def test_proxyless_grpc_clients_route_by_the_same_weights(plane, tmp_path):
    bootstrap = write_proxyless_bootstrap(tmp_path / "xds.json", node_id="proxyless-test", xds_port=plane.xds.port)
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", PROXYLESS_CLIENT], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-2000:]
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    gold = {k.split(":")[1]: v for k, v in counts.items() if k.startswith("gold:")}
    assert set(gold) == {"gpu", "inferentia"}
    assert abs(gold["gpu"] / 200 - 0.7) < 0.12
    assert {k.split(":")[1] for k in counts if k.startswith("default:")} <= {"cpu", "inferentia"}  # silver
    assert counts.get("platinum:StatusCode.UNAVAILABLE") == 1  # no route matches; gRPC has no direct responses


def test_clusters_changed_in_place_are_acked_without_waiting_for_the_endpoints_timeout():
    """Envoy re-creates a cluster whose settings changed and waits for its endpoints (15 s
    initial-fetch timeout) before the new snapshot takes; the ADS server answers that request even
    though the endpoints are unchanged."""
    import dataclasses

    plane = DataPlane.start({"cpu": ("digits_classifier",)}, [RouteWeights.of("digits_classifier", t, (("cpu", 100),))
                                                              for t in ("gold", "silver", "bronze")])
    try:
        routes = [RouteWeights.of("digits_classifier", t, (("cpu", 100),)) for t in ("gold", "silver", "bronze")]
        assert plane.xds.wait_acked(plane.publish(routes), timeout_s=10)
        plane.settings = dataclasses.replace(plane.settings, connect_timeout_ms=plane.settings.connect_timeout_ms + 200)
        started = time.monotonic()
        version = plane.publish(routes)
        assert plane.xds.wait_acked(version, timeout_s=10), "not ACKed within 10 s (the 15 s endpoints timeout?)"
        took = time.monotonic() - started
        assert took < 5.0, f"ACKed after {took:.1f} s"
        stats = plane.envoy.admin_get("/stats?filter=cluster_manager.warming_clusters")
        assert "cluster_manager.warming_clusters: 0" in stats
    finally:
        plane.stop()
