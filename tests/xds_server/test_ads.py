"""The ADS servicer over a real grpc.aio server on port 0, driven by a fake Envoy stream."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from tests.xds_server.fake_envoy import FakeEnvoy
from xds_server import InconsistentSnapshotError, RouteWeights, XdsServer, build_snapshot
from xds_server.examples import three_pools, tiered_routes
from xds_server.protos import CLUSTER, ENDPOINT, LISTENER, ROUTE


def _with_gold(weights):
    return [
        RouteWeights.of(r.model, r.tier, weights) if (r.model, r.tier) == ("text_embedding", "gold") else r
        for r in tiered_routes()
    ]


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def server(registry):
    server = XdsServer(port=0, registry=registry)
    server.start()
    server.set_snapshot(build_snapshot(three_pools(), tiered_routes()))
    yield server
    server.stop()


@pytest.fixture
def envoy(server):
    client = FakeEnvoy(server.port)
    yield client
    client.close()


def _subscribe_like_envoy(envoy: FakeEnvoy, server: XdsServer) -> dict[str, object]:
    """CDS and LDS wildcard, then EDS and RDS by the names those answers mention, all ACKed (and
    the ACKs processed, so a test's next push cannot race them)."""
    cds = envoy.subscribe_and_ack(CLUSTER)
    names = tuple(sorted(_name(r) for r in cds.resources))
    eds = envoy.subscribe_and_ack(ENDPOINT, names)
    lds = envoy.subscribe_and_ack(LISTENER)
    rds = envoy.subscribe_and_ack(ROUTE, ("grpc", "http"))
    assert server.wait_acked(server.current_version(envoy.node_id), timeout_s=5)
    return {"cds": cds, "eds": eds, "lds": lds, "rds": rds, "cluster_names": names}


def _name(packed) -> str:
    from envoy.config.cluster.v3 import cluster_pb2

    cluster = cluster_pb2.Cluster()
    packed.Unpack(cluster)
    return cluster.name


def _sample(registry, name, **labels):
    return registry.get_sample_value(name, labels) or 0.0


def test_first_requests_get_the_current_resources_and_acks_complete_the_version(server, envoy):
    got = _subscribe_like_envoy(envoy, server)
    version = build_snapshot(three_pools(), tiered_routes()).version
    assert len(got["cds"].resources) == 12  # 5 (model, pool) pairs x 2 protocols + 2 server-level
    assert len(got["eds"].resources) == 12
    assert len(got["lds"].resources) == 2  # Envoy's wildcard answer: no proxyless api_listeners
    assert len(got["rds"].resources) == 2
    assert server.wait_acked(version, timeout_s=5)


def test_a_weight_change_pushes_only_routes(server, envoy, registry):
    _subscribe_like_envoy(envoy, server)
    pushes_before = _sample(registry, "xds_pushes_total", type_url="CDS")
    version = server.set_snapshot(build_snapshot(three_pools(), _with_gold((("gpu", 10), ("inferentia", 90)))))
    response = envoy.receive()
    assert response.type_url == ROUTE
    assert envoy.nothing_received()
    assert not server.wait_acked(version, timeout_s=0.2)
    envoy.ack(response, ("grpc", "http"))
    assert server.wait_acked(version, timeout_s=5)
    assert _sample(registry, "xds_pushes_total", type_url="CDS") == pushes_before
    assert _sample(registry, "xds_push_to_ack_seconds_count") >= 5


def test_an_unchanged_snapshot_pushes_nothing(server, envoy):
    _subscribe_like_envoy(envoy, server)
    server.set_snapshot(build_snapshot(three_pools(), tiered_routes()))
    assert envoy.nothing_received()


def test_a_nack_is_counted_and_nothing_is_resent(server, envoy, registry):
    _subscribe_like_envoy(envoy, server)
    good = build_snapshot(three_pools(), tiered_routes()).version
    bad = server.set_snapshot(build_snapshot(three_pools(), _with_gold((("gpu", 60), ("inferentia", 40)))))
    response = envoy.receive()
    envoy.request(ROUTE, ("grpc", "http"), version="previous", nonce=response.nonce, error="pretend rejection")
    assert envoy.nothing_received()
    assert _sample(registry, "xds_nacks_total", type_url="RDS") == 1
    assert not server.wait_acked(bad, timeout_s=0.3)
    (stream,) = server.status()
    assert stream["types"]["RDS"]["last_nack"] == "pretend rejection"
    assert stream["types"]["RDS"]["snapshot_acked"] == good  # the last good one stays in force


def test_a_stale_nonce_is_ignored(server, envoy):
    _subscribe_like_envoy(envoy, server)
    server.set_snapshot(build_snapshot(three_pools(), _with_gold((("gpu", 20), ("inferentia", 80)))))
    first = envoy.receive()
    version = server.set_snapshot(build_snapshot(three_pools(), _with_gold((("gpu", 30), ("inferentia", 70)))))
    second = envoy.receive()
    envoy.ack(first, ("grpc", "http"))  # an ACK of a push that was replaced: not a completion
    assert not server.wait_acked(version, timeout_s=0.2)
    envoy.ack(second, ("grpc", "http"))
    assert server.wait_acked(version, timeout_s=5)


def test_new_resource_names_are_answered_at_once_with_exactly_those(server, envoy):
    first = envoy.subscribe_and_ack(LISTENER, ("text_embedding",))
    assert [_listener_name(r) for r in first.resources] == ["text_embedding"]
    envoy.request(LISTENER, ("digits_classifier", "text_embedding"), version=first.version_info, nonce=first.nonce)
    second = envoy.receive()
    assert sorted(_listener_name(r) for r in second.resources) == ["digits_classifier", "text_embedding"]


def _listener_name(packed) -> str:
    from envoy.config.listener.v3 import listener_pb2

    listener = listener_pb2.Listener()
    packed.Unpack(listener)
    return listener.name


def test_a_reconnecting_client_gets_the_current_snapshot(server, envoy):
    _subscribe_like_envoy(envoy, server)
    envoy.close()
    version = server.set_snapshot(build_snapshot(three_pools(), _with_gold((("gpu", 5), ("inferentia", 95)))))
    again = FakeEnvoy(server.port)
    try:
        _subscribe_like_envoy(again, server)
        assert server.wait_acked(version, timeout_s=5)
    finally:
        again.close()


def test_an_inconsistent_snapshot_is_refused_and_the_previous_stays(server, envoy):
    _subscribe_like_envoy(envoy, server)
    routes = [RouteWeights.of("text_embedding", tier, (("tpu", 100),)) for tier in ("gold", "silver", "bronze")]
    with pytest.raises(InconsistentSnapshotError, match="tpu"):
        server.set_snapshot(build_snapshot(three_pools(), routes))
    assert envoy.nothing_received()


def test_a_node_with_its_own_snapshot_gets_it_and_others_get_the_default(server, envoy):
    _subscribe_like_envoy(envoy, server)
    special = build_snapshot(three_pools(), _with_gold((("gpu", 1), ("inferentia", 99))))
    server.set_snapshot(special, node_id="canary-envoy")
    assert envoy.nothing_received()
    other = FakeEnvoy(server.port, node_id="canary-envoy")
    try:
        _subscribe_like_envoy(other, server)
        assert server.wait_acked(special.version, timeout_s=5)
    finally:
        other.close()


def test_streams_are_counted(server, envoy, registry):
    _subscribe_like_envoy(envoy, server)
    assert _sample(registry, "xds_connected_streams") == 1


def test_routes_to_a_new_pool_wait_until_its_clusters_are_acked_and_filled(server, envoy):
    from xds_server.examples import pool

    got = _subscribe_like_envoy(envoy, server)
    pools = [*three_pools(), pool("spare", accelerator="gpu", base_port=9400)]
    version = server.set_snapshot(build_snapshot(pools, _with_gold((("spare", 100),))))
    cds, eds = envoy.receive(), envoy.receive()
    assert (cds.type_url, eds.type_url) == (CLUSTER, ENDPOINT)
    assert envoy.nothing_received()  # no route may name spare's clusters yet
    envoy.ack(cds)
    envoy.ack(eds, got["cluster_names"])
    assert envoy.nothing_received()  # ACKed, but spare's endpoints were not asked for yet
    names = tuple(sorted(_name(r) for r in cds.resources))
    envoy.request(ENDPOINT, names, version=eds.version_info, nonce=eds.nonce)
    filled = envoy.receive()
    assert filled.type_url == ENDPOINT and len(filled.resources) == len(names)
    assert envoy.nothing_received(0.1)
    envoy.ack(filled, names)
    assert envoy.receive().type_url == ROUTE
    assert not server.wait_acked(version, timeout_s=0.1)


def test_an_empty_name_list_after_named_ones_unsubscribes_rather_than_asking_for_everything(server, envoy):
    first = envoy.subscribe_and_ack(ENDPOINT, ("text_embedding--cpu--grpc",))
    assert len(first.resources) == 1
    envoy.request(ENDPOINT, (), version=first.version_info, nonce=first.nonce)
    assert len(envoy.receive().resources) == 0


def test_a_star_asks_for_everything(server, envoy):
    assert len(envoy.subscribe_and_ack(ENDPOINT, ("*",)).resources) == 12


def test_endpoints_are_answered_again_for_clusters_re_created_with_the_same_endpoints(server, envoy):
    from xds_server.inputs import DataPlaneSettings

    got = _subscribe_like_envoy(envoy, server)
    server.set_snapshot(build_snapshot(three_pools(), tiered_routes(), DataPlaneSettings(connect_timeout_ms=700)))
    cds = envoy.receive()
    assert cds.type_url == CLUSTER
    assert envoy.nothing_received(0.2)  # the endpoints did not change
    envoy.ack(cds)
    # Envoy re-creates each changed cluster and asks for its endpoints again with the last nonce:
    # the warming clusters wait for an answer (15 s without one), so one comes, unchanged
    eds = got["eds"]
    envoy.request(ENDPOINT, got["cluster_names"], version=eds.version_info, nonce=eds.nonce)
    again = envoy.receive()
    assert again.type_url == ENDPOINT and again.version_info == eds.version_info
    assert len(again.resources) == len(got["cluster_names"])
    envoy.ack(again, got["cluster_names"])
    envoy.request(ENDPOINT, got["cluster_names"], version=again.version_info, nonce=again.nonce)
    assert envoy.nothing_received(0.3)  # owed once, not on every request
