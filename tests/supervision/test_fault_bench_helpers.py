"""The fault benchmark's pure parts (benchmarks/faults): what counts as lost or refused, the memory
growth rule, the load's bounds and the duty cycle's arguments.  No processes beyond this one."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.faults.faults import DutyCycle
from benchmarks.faults.load import MixedLoad, Request, _refused
from benchmarks.faults.scenarios import memory_growth


@pytest.mark.parametrize(("text", "refused"), [
    ("ConnectionError: HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded (NewConnectionError: "
     "[Errno 111] Connection refused)", True),
    ("StatusCode.UNAVAILABLE failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
     "Failed to connect to remote host: Connection refused", True),
    ("ConnectionError: ('Connection aborted.', RemoteDisconnected('Remote end closed connection'))", False),
    ("StatusCode.UNAVAILABLE Socket closed", False),
    ("HTTP 503 upstream connect error or disconnect/reset before headers", False),
    ("StatusCode.UNAVAILABLE Stream removed (sendmsg: Broken pipe (32))", True),
    ("StatusCode.UNAVAILABLE Stream removed (recvmsg:Connection reset by peer (104))", False),
], ids=["http refused", "grpc refused", "http reset after accept", "grpc closed after accept", "503",
        "grpc write to a dead peer", "grpc reset while waiting"])
def test_only_a_refused_connection_is_not_an_accepted_request(text, refused):
    assert _refused(text) is refused


def test_only_a_quick_reset_of_a_request_sent_after_envoy_was_killed_is_reclassified_refused():
    load = MixedLoad("127.0.0.1:1", "127.0.0.1:2", np.zeros((1, 64)))
    reset = "ConnectionError: ('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))"
    load.records = [
        Request(10.05, 11.2, "m", "gold", "http", "lost", reset),  # in flight at the fault: stays lost
        Request(11.30, 0.001, "m", "gold", "http", "lost", reset),  # sent after the kill, reset at once
        Request(11.31, 0.002, "m", "gold", "grpc", "lost", "StatusCode.UNAVAILABLE Stream removed (recvmsg:Connection "
                                                           "reset by peer (104))"),
        Request(11.40, 3.0, "m", "gold", "http", "lost", reset),  # waited 3 s: something accepted it
        Request(11.50, 0.001, "m", "gold", "http", "lost", "HTTP 503 upstream connect error"),  # an answer: lost
        Request(11.60, 0.010, "m", "gold", "http", "ok"),
    ]
    assert load.reclassify_sent_to_dead(11.28) == 2
    assert [r.outcome for r in load.records] == ["lost", "refused", "refused", "lost", "lost", "ok"]
    assert load.records[1].detail.startswith("sent after Envoy was killed: ")


def test_memory_growth_compares_medians_of_the_first_and_last_minute_of_one_process():
    samples = [(float(t), 100 * 2**20 + (5 * 2**20 if t > 240 else 0), 7) for t in range(0, 301)]
    samples[10] = (10.0, 900 * 2**20, 7)  # one spike does not decide it
    m = memory_growth(samples, 0.0, 300.0)
    assert m["growth"] == pytest.approx(0.05, abs=1e-3) and m["why"] == ""
    restarted = [(t, rss, 8 if t > 150 else 7) for t, rss, _ in samples]
    assert "restarted" in memory_growth(restarted, 0.0, 300.0)["why"]
    assert memory_growth(samples[:2], 0.0, 300.0)["growth"] is None


@pytest.mark.parametrize(("http", "grpc", "kw", "match"), [
    ("10.0.0.1:8000", "127.0.0.1:8001", {}, "127.0.0.1 only"),
    ("127.0.0.1:8000", "127.0.0.1:8001", {"rate_rps": 0}, "rate_rps"),
    ("127.0.0.1:8000", "127.0.0.1:8001", {"workers": 0}, "workers"),
])
def test_the_load_goes_to_loopback_only_and_is_bounded(http, grpc, kw, match):
    with pytest.raises(ValueError, match=match):
        MixedLoad(http, grpc, np.zeros((1, 64)), **kw)


def test_a_duty_cycle_must_leave_the_process_running_some_of_the_time():
    with pytest.raises(ValueError, match="stopped_ms"):
        DutyCycle([1], period_ms=100, stopped_ms=100)
