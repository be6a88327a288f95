"""What every benchmark shares: the repository root, the results writer (``reporting.results_io``,
where the profiler finds it too without importing a benchmark), and processes' CPU time."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reporting.results_io import environment, write_results

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")

__all__ = ["ROOT", "cpu_s", "environment", "stop_process", "write_results"]


def cpu_s(pids: Iterable[int]) -> float:
    """User + system CPU seconds of these processes so far (threads included; /proc/<pid>/stat
    fields 14 and 15); a process that is gone counts 0."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def stop_process(proc: subprocess.Popen[Any], grace_s: float) -> str:
    """SIGTERM, then SIGKILL if ``proc`` has not exited ``grace_s`` later; says which ended it."""
    if proc.poll() is not None:
        return f"had exited ({proc.returncode})"
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
        return "stopped by SIGTERM"
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return f"killed: still running {grace_s:g} s after SIGTERM (what it started may still run)"


HALT_POLL = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
CPUIDLE_DRIVER = Path("/sys/devices/system/cpu/cpuidle/current_driver")


def cpu_idle_settings() -> dict[str, str | int | None]:
    """How this machine's idle CPUs wait: the cpuidle driver, and on a KVM guest with ``haltpoll``
    how long an idle CPU polls before it halts (0: it halts at once, and waking it takes a trip
    through the hypervisor).  None where the file does not exist."""
    def read(path: Path) -> str | None:
        try:
            return path.read_text().strip()
        except OSError:
            return None

    poll = read(HALT_POLL)
    return {"cpuidle_driver": read(CPUIDLE_DRIVER), "guest_halt_poll_ns": int(poll) if poll and poll.isdigit() else None}
