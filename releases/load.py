"""Steady KServe v2 load (HTTP, or gRPC ModelInfer) through Envoy, per SLA tier, recording which
version answered.

For the release tests, demo and benchmark: each tier gets its own threads (a ``requests.Session``
each: keep-alive, one per thread), paced to a request rate; every answer is recorded with the time,
the tier, the version Triton reports (``model_version``), the latency and whether it failed.  A
failed request is anything but HTTP 200 with outputs (gRPC: any error status): the "0 failed
requests" claims count these.  With ``protocol="grpc"``, ``url`` is Envoy's gRPC ``host:port``, the
body is the same KServe v2 JSON (turned into ``InferInput`` tensors) and ``model`` names the model.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import requests


@dataclass(frozen=True)
class Answer:
    at_s: float  # time.time() when the answer arrived
    tier: str
    version: str  # "" when it failed
    latency_ms: float
    ok: bool
    detail: str = ""
    output: Any = None


@dataclass
class TierLoad:
    """``rates``: requests per second per tier; ``body``: a function of the request index."""

    url: str  # e.g. http://127.0.0.1:8000/v2/models/digits_classifier/infer
    rates: Mapping[str, float]
    body: Callable[[int], dict[str, Any]]
    threads_per_tier: int = 2
    tier_header: str = "x-sla-tier"
    keep_outputs: bool = False
    protocol: str = "http"  # or "grpc"
    model: str = ""  # gRPC: the model asked (the body names it only for HTTP, in the path)
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> TierLoad:
        for tier, rate in self.rates.items():
            if rate <= 0:
                continue
            for k in range(self.threads_per_tier):
                t = threading.Thread(target=self._run, args=(tier, rate / self.threads_per_tier, k),
                                     name=f"load-{tier}-{k}", daemon=True)
                self._threads.append(t)
                t.start()
        return self

    def _send_http(self, session: requests.Session, tier: str, i: int, started: float) -> Answer:
        try:
            r = session.post(self.url, json=self.body(i), headers={self.tier_header: tier}, timeout=30)
            ms = (time.perf_counter() - started) * 1000
            if r.status_code == 200:
                data = r.json()
                return Answer(time.time(), tier, str(data.get("model_version", "")), ms, True,
                              output=data.get("outputs") if self.keep_outputs else None)
            return Answer(time.time(), tier, "", ms, False, f"HTTP {r.status_code}: {r.text[:200]}")
        except requests.RequestException as e:
            return Answer(time.time(), tier, "", (time.perf_counter() - started) * 1000, False,
                          f"{type(e).__name__}: {e}")

    def _send_grpc(self, client: Any, tier: str, i: int, started: float) -> Answer:
        from tritonclient.grpc import InferenceServerException, InferInput
        from tritonclient.utils import triton_to_np_dtype

        inputs = []
        for t in self.body(i)["inputs"]:
            tensor = InferInput(t["name"], list(t["shape"]), t["datatype"])
            tensor.set_data_from_numpy(np.asarray(t["data"], dtype=triton_to_np_dtype(t["datatype"])).reshape(t["shape"]))
            inputs.append(tensor)
        try:
            result = client.infer(self.model, inputs, headers={self.tier_header: tier}, client_timeout=30)
            ms = (time.perf_counter() - started) * 1000
            response = result.get_response()
            output = {o.name: result.as_numpy(o.name).tolist() for o in response.outputs} if self.keep_outputs else None
            return Answer(time.time(), tier, str(response.model_version), ms, True, output=output)
        except InferenceServerException as e:
            return Answer(time.time(), tier, "", (time.perf_counter() - started) * 1000, False, f"gRPC {e}")

    def _run(self, tier: str, rate: float, k: int) -> None:
        if self.protocol == "grpc":
            from tritonclient.grpc import InferenceServerClient

            client: Any = InferenceServerClient(self.url)
        else:
            client = requests.Session()
        period = 1.0 / rate
        next_at = time.monotonic() + k * period / self.threads_per_tier
        i = k
        while not self._stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            next_at = max(next_at + period, time.monotonic() - period)  # no burst to catch up after a stall
            started = time.perf_counter()
            answer = (self._send_grpc(client, tier, i, started) if self.protocol == "grpc"
                      else self._send_http(client, tier, i, started))
            with self._lock:
                self.answers.append(answer)
            i += self.threads_per_tier
        client.close()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=35)

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)

    def failures(self) -> list[Answer]:
        return [a for a in self.snapshot() if not a.ok]

    def versions(self, since_s: float = 0.0) -> dict[str, Counter[str]]:
        """Answers per tier and version since ``since_s``."""
        out: dict[str, Counter[str]] = {}
        for a in self.snapshot():
            if a.ok and a.at_s >= since_s:
                out.setdefault(a.tier, Counter())[a.version] += 1
        return out
