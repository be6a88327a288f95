"""The control loop's ports: the only ways it touches the world, one ``typing.Protocol`` each.

Each port has one implementation per file (``discovery_*``, ``metrics_*``, ``route_sink_*``,
``state_store_*``, ``actuator_*``); tests implement them with small fakes.  The loop calls them
in a fixed order per tick (see ``control.loop``): discovery and metrics (read), the pure deciders,
then the route sink, the state store and the actuator (write).

Contracts:

* ``ReplicaDiscovery.read()`` returns the whole current replica set; raises ``DiscoveryError``
  when it cannot tell (the loop then keeps the last set and routes in force).
* ``MetricsSource.read(now_s, targets)`` returns windowed metrics for the replicas named in
  ``targets`` (pool -> metrics URLs); it may be slow (one HTTP scrape per replica) and is called
  outside every lock, so ``/status`` never waits for it.  It never raises for one bad replica;
  it may raise for a whole unreachable source (``MetricsUnavailableError``).
* ``StatsSource.read(replicas)`` returns Triton's cumulative statistics (and the edge's request
  time sums) of the serving replicas for the online calibration; slow like the metrics read and
  called outside every lock; never raises for one bad replica (``last_errors`` names it).
* ``RouteSink.publish(pools, routes)`` publishes only a consistent configuration, only when it
  changed, and says what it did; ``wait_acked`` blocks until every client applied a version.
* ``StateStore`` keeps one versioned record holding every decider's state (``ControlRecord``);
  ``save`` is atomic.  A shared store with a leader lease can sit behind the same port.
* ``ReplicaActuator.apply(desired)`` asks for a replica count per pool and returns what it
  could do (a fixed fleet says so, honestly, instead of pretending).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from router_lib.calibration import StatsReading
from router_lib.metrics import FleetMetrics
from router_lib.routes import RouteWeights


class DiscoveryError(RuntimeError):
    """The replica set cannot be read now (the loop keeps the last one)."""


@dataclass(frozen=True)
class Replica:
    """One serving replica of a pool as the control plane needs it.

    ``ready``: it passed its readiness check and may get traffic.  ``terminating``: it is going
    away (drain it: weight 0, no new requests).  ``detail``: what the discovery source knows
    beyond that (process index, restarts, ...), shown in ``/status`` as is.  ``authority``: the
    host name the mesh knows the replica by (in a cluster its Service's; see
    ``xds_server.inputs.Endpoint``), empty locally.
    """

    pool: str
    host: str
    http_port: int
    grpc_port: int
    metrics_url: str
    ready: bool = True
    terminating: bool = False
    detail: Mapping[str, Any] = field(default_factory=dict)
    authority: str = ""

    @property
    def serving(self) -> bool:
        return self.ready and not self.terminating


@dataclass(frozen=True)
class ReplicaSet:
    """Every known replica, by pool (a pool with no replica may be absent)."""

    by_pool: Mapping[str, tuple[Replica, ...]] = field(default_factory=dict)

    def serving(self, pool: str) -> tuple[Replica, ...]:
        return tuple(r for r in self.by_pool.get(pool, ()) if r.serving)

    def ready_count(self) -> dict[str, int]:
        return {pool: len(self.serving(pool)) for pool in self.by_pool}

    def starting_count(self) -> dict[str, int]:
        """Replicas started but not ready yet (they count toward capacity, not toward routing)."""
        return {pool: sum(1 for r in rs if not r.ready and not r.terminating) for pool, rs in self.by_pool.items()}

    def without(self, drained: frozenset[tuple[str, str, int]]) -> ReplicaSet:
        """The same set with the replicas named ``(pool, host, http_port)`` marked terminating."""
        if not drained:
            return self
        return ReplicaSet({pool: tuple(replace(r, terminating=True) if (pool, r.host, r.http_port) in drained else r
                                       for r in rs) for pool, rs in self.by_pool.items()})

    def metrics_targets(self) -> dict[str, tuple[str, ...]]:
        return {pool: tuple(r.metrics_url for r in self.serving(pool)) for pool in self.by_pool}


class ReplicaDiscovery(Protocol):
    def read(self) -> ReplicaSet: ...


class MetricsSource(Protocol):
    def read(self, now_s: float, targets: Mapping[str, Sequence[str]] | None = None) -> FleetMetrics: ...


class StatsSource(Protocol):
    def read(self, replicas: ReplicaSet) -> StatsReading: ...


@dataclass(frozen=True)
class PublishResult:
    """What the route sink did: the version in force, whether it pushed, and why not if it refused."""

    version: str | None
    pushed: bool
    problems: tuple[str, ...] = ()


class RouteSink(Protocol):
    def publish(self, pools: Sequence[PoolServing], routes: Sequence[RouteWeights]) -> PublishResult: ...

    def wait_acked(self, version: str, timeout_s: float) -> bool: ...

    def status(self) -> Any: ...


@dataclass(frozen=True)
class PoolServing:
    """What the data plane needs of a pool this tick: its serving replicas and models."""

    pool: str
    accelerator: str
    emulated: bool
    models: tuple[str, ...]
    replicas: tuple[Replica, ...]


class StateStore(Protocol):
    def load(self) -> Mapping[str, Any] | None: ...

    def save(self, record: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class ActuationResult:
    """Per pool: the replica count asked for, and what the actuator could do about it."""

    requested: Mapping[str, int]
    applied: Mapping[str, bool]
    note: str = ""


class ReplicaActuator(Protocol):
    def apply(self, desired: Mapping[str, int]) -> ActuationResult: ...
