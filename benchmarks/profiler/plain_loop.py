"""The plainest possible throughput measurement, to check the profiler's load generator against:
``concurrency`` threads, each with its own tritonclient gRPC client, calling blocking ``infer`` in
a loop for a fixed time.  No callbacks, no windows, no statistics -- nothing shared with
``profiler.bench`` except the request payloads."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import tritonclient.grpc as grpcclient


def plain_loop_requests_per_s(url: str, model: str, request_sets: Sequence[Sequence[Any]], concurrency: int,
                              seconds: float, warmup_s: float = 1.0) -> float:
    counts = [0] * concurrency
    errors: list[Exception] = []
    begin = time.perf_counter() + warmup_s
    stop = begin + seconds

    def worker(i: int) -> None:
        client = grpcclient.InferenceServerClient(url)
        k = i
        try:
            while True:
                now = time.perf_counter()
                if now >= stop:
                    return
                client.infer(model, list(request_sets[k % len(request_sets)]))
                if begin <= time.perf_counter() <= stop:
                    counts[i] += 1
                k += concurrency
        except Exception as e:  # noqa: BLE001 - reported below, never swallowed
            errors.append(e)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"plain loop: request failed: {errors[0]}")
    return sum(counts) / seconds
