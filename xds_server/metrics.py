"""Prometheus instruments of the ADS server, registered in a registry the caller passes in.

Names, labels and help come from ``router_lib.metric_names`` so dashboards and alerts cannot drift.
Without a registry every hook is a no-op: tests and benchmarks need no global state.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from router_lib.metric_names import CONTROL_PLANE
from xds_server.protos import SHORT_NAMES

_ACK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _help(name: str) -> tuple[str, tuple[str, ...]]:
    _kind, labels, text = CONTROL_PLANE[name]
    return text, labels


class XdsMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.enabled = registry is not None
        if registry is None:
            return
        self.pushes = Counter("xds_pushes", *_help("xds_pushes_total"), registry=registry)
        self.nacks = Counter("xds_nacks", *_help("xds_nacks_total"), registry=registry)
        text, _ = _help("xds_push_to_ack_seconds")
        self.push_to_ack = Histogram("xds_push_to_ack_seconds", text, buckets=_ACK_BUCKETS, registry=registry)
        text, _ = _help("xds_connected_streams")
        self.streams = Gauge("xds_connected_streams", text, registry=registry)
        self.version_info = Gauge("xds_snapshot_version_info", *_help("xds_snapshot_version_info"), registry=registry)
        text, _ = _help("xds_last_push_timestamp_seconds")
        self.last_push = Gauge("xds_last_push_timestamp_seconds", text, registry=registry)
        self._version: str | None = None

    def pushed(self, type_url: str) -> None:
        if self.enabled:
            self.pushes.labels(type_url=SHORT_NAMES.get(type_url, type_url)).inc()
            self.last_push.set(time.time())

    def nacked(self, type_url: str) -> None:
        if self.enabled:
            self.nacks.labels(type_url=SHORT_NAMES.get(type_url, type_url)).inc()

    def acked(self, seconds: float) -> None:
        if self.enabled:
            self.push_to_ack.observe(seconds)

    def connected_streams(self, count: int) -> None:
        if self.enabled:
            self.streams.set(count)

    def snapshot_version(self, version: str) -> None:
        if not self.enabled or version == self._version:
            return
        if self._version is not None:
            self.version_info.remove(self._version)
        self.version_info.labels(version=version).set(1)
        self._version = version
