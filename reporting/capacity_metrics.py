"""The measurements of one capacity run, as pure functions of its samples and records.

The decision that shapes them: every time is measured on the clock it was recorded on (wall
seconds: the client's send times, the timeline's sample times, the decider's flap guard) and
converted to platform time (wall / dilation) only when reported, so a conversion happens in one
place (``reporting.capacity``) and a wall-clock rule such as "1-second windows" means what it says.

Resolution, stated once: the timeline is sampled about once a wall second, so a decision's time is
known to within one sample (the first sample that shows it is an upper bound), and p99s are over
1-wall-second windows of send times (a window with 5 gold requests has its maximum as p99).
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from locustfiles.records import RequestRecord
from reporting.analysis import tier_sort_key
from reporting.capacity_run import TimelineSample
from reporting.sla import compliance, nearest_rank

SECONDS_PER_HOUR = 3600.0


# --- cost ---------------------------------------------------------------------------------------

def spent_usd_at(samples: Sequence[TimelineSample], t_unix_s: float) -> float | None:
    """The ledger's integral at ``t_unix_s``, linear between the samples around it and held at the
    first/last sample outside them; None when no sample reports it."""
    points = [(s.t_unix_s, s.spent_usd) for s in samples if s.spent_usd is not None]
    if not points:
        return None
    times = [t for t, _ in points]
    i = bisect.bisect_right(times, t_unix_s)
    if i == 0:
        return points[0][1]
    if i == len(points):
        return points[-1][1]
    (ta, va), (tb, vb) = points[i - 1], points[i]
    return va + (vb - va) * (t_unix_s - ta) / (tb - ta) if tb > ta else vb


def ledger_usd_between(samples: Sequence[TimelineSample], t0_unix_s: float, t1_unix_s: float) -> float | None:
    """What the ledger counted between two wall instants (already platform time: it accrues wall / k).
    Why a difference and not its last value: each fleet's ledger starts with its control server,
    and the fleets start one after another, so the last value alone bills the first fleet for the
    minutes it waited for the others."""
    a, b = spent_usd_at(samples, t0_unix_s), spent_usd_at(samples, t1_unix_s)
    return None if a is None or b is None else b - a


def replica_cost_per_hour_usd(sample: TimelineSample, prices: Mapping[str, float]) -> float:
    """The fleet's rate in one sample: price x replicas that exist (starting and terminating ones are paid for)."""
    return sum(prices.get(name, 0.0) * pool.existing for name, pool in sample.pools.items())


def replica_cost_usd(samples: Sequence[TimelineSample], prices: Mapping[str, float], t0_unix_s: float,
                     t1_unix_s: float, dilation: float) -> float:
    """The cross-check of the ledger: each sample's rate held until the next sample (the last one
    until ``t1``), integrated over ``[t0, t1]`` in platform hours (wall seconds / dilation / 3600).
    Time before the first sample is not counted (nothing says what existed then)."""
    usd = 0.0
    for i, s in enumerate(samples):
        start = max(s.t_unix_s, t0_unix_s)
        end = min(samples[i + 1].t_unix_s if i + 1 < len(samples) else t1_unix_s, t1_unix_s)
        if end > start:
            usd += replica_cost_per_hour_usd(s, prices) * (end - start) / dilation / SECONDS_PER_HOUR
    return usd


def integrate_ideal(ideal_cost_per_hour: Callable[[float], float], duration_s: float,
                    step_s: float) -> tuple[float, list[float], list[float]]:
    """(usd, midpoints, $/h at each) of a $/h curve over ``[0, duration_s]`` (platform seconds) by
    the midpoint rule in steps of ``step_s``."""
    if step_s <= 0:
        raise ValueError(f"step_s must be > 0, got {step_s}")
    n = max(1, math.ceil(duration_s / step_s - 1e-9))
    width = duration_s / n
    mids = [(i + 0.5) * width for i in range(n)]
    values = [float(ideal_cost_per_hour(t)) for t in mids]
    return sum(values) * width / SECONDS_PER_HOUR, mids, values


# --- latency per tier ---------------------------------------------------------------------------

@dataclass(frozen=True)
class TierLatency:
    """One tier over the run, wall ms.  ``within_bound``: share of its requests that succeeded
    within the bound (best effort: share that succeeded); None when the tier had no requests."""

    tier: str
    requests: int
    failed: int
    bound_ms: float | None
    within_bound: float | None
    p99_ms: float | None  # successful requests only (reporting.sla), None when none succeeded


def tier_latencies(records: Sequence[RequestRecord], bounds_ms: Mapping[str, float | None]) -> list[TierLatency]:
    by_tier: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in records:
        by_tier[r.tier].append(r)
    out = []
    for tier in sorted({*bounds_ms, *by_tier}, key=tier_sort_key):
        recs = by_tier.get(tier, [])
        lat, ok = [r.latency_ms for r in recs], [r.ok for r in recs]
        bound = bounds_ms.get(tier)
        if not recs:
            share = None
        elif bound is None:
            share = sum(ok) / len(ok)
        else:
            share = compliance(lat, ok, bound)
        p99 = nearest_rank(sorted(x for x, good in zip(lat, ok, strict=True) if good), 0.99)
        out.append(TierLatency(tier, len(recs), ok.count(False), bound, share, None if math.isnan(p99) else p99))
    return out


def window_p99_ms(records: Sequence[RequestRecord], t0_unix_s: float, n_windows: int,
                  window_s: float = 1.0) -> dict[str, list[float | None]]:
    """Per tier, the p99 (wall ms, successful requests) of the requests sent in each window
    ``[t0 + i w, t0 + (i+1) w)``; None for a window without any."""
    lat: dict[str, list[list[float]]] = defaultdict(lambda: [[] for _ in range(n_windows)])
    for r in records:
        i = math.floor((r.t_unix_s - t0_unix_s) / window_s)
        if 0 <= i < n_windows and r.ok:
            lat[r.tier][i].append(r.latency_ms)
    return {tier: [nearest_rank(sorted(w), 0.99) if w else None for w in windows]
            for tier, windows in sorted(lat.items(), key=lambda kv: tier_sort_key(kv[0]))}


# --- demand -------------------------------------------------------------------------------------

def requests_per_window(times_unix_s: Sequence[float], t0_unix_s: float, n_windows: int,
                        window_s: float = 1.0) -> list[int]:
    counts = [0] * n_windows
    for t in times_unix_s:
        i = math.floor((t - t0_unix_s) / window_s)
        if 0 <= i < n_windows:
            counts[i] += 1
    return counts


def demand_rise_onsets(counts: Sequence[int], *, lookback: int = 5, rise_fraction: float = 0.2,
                       noise_sigmas: float = 2.0) -> list[int]:
    """Windows where demand starts to rise: the count exceeds the mean of the ``lookback`` windows
    before it by more than ``rise_fraction``, and the window before did not.

    ``noise_sigmas``: the excess must also pass that many Poisson standard deviations of the mean
    (``sqrt(mean)``).  Why: at tens of requests per wall second a steady Poisson stream exceeds its
    own 5-s mean by 20% about one second in four, and a "load step" every few seconds would make
    every scale-up look immediate.  0 turns the guard off."""
    rising = [False] * len(counts)
    for i in range(lookback, len(counts)):
        mean = sum(counts[i - lookback:i]) / lookback
        excess = counts[i] - mean
        rising[i] = counts[i] > (1.0 + rise_fraction) * mean and excess > noise_sigmas * math.sqrt(mean)
    return [i for i, r in enumerate(rising) if r and not (i > 0 and rising[i - 1])]


# --- replica counts -----------------------------------------------------------------------------

@dataclass(frozen=True)
class DesiredChange:
    """A pool's desired count as first seen changed, at timeline sample ``index``."""

    pool: str
    index: int
    t_unix_s: float
    before: int
    after: int

    @property
    def direction(self) -> int:
        return 1 if self.after > self.before else -1


def desired_changes(samples: Sequence[TimelineSample]) -> list[DesiredChange]:
    """Every change of a pool's desired count between consecutive samples that both list the pool."""
    out = []
    for i in range(1, len(samples)):
        prev, cur = samples[i - 1].pools, samples[i].pools
        for name in sorted(cur):
            if name in prev and cur[name].desired != prev[name].desired:
                out.append(DesiredChange(name, i, samples[i].t_unix_s, prev[name].desired, cur[name].desired))
    return out


def changes_per_pool(changes: Sequence[DesiredChange], pools: Sequence[str] = ()) -> dict[str, int]:
    out = dict.fromkeys(pools, 0)
    for c in changes:
        out[c.pool] = out.get(c.pool, 0) + 1
    return out


def flaps_per_pool(changes: Sequence[DesiredChange], guard_s: float, pools: Sequence[str] = ()) -> dict[str, int]:
    """Reversals of a pool's direction less than ``guard_s`` after its previous change (the
    decider's flap guard, same clock as the samples).  A guard of 0 counts none, as the decider
    then forbids none.  The decider lets a shortfall measured on the pool reverse a recent
    scale-down, so a flap here is a fact to explain, not necessarily a bug."""
    out = dict.fromkeys(pools, 0)
    last: dict[str, DesiredChange] = {}
    for c in changes:
        prev = last.get(c.pool)
        out.setdefault(c.pool, 0)
        if prev is not None and prev.direction != c.direction and c.t_unix_s - prev.t_unix_s < guard_s:
            out[c.pool] += 1
        last[c.pool] = c
    return out


# --- step response ------------------------------------------------------------------------------

@dataclass(frozen=True)
class StepResponse:
    """One increase of a pool's desired count and what followed.

    ``rise_unix_s``: start of the latest demand-rise window at or before the decision (None: none).
    ``ready_unix_s``: first sample at or after the decision whose ready count exceeds the count
    before it (None: no new replica became ready during the run).  ``sla_broke``: some bounded
    tier's window p99 passed its bound from the rise (or the decision) to the replica being ready
    (to the end when none was).  ``restore_wall_s``: from ready to the start of the first window,
    the one holding the ready instant onwards, in which every tier that broke is within bound
    again (0 when already back); None when it broke and never came back, or no replica was ready.
    """

    pool: str
    decided_unix_s: float
    before: int
    after: int
    rise_unix_s: float | None
    ready_unix_s: float | None
    sla_broke: bool
    restore_wall_s: float | None

    @property
    def decision_delay_wall_s(self) -> float | None:
        return None if self.rise_unix_s is None else self.decided_unix_s - self.rise_unix_s


def _ready_after(samples: Sequence[TimelineSample], change: DesiredChange) -> float | None:
    before = samples[change.index - 1].pools[change.pool].ready
    for s in samples[change.index:]:
        pool = s.pools.get(change.pool)
        if pool is not None and pool.ready > before:
            return s.t_unix_s
    return None


def _broken_tiers(p99: Mapping[str, Sequence[float | None]], bounds_ms: Mapping[str, float | None],
                  first: int, last: int) -> list[str]:
    out = []
    for tier, windows in p99.items():
        bound = bounds_ms.get(tier)
        if bound is not None and any(v is not None and v > bound for v in windows[max(0, first):last + 1]):
            out.append(tier)
    return out


def _first_good_window(p99: Mapping[str, Sequence[float | None]], bounds_ms: Mapping[str, float | None],
                       tiers: Sequence[str], start: int) -> int | None:
    n = len(next(iter(p99.values()))) if p99 else 0
    for i in range(max(0, start), n):
        values = [(p99[t][i], bounds_ms[t]) for t in tiers]
        seen = [(v, b) for v, b in values if v is not None]
        if seen and all(b is not None and v <= b for v, b in seen):
            return i
    return None


def step_responses(samples: Sequence[TimelineSample], changes: Sequence[DesiredChange],
                   rise_windows: Sequence[int], p99: Mapping[str, Sequence[float | None]],
                   bounds_ms: Mapping[str, float | None], t0_unix_s: float, window_s: float = 1.0) -> list[StepResponse]:
    """A :class:`StepResponse` for each increase in ``changes``.  ``rise_windows`` and ``p99`` are
    indexed by windows of ``window_s`` from ``t0_unix_s`` (the run's start)."""
    rise_starts = sorted(t0_unix_s + i * window_s for i in rise_windows)
    n = len(next(iter(p99.values()))) if p99 else 0

    def window(t: float) -> int:
        return math.floor((t - t0_unix_s) / window_s)

    out = []
    for c in changes:
        if c.direction < 0:
            continue
        k = bisect.bisect_right(rise_starts, c.t_unix_s)
        rise = rise_starts[k - 1] if k else None
        ready = _ready_after(samples, c)
        first = window(rise if rise is not None else c.t_unix_s)
        last = window(ready) if ready is not None else n - 1
        broken = _broken_tiers(p99, bounds_ms, first, last)
        restore = None
        if broken and ready is not None:
            good = _first_good_window(p99, bounds_ms, broken, window(ready))
            if good is not None:
                restore = max(0.0, t0_unix_s + good * window_s - ready)
        out.append(StepResponse(c.pool, c.t_unix_s, c.before, c.after, rise, ready, bool(broken), restore))
    return out
