"""Bootstrap files: Envoy's (static part: node, admin, the ADS cluster) and proxyless gRPC's.

Everything else Envoy runs comes over ADS.  The admin interface listens on loopback only; port 0
lets Envoy pick a free port, which ``EnvoyProcess`` reads back through ``--admin-address-path``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from router_lib.metric_names import ENVOY_RQ_TIME_BUCKETS_MS
from xds_server import tracing as otel_tracing
from xds_server.tls import UpstreamTls, upstream_transport_socket

XDS_CLUSTER = "xds_cluster"


def envoy_bootstrap(
    *,
    node_id: str,
    xds_host: str = "127.0.0.1",
    xds_port: int,
    admin_port: int = 0,
    node_cluster: str = "inference-gateway",
    xds_tls: UpstreamTls | None = None,
) -> dict[str, Any]:
    """``xds_tls``: dial the xDS server over mTLS (``UpstreamTls.to(Role.XDS_SERVER, cert_dir)``);
    None: plaintext, as before."""
    ads = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {"id": node_id, "cluster": node_cluster},
        # Every tier's bound must be a bucket edge, or "requests within the bound" cannot be counted
        # exactly (Envoy's default buckets have no 150 ms edge for silver).
        "stats_config": {
            "histogram_bucket_settings": [
                {"match": {"safe_regex": {"regex": ".*rq_time$"}}, "buckets": list(ENVOY_RQ_TIME_BUCKETS_MS)}
            ]
        },
        # Histograms (upstream_rq_time: the releases' p95/p99 gates) are merged at each admin query
        # instead of every 5 s: a release watcher polling at 20 Hz sees them at most one poll late
        # (measured), so a tail regression is judged in ~2 s, not after two flushes.  No stats
        # sinks are configured, so nothing else waited on the timer.
        "stats_flush_on_admin": True,
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "dynamic_resources": {
            # Aggregated: one stream carries all four types, so the server alone decides their
            # order (clusters before routes that name them) - separate streams cannot guarantee it.
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                # Reconnect fast when the control server comes back: Envoy's default backoff grew past
                # 15 s while the server was away for a few busy seconds (a flaky resync test).
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER, "retry_policy": {
                    "retry_back_off": {"base_interval": "0.25s", "max_interval": "2s"}}}}],
                "set_node_on_first_message_only": True,
            },
            "lds_config": ads,
            "cds_config": ads,
        },
        "static_resources": {
            "clusters": [
                {
                    "name": XDS_CLUSTER,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": XDS_CLUSTER,
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {"socket_address": {"address": xds_host, "port_value": xds_port}}
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    **({"transport_socket": upstream_transport_socket(xds_tls)} if xds_tls is not None else {}),
                }
            ]
        },
        # Quiet the "no overload manager configured" warning and cap connections on purpose.
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
                        "downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": 10000,
                    },
                }
            ]
        },
    }


def write_envoy_bootstrap(path: Path | str, *, tracing: otel_tracing.TracingSettings | None = None, **kwargs: Any) -> Path:
    """``tracing``: add the collector cluster Envoy exports spans to; None: as this process's OTEL_*
    environment says (docs/tracing.md), nothing when it names no endpoint."""
    path = Path(path)
    bootstrap = otel_tracing.with_collector(envoy_bootstrap(**kwargs), tracing or otel_tracing.from_environment())
    path.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
    return path


def proxyless_bootstrap(*, node_id: str, xds_host: str = "127.0.0.1", xds_port: int) -> dict[str, Any]:
    """For ``GRPC_XDS_BOOTSTRAP``; the client then dials ``xds:///<model>``."""
    return {
        "xds_servers": [
            {
                "server_uri": f"{xds_host}:{xds_port}",
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": node_id, "locality": {"zone": "local"}},
    }


def write_proxyless_bootstrap(path: Path | str, **kwargs: Any) -> Path:
    path = Path(path)
    path.write_text(json.dumps(proxyless_bootstrap(**kwargs), indent=2))
    return path
