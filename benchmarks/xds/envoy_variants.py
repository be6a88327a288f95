"""Variants of the shipped Envoy configuration, one change each, for measuring what each part costs.

The shipped configuration is whatever ``xds_server.build_snapshot`` builds with the platform's own
settings (``control.server.dataplane_settings``) and ``xds_server.bootstrap.envoy_bootstrap``: this
module never builds a listener itself.  It discovers the HTTP filters of the listeners and the HCM
fields that are set (tracing, access logs, ...), and derives variants that each remove one of them,
so the benchmark measures the chain as it is on the day it runs, including filters added later.
Pure functions of snapshots and bootstrap dicts.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from xds_server import protos
from xds_server.snapshot import Snapshot

ROUTER = "envoy.filters.http.router"
# HCM fields that cost per request when set; each found in the shipped config gets an "off" variant.
HCM_COST_FIELDS = ("tracing", "access_log", "generate_request_id")
# Per-request work the routes ask for: retries (the router keeps the body for a retry and arms
# per-try state) and the response headers formatted from the upstream host's metadata.
ROUTE_PARTS = ("retry_policy", "response_headers_to_add")
CLUSTER_COST_FIELDS = ("outlier_detection",)
# Not a Cluster field: the upstream HTTP filters in a cluster's HttpProtocolOptions (the gRPC
# clusters' shed filter, xds_server.overload.shed_upstream_filters); removing it keeps the codec.
UPSTREAM_FILTERS = "upstream_http_filters"
PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


@dataclass(frozen=True)
class Variant:
    """One Envoy configuration: the shipped one less ``without_filters`` and ``without_hcm_fields``,
    with ``bootstrap_change`` applied and ``concurrency`` worker threads."""

    name: str
    concurrency: int
    without_filters: frozenset[str] = frozenset()
    without_hcm_fields: frozenset[str] = frozenset()
    without_route_parts: frozenset[str] = frozenset()  # of ROUTE_PARTS
    without_cluster_fields: frozenset[str] = frozenset()  # fields of every Cluster, e.g. outlier_detection
    bootstrap_change: str = ""  # a key of BOOTSTRAP_CHANGES
    note: str = ""
    client_headers: tuple[tuple[str, str], ...] = field(default=())


def _hcms(snapshot: Snapshot) -> Iterable[tuple[str, http_connection_manager_pb2.HttpConnectionManager]]:
    for name, listener in snapshot.resources[protos.LISTENER].items():
        for chain in listener.filter_chains:
            for f in chain.filters:
                hcm = http_connection_manager_pb2.HttpConnectionManager()
                if f.typed_config.Unpack(hcm):
                    yield name, hcm


def http_filters(snapshot: Snapshot, listener: str) -> list[str]:
    """Names of the HTTP filters of one Envoy listener, in order (the router last)."""
    return [f.name for name, hcm in _hcms(snapshot) if name == listener for f in hcm.http_filters]


def lua_filters(snapshot: Snapshot, listener: str) -> list[str]:
    """Those of them that are Lua scripts (whatever their name)."""
    return [f.name for name, hcm in _hcms(snapshot) if name == listener for f in hcm.http_filters
            if f.typed_config.type_url == protos.LUA_TYPE]


def hcm_fields_set(snapshot: Snapshot, listener: str) -> list[str]:
    """Which of ``HCM_COST_FIELDS`` the listener's connection manager sets."""
    found = []
    for name, hcm in _hcms(snapshot):
        if name != listener:
            continue
        for f in HCM_COST_FIELDS:
            value = getattr(hcm, f)
            present = len(value) > 0 if f == "access_log" else (
                hcm.HasField(f) if f != "generate_request_id" else hcm.HasField(f) and not value.value)
            if present:
                found.append(f)
    return found


def apply(snapshot: Snapshot, variant: Variant) -> Snapshot:
    """The snapshot with the variant's filters and HCM fields removed from every Envoy listener."""
    if not (variant.without_filters or variant.without_hcm_fields or variant.without_route_parts
            or variant.without_cluster_fields):
        return snapshot
    unknown = set(variant.without_filters) - {f for n in snapshot.resources[protos.LISTENER]
                                               for f in http_filters(snapshot, n)}
    if unknown or ROUTER in variant.without_filters:
        raise ValueError(f"variant {variant.name}: cannot remove {sorted(unknown) or ROUTER}: not in the chain")
    resources: dict[str, list[Any]] = {t: list(snapshot.resources[t].values()) for t in protos.PUSH_ORDER}
    listeners = []
    for listener in resources[protos.LISTENER]:
        listener = copy.deepcopy(listener)
        for chain in listener.filter_chains:
            for f in chain.filters:
                hcm = http_connection_manager_pb2.HttpConnectionManager()
                if not f.typed_config.Unpack(hcm):
                    continue
                kept = [x for x in hcm.http_filters if x.name not in variant.without_filters]
                del hcm.http_filters[:]
                hcm.http_filters.extend(kept)
                for name in variant.without_hcm_fields:
                    if name == "generate_request_id":
                        hcm.generate_request_id.value = False
                    else:
                        hcm.ClearField(name)
                f.typed_config.Pack(hcm)
        listeners.append(listener)
    resources[protos.LISTENER] = listeners
    routes = []
    for config in resources[protos.ROUTE]:
        config = copy.deepcopy(config)
        for vhost in config.virtual_hosts:
            if "response_headers_to_add" in variant.without_route_parts:
                del vhost.response_headers_to_add[:]
            for route in vhost.routes:
                if "retry_policy" in variant.without_route_parts and route.HasField("route"):
                    route.route.ClearField("retry_policy")
        routes.append(config)
    resources[protos.ROUTE] = routes
    clusters = []
    for cluster in resources[protos.CLUSTER]:
        cluster = copy.deepcopy(cluster)
        for name in variant.without_cluster_fields:
            if name == UPSTREAM_FILTERS:
                _clear_upstream_filters(cluster)
            else:
                cluster.ClearField(name)
        clusters.append(cluster)
    resources[protos.CLUSTER] = clusters
    return Snapshot.from_resources(resources, api_listeners=snapshot.api_listeners, pools=snapshot.pools,
                                   routes=snapshot.routes, settings=snapshot.settings, splits=snapshot.splits,
                                   candidates=snapshot.candidates, mirrors=snapshot.mirrors)


def upstream_filters(snapshot: Snapshot) -> list[str]:
    """Names of the upstream HTTP filters any cluster has (the codec, which every one needs, left out)."""
    names = set()
    for cluster in snapshot.resources[protos.CLUSTER].values():
        if PROTOCOL_OPTIONS in cluster.typed_extension_protocol_options:
            options = http_protocol_options_pb2.HttpProtocolOptions()
            cluster.typed_extension_protocol_options[PROTOCOL_OPTIONS].Unpack(options)
            names.update(f.name for f in options.http_filters if f.name != "envoy.filters.http.upstream_codec")
    return sorted(names)


def _clear_upstream_filters(cluster: Any) -> None:
    if PROTOCOL_OPTIONS not in cluster.typed_extension_protocol_options:
        return
    options = http_protocol_options_pb2.HttpProtocolOptions()
    cluster.typed_extension_protocol_options[PROTOCOL_OPTIONS].Unpack(options)
    del options.http_filters[:]
    cluster.typed_extension_protocol_options[PROTOCOL_OPTIONS].Pack(options)


def _stats_off(bootstrap: dict[str, Any]) -> None:
    # Only the stats the data path updates per request are at stake; reject_all drops them all.
    bootstrap["stats_config"] = {**bootstrap.get("stats_config", {}), "stats_matcher": {"reject_all": True}}


def _no_tag_extraction(bootstrap: dict[str, Any]) -> None:
    bootstrap["stats_config"] = {**bootstrap.get("stats_config", {}), "use_all_default_tags": False}


def _nghttp2(bootstrap: dict[str, Any]) -> None:
    # Envoy 1.40 speaks HTTP/2 with oghttp2 by default; this runtime flag selects nghttp2 again.
    bootstrap["layered_runtime"] = {"layers": [{"name": "codec", "static_layer": {
        "envoy.reloadable_features.http2_use_oghttp2": False}}]}


BOOTSTRAP_CHANGES = {
    "stats_off": _stats_off,
    "no_tag_extraction": _no_tag_extraction,
    "nghttp2": _nghttp2,
}


def bootstrap_for(bootstrap: dict[str, Any], variant: Variant) -> dict[str, Any]:
    changed = copy.deepcopy(bootstrap)
    if variant.bootstrap_change:
        BOOTSTRAP_CHANGES[variant.bootstrap_change](changed)
    return changed


def one_at_a_time(snapshot: Snapshot, listener: str, *, concurrency: int, bootstrap: dict[str, Any]) -> list[Variant]:
    """The shipped variant, then one variant per removable part of ``listener``'s chain, then one
    with the whole chain off (router only: the client sends ``x-model`` itself), then the bootstrap
    knobs (stats), then the other worker-thread count."""
    shipped = Variant("shipped", concurrency, note="the chain and bootstrap the platform ships")
    filters = [f for f in http_filters(snapshot, listener) if f != ROUTER]
    fields = hcm_fields_set(snapshot, listener)
    variants = [shipped]
    for f in filters:
        variants.append(Variant(f"without {f.removeprefix('envoy.filters.http.')}", concurrency,
                                without_filters=frozenset({f})))
    for f in fields:
        variants.append(Variant(f"without hcm.{f}", concurrency, without_hcm_fields=frozenset({f})))
    scripts = lua_filters(snapshot, listener)
    if len(scripts) > 1:
        variants.append(Variant("without any Lua filter", concurrency, without_filters=frozenset(scripts),
                                note="every Lua script off at once (" + ", ".join(scripts) + ")"))
    if filters or fields:
        variants.append(Variant("router only", concurrency, without_filters=frozenset(filters),
                                without_hcm_fields=frozenset(fields), note="no filter but the router"))
    del bootstrap  # the bootstrap knobs apply to any bootstrap
    variants.append(Variant("without route retries", concurrency, without_route_parts=frozenset({"retry_policy"})))
    variants.append(Variant("without x-served-by headers", concurrency,
                            without_route_parts=frozenset({"response_headers_to_add"}),
                            note="the virtual host's response headers from upstream metadata"))
    variants.append(Variant("without outlier detection", concurrency,
                            without_cluster_fields=frozenset(CLUSTER_COST_FIELDS)))
    if upstream := upstream_filters(snapshot):
        variants.append(Variant("without upstream filters", concurrency, without_cluster_fields=frozenset({UPSTREAM_FILTERS}),
                                note="the clusters' upstream HTTP filters off (" + ", ".join(upstream) + ")"))
    variants.append(Variant("stats off", concurrency, bootstrap_change="stats_off",
                            note="stats_matcher reject_all (what stats cost per request)"))
    variants.append(Variant("floor", concurrency, without_filters=frozenset(filters),
                            without_hcm_fields=frozenset(fields), without_route_parts=frozenset(ROUTE_PARTS),
                            without_cluster_fields=frozenset(CLUSTER_COST_FIELDS) | ({UPSTREAM_FILTERS} if upstream else set()),
                            bootstrap_change="stats_off",
                            note="all of the above off: what proxying alone costs here"))
    variants.append(Variant("nghttp2 codec", concurrency, bootstrap_change="nghttp2",
                            note="HTTP/2 codec nghttp2 instead of Envoy 1.40's default oghttp2"))
    other = 1 if concurrency != 1 else 2
    variants.append(Variant(f"concurrency {other}", other, note=f"--concurrency {other}"))
    return variants
