"""The control loop: per tick read -> decide -> write, as short glue between ports and pure code.

    read    ReplicaDiscovery.read()            replicas per pool (ready, terminating)
            MetricsSource.read(now, targets)    windowed Triton and Envoy metrics
            StatsSource.read(replicas)          Triton's statistics (optional: the online calibration)
    decide  control.decide.decide_tick          capacity -> routing -> releases -> resolve (pure)
    write   RouteSink.publish                   the xDS snapshot, if consistent and changed
            StateStore.save                     every decider's state, one versioned record
            ReplicaActuator.apply               desired replicas per pool

Concurrency, and why: the reads can be slow (one HTTP scrape per replica, timeouts of a second),
so they run outside every lock; deciding and writing run under ``_tick_lock``, which serialises
a tick with an operator's drain (a drain re-decides with the last metrics, it does not wait for a
scrape).  What ``/status`` shows is an immutable ``LoopView`` replaced whole at the end of a
tick, so reading it never waits for anything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from opentelemetry import trace

from control.decide import DeciderStates, TickDecision, TickInputs, decide_tick
from control.ports import (
    ActuationResult,
    DiscoveryError,
    MetricsSource,
    PoolServing,
    PublishResult,
    ReplicaActuator,
    ReplicaDiscovery,
    ReplicaSet,
    RouteSink,
    StateStore,
    StatsSource,
)
from control.record import ControlRecord
from control.releases import candidate_pools, mirror_targets
from router_lib.backlog import BacklogBook, BacklogReport, parse_report
from router_lib.calibration import CalibrationSettings, StatsReading
from router_lib.capacity import CapacitySettings
from router_lib.cost_ledger import LedgerState
from router_lib.domain import Fleet
from router_lib.metrics import FleetMetrics
from router_lib.policy_types import PolicySettings
from router_lib.release import (
    CandidateEndpoint,
    Command,
    ReleaseAction,
    ReleaseBook,
    ReleaseCommandError,
    ReleaseObservation,
    apply_command,
    start_release,
    step_book,
)
from router_lib.release_spec import ReleaseSpec
from router_lib.release_split import release_splits
from router_lib.routes import RouteKey, RouteWeights

log = logging.getLogger(__name__)
# A no-op until the control server installs a tracer provider (control.tracing, docs/tracing.md).
TICK_TRACER = trace.get_tracer("control.loop")


class TickObserver:
    """Hooks for what a tick decided (metrics export); the default does nothing."""

    def observed(self, fleet: Fleet, view: LoopView, states: DeciderStates) -> None:
        pass

    def route_changed(self, key: RouteKey) -> None:
        pass

    def tick_seconds(self, seconds: float) -> None:
        pass


@dataclass(frozen=True)
class LoopView:
    """Everything ``/status`` shows, as of the last tick (immutable; replaced whole)."""

    replicas: ReplicaSet = field(default_factory=ReplicaSet)
    metrics: FleetMetrics | None = None
    decision: TickDecision | None = None
    routes: Mapping[RouteKey, RouteWeights] = field(default_factory=dict)
    drains: frozenset[str] = frozenset()
    snapshot_version: str | None = None
    last_push_unix_s: float | None = None
    last_error: str | None = None
    metrics_errors: Mapping[str, str] = field(default_factory=dict)
    actuation: ActuationResult | None = None
    resumed: Mapping[str, Any] | None = None
    record_version: int = 0
    ledger: LedgerState | None = None
    releases: ReleaseBook = field(default_factory=ReleaseBook)


class ControlLoop:
    def __init__(self, *, fleet: Fleet, discovery: ReplicaDiscovery, metrics: MetricsSource, sink: RouteSink,
                 store: StateStore, actuator: ReplicaActuator, settings: PolicySettings | None = None,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time,
                 observer: TickObserver | None = None, capacity: CapacitySettings | None = None,
                 stats: StatsSource | None = None, calibration: CalibrationSettings | None = None) -> None:
        self.fleet = fleet
        self.discovery = discovery
        self.metrics = metrics
        self.sink = sink
        self.store = store
        self.actuator = actuator
        self.settings = settings or PolicySettings()
        self.clock = clock
        self.wall_clock = wall_clock
        self.observer = observer or TickObserver()
        self.capacity = capacity
        self.stats = stats  # None: no online calibration (the offline profiles, or a resumed one)
        self.calibration = calibration
        self._tick_lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._drains: frozenset[str] = frozenset()
        self._replica_drains: frozenset[tuple[str, str, int]] = frozenset()  # (pool, host, http_port)
        self._backlog_lock = threading.Lock()
        self._backlog = BacklogBook()  # in memory: reports are refreshed every few seconds by their senders
        self._states = DeciderStates()
        self._record = ControlRecord()
        self._saved_at = 0.0
        self.ledger_save_interval_s = 10.0  # ledger and capacity windows change every tick: saved this often
        self._view = LoopView()
        # Called with every release action (start, advance, rollback, ...), under the tick lock:
        # keep them fast (metrics, a log line).
        self.release_listeners: list[Callable[[ReleaseAction], None]] = []
        # Called with seconds from a fast-path release decision to its snapshot handed to the sink.
        self.release_push_observers: list[Callable[[float], None]] = []
        self._handed_at = 0.0

    # -- views (never block) -------------------------------------------------------------------
    @property
    def view(self) -> LoopView:
        return self._view

    def current_weights(self) -> dict[RouteKey, dict[str, int]]:
        return {k: r.as_dict() for k, r in self._view.routes.items()}

    # -- start-up --------------------------------------------------------------------------------
    def resume(self) -> bool:
        """Republish the persisted record's routes before the first decision.  -> resumed?"""
        data = self.store.load()
        if data is None:
            return False
        record = ControlRecord.from_json(data, "state store")
        with self._tick_lock:
            self._record = record
            self._drains = record.drains
            self._states = record.decider_states(self.clock())
            replicas = self._read_replicas()
            result = self._publish(replicas, record.routes, self._states.releases)
            self._view = replace(
                self._view, replicas=replicas, routes=dict(record.routes), drains=record.drains,
                releases=self._states.releases,
                snapshot_version=result.version, last_push_unix_s=self.wall_clock() if result.pushed else None,
                last_error="; ".join(result.problems) or None, record_version=record.version,
                resumed={
                    "persisted_version": record.snapshot_version,
                    "published_version": result.version,
                    "routes": len(record.routes),
                    # what was republished (differs from the version only if endpoints changed meanwhile)
                    "weights": [{"model": k.model, "tier": k.tier, "weights": r.as_dict()}
                                for k, r in sorted(record.routes.items())],
                },
            )
        log.info("resumed record %d: %d routes, snapshot %s", record.version, len(record.routes),
                 record.snapshot_version)
        return True

    # -- the tick --------------------------------------------------------------------------------
    def tick(self) -> LoopView:
        """One tick as one span, ``control.tick`` (what it published and why it could not)."""
        with TICK_TRACER.start_as_current_span("control.tick") as span:
            view = self._tick()
            span.set_attribute("control.snapshot_version", view.snapshot_version or "")
            span.set_attribute("control.routes", len(view.routes))
            if view.last_error:
                span.set_attribute("control.error", view.last_error)
            return view

    def _tick(self) -> LoopView:
        """Read, decide, write.  A failing read keeps the routes in force and says why."""
        started = time.perf_counter()
        try:
            replicas = self._forget_gone_drains(self.discovery.read())
        except DiscoveryError as e:
            self._publish_floor(self._view.replicas)
            self._view = replace(self._view, last_error=f"discovery: {e}")
            return self._view
        now = self.clock()
        try:
            metrics = self.metrics.read(now, replicas.metrics_targets())
        except Exception as e:  # a whole source down: keep the routes in force, try next tick
            log.warning("metrics read failed: %s", e)
            self._publish_floor(replicas)
            self._view = replace(self._view, replicas=replicas, last_error=f"metrics: {type(e).__name__}: {e}")
            return self._view
        errors = dict(getattr(self.metrics, "last_errors", {}) or {})
        stats = self._read_stats(replicas, errors)
        with self._tick_lock:
            view = self._decide_and_write(replicas, metrics, now, errors, stats)
        self.observer.tick_seconds(time.perf_counter() - started)
        return view

    def _read_stats(self, replicas: ReplicaSet, errors: dict[str, str]) -> StatsReading | None:
        """Triton's statistics for the calibration; None (the calibration waits) if unreadable."""
        if self.stats is None:
            return None
        try:
            reading = self.stats.read(replicas)
        except Exception as e:  # the calibration is not worth a tick: route on what is known
            log.warning("statistics read failed: %s", e)
            errors["statistics"] = f"{type(e).__name__}: {e}"
            return None
        errors.update(getattr(self.stats, "last_errors", {}) or {})
        return reading

    def _publish_floor(self, replicas: ReplicaSet) -> None:
        """Before anything was ever published, a tick that cannot decide still publishes what it
        knows (the routes in force, the replicas it has; at least Envoy's listeners), so the data
        plane answers instead of refusing connections while the inputs are missing."""
        if self._view.snapshot_version is not None:
            return
        with self._tick_lock:
            result = self.sink.publish(self._serving(replicas), list(self._view.routes.values()))
            if result.version is not None:
                self._view = replace(self._view, snapshot_version=result.version,
                                     last_push_unix_s=self.wall_clock() if result.pushed else None)

    def _read_replicas(self) -> ReplicaSet:
        try:
            return self._forget_gone_drains(self.discovery.read())
        except DiscoveryError:
            return self._view.replicas

    def _forget_gone_drains(self, replicas: ReplicaSet) -> ReplicaSet:
        """Replica drains apply until the replica is gone from discovery; then they are forgotten
        (a new replica may reuse the port)."""
        present = {(pool, r.host, r.http_port) for pool, rs in replicas.by_pool.items() for r in rs}
        with self._drain_lock:
            self._replica_drains = self._replica_drains & present
            return replicas.without(self._replica_drains)

    def _serving(self, replicas: ReplicaSet) -> list[PoolServing]:
        return [PoolServing(p.name, p.accelerator.value, p.emulated, p.models, replicas.serving(p.name))
                for p in self.fleet.pools]

    def _decide_and_write(self, replicas: ReplicaSet, metrics: FleetMetrics, now: float,
                          metrics_errors: Mapping[str, str], stats: StatsReading | None = None) -> LoopView:
        drains = self._drains
        billed = {pool: len(rs) for pool, rs in replicas.by_pool.items()}
        wall = self.wall_clock()
        inputs = TickInputs(self.fleet, metrics, replicas.ready_count(), drains, self.settings,
                            replicas.starting_count(), billed, wall, self.capacity,
                            stats=stats, calibration=self.calibration,
                            backlog_per_s=self.backlog().per_route(wall))
        decision, states = decide_tick(inputs, self._states, now)
        previous = self._view.routes
        for key, route in decision.routes.items():
            if key not in previous or previous[key].as_dict() != route.as_dict():
                self.observer.route_changed(key)
        result = self._publish(replicas, decision.routes, states.releases)
        errors = list(result.problems)
        in_force = decision.routes
        if result.problems:  # refused: the routes in force stay what Envoy has
            log.error("snapshot not published: %s", "; ".join(result.problems))
            in_force = previous
        self._states = states
        record = ControlRecord(self._record.version, dict(in_force), decision.capacity.desired(),
                               states.capacity.to_json() if states.capacity else None,
                               states.releases.to_json(), drains, result.version or "",
                               ledger=states.ledger.to_json() if states.ledger else None,
                               calibration=states.calibration.to_json() if states.calibration else None)
        moving = {"ledger": None, "capacity": None, "calibration": None}  # change every tick: saved periodically
        changed = replace(record, **moving) != replace(self._record, saved_at_unix_s=0.0, **moving)
        due = self.wall_clock() - self._saved_at >= self.ledger_save_interval_s
        if changed or due:
            record = replace(record, version=self._record.version + 1, saved_at_unix_s=self.wall_clock())
            try:
                self.store.save(record.to_json())
                self._record = replace(record, saved_at_unix_s=0.0)
                self._saved_at = record.saved_at_unix_s
            except OSError as e:  # the routes in force still stand; the next change retries the save
                errors.append(f"state store: {type(e).__name__}: {e}")
                log.error("state not saved: %s", e)
        actuation = self.actuator.apply(decision.capacity.desired())
        self._view = LoopView(
            replicas=replicas, metrics=metrics, decision=decision, routes=dict(in_force), drains=drains,
            snapshot_version=result.version,
            last_push_unix_s=self.wall_clock() if result.pushed else self._view.last_push_unix_s,
            last_error="; ".join(errors) or None, metrics_errors=dict(metrics_errors), actuation=actuation,
            resumed=self._view.resumed, record_version=self._record.version, ledger=states.ledger,
            releases=states.releases,
        )
        for action in decision.release_actions:
            self._release_action(action)
        self.observer.observed(self.fleet, self._view, states)
        return self._view

    # -- queued work (router_lib.backlog) ----------------------------------------------------------
    def report_backlog(self, payload: object) -> BacklogReport:
        """Keep a backlog report (JSON already decoded) for the capacity decider; BacklogError names
        what is wrong with a bad one.  It expires unless refreshed."""
        now = self.wall_clock()
        report = parse_report(payload, self.fleet, now)
        with self._backlog_lock:
            self._backlog = self._backlog.with_report(report, now)
        return report

    def backlog(self) -> BacklogBook:
        with self._backlog_lock:
            return self._backlog

    # -- operator drains -------------------------------------------------------------------------
    def drain(self, pool: str, timeout_s: float = 5.0) -> str | None:
        """Weight ``pool`` to 0 everywhere, publish, and wait until every stream ACKed it.

        Re-decides with the last metrics (no scrape), so it answers in milliseconds."""
        self.fleet.pool(pool)  # KeyError names the known pools
        version = self._set_drains(self._drains | {pool})
        if version is None:
            return None
        if not self.sink.wait_acked(version, timeout_s):
            raise TimeoutError(f"snapshot {version} not ACKed by every stream within {timeout_s}s")
        return version

    def drain_replica(self, pool: str, host: str, http_port: int, timeout_s: float = 5.0) -> str | None:
        """Take one replica out of Envoy's endpoints now (before it is stopped), publish, and wait
        until every stream ACKed it; re-reads discovery and decides with the last metrics."""
        self.fleet.pool(pool)
        with self._drain_lock:
            self._replica_drains = self._replica_drains | {(pool, host, http_port)}
        with self._tick_lock:
            view = self._view
            replicas = self._read_replicas()
            if view.metrics is None:
                version = self._publish(replicas, view.routes, self._states.releases).version
            else:
                version = self._decide_and_write(replicas, view.metrics, self.clock(), view.metrics_errors).snapshot_version
        if version is not None and not self.sink.wait_acked(version, timeout_s):
            raise TimeoutError(f"snapshot {version} not ACKed by every stream within {timeout_s}s")
        return version

    def undrain(self, pool: str) -> None:
        self.fleet.pool(pool)
        self._set_drains(self._drains - {pool})

    def _set_drains(self, drains: frozenset[str]) -> str | None:
        with self._tick_lock:
            self._drains = drains
            view = self._view
            if view.metrics is None:  # no tick yet: the first tick will honour the drain
                return view.snapshot_version
            return self._decide_and_write(view.replicas, view.metrics, self.clock(), view.metrics_errors).snapshot_version

    # -- releases (router_lib.release; docs/releases.md) ------------------------------------------
    def _publish(self, replicas: ReplicaSet, routes: Mapping[RouteKey, RouteWeights], book: ReleaseBook
                 ) -> PublishResult:
        """Publish routes, with the releases' candidate clusters and shares when there are any
        (sinks that know no releases are called exactly as before)."""
        if not book.releases:
            return self.sink.publish(self._serving(replicas), list(routes.values()))
        return self.sink.publish(self._serving(replicas), list(routes.values()),  # type: ignore[call-arg]
                                 splits=release_splits(book, routes), candidates=candidate_pools(book, self.fleet),
                                 mirrors=mirror_targets(book))

    def _release_action(self, action: ReleaseAction) -> None:
        log.info("release %s: %s", action.release, action.text)
        for listener in self.release_listeners:
            try:
                listener(action)
            except Exception:  # a listener (metrics) must not stop a rollback
                log.exception("release listener failed")

    def _apply_releases(self, book: ReleaseBook, actions: list[ReleaseAction]) -> PublishResult:
        """Publish ``book`` on the routes in force (routing is not re-run: a release changes only
        the version split) and persist it.  Caller holds ``_tick_lock``."""
        view = self._view
        result = self._publish(view.replicas, view.routes, book)
        self._handed_at = time.perf_counter()
        if result.problems:
            return result
        self._states = replace(self._states, releases=book)
        # the view first: what /status shows is what Envoy was just given, before the disk write
        self._view = replace(view, releases=book, snapshot_version=result.version,
                             last_push_unix_s=self.wall_clock() if result.pushed else view.last_push_unix_s)
        record = replace(self._record, releases=book.to_json(), version=self._record.version + 1,
                         snapshot_version=result.version or self._record.snapshot_version,
                         saved_at_unix_s=self.wall_clock())
        try:
            self.store.save(record.to_json())
            self._record = replace(record, saved_at_unix_s=0.0)
        except OSError as e:
            log.error("release state not saved: %s", e)
        self._view = replace(self._view, record_version=self._record.version)
        for action in actions:
            self._release_action(action)
        return result

    def releases_observed(self, observations: Mapping[str, ReleaseObservation]) -> list[ReleaseAction]:
        """The fast path: step the observed releases now (not at the next tick) and, when one
        acts (a rollback above all), publish at once, and report decision -> snapshot handed to
        the ADS server to ``release_push_observers`` (the ADS server measures send -> ACK itself:
        ``xds_push_to_ack_seconds``).  -> the actions taken."""
        with self._tick_lock:
            decided = time.perf_counter()
            book, actions = step_book(self._states.releases, observations, self.wall_clock())
            if not actions:  # only the holding note changed: the next tick persists it
                self._states = replace(self._states, releases=book)
                self._view = replace(self._view, releases=book)
                return []
            result = self._apply_releases(book, actions)
        if result.problems:
            log.error("release actions not published: %s", "; ".join(result.problems))
        elif result.pushed:
            for observe in self.release_push_observers:
                observe(self._handed_at - decided)
        return actions

    def start_release(self, spec: ReleaseSpec, endpoints: list[CandidateEndpoint], timeout_s: float = 5.0,
                      comparator: str = "") -> tuple[list[ReleaseAction], str | None]:
        """Start ``spec`` with its candidate replicas; publish, and wait until every stream ACKed.
        ``ReleaseCommandError`` if the model has a release running or the snapshot is refused."""
        with self._tick_lock:
            book = self._states.releases
            running = book.active_for(spec.model)
            if running is not None:
                raise ReleaseCommandError(f"model {spec.model} already has release {running.spec.name} "
                                          f"({running.phase.value}): abort or finish it first")
            known = {p.name for p in self.fleet.pools if spec.model in p.models}
            if spec.model not in {m for p in self.fleet.pools for m in p.models}:
                raise ReleaseCommandError(f"no pool serves model {spec.model!r}")
            for e in endpoints:
                if e.pool not in known:
                    raise ReleaseCommandError(f"candidate endpoint {e.host}:{e.http_port}: pool {e.pool!r} "
                                              f"does not serve {spec.model} (pools: {sorted(known)})")
            if not endpoints:
                raise ReleaseCommandError("a release needs at least one candidate replica (endpoints)")
            if spec.mirror_percent > 0 and not comparator:
                raise ReleaseCommandError(f"shadow.mirror_percent is {spec.mirror_percent:g} but no comparator "
                                          "was given (host:port of `python -m releases comparator`)")
            state, actions = start_release(spec, self.wall_clock(), endpoints, comparator)
            result = self._apply_releases(book.with_release(state), actions)
        if result.problems:
            raise ReleaseCommandError("snapshot refused: " + "; ".join(result.problems))
        return actions, self._wait(result.version, timeout_s)

    def release_command(self, name: str, command: Command, note: str = "", timeout_s: float = 5.0
                        ) -> tuple[list[ReleaseAction], str | None]:
        """pause / resume / promote / abort ``name``; publish and wait for ACKs.  ``KeyError``
        for an unknown release, ``ReleaseCommandError`` when the command does not apply."""
        with self._tick_lock:
            book = self._states.releases
            if name not in book.releases:
                raise KeyError(f"no release named {name!r}; releases: {sorted(book.releases)}")
            state, actions = apply_command(book.releases[name], command, self.wall_clock(), note)
            result = self._apply_releases(ReleaseBook({**book.releases, name: state}), actions)
        if result.problems:
            raise ReleaseCommandError("snapshot refused: " + "; ".join(result.problems))
        return actions, self._wait(result.version, timeout_s)

    def _wait(self, version: str | None, timeout_s: float) -> str | None:
        if version is not None and timeout_s > 0 and not self.sink.wait_acked(version, timeout_s):
            raise TimeoutError(f"snapshot {version} not ACKed by every stream within {timeout_s}s")
        return version
