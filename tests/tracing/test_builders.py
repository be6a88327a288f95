"""What tracing adds to Envoy's config and Triton's command line, and that Envoy accepts it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fleet.triton_tracing import triton_trace_args
from tracing.settings import TracingSettings
from xds_server import DataPlaneSettings, envoy_bootstrap, validate_bootstrap, write_envoy_bootstrap
from xds_server.listeners import envoy_listeners
from xds_server.protos import LISTENER, to_dict, to_message
from xds_server.tracing import COLLECTOR_CLUSTER, collector_cluster

ON = TracingSettings("http://127.0.0.1:4318", sample_ratio=0.01)


def _hcm(listener: dict) -> dict:
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def test_without_tracing_settings_no_listener_has_a_tracing_field():
    assert all("tracing" not in _hcm(lst) for lst in envoy_listeners(DataPlaneSettings()))


def test_both_edge_listeners_trace_with_the_sampling_percentage_and_parse_as_envoys_proto():
    for listener in envoy_listeners(DataPlaneSettings(tracing=ON)):
        tracing = _hcm(to_dict(to_message(LISTENER, listener)))["tracing"]  # json_format refuses unknown fields
        assert tracing["random_sampling"] == {"value": 1.0}
        assert tracing["spawn_upstream_span"] is True
        provider = tracing["provider"]
        assert provider["name"] == "envoy.tracers.opentelemetry"
        assert provider["typed_config"]["http_service"]["http_uri"] == {
            "uri": "http://127.0.0.1:4318/v1/traces", "cluster": COLLECTOR_CLUSTER, "timeout": "1s"}
        assert tracing["custom_tags"] == [{"tag": "sla.tier", "request_header": {"name": "x-sla-tier",
                                                                                  "default_value": "silver"}}]


@pytest.mark.parametrize(("endpoint", "kind"), [("http://127.0.0.1:4318", "STATIC"),
                                                ("http://otel-collector.observability.svc:4318", "STRICT_DNS")])
def test_the_collector_cluster_resolves_a_host_name_and_takes_an_address_as_is(endpoint, kind):
    cluster = collector_cluster(TracingSettings(endpoint))
    assert cluster["type"] == kind
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert address["port_value"] == 4318


def test_the_bootstrap_gets_the_collector_cluster_from_the_environment_and_envoy_validates_it(tmp_path: Path,
                                                                                              monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector.observability.svc:4318")
    path = write_envoy_bootstrap(tmp_path / "envoy.yaml", node_id="trace-test", xds_port=18000)
    clusters = [c["name"] for c in yaml.safe_load(path.read_text())["static_resources"]["clusters"]]
    assert clusters[-1] == COLLECTOR_CLUSTER
    validate_bootstrap(path)


def test_without_the_environment_the_bootstrap_is_unchanged(tmp_path: Path, monkeypatch):
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    path = write_envoy_bootstrap(tmp_path / "envoy.yaml", node_id="trace-test", xds_port=18000)
    assert yaml.safe_load(path.read_text()) == envoy_bootstrap(node_id="trace-test", xds_port=18000)


def test_triton_flags_follow_the_settings():
    assert triton_trace_args(None, instance="cpu-0") == []
    assert triton_trace_args(TracingSettings("http://c:4318", sample_ratio=0.0), instance="cpu-0") == []
    assert triton_trace_args(TracingSettings("http://c:4318", sample_ratio=0.1), instance="cpu-0") == []
    flags = triton_trace_args(TracingSettings("http://c:4318", sample_ratio=0.1, triton_rate=1), instance="cpu-0")
    assert "--trace-config=mode=opentelemetry" in flags
    assert "--trace-config=rate=1" in flags
    assert "--trace-config=opentelemetry,url=http://c:4318/v1/traces" in flags
    assert "--trace-config=opentelemetry,resource=service.instance.id=cpu-0" in flags
