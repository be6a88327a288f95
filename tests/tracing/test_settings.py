"""The OTEL_* environment -> TracingSettings: off by default, checked at the boundary."""

from __future__ import annotations

import pytest

from tracing.settings import DEFAULT_SAMPLE_RATIO, TracingConfigError, TracingSettings


def test_tracing_is_off_without_an_endpoint_or_when_the_sdk_is_disabled():
    assert TracingSettings.from_env({}) is None
    assert TracingSettings.from_env({"OTEL_TRACES_SAMPLER_ARG": "0.5"}) is None
    assert TracingSettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}) is None


def test_the_default_samples_one_request_in_a_hundred_at_the_edge_and_leaves_triton_untraced():
    s = TracingSettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318"})
    assert s is not None
    assert s.sample_ratio == DEFAULT_SAMPLE_RATIO == 0.01
    assert s.sample_percent == 1.0
    assert s.effective_triton_rate == 0
    assert (s.host, s.port, s.traces_url) == ("otel-collector.observability", 4318,
                                              "http://otel-collector.observability:4318/v1/traces")


def test_a_traces_only_endpoint_is_used_as_given_and_wins_over_the_base_endpoint():
    s = TracingSettings.from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9999/v1/traces",
                                  "OTEL_EXPORTER_OTLP_ENDPOINT": "http://elsewhere:4318"})
    assert s is not None and s.traces_url == "http://127.0.0.1:9999/v1/traces"


@pytest.mark.parametrize(("ratio", "triton_rate"), [(1.0, 1), (0.1, 0), (0.01, 0), (0.0, 0)])
def test_triton_traces_every_request_only_when_the_edge_does(ratio, triton_rate):
    assert TracingSettings("http://c:4318", sample_ratio=ratio).effective_triton_rate == triton_rate


def test_an_explicit_triton_rate_wins():
    s = TracingSettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "PLATFORM_TRITON_TRACE_RATE": "1"})
    assert s is not None and s.effective_triton_rate == 1 and s.sample_ratio == 0.01


def test_settings_survive_the_trip_through_a_child_process_environment():
    s = TracingSettings("http://127.0.0.1:4318", sample_ratio=0.25, triton_rate=1)
    assert TracingSettings.from_env(s.to_env()) == s


@pytest.mark.parametrize(("env", "named"), [
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTLP endpoint"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "grpc://c:4317"}, "OTLP endpoint"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_SAMPLER_ARG": "1%"}, "OTEL_TRACES_SAMPLER_ARG"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_SAMPLER_ARG": "5"}, "OTEL_TRACES_SAMPLER_ARG"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_SAMPLER_ARG": "nan"}, "OTEL_TRACES_SAMPLER_ARG"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "PLATFORM_TRITON_TRACE_RATE": "x"}, "PLATFORM_TRITON_TRACE_RATE"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "PLATFORM_TRITON_TRACE_RATE": "-1"}, "PLATFORM_TRITON_TRACE_RATE"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "PLATFORM_TRITON_TRACE_RATE": "100"}, "cannot follow"),
], ids=["no-scheme", "grpc-scheme", "percent-sign", "above-one", "nan", "rate-not-int", "rate-negative",
        "triton-one-in-n"])
def test_a_bad_variable_is_refused_naming_it(env, named):
    with pytest.raises(TracingConfigError, match=named):
        TracingSettings.from_env(env)
