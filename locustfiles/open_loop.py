"""An open-loop load generator for capacity experiments: arrivals follow a rate schedule, not the
server's pace.

Why not locust's users here: a closed-loop user waits for each answer before sending the next, so
a slow fleet receives less load, and a scale-up looks like it worked because the load backed off.
Capacity is judged against the demand that arrives regardless.  Arrivals are a seeded Poisson
process per phase; a pool of worker threads sends each request at its scheduled time over HTTP
keep-alive (KServe v2 binary tensors, the same payloads as the locust users) and records it as a
``RequestRecord``.  Latency is measured from the scheduled time, so a client that falls behind
shows up as latency, never as missing load (``late_ms`` says how far behind it ran).

Bounded by construction: a finite schedule, loopback endpoints only, a timeout per request.
"""

from __future__ import annotations

import http.client
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from locustfiles.payloads import check_outputs, http_body, make_batch
from locustfiles.records import RequestRecord
from locustfiles.settings import require_loopback

TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Phase:
    """``duration_s`` of arrivals at ``rate_per_s`` (requests per second, all routes together)."""

    duration_s: float
    rate_per_s: float


@dataclass(frozen=True)
class RouteMix:
    """One route of the mix and its share of the arrivals."""

    model: str
    tier: str
    share: float


def arrival_times(phases: Sequence[Phase], seed: int) -> list[float]:
    """Poisson arrival offsets (s from the start) over the phases."""
    rng = random.Random(seed)
    out: list[float] = []
    start = 0.0
    for phase in phases:
        if phase.rate_per_s > 0:
            t = start + rng.expovariate(phase.rate_per_s)
            while t < start + phase.duration_s:
                out.append(t)
                t += rng.expovariate(phase.rate_per_s)
        start += phase.duration_s
    return out


@dataclass
class OpenLoopResult:
    records: list[RequestRecord]
    started_unix_s: float
    max_late_ms: float

    @property
    def failed(self) -> list[RequestRecord]:
        return [r for r in self.records if not r.ok]


def _send(conn: http.client.HTTPConnection, body: bytes, json_size: int, model: str, tier: str
          ) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(json_size),
               "x-sla-tier": tier}
    conn.request("POST", f"/v2/models/{model}/infer", body=body, headers=headers)
    response = conn.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


@dataclass(frozen=True)
class Arrival:
    """One request of a schedule: ``offset_s`` after the start, to ``model`` at ``tier``."""

    offset_s: float
    model: str
    tier: str


def mixed_arrivals(phases: Sequence[Phase], mix: Sequence[RouteMix], seed: int = 1) -> list[Arrival]:
    """Poisson arrivals over ``phases``, each assigned a route of ``mix`` by its share."""
    if not mix or sum(m.share for m in mix) <= 0:
        raise ValueError("the route mix must have a positive share")
    rng = random.Random(seed + 1)
    weights = [m.share for m in mix]
    return [Arrival(t, route.model, route.tier)
            for t, route in ((t, rng.choices(mix, weights)[0]) for t in arrival_times(phases, seed))]


def run_open_loop(endpoint: str, phases: Sequence[Phase], mix: Sequence[RouteMix], *, seed: int = 1,
                  workers: int = 32, on_record: Callable[[RequestRecord], None] | None = None) -> OpenLoopResult:
    """Send Poisson arrivals over ``phases`` with the route ``mix`` to ``endpoint``."""
    return run_arrivals(endpoint, mixed_arrivals(phases, mix, seed), seed=seed, workers=workers, on_record=on_record)


def run_arrivals(endpoint: str, schedule: Sequence[Arrival], *, seed: int = 1, workers: int = 32,
                 on_record: Callable[[RequestRecord], None] | None = None,
                 start_at_unix_s: float | None = None) -> OpenLoopResult:
    """Send every arrival of ``schedule`` at its time to ``endpoint`` (``127.0.0.1:port``, Envoy's
    HTTP listener); return every record.  ``start_at_unix_s``: when offset 0 is (several runs
    started at the same instant see the same arrivals at the same times)."""
    host, port = endpoint.rsplit(":", 1)
    require_loopback(host, "the endpoint")
    import tritonclient.http as httpclient

    rng = random.Random(seed)
    # A few payloads per model, built once: the server's work, not the client's, is measured.
    bodies = {model: [(b, http_body(b)) for b in (make_batch(model, 1, rng) for _ in range(8))]
              for model in sorted({a.model for a in schedule})}
    todo: queue.Queue[tuple[Arrival, int] | None] = queue.Queue()
    for arrival in sorted(schedule, key=lambda a: a.offset_s):
        todo.put((arrival, rng.randrange(8)))
    for _ in range(workers):
        todo.put(None)
    records: list[RequestRecord] = []
    lock = threading.Lock()
    late = [0.0]
    started = start_at_unix_s if start_at_unix_s is not None else time.time() + 0.2
    origin = time.monotonic() + (started - time.time())

    def work() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
        while (item := todo.get()) is not None:
            route, i = item
            offset = route.offset_s
            wait = origin + offset - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            batch, (body, json_size) = bodies[route.model][i]
            sent = time.monotonic()
            ok, pool, emulated, error = False, "", False, ""
            try:
                status, headers, data = _send(conn, body, json_size, route.model, route.tier)
                pool, emulated = headers.get("x-served-by", ""), headers.get("x-emulated", "") == "true"
                if status == 200:
                    header_len = int(headers.get("inference-header-content-length", "0")) or None
                    result = httpclient.InferResult.from_response_body(data, header_length=header_len)
                    outputs = {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}
                    error = check_outputs(batch, {k: v for k, v in outputs.items() if isinstance(v, np.ndarray)})
                    ok = not error
                else:
                    error = f"HTTP {status}: {data[:200]!r}"
            except (OSError, http.client.HTTPException) as e:
                error = f"{type(e).__name__}: {e}"
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
            done = time.monotonic()
            record = RequestRecord(t_unix_s=started + offset, tier=route.tier, model=route.model, protocol="http",
                                   pool=pool, emulated=emulated, latency_ms=(done - (origin + offset)) * 1000.0,
                                   ok=ok, error=error)
            with lock:
                records.append(record)
                late[0] = max(late[0], (sent - (origin + offset)) * 1000.0)
            if on_record is not None:
                on_record(record)
        conn.close()

    threads = [threading.Thread(target=work, name=f"open-loop-{i}", daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records.sort(key=lambda r: r.t_unix_s)
    return OpenLoopResult(records, started, late[0])
