"""Metrics sources (ports): where :class:`~router_lib.metrics.FleetMetrics` come from.

``MetricsSource`` is the port; two adapters implement it:

* :class:`ScrapeSource` (the default) scrapes each Triton replica's ``/metrics`` and Envoy's
  ``/stats/prometheus`` over HTTP and keeps the previous scrape to compute windowed rates.
  A replica that cannot be fetched or parsed counts as not ready; ``read()`` never raises for
  one bad replica or a bad Envoy (it then falls back to Triton's own counters).
* :class:`PrometheusApiSource` asks a Prometheus server (``/api/v1/query``) for the same
  quantities with ``rate()``/``increase()`` over ``window_s``.  It expects each Triton scrape
  target to carry a ``pool`` label (set it in the scrape config) and Envoy under its usual names.

HTTP goes through a ``Fetch`` callable so tests inject fakes instead of patching the stdlib.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from router_lib.metrics import FleetMetrics, MetricsParseError, MetricsUnavailableError, PoolModelMetrics
from router_lib.metrics_text import EnvoySample, TritonSample, parse_envoy, parse_triton
from router_lib.metrics_window import ScrapeSnapshot, fleet_metrics, histogram_quantile

FETCH_ERRORS = (OSError, urllib.error.URLError, http.client.HTTPException, ValueError)


class Fetch(Protocol):
    def __call__(self, url: str, timeout_s: float) -> str: ...


class MetricsSource(Protocol):
    def read(self, now_s: float) -> FleetMetrics: ...


def http_get_text(url: str, timeout_s: float) -> str:
    """GET ``url`` and return its body as text; raises OSError/HTTPException on failure."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (our own endpoints)
        body: bytes = response.read()
    return body.decode("utf-8", errors="replace")


class ScrapeSource:
    """Scrape Triton replicas and Envoy directly.  Keeps only the previous snapshot as state."""

    def __init__(self, triton_urls: Mapping[str, Sequence[str]], envoy_url: str | None = None, *,
                 composing: Mapping[str, str] | None = None, expected: Sequence[tuple[str, str]] = (),
                 fetch: Fetch = http_get_text, timeout_s: float = 1.0) -> None:
        self.triton_urls = {pool: tuple(urls) for pool, urls in triton_urls.items()}
        self.envoy_url = envoy_url
        self.composing = dict(composing or {})
        self.expected = tuple(expected)
        self.fetch = fetch
        self.timeout_s = timeout_s
        self.last_errors: dict[str, str] = {}
        self._previous: ScrapeSnapshot | None = None

    def _scrape_triton(self, url: str) -> TritonSample | None:
        try:
            return parse_triton(self.fetch(url, self.timeout_s), url, self.composing)
        except (MetricsParseError, *FETCH_ERRORS) as e:
            self.last_errors[url] = f"{type(e).__name__}: {e}"
            return None

    def _scrape_envoy(self) -> EnvoySample | None:
        if not self.envoy_url:
            return None
        try:
            return parse_envoy(self.fetch(self.envoy_url, self.timeout_s), self.envoy_url)
        except (MetricsParseError, *FETCH_ERRORS) as e:
            self.last_errors[self.envoy_url] = f"{type(e).__name__}: {e}"
            return None

    def read(self, now_s: float) -> FleetMetrics:
        self.last_errors = {}
        snapshot = ScrapeSnapshot(
            timestamp_s=now_s,
            triton={pool: {url: self._scrape_triton(url) for url in urls} for pool, urls in self.triton_urls.items()},
            envoy=self._scrape_envoy(),
        )
        result = fleet_metrics(self._previous, snapshot, self.expected)
        self._previous = snapshot
        return result


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
        from router_lib.cluster_names import parse_cluster_name

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

    def read(self, now_s: float) -> FleetMetrics:
        w = f"{self.window_s:g}s"
        job = f'job="{self.triton_job}"'
        pending = self._by_pool_model(f"sum by (pool, model) (nv_inference_pending_request_count{{{job}}})", now_s)
        ok = self._by_pool_model(f"sum by (pool, model) (rate(nv_inference_request_success{{{job}}}[{w}]))", now_s, True)
        bad = self._by_pool_model(f"sum by (pool, model) (rate(nv_inference_request_failure{{{job}}}[{w}]))", now_s, True)
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
