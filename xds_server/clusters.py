"""Pure builders of CDS and EDS resources.

One cluster per (model, pool, proto[, version]).  Its load assignment holds the pool's own replicas
at priority 0 and every other pool that serves the model at priority 1, 2, ... in fallback order.
That layout, with retries that skip previous priorities, is what gave zero failed requests when a
whole pool was SIGKILLed under load (FINDINGS); without it Envoy entered panic mode.  Each priority
is one locality named after its pool with weight 1, which proxyless gRPC requires.
"""

from __future__ import annotations

from typing import Any

from xds_server.inputs import CandidatePool, DataPlaneSettings, MirrorTarget, PoolEndpoints
from xds_server.naming import cluster_name, mirror_cluster_name, server_cluster_name
from xds_server.overload import shed_upstream_filters
from xds_server.protos import HTTP_PROTOCOL_OPTIONS_TYPE
from xds_server.tls import upstream_transport_socket

METADATA_NAMESPACE = "inference"


def fallback_rank(pool: PoolEndpoints, settings: DataPlaneSettings) -> tuple[int, str]:
    """Sort key: pools whose accelerator comes first in ``fallback_order`` back others first."""
    order = settings.fallback_order
    rank = order.index(pool.accelerator) if pool.accelerator in order else len(order)
    return (rank, pool.pool)


def retry_threshold(settings: DataPlaneSettings) -> dict[str, Any]:
    """How many retries may be in flight per cluster.  A budget (a share of the active requests,
    with a floor for a whole pool failing over at once) stops a retry storm under overload, where
    per-try timeouts would otherwise turn every slow request into several; Envoy ignores
    ``max_retries`` when a budget is set."""
    retry = settings.retry
    if retry.retry_budget_percent is None:
        return {"priority": "DEFAULT", "max_retries": retry.max_concurrent_retries}
    return {"priority": "DEFAULT", "retry_budget": {"budget_percent": {"value": retry.retry_budget_percent},
                                                    "min_retry_concurrency": retry.min_retry_concurrency}}


def cluster(*, name: str, proto: str, settings: DataPlaneSettings) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "name": name,
        "type": "EDS",
        "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}},
        "connect_timeout": f"{settings.connect_timeout_ms / 1000:.3f}s",
        "lb_policy": "ROUND_ROBIN",
        "circuit_breakers": {"thresholds": [retry_threshold(settings)]},
        "outlier_detection": {
            # Local-origin failures (connect refused, reset) eject a dead replica after 2 tries
            # instead of the default 5 gateway errors; 100% so a whole dead pool can be ejected.
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": settings.outlier.consecutive_local_origin_failure,
            "interval": f"{settings.outlier.interval_ms / 1000:.3f}s",
            "base_ejection_time": f"{settings.outlier.base_ejection_time_ms / 1000:.3f}s",
            "max_ejection_percent": settings.outlier.max_ejection_percent,
        },
    }
    if proto == "grpc":
        options: dict[str, Any] = {"@type": HTTP_PROTOCOL_OPTIONS_TYPE, "explicit_http_config": {"http2_protocol_options": {}}}
        if filters := shed_upstream_filters(settings):  # docs/overload.md: a shed is not retried
            options["http_filters"] = filters
        resource["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options}
        if settings.upstream_tls is not None:  # docs/security.md: Triton's gRPC port requires mTLS
            resource["transport_socket"] = upstream_transport_socket(settings.upstream_tls)
    return resource


def _locality_endpoints(pool: PoolEndpoints, proto: str, priority: int) -> dict[str, Any]:
    return {
        "locality": {"zone": pool.pool},
        "load_balancing_weight": 1,
        "priority": priority,
        "lb_endpoints": [
            {
                "endpoint": {"address": {"socket_address": {"address": r.host, "port_value": r.port(proto)}},
                             # With the route's auto_host_rewrite, the Host a fallback sees is its own pool's.
                             **({"hostname": r.authority} if r.authority else {})},
                "metadata": {
                    "filter_metadata": {
                        METADATA_NAMESPACE: {
                            "pool": pool.pool,
                            "accelerator": pool.accelerator,
                            "emulated": "true" if pool.emulated else "false",
                        }
                    }
                },
            }
            for r in pool.replicas
        ],
    }


def load_assignment(*, name: str, proto: str, by_priority: list[PoolEndpoints]) -> dict[str, Any]:
    """``by_priority[0]`` is the cluster's own pool; empty pools are skipped so priorities stay
    contiguous (an empty priority 0 simply sends everything to the next one)."""
    localities: list[dict[str, Any]] = []
    for pool in by_priority:
        if pool.replicas:
            localities.append(_locality_endpoints(pool, proto, len(localities)))
    return {"cluster_name": name, "endpoints": localities}


def model_clusters(
    *, pools: tuple[PoolEndpoints, ...], settings: DataPlaneSettings, candidates: tuple[CandidatePool, ...] = ()
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(clusters, load assignments) for every (model, pool, proto) plus the server-level clusters,
    and one per candidate version (``CandidatePool``): its replicas first, then the model's stable
    pools in fallback order (a stable cluster never falls back to a candidate)."""
    ordered = sorted(pools, key=lambda p: fallback_rank(p, settings))
    clusters: list[dict[str, Any]] = []
    assignments: list[dict[str, Any]] = []
    for pool in ordered:
        for model in pool.models:
            fallbacks = [p for p in ordered if p is not pool and model in p.models]
            for proto in ("grpc", "http"):
                name = cluster_name(model, pool.pool, proto, pool.version_of(model))
                clusters.append(cluster(name=name, proto=proto, settings=settings))
                assignments.append(load_assignment(name=name, proto=proto, by_priority=[pool, *fallbacks]))
    for c in sorted(candidates, key=lambda c: (c.model, c.pool, c.version)):
        own = PoolEndpoints(pool=c.pool, accelerator=c.accelerator, emulated=c.emulated, models=(c.model,),
                            replicas=c.replicas)
        stable = [p for p in ordered if c.model in p.models]
        for proto in ("grpc", "http"):
            name = cluster_name(c.model, c.pool, proto, c.version)
            clusters.append(cluster(name=name, proto=proto, settings=settings))
            assignments.append(load_assignment(name=name, proto=proto, by_priority=[own, *stable]))
    if ordered:
        for proto in ("grpc", "http"):
            name = server_cluster_name(proto)
            clusters.append(cluster(name=name, proto=proto, settings=settings))
            assignments.append(load_assignment(name=name, proto=proto, by_priority=ordered))
    return clusters, assignments


def mirror_clusters(mirrors: tuple[MirrorTarget, ...], settings: DataPlaneSettings) -> list[dict[str, Any]]:
    """One STATIC cluster per shadow comparator and protocol (its address is fixed for the release):
    HTTP/1.1 to its REST port, h2 to its gRPC port when it has one."""
    out = []
    for m in mirrors:
        for proto, port in (("http", m.port), ("grpc", m.grpc_port)):
            if port is None:
                continue
            name = mirror_cluster_name(m.model, proto)
            resource: dict[str, Any] = {
                "name": name, "type": "STATIC", "connect_timeout": f"{settings.connect_timeout_ms / 1000:.3f}s",
                "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": m.host, "port_value": port}}}}]}]},
            }
            if proto == "grpc":
                resource["typed_extension_protocol_options"] = {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": HTTP_PROTOCOL_OPTIONS_TYPE, "explicit_http_config": {"http2_protocol_options": {}}}}
            out.append(resource)
    return out
