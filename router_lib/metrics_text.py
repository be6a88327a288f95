"""Parse Triton's and Envoy's Prometheus text into cumulative samples (no rates yet).

Parsing uses ``prometheus_client.parser.text_string_to_metric_families`` (the reference
parser, not regexes).  A sample here is the cumulative state of one scrape; rates and quantiles
need two of them and are computed in :mod:`router_lib.metrics_window`.

Triton labels its series ``model`` and ``version``.  A public model may be an ensemble whose
composing models (e.g. ``text_embedding_tokenizer`` -> ``text_embedding_onnx``) hold the queue:
``composing`` maps a composing model's name to its public model, and their pending counts are
added to the public model's.  Their request counters are ignored (the ensemble counts each
request once itself); their emulation counters are attributed to the public model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from router_lib.cluster_names import parse_cluster_name
from router_lib.metric_names import SIGNAL_SOURCES, counts_as_failure, triton_series_for
from router_lib.metrics import MetricsParseError

# The Triton series the signals are computed from (``metric_names.SIGNAL_SOURCES``, the one
# list); a scraper may ask for fewer (``parse_triton(series=...)``).
ALL_TRITON_SERIES = triton_series_for(SIGNAL_SOURCES)
PENDING = "nv_inference_pending_request_count"
# Request counters of a composing model are skipped: the ensemble counts each request once itself.
REQUEST_COUNTERS = frozenset({"nv_inference_request_success", "nv_inference_request_failure"})

ENVOY_RQ_TOTAL = "envoy_cluster_upstream_rq_total"
ENVOY_RQ_XX = "envoy_cluster_upstream_rq_xx"
ENVOY_RQ_TIME_BUCKET = "envoy_cluster_upstream_rq_time_bucket"
ENVOY_VCLUSTER_RQ_TOTAL = "envoy_vhost_vcluster_upstream_rq_total"


@dataclass(frozen=True)
class TritonSample:
    """One scrape of one Triton replica, per public model.

    ``pending``: model -> queued requests (gauge).  ``counters``: (model, counter name) -> value.
    """

    pending: Mapping[str, float] = field(default_factory=dict)
    counters: Mapping[tuple[str, str], float] = field(default_factory=dict)

    @property
    def models(self) -> frozenset[str]:
        return frozenset(self.pending) | frozenset(m for m, _ in self.counters)


@dataclass(frozen=True)
class EnvoyClusterSample:
    """Cumulative counts of one (model, pool), summed over its protocol clusters.

    ``buckets``: (upper bound in ms, cumulative count) sorted by bound, ``+Inf`` last.
    """

    rq_total: float = 0.0
    rq_5xx: float = 0.0
    buckets: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class EnvoySample:
    """``clusters``: per (model, pool).  ``tiers``: requests per SLA tier (cumulative), from the
    per-tier virtual clusters (one per tier of data/tiers.yaml), summed over virtual
    hosts; empty when Envoy has none."""

    clusters: Mapping[tuple[str, str], EnvoyClusterSample] = field(default_factory=dict)
    tiers: Mapping[str, float] = field(default_factory=dict)


def _samples(text: str, source: str, wanted: Iterable[str]) -> Iterable[tuple[str, Sample]]:
    """(wanted name, sample) for every sample of a wanted metric in ``text``; a MetricsParseError
    naming ``source`` if the text is malformed.

    The parser appends ``_total`` to the samples of a family declared ``# TYPE x counter`` (the
    OpenMetrics convention), while Triton exposes ``nv_inference_request_success`` without it:
    both spellings map back to the wanted name.
    """
    names: dict[str, str] = {}
    for name in wanted:
        names[name] = name
        names.setdefault(name + "_total", name)
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise MetricsParseError(source, f"{type(e).__name__}: {e}") from None
    for family in families:
        for sample in family.samples:
            wanted_name = names.get(sample.name)
            if wanted_name is not None:
                yield wanted_name, sample


def _value(sample: Sample, source: str) -> float:
    value = float(sample.value)
    if math.isnan(value) or value < 0:
        raise MetricsParseError(source, f"{sample.name}{sample.labels}: expected a value >= 0, got {value}")
    return value


def parse_triton(text: str, source: str, composing: Mapping[str, str] | None = None,
                 series: frozenset[str] = ALL_TRITON_SERIES) -> TritonSample:
    """Pending counts and counters (those named in ``series``) of every model in one replica's
    ``/metrics`` text."""
    composing = composing or {}
    pending: dict[str, float] = {}
    counters: dict[tuple[str, str], float] = {}
    for name, s in _samples(text, source, sorted(series)):
        model = s.labels.get("model")
        if not model:
            raise MetricsParseError(source, f"{name} without a 'model' label")
        value = _value(s, source)
        public = composing.get(model, model)
        if name == PENDING:
            pending[public] = pending.get(public, 0.0) + value
        elif name in REQUEST_COUNTERS and model in composing:
            continue  # the ensemble counts the request itself; composing steps would double it
        elif name == "nv_inference_request_failure" and not counts_as_failure(s.labels.get("reason")):
            continue  # a shed or a batcher wake-up (metric_names.NOT_FAILURES)
        else:
            key = (public, name)
            counters[key] = counters.get(key, 0.0) + value
    return TritonSample(pending, counters)


def parse_envoy(text: str, source: str) -> EnvoySample:
    """Request, 5xx and latency-bucket counts per (model, pool) from ``/stats/prometheus`` text.

    Clusters whose names are not ``<model>--<pool>--<proto>`` are skipped; the grpc and http
    clusters of one (model, pool) are added together.
    """
    totals: dict[tuple[str, str], float] = {}
    errors: dict[tuple[str, str], float] = {}
    buckets: dict[tuple[str, str], dict[float, float]] = {}
    tiers: dict[str, float] = {}
    for name, s in _samples(text, source, (ENVOY_RQ_TOTAL, ENVOY_RQ_XX, ENVOY_RQ_TIME_BUCKET, ENVOY_VCLUSTER_RQ_TOTAL)):
        if name == ENVOY_VCLUSTER_RQ_TOTAL:
            tier = s.labels.get("envoy_virtual_cluster", "")
            if tier:
                tiers[tier] = tiers.get(tier, 0.0) + _value(s, source)
            continue
        parsed = parse_cluster_name(s.labels.get("envoy_cluster_name", ""))
        if parsed is None:
            continue
        key = (parsed.model, parsed.pool)
        value = _value(s, source)
        if name == ENVOY_RQ_TOTAL:
            totals[key] = totals.get(key, 0.0) + value
        elif name == ENVOY_RQ_XX:
            if s.labels.get("envoy_response_code_class") == "5":
                errors[key] = errors.get(key, 0.0) + value
        else:
            try:
                le = float(s.labels["le"])
            except (KeyError, ValueError):
                raise MetricsParseError(source, f"{name}: bad or missing 'le' label {s.labels}") from None
            per = buckets.setdefault(key, {})
            per[le] = per.get(le, 0.0) + value
    keys = set(totals) | set(errors) | set(buckets)
    return EnvoySample({
        k: EnvoyClusterSample(
            rq_total=totals.get(k, 0.0),
            rq_5xx=errors.get(k, 0.0),
            buckets=tuple(sorted(buckets.get(k, {}).items())),
        )
        for k in keys
    }, tiers)
