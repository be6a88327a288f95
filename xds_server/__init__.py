"""Python xDS (ADS) control server and Envoy data plane for KServe v2 inference routing.

Public API (see docs/xds.md):
  inputs:    Endpoint, PoolEndpoints, RouteWeights, DataPlaneSettings
  snapshot:  build_snapshot(pools, routes, settings) -> Snapshot; Snapshot.consistent(); even_routes
  server:    XdsServer(port=0, registry=...).start() / set_snapshot / wait_acked / stop
  bootstrap: envoy_bootstrap / write_envoy_bootstrap / proxyless_bootstrap / write_proxyless_bootstrap
  process:   EnvoyProcess(bootstrap_path).start().wait_ready() / stop; envoy_binary; validate_bootstrap
"""

from xds_server.bootstrap import (
    envoy_bootstrap,
    proxyless_bootstrap,
    write_envoy_bootstrap,
    write_proxyless_bootstrap,
)
from xds_server.envoy_process import EnvoyError, EnvoyProcess, envoy_binary, validate_bootstrap
from xds_server.inputs import DataPlaneSettings, Endpoint, OutlierSettings, PoolEndpoints, RetrySettings, RouteWeights
from xds_server.naming import cluster_name
from xds_server.server import XdsServer
from xds_server.snapshot import InconsistentSnapshotError, Snapshot, build_snapshot, even_routes

__all__ = [
    "DataPlaneSettings",
    "Endpoint",
    "EnvoyError",
    "EnvoyProcess",
    "InconsistentSnapshotError",
    "OutlierSettings",
    "PoolEndpoints",
    "RetrySettings",
    "RouteWeights",
    "Snapshot",
    "XdsServer",
    "build_snapshot",
    "cluster_name",
    "envoy_binary",
    "envoy_bootstrap",
    "even_routes",
    "proxyless_bootstrap",
    "validate_bootstrap",
    "write_envoy_bootstrap",
    "write_proxyless_bootstrap",
]
