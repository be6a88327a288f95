"""One list of signals: what the deciders consume decides what is scraped and asked of Envoy."""

from __future__ import annotations

import dataclasses
import re

import pytest

from control.metrics_scrape import ScrapeSource
from router_lib.metric_names import SIGNAL_SOURCES, envoy_stats_filter, envoy_stats_url, triton_series_for
from router_lib.metrics import PoolModelMetrics

TRITON_TEXT = """\
nv_inference_pending_request_count{model="m",version="1"} 3
nv_inference_request_success{model="m",version="1"} 10
nv_inference_request_failure{model="m",reason="OTHER",version="1"} 1
emulation_executions_total{model="m",pool="cpu",accelerator="cpu",emulated="true"} 4
emulation_lag_ms_total{model="m",pool="cpu",accelerator="cpu",emulated="true"} 8
"""


def test_every_live_metric_field_has_a_declared_source():
    fields = {f.name for f in dataclasses.fields(PoolModelMetrics)} - {"pool", "model", "window_s"}
    assert fields | {"tier_rate_per_s", "ready_replicas"} == set(SIGNAL_SOURCES)


@pytest.mark.parametrize(("stat", "signals", "matches"), [
    pytest.param("cluster.m--cpu--grpc.upstream_rq_total", {"request_rate_per_s"}, True, id="rate-needs-rq-total"),
    pytest.param("cluster.m--cpu--grpc.upstream_rq_5xx", {"error_rate"}, True, id="errors-need-rq-xx"),
    pytest.param("cluster.m--cpu--grpc.upstream_rq_5xx", {"p99_ms"}, False, id="latency-needs-no-rq-xx"),
    pytest.param("cluster.m--cpu--http.upstream_rq_time", {"p99_ms"}, True, id="latency-needs-rq-time"),
    pytest.param("cluster.m--cpu--http.upstream_rq_active", set(SIGNAL_SOURCES), False, id="rq-active-is-read-by-nobody"),
    pytest.param("vhost.models.vcluster.gold.upstream_rq_total", {"tier_rate_per_s"}, True, id="tier-shares"),
    pytest.param("vhost.models.vcluster.gold.upstream_rq_total", {"queue_depth"}, False, id="queue-needs-no-envoy"),
])
def test_envoy_is_asked_for_exactly_what_the_signals_need(stat, signals, matches):
    assert bool(re.search(envoy_stats_filter(signals), stat)) is matches


def test_an_unknown_signal_is_an_error_naming_it():
    with pytest.raises(KeyError, match="queue_time_ms"):
        envoy_stats_url("http://127.0.0.1:9901", {"queue_time_ms"})


def test_the_scraper_parses_only_the_series_of_the_consumed_signals():
    source = ScrapeSource({"cpu": ["http://r1/metrics"]}, fetch=lambda url, timeout_s: TRITON_TEXT,
                          signals={"queue_depth"})
    assert source.series == triton_series_for({"queue_depth"}) == {"nv_inference_pending_request_count"}
    m = source.read(1.0).by_pool_model[("cpu", "m")]
    assert m.queue_depth == 3 and m.request_rate_per_s == 0.0


def test_the_policy_consumes_only_signals_that_have_a_source():
    from router_lib.policy import CONSUMED_FLEET_METRICS, CONSUMED_METRICS

    assert set(CONSUMED_METRICS | CONSUMED_FLEET_METRICS) <= set(SIGNAL_SOURCES)


def test_the_control_server_scrapes_what_the_policy_consumes():
    from control.server import DECIDER_SIGNALS
    from router_lib.policy import CONSUMED_FLEET_METRICS, CONSUMED_METRICS

    assert DECIDER_SIGNALS == CONSUMED_METRICS | CONSUMED_FLEET_METRICS
