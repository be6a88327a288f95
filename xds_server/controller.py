"""The control loop: read metrics, decide, rebuild the snapshot, push when it changed.

One tick is short glue around pure code: ``router_lib.policy.decide`` makes the decision,
``route_weights`` turns it into the data plane's input, ``build_snapshot`` makes the resources,
and the ADS server publishes only a snapshot whose content hash differs from the one in force.
Every change is persisted first-class (``persisted_state``), so a restarted control server
republishes the weights that were in force instead of defaults.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fleet.replica import ReplicaInfo
from fleet.runtime import read_runtime
from router_lib.domain import Fleet
from router_lib.metric_names import CONTROL_PLANE
from router_lib.metrics import FleetMetrics
from router_lib.metrics_sources import MetricsSource, ScrapeSource
from router_lib.policy import decide
from router_lib.policy_types import PolicyInputs, PolicySettings, PolicyState, RoutingDecision
from xds_server.clusters import fallback_rank
from xds_server.inputs import DataPlaneSettings, Endpoint, PoolEndpoints, RouteWeights
from xds_server.persisted_state import PersistedState, load_state, save_state
from xds_server.server import XdsServer
from xds_server.snapshot import Snapshot, build_snapshot

log = logging.getLogger(__name__)
RouteKey = tuple[str, str]


def pool_endpoints(fleet: Fleet, replicas: Mapping[str, Sequence[ReplicaInfo]]) -> list[PoolEndpoints]:
    """Pools with at least one live replica, as the data plane sees them."""
    out = []
    for pool in fleet.pools:
        live = tuple(Endpoint("127.0.0.1", r.http_port, r.grpc_port) for r in replicas.get(pool.name, ()) if r.alive)
        if live:
            out.append(
                PoolEndpoints(
                    pool=pool.name,
                    accelerator=pool.accelerator.value,
                    emulated=pool.emulated,
                    models=pool.models,
                    replicas=live,
                )
            )
    return out


def route_weights(
    weights: Mapping[RouteKey, Sequence[tuple[str, int]]],
    reasons: Mapping[RouteKey, Sequence[tuple[str, str]]],
    pools: Sequence[PoolEndpoints],
    settings: DataPlaneSettings,
) -> list[RouteWeights]:
    """Weights restricted to pools that have endpoints and serve the model.

    If that leaves a route with no weight (its traffic was on a pool that just went away), the
    first pool in fallback order that serves the model takes it all: an all-zero route is refused
    by Envoy, and a route must never be dropped while some pool can serve it.
    """
    by_name = {p.pool: p for p in pools}
    out = []
    for (model, tier), ws in sorted(weights.items()):
        kept = [(pool, w) for pool, w in ws if pool in by_name and model in by_name[pool].models]
        if not kept:
            serving = [p for p in pools if model in p.models]
            if not serving:
                continue
            kept = [(min(serving, key=lambda p: fallback_rank(p, settings)).pool, 100)]
        elif sum(w for _, w in kept) == 0:
            first = min((by_name[p] for p, _ in kept), key=lambda p: fallback_rank(p, settings)).pool
            kept = [(p, 100 if p == first else 0) for p, _ in kept]
        why = tuple((p, r) for p, r in reasons.get((model, tier), ()) if p in dict(kept))
        out.append(RouteWeights(model=model, tier=tier, weights=tuple(kept), reasons=why))
    return out


def decision_weights(
    decision: RoutingDecision,
) -> tuple[dict[RouteKey, tuple[tuple[str, int], ...]], dict[RouteKey, tuple[tuple[str, str], ...]]]:
    weights = {k: tuple((pw.pool, pw.weight) for pw in v) for k, v in decision.routes.items()}
    reasons = {k: tuple((pw.pool, pw.reason) for pw in v) for k, v in decision.routes.items()}
    return weights, reasons


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def make(cls: Any, name: str, **kw: Any) -> Any:
            _type, labels, help_text = CONTROL_PLANE[name]
            return cls(name.removesuffix("_total"), help_text, list(labels), registry=registry, **kw)

        self.weight = make(Gauge, "router_route_weight")
        self.decisions = make(Counter, "router_decisions_total")
        self.healthy = make(Gauge, "router_pool_healthy")
        self.queue = make(Gauge, "router_pool_queue_depth")
        self.p99 = make(Gauge, "router_pool_p99_ms")
        self.p95 = make(Gauge, "router_pool_p95_ms")
        self.cost = make(Gauge, "router_cost_per_1k_requests_usd")
        self.fleet_cost = make(Gauge, "router_fleet_cost_per_hour_usd")
        self.tick = make(
            Histogram,
            "control_loop_tick_seconds",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )


@dataclass
class Controller:
    """Drives one ADS server from the fleet config, the runtime file and live metrics."""

    fleet: Fleet
    xds: XdsServer
    runtime_path: Path
    state_path: Path
    composing: Mapping[str, str] = field(default_factory=dict)
    envoy_metrics_url: str | None = None
    dataplane: DataPlaneSettings = field(default_factory=DataPlaneSettings)
    policy_settings: PolicySettings = field(default_factory=PolicySettings)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    source_factory: Callable[[Mapping[str, Sequence[str]]], MetricsSource] | None = None
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._metrics = _Metrics(self.registry)
        self._replicas: dict[str, list[ReplicaInfo]] = {}
        self._runtime_mtime: float | None = None
        self._source: MetricsSource | None = None
        self._policy_state: PolicyState | None = None
        self._decision: RoutingDecision | None = None
        self._fleet_metrics: FleetMetrics | None = None
        self._snapshot: Snapshot | None = None
        self._last_push_unix_s: float | None = None
        self._last_error: str | None = None
        self._draining: set[str] = set()
        self._resumed: dict[str, Any] | None = None
        self._weights: dict[RouteKey, tuple[tuple[str, int], ...]] = {}
        self._reasons: dict[RouteKey, tuple[tuple[str, str], ...]] = {}
        for pool in self.fleet.pools:
            self._metrics.fleet_cost.labels(pool.name, pool.accelerator.value, str(pool.emulated).lower()).set(
                pool.price_per_hour_usd * pool.replicas
            )

    # -- start-up ---------------------------------------------------------------------------
    def resume(self) -> bool:
        """Republish the persisted weights (if any) before the first decision.  -> resumed?"""
        saved = load_state(self.state_path)
        if saved is None:
            return False
        with self._lock:
            self._refresh_replicas()
            self._weights = dict(saved.weights)
            self._reasons = dict(saved.reasons)
            self._draining = set(saved.draining)
            self._policy_state = PolicyState(
                time_s=self.clock(),
                smoothed={},
                demand_per_s={},
                demand_history={},
                weights={k: dict(v) for k, v in saved.weights.items()},
                feasible=frozenset((m, t, p) for (m, t), ws in saved.weights.items() for p, w in ws if w > 0),
            )
            snapshot = self._publish()
            self._resumed = {
                "persisted_version": saved.snapshot_version,
                "published_version": snapshot.version if snapshot else None,
                "routes": len(saved.weights),
                # what was republished (differs from the version only if endpoints changed meanwhile)
                "weights": [{"model": m, "tier": t, "weights": dict(w)} for (m, t), w in sorted(saved.weights.items())],
            }
        log.info("resumed from %s: %d routes, snapshot %s", self.state_path, len(saved.weights), saved.snapshot_version)
        return True

    # -- the tick ---------------------------------------------------------------------------
    def _refresh_replicas(self) -> bool:
        try:
            mtime = self.runtime_path.stat().st_mtime
        except FileNotFoundError:
            return False
        if mtime == self._runtime_mtime:
            return False
        try:
            replicas, _doc = read_runtime(self.runtime_path)
        except (ValueError, OSError) as e:
            self._last_error = f"runtime file: {e}"
            return False
        self._runtime_mtime = mtime
        changed = replicas != self._replicas
        self._replicas = replicas
        if changed or self._source is None:
            urls = {pool: [r.metrics_url for r in infos if r.alive] for pool, infos in replicas.items()}
            self._source = (
                self.source_factory(urls)
                if self.source_factory
                else ScrapeSource(urls, self.envoy_metrics_url, composing=self.composing)
            )
        return changed

    def pool_ready(self) -> dict[str, int]:
        ready = {}
        for pool in self.fleet.pools:
            alive = sum(1 for r in self._replicas.get(pool.name, ()) if r.alive)
            ready[pool.name] = 0 if pool.name in self._draining else alive
        return ready

    def tick(self) -> Snapshot | None:
        started = time.perf_counter()
        with self._lock:
            self._refresh_replicas()
            if self._source is None:
                return None
            now = self.clock()
            try:
                metrics = self._source.read(now)
            except Exception as e:  # keep the routes in force; try again next tick
                self._last_error = f"metrics: {type(e).__name__}: {e}"
                log.warning("metrics read failed: %s", e)
                return self._snapshot
            self._fleet_metrics = metrics
            inputs = PolicyInputs(self.fleet, metrics, self.pool_ready(), self.policy_settings)
            decision, self._policy_state = decide(inputs, self._policy_state, now)
            self._decision = decision
            weights, reasons = decision_weights(decision)
            for key, ws in weights.items():
                if dict(self._weights.get(key, ())) != dict(ws):
                    self._metrics.decisions.labels(*key).inc()
            self._weights, self._reasons = weights, reasons
            snapshot = self._publish()
            self._export(metrics)
        self._metrics.tick.observe(time.perf_counter() - started)
        return snapshot

    def _publish(self) -> Snapshot | None:
        pools = pool_endpoints(self.fleet, self._replicas)
        if not pools:
            return self._snapshot
        routes = route_weights(self._weights, self._reasons, pools, self.dataplane)
        snapshot = build_snapshot(pools, routes, self.dataplane)
        if self._snapshot is None or snapshot.version != self._snapshot.version:
            problems = snapshot.consistent()
            if problems:
                self._last_error = "inconsistent snapshot not published: " + "; ".join(problems)
                log.error(self._last_error)
                return self._snapshot
            self.xds.set_snapshot(snapshot)
            self._snapshot = snapshot
            self._last_push_unix_s = time.time()
            self._persist()
        return snapshot

    def _persist(self) -> None:
        ready = self.pool_ready()
        save_state(
            self.state_path,
            PersistedState(
                weights=dict(self._weights),
                reasons=dict(self._reasons),
                pool_health={p: n > 0 for p, n in ready.items()},
                draining=tuple(sorted(self._draining)),
                snapshot_version=self._snapshot.version if self._snapshot else "",
                saved_at_unix_s=time.time(),
            ),
        )

    def _export(self, metrics: FleetMetrics) -> None:
        for (model, tier), ws in self._weights.items():
            for pool, w in ws:
                self._metrics.weight.labels(model, tier, pool).set(w)
        ready = self.pool_ready()
        for pool in self.fleet.pools:
            self._metrics.healthy.labels(pool.name, pool.accelerator.value, str(pool.emulated).lower()).set(
                1 if ready.get(pool.name) else 0
            )
            for model in pool.models:
                m = metrics.by_pool_model.get((pool.name, model))
                if m is not None:
                    self._metrics.queue.labels(pool.name, model).set(m.queue_depth)
                    if m.p99_ms is not None:
                        self._metrics.p99.labels(pool.name, model).set(m.p99_ms)
                    if m.p95_ms is not None:
                        self._metrics.p95.labels(pool.name, model).set(m.p95_ms)
                profile = self.fleet.profile(model, pool.accelerator)
                if profile is None:
                    continue
                per_s = profile.throughput_per_replica_per_s()
                for tier_name, tier in self.fleet.tiers.tiers.items():
                    utilisation = self.policy_settings.headroom if tier.p99_ms else self.policy_settings.max_utilisation
                    self._metrics.cost.labels(pool.name, model, tier_name).set(
                        pool.price_per_hour_usd / 3600.0 / (per_s * utilisation) * 1000.0
                    )

    # -- drain ------------------------------------------------------------------------------
    def drain(self, pool: str, timeout_s: float = 5.0) -> str | None:
        """Weight ``pool`` to 0 everywhere, publish, and wait until every stream ACKed it."""
        self.fleet.pool(pool)  # KeyError names the known pools
        with self._lock:
            self._draining.add(pool)
        snapshot = self.tick() or self._snapshot
        if snapshot is None:
            return None
        if not self.xds.wait_acked(snapshot.version, timeout_s=timeout_s):
            raise TimeoutError(f"snapshot {snapshot.version} not ACKed by every stream within {timeout_s}s")
        return snapshot.version

    def undrain(self, pool: str) -> None:
        self.fleet.pool(pool)
        with self._lock:
            self._draining.discard(pool)
        self.tick()

    # -- views ------------------------------------------------------------------------------
    def current_weights(self) -> dict[RouteKey, dict[str, int]]:
        with self._lock:
            return {k: dict(v) for k, v in self._weights.items()}

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    def status(self) -> dict[str, Any]:
        with self._lock:
            ready = self.pool_ready()
            metrics = self._fleet_metrics
            pools = []
            for p in self.fleet.pools:
                infos = self._replicas.get(p.name, [])
                pools.append(
                    {
                        "name": p.name,
                        "accelerator": p.accelerator.value,
                        "instance_type": p.instance_type,
                        "mode": p.mode.value,
                        "emulated": p.emulated,
                        "price_per_hour_usd": p.price_per_hour_usd,
                        "models": list(p.models),
                        "ready_replicas": ready.get(p.name, 0),
                        "draining": p.name in self._draining,
                        "replicas": [
                            {
                                "index": r.index,
                                "http_port": r.http_port,
                                "grpc_port": r.grpc_port,
                                "metrics_port": r.metrics_port,
                                "alive": r.alive,
                                "restarts": r.restarts,
                            }
                            for r in infos
                        ],
                        "metrics": {m: _metric_view(metrics, p.name, m) for m in p.models} if metrics else {},
                    }
                )
            routes = [
                {"model": m, "tier": t, "weights": dict(ws), "reasons": dict(self._reasons.get((m, t), ()))}
                for (m, t), ws in sorted(self._weights.items())
            ]
            return {
                "pools": pools,
                "routes": routes,
                "unroutable": {
                    f"{m}/{t}": why for (m, t), why in (self._decision.unroutable.items() if self._decision else [])
                },
                "snapshot_version": self._snapshot.version if self._snapshot else None,
                "last_push_unix_s": self._last_push_unix_s,
                "ads_streams": self.xds.status(),
                "last_error": self._last_error,
                "resumed": self._resumed,
                "metrics_errors": dict(getattr(self._source, "last_errors", {}) or {}),
            }


def _metric_view(metrics: FleetMetrics | None, pool: str, model: str) -> dict[str, Any]:
    m = metrics.by_pool_model.get((pool, model)) if metrics else None
    if m is None:
        return {}
    return {
        "queue_depth": m.queue_depth,
        "request_rate_per_s": round(m.request_rate_per_s, 2),
        "p95_ms": m.p95_ms,
        "p99_ms": m.p99_ms,
        "error_rate": m.error_rate,
        "ready": m.ready,
        "emulation_lag_ms": m.emulation_lag_ms,
    }
