"""Benchmark a model on a running Triton: closed-loop load at each (batch size, concurrency), real
requests over gRPC, warm-up first, client latency percentiles and throughput, and Triton's
server-side queue vs compute time for the same window.

One client, ``async_infer`` with callbacks, ``concurrency`` requests always in flight (a new one is
sent as soon as one completes).  Warm-up and measurement are one continuous stream: the window
starts after ``warmup_s`` without draining, so it measures steady state; a request counts if it
completes inside the window.  On this 2-core machine the client shares the CPU with Triton: the
figures are what a co-located client sees (``benchmarks/profiler`` checks them against a plain
threaded loop).
"""

from __future__ import annotations

import functools
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


def closed_loop(client: grpcclient.InferenceServerClient, model: str, request_sets: Sequence[Sequence[Any]],
                outputs: Sequence[str], concurrency: int, warmup_s: float, measure_s: float,
                on_window: Callable[[str], None] = lambda _: None,
                min_requests: int = 0) -> tuple[list[float], int, float]:
    """-> (latencies in ms of requests completed inside the window, errors inside it, window seconds).

    ``on_window("start")`` / ``on_window("end")`` run at the window's edges (statistics snapshots).
    """
    requested = [grpcclient.InferRequestedOutput(o) for o in outputs]
    cond = threading.Condition()
    in_flight = 0
    latencies: list[float] = []
    errors = 0
    window = [float("inf"), float("inf")]  # [start, end] of the measurement window, perf_counter s
    first_error: list[Exception] = []

    def done(sent_at: float, result: Any = None, error: Any = None) -> None:
        nonlocal in_flight, errors
        now = time.perf_counter()
        with cond:
            in_flight -= 1
            if window[0] <= now <= window[1]:
                if error is None:
                    latencies.append((now - sent_at) * 1000.0)
                else:
                    errors += 1
            if error is not None and not first_error:
                first_error.append(error)
            cond.notify()

    k = 0
    t0 = time.perf_counter()
    start, end = t0 + warmup_s, t0 + warmup_s + measure_s
    started = False
    with cond:
        while True:
            now = time.perf_counter()
            if not started and now >= start:
                cond.release()
                try:
                    on_window("start")
                finally:
                    cond.acquire()
                window[0], window[1] = time.perf_counter(), time.perf_counter() + 4 * measure_s
                end = window[0] + measure_s
                started = True
            if started and ((now >= end and len(latencies) + errors >= min_requests) or now >= window[1]):
                window[1] = now
                break
            while in_flight < concurrency:
                sent = time.perf_counter()
                # tritonclient calls back with keywords (result=, error=).
                client.async_infer(model, list(request_sets[k % len(request_sets)]),
                                   functools.partial(done, sent), outputs=requested)
                in_flight += 1
                k += 1
            # A completion notifies; the timeout only catches the window's edges.
            until_edge = (end if started else start) - time.perf_counter()
            cond.wait(min(0.05, until_edge) if until_edge > 0.001 else 0.05)
        cond.release()
        try:
            on_window("end")
        finally:
            cond.acquire()
        drain_deadline = time.perf_counter() + 120.0
        while in_flight and time.perf_counter() < drain_deadline:
            cond.wait(1.0)
        if in_flight:
            raise TimeoutError(f"{in_flight} requests to {model!r} still in flight 120 s after the window")
    if first_error and not latencies:
        raise RuntimeError(f"every request to {model!r} failed: {first_error[0]}")
    return latencies, errors, window[1] - window[0]


def measure_point(client: grpcclient.InferenceServerClient, model: ModelDefinition, artifacts: Path,
                  batch_size: int, concurrency: int, warmup_s: float, measure_s: float,
                  min_requests: int = 0) -> Point:
    """One setting: client percentiles plus Triton's queue/compute deltas for the public model and
    each composing model, over the same window."""
    names = [model.name, *model.composing_models]
    snaps: dict[str, dict[str, Mapping[str, Any]]] = {}

    def on_window(edge: str) -> None:
        snaps[edge] = stats_snapshot(client, names)

    lat, errors, window_s = closed_loop(client, model.name, request_sets(model, artifacts, batch_size),
                                        output_names(model), concurrency, warmup_s, measure_s, on_window,
                                        min_requests)
    server = {m: server_times(snaps["start"][m], snaps["end"][m]) for m in names}
    return summarise(batch_size, concurrency, window_s, lat, errors, server)


def sweep(url: str, model: ModelDefinition, artifacts: Path, plan: SweepPlan,
          progress: Callable[[tuple[int, int]], None] = lambda _: None) -> list[Point]:
    client = grpcclient.InferenceServerClient(url)
    try:
        points = []
        for b, c in plan.settings():
            progress((b, c))
            points.append(measure_point(client, model, artifacts, b, c, plan.warmup_s, plan.measure_s,
                                        plan.min_requests))
        return points
    finally:
        client.close()


@dataclass(frozen=True)
class ServerInfo:
    triton_version: str
    model_version: str
    instances: int
    max_batch_size: int


def server_info(url: str, model: ModelDefinition) -> ServerInfo:
    """What the server says about itself and the model's accelerated step (instance count)."""
    client = grpcclient.InferenceServerClient(url)
    try:
        meta = client.get_server_metadata(as_json=True)
        public = client.get_model_metadata(model.name, as_json=True)
        cfg = client.get_model_config(model.accelerated.name, as_json=True)["config"]
    finally:
        client.close()
    instances = sum(int(g.get("count", 1)) for g in cfg.get("instance_group", [])) or 1
    versions = public.get("versions") or ["1"]
    return ServerInfo(meta["version"], str(max(versions, key=int)), instances, int(cfg.get("max_batch_size", 0)))
