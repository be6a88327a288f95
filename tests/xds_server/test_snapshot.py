"""Invariants of the built resources and of Snapshot.consistent()."""

from __future__ import annotations

import pytest

from router_lib.routes import Reason, ReasonKind
from xds_server import DataPlaneSettings, Endpoint, PoolEndpoints, RouteWeights, build_snapshot, even_routes, protos
from xds_server.examples import pool, routes_for, three_pools, tiered_routes
from xds_server.protos import to_dict


def _snapshot(**overrides):
    return build_snapshot(
        overrides.get("pools", three_pools()), overrides.get("routes", tiered_routes()), overrides.get("settings")
    )


def _route_config(snapshot, name):
    return to_dict(snapshot.resources[protos.ROUTE][name])


def _routes_named(snapshot, config):
    return {r["name"]: r for r in _route_config(snapshot, config)["virtual_hosts"][0]["routes"]}


def test_the_tiered_example_is_consistent():
    assert _snapshot().consistent() == []


def test_same_inputs_in_any_order_build_the_same_version():
    a = build_snapshot(three_pools(), tiered_routes())
    b = build_snapshot(list(reversed(three_pools())), list(reversed(tiered_routes())))
    assert a.version == b.version


def test_a_weight_change_changes_the_version_but_only_the_route_resources():
    before = _snapshot()
    routes = [
        RouteWeights.of(r.model, r.tier, (("gpu", 40), ("inferentia", 60)))
        if (r.model, r.tier) == ("text_embedding", "gold")
        else r
        for r in tiered_routes()
    ]
    after = _snapshot(routes=routes)
    assert before.version != after.version
    for type_url in (protos.CLUSTER, protos.ENDPOINT, protos.LISTENER):
        assert before.resources[type_url] == after.resources[type_url]
    assert before.resources[protos.ROUTE] != after.resources[protos.ROUTE]


def test_clusters_are_named_model_pool_proto():
    names = set(_snapshot().resources[protos.CLUSTER])
    assert "text_embedding--inferentia--grpc" in names
    assert "digits_classifier--cpu--http" in names
    assert "digits_classifier--inferentia--grpc" not in names  # inferentia does not serve it


@pytest.mark.parametrize("proto,http2", [("grpc", True), ("http", False)])
def test_only_grpc_clusters_speak_http2_upstream(proto, http2):
    cluster = to_dict(_snapshot().resources[protos.CLUSTER][f"text_embedding--cpu--{proto}"])
    assert ("typed_extension_protocol_options" in cluster) is http2


def test_a_cluster_holds_its_own_pool_at_priority_0_and_the_others_in_fallback_order():
    cla = to_dict(_snapshot().resources[protos.ENDPOINT]["text_embedding--cpu--grpc"])
    by_priority = [
        (loc.get("priority", 0), loc["locality"]["zone"], len(loc["lb_endpoints"])) for loc in cla["endpoints"]
    ]
    assert by_priority == [(0, "cpu", 2), (1, "gpu", 1), (2, "inferentia", 1)]
    ports = [e["endpoint"]["address"]["socket_address"]["port_value"] for e in cla["endpoints"][0]["lb_endpoints"]]
    assert ports == [9001, 9011]  # gRPC ports of cpu's two replicas


def test_endpoints_carry_the_pool_so_responses_can_name_who_served():
    cla = to_dict(_snapshot().resources[protos.ENDPOINT]["text_embedding--gpu--http"])
    meta = cla["endpoints"][0]["lb_endpoints"][0]["metadata"]["filter_metadata"]["inference"]
    assert meta == {"pool": "gpu", "accelerator": "gpu", "emulated": "true"}


def test_outlier_detection_and_retries_follow_the_settings_that_gave_zero_errors():
    cluster = to_dict(_snapshot().resources[protos.CLUSTER]["text_embedding--gpu--grpc"])
    assert cluster["outlier_detection"]["consecutive_local_origin_failure"] == 2
    assert cluster["outlier_detection"]["split_external_local_origin_errors"] is True
    assert cluster["outlier_detection"]["max_ejection_percent"] == 100
    retry = _routes_named(_snapshot(), "grpc")["text_embedding/gold"]["route"]["retry_policy"]
    assert retry["retry_on"] == "connect-failure,refused-stream,reset,unavailable,cancelled"
    assert retry["retry_priority"]["name"] == "envoy.retry_priorities.previous_priorities"
    assert retry["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"


def test_tier_routes_carry_the_policy_weights_and_drop_zero_weights():
    routes = _routes_named(_snapshot(), "http")
    gold = routes["text_embedding/gold"]["route"]["weighted_clusters"]["clusters"]
    assert [(c["name"], c["weight"]) for c in gold] == [
        ("text_embedding--gpu--http", 70),
        ("text_embedding--inferentia--http", 30),
    ]
    bronze = routes["text_embedding/bronze"]["route"]["weighted_clusters"]["clusters"]
    assert [c["name"] for c in bronze] == ["text_embedding--cpu--http"]


def test_an_unknown_tier_is_rejected_before_any_model_route():
    routes = _route_config(_snapshot(), "grpc")["virtual_hosts"][0]["routes"]
    assert [r["name"] for r in routes[:2]] == ["invalid-tier-grpc", "invalid-tier"]
    grpc_reject = routes[0]
    assert grpc_reject["direct_response"]["status"] == 400
    assert grpc_reject["response_headers_to_add"][0]["header"] == {"key": "grpc-status", "value": "3"}


def test_absent_tier_header_means_the_default_tier():
    routes = _routes_named(_snapshot(), "http")
    assert routes["text_embedding/default"]["route"] == routes["text_embedding/silver"]["route"]
    assert "headers" not in routes["text_embedding/default"]["match"]


def test_a_model_the_pools_serve_without_a_route_gets_503_unavailable_before_the_unknown_model_404():
    routes = [r for r in tiered_routes() if r.model != "text_embedding"]
    for config, status_header in (("http", ("retry-after", "1")), ("grpc", ("grpc-status", "14"))):
        entries = _route_config(_snapshot(routes=routes), config)["virtual_hosts"][0]["routes"]
        names = [r["name"] for r in entries]
        unavailable = next(r for r in entries if r["name"].startswith("text_embedding/unavailable"))
        assert unavailable["direct_response"]["status"] == 503
        assert {"key": status_header[0], "value": status_header[1]} in [h["header"] for h in unavailable["response_headers_to_add"]]
        assert names.index(unavailable["name"]) < names.index("unknown-model" if config == "http" else "unknown-model-grpc")
        assert not any(n.startswith("text_embedding/") and "unavailable" not in n for n in names)
    assert not [r for r in _routes_named(_snapshot(), "http") if "unavailable" in r]  # every model routed: none


def test_before_any_replica_the_fleets_models_are_unavailable_and_only_others_unknown():
    snapshot = build_snapshot([], [], models=["text_embedding", "digits_classifier", "text_embedding"])
    routes = _routes_named(snapshot, "http")
    assert {n for n in routes if n.endswith("/unavailable")} == {"digits_classifier/unavailable", "text_embedding/unavailable"}
    assert "serves digits_classifier, text_embedding" in routes["unknown-model"]["direct_response"]["body"]["inline_string"]


def test_a_tier_without_a_route_is_unavailable_for_that_model_after_its_other_tiers():
    routes = [r for r in tiered_routes() if (r.model, r.tier) != ("digits_classifier", "bronze")]
    names = [r["name"] for r in _route_config(_snapshot(routes=routes), "http")["virtual_hosts"][0]["routes"]]
    assert "digits_classifier/gold" in names and "digits_classifier/bronze" not in names
    assert names.index("digits_classifier/unavailable") > names.index("digits_classifier/default")
    assert "text_embedding/unavailable" not in names


def test_grpc_routes_match_the_model_header_set_from_the_body():
    match = _routes_named(_snapshot(), "grpc")["digits_classifier/gold"]["match"]
    assert {"name": "x-model", "string_match": {"exact": "digits_classifier"}} in match["headers"]


def test_http_routes_match_the_rest_path():
    match = _routes_named(_snapshot(), "http")["digits_classifier/gold"]["match"]
    assert match["path_separated_prefix"] == "/v2/models/digits_classifier"


def test_wildcard_listener_answer_excludes_proxyless_api_listeners():
    snapshot = _snapshot()
    assert set(snapshot.select(protos.LISTENER)) == {"grpc", "http"}
    assert set(snapshot.select(protos.LISTENER, ["text_embedding"])) == {"text_embedding"}


def test_no_api_listeners_when_proxyless_is_off():
    snapshot = _snapshot(settings=DataPlaneSettings(proxyless_listener_prefix=None))
    assert set(snapshot.resources[protos.LISTENER]) == {"grpc", "http"}


def test_a_canary_version_is_a_cluster_of_its_own():
    pools = [
        *three_pools(),
        pool(
            "gpu-canary",
            accelerator="gpu",
            models=("text_embedding",),
            base_port=9300,
            versions=(("text_embedding", "2"),),
        ),
    ]
    routes = [
        RouteWeights.of(r.model, r.tier, (("gpu", 90), ("gpu-canary", 10)))
        if (r.model, r.tier) == ("text_embedding", "gold")
        else r
        for r in tiered_routes()
    ]
    snapshot = build_snapshot(pools, routes)
    assert snapshot.consistent() == []
    assert "text_embedding--gpu-canary--grpc--v2" in snapshot.resources[protos.CLUSTER]
    gold = _routes_named(snapshot, "grpc")["text_embedding/gold"]["route"]["weighted_clusters"]["clusters"]
    assert {"name": "text_embedding--gpu-canary--grpc--v2", "weight": 10} in gold


def test_replica_changes_touch_only_endpoints():
    before = _snapshot()
    pools = three_pools()
    pools[1] = pool("gpu", base_port=9100, replicas=3)
    after = _snapshot(pools=pools)
    assert before.resources[protos.CLUSTER] == after.resources[protos.CLUSTER]
    assert before.resources[protos.ROUTE] == after.resources[protos.ROUTE]
    assert before.resources[protos.ENDPOINT] != after.resources[protos.ENDPOINT]


# ---- inconsistent snapshots -----------------------------------------------------------------------


def test_route_to_a_pool_that_does_not_exist_is_inconsistent():
    routes = [
        RouteWeights.of(r.model, r.tier, (("tpu", 100),)) if (r.model, r.tier) == ("digits_classifier", "gold") else r
        for r in tiered_routes()
    ]
    problems = _snapshot(routes=routes).consistent()
    assert any("cluster digits_classifier--tpu--http does not exist" in p for p in problems)
    assert any("pool tpu does not serve digits_classifier" in p for p in problems)


def test_all_zero_weights_are_inconsistent():
    routes = [
        RouteWeights.of(r.model, r.tier, (("gpu", 0), ("cpu", 0)))
        if (r.model, r.tier) == ("digits_classifier", "gold")
        else r
        for r in tiered_routes()
    ]
    problems = _snapshot(routes=routes).consistent()
    assert any("digits_classifier/gold: all weights are zero" in p for p in problems)


def test_weights_that_do_not_sum_to_the_total_weight_are_inconsistent():
    routes = [
        RouteWeights.of(r.model, r.tier, (("gpu", 101),)) if (r.model, r.tier) == ("digits_classifier", "gold") else r
        for r in tiered_routes()
    ]
    assert "route digits_classifier/gold: weights sum to 101, not 100" in _snapshot(routes=routes).consistent()


def test_the_total_weight_comes_from_the_settings():
    settings = DataPlaneSettings(total_weight=1000)
    assert {r.total for r in even_routes(three_pools(), settings)} == {1000}
    assert build_snapshot(three_pools(), even_routes(three_pools(), settings), settings).consistent() == []


def test_a_missing_tier_is_inconsistent_rather_than_silently_defaulted():
    routes = [r for r in tiered_routes() if (r.model, r.tier) != ("text_embedding", "bronze")]
    assert (
        "model text_embedding: no route for tier bronze (it would fall to the default silently)"
        in _snapshot(routes=routes).consistent()
    )


def test_a_model_whose_every_pool_has_no_replicas_is_inconsistent():
    pools = [pool("cpu", replicas=0)]
    problems = build_snapshot(pools, even_routes(pools)).consistent()
    assert "cluster text_embedding--cpu--grpc: no endpoints" in problems


def test_an_empty_pool_is_fine_while_another_pool_backs_it():
    pools = [pool("cpu", replicas=1), pool("gpu", replicas=0)]
    snapshot = build_snapshot(pools, even_routes(pools))
    assert snapshot.consistent() == []
    cla = to_dict(snapshot.resources[protos.ENDPOINT]["text_embedding--gpu--grpc"])
    assert [(loc.get("priority", 0), loc["locality"]["zone"]) for loc in cla["endpoints"]] == [(0, "cpu")]


def test_even_routes_sum_to_100():
    for route in even_routes(three_pools()):
        assert route.total == 100


# ---- input validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: RouteWeights.of("m", "gold", (("cpu", -1),)), id="weight-negative"),
        pytest.param(lambda: RouteWeights.of("m", "gold", (("cpu", 50), ("cpu", 50))), id="pool-twice"),
        pytest.param(lambda: RouteWeights.of("m", "gold", (("cpu", 0.5),)), id="weight-not-int"),
        pytest.param(lambda: PoolEndpoints("a--b", "cpu", False, ("m",), ()), id="double-dash-in-pool"),
        pytest.param(lambda: PoolEndpoints("cpu", "cpu", False, ("bad model",), ()), id="space-in-model"),
        pytest.param(lambda: Endpoint("127.0.0.1", 0, 1), id="port-zero"),
        pytest.param(lambda: Endpoint("localhost", 8000, 8001), id="hostname-not-ip"),
        pytest.param(lambda: DataPlaneSettings(default_tier="platinum"), id="default-tier-unknown"),
        pytest.param(
            lambda: PoolEndpoints("cpu", "cpu", False, ("m",), (), (("other", "2"),)), id="version-of-unserved"
        ),
    ],
)
def test_invalid_inputs_are_refused_at_the_boundary(make):
    with pytest.raises(ValueError):
        make()


def test_routes_for_helper_builds_every_tier():
    assert len(routes_for({"text_embedding": {"cpu": 100}})) == 3


def test_the_summary_lists_weights_and_reasons_per_model_and_tier():
    routes = [
        RouteWeights.of(r.model, r.tier, r.weights, {"gpu": Reason(ReasonKind.CHEAPEST, "meets 50 ms")})
        if (r.model, r.tier) == ("digits_classifier", "gold")
        else r
        for r in tiered_routes()
    ]
    summary = _snapshot(routes=routes).summary()
    assert summary["routes"]["digits_classifier/gold"] == {"weights": {"gpu": 100}, "reasons": {"gpu": "meets 50 ms"}}
    assert summary["pools"]["cpu"]["replicas"] == ["127.0.0.1:9000/9001", "127.0.0.1:9010/9011"]


def test_every_model_cluster_name_reads_back_through_router_lib():
    from router_lib.cluster_names import parse_cluster_name

    for name in _snapshot().resources[protos.CLUSTER]:
        parsed = parse_cluster_name(name)
        assert (parsed is None) == name.startswith("_server--"), name
