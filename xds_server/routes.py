"""Pure builders of RDS resources: per (model, tier) weighted clusters over pools.

Route order inside the one virtual host, first match wins:
 1. an ``x-sla-tier`` that is present but not a known tier -> 400 (gRPC: INVALID_ARGUMENT).  Never
    a silent default.  Envoy maps a local 400 to gRPC INTERNAL, so the gRPC variant adds
    ``grpc-status: 3`` itself (FINDINGS);
 2. per model, per tier: the tier's weighted clusters; then the model without the header -> the
    default tier;
 3. a model-shaped request for a model nobody serves -> 404 (gRPC: NOT_FOUND);
 4. everything else (health, server metadata, repository index) -> the server-level cluster.
The model comes from the REST path ``/v2/models/<name>[/...]`` (HTTP listener) or from the
``x-model`` header that the Lua filter derives from the gRPC body (gRPC listener).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from router_lib.release_split import VersionSplit, compose
from router_lib.routes import RouteKey
from xds_server.grpc_model_header import MODEL_HEADER
from xds_server.inputs import DataPlaneSettings, PoolEndpoints, RouteWeights
from xds_server.naming import cluster_name, mirror_cluster_name, server_cluster_name
from xds_server.protos import PREVIOUS_HOSTS_TYPE, PREVIOUS_PRIORITIES_TYPE, header_option

GRPC_STATUS_INVALID_ARGUMENT = "3"
GRPC_STATUS_NOT_FOUND = "5"
GRPC_STATUS_UNAVAILABLE = "14"
UNAVAILABLE_RETRY_AFTER_S = 1  # what a client is told to wait before retrying a model with no ready replica


def _tier_regex(settings: DataPlaneSettings) -> str:
    return "^(" + "|".join(re.escape(t) for t in settings.tiers) + ")$"


def weighted_clusters(*, route: RouteWeights, proto: str, pools_by_name: dict[str, PoolEndpoints],
                      split: VersionSplit | None = None) -> dict[str, Any]:
    """Zero weights are left out (the pool still backs the others through EDS priorities).
    A pool unknown to the snapshot still yields a cluster name: ``Snapshot.consistent`` reports it.
    With a release's ``split``, each pool's weight is shared between its stable cluster and the
    candidate's (``router_lib.release_split.compose``: the candidate's share is exact)."""
    entries = []
    for w in sorted(compose(route, split), key=lambda w: (w.pool, w.version or "")):
        if w.version is not None:
            name = cluster_name(route.model, w.pool, proto, w.version)
        else:
            known = pools_by_name.get(w.pool)
            name = cluster_name(route.model, w.pool, proto, known.version_of(route.model) if known else None)
        entries.append({"name": name, "weight": w.weight})
    return {"clusters": entries}


def retry_policy(*, proto: str, settings: DataPlaneSettings, tier: str | None = None) -> dict[str, Any]:
    """``tier``: the route's tier; its per-try timeout (``RetrySettings.per_try_timeouts_ms``) makes a
    hung replica cost one try, not the route timeout: the try is retried on another replica (the
    previous-hosts predicate) and the timeout counts as a local-origin failure for outlier ejection."""
    retry = settings.retry
    policy: dict[str, Any] = {
        "retry_on": retry.retry_on_grpc if proto == "grpc" else retry.retry_on_http,
        "num_retries": retry.num_retries,
        "retry_priority": {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {"@type": PREVIOUS_PRIORITIES_TYPE, "update_frequency": 1},
        },
        "retry_host_predicate": [
            {"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {"@type": PREVIOUS_HOSTS_TYPE}}
        ],
        "host_selection_retry_max_attempts": str(retry.host_selection_retry_max_attempts),
    }
    per_try_ms = retry.per_try_timeout_ms(tier) if tier is not None else None
    if per_try_ms is not None:
        policy["per_try_timeout"] = _seconds(per_try_ms)
    return policy


def _seconds(ms: float) -> str:
    return f"{ms / 1000:.3f}s"


def route_timeout(settings: DataPlaneSettings, tier: str | None) -> str:
    """The whole request's bound: with a per-try timeout, every try may use it once (the first and
    ``num_retries`` more), at least ``route_timeout_floor_ms`` (a hedged try still running may
    answer late rather than fail), capped by ``route_timeout_s``; otherwise ``route_timeout_s``."""
    retry = settings.retry
    per_try_ms = retry.per_try_timeout_ms(tier) if tier is not None else None
    if per_try_ms is None:
        return f"{settings.route_timeout_s:g}s"
    whole_ms = max(per_try_ms * (retry.num_retries + 1), retry.route_timeout_floor_ms)
    return _seconds(min(settings.route_timeout_s * 1000, whole_ms))


def _model_match(model: str, proto: str) -> dict[str, Any]:
    if proto == "http":
        # Matches /v2/models/<model> and /v2/models/<model>/<anything>, not /v2/models/<model>x.
        return {"path_separated_prefix": f"/v2/models/{model}"}
    return {"prefix": "/", "headers": [{"name": MODEL_HEADER, "string_match": {"exact": model}}]}


def _forward(
    *, name: str, match: dict[str, Any], clusters: dict[str, Any], proto: str, settings: DataPlaneSettings,
    tier: str | None = None,
) -> dict[str, Any]:
    action: dict[str, Any] = {
        "weighted_clusters": clusters,
        "timeout": route_timeout(settings, tier),
        "retry_policy": retry_policy(proto=proto, settings=settings, tier=tier),
    }
    if tier is not None and tier in settings.retry.hedge_tiers:
        # The timed-out try keeps running; the first answer wins.  Envoy implements hedging only
        # on per-try timeouts (initial_requests > 1 is not implemented).
        action["hedge_policy"] = {"hedge_on_per_try_timeout": True}
    return {"name": name, "match": match, "route": action}


def _mirror(route: dict[str, Any], split: VersionSplit | None, proto: str = "http") -> dict[str, Any]:
    """Shadow mode: mirror ``split.mirror_bp`` of the route's requests to the model's comparator.
    Envoy sends the copy without waiting for it and drops its answer: the live path is unchanged."""
    if split is not None and split.mirror_bp > 0:
        route["route"]["request_mirror_policies"] = [{
            "cluster": mirror_cluster_name(split.key.model, proto),
            "runtime_fraction": {"default_value": {"numerator": split.mirror_bp, "denominator": "TEN_THOUSAND"}},
        }]
    return route


def tier_virtual_clusters(settings: DataPlaneSettings) -> list[dict[str, Any]]:
    """One virtual cluster per tier, so Envoy keeps request latency and status stats per tier
    (``envoy_vhost_vcluster_upstream_rq_*{envoy_virtual_cluster="gold"}``): the SLA burn-rate rules
    read them.  The default tier's also counts requests that carry no tier header."""
    out = []
    for tier in settings.tiers:
        regex = f"^({re.escape(tier)})?$" if tier == settings.default_tier else f"^{re.escape(tier)}$"
        out.append({
            "name": tier,
            "headers": [{"name": settings.tier_header, "string_match": {"safe_regex": {"regex": regex}},
                         "treat_missing_header_as_empty": True}],
        })
    return out


def _invalid_tier_routes(settings: DataPlaneSettings) -> list[dict[str, Any]]:
    header = settings.tier_header
    bad_tier = [
        {"name": header, "present_match": True},
        {"name": header, "string_match": {"safe_regex": {"regex": _tier_regex(settings)}}, "invert_match": True},
    ]
    message = f"invalid {header}: expected one of {', '.join(settings.tiers)} (absent means {settings.default_tier})"
    return [
        {
            "name": "invalid-tier-grpc",
            "match": {"prefix": "/", "grpc": {}, "headers": bad_tier},
            "direct_response": {"status": 400, "body": {"inline_string": message}},
            "response_headers_to_add": [header_option("grpc-status", GRPC_STATUS_INVALID_ARGUMENT)],
        },
        {
            "name": "invalid-tier",
            "match": {"prefix": "/", "headers": bad_tier},
            "direct_response": {"status": 400, "body": {"inline_string": json.dumps({"error": message})}},
            "response_headers_to_add": [header_option("content-type", "application/json")],
        },
    ]


def _unavailable_model_routes(proto: str, models: list[str]) -> list[dict[str, Any]]:
    """A model the fleet serves but no pool can take now (no ready replica: the platform is starting,
    or every pool serving it is down while others are up): 503 / UNAVAILABLE with a retry hint, not
    the 404 / NOT_FOUND of a model nobody serves, which clients rightly treat as final."""
    out = []
    for model in models:
        message = f"model {model} has no ready replica now: retry in {UNAVAILABLE_RETRY_AFTER_S}s"
        retry_after = header_option("retry-after", str(UNAVAILABLE_RETRY_AFTER_S))
        if proto == "http":
            out.append({
                "name": f"{model}/unavailable",
                "match": _model_match(model, proto),
                "direct_response": {"status": 503, "body": {"inline_string": json.dumps({"error": message})}},
                "response_headers_to_add": [header_option("content-type", "application/json"), retry_after],
            })
        else:
            out.append({
                "name": f"{model}/unavailable-grpc",
                "match": _model_match(model, proto),
                "direct_response": {"status": 503, "body": {"inline_string": message}},
                "response_headers_to_add": [header_option("grpc-status", GRPC_STATUS_UNAVAILABLE), retry_after],
            })
    return out


def _unknown_model_routes(proto: str, models: list[str]) -> list[dict[str, Any]]:
    served = ", ".join(models) or "none"
    message = f"unknown model: this endpoint serves {served}"
    if proto == "http":
        return [
            {
                "name": "unknown-model",
                "match": {"prefix": "/v2/models/"},
                "direct_response": {"status": 404, "body": {"inline_string": json.dumps({"error": message})}},
                "response_headers_to_add": [header_option("content-type", "application/json")],
            }
        ]
    return [
        {
            "name": "unknown-model-grpc",
            "match": {"prefix": "/", "headers": [{"name": MODEL_HEADER, "present_match": True}]},
            "direct_response": {"status": 404, "body": {"inline_string": message}},
            "response_headers_to_add": [header_option("grpc-status", GRPC_STATUS_NOT_FOUND)],
        }
    ]


def route_configuration(
    *,
    name: str,
    proto: str,
    routes: tuple[RouteWeights, ...],
    pools: tuple[PoolEndpoints, ...],
    settings: DataPlaneSettings,
    splits: Mapping[RouteKey, VersionSplit] | None = None,
    mirrored: frozenset[tuple[str, str]] = frozenset(),
    models: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The RouteConfiguration of the Envoy listener serving ``proto`` (``http`` or ``grpc``);
    ``splits``: releases in force, by route; ``mirrored``: (model, proto) with a shadow comparator;
    ``models``: the fleet's models beyond those of ``pools`` (a known model without a route is
    unavailable, 503, not unknown, 404)."""
    splits = splits or {}
    pools_by_name = {p.pool: p for p in pools}
    by_key = {(r.model, r.tier): r for r in routes}
    routed = sorted({r.model for r in routes})
    entries = _invalid_tier_routes(settings)
    for model in routed:
        match = _model_match(model, proto)
        for tier in settings.tiers:
            route = by_key.get((model, tier))
            if route is None:
                continue
            tier_match = dict(match)
            tier_match["headers"] = [
                *match.get("headers", []),
                {"name": settings.tier_header, "string_match": {"exact": tier}},
            ]
            split = splits.get(RouteKey(model, tier))
            clusters = weighted_clusters(route=route, proto=proto, pools_by_name=pools_by_name, split=split)
            entries.append(_mirror(
                _forward(name=f"{model}/{tier}", match=tier_match, clusters=clusters, proto=proto, settings=settings,
                         tier=tier),
                split if (model, proto) in mirrored else None, proto))
        default = by_key.get((model, settings.default_tier))
        if default is not None:
            split = splits.get(RouteKey(model, settings.default_tier))
            clusters = weighted_clusters(route=default, proto=proto, pools_by_name=pools_by_name, split=split)
            entries.append(_mirror(
                _forward(name=f"{model}/default", match=match, clusters=clusters, proto=proto, settings=settings,
                         tier=settings.default_tier),
                split if (model, proto) in mirrored else None, proto))
    known = sorted({*models, *(m for p in pools for m in p.models), *routed})
    # after every forwarding route: a known model's request that no tier route took (no route at
    # all, or none for its tier) is unavailable now, not unknown
    entries.extend(_unavailable_model_routes(proto, [m for m in known if any(
        (m, t) not in by_key for t in settings.tiers)]))
    entries.extend(_unknown_model_routes(proto, known))
    if pools:
        entries.append(
            _forward(
                name="server",
                match={"prefix": "/"},
                proto=proto,
                settings=settings,
                clusters={"clusters": [{"name": server_cluster_name(proto), "weight": 1}]},
            )
        )
    if any(r.authority for p in pools for r in p.replicas):
        # In a cluster: Host/:authority becomes the chosen endpoint's EDS hostname, its Service's
        # name, which Istio's sidecar needs to send the request over mTLS (``Endpoint.authority``).
        for entry in entries:
            if "route" in entry:
                entry["route"]["auto_host_rewrite"] = True
    return {
        "name": name,
        "virtual_hosts": [
            {
                "name": f"kserve-{proto}",
                "domains": ["*"],
                "routes": entries,
                "virtual_clusters": tier_virtual_clusters(settings),
                # The endpoint that served, not just the cluster picked: after a failover to priority 1
                # this names the fallback pool.  Envoy's own local replies carry none of these.
                "response_headers_to_add": [
                    header_option("x-served-by", "%UPSTREAM_METADATA(inference:pool)%"),
                    header_option("x-accelerator", "%UPSTREAM_METADATA(inference:accelerator)%"),
                    header_option("x-emulated", "%UPSTREAM_METADATA(inference:emulated)%"),
                ],
            }
        ],
    }


def proxyless_route_configuration(
    *,
    name: str,
    model: str,
    routes: tuple[RouteWeights, ...],
    pools: tuple[PoolEndpoints, ...],
    settings: DataPlaneSettings,
    splits: Mapping[RouteKey, VersionSplit] | None = None,
) -> dict[str, Any]:
    """Routes for gRPC clients that dial ``xds:///<model>`` directly (no Envoy, no Lua).

    gRPC supports header matches and weighted clusters but not direct responses, so an unknown tier
    matches no route and the client gets UNAVAILABLE "no matching route" instead of a 400.
    """
    splits = splits or {}
    pools_by_name = {p.pool: p for p in pools}
    by_key = {(r.model, r.tier): r for r in routes}
    entries = []
    for tier in settings.tiers:
        route = by_key.get((model, tier))
        if route is not None:
            entries.append(
                {
                    "name": f"{model}/{tier}",
                    "match": {
                        "prefix": "",
                        "headers": [{"name": settings.tier_header, "string_match": {"exact": tier}}],
                    },
                    "route": {
                        "weighted_clusters": weighted_clusters(route=route, proto="grpc", pools_by_name=pools_by_name,
                                                               split=splits.get(RouteKey(model, tier)))
                    },
                }
            )
    default = by_key.get((model, settings.default_tier))
    if default is not None:
        entries.append(
            {
                "name": f"{model}/default",
                "match": {"prefix": "", "headers": [{"name": settings.tier_header, "present_match": False}]},
                "route": {
                    "weighted_clusters": weighted_clusters(route=default, proto="grpc", pools_by_name=pools_by_name,
                                                           split=splits.get(RouteKey(model, settings.default_tier)))
                },
            }
        )
    return {"name": name, "virtual_hosts": [{"name": model, "domains": ["*"], "routes": entries}]}
