"""OTLP trace export requests -> flat span records (plain dicts, one per span).

Two encodings arrive at the receiver: protobuf (Envoy, the Python SDK) and OTLP/JSON (Triton).
OTLP/JSON is not protobuf's JSON mapping: ids are hex strings, not base64, so ``json_format`` would
decode them wrongly; both encodings are walked here instead, into the same record:

    {"trace_id": 32 hex, "span_id": 16 hex, "parent_span_id": 16 hex or "", "name": str,
     "kind": int (OTLP SpanKind), "service": str, "start_ns": int, "end_ns": int,
     "attributes": {str: str | int | float | bool}, "status": int, "events": [{"name", "time_ns"}]}
"""

from __future__ import annotations

import base64
import json
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

Span = dict[str, Any]


class OtlpDecodeError(ValueError):
    pass


def _any_value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, which)


def spans_from_protobuf(body: bytes) -> list[Span]:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except Exception as e:  # protobuf raises DecodeError; any failure is the sender's
        raise OtlpDecodeError(f"not an OTLP ExportTraceServiceRequest: {e}") from None
    out = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _any_value(kv.value) for kv in resource_spans.resource.attributes}
        service = str(resource.get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                out.append({
                    "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(), "parent_span_id": s.parent_span_id.hex(),
                    "name": s.name, "kind": int(s.kind), "service": service,
                    "start_ns": int(s.start_time_unix_nano), "end_ns": int(s.end_time_unix_nano),
                    "attributes": {kv.key: _any_value(kv.value) for kv in s.attributes},
                    "status": int(s.status.code),
                    "events": [{"name": e.name, "time_ns": int(e.time_unix_nano)} for e in s.events],
                })
    return out


def _json_value(value: dict[str, Any]) -> Any:
    for key, v in value.items():
        if key == "intValue":
            return int(v)  # int64 travels as a JSON string
        if key == "doubleValue":
            return float(v)
        if key == "arrayValue":
            return [_json_value(x) for x in v.get("values", [])]
        if key == "kvlistValue":
            return {kv["key"]: _json_value(kv.get("value", {})) for kv in v.get("values", [])}
        if key == "bytesValue":
            return base64.b64decode(v).hex()
        return v
    return None


def _json_id(value: Any, size: int, what: str) -> str:
    """OTLP/JSON ids are hex; an empty parent id is absent or ""."""
    text = str(value or "")
    if text and (len(text) != 2 * size or any(c not in "0123456789abcdefABCDEF" for c in text)):
        raise OtlpDecodeError(f"{what} {text!r}: expected {2 * size} hex digits")
    return text.lower()


def _kind(value: Any) -> int:
    if isinstance(value, str):  # some senders write the enum name
        names = ["SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER", "SPAN_KIND_CLIENT",
                 "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER"]
        return names.index(value) if value in names else 0
    return int(value or 0)


def spans_from_json(body: bytes) -> list[Span]:
    try:
        request = json.loads(body)
        out = []
        for resource_spans in request.get("resourceSpans", []):
            attrs = resource_spans.get("resource", {}).get("attributes", [])
            resource = {kv["key"]: _json_value(kv.get("value", {})) for kv in attrs}
            service = str(resource.get("service.name", ""))
            for scope_spans in resource_spans.get("scopeSpans", []):
                for s in scope_spans.get("spans", []):
                    out.append({
                        "trace_id": _json_id(s.get("traceId"), 16, "traceId"),
                        "span_id": _json_id(s.get("spanId"), 8, "spanId"),
                        "parent_span_id": _json_id(s.get("parentSpanId"), 8, "parentSpanId"),
                        "name": str(s.get("name", "")), "kind": _kind(s.get("kind")), "service": service,
                        "start_ns": int(s.get("startTimeUnixNano", 0)), "end_ns": int(s.get("endTimeUnixNano", 0)),
                        "attributes": {kv["key"]: _json_value(kv.get("value", {})) for kv in s.get("attributes", [])},
                        "status": int((s.get("status") or {}).get("code", 0) or 0),
                        "events": [{"name": e.get("name", ""), "time_ns": int(e.get("timeUnixNano", 0))}
                                   for e in s.get("events", [])],
                    })
        return out
    except OtlpDecodeError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise OtlpDecodeError(f"not an OTLP/JSON ExportTraceServiceRequest: {type(e).__name__}: {e}") from None


def decode(body: bytes, content_type: str) -> list[Span]:
    """By ``Content-Type``: ``application/json`` or ``application/x-protobuf`` (OTLP/HTTP's two)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/json":
        return spans_from_json(body)
    if kind in ("application/x-protobuf", "application/protobuf"):
        return spans_from_protobuf(body)
    raise OtlpDecodeError(f"Content-Type {content_type!r}: OTLP/HTTP sends application/x-protobuf or application/json")
