"""Metrics source adapter: read the fleet's metrics from a Prometheus server's HTTP API
(instant queries with ``rate()``/``increase()`` over ``window_s``; ``control.ports.MetricsSource``).

It expects each Triton scrape target to carry a ``pool`` label (set it in the scrape config) and
Envoy under its usual names.  Prometheus knows the targets itself, so the replica list passed to
``read`` is not used.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from control.http_fetch import FETCH_ERRORS, Fetch, http_get_text
from router_lib.cluster_names import parse_cluster_name
from router_lib.metric_names import NOT_FAILURES
from router_lib.metrics import FleetMetrics, MetricsParseError, MetricsUnavailableError, PoolModelMetrics
from router_lib.metrics_window import histogram_quantile


def _vector(answer: Any, query: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) pairs of an instant-vector answer; MetricsParseError if it is not one."""
    try:
        if answer["status"] != "success" or answer["data"]["resultType"] != "vector":
            raise ValueError(f"status {answer.get('status')!r}, error {answer.get('error')!r}")
        return [(dict(r["metric"]), float(r["value"][1])) for r in answer["data"]["result"]]
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise MetricsParseError(f"prometheus query {query!r}", f"{type(e).__name__}: {e}") from None


class PrometheusApiSource:
    """Read the fleet's metrics from a Prometheus server's HTTP API (instant queries)."""

    def __init__(self, base_url: str, *, window_s: float = 30.0, composing: Mapping[str, str] | None = None,
                 triton_job: str = "triton", expected: Sequence[tuple[str, str]] = (),
                 fetch: Fetch = http_get_text, timeout_s: float = 2.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.window_s = window_s
        self.composing = dict(composing or {})
        self.triton_job = triton_job
        self.expected = tuple(expected)
        self.fetch = fetch
        self.timeout_s = timeout_s

    def query(self, promql: str, now_s: float) -> list[tuple[dict[str, str], float]]:
        url = f"{self.base_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql, "time": f"{now_s:.3f}"})
        try:
            text = self.fetch(url, self.timeout_s)
        except FETCH_ERRORS as e:
            raise MetricsUnavailableError(f"{self.base_url}: {type(e).__name__}: {e}") from None
        try:
            answer = json.loads(text)
        except json.JSONDecodeError as e:
            raise MetricsParseError(f"prometheus query {promql!r}", f"not JSON: {e}") from None
        return _vector(answer, promql)

    def _by_pool_model(self, promql: str, now_s: float, skip_composing: bool = False) -> dict[tuple[str, str], float]:
        """Sum per (pool, public model); ``skip_composing`` drops composing models' series (their
        request counters would count an ensemble's request once per step)."""
        out: dict[tuple[str, str], float] = {}
        for labels, value in self.query(promql, now_s):
            pool, model = labels.get("pool"), labels.get("model")
            if skip_composing and model in self.composing:
                continue
            if pool and model:
                key = (pool, self.composing.get(model, model))
                out[key] = out.get(key, 0.0) + value
        return out

    def _by_cluster(self, promql: str, now_s: float, by_le: bool = False) -> dict[tuple[str, str], Any]:
        out: dict[tuple[str, str], Any] = {}
        for labels, value in self.query(promql, now_s):
            parsed = parse_cluster_name(labels.get("envoy_cluster_name", ""))
            if parsed is None:
                continue
            key = (parsed.pool, parsed.model)
            if by_le:
                per = out.setdefault(key, {})
                le = float(labels.get("le", "nan"))
                per[le] = per.get(le, 0.0) + value
            else:
                out[key] = out.get(key, 0.0) + value
        return out

    def read(self, now_s: float, targets: Mapping[str, Sequence[str]] | None = None) -> FleetMetrics:
        """Prometheus knows its targets; ``targets`` is accepted for the port and not used."""
        w = f"{self.window_s:g}s"
        job = f'job="{self.triton_job}"'
        pending = self._by_pool_model(f"sum by (pool, model) (nv_inference_pending_request_count{{{job}}})", now_s)
        ok = self._by_pool_model(f"sum by (pool, model) (rate(nv_inference_request_success{{{job}}}[{w}]))", now_s, True)
        # Not the reasons in metric_names.NOT_FAILURES (sheds and batcher wake-ups).
        not_failures = "|".join(sorted(NOT_FAILURES))
        bad = self._by_pool_model(
            f'sum by (pool, model) (rate(nv_inference_request_failure{{{job},reason!~"{not_failures}"}}[{w}]))',
            now_s, True)
        lag = self._by_pool_model(f"sum by (pool, model) (increase(emulation_lag_ms_total[{w}]))", now_s)
        execs = self._by_pool_model(f"sum by (pool, model) (increase(emulation_executions_total[{w}]))", now_s)
        up = {labels.get("pool", ""): value for labels, value in
              self.query(f"sum by (pool) (up{{{job}}})", now_s) if labels.get("pool")}
        total = self._by_cluster(f"sum by (envoy_cluster_name) (rate(envoy_cluster_upstream_rq_total[{w}]))", now_s)
        errors = self._by_cluster(
            f'sum by (envoy_cluster_name) (rate(envoy_cluster_upstream_rq_xx{{envoy_response_code_class="5"}}[{w}]))',
            now_s)
        buckets = self._by_cluster(
            f"sum by (envoy_cluster_name, le) (rate(envoy_cluster_upstream_rq_time_bucket[{w}]))", now_s, by_le=True)
        tier_rates = {labels["envoy_virtual_cluster"]: value for labels, value in self.query(
            f"sum by (envoy_virtual_cluster) (rate(envoy_vhost_vcluster_upstream_rq_total[{w}]))", now_s)
            if labels.get("envoy_virtual_cluster")}
        keys = set(self.expected) | set(pending) | set(ok) | set(total)
        out: dict[tuple[str, str], PoolModelMetrics] = {}
        for pool, model in keys:
            rate = ok.get((pool, model), 0.0) + bad.get((pool, model), 0.0)
            error_rate = bad.get((pool, model), 0.0) / rate if rate > 0 else 0.0
            p95 = p99 = None
            if (pool, model) in total:
                rate = total[(pool, model)]
                error_rate = min(1.0, errors.get((pool, model), 0.0) / rate) if rate > 0 else 0.0
                b = tuple(sorted(buckets.get((pool, model), {}).items()))
                p95, p99 = histogram_quantile(0.95, b), histogram_quantile(0.99, b)
            n_exec = execs.get((pool, model), 0.0)
            out[(pool, model)] = PoolModelMetrics(
                pool=pool, model=model, queue_depth=pending.get((pool, model), 0.0), request_rate_per_s=rate,
                p95_ms=p95, p99_ms=p99, error_rate=error_rate,
                ready=(pool, model) in pending if pool in up else True,
                emulation_lag_ms=lag.get((pool, model), 0.0) / n_exec if n_exec > 0 else None,
                window_s=self.window_s,
            )
        return FleetMetrics(out, now_s, {pool: int(v) for pool, v in up.items()}, tier_rates)
