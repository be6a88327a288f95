"""Envoy's part of the traces: the HCM ``tracing`` field and the collector cluster it exports to.

Envoy is the edge, so it makes the sampling decision (``random_sampling``, a percentage of the
requests that arrive without one) and starts or continues the W3C trace context: a client's
``traceparent`` becomes the parent of Envoy's server span, and Envoy forwards its own
``traceparent`` upstream so Triton's spans are children of Envoy's.  ``spawn_upstream_span`` adds
a client span per upstream attempt: retries and the time to the first upstream byte show apart
from the time spent at the edge.  Spans go over OTLP/HTTP (protobuf) to the ``otel_collector``
cluster of the bootstrap: Envoy's tracer reaches its collector through a cluster, never by URL
alone, and Triton exports OTLP/HTTP only, so one protocol serves every process.

The tier header is recorded on every span (``sla.tier``) so a waterfall can be picked by tier.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from envoy.config.trace.v3 import opentelemetry_pb2  # noqa: F401  (registers the Any type for json_format)

from tracing.settings import TracingSettings

__all__ = ["TracingSettings", "collector_cluster", "edge_tracing", "from_environment", "hcm_tracing", "with_collector"]

COLLECTOR_CLUSTER = "otel_collector"
OTEL_TRACER = "envoy.tracers.opentelemetry"
OTEL_CONFIG_TYPE = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
ENVOY_SERVICE_NAME = "envoy-gateway"
TIER_TAG = "sla.tier"
EXPORT_TIMEOUT = "1s"


def hcm_tracing(tracing: TracingSettings, *, tier_header: str, default_tier: str) -> dict[str, Any]:
    """The HttpConnectionManager ``tracing`` field (Envoy's proto3-JSON shape)."""
    return {
        "random_sampling": {"value": tracing.sample_percent},
        "spawn_upstream_span": True,
        "custom_tags": [
            {"tag": TIER_TAG, "request_header": {"name": tier_header, "default_value": default_tier}},
        ],
        "provider": {
            "name": OTEL_TRACER,
            "typed_config": {
                "@type": OTEL_CONFIG_TYPE,
                "service_name": ENVOY_SERVICE_NAME,
                "http_service": {
                    "http_uri": {"uri": tracing.traces_url, "cluster": COLLECTOR_CLUSTER, "timeout": EXPORT_TIMEOUT},
                },
            },
        },
    }


def collector_cluster(tracing: TracingSettings) -> dict[str, Any]:
    """A static bootstrap cluster for the collector: an address as is, a host name (the Collector's
    Service in a cluster) resolved by DNS and re-resolved when it changes."""
    try:
        ipaddress.ip_address(tracing.host)
        kind = "STATIC"
    except ValueError:
        kind = "STRICT_DNS"
    return {
        "name": COLLECTOR_CLUSTER,
        "type": kind,
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": COLLECTOR_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": tracing.host, "port_value": tracing.port}}}}]}],
        },
    }


def edge_tracing(*, tracing: TracingSettings | None, tier_header: str, default_tier: str) -> dict[str, Any]:
    """``{"tracing": ...}`` to merge into an edge listener's HCM, or ``{}`` when tracing is off."""
    if tracing is None:
        return {}
    return {"tracing": hcm_tracing(tracing, tier_header=tier_header, default_tier=default_tier)}


def from_environment() -> TracingSettings | None:
    """This process's OTEL_* environment (``tracing.settings``); None when tracing is off."""
    return TracingSettings.from_env(os.environ)


def with_collector(bootstrap: dict[str, Any], tracing: TracingSettings | None) -> dict[str, Any]:
    """``bootstrap`` with the collector cluster among its static clusters (unchanged when off)."""
    if tracing is None:
        return bootstrap
    static = dict(bootstrap.get("static_resources", {}))
    static["clusters"] = [*static.get("clusters", []), collector_cluster(tracing)]
    return {**bootstrap, "static_resources": static}
