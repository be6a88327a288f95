"""Fakes of the control loop's ports: small, honest implementations with knobs for failure."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from control.ports import DiscoveryError, PoolServing, PublishResult, Replica, ReplicaSet
from router_lib.metrics import FleetMetrics
from router_lib.routes import RouteWeights


def replicas(**ready_by_pool: int) -> ReplicaSet:
    """``replicas(cpu=2, gpu=1)``: that many ready replicas per pool, on made-up ports."""
    out = {}
    for i, (pool, n) in enumerate(sorted(ready_by_pool.items())):
        out[pool] = tuple(Replica(pool, "127.0.0.1", 9000 + 100 * i + 10 * k, 9001 + 100 * i + 10 * k,
                                  f"http://127.0.0.1:{9002 + 100 * i + 10 * k}/metrics") for k in range(n))
    return ReplicaSet(out)


class FakeDiscovery:
    def __init__(self, current: ReplicaSet) -> None:
        self.current = current
        self.error: str | None = None

    def read(self) -> ReplicaSet:
        if self.error:
            raise DiscoveryError(self.error)
        return self.current


class FakeMetrics:
    """Returns ``current``; ``block`` makes a read wait (a slow scrape); ``error`` makes it raise."""

    def __init__(self, current: FleetMetrics) -> None:
        self.current = current
        self.error: Exception | None = None
        self.block = threading.Event()
        self.block.set()
        self.entered = threading.Event()
        self.targets: list[Mapping[str, Sequence[str]] | None] = []

    def read(self, now_s: float, targets: Mapping[str, Sequence[str]] | None = None) -> FleetMetrics:
        self.targets.append(targets)
        self.entered.set()
        self.block.wait(10)
        if self.error:
            raise self.error
        return self.current


class FakeSink:
    """Publishes by remembering; the version is a hash of the weights and endpoints."""

    def __init__(self) -> None:
        self.published: list[tuple[list[PoolServing], dict[tuple[str, str], dict[str, int]]]] = []
        self.version: str | None = None
        self.refuse: tuple[str, ...] = ()

    def publish(self, pools: Sequence[PoolServing], routes: Sequence[RouteWeights]) -> PublishResult:
        weights = {tuple(r.key): r.as_dict() for r in routes}
        if self.refuse:
            return PublishResult(self.version, False, self.refuse)
        doc = json.dumps([sorted((p.pool, len(p.replicas)) for p in pools),
                          sorted((list(k), w) for k, w in weights.items())], sort_keys=True)
        version = hashlib.sha256(doc.encode()).hexdigest()[:8]
        if version == self.version:
            return PublishResult(version, False)
        self.version = version
        self.published.append((list(pools), weights))
        return PublishResult(version, True)

    def wait_acked(self, version: str, timeout_s: float) -> bool:
        return version == self.version

    def status(self) -> Any:
        return [{"stream": "fake", "acked": self.version}]


class MemoryStore:
    def __init__(self, record: Mapping[str, Any] | None = None) -> None:
        self.record = json.loads(json.dumps(record)) if record is not None else None
        self.saves = 0
        self.error: OSError | None = None

    def load(self) -> Mapping[str, Any] | None:
        return self.record

    def save(self, record: Mapping[str, Any]) -> None:
        if self.error:
            raise self.error
        self.record = json.loads(json.dumps(record))  # what a file would hold: JSON, not objects
        self.saves += 1


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt
