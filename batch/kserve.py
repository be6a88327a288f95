"""Sending a batch of rows through Envoy as one KServe v2 HTTP request, like any client.

The outcome of a request is classified once, here, because the worker's whole behaviour follows
from it:

* ``ok``: 200; one answer per row, outputs by name in the model's per-row shape, and the pool that
  served it (Envoy's ``x-served-by``).
* ``pressure``: the platform is saying "not now": 429, 503, 502/504 (Envoy's upstream overflow or
  timeout), gRPC RESOURCE_EXHAUSTED / UNAVAILABLE carried in the body, a client-side timeout, or a
  refused connection.  The rows go back unanswered and the worker slows down.
* ``client_error``: 4xx other than 429: the request itself is wrong.  A batch is split to find the
  row(s) at fault; a single row fails for good with the platform's message.
* ``server_error``: any other 5xx: retried like pressure, but counted against the row.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from batch.inputs import KSERVE_DATATYPES, Row
from model_repository.definitions import ModelDefinition

PRESSURE_STATUS = frozenset({429, 502, 503, 504})
PRESSURE_WORDS = ("RESOURCE_EXHAUSTED", "UNAVAILABLE", "overflow", "exceeded")


class OutcomeKind(enum.StrEnum):
    OK = "ok"
    PRESSURE = "pressure"
    CLIENT_ERROR = "client_error"
    SERVER_ERROR = "server_error"


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    latency_s: float
    pool: str | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)  # per row, in request order
    message: str = ""
    status: int | None = None


def request_body(model: ModelDefinition, rows: Sequence[Row]) -> dict[str, Any]:
    inputs = []
    for spec in model.inputs:
        data: list[Any] = []
        for r in rows:
            data.extend(r.inputs[spec.name])
        inputs.append({"name": spec.name, "shape": [len(rows), *spec.dims], "datatype": KSERVE_DATATYPES[spec.data_type],
                       "data": data})
    return {"inputs": inputs, "outputs": [{"name": o.name} for o in model.outputs]}


def _reshape(flat: list[Any], dims: Sequence[int]) -> Any:
    if len(dims) <= 1:
        return list(flat)
    step = math.prod(dims[1:])
    return [_reshape(flat[i * step:(i + 1) * step], dims[1:]) for i in range(dims[0])]


def split_outputs(model: ModelDefinition, body: dict[str, Any], n_rows: int) -> list[dict[str, Any]]:
    """The response's outputs cut into one dict per row (ValueError if the shapes do not add up)."""
    by_name = {o["name"]: o for o in body.get("outputs", [])}
    rows: list[dict[str, Any]] = [{} for _ in range(n_rows)]
    for spec in model.outputs:
        out = by_name.get(spec.name)
        if out is None:
            raise ValueError(f"response has no output {spec.name!r}")
        shape = list(out["shape"])
        if not shape or shape[0] != n_rows:
            raise ValueError(f"output {spec.name} has shape {shape}, expected {n_rows} rows")
        per_row = math.prod(shape[1:]) if len(shape) > 1 else 1
        data = out["data"]
        if len(data) != per_row * n_rows:
            raise ValueError(f"output {spec.name} has {len(data)} values for shape {shape}")
        for i in range(n_rows):
            rows[i][spec.name] = _reshape(data[i * per_row:(i + 1) * per_row], shape[1:])
    return rows


def classify(status: int, text: str) -> OutcomeKind:
    if status == 200:
        return OutcomeKind.OK
    if status in PRESSURE_STATUS or any(w in text for w in PRESSURE_WORDS):
        return OutcomeKind.PRESSURE
    if 400 <= status < 500:
        return OutcomeKind.CLIENT_ERROR
    return OutcomeKind.SERVER_ERROR


class KServeClient:
    """One keep-alive HTTP session to Envoy (one per sender thread: sessions are not thread-safe)."""

    def __init__(self, endpoint: str, *, tier_header: str = "x-sla-tier") -> None:
        self.base = endpoint if endpoint.startswith("http") else f"http://{endpoint}"
        self.tier_header = tier_header
        self.session = requests.Session()

    def infer(self, model: ModelDefinition, tier: str, rows: Sequence[Row], timeout_s: float) -> Outcome:
        url = f"{self.base}/v2/models/{model.name}/infer"
        started = time.perf_counter()
        try:
            r = self.session.post(url, json=request_body(model, rows), headers={self.tier_header: tier},
                                  timeout=timeout_s)
        except requests.Timeout:
            return Outcome(OutcomeKind.PRESSURE, time.perf_counter() - started, message=f"timed out after {timeout_s:g}s")
        except requests.ConnectionError as e:
            return Outcome(OutcomeKind.PRESSURE, time.perf_counter() - started, message=f"connection: {e}")
        latency = time.perf_counter() - started
        pool = r.headers.get("x-served-by") or None
        kind = classify(r.status_code, r.text[:500] if r.status_code != 200 else "")
        if kind is not OutcomeKind.OK:
            return Outcome(kind, latency, pool, message=f"HTTP {r.status_code}: {r.text[:300]}", status=r.status_code)
        try:
            outputs = split_outputs(model, r.json(), len(rows))
        except (ValueError, KeyError, TypeError) as e:
            return Outcome(OutcomeKind.SERVER_ERROR, latency, pool, message=f"bad response: {e}", status=200)
        return Outcome(OutcomeKind.OK, latency, pool, outputs, status=200)
