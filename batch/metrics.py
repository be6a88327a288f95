"""Prometheus metrics of batch jobs.

Two kinds, from two places:

* what a worker process saw (``WorkerMetrics``, counters and gauges it updates): rows answered
  per pool, requests per outcome, the spare capacity it read, its in-flight limit and batch size;
* what the store holds (``StoreCollector``, read at scrape time, so every process exporting it
  agrees): per job rows by state, rows/s, queue depth, cost so far (pool time x price).

``rate(batch_rows_answered_total[1m])`` is the rows/s of a worker fleet; ``sum(batch_queue_depth_rows)``
is what KEDA scales workers on (``k8s/batch/``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from router_lib.metric_names import BATCH

if TYPE_CHECKING:
    from batch.backpressure import Headroom, Throttle
    from batch.kserve import Outcome
    from batch.store import Claim, JobStore, RowAnswer


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry

        def make(cls: Any, name: str) -> Any:
            _kind, labels, help_text = BATCH[name]
            return cls(name.removesuffix("_total"), help_text, list(labels), registry=r)

        self.rows = make(Counter, "batch_rows_answered_total")
        self.requests = make(Counter, "batch_requests_total")
        self.spare = make(Gauge, "batch_spare_capacity_rows_per_second")
        self.paused = make(Gauge, "batch_paused")
        self.in_flight_limit = make(Gauge, "batch_in_flight_limit")
        self.batch_size = make(Gauge, "batch_request_rows")

    def request(self, model: str, outcome: Outcome) -> None:
        self.requests.labels(model, outcome.kind.value).inc()

    def answered(self, claim: Claim, answers: Sequence[RowAnswer], accepted: int) -> None:
        for a in answers:
            self.rows.labels(claim.model, a.pool or "none", "error" if a.error else "ok").inc()

    def headroom(self, model: str, h: Headroom, throttle: Throttle) -> None:
        self.spare.labels(model).set(-1 if h.spare_rows_per_s is None else h.spare_rows_per_s)
        self.paused.labels(model).set(1 if h.pause else 0)
        self.in_flight_limit.labels(model).set(throttle.allowed())
        self.batch_size.labels(model).set(throttle.batch)


class StoreCollector(Collector):
    """Job-level figures read from the store at scrape time."""

    def __init__(self, store: JobStore, clock: Any = time.time) -> None:
        self.store = store
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        def family(name: str) -> GaugeMetricFamily:
            _kind, labels, help_text = BATCH[name]
            return GaugeMetricFamily(name, help_text, labels=list(labels))

        rows, rate = family("batch_job_rows"), family("batch_job_rows_per_second")
        cost, pool_s = family("batch_job_cost_usd"), family("batch_job_pool_seconds")
        depth = family("batch_queue_depth_rows")
        now = self.clock()
        for job in self.store.jobs():
            for state, n in (("total", job.rows_total), ("written", job.rows_written), ("failed", job.rows_failed),
                             ("answered", job.rows_answered), ("sent", job.rows_sent)):
                rows.add_metric([job.job_id, job.model, state], n)
            rate.add_metric([job.job_id, job.model], job.progress(now).rows_per_s)
            for pool, u in job.by_pool.items():
                cost.add_metric([job.job_id, job.model, pool], u.cost_usd)
                pool_s.add_metric([job.job_id, job.model, pool], u.pool_seconds)
        for job_id, n in self.store.queue_depth().items():
            depth.add_metric([job_id], n)
        yield from (rows, rate, cost, pool_s, depth)
