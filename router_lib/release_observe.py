"""What a release is judged on, from the same metrics ports as routing (pure: text in, values out).

Two sources, each for what it measures live:

* **Envoy** (``/stats/prometheus``, filtered to the model's clusters): requests and 5xx per
  cluster, stable (``<model>--<pool>--<proto>``) and candidate (``...--v<N>``) apart, as clients
  see them.  Counters move with every request; the ``upstream_rq_time`` histograms at Envoy's stats
  flush, which our bootstrap makes happen at every admin query (``stats_flush_on_admin``: at most
  one poll late; Envoy's default is every 5 s), so p95/p99 are read over ``slow_window_s`` (2 s).
* **Triton** (each stable and candidate replica's ``/metrics``): requests answered and their total
  time (``nv_inference_request_duration_us``), updated at every request: the mean latency over
  the last fraction of a second, which is what lets a rollback happen well within a second of a
  fault (the fast guard), with failures counted there too (gRPC errors are not Envoy 5xx).

A poll is a ``ReleaseSample`` (cumulative values); ``observe`` turns the samples kept by the
watcher into a ``ReleaseObservation`` over two windows, with counter resets handled like
``router_lib.metrics_window`` (a counter that went down restarted).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from router_lib.cluster_names import parse_cluster_name
from router_lib.metric_names import counts_as_failure
from router_lib.metrics_window import Buckets, bucket_delta, counter_delta, histogram_quantile
from router_lib.release import PoolComparison, ReleaseObservation, VersionWindow

STABLE, CANDIDATE = "stable", "candidate"


@dataclass(frozen=True)
class VersionCounters:
    """Cumulative counters of one version on one pool."""

    rq_total: float = 0.0
    rq_5xx: float = 0.0
    buckets: Buckets = ()
    triton_requests: float = 0.0
    triton_failures: float = 0.0
    triton_duration_us: float = 0.0


@dataclass(frozen=True)
class ReleaseSample:
    """One poll: counters by (pool, ``STABLE``/``CANDIDATE``), and agreement counters of the
    comparator (sum of agreement scores, number of comparisons)."""

    at_s: float
    counters: Mapping[tuple[str, str], VersionCounters] = field(default_factory=dict)
    agreement_sum: float = 0.0
    agreement_count: float = 0.0


@dataclass(frozen=True)
class EnvoyCounts:
    rq_total: float = 0.0
    rq_5xx: float = 0.0
    buckets: Buckets = ()


def parse_envoy_release(text: str, model: str, candidate_version: str) -> dict[tuple[str, str], EnvoyCounts]:
    """Requests, 5xx and latency buckets per (pool, version role) of ``model``'s clusters (grpc and
    http added together); clusters of other versions or models are skipped."""
    totals: dict[tuple[str, str], float] = {}
    errors: dict[tuple[str, str], float] = {}
    buckets: dict[tuple[str, str], dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            # the parser appends ``_total`` to a counter family's samples (OpenMetrics): undo it
            name = "envoy_cluster_upstream_rq_xx" if s.name == "envoy_cluster_upstream_rq_xx_total" else s.name
            if name not in ("envoy_cluster_upstream_rq_total", "envoy_cluster_upstream_rq_xx",
                            "envoy_cluster_upstream_rq_time_bucket"):
                continue
            parsed = parse_cluster_name(s.labels.get("envoy_cluster_name", ""))
            if parsed is None or parsed.model != model:
                continue
            if parsed.version is None:
                role = STABLE
            elif parsed.version == candidate_version:
                role = CANDIDATE
            else:
                continue
            key = (parsed.pool, role)
            if name == "envoy_cluster_upstream_rq_total":
                totals[key] = totals.get(key, 0.0) + float(s.value)
            elif name == "envoy_cluster_upstream_rq_xx":
                if s.labels.get("envoy_response_code_class") == "5":
                    errors[key] = errors.get(key, 0.0) + float(s.value)
            else:
                per = buckets.setdefault(key, {})
                le = float(s.labels["le"])
                per[le] = per.get(le, 0.0) + float(s.value)
    keys = set(totals) | set(errors) | set(buckets)
    return {k: EnvoyCounts(totals.get(k, 0.0), errors.get(k, 0.0), tuple(sorted(buckets.get(k, {}).items())))
            for k in keys}


_TRITON_COUNTERS = ("nv_inference_request_success{", "nv_inference_request_failure{", "nv_inference_request_duration_us{")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_triton_model(text: str, model: str, version: str | None = None) -> tuple[float, float, float]:
    """(requests answered, failed, total request time in us) of ``model`` (at ``version`` when
    given) in one replica's ``/metrics`` text.  A line scan, not a full exposition parser: it runs
    for every replica of a release 20 times a second, and these three series are plain samples."""
    answered = failed = duration = 0.0
    for line in text.splitlines():
        if not line.startswith(_TRITON_COUNTERS):
            continue
        head, _, value = line.rpartition(" ")
        labels = dict(_LABEL.findall(head[head.index("{"):]))
        if labels.get("model") != model or (version is not None and labels.get("version") != version):
            continue
        v = float(value)
        if line.startswith("nv_inference_request_success{"):
            answered += v
        elif line.startswith("nv_inference_request_failure{"):
            if counts_as_failure(labels.get("reason")):  # not a shed or a batcher wake-up
                answered += v
                failed += v
        else:
            duration += v
    return answered, failed, duration


def combine(envoy: Mapping[tuple[str, str], EnvoyCounts],
            triton: Iterable[tuple[str, str, tuple[float, float, float]]]) -> dict[tuple[str, str], VersionCounters]:
    """Envoy's counts per (pool, role) with the Triton replicas' ``(pool, role, parse_triton_model)``
    summed in."""
    out = {k: VersionCounters(e.rq_total, e.rq_5xx, e.buckets) for k, e in envoy.items()}
    for pool, role, (answered, failed, duration) in triton:
        c = out.get((pool, role), VersionCounters())
        out[(pool, role)] = VersionCounters(c.rq_total, c.rq_5xx, c.buckets, c.triton_requests + answered,
                                            c.triton_failures + failed, c.triton_duration_us + duration)
    return out


def _base(samples: Sequence[ReleaseSample], now_s: float, window_s: float) -> ReleaseSample:
    """The newest sample at least ``window_s`` old, else the oldest kept."""
    base = samples[0]
    for s in samples:
        if s.at_s <= now_s - window_s:
            base = s
        else:
            break
    return base


# A quantile is judged only over a window holding at least this many requests beyond it, per
# version: ceil(5 / (1 - q)), p95 100 requests, p99 500.  Over fewer, "p99" is the slowest request,
# and one scheduler stall of a shared machine rolled a healthy candidate back (measured: p99 213 ms
# vs stable 41 ms over a 2 s window of 60 requests).
TAIL_REQUESTS = 5


def quantile_min_requests(q: float) -> int:
    return math.ceil(TAIL_REQUESTS / (1 - q) - 1e-9)


def _count(buckets: Buckets) -> float:
    return buckets[-1][1] if buckets else 0.0


def _quantile(q: float, samples: Sequence[ReleaseSample], key: tuple[str, str], window_s: float) -> float | None:
    """The q-quantile of ``key``'s latency over the last ``window_s`` or longer, back to the newest
    sample whose histogram delta holds ``quantile_min_requests(q)`` requests; None if no sample
    kept does (or the samples do not span ``window_s`` yet)."""
    new = samples[-1].counters.get(key)
    if new is None or not new.buckets:
        return None
    need = quantile_min_requests(q)
    for s in reversed(samples):
        if s.at_s > samples[-1].at_s - window_s:
            continue
        old = s.counters.get(key)
        hist = bucket_delta(old.buckets if old else (), new.buckets)
        if _count(hist) >= need:
            return histogram_quantile(q, hist)
    return None


def _window(old: VersionCounters | None, new: VersionCounters | None,
            quantiles: tuple[float | None, float | None] = (None, None)) -> VersionWindow:
    if new is None:
        return VersionWindow()
    old = old or VersionCounters()
    requests = counter_delta(old.rq_total, new.rq_total)
    answered = counter_delta(old.triton_requests, new.triton_requests)
    failures = counter_delta(old.triton_failures, new.triton_failures)
    errors = max(counter_delta(old.rq_5xx, new.rq_5xx), failures)
    duration = counter_delta(old.triton_duration_us, new.triton_duration_us)
    return VersionWindow(
        requests=max(requests, answered),
        errors=errors,
        p95_ms=quantiles[0],
        p99_ms=quantiles[1],
        mean_ms=duration / answered / 1000.0 if answered > 0 else None,
    )


def _candidate_requests(sample: ReleaseSample) -> float:
    return max(sum(c.rq_total for (_, role), c in sample.counters.items() if role == CANDIDATE),
               sum(c.triton_requests for (_, role), c in sample.counters.items() if role == CANDIDATE))


def _fast_base(samples: Sequence[ReleaseSample], now_s: float, window_s: float, min_requests: float) -> ReleaseSample:
    """The newest sample at least ``window_s`` old whose distance to the newest holds at least
    ``min_requests`` candidate requests: a window of "the last half second, or the last N
    requests if that is longer", so a candidate with little traffic is still judged (later)."""
    newest = _candidate_requests(samples[-1])
    for s in reversed(samples):
        if s.at_s <= now_s - window_s and newest - _candidate_requests(s) >= min_requests:
            return s
    return samples[0]


def observe(samples: Sequence[ReleaseSample], pools: Sequence[str], *, fast_window_s: float,
            slow_window_s: float, min_requests: float = 0, source: str = "watch") -> ReleaseObservation | None:
    """The observation of the newest sample: requests, errors and mean latency over the last
    ``fast_window_s`` (longer when that holds fewer than ``min_requests`` candidate requests: up
    to all the samples kept), p95/p99 over the last ``slow_window_s`` or longer, until the window
    holds ``quantile_min_requests`` of the version (None until the samples do), agreement over
    the fast window (the slow one when the fast one has none).  None with fewer than two samples.

    Quantile windows never reach before the release's first sample: Envoy's histograms move at its
    stats flush (one poll late with flush on admin, up to 5 s with the default timer), so a window
    older than the samples could hold requests finished before the release (a previous one's)."""
    if len(samples) < 2:
        return None
    new = samples[-1]
    fast = _fast_base(samples, new.at_s, fast_window_s, min_requests)
    slow = _base(samples, new.at_s, slow_window_s)
    comparisons = []
    for pool in pools:
        windows = {role: _window(fast.counters.get((pool, role)), new.counters.get((pool, role)),
                                 (_quantile(0.95, samples, (pool, role), slow_window_s),
                                  _quantile(0.99, samples, (pool, role), slow_window_s)))
                   for role in (STABLE, CANDIDATE)}
        comparisons.append(PoolComparison(pool, windows[STABLE], windows[CANDIDATE]))
    # Envoy's count, or the candidate's own when more (a shadow step: only the comparator asks it)
    total = _candidate_requests(new)
    agreement, count = None, 0
    for base in (fast, slow):
        n = counter_delta(base.agreement_count, new.agreement_count)
        if n > 0:
            agreement = counter_delta(base.agreement_sum, new.agreement_sum) / n
            count = int(n)
            break
    return ReleaseObservation(total, tuple(comparisons), agreement, count, source)
