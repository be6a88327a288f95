"""Replica discovery from the local runtime file (``control.ports.ReplicaDiscovery``).

The local fleet supervisor rewrites the file atomically on every change of a replica set; this
adapter re-reads it only when its modification time changed.  Every replica of the local
platform listens on 127.0.0.1.  A missing or malformed file raises ``DiscoveryError``: the loop
keeps the last replica set instead of routing as if the fleet were empty.
"""

from __future__ import annotations

from pathlib import Path

from control.ports import DiscoveryError, Replica, ReplicaSet
from fleet.replica import ReplicaInfo
from fleet.runtime import read_runtime

LOOPBACK = "127.0.0.1"


def replica_from_info(info: ReplicaInfo) -> Replica:
    return Replica(
        pool=info.pool,
        host=LOOPBACK,
        http_port=info.http_port,
        grpc_port=info.grpc_port,
        metrics_url=info.metrics_url,
        ready=info.alive and info.ready,
        terminating=info.terminating,
        detail={"index": info.index, "http_port": info.http_port, "grpc_port": info.grpc_port,
                "metrics_port": info.metrics_port, "alive": info.alive, "ready": info.ready,
                "terminating": info.terminating, "restarts": info.restarts},
    )


class RuntimeFileDiscovery:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._last: ReplicaSet | None = None

    def read(self) -> ReplicaSet:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            raise DiscoveryError(f"runtime file {self.path} does not exist (yet)") from None
        if self._last is not None and mtime == self._mtime:
            return self._last
        try:
            infos, _doc = read_runtime(self.path)
        except (ValueError, OSError) as e:
            raise DiscoveryError(f"runtime file: {e}") from None
        self._mtime = mtime
        self._last = ReplicaSet({pool: tuple(replica_from_info(i) for i in items) for pool, items in infos.items()})
        return self._last
