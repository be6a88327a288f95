"""Steady mixed load for the fault benchmark: both models, every tier, REST and gRPC, through Envoy
on 127.0.0.1 only, at a bounded rate, with every request's outcome recorded.

Outcomes, the distinction the benchmark's "0 accepted requests lost" rests on:

- ``ok``: answered with a result;
- ``refused``: never accepted: the connection to Envoy was refused (Envoy itself down), or the
  request was sent on a keep-alive connection after the Envoy at its other end was killed and
  reset at once (``reclassify_sent_to_dead``) - a client sees this at once and can retry
  elsewhere; counted, never hidden, but not "lost";
- ``shed``: the platform said no on purpose (HTTP 429 / RESOURCE_EXHAUSTED), with a retry hint;
- ``lost``: accepted and then not answered with a result: any 5xx or other error status, a reset
  or closed connection, a timeout.  This is what the scenarios bound.

The load is closed-loop with pacing: ``workers`` threads, each sending at ``rate_rps / workers``
(a thread never bursts to catch up), so the rate is bounded whatever happens to latency.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import requests
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

MIX = tuple((model, tier, proto) for model in ("digits_classifier", "text_embedding")
            for tier in ("gold", "silver", "bronze") for proto in ("http", "grpc"))


@dataclass(frozen=True)
class Request:
    t_s: float  # start, seconds since the load began
    latency_s: float
    model: str
    tier: str
    proto: str
    outcome: str  # ok | refused | shed | lost
    detail: str = ""


def _refused(text: str) -> bool:
    """Never reached a live Envoy: the connection was refused, or the request's write failed
    because the peer was already gone (``sendmsg``: a gRPC call sent on a connection a killed Envoy
    had reset, before the channel noticed).  A reset or close while waiting for the answer
    (``recvmsg``, "Connection aborted") is an accepted request lost."""
    text = text.lower()
    return ("connection refused" in text or "failed to connect" in text or "newconnectionerror" in text
            or "sendmsg: broken pipe" in text)


class MixedLoad:
    def __init__(self, http_endpoint: str, grpc_endpoint: str, digits: np.ndarray, *, rate_rps: float = 30.0,
                 workers: int = 8, timeout_s: float = 30.0) -> None:
        if not http_endpoint.startswith("127.0.0.1:") or not grpc_endpoint.startswith("127.0.0.1:"):
            raise ValueError(f"load goes to 127.0.0.1 only, got {http_endpoint} and {grpc_endpoint}")
        if rate_rps <= 0 or workers <= 0:
            raise ValueError(f"rate_rps and workers must be > 0, got {rate_rps} and {workers}")
        self.http_endpoint, self.grpc_endpoint = http_endpoint, grpc_endpoint
        self.digits = digits.astype(np.float32)
        self.rate_rps, self.workers, self.timeout_s = rate_rps, workers, timeout_s
        self.records: list[Request] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.t0 = 0.0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def start(self) -> MixedLoad:
        self.t0 = time.monotonic()
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"load-{i}", daemon=True)
                         for i in range(self.workers)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout_s + 5)

    def in_flight_bound(self) -> int:
        """At most this many requests are in flight at any instant (one per worker)."""
        return self.workers

    def reclassify_sent_to_dead(self, died_at_s: float, max_latency_s: float = 1.0) -> int:
        """Requests sent at or after ``died_at_s`` (load time: the moment Envoy was killed) that failed
        within ``max_latency_s`` on a reset or aborted connection reached no live Envoy: the one their
        keep-alive connection led to was dead, and the new one never had that connection.  They are
        ``refused``, not lost (their detail says why).  -> how many were reclassified."""
        n = 0
        with self._lock:
            for i, r in enumerate(self.records):
                text = r.detail.lower()
                if (r.outcome == "lost" and r.t_s >= died_at_s and r.latency_s <= max_latency_s
                        and ("reset by peer" in text or "connection aborted" in text)):
                    self.records[i] = replace(r, outcome="refused", detail=f"sent after Envoy was killed: {r.detail}"[:200])
                    n += 1
        return n

    def window(self, start_s: float, end_s: float) -> list[Request]:
        with self._lock:
            return [r for r in self.records if start_s <= r.t_s < end_s]

    def wait_ok(self, n: int, timeout_s: float = 60.0) -> bool:
        """Wait until ``n`` more requests succeeded; False at the timeout."""
        with self._lock:
            start = sum(r.outcome == "ok" for r in self.records)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if sum(r.outcome == "ok" for r in self.records[-4 * n - 50:]) >= n and \
                        sum(r.outcome == "ok" for r in self.records) >= start + n:
                    return True
            time.sleep(0.1)
        return False

    # -- the workers --------------------------------------------------------------------------
    def _run(self, index: int) -> None:
        session = requests.Session()
        grpc = grpcclient.InferenceServerClient(self.grpc_endpoint)
        period_s = self.workers / self.rate_rps
        next_at = time.monotonic() + period_s * index / self.workers
        i = index
        while not self._stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            next_at = max(next_at + period_s, time.monotonic())  # never burst to catch up
            model, tier, proto = MIX[i % len(MIX)]
            i += self.workers
            started = time.monotonic()
            outcome, detail = (self._http if proto == "http" else self._grpc)(session, grpc, model, tier, i)
            rec = Request(round(started - self.t0, 4), round(time.monotonic() - started, 5), model, tier, proto,
                          outcome, detail[:200])
            with self._lock:
                self.records.append(rec)
        grpc.close()
        session.close()

    def _row(self, i: int) -> list[float]:
        return [float(x) for x in self.digits[i % len(self.digits)]]

    def _http(self, session: requests.Session, _grpc: object, model: str, tier: str, i: int) -> tuple[str, str]:
        if model == "digits_classifier":
            body = {"inputs": [{"name": "float_input", "shape": [1, 64], "datatype": "FP32", "data": self._row(i)}]}
        else:
            body = {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": [f"fault soak {i}"]}]}
        try:
            r = session.post(f"http://{self.http_endpoint}/v2/models/{model}/infer", json=body,
                             headers={"x-sla-tier": tier}, timeout=self.timeout_s)
        except requests.ConnectionError as e:
            return ("refused" if _refused(repr(e)) else "lost"), f"{type(e).__name__}: {e}"
        except requests.RequestException as e:
            return "lost", f"{type(e).__name__}: {e}"
        if r.status_code == 200:
            return "ok", ""
        return ("shed" if r.status_code == 429 else "lost"), f"HTTP {r.status_code} {r.text[:120]}"

    def _grpc(self, _session: object, client: grpcclient.InferenceServerClient, model: str, tier: str, i: int
              ) -> tuple[str, str]:
        if model == "digits_classifier":
            inp = grpcclient.InferInput("float_input", [1, 64], "FP32")
            inp.set_data_from_numpy(self.digits[i % len(self.digits)][None, :])
        else:
            inp = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
            inp.set_data_from_numpy(np.array([[f"fault soak {i}".encode()]], dtype=object))
        try:
            client.infer(model, [inp], headers={"x-sla-tier": tier}, client_timeout=self.timeout_s)
            return "ok", ""
        except InferenceServerException as e:
            text = f"{e.status()} {e.message()}"
            if "RESOURCE_EXHAUSTED" in str(e.status()):
                return "shed", text
            return ("refused" if "UNAVAILABLE" in str(e.status()) and _refused(text) else "lost"), text


def load_digits(artifacts: Path) -> np.ndarray:
    return np.load(artifacts / "digits_holdout.npz")["x"][:64]
