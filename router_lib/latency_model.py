"""Predicted latency and safe capacity of one model on one accelerator: the formulas the policy,
the planner and the reports share (so the plan and the live routing agree on what "fits").

Notation (per replica): ``B`` max batch, ``L(b)`` p50 ms of one execution of a batch of ``b``
(the profile), ``c`` instances per replica, ``tail`` = profile ``p99_over_p50``.

* Full-batch throughput ``X = c * B * 1000 / L(B)`` req/s: the most one replica completes.
* Utilisation ``u = rate / (replicas * X)`` in [0, 1): the busy fraction of the pool's replica time.
  Models sharing a pool add their utilisations (conservative: they share the hardware).
* Operating batch ``b(u)``: the smallest ``b`` whose throughput ``T(b) = b * 1000 / L(b)`` per
  instance keeps up with the instance's arrival rate ``u * T(B)``.  With dynamic batching and no
  queue delay a batch holds what arrived during the previous execution, ``b = rate * L(b)``,
  whose smallest fixed point this is.  A GPU (large fixed cost, small per-item cost) batches more
  as load grows; a CPU (latency about linear in batch size, so ``T`` barely grows) stays near
  batch 1 until close to saturation.  (A first version used ``b = ceil(u * B)``; the simulator
  showed it 5x too pessimistic for CPU profiles, see docs/routing.md.)
* Predicted p99 ms ``p99(u) = tail * L(b) * (1 + min(1, rho / (1 - rho)))`` with ``b = b(u)`` and
  ``rho = u * T(B) / T(b)`` the busy fraction of an instance at that batch: when idle a request
  rarely waits; from ``rho = 1/2`` on it typically waits for the execution in progress (at most
  one more, because batching absorbs the queue into the next batch).  (Using ``u`` itself here
  under-predicted a busy single-instance CPU pool, 93% busy at ``u = 0.16``, in simulation.)  Queues that
  already exist add ``backlog_ms = queue_depth / (replicas * X) * 1000`` (time to drain them).
* Safe utilisation for a tier: the largest ``u <= max_utilisation`` with the predicted latency at
  the tier's target compliance quantile (99.9% -> p99.9, tail scaled by :func:`tail_factor`)
  ``<= headroom * bound``; bronze (no bound): ``max_utilisation``.
  ``safe capacity = safe utilisation * X`` req/s per replica.
* Cost per request: ``price_per_hour / (3600 * u * X)`` $ (x 1e6 per million requests): what a
  request costs when the pool is paid for by the hour and busy ``u`` of its throughput ``X``.

Each formula has one home here.  The policy evaluates the prediction a few hundred times per
decision, so it comes in two forms: :func:`predicted_latency_ms` over precomputed tables (what the
policy calls) and :func:`predicted_p99_ms` over a profile (which builds the tables and calls it).

The discrete-event simulator (``router_lib.simulator``) does not use these formulas: it runs the
queues, which is how the formulas' optimism or pessimism shows up in the benchmark.
"""

from __future__ import annotations

import bisect
import math
from statistics import NormalDist

from router_lib.domain import Profile


def full_batch_throughput_per_s(profile: Profile) -> float:
    """``X``: requests per second one replica completes running full batches on every instance."""
    return profile.throughput_per_replica_per_s()


def batch_thresholds(profile: Profile) -> tuple[float, ...]:
    """``t[b] = T(b) / T(B)`` for b = 1..B (index 0 unused): the utilisation up to which batch
    ``b`` keeps up.  Made non-decreasing (a batcher never needs a bigger batch to go slower)."""
    big_b = profile.max_batch_size
    full = big_b / profile.latency_ms(big_b)
    out, best = [0.0], 0.0
    for b in range(1, big_b + 1):
        best = max(best, b / profile.latency_ms(b) / full)
        out.append(min(best, 1.0) if b < big_b else 1.0)
    return tuple(out)


def operating_batch_from(thresholds: tuple[float, ...], utilisation: float) -> int:
    """Smallest ``b`` with ``thresholds[b] >= utilisation`` (``B`` at or past saturation)."""
    b = bisect.bisect_left(thresholds, utilisation - 1e-12, 1)  # >= 1: the search starts at index 1
    last = len(thresholds) - 1
    return b if b < last else last


def operating_batch(profile: Profile, utilisation: float) -> int:
    """``b(u)``: the smallest batch whose throughput keeps up with utilisation ``u``."""
    return operating_batch_from(batch_thresholds(profile), utilisation)


Z99 = NormalDist().inv_cdf(0.99)  # the standard normal's 99th percentile, 2.326...


def tail_factor(profile: Profile, quantile: float = 0.99) -> float:
    """Execution time at ``quantile`` over the median: ``p99_over_p50 ** (z(q) / z(0.99))``.

    A tier whose target is 99.9% of requests within the bound needs the p99.9, not the p99: for a
    log-normal execution time (what the simulator draws) the ratio scales with the normal quantile.
    """
    q = min(max(quantile, 0.5), 0.99999)
    return float(profile.p99_over_p50 ** (NormalDist().inv_cdf(q) / Z99))


def tail_latency_by_batch(profile: Profile, quantile: float = 0.99) -> tuple[float, ...]:
    """``tail_q * L(b)`` for b = 1..B (index 0 unused): the execution time at ``quantile`` per batch
    size, the table :func:`predicted_latency_ms` reads."""
    tail = tail_factor(profile, quantile)
    return (0.0, *(tail * profile.latency_ms(b) for b in range(1, profile.max_batch_size + 1)))


def predicted_latency_ms(tail_latency_ms: tuple[float, ...], thresholds: tuple[float, ...], utilisation: float,
                         backlog_ms: float = 0.0) -> float:
    """The prediction over precomputed tables: ``tail_latency_ms[b] * (1 + min(1, rho / (1 - rho)))
    + backlog`` with ``b = b(u)`` from :func:`batch_thresholds` and ``rho = u / thresholds[b]`` the
    busy fraction of an instance at that batch (inf at u >= 1).

    The wait factor is 1 when idle and 2 from rho = 1/2 on (a request waits for the execution in
    progress).  This is the one implementation of the formula; it avoids calls (no min, max or
    helper) because the policy evaluates it a few hundred times per decision.
    """
    if utilisation >= 1.0:
        return math.inf
    if utilisation <= thresholds[1]:  # the common case: batch 1 keeps up (no search)
        b = 1
    else:
        b = operating_batch_from(thresholds, utilisation)
    busy = (utilisation if utilisation > 0.0 else 0.0) / thresholds[b]
    if busy >= 1.0:
        return tail_latency_ms[b] * 2.0 + backlog_ms
    wait = busy / (1.0 - busy)
    return tail_latency_ms[b] * (1.0 + (wait if wait < 1.0 else 1.0)) + backlog_ms


def predicted_p99_ms(profile: Profile, utilisation: float, backlog_ms: float = 0.0, quantile: float = 0.99) -> float:
    """Predicted latency in ms at ``quantile`` (default p99) at pool utilisation ``u`` plus an
    existing backlog (inf at u >= 1)."""
    return predicted_latency_ms(tail_latency_by_batch(profile, quantile), batch_thresholds(profile), utilisation,
                                backlog_ms)


def drain_time_ms(queue_depth: float, replicas: int, throughput_per_replica_per_s: float) -> float:
    """Time in ms for ``replicas`` to drain ``queue_depth`` waiting requests at full throughput
    ``X`` each: ``queue_depth / (replicas * X) * 1000`` (0 with no queue, inf with no replica)."""
    if queue_depth <= 0:
        return 0.0
    if replicas <= 0:
        return math.inf
    return queue_depth / (replicas * throughput_per_replica_per_s) * 1000.0


def backlog_ms(profile: Profile, queue_depth: float, replicas: int) -> float:
    """:func:`drain_time_ms` with the profile's full-batch throughput."""
    return drain_time_ms(queue_depth, replicas, full_batch_throughput_per_s(profile))


def cost_per_million_usd(price_per_hour_usd: float, utilisation: float, throughput_per_s: float) -> float:
    """$ per million requests served by capacity costing ``price_per_hour_usd`` that completes
    ``throughput_per_s`` req/s at full use and is busy ``utilisation`` of it:
    ``price / (3600 * u * X) * 1e6``; inf when it serves nothing (``u * X <= 0``).

    The policy prices a tier on a pool at its safe utilisation (``X`` per replica, price per
    replica); a measured cost is ``utilisation = 1`` with the measured rate as ``throughput_per_s``.
    """
    if utilisation <= 0 or throughput_per_s <= 0:
        return math.inf
    return price_per_hour_usd / (3600.0 * utilisation * throughput_per_s) * 1e6


def safe_utilisation(profile: Profile, bound_ms: float | None, headroom: float, max_utilisation: float,
                     quantile: float = 0.99) -> float:
    """Largest ``u <= max_utilisation`` whose predicted latency at ``quantile`` (the tier's target
    compliance) is ``<= headroom * bound_ms`` (0 if none).

    Scans the operating batch sizes: while ``b(u) = b`` the service time is fixed, ``L(b)``, so
    the bound gives ``u / (1 - u) <= f`` with ``f = headroom * bound / (tail * L(b)) - 1``, i.e.
    ``rho <= f / (1 + f)``, i.e. ``u <= t[b] * f / (1 + f)`` (any u when ``f >= 1``), intersected
    with ``(t[b-1], t[b]]``.
    """
    if bound_ms is None:
        return max_utilisation
    limit = headroom * bound_ms
    thresholds = batch_thresholds(profile)
    tail = tail_factor(profile, quantile)
    best = 0.0
    for b in range(1, profile.max_batch_size + 1):
        low, high = (thresholds[b - 1] if b > 1 else 0.0), thresholds[b]
        if high <= low and b > 1:
            continue  # this batch size is never the operating one
        tail_service = tail * profile.latency_ms(b)
        if tail_service > limit:
            break
        f = limit / tail_service - 1.0
        # the bound allows a busy fraction rho = u / t[b] up to f / (1 + f) (any when f >= 1)
        u_latency = high if f >= 1.0 else high * f / (1.0 + f)
        u = min(high, max_utilisation, u_latency)
        if u > low or b == 1:
            best = max(best, u)
        if u < high:
            break
    return best
