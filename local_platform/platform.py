"""The whole local platform on 127.0.0.1: Triton pools, the control server, Envoy.

``LocalPlatform`` is what ``make up``, the demo, the benchmarks and the end-to-end tests start.
The fleet supervisor runs in this process; the control server runs as its own process (so it can
be killed and restarted under load, as in production); Envoy is a child of this process (it must
stay its parent: FINDINGS).  They meet through two files: the runtime file (where replicas listen)
and the control server's persisted state.

Every child is supervised: a Triton replica, the control server or Envoy that dies (or, for the
last two, stops answering) is restarted with backoff (``local_platform.supervised``), and each
start, death, restart and stop is recorded in ``<workdir>/processes.json`` and ``events.jsonl``
(``fleet.restarts.Lifecycle``).  Children run in their own sessions, so a terminal's Ctrl-C reaches
only this process; ``stop`` then drains every pool, stops its Tritons, then Envoy, then the
control server, in that order.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control.actuator_desired_file import read_desired
from control.server import DECIDER_SIGNALS
from fleet.prometheus import PrometheusProcess
from fleet.replica import ReplicaInfo
from fleet.restarts import BackoffPolicy, Lifecycle, reap_leftovers
from fleet.runtime import write_runtime
from fleet.supervisor import FleetSupervisor, wait_until
from fleet.triton_process import PROJECT_ROOT, GrpcTls
from local_platform.supervised import SupervisedChild
from localnet.ports import free_ports
from model_repository.definitions import load_models
from router_lib.config import load_fleet
from router_lib.metric_names import envoy_stats_url
from xds_server.bootstrap import write_envoy_bootstrap
from xds_server.certs import ensure_certs
from xds_server.envoy_process import EnvoyError, EnvoyProcess, shared_host_concurrency
from xds_server.tls import CertDir, Role, UpstreamTls

log = logging.getLogger(__name__)
ENVOY_NODE_ID = "local-envoy"


@dataclass
class PlatformPorts:
    http: int = 8000
    grpc: int = 8001
    xds: int = 0
    admin: int = 0
    envoy_admin: int = 0

    def resolve(self) -> PlatformPorts:
        picked = iter(free_ports(5))  # distinct: picked together
        return PlatformPorts(*(port or next(picked) for port in (self.http, self.grpc, self.xds, self.admin,
                                                                 self.envoy_admin)))


def http_json(url: str, method: str = "GET", timeout_s: float = 10.0) -> Any:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=timeout_s) as r:  # noqa: S310 - loopback only
        return json.loads(r.read())


@dataclass
class LocalPlatform:
    fleet_path: Path = PROJECT_ROOT / "fleet.yaml"
    workdir: Path = PROJECT_ROOT / "build" / "run"
    artifacts: Path = PROJECT_ROOT / "build" / "models"
    ports: PlatformPorts = field(default_factory=PlatformPorts)
    interval_s: float = 1.0
    state_path: Path | None = None
    with_prometheus: bool = False
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    # the control server and Envoy: killed and restarted when they answer no probe for this long
    hang_timeout_s: float = 10.0
    # mTLS between Envoy, the control server and Triton's gRPC ports (docs/security.md): the
    # certificate directory, made or renewed here if needed (idempotent); None: plaintext.
    mtls_dir: Path | None = None
    # The edge (docs/edge.md): an edge.yaml (e.g. closed mode with JWT); None: open mode with strict
    # validation of every inference request against the models' schemas.
    edge_config: Path | None = None
    # Per-try timeouts from each tier's bound x this factor, gold hedged, hung replicas ejected
    # (docs/overload.md); None: one route timeout per request, as before.
    tier_timeouts: float | None = None

    def __post_init__(self) -> None:
        self.cert_dir = CertDir(ensure_certs(self.mtls_dir).out) if self.mtls_dir is not None else None
        self.models = load_models()
        self.fleet = load_fleet(self.fleet_path, tuple(self.models))
        self.ports = self.ports.resolve()
        self.runtime_path = self.workdir / "runtime.json"
        self.state_path = self.state_path or self.workdir / "control-state.json"
        self.lifecycle = Lifecycle(self.workdir)
        self.supervisor = FleetSupervisor(self.fleet, self.models, self.artifacts, self.workdir,
                                          source=str(self.fleet_path), lifecycle=self.lifecycle, backoff=self.backoff,
                                          triton_grpc_tls=self._triton_grpc_tls())
        self.control_child: SupervisedChild | None = None
        self.envoy_child: SupervisedChild | None = None
        self.envoy: EnvoyProcess | None = None
        self.prometheus: PrometheusProcess | None = None
        # Autoscaled pools: the control server writes desired replicas here, this process follows.
        self.autoscaled = any(p.autoscaled for p in self.fleet.pools)
        self.desired_path = self.workdir / "desired.json"
        self._follow_stop = threading.Event()
        self._follower: threading.Thread | None = None
        self.scale_errors: list[str] = []

    # -- start ------------------------------------------------------------------------------
    def start(self, timeout_s: float = 180.0) -> LocalPlatform:
        """Start everything; if any part fails, stop what did start before raising."""
        try:
            return self._start(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout_s: float) -> LocalPlatform:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.desired_path.unlink(missing_ok=True)  # a previous run's request is not this one's
        owner, reaped = reap_leftovers(self.workdir)  # a previous `up` SIGKILLed leaves its children running
        if reaped:
            log.warning("stopped %d process(es) left running by a platform that was killed (pid %s): %s",
                        len(reaped), owner, ", ".join(f"{n} (pid {p})" for n, p in reaped))
        for name in ("processes.json", "events.jsonl"):  # this run's lives only
            (self.workdir / name).unlink(missing_ok=True)
        self.supervisor.add_listener(self._on_replicas)
        self.supervisor.start(timeout_s=timeout_s)
        self._write_runtime()
        self.start_control_server()
        # Pools this platform just started are not draining, whatever a previous run persisted
        # (its shutdown drained every pool before stopping it).
        for pool in self.fleet.pools:
            http_json(f"{self.admin_url}/undrain?pool={pool.name}", method="POST")
        self.start_envoy()
        self.wait_for(lambda: bool(self.status().get("routes")) and self._envoy_acked(), 60, "first routes ACKed by Envoy")
        if self.with_prometheus:
            self.prometheus = PrometheusProcess(self.workdir / "prometheus", self.ports.admin, self.ports.envoy_admin)
            self.prometheus.start(self.supervisor.replicas())
        if self.autoscaled:
            self._follower = threading.Thread(target=self._follow_desired, name="scale-follower", daemon=True)
            self._follower.start()
        (self.workdir / "platform.json").write_text(json.dumps(self.describe(), indent=1))
        return self

    # -- scaling: follow the control server's desired replicas ------------------------------
    def _follow_desired(self, poll_s: float = 0.25) -> None:
        while not self._follow_stop.wait(poll_s):
            try:
                desired = read_desired(self.desired_path)
            except ValueError as e:
                self._scale_error(str(e))
                continue
            if desired:
                self.apply_desired(desired)

    def _scale_error(self, message: str) -> None:
        log.error("%s", message)
        self.scale_errors = [*self.scale_errors[-19:], message]

    def apply_desired(self, desired: dict[str, int]) -> None:
        """Scale each autoscaled pool to its desired count, within its bounds and the machine's
        replica limit (scale-ins first, so their room is free for the scale-outs)."""
        counts = {p.name: self.supervisor.replica_count(p.name) for p in self.fleet.pools}
        targets = {}
        for pool in self.fleet.pools:
            if not pool.autoscaled or pool.name not in desired:
                continue
            low, high = pool.replica_bounds
            targets[pool.name] = min(max(desired[pool.name], low), high)
        limit = self.fleet.max_local_replicas
        for name, target in sorted(targets.items(), key=lambda kv: kv[1] - counts[kv[0]]):
            if self._follow_stop.is_set():
                return
            if target > counts[name] and limit is not None:
                room = limit - sum(counts.values())
                if room < target - counts[name]:
                    self._scale_error(f"pool {name}: {target} replicas wanted, the machine limit of {limit} "
                                      f"allows {counts[name] + max(room, 0)}")
                    target = counts[name] + max(room, 0)
            if target != counts[name]:
                try:
                    self.supervisor.scale(name, target, drain_replica=self._drain_replica)
                except Exception as e:  # keep following: the next poll retries
                    self._scale_error(f"scaling {name} to {target} failed: {type(e).__name__}: {e}")
                counts[name] = self.supervisor.replica_count(name)

    def _drain_replica(self, info: ReplicaInfo) -> None:
        http_json(f"{self.admin_url}/drain-replica?pool={info.pool}&http_port={info.http_port}", method="POST",
                  timeout_s=15)

    def _on_replicas(self, pool: str, infos: list[ReplicaInfo]) -> None:
        self._write_runtime()
        if self.prometheus is not None:
            self.prometheus.write_targets(self.supervisor.replicas())

    def _write_runtime(self) -> None:
        replicas: dict[str, list[ReplicaInfo]] = {}
        for r in self.supervisor.replicas():
            replicas.setdefault(r.pool, []).append(r)
        write_runtime(self.runtime_path, replicas)

    def _spawn_control_server(self) -> subprocess.Popen[bytes]:
        log_path = self.workdir / "logs" / "control-server.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "control", "serve", f"--fleet={self.fleet_path}",
            f"--runtime={self.runtime_path}", f"--state={self.state_path}",
            f"--xds-port={self.ports.xds}", f"--admin-port={self.ports.admin}",
            f"--envoy-metrics-url={envoy_stats_url(f'http://127.0.0.1:{self.ports.envoy_admin}', DECIDER_SIGNALS)}",
            f"--http-port={self.ports.http}", f"--grpc-port={self.ports.grpc}", f"--interval-s={self.interval_s}",
        ]
        if self.autoscaled:
            cmd.append(f"--desired={self.desired_path}")
        if self.cert_dir is not None:
            cmd.append(f"--mtls-dir={self.cert_dir.root}")
        cmd.append(f"--edge-config={self.edge_config}" if self.edge_config is not None else "--edge-validate")
        if self.tier_timeouts is not None:
            cmd.append(f"--tier-timeouts={self.tier_timeouts:g}")
        env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
        with open(log_path, "ab") as logf:
            return subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    cwd=PROJECT_ROOT, start_new_session=True)

    def _wait_control_healthy(self, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"control server exited ({proc.returncode}); see "
                                   f"{self.workdir / 'logs' / 'control-server.log'}")
            return self._answers(f"{self.admin_url}/healthz")

        self.wait_for(healthy, timeout_s, "the control server's /healthz")

    def start_control_server(self) -> None:
        """Start the control server (supervised: restarted with backoff if it dies or hangs) and
        wait for its /healthz.  After ``kill_control_server`` this starts it again."""
        if self.control_child is None:
            self.control_child = SupervisedChild(
                "control-server", "control-server", self._spawn_control_server, self._wait_control_healthy,
                self.lifecycle, live=lambda: self._answers(f"{self.admin_url}/livez"), backoff=self.backoff,
                hang_timeout_s=self.hang_timeout_s)
        self.control_child.start()

    @property
    def control(self) -> subprocess.Popen[bytes] | None:
        """The control server's current process (a new one after each restart)."""
        return self.control_child.proc if self.control_child is not None else None

    @staticmethod
    def _answers(url: str, timeout_s: float = 2.0) -> bool:
        """The URL answers 200 with JSON within ``timeout_s``."""
        try:
            http_json(url, timeout_s=timeout_s)
            return True
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _triton_grpc_tls(self) -> GrpcTls | None:
        if self.cert_dir is None:
            return None
        triton = self.cert_dir.identity(Role.TRITON)
        return GrpcTls(server_cert=triton.cert, server_key=triton.key, root_cert=triton.ca_cert)

    # -- Envoy (supervised) -----------------------------------------------------------------
    def _spawn_envoy(self) -> subprocess.Popen[bytes]:
        bootstrap = write_envoy_bootstrap(self.workdir / "envoy-bootstrap.yaml", node_id=ENVOY_NODE_ID,
                                          xds_port=self.ports.xds, admin_port=self.ports.envoy_admin,
                                          xds_tls=UpstreamTls.to(Role.XDS_SERVER, self.cert_dir) if self.cert_dir else None)
        self.envoy = EnvoyProcess(bootstrap, log_path=self.workdir / "logs" / "envoy.log",
                                  concurrency=shared_host_concurrency(),
                                  new_session=True)
        self.envoy.start()
        assert self.envoy.process is not None
        return self.envoy.process

    def _wait_envoy_ready(self, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
        assert self.envoy is not None
        self.envoy.wait_ready(timeout_s=timeout_s)

    def _envoy_live(self) -> bool:
        try:
            return self.envoy is not None and self.envoy.admin_get("/ready", timeout_s=2).strip() == "LIVE"
        except (urllib.error.URLError, OSError, EnvoyError):
            return False

    def start_envoy(self) -> None:
        if self.envoy_child is None:
            self.envoy_child = SupervisedChild("envoy", "envoy", self._spawn_envoy, self._wait_envoy_ready,
                                               self.lifecycle, live=self._envoy_live, backoff=self.backoff,
                                               hang_timeout_s=self.hang_timeout_s)
        self.envoy_child.start()

    def _envoy_acked(self) -> bool:
        """Envoy's stream has ACKed the snapshot in force, for every resource type it holds."""
        status = self.status()
        version = status.get("snapshot_version")
        for stream in status.get("ads_streams", []):
            types = stream.get("types", {})
            if stream.get("node") == ENVOY_NODE_ID and types and all(
                    t.get("snapshot_acked") == version for t in types.values()):
                return True
        return False

    # -- control-plane operations -----------------------------------------------------------
    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.admin}"

    def status(self) -> dict[str, Any]:
        return http_json(f"{self.admin_url}/status", timeout_s=5)  # type: ignore[no-any-return]

    def drain(self, pool: str) -> None:
        try:
            http_json(f"{self.admin_url}/drain?pool={pool}", method="POST", timeout_s=15)
        except (urllib.error.URLError, OSError) as e:
            log.warning("drain of %s failed (%s); stopping it anyway", pool, e)

    def kill_control_server(self) -> None:
        """SIGKILL the control server and keep it down until ``start_control_server`` (what a test
        of "the data plane without its control plane" needs).  A crash, by contrast, is restarted
        by the supervision: kill ``platform.control.pid`` yourself to test that."""
        if self.control_child is not None:
            self.control_child.kill()

    def stop_control_server(self) -> None:
        if self.control_child is not None:
            self.control_child.stop()
            self.control_child = None

    def stop_envoy(self) -> None:
        if self.envoy_child is not None:
            self.envoy_child.stop()
            self.envoy_child = None

    # -- stop -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Drain each pool through the control plane and stop its Tritons; then Envoy; then the
        control server (the order ``events.jsonl`` records).  Idempotent."""
        self._follow_stop.set()
        if self._follower is not None:
            self._follower.join(timeout=60)
        try:
            self.supervisor.stop(drain=self.drain if self.control and self.control.poll() is None else None)
        finally:
            if self.prometheus is not None:
                self.prometheus.stop()
            self.stop_envoy()
            self.stop_control_server()
            (self.workdir / "platform.json").unlink(missing_ok=True)

    def __enter__(self) -> LocalPlatform:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
        wait_until(predicate, timeout_s, what)

    def describe(self) -> dict[str, Any]:
        return {
            "http_endpoint": f"127.0.0.1:{self.ports.http}",
            "grpc_endpoint": f"127.0.0.1:{self.ports.grpc}",
            "control_admin": self.admin_url,
            "envoy_admin": f"http://127.0.0.1:{self.ports.envoy_admin}",
            "xds": f"127.0.0.1:{self.ports.xds}",
            "mtls": str(self.cert_dir.root) if self.cert_dir is not None else None,
            "control_pid": self.control.pid if self.control else None,
            "envoy_pid": self.envoy.pid if self.envoy else None,
            "workdir": str(self.workdir),
            "prometheus": self.prometheus.url if self.prometheus else None,
        }
