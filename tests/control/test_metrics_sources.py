"""Metrics sources: direct scraping and the Prometheus HTTP API, with fake fetchers (unit) and a
real Prometheus scraping a local exporter (integration)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from control.metrics_prometheus import PrometheusApiSource
from control.metrics_scrape import ScrapeSource
from localnet.ports import free_port
from router_lib.metrics import MetricsParseError, MetricsUnavailableError
from tests.router_lib.test_metrics import COMPOSING, envoy_text, triton_text


class FakeFetch:
    """Serves canned bodies per URL; a URL mapped to an exception raises it."""

    def __init__(self, pages: dict[str, object]) -> None:
        self.pages = pages

    def __call__(self, url: str, timeout_s: float) -> str:
        page = self.pages[url]
        if isinstance(page, Exception):
            raise page
        return str(page)


def test_scrape_source_computes_rates_between_reads() -> None:
    pages: dict[str, object] = {"http://r1/metrics": triton_text(success=10), "http://envoy/stats":
                                envoy_text(100, 0, {"10": 100, "+Inf": 100})}
    source = ScrapeSource({"gpu": ["http://r1/metrics"]}, "http://envoy/stats", composing=COMPOSING,
                          fetch=FakeFetch(pages))
    first = source.read(0.0)
    assert first[("gpu", "text_embedding")].request_rate_per_s == 0.0
    pages["http://r1/metrics"] = triton_text(success=30, pending_onnx=4)
    pages["http://envoy/stats"] = envoy_text(150, 5, {"10": 140, "+Inf": 150})
    m = source.read(5.0)[("gpu", "text_embedding")]
    assert (m.request_rate_per_s, m.error_rate, m.queue_depth) == (pytest.approx(10.0), pytest.approx(0.1), 4)


@pytest.mark.parametrize("failure", [
    ConnectionRefusedError("refused"), TimeoutError("timed out"), "this is { not metrics",
], ids=["refused", "timeout", "malformed"])
def test_one_bad_replica_is_not_ready_and_read_does_not_raise(failure: object) -> None:
    pages = {"http://r1/metrics": triton_text(success=1), "http://r2/metrics": failure}
    source = ScrapeSource({"gpu": ["http://r1/metrics", "http://r2/metrics"]}, fetch=FakeFetch(pages))
    fm = source.read(1.0)
    assert fm.ready_replicas == {"gpu": 1}
    assert fm[("gpu", "text_embedding")].ready
    assert "http://r2/metrics" in source.last_errors


def test_a_broken_envoy_falls_back_to_triton_counters() -> None:
    pages: dict[str, object] = {"http://r1/metrics": triton_text(success=10), "http://envoy/stats": "garbage {"}
    source = ScrapeSource({"gpu": ["http://r1/metrics"]}, "http://envoy/stats", fetch=FakeFetch(pages))
    source.read(0.0)
    pages["http://r1/metrics"] = triton_text(success=20)
    m = source.read(10.0)[("gpu", "text_embedding")]
    assert m.request_rate_per_s == pytest.approx(1.0) and m.p99_ms is None
    assert "http://envoy/stats" in source.last_errors


def prometheus_answer(results: list[tuple[dict[str, str], float]]) -> str:
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": labels, "value": [0, str(v)]} for labels, v in results]}})


class FakePrometheus:
    """Answers /api/v1/query by the metric name the query mentions."""

    def __init__(self, answers: dict[str, list[tuple[dict[str, str], float]]]) -> None:
        self.answers = answers
        self.queries: list[str] = []

    def __call__(self, url: str, timeout_s: float) -> str:
        query = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)["query"][0]
        self.queries.append(query)
        for needle, result in self.answers.items():
            if needle in query:
                return prometheus_answer(result)
        return prometheus_answer([])


def test_prometheus_api_source_maps_queries_to_pool_model_metrics() -> None:
    gpu = {"pool": "gpu"}
    fake = FakePrometheus({
        "nv_inference_pending_request_count": [({**gpu, "model": "text_embedding_onnx"}, 3.0),
                                               ({**gpu, "model": "text_embedding_tokenizer"}, 1.0)],
        "up{": [(gpu, 2.0)],
        "envoy_cluster_upstream_rq_total": [({"envoy_cluster_name": "text_embedding--gpu--grpc"}, 40.0),
                                            ({"envoy_cluster_name": "text_embedding--gpu--http"}, 10.0)],
        "envoy_cluster_upstream_rq_xx": [({"envoy_cluster_name": "text_embedding--gpu--grpc"}, 5.0)],
        "envoy_cluster_upstream_rq_time_bucket": [
            ({"envoy_cluster_name": "text_embedding--gpu--grpc", "le": "10"}, 30.0),
            ({"envoy_cluster_name": "text_embedding--gpu--grpc", "le": "+Inf"}, 40.0),
            ({"envoy_cluster_name": "text_embedding--gpu--http", "le": "10"}, 10.0),
            ({"envoy_cluster_name": "text_embedding--gpu--http", "le": "+Inf"}, 10.0)],
    })
    source = PrometheusApiSource("http://prom:9090", window_s=30, composing=COMPOSING, fetch=fake)
    fm = source.read(1000.0)
    m = fm[("gpu", "text_embedding")]
    assert m.queue_depth == 4 and m.request_rate_per_s == 50 and m.error_rate == pytest.approx(0.1)
    assert m.p95_ms == 10.0  # 40 of 50 under 10 ms: p95 is in +Inf, reported as the highest finite bound
    assert fm.ready_replicas == {"gpu": 2}
    assert any("[30s]" in q for q in fake.queries)


@pytest.mark.parametrize(("body", "error"), [
    ("<html>502</html>", MetricsParseError),
    (json.dumps({"status": "error", "error": "bad query"}), MetricsParseError),
    (ConnectionRefusedError("down"), MetricsUnavailableError),
], ids=["not-json", "api-error", "unreachable"])
def test_prometheus_api_failures_raise_typed_errors(body: object, error: type[Exception]) -> None:
    def fetch(url: str, timeout_s: float) -> str:
        if isinstance(body, Exception):
            raise body
        return str(body)
    with pytest.raises(error):
        PrometheusApiSource("http://prom:9090", fetch=fetch).read(0.0)


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian prometheus not installed (make system-deps)")
def test_prometheus_api_source_against_a_real_prometheus(tmp_path: Path) -> None:
    started = time.monotonic()

    class Exporter(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            n = int((time.monotonic() - started) * 20)  # 20 req/s of success
            body = triton_text(success=n, pending_onnx=2).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    exporter = ThreadingHTTPServer(("127.0.0.1", 0), Exporter)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: triton\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{exporter.server_address[1]}'], labels: {{pool: gpu}}}}]\n")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        source = PrometheusApiSource(f"http://127.0.0.1:{prom_port}", window_s=5, composing=COMPOSING)
        deadline = time.monotonic() + 30
        m = None
        while time.monotonic() < deadline:
            time.sleep(1)
            try:
                fm = source.read(time.time())
            except MetricsUnavailableError:
                continue
            m = fm.get(("gpu", "text_embedding"))
            if m is not None and m.request_rate_per_s > 0 and time.monotonic() - started > 9:
                break  # the 5 s window is full of scrapes: rate() no longer extrapolates a partial one
        assert m is not None and m.ready and m.queue_depth == 2
        assert m.request_rate_per_s == pytest.approx(20, rel=0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        exporter.shutdown()
