"""Keep one child process running: the control server and Envoy, supervised like Triton replicas.

A watcher thread polls the child: when it exits without being asked to, or stops answering its
liveness probe for ``hang_timeout_s`` (a SIGSTOPped or wedged process looks alive to ``poll()``),
it is restarted with the shared backoff and every step is recorded in the ``Lifecycle``
(``died``/``hung``, ``restarted``, ``restart-failed``).  What makes a restart resume where the old
process left off belongs to the child: the control server republishes its persisted record,
Envoy gets its listeners and clusters back from the control server over ADS.

Children start in their own session (``start_new_session``): the terminal's Ctrl-C reaches only
the platform process, which then stops them in its own order.  ``hold()`` stops supervising without
stopping the child, for callers that kill it on purpose and start it again themselves.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable

from fleet.restarts import BackoffPolicy, Lifecycle

log = logging.getLogger(__name__)

Spawn = Callable[[], "subprocess.Popen[bytes]"]
WaitReady = Callable[["subprocess.Popen[bytes]", float], None]  # raises when not ready in time
Probe = Callable[[], bool]  # True: answered (alive), False: no answer


class SupervisedChild:
    def __init__(self, name: str, kind: str, spawn: Spawn, wait_ready: WaitReady, lifecycle: Lifecycle, *,
                 live: Probe | None = None, backoff: BackoffPolicy | None = None, ready_timeout_s: float = 60.0,
                 hang_timeout_s: float = 10.0, probe_every_s: float = 1.0, poll_s: float = 0.1) -> None:
        if hang_timeout_s <= probe_every_s:
            raise ValueError(f"{name}: hang_timeout_s ({hang_timeout_s}) must exceed probe_every_s ({probe_every_s})")
        self.name, self.kind = name, kind
        self._spawn, self._wait_ready, self._live = spawn, wait_ready, live
        self.lifecycle = lifecycle
        self.backoff = backoff or BackoffPolicy()
        self.ready_timeout_s, self.hang_timeout_s = ready_timeout_s, hang_timeout_s
        self.probe_every_s, self.poll_s = probe_every_s, poll_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._held = False
        self._watcher: threading.Thread | None = None
        self._failures = 0
        self._started_at = 0.0

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self._proc

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- start / stop -----------------------------------------------------------------------
    def start(self, detail: str = "") -> None:
        """Start the child and wait until it is ready (raises if it is not); then supervise it."""
        with self._lock:
            self._held = False
            proc = self._start_once()
        self.lifecycle.event(self.name, self.kind, "started", detail, pid=proc.pid)
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name=f"supervise-{self.name}", daemon=True)
            self._watcher.start()

    def _start_once(self) -> subprocess.Popen[bytes]:
        proc = self._spawn()
        self._proc, self._started_at = proc, time.monotonic()
        try:
            self._wait_ready(proc, self.ready_timeout_s)
        except BaseException:
            _end(proc)
            raise
        return proc

    def hold(self) -> None:
        """Stop supervising (the child keeps running): it is about to be killed on purpose."""
        with self._lock:
            self._held = True

    def kill(self) -> None:
        """SIGKILL the child and keep it down (``hold``) until ``start`` is called again."""
        with self._lock:
            self._held = True
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait(timeout=10)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop for good: end supervision, SIGTERM, wait, SIGKILL if it does not exit in time."""
        self._closing.set()
        with self._lock:  # a restart in progress finishes (or fails) before this runs
            proc = self._proc
            running = proc is not None and proc.poll() is None
            if running:
                self.lifecycle.event(self.name, self.kind, "stopping", pid=proc.pid)  # type: ignore[union-attr]
                code = _end(proc, timeout_s)  # type: ignore[arg-type]
                self.lifecycle.event(self.name, self.kind, "stopped", _exit_note(code), pid=proc.pid)  # type: ignore[union-attr]
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None

    # -- supervision ------------------------------------------------------------------------
    def _watch(self) -> None:
        last_answer = time.monotonic()
        next_probe = last_answer + self.probe_every_s
        while not self._closing.wait(self.poll_s):
            with self._lock:
                proc, held = self._proc, self._held
            if proc is None or held:
                last_answer = time.monotonic()
                continue
            code = proc.poll()
            now = time.monotonic()
            if code is None:
                if self._live is None or now < next_probe:
                    continue
                if self._live():
                    last_answer = now
                elif now - last_answer >= self.hang_timeout_s:
                    self._recover(proc, hung_for_s=now - last_answer)
                    last_answer = time.monotonic()
                next_probe = time.monotonic() + self.probe_every_s
                continue
            self._recover(proc, hung_for_s=None)
            last_answer = time.monotonic()

    def _recover(self, proc: subprocess.Popen[bytes], hung_for_s: float | None) -> None:
        with self._lock:
            if self._closing.is_set() or self._held or proc is not self._proc:
                return
            uptime_s = time.monotonic() - self._started_at
            self._failures = self.backoff.failures_after(self._failures, uptime_s)
            if hung_for_s is not None:
                log.warning("%s (pid %d) did not answer for %.0f s; killing and restarting it", self.name, proc.pid,
                            hung_for_s)
                self.lifecycle.event(self.name, self.kind, "hung", f"no answer for {hung_for_s:.0f} s; SIGKILLed",
                                     pid=proc.pid)
                _end(proc, 0)
            else:
                log.warning("%s (pid %d) exited (code %s); restarting it", self.name, proc.pid, proc.returncode)
                self.lifecycle.event(self.name, self.kind, "died", f"up {uptime_s:.1f} s", pid=proc.pid,
                                     returncode=proc.returncode)
        while True:
            if self._closing.wait(self.backoff.delay_s(self._failures)):
                return
            with self._lock:
                if self._closing.is_set() or self._held:
                    return
                try:
                    new = self._start_once()
                except Exception as e:
                    self._failures += 1
                    log.warning("restart of %s failed: %s", self.name, e)
                    self.lifecycle.event(self.name, self.kind, "restart-failed",
                                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                    continue
            self.lifecycle.event(self.name, self.kind, "restarted", f"after {self._failures} failure(s) in a row",
                                 pid=new.pid)
            return


def _end(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int | None:
    """SIGTERM (unless ``timeout_s`` is 0: SIGKILL at once), wait, SIGKILL if still there."""
    if proc.poll() is None:
        if timeout_s > 0:
            proc.terminate()
            try:
                return proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        proc.kill()
        return proc.wait(timeout=10)
    return proc.returncode


def _exit_note(code: int | None) -> str:
    return "clean exit" if code == 0 else f"exit code {code}"
