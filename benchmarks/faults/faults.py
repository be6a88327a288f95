"""The faults the benchmark injects, on processes this benchmark's platform started (by PID, never
by name): SIGKILL and SIGSTOP/SIGCONT, a slow process (SIGSTOP/SIGCONT duty cycle), and a full disk
for the control server's state file.

Why a duty cycle for "slow": without root there is no cgroup CPU limit to lower; stopping a pool's
processes for ``stopped_ms`` of every ``period_ms`` makes every request it serves take several
times longer while it still answers (a noisy neighbour, a throttled CPU), which is different from a
hung (SIGSTOP) or dead (SIGKILL) one.

Why RLIMIT_FSIZE for "disk full": without root there is no tiny tmpfs or loop device to fill.
``prlimit(pid, RLIMIT_FSIZE)`` on the running control server makes every write that would grow a
file beyond the limit fail with EFBIG ("File too large"; Python ignores SIGXFSZ, so the write
raises instead of killing the process), exactly where ENOSPC would fail it: in the middle of
writing the temporary state file.  It shows what a full disk shows (saves fail, the process lives
on, the old file stays whole) but not ENOSPC's errno, and it also fails the server's own log
writes above the limit while it lasts (its log file is larger than the limit).
"""

from __future__ import annotations

import os
import resource
import signal
import threading
import time
from collections.abc import Iterable


def send(pids: Iterable[int], sig: signal.Signals) -> list[int]:
    """Signal each PID; -> those that existed."""
    done = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            done.append(pid)
        except ProcessLookupError:
            pass
    return done


class DutyCycle:
    """Keep ``pids`` stopped ``stopped_ms`` of every ``period_ms`` until ``stop()`` (which resumes them)."""

    def __init__(self, pids: list[int], period_ms: float = 100.0, stopped_ms: float = 80.0) -> None:
        if not 0 < stopped_ms < period_ms:
            raise ValueError(f"need 0 < stopped_ms < period_ms, got {stopped_ms} and {period_ms}")
        self.pids, self.period_s, self.stopped_s = pids, period_ms / 1000, stopped_ms / 1000
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-pool", daemon=True)

    def start(self) -> DutyCycle:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                send(self.pids, signal.SIGSTOP)
                time.sleep(self.stopped_s)
                send(self.pids, signal.SIGCONT)
                self._stop.wait(self.period_s - self.stopped_s)
        finally:
            send(self.pids, signal.SIGCONT)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        send(self.pids, signal.SIGCONT)


class FileSizeLimit:
    """RLIMIT_FSIZE of a running process (ours): ``apply(bytes)``, then ``lift()`` restores it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.saved = resource.prlimit(pid, resource.RLIMIT_FSIZE)

    def apply(self, limit_bytes: int) -> None:
        resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (limit_bytes, self.saved[1]))

    def lift(self) -> None:
        try:
            resource.prlimit(self.pid, resource.RLIMIT_FSIZE, self.saved)
        except ProcessLookupError:
            pass


def rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` from /proc (None if it is gone)."""
    try:
        for line in open(f"/proc/{pid}/status"):  # noqa: SIM115 - tiny file, closed by GC at once
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
