"""Seeded discrete-event simulator of a fleet under a request trace, with the policy in the loop.

What it models (and the one decision that shapes it: simulate the queues, do not reuse the
policy's formulas, so the benchmark can show where those formulas are wrong):

* Each pool has ``replicas``; each replica runs, per model it serves, ``instances_per_replica``
  model instances fed by one FIFO queue (Triton's dynamic batcher per model, with
  ``max_queue_delay = 0``: a free instance takes whatever is queued, up to ``max_batch_size``).
  A pool whose tiers share it (``PoolSpec.share_tiers``) has one queue per priority level
  instead (``router_lib.priority``: gold's level first, FIFO within a level; non-preemptive, a
  running batch finishes), and its batches are capped where the model config caps them
  (``shared_batch_cap``).  Its queue policies (timeouts, bounded best-effort queues) are not
  modelled: they act only under overload, where the simulator's answer is "it does not fit".
* A client request of several items (a batch; ``Trace.request_id``) is routed as one and never
  split across executions: a free instance takes whole requests while they fit ``max_batch_size``
  (the first whatever its size), as Triton's batcher does.  Without ``request_id`` every item is
  a request.
* An execution of ``b`` requests takes ``profile.latency_ms(b) x m`` where the multiplier ``m``
  is log-normal with median 1 and p99 = ``p99_over_p50`` (``deterministic`` and ``exponential``
  exist for validation against M/D/1 and M/M/c closed forms).
* Within a pool, a request goes to the replica with the fewest outstanding requests for its model
  (Envoy's least-request).  Across pools, it follows the weights of the latest decision.
* Every ``tick_s`` the simulator builds :class:`FleetMetrics` (queue depth now, rates and p99 over
  the tick) and per-(model, tier) demand, and calls the same ``decide()`` the control server runs.
* Latency = completion - arrival + ``network_overhead_ms`` (Envoy hop).  Co-located models do not
  slow each other here (Triton instance groups on separate cores/streams); the planner and policy
  count their utilisations as shared, so the simulator is optimistic only about that.

Cost: each pool costs ``replicas x price`` per hour; $ per 1M requests of a (model, tier) charges
each pool's cost in proportion to the execution time its requests used (a batch's time is split
equally among its requests), idle time included; a pool that served nothing is shared by all.
"""

from __future__ import annotations

import bisect
import heapq
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from router_lib.domain import Fleet
from router_lib.latency_model import Z99, cost_per_million_usd
from router_lib.metrics import FleetMetrics, PoolModelMetrics
from router_lib.policy import decide
from router_lib.policy_types import PolicyInputs, PolicySettings, PolicyState, RoutingDecision
from router_lib.priority import shared_batch_cap, tier_priorities
from router_lib.routes import RouteKey
from router_lib.workload import Trace

DISTRIBUTIONS = ("lognormal", "deterministic", "exponential")


@dataclass(frozen=True)
class SimSettings:
    tick_s: float = 1.0
    network_overhead_ms: float = 0.5
    service_distribution: str = "lognormal"
    policy: PolicySettings = field(default_factory=PolicySettings)
    seed: int = 1

    def __post_init__(self) -> None:
        if self.service_distribution not in DISTRIBUTIONS:
            raise ValueError(f"service_distribution must be one of {DISTRIBUTIONS}")


@dataclass(frozen=True)
class LatencyStats:
    count: int
    within_bound: int
    compliance: float | None  # None for best-effort tiers
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float


@dataclass(frozen=True)
class PoolStats:
    pool: str
    accelerator: str
    replicas: int
    cost_per_hour_usd: float
    requests: int
    usd_per_million: float
    busy_fraction: float


@dataclass(frozen=True)
class SimResult:
    by_tier: Mapping[str, LatencyStats]
    by_route: Mapping[RouteKey, LatencyStats]
    by_pool: Mapping[str, PoolStats]
    usd_per_million_by_route: Mapping[RouteKey, float]
    cost_per_hour_usd: float
    usd_per_million: float
    requests: int
    unroutable_requests: int
    decisions: int
    decide_ms_mean: float
    decide_ms_max: float
    mean_wait_ms: float
    # Per trace item, in trace order: completion - arrival + overhead (inf if unroutable).  For callers
    # that aggregate items themselves: a request of batch b is b items whose latency is the slowest's,
    # and a model of what lies outside the pools (client, proxy) adds to each request, not each item.
    item_latency_ms: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)


def _stats(lat: np.ndarray, bound: float | None) -> LatencyStats:
    if lat.size == 0:
        return LatencyStats(0, 0, None, math.nan, math.nan, math.nan, math.nan)
    finite = np.where(np.isfinite(lat), lat, np.inf)
    within = int(np.count_nonzero(finite <= bound)) if bound is not None else lat.size
    p50, p95, p99 = np.percentile(finite, [50, 95, 99])
    return LatencyStats(int(lat.size), within, within / lat.size if bound is not None else None,
                        float(p50), float(p95), float(p99), float(np.mean(finite)))


class _Server:
    """The replicas of one (pool, model): queues, free instances, outstanding counts."""

    __slots__ = ("pool", "model", "latency", "max_batch", "queues", "free", "outstanding", "window_lat", "routed",
                 "levels")

    def __init__(self, pool: int, model: int, latency: list[float], max_batch: int, replicas: int, instances: int,
                 levels: int = 1):
        self.pool, self.model, self.latency, self.max_batch = pool, model, latency, max_batch
        self.levels = levels  # priority levels of the queue (1: FIFO); level 0 is served first
        # per replica, per priority level: the queued requests, each the list of its items
        self.queues: list[list[deque[list[int]]]] = [[deque() for _ in range(levels)] for _ in range(replicas)]
        self.free = [instances] * replicas
        self.outstanding = [0] * replicas
        self.window_lat: list[float] = []
        self.routed = 0


def simulate(fleet: Fleet, trace: Trace, settings: SimSettings | None = None, *,
             initial_demand: Mapping[tuple[str, str], float] | None = None,
             decide_fn: Callable[[PolicyInputs, PolicyState | None, float], tuple[RoutingDecision, PolicyState]] = decide,
             on_progress: Callable[[float], None] | None = None) -> SimResult:
    """Run ``trace`` through ``fleet`` with ``decide_fn`` in the loop; see the module docstring."""
    settings = settings or SimSettings()
    rng = np.random.default_rng(settings.seed)
    models, tiers = trace.models, trace.tiers
    pool_names = [p.name for p in fleet.pools]
    servers: dict[tuple[int, int], _Server] = {}
    sigma: dict[int, float] = {}
    priorities = tier_priorities(fleet.tiers)
    last_level = priorities.levels - 1
    # a trace tier unknown to the fleet's tiers waits behind every known one
    tier_level = [priorities.by_tier().get(t, last_level + 1) - 1 for t in tiers]
    for pi, pool in enumerate(fleet.pools):
        for mi, model in enumerate(models):
            prof = fleet.profiles.get((model, pool.accelerator))
            if prof is None or model not in pool.models:
                continue
            lat = [0.0] + [prof.latency_ms(b) for b in range(1, prof.max_batch_size + 1)]
            max_batch, levels = prof.max_batch_size, 1
            if pool.share_tiers:
                levels = last_level + 2
                max_batch = min(max_batch, shared_batch_cap(fleet.tiers, prof.latency_ms, max_batch) or max_batch)
            servers[(pi, mi)] = _Server(pi, mi, lat, max_batch, pool.replicas, prof.instances_per_replica, levels)
            sigma[id(servers[(pi, mi)])] = math.log(prof.p99_over_p50) / Z99
    n = len(trace)
    times = trace.times_s
    m_idx = trace.model_index.tolist()
    k_idx = trace.tier_index.tolist()
    t_list = times.tolist()
    groups = trace.request_id.tolist() if trace.request_id is not None else None
    u_route = rng.random(n).tolist()
    latency = np.full(n, np.inf)
    wait = np.zeros(n)
    req_pool = np.full(n, -1, dtype=np.int64)
    busy_share = np.zeros(n)
    dist = settings.service_distribution
    overhead = settings.network_overhead_ms
    normals = rng.standard_normal(max(1024, n)).tolist()
    expo = rng.exponential(1.0, max(1024, n)).tolist() if dist == "exponential" else []
    draw = [0]

    def multiplier(server: _Server) -> float:
        j = draw[0] = draw[0] + 1
        if dist == "deterministic":
            return 1.0
        if dist == "exponential":
            return expo[j % len(expo)]
        return math.exp(sigma[id(server)] * normals[j % len(normals)])

    heap: list[tuple[float, int, _Server, int, list[int], float]] = []
    seq = [0]

    def start(server: _Server, r: int, now: float) -> None:
        """A free instance takes whole requests, the highest priority level first, while they fit
        ``max_batch`` (the first one whatever its size: Triton runs a request larger than the
        preferred batch on its own); the batch closes at the first request that does not fit."""
        batch: list[int] = []
        for q in server.queues[r]:
            while q and (not batch or len(batch) + len(q[0]) <= server.max_batch):
                batch.extend(q.popleft())
            if q:
                break
        b = len(batch)
        if b >= len(server.latency):
            raise ValueError(f"a request of batch {b} for {models[server.model]} on {pool_names[server.pool]} is larger "
                             f"than the profile's max_batch_size {len(server.latency) - 1}")
        server.free[r] -= 1
        service_ms = server.latency[b] * multiplier(server)
        for req in batch:
            wait[req] = (now - t_list[req]) * 1000.0
        seq[0] += 1
        heapq.heappush(heap, (now + service_ms / 1000.0, seq[0], server, r, batch, service_ms))

    routes: dict[tuple[int, int], tuple[list[float], list[_Server]]] = {}

    def apply(decision: RoutingDecision) -> None:
        routes.clear()
        for (model, tier), route in decision.routes.items():
            if model not in models or tier not in tiers:
                continue
            mi, ki = models.index(model), tiers.index(tier)
            total = route.total or 1
            cum, targets, acc = [], [], 0
            for w in route.pools:
                if w.weight > 0:
                    acc += w.weight
                    cum.append(acc / total)
                    targets.append(servers[(pool_names.index(w.pool), mi)])
            routes[(mi, ki)] = (cum, targets)

    demand_counts = np.zeros((len(models), len(tiers)))
    state: PolicyState | None = None
    decide_times: list[float] = []

    def tick(now: float, window: float) -> None:
        nonlocal state
        metrics: dict[tuple[str, str], PoolModelMetrics] = {}
        for s in servers.values():
            p99 = float(np.percentile(s.window_lat, 99)) if s.window_lat else None
            metrics[(pool_names[s.pool], models[s.model])] = PoolModelMetrics(
                pool=pool_names[s.pool], model=models[s.model], queue_depth=float(sum(len(u) for levels in s.queues for q in levels for u in q)),
                request_rate_per_s=s.routed / window if window > 0 else 0.0, p99_ms=p99, window_s=window)
            s.window_lat, s.routed = [], 0
        demand = {RouteKey(m, t): 0.0 for m in fleet.models for t in fleet.tiers.tiers}
        if window > 0:
            demand.update({RouteKey(models[mi], tiers[ki]): float(demand_counts[mi, ki]) / window
                           for mi in range(len(models)) for ki in range(len(tiers))})
        else:
            demand.update({RouteKey(*k): v for k, v in (initial_demand or {}).items()})
        demand_counts[:] = 0
        inputs = PolicyInputs(fleet, FleetMetrics(metrics, now, {}), {p.name: p.replicas for p in fleet.pools},
                              settings.policy, demand)
        t0 = time.perf_counter()
        decision, state = decide_fn(inputs, state, now)
        decide_times.append((time.perf_counter() - t0) * 1000.0)
        apply(decision)

    tick(0.0, 0.0)
    next_tick = settings.tick_s
    i = 0
    unroutable = 0
    report_every = max(trace.duration_s / 20.0, settings.tick_s)
    next_report = report_every
    inf = math.inf
    while i < n or heap:
        t_arrival = t_list[i] if i < n else inf
        t_done = heap[0][0] if heap else inf
        t_tick = next_tick if next_tick <= trace.duration_s else inf
        if t_tick <= t_arrival and t_tick <= t_done:
            tick(t_tick, settings.tick_s)
            next_tick += settings.tick_s
            if on_progress is not None and t_tick >= next_report:
                on_progress(min(1.0, t_tick / trace.duration_s))
                next_report += report_every
        elif t_arrival <= t_done:
            j = i + 1  # the items of one request: [i, j)
            if groups is not None:
                while j < n and groups[j] == groups[i]:
                    j += 1
            size = j - i
            mi, ki = m_idx[i], k_idx[i]
            demand_counts[mi, ki] += size
            route = routes.get((mi, ki))
            if route is None:
                unroutable += size
            else:
                cum, targets = route
                server = targets[min(bisect.bisect_right(cum, u_route[i]), len(targets) - 1)]
                out = server.outstanding
                r = out.index(min(out))
                server.queues[r][tier_level[ki] if server.levels > 1 else 0].append(list(range(i, j)))
                out[r] += size
                server.routed += size
                req_pool[i:j] = server.pool
                if server.free[r] > 0:
                    start(server, r, t_arrival)
            i = j
        else:
            now, _, server, r, batch, service_ms = heapq.heappop(heap)
            share = service_ms / len(batch)
            for req in batch:
                lat = (now - t_list[req]) * 1000.0 + overhead
                latency[req] = lat
                busy_share[req] = share
                server.window_lat.append(lat)
            server.outstanding[r] -= len(batch)
            server.free[r] += 1
            if any(server.queues[r]):
                start(server, r, now)
    if on_progress is not None:
        on_progress(1.0)
    return _summarise(fleet, trace, latency, wait, req_pool, busy_share, unroutable, decide_times)


def _usd_per_million(cost_per_hour_usd: float, requests: int, duration_s: float) -> float:
    """Measured $ per 1M requests: ``cost_per_hour_usd`` paid over ``duration_s`` that served
    ``requests`` (the latency model's cost formula at the measured rate; inf with no request)."""
    if requests <= 0 or duration_s <= 0:
        return math.inf
    return cost_per_million_usd(cost_per_hour_usd, 1.0, requests / duration_s)


def _summarise(fleet: Fleet, trace: Trace, latency: np.ndarray, wait: np.ndarray, req_pool: np.ndarray,
               busy_share: np.ndarray, unroutable: int, decide_times: list[float]) -> SimResult:
    bounds = {name: t.p99_ms for name, t in fleet.tiers.tiers.items()}
    by_tier = {tier: _stats(latency[trace.tier_index == ki], bounds.get(tier)) for ki, tier in enumerate(trace.tiers)}
    by_route: dict[RouteKey, LatencyStats] = {}
    usd_route: dict[RouteKey, float] = {}
    pool_busy = np.zeros(len(fleet.pools))
    served = req_pool >= 0
    np.add.at(pool_busy, req_pool[served], busy_share[served])
    pool_cost_per_hour = np.array([p.replicas * p.price_per_hour_usd for p in fleet.pools])
    # Pools that served nothing are still paid for: their cost is shared by all requests.
    idle_cost_per_hour = float(np.sum(pool_cost_per_hour[pool_busy <= 0]))
    n_total = max(1, len(trace))
    for mi, model in enumerate(trace.models):
        for ki, tier in enumerate(trace.tiers):
            mask = (trace.model_index == mi) & (trace.tier_index == ki)
            if not mask.any():
                continue
            route = RouteKey(model, tier)
            by_route[route] = _stats(latency[mask], bounds.get(tier))
            busy = np.zeros(len(fleet.pools))
            sel = mask & served
            np.add.at(busy, req_pool[sel], busy_share[sel])
            # the route's share of each pool's cost, by the execution time its requests used
            charged_per_hour = float(np.sum(np.divide(busy, pool_busy, out=np.zeros_like(busy), where=pool_busy > 0)
                                            * pool_cost_per_hour))
            charged_per_hour += idle_cost_per_hour * int(mask.sum()) / n_total
            usd_route[route] = _usd_per_million(charged_per_hour, int(mask.sum()), trace.duration_s)
    by_pool = {}
    for pi, p in enumerate(fleet.pools):
        count = int(np.count_nonzero(req_pool == pi))
        by_pool[p.name] = PoolStats(
            p.name, p.accelerator.value, p.replicas, p.replicas * p.price_per_hour_usd, count,
            _usd_per_million(p.replicas * p.price_per_hour_usd, count, trace.duration_s),
            float(pool_busy[pi] / 1000.0 / (trace.duration_s * p.replicas)) if trace.duration_s > 0 else 0.0,
        )
    cost_per_hour = float(sum(p.replicas * p.price_per_hour_usd for p in fleet.pools))
    n = len(trace)
    return SimResult(
        by_tier=by_tier, by_route=by_route, by_pool=by_pool, usd_per_million_by_route=usd_route,
        cost_per_hour_usd=cost_per_hour, usd_per_million=_usd_per_million(cost_per_hour, n, trace.duration_s),
        requests=n, unroutable_requests=unroutable, decisions=len(decide_times),
        decide_ms_mean=float(np.mean(decide_times)) if decide_times else 0.0,
        decide_ms_max=float(np.max(decide_times)) if decide_times else 0.0,
        mean_wait_ms=float(np.mean(wait[served])) if served.any() else math.nan,
        item_latency_ms=latency,
    )
