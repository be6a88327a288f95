"""Environment variables the locustfile reads, and the loopback rule.  No locust import here:
the demo and the benchmark import this module in processes that must not be gevent-patched."""

from __future__ import annotations

RECORDS_ENV = "LOAD_RECORDS_PATH"  # JSONL file for per-request records (records.py)
GRPC_TARGET_ENV = "LOAD_GRPC_TARGET"  # host:port of Envoy's gRPC listener (default: -H host, port 8001)
SEED_ENV = "LOAD_SEED"  # same seed -> same inputs per user, so runs against different fleets compare
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def require_loopback(host: str, what: str) -> None:
    """The load generator only ever targets this machine (a shared, 2-core one)."""
    if host not in LOOPBACK:
        raise ValueError(f"{what} must be on 127.0.0.1 (got {host!r}): this workload only targets the local platform")
