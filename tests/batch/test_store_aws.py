"""The AWS store (SQS work items, S3 inputs/answers/results) against a local S3/SQS endpoint:
moto in server mode, a real HTTP server on 127.0.0.1 that boto3 talks to like AWS.

boto3 cannot live in the serving venv (botocore pins python-dateutil<3, the kubernetes client
there needs >=3), so these tests run under ``build/aws-venv`` (``batch/requirements-aws.txt``)::

    python3 -m venv build/aws-venv && build/aws-venv/bin/pip install -r batch/requirements-aws.txt
    PYTHONPATH=. build/aws-venv/bin/python -m pytest -q tests/batch/test_store_aws.py

and are skipped, saying so, where boto3 is missing.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

import pytest

boto3 = pytest.importorskip("boto3", reason="the AWS store needs boto3: see this module's docstring")
pytest.importorskip("moto", reason="moto (server mode) is the local S3/SQS endpoint: see this module's docstring")

from batch.jobs import JobState, PoolUsage  # noqa: E402
from batch.store import Crash, NotReady, RowAnswer  # noqa: E402
from batch.store_aws import AwsJobStore, AwsNames  # noqa: E402
from localnet.ports import free_port  # noqa: E402
from tests.batch.helpers import fake_answers, read_results, submit, write_input  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def endpoint():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)  # noqa: S310 - loopback
            break
        except OSError:
            assert proc.poll() is None, "moto server exited"
            assert time.monotonic() < deadline, "moto server not up in 30 s"
            time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def names(endpoint, request):
    name = request.node.name.replace("_", "-")[:40].lower()
    kw = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "test",
          "aws_secret_access_key": "test"}
    boto3.client("s3", **kw).create_bucket(Bucket=name)
    sqs = boto3.client("sqs", **kw)
    for q in ("high", "normal", "low"):
        sqs.create_queue(QueueName=f"{name}-{q}")
    return AwsNames(bucket=name, queue_prefix=name), kw


def make_store(names, **kw) -> AwsJobStore:  # type: ignore[no-untyped-def]
    n, client_kw = names
    return AwsJobStore(n, s3=boto3.client("s3", **client_kw), sqs=boto3.client("sqs", **client_kw), chunk_rows=4, **kw)


def drain(store: AwsJobStore, lease_s: float = 30, calls: list[int] | None = None) -> None:
    while (claim := store.claim(worker="w", max_rows=4, lease_s=lease_s)) is not None:
        store.answer(claim, fake_answers(claim, calls), {"cpu": PoolUsage(len(claim.rows), 0.1, 0.001)})
        store.write_ready(claim.job_id)


def expected(n: int) -> list[dict]:
    return [{"id": f"r{i}", "EMBEDDING": [float(len(f"sentence number {i}")),
                                          float(sum(map(ord, f"sentence number {i}")) % 997)]} for i in range(n)]


def test_a_job_runs_to_completion_through_sqs_and_s3(names, tmp_path):
    store = make_store(names)
    job = submit(store, write_input(tmp_path / "in.jsonl", 10, ("not json",)))
    assert store.job(job).state is JobState.QUEUED and store.job(job).invalid_lines[0][0] == 11
    assert store.queue_depth() == {"queue:normal": 3}
    with pytest.raises(NotReady):
        store.export_results(job, tmp_path / "out.jsonl")
    drain(store)
    view = store.job(job)
    assert view.state is JobState.COMPLETED and view.rows_written == 10 and view.cost_usd == pytest.approx(0.003)
    assert store.export_results(job, tmp_path / "out.jsonl") == 10
    assert read_results(tmp_path / "out.jsonl") == expected(10)
    assert store.queue_depth() == {}


def test_a_stored_answer_is_adopted_after_its_worker_died_before_deleting_the_message(names, tmp_path):
    def crash(point: str) -> None:
        if point == "after_answer_file":
            raise Crash(point)

    dying = make_store(names, fault=crash)
    job = submit(dying, write_input(tmp_path / "in.jsonl", 8))
    claim = dying.claim(worker="dead", max_rows=4, lease_s=1)
    with pytest.raises(Crash):
        dying.answer(claim, [RowAnswer(r, {"EMBEDDING": [1.0, 2.0]}, pool="gpu") for r, _ in claim.rows], {})
    time.sleep(1.5)  # the message reappears
    store = make_store(names)
    calls: list[int] = []
    drain(store, calls=calls)
    assert len(calls) == 4, "only the other chunk was asked for"
    lines = read_results(tmp_path / "o.jsonl") if store.export_results(job, tmp_path / "o.jsonl") else []
    first = [r for r, _ in claim.rows]
    assert [lines[i] for i in first] == [{"id": f"r{i}", "EMBEDDING": [1.0, 2.0]} for i in first]
    assert len(lines) == 8 and [x["id"] for x in lines] == [f"r{i}" for i in range(8)]


def test_a_slow_worker_whose_message_was_taken_over_adds_nothing(names, tmp_path):
    store = make_store(names)
    job = submit(store, write_input(tmp_path / "in.jsonl", 4))
    slow = store.claim(worker="slow", max_rows=4, lease_s=1)
    time.sleep(1.5)
    fast = store.claim(worker="fast", max_rows=4, lease_s=30)
    assert fast is not None and [r for r, _ in fast.rows] == [0, 1, 2, 3]
    assert store.answer(fast, fake_answers(fast), {}) == 4
    assert store.answer(slow, [RowAnswer(r, {"EMBEDDING": [0.0]}) for r, _ in slow.rows], {}) == 0
    store.write_ready(job)
    store.export_results(job, tmp_path / "o.jsonl")
    assert read_results(tmp_path / "o.jsonl") == expected(4)


def test_release_makes_the_work_visible_again_and_cancel_stops_it(names, tmp_path):
    store = make_store(names)
    job = submit(store, write_input(tmp_path / "in.jsonl", 4))
    claim = store.claim(worker="w", max_rows=4, lease_s=30)
    assert store.release(claim) == 4
    again = store.claim(worker="w", max_rows=4, lease_s=30)
    assert again is not None and again.rows == claim.rows
    store.release(again)
    assert store.cancel(job).state is JobState.CANCELLED
    assert store.claim(worker="w", max_rows=4, lease_s=30) is None, "a cancelled job's work items are dropped"


def test_high_priority_work_is_received_first(names, tmp_path):
    store = make_store(names)
    submit(store, write_input(tmp_path / "a.jsonl", 4), priority=0)
    high = submit(store, write_input(tmp_path / "b.jsonl", 4), priority=9)
    assert store.claim(worker="w", max_rows=4, lease_s=30).job_id == high
    assert store.next_work(["text_embedding"]) == ("text_embedding", "bronze")


def test_the_worker_serves_a_job_from_sqs_and_s3(names, tmp_path):
    """The same worker as on SQLite: work items of 4 rows, retried after a rejection."""
    from batch.backpressure import ThrottleSettings
    from batch.worker import Worker, WorkerSettings
    from model_repository.definitions import load_models
    from router_lib.config import load_fleet
    from tests.batch.test_worker import FakeEnvoy
    from tests.conftest import ROOT

    store = make_store(names)
    job = submit(store, write_input(tmp_path / "in.jsonl", 30))
    fake = FakeEnvoy({2: "429"})
    models = load_models()
    try:
        worker = Worker(store=store, endpoint=fake.endpoint, fleet=load_fleet(ROOT / "fleet.yaml", tuple(models)),
                        models=models, headroom=None,
                        settings=WorkerSettings(senders=1, lease_s=30, idle_poll_s=0.05, throttle=ThrottleSettings(
                            max_in_flight=1, max_batch=8, backoff_min_s=0.01, backoff_max_s=0.05)))
        worker.run(exit_when_idle=True)
    finally:
        fake.close()
    assert store.job(job).state is JobState.COMPLETED
    store.export_results(job, tmp_path / "o.jsonl")
    lines = read_results(tmp_path / "o.jsonl")
    assert [x["id"] for x in lines] == [f"r{i}" for i in range(30)]
    assert lines[7]["EMBEDDING"] == [float(len("sentence number 7")), 1.0]
