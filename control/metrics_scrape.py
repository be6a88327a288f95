"""Metrics source adapter: scrape each Triton replica's ``/metrics`` and Envoy's
``/stats/prometheus`` over HTTP (the default; ``control.ports.MetricsSource``).

It keeps the previous scrape to compute windowed rates.  A replica that cannot be fetched or
parsed counts as not ready; ``read()`` never raises for one bad replica or a bad Envoy (it then
falls back to Triton's own counters).  Which replicas to scrape is an argument of every read, so
replica churn needs no new source (and loses no window).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from control.http_fetch import FETCH_ERRORS, Fetch, http_get_text
from router_lib.metric_names import triton_series_for
from router_lib.metrics import FleetMetrics, MetricsParseError
from router_lib.metrics_text import ALL_TRITON_SERIES, EnvoySample, TritonSample, parse_envoy, parse_triton
from router_lib.metrics_window import ScrapeSnapshot, fleet_metrics


class ScrapeSource:
    """Scrape Triton replicas and Envoy directly.  Keeps only the previous snapshot as state."""

    def __init__(self, triton_urls: Mapping[str, Sequence[str]], envoy_url: str | None = None, *,
                 composing: Mapping[str, str] | None = None, expected: Sequence[tuple[str, str]] = (),
                 fetch: Fetch = http_get_text, timeout_s: float = 1.0,
                 signals: Iterable[str] | None = None) -> None:
        self.triton_urls = {pool: tuple(urls) for pool, urls in triton_urls.items()}
        self.envoy_url = envoy_url
        self.composing = dict(composing or {})
        self.expected = tuple(expected)
        self.fetch = fetch
        self.timeout_s = timeout_s
        self.last_errors: dict[str, str] = {}
        # what the deciders consume decides what is parsed (None: every known signal)
        self.series = ALL_TRITON_SERIES if signals is None else triton_series_for(signals)
        self._previous: ScrapeSnapshot | None = None

    def _scrape_triton(self, url: str) -> TritonSample | None:
        try:
            return parse_triton(self.fetch(url, self.timeout_s), url, self.composing, self.series)
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

    def read(self, now_s: float, targets: Mapping[str, Sequence[str]] | None = None) -> FleetMetrics:
        """Scrape ``targets`` (pool -> Triton metrics URLs; the constructor's when None)."""
        if targets is not None:
            self.triton_urls = {pool: tuple(urls) for pool, urls in targets.items()}
        self.last_errors = {}
        snapshot = ScrapeSnapshot(
            timestamp_s=now_s,
            triton={pool: {url: self._scrape_triton(url) for url in urls} for pool, urls in self.triton_urls.items()},
            envoy=self._scrape_envoy(),
        )
        result = fleet_metrics(self._previous, snapshot, self.expected)
        self._previous = snapshot
        return result


