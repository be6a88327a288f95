"""Live metrics as the routing policy sees them: one :class:`PoolModelMetrics` per (pool, model).

The contract other components rely on (units in the names):

* ``queue_depth``: requests waiting in Triton for this model, summed over the pool's ready
  replicas (``nv_inference_pending_request_count``; an ensemble's composing models count for the
  public model).  A gauge: the latest value, not a window average.
* ``request_rate_per_s``: requests per second over the window, from Envoy's
  ``envoy_cluster_upstream_rq_total`` when Envoy is scraped, else Triton's success + failure.
* ``p95_ms`` / ``p99_ms``: quantiles of Envoy's ``upstream_rq_time`` histogram over the window
  (linear interpolation inside a bucket, like PromQL's ``histogram_quantile``); None when no
  request finished in the window or Envoy is not scraped.
* ``error_rate``: 5xx / total over the window, in [0, 1].
* ``ready``: at least one replica of the pool answered its scrape.
* ``emulation_lag_ms``: mean ms per execution by which an emulated pool's real compute exceeded
  its profile over the window (None when the pool is not emulated or executed nothing).
* ``window_s``: length of the window the rates cover (0 on the first read: rates are 0 then).

The text parsers live in :mod:`router_lib.metrics_text`, the window arithmetic in
:mod:`router_lib.metrics_window`; the sources that fetch them (adapters of ``control.ports.MetricsSource``)
live in :mod:`control.metrics_scrape` and :mod:`control.metrics_prometheus`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from router_lib.cluster_names import cluster_name, parse_cluster_name

__all__ = [
    "FleetMetrics",
    "MetricsParseError",
    "PoolModelMetrics",
    "cluster_name",
    "parse_cluster_name",
]


class MetricsParseError(ValueError):
    """Metric text (or an API answer) could not be read.  ``source`` names where it came from."""

    def __init__(self, source: str, detail: str) -> None:
        self.source = source
        self.detail = detail
        super().__init__(f"{source}: cannot parse metrics: {detail}")


@dataclass(frozen=True)
class PoolModelMetrics:
    """What one pool is doing for one model over the last window (see the module docstring)."""

    pool: str
    model: str
    queue_depth: float = 0.0
    request_rate_per_s: float = 0.0
    p95_ms: float | None = None
    p99_ms: float | None = None
    error_rate: float = 0.0
    ready: bool = True
    emulation_lag_ms: float | None = None
    window_s: float = 0.0


@dataclass(frozen=True)
class FleetMetrics(Mapping[tuple[str, str], PoolModelMetrics]):
    """Read-only mapping (pool, model) -> :class:`PoolModelMetrics`, taken at ``timestamp_s``.

    ``ready_replicas`` is the number of replicas of each pool that answered (absent pool: unknown,
    the policy then uses the configured replica count).  ``tier_rate_per_s``: requests per second
    per SLA tier over the window, all models together (Envoy's per-tier virtual clusters; empty
    when unknown): the policy uses its shares to split each model's rate over the tiers.
    """

    by_pool_model: Mapping[tuple[str, str], PoolModelMetrics] = field(default_factory=dict)
    timestamp_s: float = 0.0
    ready_replicas: Mapping[str, int] = field(default_factory=dict)
    tier_rate_per_s: Mapping[str, float] = field(default_factory=dict)

    def __getitem__(self, key: tuple[str, str]) -> PoolModelMetrics:
        return self.by_pool_model[key]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.by_pool_model)

    def __len__(self) -> int:
        return len(self.by_pool_model)

    def __hash__(self) -> int:  # Mapping sets __hash__ to None; identity is enough here.
        return id(self)


class MetricsUnavailableError(RuntimeError):
    """A whole metrics source (e.g. the Prometheus server) could not be reached.  A control loop
    should keep the routes in force and try again next tick."""
