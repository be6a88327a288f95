"""Pure builders of LDS resources: Envoy's two KServe listeners and proxyless api_listeners.

Two listeners rather than one: Triton clients look for HTTP on :8000 and gRPC on :8001, and the
upstream clusters differ by protocol anyway (HTTP/1.1 to Triton's HTTP port, h2 to its gRPC port).
Both use ``codec_type: AUTO``.  Only the gRPC listener runs the Lua filter that reads the model
name from the body; the HTTP listener routes on the REST path alone, so it buffers nothing.
"""

from __future__ import annotations

from typing import Any

from xds_server.edge_filters import edge_connection_options, edge_http_filters
from xds_server.grpc_model_header import lua_source
from xds_server.inputs import DataPlaneSettings
from xds_server.naming import GRPC_LISTENER, GRPC_ROUTES, HTTP_LISTENER, HTTP_ROUTES
from xds_server.overload import admission_filter
from xds_server.protos import HCM_TYPE, LUA_TYPE, ROUTER_TYPE
from xds_server.tracing import edge_tracing

_ADS = {"ads": {}, "resource_api_version": "V3"}


def _router_filter() -> dict[str, Any]:
    return {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}


def http_connection_manager(*, stat_prefix: str, route_name: str, filters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "@type": HCM_TYPE,
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        "rds": {"config_source": _ADS, "route_config_name": route_name},
        "http_filters": [*filters, _router_filter()],
    }


def envoy_listener(
    *, name: str, port: int, route_name: str, filters: list[dict[str, Any]], settings: DataPlaneSettings
) -> dict[str, Any]:
    hcm = http_connection_manager(stat_prefix=name, route_name=route_name, filters=filters)
    hcm.update(edge_connection_options(settings))
    hcm.update(edge_tracing(tracing=settings.tracing, tier_header=settings.tier_header, default_tier=settings.default_tier))
    return {
        "name": name,
        "address": {"socket_address": {"address": settings.listen_address, "port_value": port}},
        "per_connection_buffer_limit_bytes": settings.max_request_bytes,
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


def envoy_listeners(settings: DataPlaneSettings) -> list[dict[str, Any]]:
    lua = {
        "name": "envoy.filters.http.lua",
        "typed_config": {"@type": LUA_TYPE, "default_source_code": {"inline_string": lua_source()}},
    }
    edge = edge_http_filters(settings)  # authentication, then validation (xds_server.edge_filters)
    admission = admission_filter(settings)  # per-tier admission (xds_server.overload)
    return [
        envoy_listener(
            name=HTTP_LISTENER, port=settings.http_port, route_name=HTTP_ROUTES, filters=[*edge, *admission],
            settings=settings
        ),
        envoy_listener(
            name=GRPC_LISTENER, port=settings.grpc_port, route_name=GRPC_ROUTES, filters=[*edge, *admission, lua],
            settings=settings
        ),
    ]


def api_listener(*, name: str, route_name: str) -> dict[str, Any]:
    """A listener for proxyless gRPC (``xds:///<name>``); never sent in Envoy's wildcard answer."""
    hcm = http_connection_manager(stat_prefix=name, route_name=route_name, filters=[])
    return {"name": name, "api_listener": {"api_listener": hcm}}
