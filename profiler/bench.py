"""Benchmark a model on a running Triton: closed-loop load at each (batch size, concurrency), real
requests over gRPC, warm-up first, client latency percentiles and throughput, and Triton's
server-side queue vs compute time for the same window.

``async_infer`` with callbacks, ``concurrency`` requests always in flight, one gRPC client per
in-flight slot (each completion sends its slot's next request from its callback).  Warm-up and
measurement are one continuous stream: the window starts after ``warmup_s`` without draining, so
it measures steady state; a request counts if it completes inside the window.  On this 2-core machine the client shares the CPU with Triton: the
figures are what a co-located client sees (``benchmarks/profiler`` checks them against a plain
threaded loop).
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tritonclient.grpc as grpcclient

from model_repository.definitions import ModelDefinition
from profiler.analysis import Point, server_times, summarise
from profiler.inputs import output_names, request_sets


@dataclass(frozen=True)
class SweepPlan:
    batch_sizes: tuple[int, ...]
    concurrencies: tuple[int, ...]
    warmup_s: float = 1.0
    measure_s: float = 3.0
    # The window stays open past measure_s (up to 4x) until this many requests completed: a p99 of
    # a handful of slow large-batch requests would mean nothing.
    min_requests: int = 0

    def settings(self) -> list[tuple[int, int]]:
        """Every (batch, concurrency), concurrency-1 first (the latency table), then rising load."""
        return [(b, c) for c in sorted(self.concurrencies) for b in sorted(self.batch_sizes)]


def stats_snapshot(client: grpcclient.InferenceServerClient, models: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    out = {}
    for m in models:
        entries = client.get_inference_statistics(m, as_json=True).get("model_stats", [])
        out[m] = entries[0] if entries else {}
    return out


def closed_loop(clients: Any, model: str, request_sets: Sequence[Sequence[Any]],
                outputs: Sequence[str], concurrency: int, warmup_s: float, measure_s: float,
                on_window: Callable[[str], None] = lambda _: None,
                min_requests: int = 0) -> tuple[list[float], int, float]:
    """-> (latencies in ms of requests completed inside the window, errors inside it, window seconds).

    ``clients``: one client or a sequence; in-flight slot ``i`` always uses ``clients[i % n]``.  Each
    completion callback sends that slot's next request itself (no hand-off to another thread), and
    one client (gRPC channel) per slot spreads the callbacks over the channels' threads as
    independent clients would: with one shared channel the client, not the server, limited
    sub-millisecond models here.
    ``on_window("start")`` / ``on_window("end")`` run at the window's edges (statistics snapshots).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    pool = list(clients) if isinstance(clients, (list, tuple)) else [clients]
    requested = [grpcclient.InferRequestedOutput(o) for o in outputs]
    lock = threading.Lock()
    drained = threading.Event()
    counter = itertools.count()
    state = {"in_flight": 0, "stopping": False, "errors": 0, "any_ok": False}
    latencies: list[float] = []
    window = [float("inf"), float("inf")]  # [start, end] of the measurement window, perf_counter s
    first_error: list[Any] = []

    def send(slot: int) -> None:
        k = next(counter)
        # tritonclient calls back with keywords (result=, error=).
        pool[slot % len(pool)].async_infer(model, list(request_sets[k % len(request_sets)]),
                                           functools.partial(done, slot, time.perf_counter()), outputs=requested)

    def done(slot: int, sent_at: float, result: Any = None, error: Any = None) -> None:
        now = time.perf_counter()
        with lock:
            if window[0] <= now <= window[1]:
                if error is None:
                    latencies.append((now - sent_at) * 1000.0)
                else:
                    state["errors"] += 1
            if error is not None and not first_error:
                first_error.append(error)
            state["any_ok"] = state["any_ok"] or error is None
            if state["stopping"]:
                state["in_flight"] -= 1
                if state["in_flight"] == 0:
                    drained.set()
                return
        send(slot)

    t0 = time.perf_counter()
    with lock:
        state["in_flight"] = concurrency
    for slot in range(concurrency):
        send(slot)
    time.sleep(max(0.0, t0 + warmup_s - time.perf_counter()))
    on_window("start")
    with lock:
        window[0] = time.perf_counter()
    # The window stays open past measure_s (up to 4x) until min_requests completed in it.
    while True:
        time.sleep(0.01)
        now = time.perf_counter()
        with lock:
            enough = len(latencies) + state["errors"] >= min_requests
            if (now >= window[0] + measure_s and enough) or now >= window[0] + 4 * measure_s:
                window[1] = now
                state["stopping"] = True
                break
    on_window("end")
    if not drained.wait(120.0):
        raise TimeoutError(f"requests to {model!r} still in flight 120 s after the window")
    if first_error and not state["any_ok"]:
        raise RuntimeError(f"every request to {model!r} failed: {first_error[0]}")
    return latencies, int(state["errors"]), window[1] - window[0]


def measure_point(url: str, model: ModelDefinition, artifacts: Path,
                  batch_size: int, concurrency: int, warmup_s: float, measure_s: float,
                  min_requests: int = 0, client_options: Mapping[str, Any] | None = None) -> Point:
    """One setting: client percentiles plus Triton's queue/compute deltas for the public model and
    each composing model, over the same window (one gRPC client per in-flight slot, one more for
    the statistics)."""
    names = [model.name, *model.composing_models]
    snaps: dict[str, dict[str, Mapping[str, Any]]] = {}
    opts = dict(client_options or {})  # e.g. mTLS (xds_server.tls.ReplicaTls.tritonclient_options)
    stats_client = grpcclient.InferenceServerClient(url, **opts)
    load_clients = [grpcclient.InferenceServerClient(url, **opts) for _ in range(concurrency)]

    def on_window(edge: str) -> None:
        snaps[edge] = stats_snapshot(stats_client, names)

    try:
        lat, errors, window_s = closed_loop(load_clients, model.name, request_sets(model, artifacts, batch_size),
                                            output_names(model), concurrency, warmup_s, measure_s, on_window,
                                            min_requests)
    finally:
        for c in (stats_client, *load_clients):
            c.close()
    server = {m: server_times(snaps["start"][m], snaps["end"][m]) for m in names}
    return summarise(batch_size, concurrency, window_s, lat, errors, server)


def sweep(url: str, model: ModelDefinition, artifacts: Path, plan: SweepPlan,
          progress: Callable[[tuple[int, int]], None] = lambda _: None,
          client_options: Mapping[str, Any] | None = None) -> list[Point]:
    points = []
    for b, c in plan.settings():
        points.append(measure_point(url, model, artifacts, b, c, plan.warmup_s, plan.measure_s, plan.min_requests,
                                    client_options))
        progress((b, c))  # after: a progress bar counts finished settings
    return points


@dataclass(frozen=True)
class ServerInfo:
    triton_version: str
    model_version: str
    instances: int
    max_batch_size: int


def server_info(url: str, model: ModelDefinition, client_options: Mapping[str, Any] | None = None) -> ServerInfo:
    """What the server says about itself and the model's accelerated step (instance count)."""
    client = grpcclient.InferenceServerClient(url, **dict(client_options or {}))
    try:
        meta = client.get_server_metadata(as_json=True)
        public = client.get_model_metadata(model.name, as_json=True)
        cfg = client.get_model_config(model.accelerated.name, as_json=True)["config"]
    finally:
        client.close()
    instances = sum(int(g.get("count", 1)) for g in cfg.get("instance_group", [])) or 1
    versions = public.get("versions") or ["1"]
    return ServerInfo(meta["version"], str(max(versions, key=int)), instances, int(cfg.get("max_batch_size", 0)))
