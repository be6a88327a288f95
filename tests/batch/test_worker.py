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


def test_pool_time_is_the_profiled_service_time_and_cost_is_pool_time_times_price(fleet):
    from batch.worker import pool_usage
    gpu = fleet.pool("gpu")
    profile = fleet.profiles[("text_embedding", gpu.accelerator)]
    [(pool, usage)] = pool_usage(fleet, "gpu", "text_embedding", 32, measured_s=9.0).items()
    seconds = profile.latency_ms(32) / 1000 / profile.instances_per_replica
    assert pool == "gpu" and usage.rows == 32 and usage.pool_seconds == pytest.approx(seconds)
    assert usage.cost_usd == pytest.approx(seconds * gpu.price_per_hour_usd / 3600) and not usage.synthetic
    assert pool_usage(fleet, None, "text_embedding", 32, 1.0) == {}, "an answer from no pool costs nothing"
    assert pool_usage(fleet, "elsewhere", "text_embedding", 4, 0.5)["elsewhere"].pool_seconds == 0.5


def test_headroom_holds_the_last_reading_while_the_control_server_is_away(fleet):
    from batch.worker import ControlStatusHeadroom

    class Clock:
        t = 0.0

        def __call__(self) -> float:
            return self.t

    status = {"pools": [{"name": "cpu", "ready_replicas": 1, "metrics": {}}],
              "routes": [{"model": "text_embedding", "tier": "bronze", "weights": {"cpu": 100}, "demand_per_s": 1.0}]}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

        def do_GET(self) -> None:  # noqa: N802
            raw = json.dumps(status).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    clock = Clock()
    source = ControlStatusHeadroom(f"http://127.0.0.1:{httpd.server_address[1]}", fleet, clock=clock, stale_s=10)
    live = source.read("text_embedding", "bronze")
    assert live.spare_rows_per_s and live.spare_rows_per_s > 0 and not live.pause
    httpd.shutdown()
    httpd.server_close()  # the control server is SIGKILLed
    clock.t = 5.0
    assert source.read("text_embedding", "bronze") == live
    clock.t = 20.0
    gone = source.read("text_embedding", "bronze")
    assert gone.spare_rows_per_s is None and "unreachable" in gone.reason and source.errors == 2
