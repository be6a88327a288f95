"""Supervise the local fleet: one real ``tritonserver`` per pool replica, on 127.0.0.1.

The supervisor owns processes only: it writes each pool's model repository, starts the replicas on
free ports, waits for readiness, restarts a replica that dies (on the same ports when it can, so
the data plane's endpoints stay valid) and cleans up its orphaned stubs and shared memory, and on
shutdown lets the control plane drain each pool (weight 0) before stopping it.  Listeners hear of
every change to a pool's replica set.

Restarts back off (``fleet.restarts.BackoffPolicy``: 0.5 s, 1 s, 2 s ... while a replica keeps
dying) and never give up while the fleet runs; each runs in its own thread, so a whole pool killed
at once comes back in parallel.  Every start, death, restart and stop is recorded in the shared
``fleet.restarts.Lifecycle`` (what ``make up`` prints and ``make status`` shows).

Scaling (``scale``): new replicas are reported as starting (alive, not ready) and become ready
when Triton says so; a replica scaled in is reported as terminating, the control plane takes it
out of Envoy's endpoints (``drain_replica``, which returns once Envoy ACKed), its in-flight
requests finish (its Triton queue is empty and its request counters stop moving), and only then
is it stopped: no request is sent to a replica that is going away.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from fleet.replica import ReplicaInfo
from fleet.restarts import BackoffPolicy, Lifecycle
from fleet.triton_process import GrpcTls, Ports, TritonProcess, prepare_backend_dir
from model_repository.definitions import ModelDefinition
from model_repository.triton_config import target_for_pool, tier_sharing, write_repository
from router_lib.config import ConfigError
from router_lib.domain import Accelerator, Fleet, PoolSpec
from router_lib.metric_names import counts_as_failure

log = logging.getLogger(__name__)


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.05) -> None:
    """Poll ``predicate`` until it is true; TimeoutError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")


ReplicaListener = Callable[[str, list[ReplicaInfo]], None]
_REASON = re.compile(r'reason="([^"]*)"')


def _reason(line: str) -> str | None:
    match = _REASON.search(line)
    return match.group(1) if match else None


def _requests_seen(process: TritonProcess) -> tuple[float, float] | None:
    """(pending requests, requests answered) summed over the replica's models; None if unreadable."""
    try:
        text = process.metrics_text()
    except Exception:
        return None
    pending = answered = 0.0
    for line in text.splitlines():
        if line.startswith("nv_inference_pending_request_count{"):
            pending += float(line.rsplit(" ", 1)[1])
        elif line.startswith("nv_inference_request_success{") or (
                line.startswith("nv_inference_request_failure{") and counts_as_failure(_reason(line))):
            # Rejections ran nothing (a shed, or a batcher wake-up that never stops): the queue
            # gauge covers what still waits.
            answered += float(line.rsplit(" ", 1)[1])
    return pending, answered


def wait_quiesced(process: TritonProcess, timeout_s: float, settle_s: float = 0.3) -> bool:
    """Wait until a drained replica has nothing in flight: its queue is empty and its answered
    count did not move for ``settle_s`` (Envoy sends it nothing new once it left the endpoints).
    -> True when quiet, False at the timeout (the caller stops it anyway and says so)."""
    deadline = time.monotonic() + timeout_s
    before = _requests_seen(process)
    while time.monotonic() < deadline:
        time.sleep(settle_s)
        now = _requests_seen(process)
        if now is None or before is None:
            return now is None and not process.alive()
        if now[0] == 0 and now[1] == before[1]:
            return True
        before = now
    return False


def check_runnable_here(fleet: Fleet, source: str) -> None:
    """Only CPU pools can be real on this machine: a real GPU or Inferentia pool is a production
    fleet (the loader accepts it), and starting it here would present emulation as the real thing."""
    for i, pool in enumerate(fleet.pools):
        if not pool.emulated and pool.accelerator is not Accelerator.CPU:
            raise ConfigError(source, f"pools[{i}].mode", f"a real {pool.accelerator.value} pool cannot run on "
                              f"this machine (no {pool.accelerator.value} here); use mode: emulated")


class FleetSupervisor:
    def __init__(
        self,
        fleet: Fleet,
        models: dict[str, ModelDefinition],
        artifacts: Path,
        workdir: Path,
        poll_interval_s: float = 0.25,
        source: str = "fleet",
        max_parallel_starts: int = 3,
        lifecycle: Lifecycle | None = None,
        backoff: BackoffPolicy | None = None,
        triton_grpc_tls: GrpcTls | None = None,
    ) -> None:
        check_runnable_here(fleet, source)
        self.triton_grpc_tls = triton_grpc_tls  # every replica's gRPC port requires mTLS (docs/security.md)
        self.fleet = fleet
        self.models = models
        self.artifacts = artifacts
        self.workdir = workdir
        self.poll_interval_s = poll_interval_s
        self.backend_dir = prepare_backend_dir(workdir / "backends")
        self._replicas: dict[str, list[TritonProcess]] = {}
        self._restarts: dict[str, int] = {}
        self._lock = threading.RLock()
        self._listeners: list[ReplicaListener] = []
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._stopping: set[str] = set()
        self._starting: set[str] = set()  # process names started by scale(), not yet ready
        self._terminating: set[str] = set()  # process names being scaled in
        self._scale_lock = threading.Lock()  # one scale operation at a time
        # At most this many replicas start at once: a Triton start costs seconds of CPU, and a dozen
        # started together on a small machine took 13 s each instead of 2 (measured); the rest
        # start as these become ready (``scale`` is called again by whoever follows the target).
        self.max_parallel_starts = max_parallel_starts
        self.lifecycle = lifecycle or Lifecycle()
        self.backoff = backoff or BackoffPolicy()
        self._restarting: set[str] = set()  # replica names a restart thread owns
        self._failures: dict[str, int] = {}  # replica name -> consecutive deaths (for the backoff)
        self._restarters: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def repository_for(self, pool: PoolSpec) -> Path:
        entries = []
        for name in pool.models:
            profile = self.fleet.profile(name, pool.accelerator)
            assert profile is not None, f"pool {pool.name} serves {name} without a profile"
            sharing = tier_sharing(self.fleet.tiers, profile, dilation=self.fleet.time_dilation) if pool.share_tiers else None
            entries.append((self.models[name], target_for_pool(pool, profile, sharing)))
        return write_repository(self.workdir / "repos" / pool.name, entries, self.artifacts)

    def start(self, pools: Iterable[str] | None = None, timeout_s: float = 120.0) -> None:
        names = list(pools) if pools is not None else [p.name for p in self.fleet.pools]
        started: list[TritonProcess] = []
        for name in names:
            pool = self.fleet.pool(name)
            repo = self.repository_for(pool)
            procs = [self._new_process(pool, i, repo) for i in range(pool.replicas)]
            with self._lock:
                self._replicas[name] = procs
            for p in procs:
                p.start()
                started.append(p)
                self.lifecycle.event(p.name, "triton", "started", f"pool {name}", pid=p.pid)
        for p in started:
            self._wait_ready_or_move(p, timeout_s)
        for name in names:
            self._notify(name)
        if self._monitor is None:
            self._monitor = threading.Thread(target=self._watch, name="fleet-monitor", daemon=True)
            self._monitor.start()

    def _wait_ready_or_move(self, p: TritonProcess, timeout_s: float, tries: int = 3) -> None:
        """Wait for a first start; a replica that exits at once (on a shared machine another
        process can take a port between our pick and Triton's bind: "already in use") is started
        again on new ports, up to ``tries`` times in all."""
        for attempt in range(1, tries + 1):
            try:
                p.wait_ready(timeout_s, port_moves=0)  # this loop moves it, with lifecycle events
                return
            except RuntimeError as e:  # exited; a TimeoutError (never ready) is not a port clash
                if attempt == tries:
                    raise
                log.warning("replica %s exited at start (%s); again on new ports", p.name, str(e).splitlines()[0])
                self.lifecycle.event(p.name, "triton", "restart-failed", f"start {attempt}: exited", pid=p.pid)
                p.cleanup()
                p.ports = Ports.pick()
                p.start()
                self.lifecycle.event(p.name, "triton", "started", f"on new ports (start {attempt + 1})", pid=p.pid)

    def _new_process(self, pool: PoolSpec, index: int, repo: Path, ports: Ports | None = None) -> TritonProcess:
        name = f"{pool.name}-{index}"
        return TritonProcess(
            name=name, repository=repo, backend_dir=self.backend_dir,
            log_path=self.workdir / "logs" / f"{name}.log", ports=ports or Ports.pick(),
            grpc_tls=self.triton_grpc_tls,
        )

    def stop(self, drain: Callable[[str], None] | None = None) -> None:
        """Stop every pool: ``drain(pool)`` runs first for each pool in turn (weight 0, wait for the
        data plane), then every pool's Tritons are stopped at once (each takes seconds to exit:
        one pool after another, a three-pool platform took ~8.5 s to stop, at once ~3.5 s)."""
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=5)
            self._monitor = None
        for t in list(self._restarters):  # a restart in progress sees _stop and stops its replica
            t.join(timeout=30)
        with self._lock:
            names = list(self._replicas)
            self._stopping.update(names)
        for name in names:
            if drain is not None:
                self._drain(name, drain)
        with self._lock:
            procs = {name: self._replicas.pop(name, []) for name in names}
        for p in (p for ps in procs.values() for p in ps):  # all at once
            p.terminate()
        for name, ps in procs.items():
            for p in ps:
                p.stop()
                self.lifecycle.event(p.name, "triton", "stopped", pid=p.pid)
            with self._lock:
                self._stopping.discard(name)
            self.lifecycle.event(name, "pool", "stopped")
            self._notify(name)

    def _drain(self, name: str, drain: Callable[[str], None]) -> None:
        self.lifecycle.event(name, "pool", "draining")
        try:
            drain(name)
            self.lifecycle.event(name, "pool", "drained")
        except Exception as e:  # a failed drain must not leave processes behind
            log.exception("draining pool %s failed; stopping it anyway", name)
            self.lifecycle.event(name, "pool", "drain-failed", f"{type(e).__name__}: {e}")

    # -- supervision -------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            with self._lock:
                # a replica scale() has listed but not started yet has no process: it is not dead
                dead = [(pool, p) for pool, procs in self._replicas.items() if pool not in self._stopping
                        for p in procs
                        if p.proc is not None and not p.alive() and p.name not in self._terminating
                        and p.name not in self._restarting]
                starting = [(pool, p) for pool, procs in self._replicas.items() for p in procs
                            if p.name in self._starting and p.alive()]
                for _, p in dead:
                    self._starting.discard(p.name)
                    self._restarting.add(p.name)
            for pool, p in dead:
                t = threading.Thread(target=self._restart, args=(pool, p), name=f"restart-{p.name}", daemon=True)
                self._restarters = [r for r in self._restarters if r.is_alive()] + [t]
                t.start()
            for pool, p in starting:
                if p.ready(timeout_s=0.2):
                    p.start_waker()
                    with self._lock:
                        self._starting.discard(p.name)
                    log.info("replica %s is ready", p.name)
                    self._notify(pool)

    # -- scaling -----------------------------------------------------------------------------
    def replica_count(self, pool: str) -> int:
        """Replicas of ``pool`` that are running or starting (not those being scaled in)."""
        with self._lock:
            return sum(1 for p in self._replicas.get(pool, []) if p.name not in self._terminating)

    def scale(self, pool_name: str, replicas: int, drain_replica: Callable[[ReplicaInfo], None] | None = None,
              quiesce_timeout_s: float = 30.0) -> None:
        """Run ``replicas`` replicas of the pool: start new ones (reported as starting until ready;
        at most ``max_parallel_starts`` starting at once, fleet-wide: call again to start the rest)
        or drain and stop the newest ones.  Returns once started or stopped (not once ready)."""
        pool = self.fleet.pool(pool_name)
        if replicas < 0:
            raise ValueError(f"pool {pool_name}: replicas must be >= 0, got {replicas}")
        with self._scale_lock:
            current = self.replica_count(pool_name)
            if replicas > current:
                with self._lock:
                    room = self.max_parallel_starts - len(self._starting)
                if room > 0:
                    self._scale_up(pool, min(replicas - current, room))
            elif replicas < current:
                self._scale_down(pool, current - replicas, drain_replica, quiesce_timeout_s)

    def _scale_up(self, pool: PoolSpec, count: int) -> None:
        repo = self.workdir / "repos" / pool.name
        if not repo.exists():
            repo = self.repository_for(pool)
        new = []
        with self._lock:
            procs = self._replicas.setdefault(pool.name, [])
            for _ in range(count):
                p = self._new_process(pool, len(procs), repo)
                procs.append(p)
                self._starting.add(p.name)
                new.append(p)
        for p in new:
            log.info("scaling %s up: starting %s", pool.name, p.name)
            p.start()
            self.lifecycle.event(p.name, "triton", "started", f"pool {pool.name} scaled up", pid=p.pid)
        self._notify(pool.name)

    def _scale_down(self, pool: PoolSpec, count: int, drain_replica: Callable[[ReplicaInfo], None] | None,
                    quiesce_timeout_s: float) -> None:
        with self._lock:
            procs = [p for p in self._replicas.get(pool.name, []) if p.name not in self._terminating]
            leaving = procs[-count:]
            self._terminating.update(p.name for p in leaving)
        self._notify(pool.name)  # reported as terminating: discovery takes them out of rotation
        by_port = {i.http_port: i for i in self.replicas(pool.name)}
        for p in reversed(leaving):  # each drain publishes and waits for Envoy's ACK: milliseconds
            if drain_replica is not None:
                try:
                    drain_replica(by_port[p.ports.http])
                except Exception:  # a failed drain still stops the replica: retries cover it
                    log.exception("drain of %s failed; stopping it after its queue empties", p.name)

        def quiesce_and_stop(p: TritonProcess) -> None:
            quiesced = wait_quiesced(p, quiesce_timeout_s)
            log.info("scaling %s down: stopping %s (%s)", pool.name, p.name,
                     "idle" if quiesced else f"still busy after {quiesce_timeout_s}s")
            p.stop()
            self.lifecycle.event(p.name, "triton", "stopped", f"pool {pool.name} scaled down", pid=p.pid)

        # Out of rotation, the leaving replicas finish and exit together: one at a time, a scale-in of
        # twelve kept paying for the last ones for half a minute (measured).
        stoppers = [threading.Thread(target=quiesce_and_stop, args=(p,), name=f"stop-{p.name}") for p in leaving]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        with self._lock:
            current = self._replicas.get(pool.name, [])
            for p in leaving:
                if p in current:
                    current.remove(p)
                self._terminating.discard(p.name)
                self._starting.discard(p.name)
        self._notify(pool.name)

    def _restart(self, pool_name: str, old: TritonProcess) -> None:
        """Bring a dead replica back: same ports first (Envoy's endpoints stay valid), new ports if
        they are taken; wait ``backoff`` between attempts; never give up while the fleet runs."""
        try:
            code = old.proc.returncode if old.proc else None
            uptime_s = time.monotonic() - old.started_at
            with self._lock:
                failures = self.backoff.failures_after(self._failures.get(old.name, 0), uptime_s)
                self._failures[old.name] = failures
            log.warning("replica %s exited (code %s); cleaning up and restarting", old.name, code)
            self.lifecycle.event(old.name, "triton", "died", f"pool {pool_name}, up {uptime_s:.1f} s", pid=old.pid,
                                 returncode=code)
            old.cleanup()
            self._notify(pool_name)  # the dead replica is reported as not alive at once
            pool = self.fleet.pool(pool_name)
            ports = old.ports
            while True:
                if self._stop.wait(self.backoff.delay_s(failures)) or pool_name in self._stopping:
                    return
                new = self._new_process(pool, int(old.name.rsplit("-", 1)[1]), old.repository, ports)
                new.start()
                try:
                    new.wait_ready(120.0)
                    break
                except (RuntimeError, TimeoutError) as e:
                    log.warning("restart of %s on %s failed (attempt %d); new ports", old.name, ports, failures)
                    self.lifecycle.event(old.name, "triton", "restart-failed",
                                         f"attempt {failures}: {str(e).splitlines()[0]}", pid=new.pid)
                    new.stop()
                    ports = Ports.pick()
                    with self._lock:
                        failures = self._failures[old.name] = failures + 1
            with self._lock:
                current = self._replicas.get(pool_name)
                if current is None or old not in current or self._stop.is_set() or pool_name in self._stopping:
                    new.stop()
                    return
                current[current.index(old)] = new
                self._restarts[new.name] = self._restarts.get(new.name, 0) + 1
            self.lifecycle.event(new.name, "triton", "restarted", f"pool {pool_name}, ports {new.ports.http}/"
                                 f"{new.ports.grpc}/{new.ports.metrics}", pid=new.pid)
            self._notify(pool_name)
        finally:
            with self._lock:
                self._restarting.discard(old.name)

    # -- queries -----------------------------------------------------------------------------
    def add_listener(self, listener: ReplicaListener) -> None:
        self._listeners.append(listener)

    def _notify(self, pool: str) -> None:
        infos = self.replicas(pool)
        for fn in list(self._listeners):
            try:
                fn(pool, infos)
            except Exception:
                log.exception("replica listener failed")

    def processes(self, pool: str) -> list[TritonProcess]:
        with self._lock:
            return list(self._replicas.get(pool, []))

    def replicas(self, pool: str | None = None) -> list[ReplicaInfo]:
        with self._lock:
            items = [(name, procs) for name, procs in self._replicas.items() if pool is None or name == pool]
            out = []
            for name, procs in items:
                spec = self.fleet.pool(name)
                for i, p in enumerate(procs):
                    out.append(ReplicaInfo(
                        pool=name, index=i, accelerator=spec.accelerator.value, emulated=spec.emulated,
                        http_port=p.ports.http, grpc_port=p.ports.grpc, metrics_port=p.ports.metrics,
                        pid=p.pid, alive=p.alive(), restarts=self._restarts.get(p.name, 0),
                        ready=p.name not in self._starting, terminating=p.name in self._terminating,
                    ))
            return out

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        wait_until(predicate, timeout_s, what)
