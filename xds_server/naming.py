"""Names of Envoy resources, in one place.

Model clusters are named by ``router_lib.cluster_names.cluster_name`` (``<model>--<pool>--<proto>
[--v<version>]``): the same function the metrics adapters invert to read Envoy's per-cluster stats,
so the two sides cannot drift.
"""

from __future__ import annotations

from router_lib.cluster_names import cluster_name

__all__ = ["cluster_name", "mirror_cluster_name", "server_cluster_name", "proxyless_route_name"]

HTTP_LISTENER = "http"
GRPC_LISTENER = "grpc"
HTTP_ROUTES = "http"
GRPC_ROUTES = "grpc"
# Server-level calls (health, server metadata, repository index) carry no model name; they go to
# this cluster, which holds every pool at one priority each, in fallback order.  The leading "_"
# keeps it out of router_lib's per-model stats (``parse_cluster_name`` skips it).
SERVER_MODEL = "_server"


def server_cluster_name(proto: str) -> str:
    return f"{SERVER_MODEL}--{proto}"


def proxyless_route_name(listener: str) -> str:
    return f"proxyless--{listener}"


def mirror_cluster_name(model: str, proto: str = "http") -> str:
    """The shadow comparator of ``model``'s release (``proto``: http or grpc).  The leading "_" keeps
    it out of the per-model stats, like the server cluster."""
    return f"_mirror--{model}--{proto}"
