"""Environment variables the locustfile reads, and the loopback rule.  No locust import here:
the demo and the benchmark import this module in processes that must not be gevent-patched."""

from __future__ import annotations

import random
from collections.abc import Mapping

RECORDS_ENV = "LOAD_RECORDS_PATH"  # JSONL file for per-request records (records.py)
GRPC_TARGET_ENV = "LOAD_GRPC_TARGET"  # host:port of Envoy's gRPC listener (default: -H host, port 8001)
SEED_ENV = "LOAD_SEED"  # same seed -> same inputs per user, so runs against different fleets compare
# "1" (default): each user opens its connection to Envoy before its first measured request, as a
# serving client holds its connections; "0": the first request pays the set-up (benchmarks/platform/connect_first.py).
CONNECT_FIRST_ENV = "LOAD_CONNECT_FIRST"
# "spread" (default): each user sends its first request at a seeded random point of its own period
# (1 / requests_per_s), so users added in the same tick do not stay in step; "together": every user
# sends at once when added and, paced by constant_throughput, keeps sending in step with the others
# added with it (waves of up to 24 requests within +-5 ms at a burst, which no population of
# independent clients produces).
START_PHASE_ENV = "LOAD_START_PHASE"
START_PHASES = ("spread", "together")
# "random" (default): each wait between a user's requests is drawn from an exponential with mean
# 1 / requests_per_s, so each user's sends are a Poisson process at its rate (in closed loop: a late
# answer sends at once) and which requests land close together changes from second to second;
# "fixed": exactly one period apart, so each user keeps one phase for the whole run and which
# classes send close together is a property of the seed (the platform benchmark's calibration and
# validation seeds differed that way, 2026-11-30 15:47 UTC run).
PACING_ENV = "LOAD_PACING"
PACINGS = ("random", "fixed")
PACING_NOTES = {  # one line for a run's notes and reports
    "random": "users pace at random: exponential gaps with the mean of each user's period",
    "fixed": "users pace fixed: exactly one period between a user's requests",
}
START_PHASE_NOTES = {  # one line for a run's notes and reports
    "spread": "users start spread: each user's first request at a seeded random point of its own period",
    "together": "users start together: users added at once send at once and stay in step",
}
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


def one_of(value: str, choices: tuple[str, ...], label: str) -> str:
    """``value`` if it is one of ``choices``; else a ValueError naming ``label`` (e.g. ``"LOAD_PACING="``)."""
    if value not in choices:
        raise ValueError(f"{label}{value!r}: expected one of {choices}")
    return value


def _positive_rate(requests_per_s: float) -> float:
    if requests_per_s <= 0:
        raise ValueError(f"requests_per_s must be > 0, got {requests_per_s}")
    return requests_per_s


def start_phase(environ: Mapping[str, str]) -> str:
    """How users added together time their first request (``START_PHASE_ENV``)."""
    return one_of(environ.get(START_PHASE_ENV, "spread"), START_PHASES, f"{START_PHASE_ENV}=")


def first_request_delay_s(phase: str, requests_per_s: float, rng: random.Random) -> float:
    """Seconds a new user waits before its first request: 0 for "together", else uniform over its period."""
    one_of(phase, START_PHASES, "start phase ")
    return 0.0 if phase == "together" else rng.uniform(0.0, 1.0 / _positive_rate(requests_per_s))


def next_due_s(previous_due_s: float, period_s: float, now_s: float) -> float:
    """When a closed-loop user paced at one request per ``period_s`` sends next: one period after its
    previous request was due, or now when it has fallen more than a period behind (no catch-up burst)."""
    if period_s <= 0:
        raise ValueError(f"period_s must be > 0, got {period_s}")
    return max(previous_due_s + period_s, now_s)


def pacing(environ: Mapping[str, str]) -> str:
    """How a user spaces its requests (``PACING_ENV``)."""
    return one_of(environ.get(PACING_ENV, "random"), PACINGS, f"{PACING_ENV}=")


def pacing_period_s(kind: str, requests_per_s: float, rng: random.Random) -> float:
    """The next gap between a user's due times: its period, or an exponential draw with that mean."""
    one_of(kind, PACINGS, "pacing ")
    rate = _positive_rate(requests_per_s)
    return 1.0 / rate if kind == "fixed" else rng.expovariate(rate)
