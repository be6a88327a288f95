"""From a recorded run to the report's figures: per tier, per pool over time, weight changes,
cost, and the verdict (did every tier meet its target, and if not, why).  Pure functions."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from locustfiles.records import RequestRecord
from reporting.run_data import RunData
from reporting.sla import TierSummary, summarise_tier

TIER_ORDER = ("gold", "silver", "bronze")


def tier_sort_key(tier: str) -> tuple[int, str]:
    return (TIER_ORDER.index(tier) if tier in TIER_ORDER else len(TIER_ORDER), tier)


@dataclass(frozen=True)
class PoolShare:
    """Requests of one tier served by one pool ("" = no pool answered: an error at Envoy)."""

    tier: str
    pool: str
    requests: int
    share: float
    emulated: bool | None


@dataclass(frozen=True)
class WeightChange:
    t_s: float  # from the run's start
    model: str
    tier: str
    before: Mapping[str, int]
    after: Mapping[str, int]
    reasons: Mapping[str, str]  # why, for each pool whose weight moved (the policy's words)


@dataclass(frozen=True)
class TimeBucket:
    """Per tier in one bucket: requests per pool, p99 of successful requests, errors."""

    t_s: float
    by_tier_pool: Mapping[str, Mapping[str, int]]
    p99_ms: Mapping[str, float]


@dataclass(frozen=True)
class Verdict:
    passed: bool
    lines: tuple[str, ...]  # one per tier that missed its target, saying why


@dataclass(frozen=True)
class Report:
    run: RunData
    tiers: tuple[TierSummary, ...]
    shares: tuple[PoolShare, ...]
    buckets: tuple[TimeBucket, ...]
    bucket_s: float
    changes: tuple[WeightChange, ...]
    cost: Mapping[str, Any]
    emulation_lines: tuple[str, ...]
    health_lines: tuple[str, ...]
    verdict: Verdict
    offered_rps: float
    extra: Mapping[str, Any] = field(default_factory=dict)


def tier_summaries(run: RunData) -> tuple[TierSummary, ...]:
    by_tier: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in run.records:
        by_tier[r.tier].append(r)
    out = []
    for name in sorted({*by_tier, *(t.name for t in run.tiers)}, key=tier_sort_key):
        info = run.tier(name)
        recs = by_tier.get(name, [])
        out.append(summarise_tier(name, [r.latency_ms for r in recs], [r.ok for r in recs],
                                  info.bound_ms if info else None, info.target if info else None))
    return tuple(out)


def pool_shares(run: RunData) -> tuple[PoolShare, ...]:
    counts: Counter[tuple[str, str]] = Counter((r.tier, r.pool) for r in run.records)
    totals: Counter[str] = Counter(r.tier for r in run.records)
    out = []
    for (tier, pool), n in sorted(counts.items(), key=lambda kv: (tier_sort_key(kv[0][0]), kv[0][1])):
        info = run.pool(pool)
        out.append(PoolShare(tier, pool, n, n / totals[tier], info.emulated if info else None))
    return tuple(out)


def time_buckets(run: RunData, bucket_s: float) -> tuple[TimeBucket, ...]:
    if not run.records:
        return ()
    n = max(1, math.ceil(run.duration_s / bucket_s))
    counts: list[dict[str, Counter[str]]] = [defaultdict(Counter) for _ in range(n)]
    lats: list[dict[str, list[float]]] = [defaultdict(list) for _ in range(n)]
    for r in run.records:
        i = min(n - 1, max(0, int((r.t_unix_s - run.started_unix_s) // bucket_s)))
        counts[i][r.tier][r.pool] += 1
        if r.ok:
            lats[i][r.tier].append(r.latency_ms)
    from reporting.sla import nearest_rank

    return tuple(TimeBucket(i * bucket_s, {t: dict(c) for t, c in counts[i].items()},
                            {t: nearest_rank(sorted(v), 0.99) for t, v in lats[i].items()}) for i in range(n))


def weight_changes(run: RunData) -> tuple[WeightChange, ...]:
    """Every change of a route's weights between consecutive samples (the first sample is the
    starting point, reported as a change from nothing)."""
    out: list[WeightChange] = []
    previous: Mapping[tuple[str, str], Mapping[str, int]] = {}
    for s in run.samples:
        for key in sorted(s.weights, key=lambda k: (k[0], tier_sort_key(k[1]))):
            after = s.weights[key]
            before = previous.get(key, {})
            if dict(before) != dict(after):
                moved = [p for p in after if after.get(p, 0) != before.get(p, 0) or not before]
                out.append(WeightChange(round(s.t_unix_s - run.started_unix_s, 1), key[0], key[1], dict(before),
                                        dict(after), {p: s.reasons.get(key, {}).get(p, "") for p in moved}))
        previous = s.weights
    return tuple(out)


def multiplier_at(schedule: Sequence[tuple[float, float]], t_s: float) -> float:
    m = 1.0
    for t, value in schedule:
        if t <= t_s:
            m = value
    return m


def emulation_lines(run: RunData) -> tuple[str, ...]:
    """Say, per emulated pool, whether this machine kept up with the accelerator's profile."""
    lines = []
    for pool, c in sorted(run.emulation.items()):
        execs = c.get("emulation_executions_total", 0.0)
        lagged = c.get("emulation_lagged_executions_total", 0.0)
        lag = c.get("emulation_lag_ms_total", 0.0)
        profile = c.get("emulation_profile_ms_total", 0.0)
        if execs <= 0:
            lines.append(f"{pool}: no batches executed")
            continue
        verdict = "kept up with its profile" if lagged == 0 else (
            f"LAGGED: {lagged:.0f} of {execs:.0f} batches ({100 * lagged / execs:.0f}%) took longer on this CPU "
            f"than the accelerator profile allows, by {lag / max(lagged, 1):.1f} ms on average "
            f"(profile time {profile / execs:.2f} ms per batch): latencies on this pool are this machine's, "
            "not the accelerator's")
        lines.append(f"{pool}: {verdict}")
    return tuple(lines)


def health_lines(run: RunData) -> tuple[str, ...]:
    """Pools the control plane called unhealthy while the run was sampled (a platform fault the
    load did not cause, or a pool that really died): the report must say so, since every routing
    figure of the run depends on it."""
    samples: Counter[str] = Counter()
    why: dict[str, str] = {}
    for s in run.samples:
        bad = {p: r for reasons in s.reasons.values() for p, r in reasons.items() if r.startswith("unhealthy")}
        for p, r in bad.items():
            samples[p] += 1
            why.setdefault(p, r)
    return tuple(f"{p}: called unhealthy by the control plane in {n} of {len(run.samples)} samples ({why[p]})"
                 for p, n in sorted(samples.items()))


def verdict(run: RunData, tiers: Sequence[TierSummary], emulation: Sequence[str]) -> Verdict:
    lines = []
    for t in tiers:
        if t.met or t.compliance is None:
            continue
        recs = [r for r in run.records if r.tier == t.tier]
        bad = [r for r in recs if not r.ok or (t.bound_ms is not None and r.latency_ms > t.bound_ms)]
        by_pool = Counter(r.pool or "none" for r in bad)
        in_peak = sum(1 for r in bad if multiplier_at(run.schedule, r.t_unix_s - run.started_unix_s) > 1.0)
        errors = Counter(r.error.split(":")[0] for r in recs if not r.ok)
        why = [f"{t.tier}: {100 * t.compliance:.2f}% within {t.bound_ms:g} ms, target {100 * (t.target or 0):.1f}%"
               f" ({len(bad)} of {t.requests} requests late or failed)"]
        why.append("late/failed by pool: " + ", ".join(f"{p} {n}" for p, n in by_pool.most_common()))
        if run.schedule and any(m > 1.0 for _, m in run.schedule):
            why.append(f"{in_peak} of them during the load step/bursts, {len(bad) - in_peak} at base load")
        if errors:
            why.append("errors: " + ", ".join(f"{e} x{n}" for e, n in errors.most_common(3)))
        lagging = [line.split(":")[0] for line in emulation if "LAGGED" in line]
        if lagging:
            why.append(f"emulated pools that lagged their profile on this CPU: {', '.join(lagging)}")
        unhealthy = health_lines(run)
        if unhealthy:
            why.append("pools the control plane called unhealthy: " + ", ".join(u.split(":")[0] for u in unhealthy))
        if run.cpu_cores and run.load_average[1] > run.cpu_cores:
            why.append(f"the machine was oversubscribed: load average {run.load_average[0]:.1f} at start, "
                       f"{run.load_average[1]:.1f} at end on {run.cpu_cores} cores (shared with other work)")
        lines.append("; ".join(why))
    return Verdict(not lines, tuple(lines))


def offered_rps(run: RunData) -> float:
    return len(run.records) / run.duration_s if run.duration_s > 0 else 0.0


def largest_wave(sent_unix_s: Sequence[float], window_s: float = 0.01) -> int:
    """The most requests sent within any ``window_s`` (how in step the clients were): a load generator
    whose users keep the same pace sends in waves, which queue in the client and Envoy as well as in
    the pools."""
    if window_s <= 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")
    times = sorted(sent_unix_s)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] > window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def build_report(run: RunData, bucket_s: float = 5.0) -> Report:
    tiers = tier_summaries(run)
    emu = emulation_lines(run)
    from reporting.cost import cost_section

    return Report(run=run, tiers=tiers, shares=pool_shares(run), buckets=time_buckets(run, bucket_s),
                  bucket_s=bucket_s, changes=weight_changes(run), cost=cost_section(run), emulation_lines=emu,
                  health_lines=health_lines(run),
                  verdict=verdict(run, tiers, emu), offered_rps=offered_rps(run))
