"""The receiver takes what Envoy, Triton and the SDK send (protobuf, chunked or sized; OTLP/JSON with
hex ids) and writes the same span records; it refuses what is not OTLP with a 4xx naming why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tracing.otlp import OtlpDecodeError, decode
from tracing.receiver import OtlpReceiver
from tracing.traces import read_spans

TRITON_JSON = {"resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "triton"}}]},
    "scopeSpans": [{"spans": [{
        "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
        "parentSpanId": "00f067aa0ba902b7", "name": "InferRequest", "kind": 2,
        "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000005000000",
        "attributes": [{"key": "triton.model_version", "value": {"intValue": "1"}}],
        "events": [{"timeUnixNano": "1700000000001000000", "name": "HTTP_RECV_START"}],
    }]}],
}]}


@pytest.fixture
def receiver(tmp_path: Path):
    with OtlpReceiver(tmp_path / "spans.jsonl") as r:
        yield r


def test_otlp_json_ids_are_read_as_hex_not_base64():
    (span,) = decode(json.dumps(TRITON_JSON).encode(), "application/json")
    assert span["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert span["parent_span_id"] == "00f067aa0ba902b7"
    assert span["service"] == "triton" and span["kind"] == 2
    assert span["end_ns"] - span["start_ns"] == 5_000_000
    assert span["attributes"] == {"triton.model_version": 1}
    assert span["events"] == [{"name": "HTTP_RECV_START", "time_ns": 1700000000001000000}]


def test_the_sdks_protobuf_export_lands_as_json_lines(receiver: OtlpReceiver):
    provider = TracerProvider(resource=Resource.create({"service.name": "control-server"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("control.tick") as parent:
        with tracer.start_as_current_span("child"):
            pass
    provider.shutdown()
    spans = {s["name"]: s for s in read_spans(receiver.out)}
    assert set(spans) == {"control.tick", "child"}
    assert spans["child"]["parent_span_id"] == spans["control.tick"]["span_id"]
    assert spans["control.tick"]["trace_id"] == format(parent.get_span_context().trace_id, "032x")
    assert spans["control.tick"]["service"] == "control-server"


def test_a_chunked_body_is_read_whole(receiver: OtlpReceiver):
    body = json.dumps(TRITON_JSON).encode()
    r = requests.post(f"{receiver.endpoint}/v1/traces", data=iter([body[:50], body[50:]]),
                      headers={"Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 200
    assert [s["name"] for s in read_spans(receiver.out)] == ["InferRequest"]


@pytest.mark.parametrize(("path", "content_type", "body", "status", "says"), [
    ("/v1/traces", "application/json", b"{not json", 400, "OTLP/JSON"),
    ("/v1/traces", "application/x-protobuf", b"\xff\xff\xff", 400, "ExportTraceServiceRequest"),
    ("/v1/traces", "text/plain", b"hello", 400, "Content-Type"),
    ("/v1/metrics", "application/json", b"{}", 404, "/v1/traces"),
], ids=["bad-json", "bad-protobuf", "wrong-content-type", "wrong-path"])
def test_what_is_not_an_otlp_trace_export_is_refused_saying_why(receiver, path, content_type, body, status, says):
    r = requests.post(f"{receiver.endpoint}{path}", data=body, headers={"Content-Type": content_type}, timeout=5)
    assert r.status_code == status and says in r.text
    assert read_spans(receiver.out) == []


def test_a_bad_hex_id_names_the_field():
    bad = json.loads(json.dumps(TRITON_JSON))
    bad["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "zz"
    with pytest.raises(OtlpDecodeError, match="spanId"):
        decode(json.dumps(bad).encode(), "application/json")
