"""Metric text parsing, window arithmetic (rates, quantiles, resets) and cluster names."""

from __future__ import annotations

import math

import pytest

from router_lib.cluster_names import ClusterName, cluster_name, parse_cluster_name
from router_lib.metrics import MetricsParseError
from router_lib.metrics_text import parse_envoy, parse_triton
from router_lib.metrics_window import ScrapeSnapshot, bucket_delta, counter_delta, fleet_metrics, histogram_quantile


def triton_text(pending_tok: float = 0, pending_onnx: float = 0, success: float = 0, failure: float = 0,
                executions: float = 0, lag_ms: float = 0) -> str:
    return f"""# HELP nv_inference_pending_request_count Instantaneous number of pending requests
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{{model="text_embedding",version="1"}} 0
nv_inference_pending_request_count{{model="text_embedding_tokenizer",version="1"}} {pending_tok}
nv_inference_pending_request_count{{model="text_embedding_onnx",version="1"}} {pending_onnx}
nv_inference_pending_request_count{{model="digits_classifier",version="1"}} 2
# TYPE nv_inference_request_success counter
nv_inference_request_success{{model="text_embedding",version="1"}} {success}
nv_inference_request_success{{model="text_embedding_onnx",version="1"}} {success * 7}
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{{model="text_embedding",reason="BACKEND",version="1"}} {failure}
# TYPE emulation_executions_total counter
emulation_executions_total{{model="text_embedding_onnx",pool="gpu",accelerator="gpu",emulated="true"}} {executions}
# TYPE emulation_lag_ms_total counter
emulation_lag_ms_total{{model="text_embedding_onnx",pool="gpu",accelerator="gpu",emulated="true"}} {lag_ms}
"""


def envoy_text(total: float, errors: float, buckets: dict[str, float], cluster: str = "text_embedding--gpu--grpc") -> str:
    lines = [
        "# TYPE envoy_cluster_upstream_rq_total counter",
        f'envoy_cluster_upstream_rq_total{{envoy_cluster_name="{cluster}"}} {total}',
        'envoy_cluster_upstream_rq_total{envoy_cluster_name="xds_cluster"} 99',
        "# TYPE envoy_cluster_upstream_rq_xx counter",
        f'envoy_cluster_upstream_rq_xx{{envoy_response_code_class="2",envoy_cluster_name="{cluster}"}} {total - errors}',
        f'envoy_cluster_upstream_rq_xx{{envoy_response_code_class="5",envoy_cluster_name="{cluster}"}} {errors}',
        "# TYPE envoy_cluster_upstream_rq_time histogram",
    ]
    lines += [f'envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name="{cluster}",le="{le}"}} {v}'
              for le, v in buckets.items()]
    lines += [f'envoy_cluster_upstream_rq_time_sum{{envoy_cluster_name="{cluster}"}} 1',
              f'envoy_cluster_upstream_rq_time_count{{envoy_cluster_name="{cluster}"}} {buckets["+Inf"]}']
    return "\n".join(lines) + "\n"


COMPOSING = {"text_embedding_tokenizer": "text_embedding", "text_embedding_onnx": "text_embedding"}


@pytest.mark.parametrize(("model", "pool", "proto", "version", "name"), [
    ("text_embedding", "cpu", "grpc", None, "text_embedding--cpu--grpc"),
    ("digits_classifier", "inf2", "http", None, "digits_classifier--inf2--http"),
    ("text_embedding", "gpu-canary", "grpc", "2", "text_embedding--gpu-canary--grpc--v2"),
], ids=["grpc", "http", "versioned"])
def test_cluster_name_round_trips(model: str, pool: str, proto: str, version: str | None, name: str) -> None:
    assert cluster_name(model, pool, proto, version) == name
    assert parse_cluster_name(name) == ClusterName(model, pool, proto, version)


@pytest.mark.parametrize("name", ["xds_cluster", "_server--grpc", "a--b--smtp", "a----grpc", "a--b--grpc--2",
                                  "_server--cpu--grpc"])
def test_names_that_are_not_model_clusters_parse_to_none(name: str) -> None:
    assert parse_cluster_name(name) is None


def test_cluster_name_rejects_the_separator_inside_a_name() -> None:
    with pytest.raises(ValueError, match="must not contain"):
        cluster_name("a--b", "cpu", "grpc")


@pytest.mark.parametrize(("previous", "current", "delta"), [
    (None, 10.0, 0.0),
    (10.0, 15.0, 5.0),
    (10.0, 10.0, 0.0),
    (100.0, 7.0, 7.0),  # reset: the process restarted and counted 7 since
], ids=["first-sample", "growth", "idle", "reset"])
def test_counter_delta(previous: float | None, current: float, delta: float) -> None:
    assert counter_delta(previous, current) == delta


@pytest.mark.parametrize(("q", "buckets", "expected"), [
    (0.5, ((10.0, 50.0), (20.0, 100.0), (math.inf, 100.0)), 10.0),
    (0.99, ((10.0, 50.0), (20.0, 100.0), (math.inf, 100.0)), 19.8),
    (0.75, ((10.0, 0.0), (20.0, 100.0), (math.inf, 100.0)), 17.5),
    (0.99, ((10.0, 50.0), (math.inf, 100.0)), 10.0),  # in +Inf: highest finite bound
    (0.99, ((10.0, 0.0), (math.inf, 0.0)), None),  # no requests in the window
], ids=["median-at-edge", "p99-interpolated", "empty-first-bucket", "inf-bucket", "empty"])
def test_histogram_quantile(q: float, buckets: tuple[tuple[float, float], ...], expected: float | None) -> None:
    got = histogram_quantile(q, buckets)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_histogram_reset_uses_the_new_counts() -> None:
    before = ((10.0, 500.0), (math.inf, 600.0))
    after_reset = ((10.0, 3.0), (math.inf, 4.0))
    assert bucket_delta(before, after_reset) == after_reset
    assert bucket_delta(before, ((10.0, 510.0), (math.inf, 620.0))) == ((10.0, 10.0), (math.inf, 20.0))


def test_triton_composing_models_add_their_queue_to_the_public_model() -> None:
    sample = parse_triton(triton_text(pending_tok=3, pending_onnx=4, success=10), "replica-1", COMPOSING)
    assert sample.pending["text_embedding"] == 7
    assert sample.pending["digits_classifier"] == 2
    # the onnx step's own success count is not added to the ensemble's (no double count)
    assert sample.counters[("text_embedding", "nv_inference_request_success")] == 10
    assert "text_embedding_onnx" not in sample.models


def test_envoy_protocol_clusters_of_one_pool_add_up_and_foreign_clusters_are_skipped() -> None:
    text = (envoy_text(10, 1, {"10": 5, "+Inf": 10})
            + envoy_text(6, 0, {"10": 6, "+Inf": 6}, cluster="text_embedding--gpu--http").replace("# TYPE", "# HELP"))
    sample = parse_envoy(text, "envoy")
    assert set(sample.clusters) == {("text_embedding", "gpu")}
    c = sample.clusters[("text_embedding", "gpu")]
    assert (c.rq_total, c.rq_5xx) == (16, 1)
    assert c.buckets == ((10.0, 11.0), (math.inf, 16.0))


@pytest.mark.parametrize("text", [
    'nv_inference_pending_request_count{model="m" 1\n',
    "nv_inference_count{model=\"m\"} not-a-number\n",
    'nv_inference_pending_request_count{version="1"} 3\n',
    'nv_inference_request_success{model="m"} -4\n',
], ids=["unclosed-labels", "bad-value", "no-model-label", "negative-counter"])
def test_malformed_triton_text_raises_a_clear_error_naming_the_source(text: str) -> None:
    with pytest.raises(MetricsParseError, match="http://replica-7:8002/metrics"):
        parse_triton(text, "http://replica-7:8002/metrics")


def test_malformed_envoy_bucket_label_is_a_parse_error() -> None:
    text = 'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="a--b--grpc",le="fast"} 1\n'
    with pytest.raises(MetricsParseError, match="envoy"):
        parse_envoy(text, "envoy")


def snapshot(t: float, replicas: dict[str, str | None], envoy: str | None) -> ScrapeSnapshot:
    triton = {url: (parse_triton(text, url, COMPOSING) if text is not None else None) for url, text in replicas.items()}
    return ScrapeSnapshot(t, {"gpu": triton}, parse_envoy(envoy, "envoy") if envoy else None)


def test_window_rates_quantiles_errors_and_emulation_lag() -> None:
    before = snapshot(100.0, {"r1": triton_text(success=100, executions=50, lag_ms=10)},
                      envoy_text(1000, 10, {"10": 900, "50": 990, "+Inf": 1000}))
    after = snapshot(110.0, {"r1": triton_text(pending_tok=2, pending_onnx=3, success=150, executions=60, lag_ms=40)},
                     envoy_text(1200, 30, {"10": 1000, "50": 1185, "+Inf": 1200}))
    m = fleet_metrics(before, after)[("gpu", "text_embedding")]
    assert m.window_s == 10.0
    assert m.request_rate_per_s == pytest.approx(20.0)  # Envoy's count wins over Triton's
    assert m.error_rate == pytest.approx(0.1)
    assert m.queue_depth == 5
    # 200 requests in the window: 100 under 10 ms, 95 in (10, 50], 5 over 50 ms
    assert m.p95_ms == pytest.approx(10 + 40 * (190 - 100) / 95)
    assert m.p99_ms == pytest.approx(50.0)  # rank 198 is in +Inf: the highest finite bound
    assert m.emulation_lag_ms == pytest.approx(3.0)
    assert m.ready


def test_counter_reset_between_scrapes_gives_the_new_value_as_the_delta() -> None:
    before = snapshot(0.0, {"r1": triton_text(success=5000)}, None)
    after = snapshot(10.0, {"r1": triton_text(success=30)}, None)  # Triton restarted
    assert fleet_metrics(before, after)[("gpu", "text_embedding")].request_rate_per_s == pytest.approx(3.0)


def test_a_replica_that_could_not_be_scraped_is_not_ready_and_not_counted() -> None:
    before = snapshot(0.0, {"r1": triton_text(success=10), "r2": triton_text(success=10)}, None)
    after = snapshot(10.0, {"r1": triton_text(success=20, pending_onnx=1), "r2": None}, None)
    fm = fleet_metrics(before, after)
    assert fm.ready_replicas == {"gpu": 1}
    assert fm[("gpu", "text_embedding")].request_rate_per_s == pytest.approx(1.0)
    down = fleet_metrics(before, snapshot(10.0, {"r1": None, "r2": None}, None), expected=[("gpu", "text_embedding")])
    assert not down[("gpu", "text_embedding")].ready
    assert down.ready_replicas == {"gpu": 0}


def test_first_read_has_no_window_and_zero_rates() -> None:
    m = fleet_metrics(None, snapshot(5.0, {"r1": triton_text(success=10)}, None))[("gpu", "text_embedding")]
    assert (m.window_s, m.request_rate_per_s, m.p99_ms) == (0.0, 0.0, None)


def vcluster_text(gold: float, bronze: float) -> str:
    return ("# TYPE envoy_vhost_vcluster_upstream_rq_total counter\n"
            f'envoy_vhost_vcluster_upstream_rq_total{{envoy_virtual_host="models",envoy_virtual_cluster="gold"}} {gold}\n'
            f'envoy_vhost_vcluster_upstream_rq_total{{envoy_virtual_host="models",envoy_virtual_cluster="bronze"}} {bronze}\n'
            'envoy_vhost_vcluster_upstream_rq_total{envoy_virtual_host="admin",envoy_virtual_cluster="other"} 5\n')


def test_per_tier_rates_come_from_envoys_virtual_clusters() -> None:
    before = ScrapeSnapshot(0.0, {}, parse_envoy(vcluster_text(100, 1000), "envoy"))
    after = ScrapeSnapshot(10.0, {}, parse_envoy(vcluster_text(300, 1600), "envoy"))
    assert fleet_metrics(before, after).tier_rate_per_s == {"gold": 20.0, "bronze": 60.0, "other": 0.0}
