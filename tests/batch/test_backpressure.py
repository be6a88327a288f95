"""Spare capacity from the control plane's status, and the AIMD throttle (pure, injected clock)."""

from __future__ import annotations

import random
import threading

import pytest

from batch.backpressure import Headroom, Throttle, ThrottleSettings, spare_capacity

X = {("cpu", "text_embedding"): 100.0, ("inf2", "text_embedding"): 1000.0, ("cpu", "digits_classifier"): 2000.0}


def status(*, gold_demand: float = 0.0, gold_weights=None, bronze_weights=None, ready=None, draining=(),  # type: ignore[no-untyped-def]
           demand_known: bool = True) -> dict:
    ready = ready or {"cpu": 1, "inf2": 1}
    pools = [{"name": n, "ready_replicas": r, "draining": n in draining,
              "metrics": {"text_embedding": {"request_rate_per_s": 40.0}}} for n, r in ready.items()]
    return {"pools": pools, "routes": [
        {"model": "text_embedding", "tier": "gold", "weights": gold_weights or {"inf2": 100, "cpu": 0},
         "demand_per_s": gold_demand if demand_known else None},
        {"model": "text_embedding", "tier": "bronze", "weights": bronze_weights or {"inf2": 0, "cpu": 100},
         "demand_per_s": 5.0 if demand_known else None},
    ]}


def spare(s: dict) -> Headroom:
    return spare_capacity(s, model="text_embedding", tier="bronze", throughput_per_replica=X, max_utilisation=0.8)


@pytest.mark.parametrize(("case", "kwargs", "expected", "paused"), [
    ("idle-pool-is-all-spare", {}, 80.0, False),
    ("gold-on-another-pool-takes-nothing", {"gold_demand": 500.0}, 80.0, False),
    ("gold-on-the-same-pool-takes-its-share", {"gold_demand": 30.0, "gold_weights": {"cpu": 100}}, 50.0, False),
    ("gold-needing-it-all-pauses", {"gold_demand": 90.0, "gold_weights": {"cpu": 100}}, 0.0, True),
    ("two-replicas-double-it", {"ready": {"cpu": 2, "inf2": 1}}, 160.0, False),
    ("a-draining-pool-offers-nothing", {"draining": ("cpu",)}, 0.0, True),
    ("split-bronze-adds-both-pools", {"bronze_weights": {"cpu": 50, "inf2": 50}}, 880.0, False),
    ("unknown-demand-counts-the-measured-rate", {"demand_known": False, "gold_weights": {"cpu": 100}}, 40.0, False),
], ids=lambda v: v if isinstance(v, str) else "")
def test_spare_capacity(case, kwargs, expected, paused):
    h = spare(status(**kwargs))
    assert h.spare_rows_per_s == pytest.approx(expected) and h.pause is paused, h


@pytest.mark.parametrize(("kind", "expected"), [("not_needed", 880.0), ("no_replica", 80.0), ("error_rate", 80.0),
                                               ("measured_over_bound", 80.0)])
def test_a_pool_the_policy_would_fill_next_counts_an_excluded_one_does_not(kind, expected):
    """The policy fills cost-first: a pool at weight 0 only because cheaper ones cover today's
    demand takes the batch's growth; a pool excluded (unhealthy, over bound) does not."""
    s = status()
    s["routes"][1]["reason_kinds"] = {"cpu": "cheapest", "inf2": kind}
    assert spare(s).spare_rows_per_s == pytest.approx(expected)


def test_no_route_for_the_tier_pauses_and_says_why():
    s = status()
    s["routes"] = s["routes"][:1]
    h = spare(s)
    assert h.pause and "no route for text_embedding/bronze" in h.reason


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def throttle(**kw) -> tuple[Throttle, Clock]:  # type: ignore[no-untyped-def]
    clock = Clock()
    return Throttle(ThrottleSettings(**{"max_in_flight": 8, "max_batch": 32, "per_try_timeout_s": 10.0, **kw}),
                    clock=clock, rng=random.Random(1)), clock


def test_pressure_halves_the_limit_and_backs_off_exponentially():
    t, clock = throttle()
    t.limit = 8
    delays = [t.pressured() for _ in range(4)]
    assert t.limit == 1 and t.allowed() == 1
    assert all(b > a for a, b in zip(delays, delays[1:], strict=False)), delays
    stop = threading.Event()
    stop.set()
    assert not t.acquire(stop), "a stopped worker gets no permit"
    assert t.resume_at > clock.t
    clock.t = t.resume_at
    assert t.acquire(threading.Event())


def test_successes_add_back_one_per_round_up_to_the_maximum():
    t, _ = throttle()
    t.limit = 1
    for _ in range(200):
        t.succeeded(0.5, 32)
    assert t.allowed() == 8


def test_batches_shrink_near_the_per_try_timeout_and_grow_back_when_fast():
    t, _ = throttle()
    t.succeeded(6.0, 32)  # > half the 10 s timeout
    assert t.batch == 16
    t.pressured(timed_out=True)
    assert t.batch == 8
    for _ in range(3):
        t.succeeded(0.5, t.batch)
    assert t.batch == 32


def test_pause_allows_nothing_and_spare_capacity_caps_the_limit():
    t, _ = throttle()
    t.limit = 8
    t.succeeded(0.32, 32)  # 100 rows/s per request in flight
    t.set_headroom(Headroom(0.0, True, "gold needs it"))
    assert t.allowed() == 0
    t.set_headroom(Headroom(250.0, False))
    assert t.allowed() == 3  # ceil(250 rows/s x 0.32 s / 32 rows)
    t.set_headroom(Headroom(None, False))
    assert t.allowed() == 8


def test_the_cap_counts_the_rows_a_request_carries_as_paced_not_the_largest_batch():
    t, _ = throttle()
    t.limit = 8
    t.set_headroom(Headroom(12.0, False))  # 12 rows/s to spare: requests of 12 rows (pace_s 1 s), not 32
    t.succeeded(2.3, 12)
    assert t.batch_size() == 12
    assert t.allowed() == 3  # ceil(12 rows/s x 2.3 s / 12 rows); with the AIMD batch of 32 it was 1


@pytest.mark.parametrize(("gold_p99_ms", "paused", "slow"), [(20.0, False, False), (45.0, False, True),
                                                              (90.0, True, False)],
                         ids=["well-inside", "near-the-bound", "over-the-bound"])
def test_measured_gold_p99_slows_then_pauses_the_batch(gold_p99_ms, paused, slow):
    s = status(gold_demand=10.0)
    s["pools"][1]["metrics"]["text_embedding"]["p99_ms"] = gold_p99_ms  # inf2 carries gold, not bronze
    h = spare_capacity(s, model="text_embedding", tier="bronze", throughput_per_replica=X, max_utilisation=0.8,
                       tier_bounds_ms={"gold": 50.0, "silver": 150.0, "bronze": None})
    assert (h.pause, h.slow) == (paused, slow), h
    if paused or slow:
        assert h.guard and "gold p99" in h.reason and "inf2" in h.reason


def test_a_guard_pause_holds_through_a_flickering_reading():
    t, clock = throttle(guard_hold_s=10.0)
    t.set_headroom(Headroom(100.0, True, "gold p99 90 ms", guard=True))
    clock.t += 1
    t.set_headroom(Headroom(100.0, False, "fine"))  # the next one-second window happened to be fine
    assert t.allowed() == 0
    clock.t += 10
    assert t.allowed() == 1


def test_a_guard_pause_that_does_not_help_lets_the_batch_go_on_at_its_minimum():
    """Gold misses without the batch too (this machine): pausing forever would only stop the job."""
    t, clock = throttle(guard_max_pause_s=45.0)
    over = Headroom(100.0, True, "gold p99 90 ms", guard=True)
    t.set_headroom(over)
    assert t.allowed() == 0
    clock.t += 30
    t.set_headroom(over)
    assert t.allowed() == 0
    clock.t += 20
    t.set_headroom(over)
    assert t.allowed() == 1
    t.set_headroom(Headroom(100.0, False, "fine"))
    assert t.allowed() == 1, "the escape holds while the pause would"
    clock.t += 11
    t.set_headroom(Headroom(100.0, False, "fine"))
    assert t.allowed() >= 1
    t.set_headroom(over)
    assert t.allowed() == 0, "a new breach pauses again"
    t.set_headroom(Headroom(0.0, True, "gold needs the pool"))
    clock.t += 100
    assert t.allowed() == 0, "a pause for capacity has no escape"


def test_emulation_lag_derates_a_pools_capacity():
    s = status()
    s["pools"][0]["metrics"]["text_embedding"]["emulation_lag_ms"] = 300.0  # cpu: 100 ms batches take 400
    h = spare_capacity(s, model="text_embedding", tier="bronze", throughput_per_replica=X, max_utilisation=0.8,
                       full_batch_ms={("cpu", "text_embedding"): 100.0})
    assert h.spare_rows_per_s == pytest.approx(20.0)


def test_a_pool_carrying_the_batch_itself_is_not_a_guard():
    """Its measured p99 mixes in the batch's own large requests: the batch would slow for itself."""
    s = status(gold_demand=10.0, gold_weights={"cpu": 100}, bronze_weights={"cpu": 100})
    s["pools"][0]["metrics"]["text_embedding"]["p99_ms"] = 400.0
    h = spare_capacity(s, model="text_embedding", tier="bronze", throughput_per_replica=X, max_utilisation=0.8,
                       tier_bounds_ms={"gold": 50.0})
    assert not h.slow and not h.pause


def test_pressure_is_taken_once_per_round_trip():
    t, clock = throttle()
    t.limit = 8
    clock.t = 10.0
    t.pressured(timed_out=True, sent_at=0.0)
    for _ in range(3):  # the other requests that were in flight with it
        t.pressured(timed_out=True, sent_at=0.5)
    assert t.limit == 4 and t.batch == 16
    clock.t = 20.0
    t.pressured(sent_at=15.0)
    assert t.limit == 2


def test_slow_halves_the_in_flight_limit_on_each_reading():
    t, _ = throttle()
    t.limit = 8
    t.set_headroom(Headroom(100.0, False, "gold near", slow=True))
    t.set_headroom(Headroom(100.0, False, "gold near", slow=True))
    assert t.limit == 2


def test_requests_are_paced_to_the_spare_rows_per_second_in_small_batches():
    t, clock = throttle(max_in_flight=8)
    t.limit = 8
    t.set_headroom(Headroom(8.0, False, "8 rows/s spare"))
    assert t.batch_size() == 8, "at most one second of the spare per request"
    go = threading.Event()
    assert t.acquire(go)
    stop = threading.Event()
    stop.set()
    assert not t.acquire(stop), "the next request waits for the first one's rows to fit in the rate"
    clock.t += 1.0
    assert t.acquire(go)
    t.set_headroom(Headroom(None, False, "unknown"))
    assert t.batch_size() == 32


def test_the_throttle_starts_with_one_request_in_flight():
    t, _ = throttle(max_in_flight=8)
    assert t.allowed() == 1
