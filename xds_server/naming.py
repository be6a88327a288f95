"""Names of Envoy resources, in one place.

``cluster_name`` has the same format as ``router_lib.metrics.cluster_name(model, pool, proto)``
(``<model>--<pool>--<proto>``), which reads Envoy's per-cluster stats back; it is defined here
too because xds_server must not depend on the metrics module.  Keep the two identical.
"""

from __future__ import annotations

HTTP_LISTENER = "http"
GRPC_LISTENER = "grpc"
HTTP_ROUTES = "http"
GRPC_ROUTES = "grpc"
# Server-level calls (health, server metadata, repository index) carry no model name; they go to
# this cluster, which holds every pool at one priority each, in fallback order.
SERVER_MODEL = "_server"


def cluster_name(model: str, pool: str, proto: str, version: str | None = None) -> str:
    base = f"{model}--{pool}--{proto}"
    return base if version is None else f"{base}--v{version}"


def server_cluster_name(proto: str) -> str:
    return f"{SERVER_MODEL}--{proto}"


def proxyless_route_name(listener: str) -> str:
    return f"proxyless--{listener}"
