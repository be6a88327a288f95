"""A batch worker: claims rows, sends them through Envoy as bronze requests, stores the answers,
appends the result file; any number of them run against one store.

One process runs ``senders`` threads sharing one ``Throttle`` (requests in flight, batch size) and
one thread that reads the control plane's headroom every ``poll_s``.  Each sender does, per claim:

    permit = throttle.acquire()          paused or backing off: wait here, holding no rows
    claim  = store.claim(batch size)      rows -> sent (leased)
    outcome = client.infer(rows)          one KServe v2 request through Envoy, x-sla-tier: bronze
      ok            -> store.answer        rows -> answered (durable), then store.write_ready
      pressure      -> store.release       rows -> pending (the attempt does not count); slow down
      client_error  -> split the batch; a single row fails for good with the platform's message
      server_error  -> store.release(counted); the row gives up after the store's max attempts

Nothing a worker holds is needed by anyone else after it dies: its leases expire and the next
claim recovers the rows (``batch.store_sqlite``).  The control server may die too: Envoy keeps
routing with the last weights, and the worker goes on with the requests' own signals (the last
headroom it read holds for ``stale_s``, then AIMD alone).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import requests

from batch.backpressure import UNKNOWN, Headroom, Throttle, ThrottleSettings, spare_capacity
from batch.inputs import Row
from batch.jobs import PoolUsage
from batch.kserve import KServeClient, Outcome, OutcomeKind
from batch.metrics import WorkerMetrics
from batch.store import Claim, JobStore, RowAnswer
from model_repository.definitions import ModelDefinition
from router_lib.domain import EmulatedOutputs, Fleet
from router_lib.policy_stages import build_capacity_table
from router_lib.policy_types import PolicySettings

log = logging.getLogger(__name__)


def pool_usage(fleet: Fleet, pool: str | None, model: str, rows: int, measured_s: float) -> dict[str, PoolUsage]:
    """Pool time and cost of one answered request of ``rows`` rows.

    Pool time is the pool's profiled service time of a batch of that size (what the request
    occupied one model instance for; in platform time, so a dilated fleet is not overcharged),
    falling back to the measured latency where the pool has no profile.  Cost = pool time x the
    pool's price per second."""
    if pool is None:
        return {}
    try:
        spec = fleet.pool(pool)
    except KeyError:
        return {pool: PoolUsage(rows, measured_s, 0.0, False)}
    profile = fleet.profiles.get((model, spec.accelerator))
    seconds = profile.latency_ms(rows) / 1000.0 / max(1, profile.instances_per_replica) if profile else measured_s
    synthetic = spec.emulated and spec.outputs is EmulatedOutputs.SYNTHETIC
    return {pool: PoolUsage(rows, seconds, seconds * spec.price_per_hour_usd / 3600.0, synthetic)}


def merge_usage(a: Mapping[str, PoolUsage], b: Mapping[str, PoolUsage]) -> dict[str, PoolUsage]:
    out = dict(a)
    for pool, u in b.items():
        prev = out.get(pool, PoolUsage(synthetic=u.synthetic))
        out[pool] = PoolUsage(prev.rows + u.rows, prev.pool_seconds + u.pool_seconds, prev.cost_usd + u.cost_usd,
                              u.synthetic)
    return out


class ControlStatusHeadroom:
    """Reads the control server's ``/status`` and turns it into a ``Headroom`` for one (model, tier)."""

    def __init__(self, admin_url: str, fleet: Fleet, *, timeout_s: float = 2.0, stale_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = admin_url.rstrip("/") + "/status"
        self.backlog_url = admin_url.rstrip("/") + "/backlog"
        self.fleet = fleet
        settings = PolicySettings(**fleet.routing)  # type: ignore[arg-type]
        table = build_capacity_table(fleet, settings)
        self.throughput = {(e.name, model): e.throughput_per_replica for model, es in table.serving.items() for e in es}
        # the profile's time for the full batch that throughput assumes: X = instances x B x 1000 / L(B)
        self.full_batch_ms = {(e.name, model): e.instances * e.max_batch * 1000.0 / e.throughput_per_replica
                              for model, es in table.serving.items() for e in es if e.throughput_per_replica > 0}
        self.max_utilisation = settings.max_utilisation
        self.tier_bounds_ms = {name: t.p99_ms for name, t in fleet.tiers.tiers.items()}
        self.total_weight = settings.total_weight
        self.timeout_s = timeout_s
        self.stale_s = stale_s
        self.clock = clock
        self._last: dict[tuple[str, str], tuple[float, Headroom]] = {}
        self._lag: dict[tuple[str, str], float] = {}
        self.errors = 0

    def _with_known_lag(self, status: dict[str, Any]) -> dict[str, Any]:
        """An idle pool reports no lag (nothing ran in the window): keep the last one it measured,
        or a paused batch would see the profile's full rate, resume at it, and overrun the pool."""
        for p in status.get("pools", []):
            for model, m in (p.get("metrics") or {}).items():
                key = (p["name"], model)
                if m.get("request_rate_per_s") and m.get("emulation_lag_ms") is not None:
                    self._lag[key] = float(m["emulation_lag_ms"])
                elif key in self._lag:
                    m["emulation_lag_ms"] = self._lag[key]
        return status

    def report_backlog(self, job: str, model: str, tier: str, rows_waiting: int, rows_per_s: float,
                       ttl_s: float) -> bool:
        """Tell the capacity decider what the job wants (``router_lib.backlog``); False when the
        control server did not take it (the job goes on: the report is advice, not a condition)."""
        body = {"source": job, "model": model, "tier": tier, "rows_per_s": rows_per_s, "rows_waiting": rows_waiting,
                "ttl_s": ttl_s}
        try:
            answer = requests.post(self.backlog_url, json=body, timeout=self.timeout_s)
        except requests.RequestException:
            return False
        if answer.status_code == 409:  # a follower control server: the next report may reach the leader
            log.debug("backlog report for %s reached a follower: %s", job, answer.text[:300])
        elif answer.status_code != 200:
            log.warning("backlog report for %s refused: HTTP %s %s", job, answer.status_code, answer.text[:300])
        return answer.status_code == 200

    def read(self, model: str, tier: str) -> Headroom:
        try:
            status = requests.get(self.url, timeout=self.timeout_s).json()
        except (requests.RequestException, ValueError) as e:
            self.errors += 1
            seen = self._last.get((model, tier))
            if seen and self.clock() - seen[0] <= self.stale_s:
                return seen[1]
            return Headroom(None, False, f"control plane unreachable ({type(e).__name__}): AIMD only")
        status = self._with_known_lag(status)
        h = spare_capacity(status, model=model, tier=tier, throughput_per_replica=self.throughput,
                           max_utilisation=self.max_utilisation, total_weight=self.total_weight,
                           tier_bounds_ms=self.tier_bounds_ms, full_batch_ms=self.full_batch_ms)
        self._last[(model, tier)] = (self.clock(), h)
        return h


@dataclass(frozen=True)
class WorkerSettings:
    senders: int = 4
    lease_s: float = 60.0
    poll_s: float = 1.0
    idle_poll_s: float = 0.5
    throttle: ThrottleSettings = ThrottleSettings()
    # A job asks the capacity decider for its rows not yet answered over this many seconds (None:
    # it asks for nothing and takes the spare capacity there is); reports expire after backlog_ttl_s.
    drain_target_s: float | None = 600.0
    backlog_ttl_s: float = 15.0


class Worker:
    def __init__(self, *, store: JobStore, endpoint: str, fleet: Fleet, models: Mapping[str, ModelDefinition],
                 headroom: ControlStatusHeadroom | None, settings: WorkerSettings = WorkerSettings(),
                 metrics: WorkerMetrics | None = None, worker_id: str | None = None,
                 only_models: Sequence[str] | None = None) -> None:
        self.store = store
        self.endpoint = endpoint
        self.fleet = fleet
        self.models = models
        self.headroom = headroom
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.only_models = tuple(only_models) if only_models else None
        self.stop_event = threading.Event()
        self.throttles: dict[str, Throttle] = {}  # per model: batch sizes differ per model
        self._lock = threading.Lock()
        self._tier_by_model: dict[str, str] = {}
        self._idle = threading.Event()
        self._job_routes: dict[str, tuple[str, str]] = {}  # job -> (model, tier), read once
        self._reported: set[str] = set()  # jobs with a backlog report in force

    def throttle(self, model: str) -> Throttle:
        with self._lock:
            if model not in self.throttles:
                t = self.settings.throttle
                max_batch = min(t.max_batch, self.models[model].max_batch_size)
                self.throttles[model] = Throttle(replace(t, max_batch=max_batch))
            return self.throttles[model]

    # -- run --------------------------------------------------------------------------------
    def run(self, *, exit_when_idle: bool = False) -> None:
        threads = [threading.Thread(target=self._sender, args=(exit_when_idle,), name=f"sender-{i}", daemon=True)
                   for i in range(self.settings.senders)]
        poller = threading.Thread(target=self._poll_headroom, name="headroom", daemon=True)
        poller.start()
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(timeout=0.5)
        finally:
            self.stop_event.set()
            poller.join(timeout=5)
            try:
                self._report_backlog()  # what is left (nothing, after an idle exit) replaces the last report
            except Exception:
                log.exception("last backlog report failed")

    def stop(self) -> None:
        self.stop_event.set()

    def _report_backlog(self) -> None:
        """Each job's rows not yet answered, as the rows/s that would drain them in the target time;
        a job that has none left (finished, cancelled) is reported once more at 0 and forgotten."""
        if self.headroom is None or not self.settings.drain_target_s:
            return
        depth = self.store.queue_depth()
        for job, rows in sorted(depth.items()):
            if job not in self._job_routes:
                view = self.store.job(job)
                self._job_routes[job] = (view.model, view.tier)
            model, tier = self._job_routes[job]
            if self.only_models is not None and model not in self.only_models:
                continue
            if self.headroom.report_backlog(job, model, tier, rows, rows / self.settings.drain_target_s,
                                            self.settings.backlog_ttl_s):
                self._reported.add(job)
        for job in sorted(self._reported - set(depth)):
            model, tier = self._job_routes[job]
            if self.headroom.report_backlog(job, model, tier, 0, 0.0, self.settings.backlog_ttl_s):
                self._reported.discard(job)

    def _poll_headroom(self) -> None:
        while not self.stop_event.is_set():
            try:
                self._report_backlog()
            except Exception:  # advice only: a store or network hiccup must not stop the headroom reads
                log.exception("backlog report failed")
            for model, tier in list(self._tier_by_model.items()):
                h = self.headroom.read(model, tier) if self.headroom is not None else UNKNOWN
                throttle = self.throttle(model)
                before = throttle.headroom
                moved = (h.spare_rows_per_s is not None and before.spare_rows_per_s is not None
                         and abs(h.spare_rows_per_s - before.spare_rows_per_s) > 0.25 * max(before.spare_rows_per_s, 1e-9))
                if moved or (h.pause, h.slow, h.spare_rows_per_s is None) != (before.pause, before.slow,
                                                                              before.spare_rows_per_s is None):
                    log.info("%s/%s: %s%s", model, tier, "PAUSED: " if h.pause else "slow: " if h.slow else "", h.reason)
                throttle.set_headroom(h)
                self.metrics.headroom(model, h, throttle)
            self.stop_event.wait(self.settings.poll_s)

    def _sender(self, exit_when_idle: bool) -> None:
        client = KServeClient(self.endpoint)
        idle_since: float | None = None
        while not self.stop_event.is_set():
            claim = self._next_claim()
            if claim is None:
                idle_since = idle_since or time.monotonic()
                if exit_when_idle and time.monotonic() - idle_since > 2 * self.settings.idle_poll_s \
                        and not any(self.store.queue_depth().values()):
                    return
                self.stop_event.wait(self.settings.idle_poll_s)
                continue
            idle_since = None
            self._serve_claim(client, claim)

    def _next_claim(self) -> Claim | None:
        """A permit first (so a paused worker holds no rows), then a claim sized to the batch."""
        work = self.store.next_work(self.only_models or tuple(self.models))
        if work is None:
            return None
        model, tier = work
        throttle = self.throttle(model)
        if model not in self._tier_by_model:  # first sight: read its headroom before sending
            self._tier_by_model[model] = tier
            if self.headroom is not None:
                h = self.headroom.read(model, tier)
                log.info("%s/%s: %s%s", model, tier, "PAUSED: " if h.pause else "slow: " if h.slow else "", h.reason)
                throttle.set_headroom(h)
        if not throttle.acquire(self.stop_event):
            return None
        claim = self.store.claim(worker=self.worker_id, max_rows=throttle.batch_size(), lease_s=self.settings.lease_s,
                                 models=(model,))
        if claim is None:
            throttle.release()
        return claim

    def _serve_claim(self, client: KServeClient, claim: Claim) -> None:
        throttle = self.throttle(claim.model)
        model = self.models[claim.model]
        try:
            answers: list[RowAnswer] = []
            usage: dict[str, PoolUsage] = {}
            rows = list(claim.rows)
            size = throttle.batch_size()
            for start in range(0, len(rows), size):  # a store's work item may exceed the batch
                got, used = self._answer_rows(client, model, claim, rows[start:start + size], throttle)
                if got is None:
                    self.store.release(claim, back_pressure=used is None)
                    return
                answers.extend(got)
                usage = merge_usage(usage, used or {})
            accepted = self.store.answer(claim, answers, usage)
            self.metrics.answered(claim, answers, accepted)
            self.store.write_ready(claim.job_id)
        finally:
            throttle.release()

    def _answer_rows(self, client: KServeClient, model: ModelDefinition, claim: Claim,
                     rows: list[tuple[int, Row]], throttle: Throttle
                     ) -> tuple[list[RowAnswer] | None, dict[str, PoolUsage] | None]:
        """-> (answers, usage); (None, None) on back-pressure, (None, {}) on a server error."""
        timeout = throttle.s.per_try_timeout_s
        outcome: Outcome = client.infer(model, claim.tier, [r for _, r in rows], timeout)
        self.metrics.request(claim.model, outcome)
        if outcome.kind is OutcomeKind.OK:
            throttle.succeeded(outcome.latency_s, len(rows))
            return ([RowAnswer(i, out, pool=outcome.pool) for (i, _), out in zip(rows, outcome.outputs, strict=True)],
                    pool_usage(self.fleet, outcome.pool, claim.model, len(rows), outcome.latency_s))
        if outcome.kind is OutcomeKind.PRESSURE:
            delay = throttle.pressured(timed_out="timed out" in outcome.message,
                                       sent_at=throttle.clock() - outcome.latency_s)
            log.info("back-pressure (%s): backing off %.2fs, %d in flight allowed, batch %d", outcome.message[:80],
                     delay, throttle.allowed(), throttle.batch)
            return None, None
        if outcome.kind is OutcomeKind.SERVER_ERROR:
            log.warning("server error for %d rows of %s: %s", len(rows), claim.job_id, outcome.message[:200])
            throttle.pressured(sent_at=throttle.clock() - outcome.latency_s)
            return None, {}
        # A client error: find the row(s) at fault by halves; the others are answered normally.
        if len(rows) == 1:
            return [RowAnswer(rows[0][0], error=outcome.message, pool=outcome.pool)], {}
        half = len(rows) // 2
        answers: list[RowAnswer] = []
        usage: dict[str, PoolUsage] = {}
        for part in (rows[:half], rows[half:]):
            got, used = self._answer_rows(client, model, claim, part, throttle)
            if got is None:
                return None, used
            answers.extend(got)
            usage = merge_usage(usage, used or {})
        return answers, usage
