"""The SQLite store: the row state machine, leases, and crash points between sent, answered and
written.  A crash is a ``Crash`` raised by the fault hook (or a worker simply never coming back);
"restart" is a new store object on the same folder, with the clock moved past the lease."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from batch.jobs import JobState, PoolUsage, RowState, TransitionError, check_job_transition, check_row_transition
from batch.store import Crash, NotReady, UnknownJob
from batch.store_sqlite import SqliteJobStore
from tests.batch.helpers import Clock, fake_answers, read_results, submit, write_input

LEASE_S = 30.0


def expected_lines(n: int) -> list[dict]:
    return [{"id": f"r{i}", "EMBEDDING": [float(len(f"sentence number {i}")),
                                          float(sum(map(ord, f"sentence number {i}")) % 997)]} for i in range(n)]


def drain(store: SqliteJobStore, worker: str = "w", max_rows: int = 4, calls: list[int] | None = None) -> None:
    while (claim := store.claim(worker=worker, max_rows=max_rows, lease_s=LEASE_S)) is not None:
        store.answer(claim, fake_answers(claim, calls), {"cpu": PoolUsage(len(claim.rows), 0.1, 0.001)})
        store.write_ready(claim.job_id)


def states(store: SqliteJobStore, job: str) -> Counter:
    return Counter(dict(store._conn().execute("SELECT state, COUNT(*) FROM rows WHERE job_id=? GROUP BY state", (job,))))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path, clock) -> SqliteJobStore:
    return SqliteJobStore(tmp_path / "store", clock=clock)


def test_a_job_runs_to_completion_with_results_in_input_order(store, tmp_path):
    job = submit(store, write_input(tmp_path / "in.jsonl", 10))
    assert store.job(job).state is JobState.QUEUED
    drain(store)
    view = store.job(job)
    assert view.state is JobState.COMPLETED and view.rows_written == 10 and view.rows_failed == 0
    assert view.by_pool["cpu"].rows == 10 and view.cost_usd == pytest.approx(0.001 * 3)
    n = store.export_results(job, tmp_path / "out.jsonl")
    assert n == 10 and read_results(tmp_path / "out.jsonl") == expected_lines(10)
    assert not (store.job_dir(job) / "answers").exists(), "answer files are deleted once every row is written"


def test_malformed_lines_are_reported_with_their_numbers_and_left_out(store, tmp_path):
    path = write_input(tmp_path / "in.jsonl", 3, ('{"id": "x"}', "not json", '{"id": "r0", "TEXT": "again"}'))
    job = submit(store, path)
    view = store.job(job)
    assert view.rows_total == 3
    assert [n for n, _ in view.invalid_lines] == [4, 5, 6]
    assert "missing input(s) ['TEXT']" in view.invalid_lines[0][1] and "duplicate id" in view.invalid_lines[2][1]


def test_an_empty_job_is_complete_at_once(store, tmp_path):
    job = submit(store, write_input(tmp_path / "in.jsonl", 0, ("{}",)))
    assert store.job(job).state is JobState.COMPLETED
    assert store.export_results(job, tmp_path / "out.jsonl") == 0 and (tmp_path / "out.jsonl").read_text() == ""


def test_higher_priority_jobs_are_claimed_first(store, tmp_path):
    low = submit(store, write_input(tmp_path / "a.jsonl", 2), priority=0)
    high = submit(store, write_input(tmp_path / "b.jsonl", 2), priority=9)
    assert store.claim(worker="w", max_rows=10, lease_s=LEASE_S).job_id == high
    assert store.claim(worker="w", max_rows=10, lease_s=LEASE_S).job_id == low


def test_crash_after_sent_before_answer_resends_after_the_lease(tmp_path, clock):
    store = SqliteJobStore(tmp_path / "s", clock=clock)
    job = submit(store, write_input(tmp_path / "in.jsonl", 8))
    lost = store.claim(worker="dead", max_rows=4, lease_s=LEASE_S)  # then the worker is SIGKILLed
    assert states(store, job)[RowState.SENT] == 4
    restarted = SqliteJobStore(tmp_path / "s", clock=clock)
    calls: list[int] = []
    drain(restarted, "before-expiry", calls=calls)
    assert sorted(calls) == [4, 5, 6, 7] and restarted.job(job).rows_written == 0, "leased rows wait for the lease"
    clock.advance(LEASE_S + 1)
    drain(restarted, "after-expiry", calls=calls)
    assert sorted(calls) == list(range(8)) and lost is not None
    assert read_results(restarted.job_dir(job) / "results.jsonl") == expected_lines(8)
    assert restarted.job(job).retries == 4


def test_crash_after_the_answer_is_stored_adopts_it_instead_of_asking_again(tmp_path, clock):
    def crash(point: str) -> None:
        if point == "after_answer_file":
            raise Crash(point)

    dying = SqliteJobStore(tmp_path / "s", clock=clock, fault=crash)
    job = submit(dying, write_input(tmp_path / "in.jsonl", 6))
    claim = dying.claim(worker="dead", max_rows=4, lease_s=LEASE_S)
    answered = fake_answers(claim)
    answered[0] = type(answered[0])(answered[0].row, {"EMBEDDING": [123.0, 456.0]}, pool="gpu")  # the answer it got
    with pytest.raises(Crash):
        dying.answer(claim, answered, {})
    clock.advance(LEASE_S + 1)
    store = SqliteJobStore(tmp_path / "s", clock=clock)
    calls: list[int] = []
    drain(store, calls=calls)
    assert sorted(calls) == [4, 5], "the stored answers of rows 0-3 are adopted, not asked for again"
    lines = read_results(store.job_dir(job) / "results.jsonl")
    assert lines[0] == {"id": "r0", "EMBEDDING": [123.0, 456.0]}, "the retried row keeps the answer it got first"
    assert lines[1:] == expected_lines(6)[1:]
    assert store.row_pools(job)[0] == "gpu"


def test_crash_after_answered_before_written_is_written_once_by_the_next_writer(tmp_path, clock):
    store = SqliteJobStore(tmp_path / "s", clock=clock)
    job = submit(store, write_input(tmp_path / "in.jsonl", 5))
    claim = store.claim(worker="dead", max_rows=5, lease_s=LEASE_S)
    assert store.answer(claim, fake_answers(claim), {}) == 5  # ... and dies before write_ready
    assert states(store, job) == Counter({RowState.ANSWERED: 5})
    other = SqliteJobStore(tmp_path / "s", clock=clock)
    assert other.claim(worker="w", max_rows=5, lease_s=LEASE_S) is None, "answered rows are never sent again"
    assert other.write_ready(job) == 5 and other.write_ready(job) == 0
    assert read_results(other.job_dir(job) / "results.jsonl") == expected_lines(5)


def test_crash_after_the_results_append_before_commit_leaves_no_duplicate(tmp_path, clock):
    def crash(point: str) -> None:
        if point == "after_results_append":
            raise Crash(point)

    dying = SqliteJobStore(tmp_path / "s", clock=clock, fault=crash)
    job = submit(dying, write_input(tmp_path / "in.jsonl", 6))
    claim = dying.claim(worker="w", max_rows=3, lease_s=LEASE_S)
    dying.answer(claim, fake_answers(claim), {})
    with pytest.raises(Crash):
        dying.write_ready(job)
    assert len(read_results(dying.job_dir(job) / "results.jsonl")) == 3, "the bytes are there, uncommitted"
    store = SqliteJobStore(tmp_path / "s", clock=clock)
    drain(store)
    lines = read_results(store.job_dir(job) / "results.jsonl")
    assert lines == expected_lines(6), "the uncommitted tail was cut off and written once"


def test_a_torn_tail_from_a_dead_writer_is_cut_off(store, tmp_path):
    job = submit(store, write_input(tmp_path / "in.jsonl", 4))
    claim = store.claim(worker="w", max_rows=2, lease_s=LEASE_S)
    store.answer(claim, fake_answers(claim), {})
    store.write_ready(job)
    with open(store.job_dir(job) / "results.jsonl", "ab") as f:
        f.write(b'{"id":"r2","EMBEDD')  # half a line
    drain(store)
    assert read_results(store.job_dir(job) / "results.jsonl") == expected_lines(4)


def test_a_slow_worker_whose_lease_was_taken_over_adds_nothing(tmp_path, clock):
    store = SqliteJobStore(tmp_path / "s", clock=clock)
    job = submit(store, write_input(tmp_path / "in.jsonl", 4))
    slow = store.claim(worker="slow", max_rows=4, lease_s=LEASE_S)
    clock.advance(LEASE_S + 1)
    fast = store.claim(worker="fast", max_rows=4, lease_s=LEASE_S)
    assert [r for r, _ in fast.rows] == [0, 1, 2, 3]
    assert store.answer(fast, fake_answers(fast), {}) == 4
    late = [type(a)(a.row, {"EMBEDDING": [0.0, 0.0]}, pool="gpu") for a in fake_answers(slow)]
    assert store.answer(slow, late, {}) == 0
    store.write_ready(job)
    assert read_results(store.job_dir(job) / "results.jsonl") == expected_lines(4)


def test_back_pressure_release_does_not_count_as_an_attempt(store, tmp_path):
    job = submit(store, write_input(tmp_path / "in.jsonl", 2))
    for _ in range(20):
        claim = store.claim(worker="w", max_rows=2, lease_s=LEASE_S)
        assert store.release(claim) == 2
    drain(store)
    view = store.job(job)
    assert view.rows_failed == 0 and view.rows_written == 2 and view.retries == 40  # rows re-sent


def test_a_row_whose_lease_keeps_expiring_fails_with_a_reason(tmp_path, clock):
    store = SqliteJobStore(tmp_path / "s", clock=clock, max_attempts=3)
    job = submit(store, write_input(tmp_path / "in.jsonl", 1))
    for _ in range(3):
        assert store.claim(worker="crashy", max_rows=1, lease_s=LEASE_S) is not None
        clock.advance(LEASE_S + 1)
    assert store.claim(worker="w", max_rows=1, lease_s=LEASE_S) is None
    store.write_ready(job)
    view = store.job(job)
    assert view.state is JobState.COMPLETED and view.rows_failed == 1
    [line] = read_results(store.job_dir(job) / "results.jsonl")
    assert line["id"] == "r0" and "gave up after 3 attempts" in line["error"]


def test_permanent_row_errors_are_written_as_error_lines(store, tmp_path):
    from batch.store import RowAnswer
    job = submit(store, write_input(tmp_path / "in.jsonl", 2))
    claim = store.claim(worker="w", max_rows=2, lease_s=LEASE_S)
    store.answer(claim, [fake_answers(claim)[0], RowAnswer(1, error="400: bad input")], {})
    store.write_ready(job)
    view = store.job(job)
    assert view.rows_failed == 1 and view.rows_written == 2
    assert read_results(store.job_dir(job) / "results.jsonl")[1] == {"id": "r1", "error": "400: bad input"}


def test_cancel_stops_claims_and_keeps_what_was_written(store, tmp_path):
    job = submit(store, write_input(tmp_path / "in.jsonl", 6))
    claim = store.claim(worker="w", max_rows=2, lease_s=LEASE_S)
    store.answer(claim, fake_answers(claim), {})
    store.write_ready(job)
    in_flight = store.claim(worker="w", max_rows=2, lease_s=LEASE_S)
    assert store.cancel(job).state is JobState.CANCELLED
    assert store.answer(in_flight, fake_answers(in_flight), {}) == 0
    assert store.claim(worker="w", max_rows=2, lease_s=LEASE_S) is None
    with pytest.raises(NotReady, match="cancelled"):
        store.export_results(job, tmp_path / "out.jsonl")
    assert store.export_results(job, tmp_path / "out.jsonl", partial=True) == 2
    assert store.cancel(job).state is JobState.CANCELLED, "cancelling twice is harmless"


def test_unknown_jobs_are_named(store):
    with pytest.raises(UnknownJob, match="no such job 'job-x'"):
        store.job("job-x")
    with pytest.raises(UnknownJob):
        store.cancel("job-x")


def test_concurrent_workers_write_every_row_exactly_once(tmp_path, clock):
    store = SqliteJobStore(tmp_path / "s", clock=clock)
    job = submit(store, write_input(tmp_path / "in.jsonl", 300))
    threads = [threading.Thread(target=drain, args=(SqliteJobStore(tmp_path / "s", clock=clock), f"w{i}", 7))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    store.write_ready(job)
    assert read_results(store.job_dir(job) / "results.jsonl") == expected_lines(300)
    assert store.queue_depth() == {}


@pytest.mark.parametrize(("current", "new", "ok"), [
    (JobState.QUEUED, JobState.RUNNING, True),
    (JobState.RUNNING, JobState.COMPLETED, True),
    (JobState.COMPLETED, JobState.RUNNING, False),
    (JobState.CANCELLED, JobState.RUNNING, False),
], ids=lambda v: str(v))
def test_job_transitions(current, new, ok):
    if ok:
        check_job_transition(current, new)
    else:
        with pytest.raises(TransitionError):
            check_job_transition(current, new)


@pytest.mark.parametrize(("current", "new", "ok"), [
    (RowState.PENDING, RowState.SENT, True),
    (RowState.SENT, RowState.PENDING, True),
    (RowState.SENT, RowState.ANSWERED, True),
    (RowState.ANSWERED, RowState.WRITTEN, True),
    (RowState.ANSWERED, RowState.SENT, False),
    (RowState.WRITTEN, RowState.PENDING, False),
    (RowState.PENDING, RowState.WRITTEN, False),
], ids=lambda v: str(v))
def test_row_transitions(current, new, ok):
    if ok:
        check_row_transition(current, new)
    else:
        with pytest.raises(TransitionError):
            check_row_transition(current, new)
