"""What the local platform's supervisors share: the restart backoff and the record of every
process's life (started, died, restarted, stopped), which ``make up`` prints and ``make status`` reads.

One record for every kind of process (Triton replicas, Envoy, the control server) so that an
operator asks one place "did anything die?", and so that the order of a shutdown can be checked
from the events rather than guessed from logs.  The record is a JSON file rewritten atomically on
every event (``processes.json``: one summary per process) plus an append-only ``events.jsonl``;
both live in the platform's work folder, so they outlive the control server and survive its
restarts.

Backoff: a process that dies is restarted at once; one that keeps dying waits 0.5 s, 1 s, 2 s ...
up to ``max_s`` before each further try; a process that stayed up for ``stable_after_s`` counts as
healthy again (the shape of Kubernetes' CrashLoopBackOff, shorter because a local restart costs
seconds, not minutes, and the first restart is not delayed: a crash is not yet a loop).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BackoffPolicy:
    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0
    stable_after_s: float = 30.0  # up this long: the next failure is a first failure again

    def __post_init__(self) -> None:
        if self.initial_s < 0 or self.factor < 1 or self.max_s < self.initial_s or self.stable_after_s <= 0:
            raise ValueError(f"backoff: need 0 <= initial_s <= max_s, factor >= 1, stable_after_s > 0; got {self}")

    def delay_s(self, consecutive_failures: int) -> float:
        """Seconds to wait before the restart after death number ``consecutive_failures``
        (1: the first death: at once; 2: ``initial_s``; then times ``factor`` up to ``max_s``)."""
        if consecutive_failures <= 1:
            return 0.0
        return float(min(self.max_s, self.initial_s * self.factor ** (consecutive_failures - 2)))

    def failures_after(self, previous_failures: int, uptime_s: float) -> int:
        """The consecutive-failure count once a process that ran ``uptime_s`` died."""
        return 1 if uptime_s >= self.stable_after_s else previous_failures + 1


def describe_exit(returncode: int | None) -> str:
    """``-9`` -> ``killed by SIGKILL``; ``1`` -> ``exit 1``; None -> ``running``."""
    if returncode is None:
        return "running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit {returncode}"


@dataclass(frozen=True)
class ProcessRecord:
    """One supervised process as ``make status`` shows it.  Times are Unix seconds."""

    name: str  # e.g. ``cpu-0``, ``envoy``, ``control-server``
    kind: str  # ``triton``, ``envoy``, ``control-server``, ``prometheus``
    state: str = "starting"  # starting | running | restarting | stopping | stopped | failed
    pid: int | None = None
    started_unix_s: float | None = None
    restarts: int = 0
    last_exit: str | None = None  # describe_exit() of the last unplanned exit
    last_exit_unix_s: float | None = None
    last_restart_unix_s: float | None = None
    note: str = ""


@dataclass(frozen=True)
class ProcessEvent:
    unix_s: float
    name: str
    kind: str
    event: str  # started | died | hung | restarted | restart-failed | draining | drained | stopping | stopped
    detail: str = ""
    pid: int | None = None


EventListener = Callable[[ProcessEvent], None]


@dataclass
class Lifecycle:
    """Thread-safe record of every process's life.  ``folder``: where processes.json and
    events.jsonl are written (None: in memory only, for tests of the supervisors)."""

    folder: Path | None = None
    clock: Callable[[], float] = time.time
    _records: dict[str, ProcessRecord] = field(default_factory=dict)
    _events: list[ProcessEvent] = field(default_factory=list)
    _listeners: list[EventListener] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_listener(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    def event(self, name: str, kind: str, event: str, detail: str = "", pid: int | None = None,
              returncode: int | None = None) -> ProcessEvent:
        """Record one event and update the process's summary from it."""
        now = self.clock()
        ev = ProcessEvent(round(now, 3), name, kind, event, detail, pid)
        with self._lock:
            rec = self._records.get(name) or ProcessRecord(name=name, kind=kind)
            rec = self._apply(rec, ev, returncode)
            self._records[name] = rec
            self._events.append(ev)
            del self._events[:-2000]  # bounded: a crash loop must not grow memory without end
            self._write(ev)
        for listener in list(self._listeners):
            try:
                listener(ev)
            except Exception:  # noqa: S110 - a printer must not break supervision
                pass
        return ev

    @staticmethod
    def _apply(rec: ProcessRecord, ev: ProcessEvent, returncode: int | None) -> ProcessRecord:
        pid = ev.pid if ev.pid is not None else rec.pid
        if ev.event == "started":
            return replace(rec, state="running", pid=pid, started_unix_s=ev.unix_s, note="")
        if ev.event in ("died", "hung"):
            exit_text = describe_exit(returncode) if ev.event == "died" else "hung (no answer)"
            return replace(rec, state="restarting", last_exit=exit_text, last_exit_unix_s=ev.unix_s, note=ev.detail)
        if ev.event == "restarted":
            return replace(rec, state="running", pid=pid, started_unix_s=ev.unix_s, restarts=rec.restarts + 1,
                           last_restart_unix_s=ev.unix_s, note="")
        if ev.event == "restart-failed":
            return replace(rec, state="restarting", note=ev.detail)
        if ev.event == "gave-up":
            return replace(rec, state="failed", note=ev.detail)
        if ev.event in ("stopping", "draining"):
            return replace(rec, state="stopping")
        if ev.event == "stopped":
            return replace(rec, state="stopped", note=ev.detail)
        return rec

    def _write(self, ev: ProcessEvent) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "events.jsonl", "a") as f:
            f.write(json.dumps(asdict(ev)) + "\n")
        data = {"updated_unix_s": ev.unix_s, "owner_pid": os.getpid(),
                "processes": [asdict(r) for r in self._records.values()]}
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix="processes.json", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, self.folder / "processes.json")

    def records(self) -> list[ProcessRecord]:
        with self._lock:
            return list(self._records.values())

    def record(self, name: str) -> ProcessRecord | None:
        with self._lock:
            return self._records.get(name)

    def events(self, name: str | None = None) -> list[ProcessEvent]:
        with self._lock:
            return [e for e in self._events if name is None or e.name == name]


def read_processes(folder: Path) -> list[dict[str, Any]]:
    """The summaries a running (or stopped) platform wrote; [] when there are none."""
    try:
        data = json.loads((folder / "processes.json").read_text())
    except FileNotFoundError:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("processes"), list):
        raise ValueError(f"{folder / 'processes.json'}: expected {{'processes': [...]}}")
    return list(data["processes"])


def read_events(folder: Path) -> list[dict[str, Any]]:
    try:
        lines = (folder / "events.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _started_unix_s(pid: int) -> float | None:
    """When ``pid`` started (from /proc), or None when it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, IndexError, StopIteration, ValueError):
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def leftovers(folder: Path) -> tuple[int | None, list[tuple[str, int]]]:
    """Processes a previous platform in ``folder`` started and left running because it was killed
    (its ``owner_pid`` is gone): -> (owner pid, [(name, pid)]).  A pid counts only if the process
    now holding it started no later than its record says (not a pid reused since)."""
    try:
        data = json.loads((folder / "processes.json").read_text())
    except (OSError, ValueError):
        return None, []
    owner = data.get("owner_pid") if isinstance(data, dict) else None
    if not isinstance(owner, int) or owner == os.getpid() or _alive(owner):
        return owner if isinstance(owner, int) else None, []
    out = []
    for rec in data.get("processes") or []:
        pid, started = rec.get("pid"), rec.get("started_unix_s")
        if rec.get("state") in ("stopped", "failed") or not isinstance(pid, int) or started is None:
            continue
        began = _started_unix_s(pid) if _alive(pid) else None
        if began is not None and began <= float(started) + 1.0:
            out.append((str(rec.get("name")), pid))
    return owner, out


def reap_leftovers(folder: Path, grace_s: float = 5.0) -> tuple[int | None, list[tuple[str, int]]]:
    """Stop what :func:`leftovers` finds (SIGTERM, then SIGKILL after ``grace_s``); -> what it stopped."""
    owner, found = leftovers(folder)
    for _name, pid in found:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while any(_alive(pid) for _, pid in found) and time.monotonic() < deadline:
        time.sleep(0.1)
    for _name, pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return owner, found
