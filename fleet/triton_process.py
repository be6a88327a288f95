"""One real ``tritonserver`` process (the binary from the ``nvidia-pytriton`` wheel) on 127.0.0.1.

Each replica gets its own /dev/shm prefix for the Python backend, so that after a SIGKILL its
orphaned ``triton_python_backend_stub`` processes and shared-memory regions can be found and
removed without touching another replica's.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytriton
import requests

from fleet.batcher_wake import DEFAULT_PERIOD_MS, TARGET_ERRORS, BatcherWaker
from fleet.triton_tracing import triton_trace_args
from localnet.ports import free_ports
from tracing.settings import TracingSettings

log = logging.getLogger(__name__)

TRITON_DIR = Path(pytriton.__file__).resolve().parent / "tritonserver"
TRITON_BIN = TRITON_DIR / "bin" / "tritonserver"
TRITON_LIBS = Path(pytriton.__file__).resolve().parent.parent / "nvidia_pytriton.libs"
STUB_NAME = "triton_python_backend_stub"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def prepare_backend_dir(dest: Path) -> Path:
    """``<dest>/python`` (Triton's Python backend + this Python's stub) and one folder per
    Python-based backend of this project (``onnxruntime``, ``emulated``), linked to the sources."""
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    (dest / "python").mkdir(parents=True, exist_ok=True)
    for src in (
        TRITON_DIR / "backends" / "python" / "libtriton_python.so",
        TRITON_DIR / "backends" / "python" / "triton_python_backend_utils.py",
        TRITON_DIR / "python_backend_stubs" / py / STUB_NAME,
    ):
        target = dest / "python" / src.name
        if not target.exists():
            shutil.copy2(src, target)
    for name in ("onnxruntime", "emulated"):
        link = dest / name / "model.py"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.unlink(missing_ok=True)
            os.symlink(PROJECT_ROOT / "model_repository" / "backends" / name / "model.py", link)
    return dest


def triton_env() -> dict[str, str]:
    """The stub finds its Python through ``python3`` on PATH and ignores PYTHONPATH (FINDINGS):
    put this venv's bin first and its libpython on LD_LIBRARY_PATH."""
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(TRITON_LIBS), libdir, env.get("LD_LIBRARY_PATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@dataclass
class Ports:
    http: int
    grpc: int
    metrics: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(*free_ports(3))


@dataclass(frozen=True)
class GrpcTls:
    """Mutual TLS on the replica's gRPC port: it presents ``server_cert`` and refuses a client
    without a certificate signed by ``root_cert`` (docs/security.md; made by xds_server.certs).
    Triton's HTTP and metrics ports have no TLS: they stay on loopback."""

    server_cert: Path
    server_key: Path
    root_cert: Path

    def flags(self) -> list[str]:
        return ["--grpc-use-ssl=true", "--grpc-use-ssl-mutual=true",
                f"--grpc-server-cert={self.server_cert.resolve()}", f"--grpc-server-key={self.server_key.resolve()}",
                f"--grpc-root-cert={self.root_cert.resolve()}"]


@dataclass
class TritonProcess:
    """A tritonserver serving ``repository`` on loopback.  ``name`` is unique per replica."""

    name: str
    repository: Path
    backend_dir: Path
    log_path: Path
    ports: Ports = field(default_factory=Ports.pick)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    _log_offset: int = field(default=0, init=False, repr=False)  # where the last start's log lines begin
    # Unique per process: a restarted replica must not share (or clean up) its predecessor's regions.
    shm_prefix: str = field(default_factory=lambda: f"tmas_{os.getpid()}_{uuid.uuid4().hex[:8]}_")
    grpc_tls: GrpcTls | None = None  # None: plaintext gRPC, as before
    # Wake the dynamic batcher of every model that declares a wake-up level, this often, once the
    # replica is ready (``fleet.batcher_wake``: a Triton 2.51 lost wake-up); None: never.
    wake_period_s: float | None = DEFAULT_PERIOD_MS / 1000
    _waker: BatcherWaker | None = field(default=None, init=False, repr=False)

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.metrics}/metrics"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def metrics_text(self, timeout_s: float = 1.0) -> str:
        """Triton's Prometheus text; raises requests.RequestException when unreachable."""
        response = requests.get(self.metrics_url, timeout=timeout_s)
        response.raise_for_status()
        return response.text

    def command(self) -> list[str]:
        return [
            str(TRITON_BIN),
            f"--model-repository={self.repository.resolve()}",
            f"--backend-directory={self.backend_dir.resolve()}",
            "--http-address=127.0.0.1", f"--http-port={self.ports.http}",
            "--grpc-address=127.0.0.1", f"--grpc-port={self.ports.grpc}",
            "--metrics-address=127.0.0.1", f"--metrics-port={self.ports.metrics}",
            "--allow-metrics=true", "--allow-gpu-metrics=false", "--allow-cpu-metrics=false",
            "--metrics-interval-ms=1000",
            "--strict-readiness=true", "--exit-on-error=true",
            # On SIGTERM Triton waits for in-flight inferences AND open client connections, up to
            # this timeout (default 30 s). Envoy keeps idle keep-alive connections to every replica
            # it used, so a drained replica sat out the whole default. Replicas are drained (weight
            # 0, ACKed) and, on scale-in, left to empty their queue before they are stopped: 5 s is
            # for stragglers.
            "--exit-timeout-secs=5",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            "--log-verbose=0",
            # OpenTelemetry traces when this process's OTEL_* environment names a collector (docs/tracing.md).
            *triton_trace_args(TracingSettings.from_env(os.environ), instance=self.name),
            *(self.grpc_tls.flags() if self.grpc_tls is not None else []),
        ]

    def start(self) -> None:
        self._stop_waker()  # a restart: the last start's waker talks to a process that is gone
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self._log_offset = log.tell()  # the log is appended to: this start's lines begin here
        # Its own session: a Ctrl-C on the terminal reaches the supervisor only, which drains the
        # pool through the control plane before it stops this replica (issue 16).
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=triton_env(), cwd=str(self.repository),
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self, timeout_s: float = 0.5) -> bool:
        try:
            return requests.get(f"http://{self.http_url}/v2/health/ready", timeout=timeout_s).status_code == 200
        except requests.RequestException:
            return False

    def wait_ready(self, timeout_s: float = 90.0, port_moves: int = 2) -> None:
        """Until Triton answers ready.  A start that lost a port to another process between our
        pick and Triton's bind (it logs "already in use" and exits; on a shared machine this
        happens) is started again on new ports, up to ``port_moves`` times: read ``ports`` after
        this returns.  Any other exit raises ``RuntimeError`` with the log's tail."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                if port_moves > 0 and self.lost_a_port():
                    port_moves -= 1
                    self.cleanup()
                    self.ports = Ports.pick()
                    self.start()
                    continue
                raise RuntimeError(f"tritonserver {self.name} exited with {self.proc and self.proc.returncode}; "
                                   f"log: {self.log_path}\n{self.log_tail()}")
            if self.ready():
                self.start_waker()
                return
            time.sleep(0.1)
        raise TimeoutError(f"tritonserver {self.name} not ready after {timeout_s}s; log: {self.log_path}\n{self.log_tail()}")

    def start_waker(self) -> None:
        """Start the batcher waker once the replica is ready (``wait_ready`` does; a caller that
        polls ``ready`` itself calls this).  Nothing to do when no model declares a wake-up level."""
        if self.wake_period_s is None or self._waker is not None:
            return
        try:
            waker = BatcherWaker(f"http://{self.http_url}", period_s=self.wake_period_s).start()
        except TARGET_ERRORS as e:
            # The replica serves without it: a missed wake-up costs a request up to 500 ms.
            log.warning("tritonserver %s: cannot read its models' wake-up levels (%s); not waking its batchers",
                        self.name, e)
            return
        self._waker = waker if waker.running else None

    def _stop_waker(self) -> None:
        if self._waker is not None:
            self._waker.stop()
            self._waker = None

    @property
    def waker(self) -> BatcherWaker | None:
        """The running batcher waker (None: nothing declares a wake-up level, or not ready yet)."""
        return self._waker

    def lost_a_port(self) -> bool:
        """Whether the last start exited because one of its ports was taken."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return b"already in use" in f.read()
        except OSError:
            return False

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def terminate(self) -> None:
        """SIGTERM without waiting (``stop`` waits): lets a whole pool exit in parallel."""
        self._stop_waker()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM, wait, SIGKILL if needed; then remove this replica's stubs and shm regions."""
        self._stop_waker()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.cleanup()

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests and fault injection)."""
        self._stop_waker()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def orphan_stub_pids(self) -> list[int]:
        return find_stub_pids(self.shm_prefix)

    def shm_regions(self) -> list[Path]:
        return sorted(Path("/dev/shm").glob(f"{self.shm_prefix}*"))

    def cleanup(self) -> None:
        deadline = time.monotonic() + 5.0
        # Stubs notice their parent's death and exit by themselves; give them a moment, then kill.
        while self.orphan_stub_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self.orphan_stub_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for region in self.shm_regions():
            region.unlink(missing_ok=True)


def find_stub_pids(shm_prefix: str) -> list[int]:
    """PIDs of Python-backend stubs whose command line names ``shm_prefix``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if STUB_NAME in cmdline and shm_prefix in cmdline:
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[0] != "Z":
                pids.append(int(entry.name))
    return pids
