"""The worker against a small KServe v2 HTTP server of ours standing in for Envoy: rejections,
overload and timeouts are back-pressure (rows go back, the worker slows down and retries), a bad
row is isolated and fails alone, and every row is answered exactly once."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from batch.backpressure import ThrottleSettings
from batch.store_sqlite import SqliteJobStore
from batch.worker import Worker, WorkerSettings
from model_repository.definitions import load_models
from router_lib.config import load_fleet
from tests.batch.helpers import read_results, submit, write_input
from tests.conftest import ROOT


class FakeEnvoy:
    """Answers text_embedding with [len(text), 1.0]; scripted failures by request number."""

    def __init__(self, script: dict[int, str]) -> None:
        self.script = script
        self.requests = 0
        self.rows_seen: Counter = Counter()
        self.batch_sizes: list[int] = []
        self.tiers: set[str] = set()
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests += 1
                    action = fake.script.get(fake.requests, "ok")
                    fake.tiers.add(self.headers.get("x-sla-tier", ""))
                texts = body["inputs"][0]["data"]
                if action == "slow":
                    time.sleep(1.5)
                if action in ("429", "503"):
                    return self._reply(int(action), {"error": "overloaded"})
                if "poison" in texts:
                    return self._reply(400, {"error": "input 'TEXT' is poison"})
                with fake.lock:
                    fake.batch_sizes.append(len(texts))
                    fake.rows_seen.update(texts)
                data = [v for t in texts for v in (float(len(t)), 1.0)]
                self._reply(200, {"outputs": [{"name": "EMBEDDING", "datatype": "FP32", "shape": [len(texts), 2],
                                               "data": data}]}, pool="cpu")

            def _reply(self, code: int, data: dict, pool: str | None = None) -> None:
                raw = json.dumps(data).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                if pool:
                    self.send_header("x-served-by", pool)
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.endpoint = f"127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def models():
    return load_models()


@pytest.fixture
def fleet(models):
    return load_fleet(ROOT / "fleet.yaml", tuple(models))


def run_worker(store, endpoint, fleet, models, timeout_s=0.5):  # type: ignore[no-untyped-def]
    settings = WorkerSettings(senders=3, lease_s=30, idle_poll_s=0.05,
                              throttle=ThrottleSettings(max_in_flight=3, max_batch=8, per_try_timeout_s=timeout_s,
                                                        backoff_min_s=0.01, backoff_max_s=0.05))
    worker = Worker(store=store, endpoint=endpoint, fleet=fleet, models=models, headroom=None, settings=settings)
    thread = threading.Thread(target=worker.run, kwargs={"exit_when_idle": True}, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the worker did not finish the job"
    return worker


def test_rejections_and_timeouts_are_retried_and_every_row_is_answered_once(tmp_path, fleet, models):
    fake = FakeEnvoy({2: "429", 3: "503", 5: "slow", 7: "429"})
    try:
        store = SqliteJobStore(tmp_path / "s")
        job = submit(store, write_input(tmp_path / "in.jsonl", 60))
        worker = run_worker(store, fake.endpoint, fleet, models)
    finally:
        fake.close()
    view = store.job(job)
    assert view.state == "completed" and view.rows_written == 60 and view.rows_failed == 0
    assert view.retries > 0 and worker.throttle("text_embedding").pressure_events >= 4
    lines = read_results(store.job_dir(job) / "results.jsonl")
    assert [r["id"] for r in lines] == [f"r{i}" for i in range(60)]
    assert all(r["EMBEDDING"] == [float(len(f"sentence number {i}")), 1.0] for i, r in enumerate(lines))
    assert max(fake.batch_sizes) <= 8 and fake.tiers == {"bronze"}
    assert view.by_pool["cpu"].rows >= 60 and view.cost_usd > 0


def test_a_row_the_model_rejects_is_isolated_and_fails_alone(tmp_path, fleet, models):
    fake = FakeEnvoy({})
    try:
        store = SqliteJobStore(tmp_path / "s")
        path = write_input(tmp_path / "in.jsonl", 20, ('{"id": "bad", "TEXT": "poison"}',))
        job = submit(store, path)
        run_worker(store, fake.endpoint, fleet, models, timeout_s=5)
    finally:
        fake.close()
    view = store.job(job)
    assert view.rows_written == 21 and view.rows_failed == 1
    lines = read_results(store.job_dir(job) / "results.jsonl")
    assert lines[20] == {"id": "bad", "error": 'HTTP 400: {"error": "input \'TEXT\' is poison"}'}
    assert all("EMBEDDING" in r for r in lines[:20])
    assert sum(fake.rows_seen.values()) == 20, "the good rows of the bad batch were answered once"
