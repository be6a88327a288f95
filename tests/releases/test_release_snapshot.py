"""A release in the xDS snapshot: candidate clusters beside the stable ones, exact shares, checks."""

from __future__ import annotations

from router_lib.routes import RouteKey
from xds_server import build_snapshot
from xds_server.examples import three_pools, tiered_routes
from xds_server.inputs import CandidatePool, Endpoint, VersionSplit
from xds_server.protos import CLUSTER, ENDPOINT, ROUTE, to_dict

CANDIDATE = CandidatePool("text_embedding", "cpu", "2", "cpu", False, (Endpoint("127.0.0.1", 9100, 9101),))


def gold_route(snapshot, proto: str = "http") -> dict[str, int]:
    config = to_dict(snapshot.resources[ROUTE][proto])
    route = next(r for r in config["virtual_hosts"][0]["routes"] if r["name"] == "text_embedding/gold")
    return {c["name"]: c.get("weight", 0) for c in route["route"]["weighted_clusters"]["clusters"]}


def test_a_candidate_gets_its_own_cluster_backed_by_the_stable_pools() -> None:
    snap = build_snapshot(three_pools(), tiered_routes(), candidates=[CANDIDATE])
    assert "text_embedding--cpu--grpc--v2" in snap.resources[CLUSTER]
    cla = to_dict(snap.resources[ENDPOINT]["text_embedding--cpu--http--v2"])
    ports = [[e["endpoint"]["address"]["socket_address"]["port_value"] for e in loc["lb_endpoints"]]
             for loc in cla["endpoints"]]
    assert ports[0] == [9100] and len(ports) > 1  # candidate first, stable pools behind it
    assert snap.consistent() == []


def test_the_split_shares_each_route_exactly_and_only_its_tier() -> None:
    before = build_snapshot(three_pools(), tiered_routes(), candidates=[CANDIDATE])
    split = VersionSplit(RouteKey("text_embedding", "gold"), "2", 500, ("cpu",))
    after = build_snapshot(three_pools(), tiered_routes(), splits=[split], candidates=[CANDIDATE])
    assert after.consistent() == [] and after.version != before.version
    for proto in ("http", "grpc"):
        weights = gold_route(after, proto)
        candidate = weights.pop(f"text_embedding--cpu--{proto}--v2")
        assert candidate / (candidate + sum(weights.values())) == 0.05
    silver = to_dict(after.resources[ROUTE]["http"])["virtual_hosts"][0]["routes"]
    names = [c["name"] for r in silver if r.get("name") == "text_embedding/silver"
             for c in r["route"]["weighted_clusters"]["clusters"]]
    assert not any(n.endswith("--v2") for n in names)


def test_rollback_is_one_snapshot_without_the_candidate_weight() -> None:
    split = VersionSplit(RouteKey("text_embedding", "gold"), "2", 0, ("cpu",))
    snap = build_snapshot(three_pools(), tiered_routes(), splits=[split], candidates=[CANDIDATE])
    assert not any(n.endswith("--v2") for n in gold_route(snap))


def test_a_split_to_a_pool_without_candidate_replicas_is_refused() -> None:
    split = VersionSplit(RouteKey("text_embedding", "gold"), "2", 100, ("gpu",))
    snap = build_snapshot(three_pools(), tiered_routes(), splits=[split], candidates=[CANDIDATE])
    problems = snap.consistent()
    assert any("no candidate replica of version 2 on gpu" in p for p in problems)
    assert any("cluster text_embedding--gpu--http--v2 does not exist" in p for p in problems)
