"""Statistics source adapter for the online calibration: Triton's statistics extension of every
serving replica, and Envoy's per-cluster request-time sums (``control.ports.StatsSource``).

Per tick it GETs ``http://<replica>/v2/models/stats`` once per serving replica (every model it
serves in one answer; only the pool's models are kept) and, when an Envoy admin URL is given,
Envoy's ``/stats/prometheus`` for ``envoy_cluster_upstream_rq_time_sum`` / ``_count`` per
(model, pool) (its grpc and http clusters added up).  The counters stay cumulative here: the
window arithmetic, restarts included, is ``router_lib.calibration.observe``'s.

A replica that cannot be read or parsed is left out of the reading (its next good reading is a
new baseline) and named in ``last_errors``; ``read`` never raises.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

from control.http_fetch import FETCH_ERRORS, Fetch, http_get_text
from control.ports import ReplicaSet
from router_lib.calibration import EndToEnd, StatsReading
from router_lib.calibration_stats import ModelStats, StatsParseError, parse_model_stats
from router_lib.cluster_names import parse_cluster_name

RQ_TIME = "envoy_cluster_upstream_rq_time"


def parse_envoy_request_time(text: str, source: str) -> dict[tuple[str, str], EndToEnd]:
    """(model, pool) -> cumulative requests and ms of Envoy's upstream request time."""
    sums: dict[tuple[str, str], list[float]] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise StatsParseError(source, f"{type(e).__name__}: {e}") from None
    for family in families:
        for s in family.samples:
            if s.name not in (f"{RQ_TIME}_sum", f"{RQ_TIME}_count"):
                continue
            parsed = parse_cluster_name(s.labels.get("envoy_cluster_name", ""))
            if parsed is None:
                continue
            entry = sums.setdefault((parsed.model, parsed.pool), [0.0, 0.0])
            entry[0 if s.name.endswith("_count") else 1] += float(s.value)
    return {key: EndToEnd(n, ms) for key, (n, ms) in sums.items()}


class TritonStatsSource:
    """Read the statistics of ``models_by_pool``'s models from every serving replica."""

    def __init__(self, models_by_pool: Mapping[str, tuple[str, ...]], envoy_url: str | None = None, *,
                 composing: Mapping[str, str] | None = None, fetch: Fetch = http_get_text,
                 timeout_s: float = 1.0) -> None:
        """``composing``: composing step -> public model (an ensemble's steps are read too)."""
        self.models_by_pool = {pool: tuple(models) for pool, models in models_by_pool.items()}
        self.ensembles: dict[str, tuple[str, ...]] = {}
        for step, public in sorted((composing or {}).items()):
            self.ensembles[public] = (*self.ensembles.get(public, ()), step)
        self.envoy_url = envoy_url
        self.fetch = fetch
        self.timeout_s = timeout_s
        self.last_errors: dict[str, str] = {}

    def _replica_stats(self, pool: str, url: str) -> dict[str, ModelStats] | None:
        try:
            stats = parse_model_stats(json.loads(self.fetch(url, self.timeout_s)), url)
        except json.JSONDecodeError as e:
            self.last_errors[url] = f"StatsParseError: {url}: not JSON: {e}"
            return None
        except (StatsParseError, *FETCH_ERRORS) as e:
            self.last_errors[url] = f"{type(e).__name__}: {e}"
            return None
        wanted = {m for public in self.models_by_pool.get(pool, ()) for m in (public, *self.ensembles.get(public, ()))}
        return {m: s for m, s in stats.items() if m in wanted}

    def read(self, replicas: ReplicaSet) -> StatsReading:
        self.last_errors = {}
        by_replica: dict[tuple[str, str], Mapping[str, ModelStats]] = {}
        for pool in self.models_by_pool:
            for r in replicas.serving(pool):
                stats = self._replica_stats(pool, f"http://{r.host}:{r.http_port}/v2/models/stats")
                if stats is not None:
                    by_replica[(pool, f"{r.host}:{r.http_port}")] = stats
        end_to_end: dict[tuple[str, str], EndToEnd] = {}
        if self.envoy_url:
            try:
                end_to_end = parse_envoy_request_time(self.fetch(self.envoy_url, self.timeout_s), self.envoy_url)
            except (StatsParseError, *FETCH_ERRORS) as e:
                self.last_errors[self.envoy_url] = f"{type(e).__name__}: {e}"
        return StatsReading(by_replica, end_to_end, self.ensembles)
