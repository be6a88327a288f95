"""The load generator's bookkeeping against a fake client whose service time is known."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from profiler.bench import SweepPlan, closed_loop


class FakeClient:
    """``async_infer`` completes each request after ``service_s`` on its own thread; records the
    most requests ever in flight."""

    def __init__(self, service_s: float, fail_every: int = 0) -> None:
        self.service_s = service_s
        self.fail_every = fail_every
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.sent = 0

    def async_infer(self, model: str, inputs: list[Any], callback: Any, outputs: Any = None) -> None:
        with self.lock:
            self.in_flight += 1
            self.sent += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            fail = self.fail_every and self.sent % self.fail_every == 0

        def finish() -> None:
            time.sleep(self.service_s)
            with self.lock:
                self.in_flight -= 1
            callback(result=None if fail else "ok", error=RuntimeError("boom") if fail else None)

        threading.Thread(target=finish, daemon=True).start()


def test_keeps_exactly_concurrency_in_flight_and_measures_the_service_time() -> None:
    client = FakeClient(0.02)
    edges: list[str] = []
    lat, errors, window = closed_loop(client, "m", [[]], [], concurrency=3, warmup_s=0.1, measure_s=0.5,
                                      on_window=edges.append)
    assert edges == ["start", "end"]
    assert client.max_in_flight == 3
    assert errors == 0
    assert window == pytest.approx(0.5, abs=0.05)
    assert len(lat) / window == pytest.approx(3 / 0.02, rel=0.35)  # closed loop: concurrency / service time
    assert sorted(lat)[len(lat) // 2] == pytest.approx(20.0, abs=10.0)
    assert client.in_flight == 0  # drained before returning


def test_window_stays_open_for_min_requests_but_not_forever() -> None:
    _, _, window = closed_loop(FakeClient(0.05), "m", [[]], [], concurrency=1, warmup_s=0.0, measure_s=0.1,
                               min_requests=5)
    assert 0.2 < window < 0.45  # needed ~0.25 s for 5 requests; capped at 4 x 0.1 s
    lat, _, window = closed_loop(FakeClient(0.05), "m", [[]], [], concurrency=1, warmup_s=0.0, measure_s=0.1,
                                 min_requests=1000)
    assert window == pytest.approx(0.4, abs=0.05) and len(lat) < 1000


def test_errors_inside_the_window_are_counted_not_timed() -> None:
    lat, errors, _ = closed_loop(FakeClient(0.01, fail_every=4), "m", [[]], [], concurrency=2,
                                 warmup_s=0.05, measure_s=0.3)
    assert errors > 0 and len(lat) == pytest.approx(3 * errors, rel=0.5)


def test_a_server_that_fails_everything_is_an_error_not_a_measurement() -> None:
    with pytest.raises(RuntimeError, match="every request"):
        closed_loop(FakeClient(0.01, fail_every=1), "m", [[]], [], concurrency=1, warmup_s=0.0, measure_s=0.1)


def test_sweep_plan_measures_concurrency_one_first() -> None:
    assert SweepPlan((8, 1), (4, 1)).settings() == [(1, 1), (8, 1), (1, 4), (8, 4)]


def test_each_in_flight_slot_keeps_its_own_client() -> None:
    clients = [FakeClient(0.01), FakeClient(0.01)]
    closed_loop(clients, "m", [[]], [], concurrency=4, warmup_s=0.0, measure_s=0.2)
    assert [c.max_in_flight for c in clients] == [2, 2]  # slots 0, 2 -> first; 1, 3 -> second
    assert abs(clients[0].sent - clients[1].sent) <= 0.3 * clients[0].sent
