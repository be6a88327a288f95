"""Environment variables the locustfile reads, and the loopback rule.  No locust import here:
the demo and the benchmark import this module in processes that must not be gevent-patched."""

from __future__ import annotations

from collections.abc import Mapping

RECORDS_ENV = "LOAD_RECORDS_PATH"  # JSONL file for per-request records (records.py)
GRPC_TARGET_ENV = "LOAD_GRPC_TARGET"  # host:port of Envoy's gRPC listener (default: -H host, port 8001)
SEED_ENV = "LOAD_SEED"  # same seed -> same inputs per user, so runs against different fleets compare
# "1" (default): each user opens its connection to Envoy before its first measured request, as a
# serving client holds its connections; "0": the first request pays the set-up (benchmarks/platform/connect_first.py).
CONNECT_FIRST_ENV = "LOAD_CONNECT_FIRST"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def require_loopback(host: str, what: str) -> None:
    """The load generator only ever targets this machine (a shared, 2-core one)."""
    if host not in LOOPBACK:
        raise ValueError(f"{what} must be on 127.0.0.1 (got {host!r}): this workload only targets the local platform")


def connect_first(environ: Mapping[str, str]) -> bool:
    """Whether users open their connections before their first request (``CONNECT_FIRST_ENV``)."""
    value = environ.get(CONNECT_FIRST_ENV, "1")
    if value not in ("0", "1"):
        raise ValueError(f"{CONNECT_FIRST_ENV}={value!r}: expected 0 or 1")
    return value == "1"
