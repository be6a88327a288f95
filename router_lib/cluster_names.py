"""Envoy cluster names: ``<model>--<pool>--<proto>[--v<version>]``.

One format both ways: the xDS server builds clusters with :func:`cluster_name` and the metrics
adapters read Envoy's per-cluster stats back with :func:`parse_cluster_name`.  ``--`` is the
separator, so model and pool names must not contain it (``xds_server.inputs`` enforces that).
``xds_server.naming.cluster_name`` has the same format; keep them identical.
"""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOLS = ("grpc", "http")
SEPARATOR = "--"


@dataclass(frozen=True)
class ClusterName:
    model: str
    pool: str
    proto: str
    version: str | None = None


def cluster_name(model: str, pool: str, proto: str, version: str | None = None) -> str:
    """``text_embedding--cpu--grpc``; with a version: ``text_embedding--cpu--grpc--v2``."""
    for label, value in (("model", model), ("pool", pool)):
        if not value or SEPARATOR in value:
            raise ValueError(f"{label} {value!r} must be non-empty and must not contain {SEPARATOR!r}")
    if proto not in PROTOCOLS:
        raise ValueError(f"proto must be one of {PROTOCOLS}, got {proto!r}")
    base = f"{model}{SEPARATOR}{pool}{SEPARATOR}{proto}"
    return base if version is None else f"{base}{SEPARATOR}v{version}"


def parse_cluster_name(name: str) -> ClusterName | None:
    """The parts of a cluster name, or None when ``name`` is not a model cluster (e.g. the xDS
    cluster, ``_server--grpc``, or Envoy's admin clusters): those are skipped, not errors."""
    parts = name.split(SEPARATOR)
    if len(parts) not in (3, 4) or any(not p for p in parts):
        return None
    model, pool, proto = parts[:3]
    if proto not in PROTOCOLS or model.startswith("_"):
        return None
    version = None
    if len(parts) == 4:
        if not parts[3].startswith("v") or len(parts[3]) < 2:
            return None
        version = parts[3][1:]
    return ClusterName(model, pool, proto, version)
