"""The jobs HTTP API and the CLI, on a store of their own (no platform: rows are answered by the
test through the store port, as a worker would)."""

from __future__ import annotations

import json

import pytest
import requests
from prometheus_client import CollectorRegistry

from batch.cli import main
from batch.http_api import JobsApi
from batch.metrics import StoreCollector
from batch.store_sqlite import SqliteJobStore
from model_repository.definitions import load_models
from tests.batch.helpers import fake_answers, write_input


@pytest.fixture
def api(tmp_path):
    store = SqliteJobStore(tmp_path / "s")
    registry = CollectorRegistry()
    registry.register(StoreCollector(store))
    server = JobsApi(store, load_models(), registry)
    server.start()
    try:
        yield store, f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def answer_all(store: SqliteJobStore) -> None:
    while (claim := store.claim(worker="t", max_rows=50, lease_s=30)) is not None:
        store.answer(claim, fake_answers(claim), {})
        store.write_ready(claim.job_id)


def test_submit_status_results_and_metrics_over_http(api, tmp_path):
    store, url = api
    body = write_input(tmp_path / "in.jsonl", 5, ("{oops",)).read_bytes()
    r = requests.post(f"{url}/jobs?model=text_embedding&priority=high", data=body, timeout=10)
    assert r.status_code == 201, r.text
    job = r.json()["job"]
    assert r.json()["rows"] == 5 and r.json()["invalid_lines"][0]["line"] == 6
    assert requests.get(f"{url}/jobs/{job}/results", timeout=10).status_code == 409
    answer_all(store)
    status = requests.get(f"{url}/jobs/{job}", timeout=10).json()
    assert status["state"] == "completed" and status["priority"] == 9 and status["rows"]["written"] == 5
    lines = requests.get(f"{url}/jobs/{job}/results", timeout=10).text.splitlines()
    assert [json.loads(x)["id"] for x in lines] == [f"r{i}" for i in range(5)]
    metrics = requests.get(f"{url}/metrics", timeout=10).text
    assert f'batch_job_rows{{job="{job}",model="text_embedding",state="written"}} 5.0' in metrics


@pytest.mark.parametrize(("query", "body", "code", "message"), [
    ("model=resnet", b"", 400, "unknown model 'resnet'"),
    ("model=text_embedding&tier=gold", b"", 400, "gold is kept for interactive traffic"),
    ("model=text_embedding&priority=urgent", b"", 400, "priority must be 0-9"),
    ("model=text_embedding&strict=1", b'{"id": 1}\n', 400, "strict mode"),
    ("tier=bronze", b"", 400, "missing query parameter 'model'"),
], ids=["unknown-model", "gold-refused", "bad-priority", "strict", "no-model"])
def test_bad_submissions_are_refused_with_the_reason(api, query, body, code, message):
    _, url = api
    r = requests.post(f"{url}/jobs?{query}", data=body, timeout=10)
    assert r.status_code == code and message in r.json()["error"], r.text


def test_unknown_jobs_and_cancel_over_http(api, tmp_path):
    store, url = api
    assert requests.get(f"{url}/jobs/job-nope", timeout=10).status_code == 404
    job = requests.post(f"{url}/jobs?model=text_embedding", data=write_input(tmp_path / "a.jsonl", 3).read_bytes(),
                        timeout=10).json()["job"]
    assert requests.post(f"{url}/jobs/{job}/cancel", timeout=10).json()["state"] == "cancelled"
    assert requests.get(f"{url}/jobs/{job}/results?partial=1", timeout=10).text == ""


def test_cli_submit_status_wait_results(tmp_path, capsys):
    store_dir = str(tmp_path / "s")
    path = write_input(tmp_path / "in.jsonl", 4, ('{"id": "x", "TEXT": 3}',))
    assert main(["--store", store_dir, "submit", "--model", "text_embedding", "--input", str(path)]) == 0
    out = capsys.readouterr()
    job = out.out.strip()
    assert f"{path}:5: input 'TEXT' must be a string (line left out)" in out.err
    assert main(["--store", store_dir, "submit", "--model", "text_embedding", "--input", str(path), "--strict"]) == 2
    assert main(["--store", store_dir, "results", job, "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "wait for it" in capsys.readouterr().err
    answer_all(SqliteJobStore(store_dir))
    assert main(["--store", store_dir, "wait", job, "--timeout-s", "5"]) == 0
    assert main(["--store", store_dir, "status", job]) == 0
    text = capsys.readouterr().out
    assert "4/4 written (100.0%), 0 failed" in text and "line 5: input 'TEXT' must be a string" in text
    assert main(["--store", store_dir, "results", job, "--out", str(tmp_path / "o.jsonl")]) == 0
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 4
    assert main(["--store", store_dir, "status", "job-missing"]) == 2
