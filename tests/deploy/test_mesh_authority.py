"""Envoy -> Triton under STRICT Istio mTLS (issue 13, high item).

Envoy sends to pod IPs of the headless Triton Services; Istio's sidecar routes such a request by
its Host/:authority, and only a Host naming the Service gets the mesh route (mTLS).  In the cluster
the control server therefore gives every EDS endpoint its Service's host name and every route
``auto_host_rewrite``; locally nothing changes.  Checked offline on the snapshot the cluster's
control server builds from the rendered Services' EndpointSlices (deploy/blockers.py
``mesh_authority_problems``), shown failing without the rewrite, and with a real Envoy: the
upstream sees the Service's host in the cluster and the client's Host locally."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from control.discovery_k8s import SliceSelection, replicas_from_slices
from control.ports import PoolServing
from control.route_sink_xds import pool_endpoints
from deploy import blockers
from tests.deploy.conftest import find
from tests.deploy.fake_apiserver import endpoint_slice, pod_endpoint
from xds_server import DataPlaneSettings, Endpoint, PoolEndpoints, build_snapshot, even_routes
from xds_server.protos import ENDPOINT, LISTENER, ROUTE, to_dict

MODELS = ("text_embedding",)  # every pool serves it, so each cluster has fallback priorities


def _flags(documents: list[dict]) -> dict[str, str]:
    args = find(documents, "StatefulSet", "xds-control")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    return dict(a.removeprefix("--").split("=", 1) for a in args if a.startswith("--") and "=" in a)


def cluster_snapshot(documents: list[dict], cluster_domain: str = "cluster.local") -> tuple[list[dict], list[dict]]:
    """(EDS, RDS) as the cluster's control server builds them: the rendered Triton Services'
    EndpointSlices (one pod each) read by the discovery with the StatefulSet's own flags."""
    flags = _flags(documents)
    slices = []
    for i, service in enumerate(s for s in find(documents, "Service")
                                if (s["metadata"].get("labels") or {}).get("app.kubernetes.io/name") == "triton"):
        pool = service["metadata"]["labels"]["inference.platform/pool"]
        slices.append(endpoint_slice(f"{service['metadata']['name']}-abcde", pool=pool,
                                     service=service["metadata"]["name"], namespace=service["metadata"]["namespace"],
                                     ports={p["name"]: p["port"] for p in service["spec"]["ports"]},
                                     endpoints=[pod_endpoint(f"10.40.1.{10 + i}", f"{service['metadata']['name']}-0")]))
    selection = SliceSelection(namespace=flags["k8s-namespace"], label_selector=flags["k8s-label-selector"],
                               pool_label=flags["k8s-pool-label"], cluster_domain=cluster_domain)
    replicas, problems = replicas_from_slices(slices, selection)
    assert problems == [] and len(replicas.by_pool) == 3
    pools = [pool_endpoints(PoolServing(pool, pool, False, MODELS, replicas.serving(pool))) for pool in replicas.by_pool]
    settings = DataPlaneSettings(listen_address=flags["envoy-listen-address"], http_port=int(flags["http-port"]),
                                 grpc_port=int(flags["grpc-port"]))
    snapshot = build_snapshot(pools, even_routes(pools, settings), settings)
    assert snapshot.consistent() == []
    # Envoy's route configurations: the ones its listeners name (not the proxyless gRPC clients').
    listened = set(re.findall(r'"route_config_name": "([^"]+)"',
                              json.dumps([to_dict(m) for m in snapshot.select(LISTENER).values()])))
    assert listened
    return ([to_dict(m) for m in snapshot.select(ENDPOINT).values()],
            [to_dict(m) for name, m in snapshot.select(ROUTE).items() if name in listened])


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_envoy_reaches_triton_over_mtls_in_the_cluster(env: str, documents) -> None:
    assignments, routes = cluster_snapshot(documents[env])
    assert blockers.mesh_authority_problems(documents[env], assignments, routes) == []


def test_each_endpoint_carries_its_own_services_host_fallbacks_included(documents) -> None:
    assignments, _ = cluster_snapshot(documents["prod"])
    (cpu_http,) = [a for a in assignments if a["cluster_name"] == "text_embedding--cpu--http"]
    hosts = [[lb["endpoint"]["hostname"] for lb in locality["lb_endpoints"]] for locality in cpu_http["endpoints"]]
    assert hosts == [["triton-cpu.inference.svc.cluster.local"], ["triton-gpu.inference.svc.cluster.local"],
                     ["triton-inferentia.inference.svc.cluster.local"]]


def test_without_the_authority_rewrite_the_mesh_refuses_envoys_requests(documents) -> None:
    """The code before this change: endpoints without a host name, routes keeping the client's Host."""
    assignments, routes = cluster_snapshot(documents["prod"], cluster_domain="")
    assert not any("hostname" in lb["endpoint"] for a in assignments for loc in a["endpoints"]
                   for lb in loc["lb_endpoints"])
    problems = blockers.mesh_authority_problems(documents["prod"], assignments, routes)
    assert any(p.startswith("text_embedding--gpu--grpc -> 10.40.1.") and "STRICT mTLS refuses" in p for p in problems)
    assert "route http/text_embedding/gold: Host is not rewritten to the endpoint's Service (auto_host_rewrite), " \
           "so Istio passes it through in plaintext and STRICT mTLS refuses it" in problems


def test_a_service_with_a_cluster_ip_would_lose_envoys_choice_of_pod(documents) -> None:
    assignments, routes = cluster_snapshot(documents["prod"])
    docs = [dict(d, spec={**d["spec"], "clusterIP": "10.100.0.7"})
            if d["kind"] == "Service" and d["metadata"]["name"] == "triton-gpu" else d for d in documents["prod"]]
    problems = blockers.mesh_authority_problems(docs, assignments, routes)
    assert len(problems) == 8 and all("triton-gpu.inference.svc.cluster.local has a cluster IP" in p for p in problems)


def test_the_local_snapshot_keeps_the_clients_host() -> None:
    pools = [PoolEndpoints("cpu", "cpu", False, MODELS, (Endpoint("127.0.0.1", 8000, 8001),))]
    snapshot = build_snapshot(pools, even_routes(pools))
    text = json.dumps([to_dict(m) for t in (ENDPOINT, ROUTE) for m in snapshot.select(t).values()])
    assert "hostname" not in text and "auto_host_rewrite" not in text


@pytest.mark.parametrize("bad", ["Triton.CPU", "triton_cpu.inference", "-x.svc", "a" * 254])
def test_an_authority_that_is_not_a_dns_name_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a DNS name"):
        Endpoint("10.0.0.1", 8000, 8001, authority=bad)


# -- with a real Envoy ---------------------------------------------------------------------------------

class _HostEcho(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps({"host": self.headers.get("host")}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _host_seen(url: str, deadline_s: float, want: str) -> str:
    seen = ""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        request = urllib.request.Request(f"http://{url}/v2/models/text_embedding/infer", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            seen = json.loads(response.read())["host"]
        if seen == want:
            return seen
        time.sleep(0.05)
    return seen


@pytest.mark.integration
def test_envoy_sends_the_services_host_in_the_cluster_and_the_clients_locally() -> None:
    from xds_server.testbed import DataPlane

    echo = ThreadingHTTPServer(("127.0.0.1", 0), _HostEcho)
    echo.daemon_threads = True
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    port = echo.server_address[1]
    plane = DataPlane.start({"cpu": MODELS})
    try:
        service_host = "triton-cpu.inference.svc.cluster.local"
        for authority, want in ((service_host, service_host), ("", plane.http_url)):
            pools = [PoolEndpoints("cpu", "cpu", False, MODELS, (Endpoint("127.0.0.1", port, port, authority),))]
            version = plane.publish(even_routes(pools, plane.settings), pools)
            assert plane.xds.wait_acked(version, timeout_s=10)
            # The ACK covers the last resource type pushed; allow Envoy a moment to swap EDS in.
            assert _host_seen(plane.http_url, 5.0, want) == want
    finally:
        plane.stop()
        echo.shutdown()
        echo.server_close()
