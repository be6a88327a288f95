"""The control server: the loop wired to its adapters, plus what the admin HTTP serves.

This is the one place that chooses implementations for the ports (``wire_local``): replica
discovery from the local runtime file, metrics scraped from Triton and Envoy, routes published
through the ADS server, state in a JSON file, and the desired-replicas file the local supervisor
follows (or a fixed fleet).  In a cluster ``python -m control serve --discovery=kubernetes`` hands
it EndpointSlice discovery (``control.discovery_k8s``) behind the same port.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from control.actuator_desired_file import DesiredFileActuator
from control.actuator_fixed import FixedFleetActuator
from control.discovery_runtime_file import RuntimeFileDiscovery
from control.leadership import ElectedLoop
from control.loop import ControlLoop
from control.metrics_export import ControlPlaneMetrics
from control.metrics_scrape import ScrapeSource
from control.ports import MetricsSource, ReplicaActuator, ReplicaDiscovery, StateStore
from control.route_sink_xds import XdsRouteSink
from control.state_store_file import FileStateStore
from control.stats_source import TritonStatsSource
from control.status import render_status
from router_lib.calibration import CalibrationSettings
from router_lib.capacity import CapacitySettings
from router_lib.domain import Fleet
from router_lib.policy import CONSUMED_FLEET_METRICS, CONSUMED_METRICS
from router_lib.policy_types import PolicySettings
from xds_server.inputs import DataPlaneSettings
from xds_server.overload import shed_by_tier
from xds_server.server import XdsServer

# What the deciders declare they consume: the scraper parses, and asks Envoy for, only this.
DECIDER_SIGNALS: frozenset[str] = CONSUMED_METRICS | CONSUMED_FLEET_METRICS


@dataclass
class ControlServer:
    fleet: Fleet
    loop: ControlLoop
    sink: XdsRouteSink
    registry: CollectorRegistry
    # With several control servers: the lease in front of the loop (control.leadership).
    elected: ElectedLoop | None = None

    def status(self) -> dict[str, Any]:
        status = render_status(self.fleet, self.loop.view, self.sink.status())
        now = self.loop.wall_clock()
        status["backlog"] = [r.as_dict(now) for _, r in sorted(self.loop.backlog().live(now).items())]
        if self.elected is not None:
            status["leadership"] = self.elected.status()
        return status

    def tick(self) -> None:
        (self.elected or self.loop).tick()

    def require_leader(self) -> None:
        """Operator actions write decisions: only the leader takes them (``NotLeaderError``)."""
        if self.elected is not None:
            self.elected.require_leader()

    def health(self) -> dict[str, Any]:
        """``/healthz``: ok only when the data plane can serve: a snapshot published, discovery
        answering, and at least one pool with a serving replica.  A server that runs but routes
        nowhere says so (503) instead of looking healthy behind a load balancer."""
        view = self.loop.view
        serving = {pool: n for pool, n in sorted(view.replicas.ready_count().items()) if n}
        problems = []
        if view.snapshot_version is None:
            problems.append("nothing published to Envoy yet")
        if view.last_error and view.last_error.startswith("discovery:"):
            problems.append(view.last_error)
        if not serving:
            problems.append("no pool has a serving replica")
        return {"ok": not problems, "snapshot_version": view.snapshot_version, "serving_replicas": serving,
                "problems": problems}

    def drain(self, pool: str, timeout_s: float = 5.0) -> str | None:
        self.require_leader()
        return self.loop.drain(pool, timeout_s)

    def undrain(self, pool: str) -> None:
        self.require_leader()
        self.loop.undrain(pool)


def dataplane_settings(fleet: Fleet, policy: PolicySettings, **overrides: Any) -> DataPlaneSettings:
    """Envoy's settings from the fleet's tier description and the policy's total weight (one
    source for each, so the data plane and the policy cannot disagree).  When a pool shares its
    tiers (``share_tiers``: its model configs declare the priority levels), the edge writes each
    request's level and maps the pool's sheds (``xds_server.overload.shed_by_tier``)."""
    if fleet.tiers_share_a_pool:
        overrides.setdefault("overload", shed_by_tier(fleet.tiers))
    return DataPlaneSettings(
        default_tier=fleet.tiers.default_tier,
        tiers=tuple(fleet.tiers.tiers),
        fallback_order=tuple(a.value for a in fleet.tiers.fallback_order),
        total_weight=policy.total_weight,
        **overrides,
    )


def wire_local(*, fleet: Fleet, xds: XdsServer, runtime_path: Path | None, state_path: Path | None,
               composing: Mapping[str, str], envoy_metrics_url: str | None, dataplane: DataPlaneSettings,
               policy: PolicySettings, registry: CollectorRegistry, desired_path: Path | None = None,
               discovery: ReplicaDiscovery | None = None, store: StateStore | None = None,
               metrics: MetricsSource | None = None, clock: Callable[[], float] | None = None,
               calibration: CalibrationSettings | None = None) -> ControlServer:
    """The local wiring.  With ``desired_path`` the capacity decider's counts are written there for
    the local supervisor to follow; without it the fleet is fixed (and says so).  ``discovery``
    replaces the runtime file (in a cluster: ``control.discovery_k8s.EndpointSliceDiscovery``), ``store``
    the state file (in a cluster: ``control.lease_k8s.ConfigMapStateStore``), ``metrics`` the direct
    scrape (in a cluster: ``control.metrics_prometheus.PrometheusApiSource``, every Envoy's and
    Triton's series, queried at wall-clock times: pass ``clock=time.time`` with it).  The online
    calibration reads every serving replica's statistics extension and Envoy's request-time sums
    (``control.stats_source``); ``calibration`` says when its profiles are used (default: the
    conservative ``CalibrationSettings()``)."""
    if discovery is None:
        if runtime_path is None:
            raise ValueError("replica discovery: give a runtime file or another ReplicaDiscovery")
        discovery = RuntimeFileDiscovery(runtime_path)
    if store is None:
        if state_path is None:
            raise ValueError("state: give a state file or another StateStore")
        store = FileStateStore(state_path)
    actuator: ReplicaActuator = (DesiredFileActuator(desired_path) if desired_path is not None
                                 else FixedFleetActuator({p.name: p.replicas for p in fleet.pools}))
    sink = XdsRouteSink(xds, dataplane)
    loop = ControlLoop(
        fleet=fleet,
        discovery=discovery,
        metrics=metrics or ScrapeSource({}, envoy_metrics_url, composing=composing, signals=DECIDER_SIGNALS),
        sink=sink,
        store=store,
        actuator=actuator,
        settings=policy,
        observer=ControlPlaneMetrics(registry, fleet, policy, calibration),
        capacity=CapacitySettings(**fleet.autoscaling, policy=policy),  # type: ignore[arg-type]
        stats=TritonStatsSource({p.name: p.models for p in fleet.pools}, envoy_metrics_url, composing=composing),
        calibration=calibration,
        **({"clock": clock} if clock is not None else {}),
    )
    return ControlServer(fleet, loop, sink, registry)
