"""Traces read back: linkage problems named, the slowest request of a tier found, a waterfall drawn."""

from __future__ import annotations

from pathlib import Path

from tracing.traces import Trace, group_traces, linked_problems, slowest
from tracing.waterfall import write_waterfall

T = "ab" * 16


def span(span_id, parent, name, service, kind, start_ms, end_ms, trace_id=T, **attributes):
    return {"trace_id": trace_id, "span_id": span_id, "parent_span_id": parent, "name": name, "kind": kind,
            "service": service, "start_ns": int(start_ms * 1e6), "end_ns": int(end_ms * 1e6),
            "attributes": attributes, "status": 0, "events": []}


def request(trace_id=T, took_ms=10.0, tier="gold", link=True):
    upstream_parent = "e2" if link else "ff"
    return [
        span("e1", "c0", "ingress", "envoy-gateway", 2, 0, took_ms, trace_id, **{"sla.tier": tier}),
        span("e2", "e1", "router cpu egress", "envoy-gateway", 3, 0.1, took_ms - 0.1, trace_id),
        span("t1", upstream_parent, "InferRequest", "triton", 2, 0.3, took_ms - 0.3, trace_id),
        span("t2", "t1", "text_embedding", "triton", 2, 0.4, took_ms - 0.4, trace_id),
        span("t3", "t2", "compute", "triton", 2, 0.5, took_ms - 0.5, trace_id),
    ]


def test_a_request_through_envoy_into_triton_is_one_linked_tree():
    (trace,) = group_traces(request()).values()
    assert linked_problems(trace) == []
    assert [s["span_id"] for s in trace.roots()] == ["e1"]
    assert trace.depth(trace.by_id()["t3"]) == 4


def test_a_triton_span_that_does_not_hang_under_envoys_upstream_span_is_named():
    (trace,) = group_traces(request(link=False)).values()
    assert "not a child of Envoy's upstream span" in linked_problems(trace)[0]


def test_a_trace_without_triton_or_without_envoy_says_so():
    assert linked_problems(Trace(T, tuple(request()[:2]))) == ["no Triton span in the trace"]
    assert linked_problems(Trace(T, tuple(request()[2:]))) == ["no Envoy server span"]


def test_the_slowest_linked_request_of_the_tier_is_picked():
    spans = (request("01" * 16, 12.0) + request("02" * 16, 30.0, tier="bronze") + request("03" * 16, 20.0)
             + request("04" * 16, 50.0, link=False))
    best = slowest(group_traces(spans).values(), tier="gold")
    assert best is not None and best.trace_id == "03" * 16


def test_the_waterfall_is_a_png(tmp_path: Path):
    (trace,) = group_traces(request()).values()
    path = write_waterfall(trace, tmp_path / "w.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
