"""Each fault scenario: inject one fault under the running mixed load, wait for the platform to
recover, and check the outcome it is expected to have.  A check that fails is recorded as failed,
with what was measured; it is never loosened to pass (issue 16: some outcomes need pieces other
work adds: per-try timeouts and outlier ejection of hung replicas, overload shedding).

Expected outcomes (the ``expected`` text of each scenario says the same):

- a Triton replica / a whole pool SIGKILLed: 0 accepted requests lost; restarted by the supervisor.
- a Triton replica / a whole pool SIGSTOPped: 0 lost; it is ejected within ``EJECT_S``: no request
  is held longer than ``EJECT_S + HELD_S``, and the load keeps flowing.
- Envoy SIGKILLed: restarted within 10 s; requests are refused (not accepted) while it is down;
  only the requests in flight at the kill can be lost (at most one per load worker).
- Envoy SIGSTOPped: its liveness probe fails, it is killed and restarted within the hang timeout
  + 10 s; again only requests in flight can be lost.
- the control server SIGKILLed / SIGSTOPped: 0 lost (Envoy keeps its last config); restarted (a
  stopped one once its liveness probe times out); it resumes the persisted weights and Envoy ACKs it.
- a slow pool (stopped 80 % of the time): 0 lost; gold traffic leaves it within ``SLOW_MOVE_S``.
- the state file's disk full: 0 lost; the control server keeps running and says so in /status;
  the state file stays whole; saving resumes once there is room.
"""

from __future__ import annotations

import json
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.faults.faults import DutyCycle, FileSizeLimit, rss_bytes, send
from benchmarks.faults.load import MixedLoad, Request
from local_platform.platform import LocalPlatform, http_json

EJECT_S = 3.0  # a hung replica must be out of rotation this long after it stopped
HELD_S = 2.0  # ... so no request that starts later takes longer than this
SLOW_MOVE_S = 10.0
ENVOY_RESTART_S = 10.0
CONTROL_RESTART_S = 10.0


@dataclass
class Result:
    name: str
    fault: str
    expected: str
    started_s: float = 0.0
    ended_s: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    lost_examples: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c["ok"] for c in self.checks)

    def check(self, ok: bool, text: str) -> None:
        self.checks.append({"ok": bool(ok), "check": text})

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "fault": self.fault, "expected": self.expected, "passed": self.passed,
                "window_s": [round(self.started_s, 1), round(self.ended_s, 1)], "counts": self.counts,
                "measured": self.measured, "checks": self.checks, "lost_examples": self.lost_examples}


class FaultBench:
    """The running platform, its load, the marks of every fault for the timeline, and the control
    server's memory sampled every second."""

    def __init__(self, platform: LocalPlatform, load: MixedLoad) -> None:
        self.platform, self.load = platform, load
        self.marks: list[tuple[float, str]] = []
        self.last_end_s = 0.0  # the previous scenario's end: windows do not reach back past it
        self.memory: list[tuple[float, int, int]] = []  # (t_s, rss bytes, pid)
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, name="rss", daemon=True)

    def start(self) -> FaultBench:
        self._sampler.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._sampler.join(timeout=5)

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            pid = self.platform.control_child.pid if self.platform.control_child else None
            rss = rss_bytes(pid) if pid else None
            if pid and rss:
                self.memory.append((round(self.load.now(), 1), rss, pid))

    def mark(self, label: str) -> float:
        t = self.load.now()
        self.marks.append((round(t, 2), label))
        print(f"  [{t:7.1f} s] {label}", flush=True)
        return t

    # -- waiting ----------------------------------------------------------------------------
    @staticmethod
    def until(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.1) -> float | None:
        """Seconds until ``predicate`` held, None if it did not within ``timeout_s``."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            try:
                if predicate():
                    return round(time.monotonic() - start, 2)
            except Exception:  # noqa: S110 - a probe of a recovering platform may fail: poll again
                pass
            time.sleep(poll_s)
        return None

    def restarts(self, name: str) -> int:
        rec = self.platform.lifecycle.record(name)
        return rec.restarts if rec else 0

    def running(self, name: str) -> bool:
        rec = self.platform.lifecycle.record(name)
        return rec is not None and rec.state == "running"

    def all_healthy(self) -> bool:
        p = self.platform
        procs = [r for r in p.lifecycle.records() if r.kind != "pool" and r.state != "stopped"]
        return (all(r.state == "running" for r in procs) and all(r.alive and r.ready for r in p.supervisor.replicas())
                and p._answers(f"{p.admin_url}/healthz") and p._envoy_acked())

    def settle(self, timeout_s: float = 90.0) -> None:
        """Between scenarios: every process running and ready, Envoy on the current snapshot,
        requests succeeding again."""
        if self.until(self.all_healthy, timeout_s) is None:
            print("  (the platform did not settle in time; the next scenario runs anyway)", flush=True)
        self.load.wait_ok(20, timeout_s=30)

    def close(self, result: Result, start_s: float, settle_s: float = 3.0) -> Result:
        """Count the window's outcomes (from a few seconds before the fault: requests in flight
        when it struck count; not before the previous scenario ended) once the load has run
        ``settle_s`` more."""
        time.sleep(settle_s)
        result.started_s, result.ended_s = start_s, self.load.now()
        window = self.load.window(max(start_s - 5.0, self.last_end_s), result.ended_s)
        self.last_end_s = result.ended_s
        result.counts = dict(Counter(r.outcome for r in window))
        for outcome in ("ok", "lost", "refused", "shed"):
            result.counts.setdefault(outcome, 0)
        # when each lost request started (relative to the fault) and how long it waited: tells a
        # request in flight at the fault from one sent after it
        result.lost_examples = [f"sent at fault{r.t_s - start_s:+.2f} s, failed after {r.latency_s:.2f} s: "
                                f"{r.proto} {r.model}/{r.tier}: {r.detail}"
                                for r in sorted(window, key=lambda r: r.t_s) if r.outcome == "lost"][:12]
        gold = sorted(r.latency_s for r in window if r.tier == "gold" and r.outcome == "ok")
        if gold:
            result.measured["gold_p99_ms"] = round(1000 * gold[min(len(gold) - 1, int(0.99 * len(gold)))], 1)
        return result

    def serving_pool(self, model: str, tier: str) -> str:
        for r in self.platform.status()["routes"]:
            if r["model"] == model and r["tier"] == tier:
                return max(r["weights"], key=lambda p: r["weights"][p])
        raise KeyError(f"no route {model}/{tier}")

    def routes_on(self, pool: str) -> list[str]:
        """``model/tier`` of every route giving ``pool`` weight now."""
        return [f"{r['model']}/{r['tier']}" for r in self.platform.status()["routes"] if r["weights"].get(pool, 0) > 0]

    def weight(self, model: str, tier: str, pool: str) -> int:
        for r in self.platform.status()["routes"]:
            if r["model"] == model and r["tier"] == tier:
                return int(r["weights"].get(pool, 0))
        raise KeyError(f"no route {model}/{tier}")


def data_plane_facts(envoy_admin: str) -> dict[str, bool]:
    """What the running Envoy was given that the hung-replica scenarios depend on (from its
    config_dump, not from what the settings say they would build)."""
    import urllib.request

    with urllib.request.urlopen(f"{envoy_admin}/config_dump", timeout=10) as r:  # noqa: S310 - loopback
        dump = r.read().decode()
    return {"per_try_timeout": "per_try_timeout" in dump, "per_try_idle_timeout": "per_try_idle_timeout" in dump,
            "hedge_policy": "hedge_policy" in dump, "outlier_detection": "outlier_detection" in dump,
            "consecutive_gateway_failure": "consecutive_gateway_failure" in dump}


def _lost(result: Result) -> int:
    return result.counts.get("lost", 0)


# -- Triton -----------------------------------------------------------------------------------
def _target_pool(b: FaultBench, whole_pool: bool) -> str:
    """The pool serving gold digits_classifier now (the issue's "busiest pool": what gold loses if
    the platform gets this wrong).  For one replica, that pool when it has several replicas (the
    benchmark runs the CPU and GPU pools at 2), else the pool with most replicas that carries traffic."""
    gold = b.serving_pool("digits_classifier", "gold")
    if whole_pool or len(b.platform.supervisor.processes(gold)) > 1:
        return gold
    carrying = [p.name for p in b.platform.fleet.pools if b.routes_on(p.name)]
    return max(carrying, key=lambda name: len(b.platform.supervisor.processes(name)))


def _carries_traffic(b: FaultBench, res: Result, pool: str) -> None:
    routes = b.routes_on(pool)
    res.measured["target_routes"] = len(routes)
    res.check(bool(routes), f"the target pool {pool} carried traffic at the fault ({', '.join(routes) or 'no route'})")


def triton_sigkill(b: FaultBench, whole_pool: bool) -> Result:
    pool = _target_pool(b, whole_pool)
    procs = b.platform.supervisor.processes(pool)
    victims = procs if whole_pool else procs[:1]
    name = "pool-sigkill" if whole_pool else "replica-sigkill"
    res = Result(name, f"SIGKILL {'every replica of pool ' + pool if whole_pool else victims[0].name} "
                       f"(of {len(procs)})",
                 "0 accepted requests lost; the supervisor restarts it")
    before = {p.name: b.restarts(p.name) for p in victims}
    _carries_traffic(b, res, pool)
    t = b.mark(f"{name}: SIGKILL {', '.join(p.name for p in victims)}")
    send([p.pid for p in victims if p.pid], signal.SIGKILL)
    took = b.until(lambda: all(b.restarts(n) > before[n] and b.running(n) for n in before), 120)
    res.measured["restarted_s"] = took
    b.load.wait_ok(20)
    res = b.close(res, t)
    res.check(_lost(res) == 0, f"0 accepted requests lost (lost {_lost(res)} of {sum(res.counts.values())})")
    res.check(took is not None, f"restarted ({took} s)")
    return res


def triton_sigstop(b: FaultBench, whole_pool: bool, stop_s: float = 15.0) -> Result:
    pool = _target_pool(b, whole_pool)
    procs = b.platform.supervisor.processes(pool)
    victims = procs if whole_pool else procs[:1]
    name = "pool-sigstop" if whole_pool else "replica-sigstop"
    res = Result(name, f"SIGSTOP {'every replica of pool ' + pool if whole_pool else victims[0].name} for "
                       f"{stop_s:.0f} s, then SIGCONT",
                 f"0 lost; ejected within {EJECT_S:.0f} s: no request held > {EJECT_S + HELD_S:.0f} s")
    pids = [p.pid for p in victims if p.pid]
    _carries_traffic(b, res, pool)
    t = b.mark(f"{name}: SIGSTOP {', '.join(p.name for p in victims)}")
    send(pids, signal.SIGSTOP)
    try:
        time.sleep(stop_s)
    finally:
        send(pids, signal.SIGCONT)
    t_cont = b.mark(f"{name}: SIGCONT")
    b.load.wait_ok(20)
    res = b.close(res, t, settle_s=5.0)
    # Held: a request in flight at the stop or sent during it that took longer than the ejection
    # deadline plus the bound (it waited for the stopped process instead of going elsewhere).
    during = [r for r in b.load.window(t - 5.0, t_cont) if r.outcome != "refused"]
    held = [r for r in during if r.latency_s > EJECT_S + HELD_S or r.outcome == "lost"]
    later = b.load.window(t + EJECT_S, t_cont)
    expected = b.load.rate_rps * (t_cont - t - EJECT_S)
    res.measured["held_requests"] = len(held)
    res.measured["max_latency_s"] = round(max((r.latency_s for r in during), default=0.0), 2)
    res.measured["sent_after_eject_deadline"] = f"{len(later)} of ~{expected:.0f} at the load's rate"
    res.check(_lost(res) == 0, f"0 accepted requests lost (lost {_lost(res)} of {sum(res.counts.values())})")
    res.check(not held, f"ejected within {EJECT_S:.0f} s: no request held > {EJECT_S + HELD_S:.0f} s "
                        f"({len(held)} held, the longest {res.measured['max_latency_s']} s)")
    res.check(len(later) >= 0.5 * expected, f"the load kept flowing after the ejection deadline ({len(later)} sent, "
                                            f"~{expected:.0f} expected)")
    return res


def slow_pool(b: FaultBench, slow_s: float = 30.0, stopped_ms: float = 80.0) -> Result:
    pool = b.serving_pool("digits_classifier", "gold")
    res = Result("slow-pool", f"pool {pool} stopped {stopped_ms:.0f} ms of every 100 ms for {slow_s:.0f} s",
                 f"0 lost; gold digits_classifier traffic leaves the slow pool within {SLOW_MOVE_S:.0f} s")
    pids = [p.pid for p in b.platform.supervisor.processes(pool) if p.pid]
    t = b.mark(f"slow-pool: {pool} slowed")
    cycle = DutyCycle(pids, stopped_ms=stopped_ms).start()
    try:
        moved = b.until(lambda: b.weight("digits_classifier", "gold", pool) == 0, slow_s, poll_s=0.25)
        remaining = slow_s - (b.load.now() - t)
        if remaining > 0:
            time.sleep(remaining)
    finally:
        cycle.stop()
    b.mark(f"slow-pool: {pool} at full speed")
    res.measured["gold_moved_off_s"] = moved
    b.load.wait_ok(20)
    res = b.close(res, t)
    res.check(_lost(res) == 0, f"0 accepted requests lost (lost {_lost(res)} of {sum(res.counts.values())})")
    res.check(moved is not None and moved <= SLOW_MOVE_S, f"gold moved off within {SLOW_MOVE_S:.0f} s ({moved} s)")
    return res


# -- Envoy ------------------------------------------------------------------------------------
def envoy_fault(b: FaultBench, sig: signal.Signals) -> Result:
    child = b.platform.envoy_child
    assert child is not None and child.pid is not None
    hang = b.platform.hang_timeout_s
    bound = ENVOY_RESTART_S if sig is signal.SIGKILL else hang + ENVOY_RESTART_S
    name = f"envoy-{sig.name.lower()}"
    res = Result(name, f"{sig.name} Envoy (pid {child.pid})",
                 f"restarted within {bound:.0f} s; connections refused while down; only requests in flight "
                 f"at the fault lost (<= {b.load.in_flight_bound()}, one per load worker)")
    before = b.restarts("envoy")
    t = b.mark(f"{name}: {sig.name} Envoy")
    send([child.pid], sig)
    took = b.until(lambda: b.restarts("envoy") > before and b.running("envoy"), bound + 30)
    res.measured["restarted_s"] = took
    rec = b.platform.lifecycle.record("envoy")
    if rec is not None and rec.last_exit_unix_s is not None:  # the supervisor's kill (hung) or the death it saw
        died_at = b.load.now() - (time.time() - rec.last_exit_unix_s)
        res.measured["envoy_killed_at_s"] = round(died_at - t, 2)
        res.measured["sent_after_kill_refused"] = b.load.reclassify_sent_to_dead(died_at)
    serving = b.until(lambda: b.platform._envoy_acked(), 30)
    ok_again = b.load.wait_ok(20)
    res.measured["serving_again_s"] = round(b.load.now() - t, 1) if ok_again else None
    res = b.close(res, t)
    res.check(took is not None and took <= bound, f"restarted within {bound:.0f} s ({took} s)")
    res.check(serving is not None and ok_again, "serving again (Envoy ACKed the snapshot, requests succeed)")
    res.check(_lost(res) <= b.load.in_flight_bound(),
              f"lost <= in flight at the fault ({_lost(res)} <= {b.load.in_flight_bound()}); refused {res.counts['refused']}")
    return res


# -- the control server -----------------------------------------------------------------------
def control_fault(b: FaultBench, sig: signal.Signals) -> Result:
    child = b.platform.control_child
    assert child is not None and child.pid is not None
    hang = b.platform.hang_timeout_s
    bound = CONTROL_RESTART_S if sig is signal.SIGKILL else hang + CONTROL_RESTART_S
    name = f"control-{sig.name.lower()}"
    res = Result(name, f"{sig.name} the control server (pid {child.pid})",
                 f"0 lost; restarted within {bound:.0f} s with the persisted weights; Envoy ACKs the new server")
    persisted = json.loads(Path(b.platform.state_path).read_text())  # type: ignore[arg-type]
    before = b.restarts("control-server")
    t = b.mark(f"{name}: {sig.name} the control server")
    send([child.pid], sig)
    took = b.until(lambda: b.restarts("control-server") > before and b.running("control-server"), bound + 30)
    res.measured["restarted_s"] = took
    acked = b.until(b.platform._envoy_acked, 30)
    resumed = None
    try:
        resumed = b.platform.status().get("resumed")
    except OSError:
        pass
    b.load.wait_ok(20)
    res = b.close(res, t)
    res.check(_lost(res) == 0, f"0 accepted requests lost (lost {_lost(res)} of {sum(res.counts.values())})")
    res.check(took is not None and took <= bound, f"restarted within {bound:.0f} s ({took} s)")
    same = resumed is not None and {(r["model"], r["tier"]): r["weights"] for r in resumed.get("weights", [])} == \
        {(r["model"], r["tier"]): r["weights"] for r in persisted["routes"]}
    res.check(same, "resumed exactly the persisted weights")
    res.check(acked is not None, f"Envoy ACKed the restarted server ({acked} s)")
    return res


def state_disk_full(b: FaultBench, full_s: float = 15.0, limit_bytes: int = 512) -> Result:
    child = b.platform.control_child
    assert child is not None and child.pid is not None
    state = Path(b.platform.state_path)  # type: ignore[arg-type]
    res = Result("state-disk-full", f"RLIMIT_FSIZE {limit_bytes} B on the control server for {full_s:.0f} s "
                                    f"(its state file is {state.stat().st_size} B)",
                 "0 lost; the server keeps routing and names the failed save in /status; the state file stays "
                 "whole; saving resumes when there is room")
    pid = child.pid
    before_text = state.read_text()
    before_version = json.loads(before_text)["version"]
    limit = FileSizeLimit(pid)
    t = b.mark("state-disk-full: file size limit on the control server")
    limit.apply(limit_bytes)
    try:
        seen = b.until(lambda: "state store" in (b.platform.status().get("last_error") or ""), full_s + 15)
        res.measured["failed_save_shown_s"] = seen
        remaining = full_s - (b.load.now() - t)
        if remaining > 0:
            time.sleep(remaining)
        during = state.read_text()
    finally:
        limit.lift()
    b.mark("state-disk-full: room again")
    intact = False
    try:
        intact = json.loads(during)["version"] == before_version
    except (ValueError, KeyError):
        pass
    resumed = b.until(lambda: json.loads(state.read_text())["version"] > before_version
                      and "state store" not in (b.platform.status().get("last_error") or ""), 30)
    res.measured["save_resumed_s"] = resumed
    b.load.wait_ok(20)
    res = b.close(res, t)
    res.check(_lost(res) == 0, f"0 accepted requests lost (lost {_lost(res)} of {sum(res.counts.values())})")
    res.check(child.pid == pid, "the control server kept running (same process)")
    res.check(seen is not None, f"/status named the failed save ({seen} s)")
    res.check(intact, "the state file stayed whole (the last good record, valid JSON)")
    res.check(resumed is not None, f"saving resumed once there was room ({resumed} s)")
    return res


def memory_growth(samples: list[tuple[float, int, int]], start_s: float, end_s: float, edge_s: float = 60.0
                  ) -> dict[str, Any]:
    """Control server RSS growth over a soak: median of the last ``edge_s`` over the median of the
    first ``edge_s`` (medians: a single GC pause or burst does not decide it).  One process only:
    a restart in between makes the figure meaningless, and it says so."""
    inside = [s for s in samples if start_s <= s[0] <= end_s]
    if len(inside) < 4:
        return {"growth": None, "why": "too few samples"}
    pids = {s[2] for s in inside}
    first = [s[1] for s in inside if s[0] <= start_s + edge_s]
    last = [s[1] for s in inside if s[0] >= end_s - edge_s]
    growth = statistics.median(last) / statistics.median(first) - 1
    return {"growth": round(growth, 4), "first_mb": round(statistics.median(first) / 2**20, 1),
            "last_mb": round(statistics.median(last) / 2**20, 1), "max_mb": round(max(s[1] for s in inside) / 2**20, 1),
            "control_pids": sorted(pids), "why": "" if len(pids) == 1 else "the control server restarted during the soak"}


def lost_in(load: MixedLoad, start_s: float, end_s: float) -> list[Request]:
    return [r for r in load.window(start_s, end_s) if r.outcome == "lost"]


def status_of(platform: LocalPlatform) -> dict[str, Any]:
    return http_json(f"{platform.admin_url}/status", timeout_s=5)  # type: ignore[no-any-return]
