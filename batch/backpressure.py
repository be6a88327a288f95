"""How fast a worker may send: spare capacity from the control plane, and AIMD on what it sees.

Two signals, because neither is enough alone:

1. **Spare capacity** (the control plane's view, ``spare_capacity``).  For each pool that carries
   the batch tier's weight for the job's model, or would take it were the demand higher (weight 0,
   reason ``not_needed``: the policy fills pools cost-first, so a batch that paced itself to the
   pools already carrying it would never be given the next one; with a pool the tiers share, that
   kept a job to the one cheapest pool, at 0.4x of the spare capacity, where 1.0x was measured
   without sharing), the routing policy's capacity table gives what a
   replica sustains (``throughput_per_replica``, full batches) and the busiest it may be planned
   (``max_utilisation``).  Gold and silver demand placed on the pool by the routes in force (each
   route's demand x the pool's share of its weight, over every model the pool serves) uses part of
   it; the rest is spare, in rows/s of the job's model.  When gold and silver need it all, the
   worker pauses.  An emulated pool's throughput is derated by its measured lag (a host slower
   than the profile cannot deliver the profile's rate).  Measurement wins over the model: a pool
   carrying gold or silver (and not the batch itself) whose measured p99 passes the tier's bound
   pauses the batch, near it (0.8x) halves what is in flight at every reading; a pause that has
   not brought the p99 back within ``guard_max_pause_s`` was not the batch's doing, and the
   batch goes on at one request in flight.  The batch tier's own demand is not subtracted: it is what the spare is for.
2. **What the requests say** (``Throttle``): rejections (429/503/RESOURCE_EXHAUSTED) and timeouts
   halve the number of requests in flight and back off (exponential, jittered); successes add one
   back per round.  A batch whose latency passes half the per-try timeout shrinks the batch size,
   so batches stay inside the timeout; fast ones let it grow back to the model's maximum.

The spare capacity is what the batch takes: requests are paced so that rows/s stays at it (a
request of ``n`` rows leaves ``n / spare`` seconds after the one before), batches hold at most
one second of it, and the in-flight limit is capped at ``ceil(spare x latency / batch)`` with
``batch`` the rows a request carries as sent.  The
throttle starts at one request in flight (slow start) and grows from there.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Headroom:
    """``spare_rows_per_s``: None when unknown (no control plane answer): the throttle alone decides.
    ``guard``: the pause (or slow-down) comes from a stricter tier's measured p99, not the model."""

    spare_rows_per_s: float | None
    pause: bool = False
    reason: str = ""
    by_pool: Mapping[str, float] | None = None
    slow: bool = False  # a stricter tier's measured p99 nears its bound: halve what is in flight
    guard: bool = False


UNKNOWN = Headroom(None, False, "control plane status unknown: AIMD on the requests' outcomes only")


def effective_throughput(x: float, full_batch_ms: float | None, lag_ms: float | None) -> float:
    """A replica's throughput derated by its measured emulation lag: an emulated pool on a host
    slower than its profile executes a full batch in ``full_batch_ms + lag_ms``, not
    ``full_batch_ms`` (the lag is the mean over the batches it actually ran: an approximation)."""
    if not full_batch_ms or not lag_ms or lag_ms <= 0:
        return x
    return x * full_batch_ms / (full_batch_ms + lag_ms)


def spare_capacity(status: Mapping[str, Any], *, model: str, tier: str,
                   throughput_per_replica: Mapping[tuple[str, str], float], max_utilisation: float,
                   total_weight: int = 100, tier_bounds_ms: Mapping[str, float | None] | None = None,
                   slow_at: float = 0.8, full_batch_ms: Mapping[tuple[str, str], float] | None = None) -> Headroom:
    """Spare capacity for ``model`` at ``tier`` from the control server's ``/status`` (module docstring).

    ``throughput_per_replica[(pool, model)]``: req/s one replica sustains (the routing policy's
    capacity table), derated by the pool's measured emulation lag when ``full_batch_ms`` (the
    profile's time for that full batch) is given.  A route's demand is read from its
    ``demand_per_s`` (the policy's estimate); a status without it counts the pool's measured
    request rate of that model as interactive (conservative: it includes the batch's own requests)."""
    pools = {p["name"]: p for p in status.get("pools", [])}
    routes = status.get("routes", [])
    mine = next((r for r in routes if r["model"] == model and r["tier"] == tier), None)
    if mine is None:
        return Headroom(0.0, True, f"no route for {model}/{tier}: nothing can serve the job now")
    batch_ms = full_batch_ms or {}

    def x_eff(pool: str, m: str) -> float:
        x = throughput_per_replica.get((pool, m)) or 0.0
        lag = ((pools.get(pool) or {}).get("metrics", {}).get(m) or {}).get("emulation_lag_ms")
        return effective_throughput(x, batch_ms.get((pool, m)), lag)

    used: dict[str, float] = {}  # pool -> utilisation by the other tiers
    measured_fallback: set[tuple[str, str]] = set()
    for r in routes:
        if r["tier"] == tier:
            continue
        for pool, weight in r["weights"].items():
            p = pools.get(pool)
            x = x_eff(pool, r["model"])
            if not weight or p is None or not x or not p.get("ready_replicas"):
                continue
            demand = r.get("demand_per_s")
            if demand is None:
                rate = p.get("metrics", {}).get(r["model"], {}).get("request_rate_per_s", 0.0) or 0.0
                if (pool, r["model"]) in measured_fallback:
                    continue  # the pool's measured rate covers every tier at once
                measured_fallback.add((pool, r["model"]))
                demand_on_pool = rate
            else:
                demand_on_pool = demand * weight / total_weight
            used[pool] = used.get(pool, 0.0) + demand_on_pool / (p["ready_replicas"] * x)
    by_pool: dict[str, float] = {}
    kinds = mine.get("reason_kinds") or {}
    for pool, weight in mine["weights"].items():
        p = pools.get(pool)
        x = x_eff(pool, model)
        would_take = kinds.get(pool) == "not_needed"  # feasible; the next to fill as the demand grows
        if not (weight or would_take) or p is None or not x or p.get("draining"):
            continue
        ready = p.get("ready_replicas", 0)
        by_pool[pool] = max(0.0, max_utilisation - used.get(pool, 0.0)) * ready * x
    spare = sum(by_pool.values())
    if spare <= 0:
        busy = ", ".join(f"{p} {used.get(p, 0.0):.0%}" for p in mine["weights"] if mine["weights"][p])
        return Headroom(0.0, True, f"gold/silver need the pools ({busy or 'no ready pool'})", by_pool)
    guard = _stricter_tiers_p99(pools, routes, tier, mine["weights"], tier_bounds_ms or {}, slow_at)
    if guard is not None:
        over, why = guard
        return Headroom(spare, over, why, by_pool, slow=not over, guard=True)
    return Headroom(spare, False, f"spare {spare:.1f} rows/s on {', '.join(sorted(by_pool))}", by_pool)


def _stricter_tiers_p99(pools: Mapping[str, Any], routes: list[Any], tier: str, mine: Mapping[str, int],
                        bounds: Mapping[str, float | None], slow_at: float) -> tuple[bool, str] | None:
    """Measurement wins over the model: a pool carrying a bounded tier whose measured p99 (Envoy)
    is over its bound pauses the batch (True), over ``slow_at`` x the bound slows it (False);
    -> (over, why), or None.

    Pools that carry the batch tier's own weight are left out: their measured p99 mixes in the
    batch's own large requests (Envoy measures per pool, not per tier), and the batch would be
    pausing for itself.  A guard pause that does not bring the p99 back is not the batch's doing;
    ``Throttle`` then lets the batch go on at its minimum (``guard_max_pause_s``)."""
    worst: tuple[float, str] | None = None
    for r in routes:
        bound = bounds.get(r["tier"])
        if r["tier"] == tier or not bound:
            continue
        for pool, weight in r["weights"].items():
            if not weight or mine.get(pool):
                continue
            p99 = (pools.get(pool, {}).get("metrics", {}).get(r["model"], {}) or {}).get("p99_ms")
            if p99 is not None and p99 > slow_at * bound:
                ratio = p99 / bound
                if worst is None or ratio > worst[0]:
                    worst = (ratio, f"{r['tier']} p99 {p99:.0f} ms on {pool} ({ratio:.0%} of its {bound:g} ms bound)")
    return None if worst is None else (worst[0] > 1.0, worst[1])


@dataclass(frozen=True)
class ThrottleSettings:
    max_in_flight: int = 8
    max_batch: int = 32
    min_batch: int = 1
    per_try_timeout_s: float = 10.0
    backoff_min_s: float = 0.25
    backoff_max_s: float = 10.0
    # A pause for a stricter tier's measured p99 that has not brought it back within this long
    # is not the batch's doing (the tier misses without it): go on at one request in flight.
    guard_max_pause_s: float = 45.0
    # A measured p99 over a one-second window of a few requests flickers: a guard pause holds
    # this long after the last reading that asked for it.
    guard_hold_s: float = 10.0
    # Requests are paced so the batch's rows/s stays at the spare capacity, in batches of at most
    # this many seconds of it.
    pace_s: float = 1.0


class Throttle:
    """Requests in flight and batch size for one worker process (thread-safe; injected clock)."""

    def __init__(self, settings: ThrottleSettings, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.s = settings
        self.clock = clock
        self.rng = rng or random.Random()
        self.limit = 1.0  # slow start: one request in flight until the first answers come back
        self.batch = settings.max_batch
        self.in_flight = 0
        self.backoff_s = 0.0
        self.resume_at = 0.0
        self.headroom = UNKNOWN
        self.latency_s = 0.0  # EWMA of successful request latency
        self.pressure_events = 0
        self.last_decrease_at = float("-inf")
        self.guard_paused_since: float | None = None
        self.guard_hold_until = float("-inf")
        self.next_send_at = 0.0  # pacing: rows/s kept at the spare capacity
        self._cond = threading.Condition()

    # -- the cap ------------------------------------------------------------------------------
    def allowed(self) -> int:
        """Requests allowed in flight now: the AIMD limit, capped by spare capacity; 0 when paused."""
        h = self.headroom
        now = self.clock()
        if (h.pause and h.guard) or now < self.guard_hold_until:
            since = self.guard_paused_since
            if since is not None and now - since > self.s.guard_max_pause_s:
                return 1  # pausing did not bring the tier back: not ours; the minimum goes on
            return 0
        if h.pause:
            return 0
        limit = max(1, int(self.limit))
        if h.spare_rows_per_s is not None and self.latency_s > 0:
            # rows per request as sent (the pace cuts the batch to pace_s of spare): dividing by the
            # AIMD batch instead kept 12-row requests at 1 in flight where 3 fit (0.4x of the spare)
            limit = min(limit, max(1, math.ceil(h.spare_rows_per_s * self.latency_s / max(1, self.batch_size()))))
        return min(limit, self.s.max_in_flight)

    def batch_size(self) -> int:
        """Rows for the next request: the AIMD batch, and no more than ``pace_s`` of spare capacity
        (a 32-row burst on a pool with 5 rows/s to spare is a latency spike for whoever shares it)."""
        spare = self.headroom.spare_rows_per_s
        if spare is None or self.headroom.pause:
            return self.batch
        return max(self.s.min_batch, min(self.batch, int(spare * self.s.pace_s)))

    def set_headroom(self, headroom: Headroom) -> None:
        with self._cond:
            self.headroom = headroom
            now = self.clock()
            if headroom.pause and headroom.guard:
                self.guard_paused_since = self.guard_paused_since if self.guard_paused_since is not None else now
                self.guard_hold_until = now + self.s.guard_hold_s
            elif now >= self.guard_hold_until:
                self.guard_paused_since = None
            if headroom.slow:  # once per reading of the control plane, while it lasts
                self.limit = max(1.0, self.limit / 2)
            self._cond.notify_all()

    # -- permits ------------------------------------------------------------------------------
    def acquire(self, stop: threading.Event, poll_s: float = 0.2) -> bool:
        """Wait for a permit; False if ``stop`` was set first."""
        with self._cond:
            while not stop.is_set():
                now = self.clock()
                if self.in_flight < self.allowed() and now >= self.resume_at and now >= self.next_send_at:
                    self.in_flight += 1
                    spare = self.headroom.spare_rows_per_s
                    if spare:  # the next request leaves once this one's rows fit in the spare rate
                        self.next_send_at = max(now, self.next_send_at) + self.batch_size() / spare
                    return True
                self._cond.wait(poll_s)
            return False

    def release(self) -> None:
        with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()

    # -- what the requests said -----------------------------------------------------------------
    def succeeded(self, latency_s: float, rows: int) -> None:
        with self._cond:
            self.latency_s = latency_s if self.latency_s == 0 else 0.8 * self.latency_s + 0.2 * latency_s
            self.backoff_s = 0.0
            if latency_s > 0.5 * self.s.per_try_timeout_s:  # too close to the timeout: smaller batches
                self.batch = max(self.s.min_batch, self.batch // 2)
            elif latency_s < 0.2 * self.s.per_try_timeout_s and rows >= self.batch:
                self.batch = min(self.s.max_batch, self.batch * 2)
            self.limit = min(float(self.s.max_in_flight), self.limit + 1.0 / max(1.0, self.limit))
            self._cond.notify_all()

    def pressured(self, timed_out: bool = False, sent_at: float | None = None) -> float:
        """Halve the in-flight limit, back off (and halve the batch on a timeout).  -> back-off s.

        Once per round trip: a request sent before the last decrease says nothing new (the
        requests in flight when the platform pushed back all fail together; halving once per
        failure would collapse the limit and the batch to 1 for one event)."""
        with self._cond:
            self.pressure_events += 1
            if sent_at is not None and sent_at < self.last_decrease_at:
                return max(0.0, self.resume_at - self.clock())
            self.last_decrease_at = self.clock()
            self.limit = max(1.0, self.limit / 2)
            if timed_out:
                self.batch = max(self.s.min_batch, self.batch // 2)
            self.backoff_s = min(self.s.backoff_max_s, max(self.s.backoff_min_s, self.backoff_s * 2))
            delay = self.backoff_s * (0.5 + self.rng.random() / 2)
            self.resume_at = max(self.resume_at, self.clock() + delay)
            return delay
