"""Load schedules (pure) and the per-request records file."""

from __future__ import annotations

from pathlib import Path

import pytest

from locustfiles.records import RecordWriter, RequestRecord, read_records
from locustfiles.schedule import Schedule
from locustfiles.settings import require_loopback


@pytest.mark.parametrize(("kind", "t", "expected"), [
    pytest.param("steady", 0.0, 1.0, id="steady-starts-at-base"),
    pytest.param("steady", 89.9, 1.0, id="steady-stays-at-base"),
    pytest.param("steady", 90.0, None, id="the-run-ends-at-its-duration"),
    pytest.param("step", 29.9, 1.0, id="step-base-in-the-first-third"),
    pytest.param("step", 30.0, 2.0, id="step-doubles-in-the-middle-third"),
    pytest.param("step", 60.0, 1.0, id="step-back-to-base-in-the-last-third"),
    pytest.param("burst", 5.0, 1.0, id="no-burst-before-the-first-period"),
    pytest.param("burst", 21.0, 3.0, id="burst-at-the-start-of-a-period"),
    pytest.param("burst", 26.0, 1.0, id="burst-lasts-burst-on-s"),
])
def test_schedule_multiplier(kind: str, t: float, expected: float | None) -> None:
    assert Schedule(kind, 90.0).multiplier(t) == expected


def test_step_changes_are_listed_once() -> None:
    assert Schedule("step", 90.0).changes() == [(0.0, 1.0), (30.0, 2.0), (60.0, 1.0)]


def test_unknown_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="LOAD_SHAPE"):
        Schedule("ramp", 90.0)


@pytest.mark.parametrize("host", ["10.0.0.5", "example.com", "0.0.0.0"])
def test_load_only_targets_loopback(host: str) -> None:
    with pytest.raises(ValueError, match="127.0.0.1"):
        require_loopback(host, "the -H host")


def test_records_round_trip_and_a_truncated_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    writer = RecordWriter(path)
    rec = RequestRecord(1.5, "gold", "text_embedding", "grpc", "inf2", True, 12.25, True, 1, "")
    writer.write(rec)
    writer.close()
    with open(path, "a") as f:
        f.write('{"t_unix_s": 2.0, "tier": "go')
    assert read_records(path) == [rec]


def test_triton_counters_are_read_by_family_name() -> None:
    from reporting.recorder import parse_triton_counters

    text = ('# TYPE nv_inference_count counter\n'
            'nv_inference_count{model="digits_classifier",version="1"} 12\n'
            '# TYPE nv_inference_exec_count counter\n'
            'nv_inference_exec_count{model="digits_classifier",version="1"} 4\n')
    assert parse_triton_counters(text) == {"digits_classifier": {"nv_inference_count": 12.0,
                                                                 "nv_inference_exec_count": 4.0}}


def test_users_connect_first_unless_told_otherwise_and_a_bad_setting_is_named() -> None:
    from locustfiles.runner import LocustRun
    from locustfiles.settings import CONNECT_FIRST_ENV, connect_first

    assert connect_first({}) is True
    assert connect_first({CONNECT_FIRST_ENV: "0"}) is False
    with pytest.raises(ValueError, match=f"{CONNECT_FIRST_ENV}='yes'"):
        connect_first({CONNECT_FIRST_ENV: "yes"})
    run = LocustRun("127.0.0.1:1", "127.0.0.1:2")
    assert run.env(Path("r.jsonl"))[CONNECT_FIRST_ENV] == "1"
    assert LocustRun("127.0.0.1:1", "127.0.0.1:2", connect_first=False).env(Path("r.jsonl"))[CONNECT_FIRST_ENV] == "0"


def test_connect_first_benchmark_takes_each_users_first_request_and_the_bronze_tail_after() -> None:
    from benchmarks.platform.connect_first import first_requests

    def row(t: float, tier: str, ms: float, batch: int = 1) -> dict[str, object]:
        return {"t_unix_s": 100.0 + t, "tier": tier, "model": "m", "protocol": "http", "batch": batch,
                "latency_ms": ms, "ok": True}

    rows = [row(0.0, "bronze", 30.0, 32), row(0.01, "gold", 15.0), row(0.2, "gold", 2.0),
            *[row(1.0 + i / 10, "bronze", float(i), 32) for i in range(1, 101)]]
    out = first_requests(rows)
    assert out["first_ms"] == {"bronze/m/http/b32": [30.0], "gold/m/http/b1": [15.0]}
    assert out["first_max_ms"] == 30.0
    assert out["later_bronze_p99_ms"] == 99.0 and out["requests"] == 103 and out["failed"] == 0
    assert out["users_added_max_ms"] is None  # nothing sent around the burst's start (20 s)
    added = first_requests([*rows, row(19.6, "gold", 200.0), row(20.4, "silver", 3.0), row(21.0, "gold", 500.0)])
    assert added["users_added_max_ms"] == 200.0  # within 0.5 s of 20 s only

    with pytest.raises(ValueError, match="no requests"):
        first_requests([])


def test_replica_reads_sum_counters_keep_statistics_and_leave_out_a_replica_that_does_not_answer(
        caplog: pytest.LogCaptureFixture) -> None:
    import http.server
    import threading

    from localnet.ports import free_port
    from reporting.recorder import read_triton_stats, scrape_counters

    metrics = (b'# TYPE nv_inference_count counter\n'
               b'nv_inference_count{model="digits_classifier",version="1"} 5\n')

    class Replica(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the handler's API
            body = metrics if self.path == "/metrics" else b'{"model_stats": []}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Replica)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port, dead = server.server_address[1], free_port()
    try:
        status = {"pools": [{"name": "cpu", "replicas": [
            {"index": 0, "http_port": port, "metrics_port": port},
            {"index": 1, "http_port": port, "metrics_port": port},
            {"index": 2, "http_port": dead, "metrics_port": dead}]}]}
        _emulation, triton = scrape_counters(status)
        assert triton == {"cpu": {"digits_classifier": {"nv_inference_count": 10.0}}}  # two replicas summed
        assert read_triton_stats(status) == {"cpu": {"0": {"model_stats": []}, "1": {"model_stats": []}}}
        assert "cpu replica 2" in caplog.text  # the dead one is named, not silently dropped
    finally:
        server.shutdown()
        server.server_close()


def test_users_start_spread_unless_told_otherwise_each_within_its_own_period() -> None:
    import random

    from locustfiles.runner import LocustRun
    from locustfiles.settings import START_PHASE_ENV, first_request_delay_s, start_phase

    assert start_phase({}) == "spread"
    assert start_phase({START_PHASE_ENV: "together"}) == "together"
    with pytest.raises(ValueError, match=f"{START_PHASE_ENV}='random'"):
        start_phase({START_PHASE_ENV: "random"})
    delays = [first_request_delay_s("spread", 4.0, random.Random(f"1:User:{n}:phase")) for n in range(200)]
    assert all(0.0 <= d < 0.25 for d in delays)
    assert max(delays) - min(delays) > 0.2  # spread over the period, not bunched
    assert delays == [first_request_delay_s("spread", 4.0, random.Random(f"1:User:{n}:phase")) for n in range(200)]
    assert first_request_delay_s("together", 4.0, random.Random(1)) == 0.0
    with pytest.raises(ValueError, match="requests_per_s"):
        first_request_delay_s("spread", 0.0, random.Random(1))
    assert LocustRun("127.0.0.1:1", "127.0.0.1:2").env(Path("r.jsonl"))[START_PHASE_ENV] == "spread"
    assert LocustRun("127.0.0.1:1", "127.0.0.1:2", start_phase="together").env(Path("r"))[START_PHASE_ENV] == "together"
    with pytest.raises(ValueError, match="start_phase 'late'"):
        LocustRun("127.0.0.1:1", "127.0.0.1:2", start_phase="late")


@pytest.mark.parametrize(("previous", "now", "expected"), [
    pytest.param(10.0, 10.1, 10.25, id="on-time-keeps-the-phase"),
    pytest.param(10.0, 10.24, 10.25, id="late-within-a-period-keeps-the-phase"),
    pytest.param(10.0, 10.6, 10.6, id="more-than-a-period-behind-sends-now-without-catching-up"),
])
def test_pacing_counts_from_the_previous_due_time(previous: float, now: float, expected: float) -> None:
    from locustfiles.settings import next_due_s

    assert next_due_s(previous, 0.25, now) == pytest.approx(expected)
    with pytest.raises(ValueError, match="period_s"):
        next_due_s(previous, 0.0, now)


def test_largest_wave_counts_the_most_requests_sent_within_the_window() -> None:
    from reporting.analysis import largest_wave

    assert largest_wave([]) == 0
    assert largest_wave([5.0, 1.0, 1.004, 1.009, 1.02, 3.0]) == 3
    assert largest_wave([1.0, 1.02, 1.04], window_s=0.05) == 3
    with pytest.raises(ValueError, match="window_s"):
        largest_wave([1.0], window_s=0.0)


def test_users_pace_at_random_around_their_rate_unless_told_fixed() -> None:
    import random
    import statistics

    from locustfiles.runner import LocustRun
    from locustfiles.settings import PACING_ENV, pacing, pacing_period_s

    assert pacing({}) == "random"
    assert pacing({PACING_ENV: "fixed"}) == "fixed"
    with pytest.raises(ValueError, match=f"{PACING_ENV}='poisson'"):
        pacing({PACING_ENV: "poisson"})
    rng = random.Random(1)
    gaps = [pacing_period_s("random", 4.0, rng) for _ in range(4000)]
    assert statistics.mean(gaps) == pytest.approx(0.25, rel=0.05)  # the user's rate is kept on average
    assert statistics.stdev(gaps) == pytest.approx(0.25, rel=0.1)  # exponential: sd = mean
    assert pacing_period_s("fixed", 4.0, rng) == 0.25
    with pytest.raises(ValueError, match="requests_per_s"):
        pacing_period_s("random", 0.0, rng)
    assert LocustRun("127.0.0.1:1", "127.0.0.1:2").env(Path("r"))[PACING_ENV] == "random"
    with pytest.raises(ValueError, match="pacing 'jitter'"):
        LocustRun("127.0.0.1:1", "127.0.0.1:2", pacing="jitter")
