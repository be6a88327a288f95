"""Spans read back from the receiver's JSON lines, grouped into traces, and questions about them.

Pure functions over ``tracing.otlp`` records: which trace a request produced, whether its
Envoy and Triton spans are linked (each span's parent present in the same trace), and which
traced request of a tier was the slowest (by Envoy's server span: the time the client saw, less
the network to the edge).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Span = Mapping[str, Any]
SPAN_KIND_SERVER, SPAN_KIND_CLIENT = 2, 3
ENVOY_SERVICE = "envoy-gateway"
TRITON_SERVICE = "triton"
TIER_TAG = "sla.tier"


def read_spans(path: Path | str) -> list[dict[str, Any]]:
    """Every complete line of the receiver's file (a line still being written is skipped)."""
    spans = []
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            spans.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return spans


@dataclass(frozen=True)
class Trace:
    trace_id: str
    spans: tuple[Span, ...]

    def by_id(self) -> dict[str, Span]:
        return {s["span_id"]: s for s in self.spans}

    def children(self, span: Span) -> list[Span]:
        return sorted((s for s in self.spans if s["parent_span_id"] == span["span_id"]), key=lambda s: s["start_ns"])

    def of_service(self, service: str) -> list[Span]:
        return [s for s in self.spans if s["service"] == service]

    def roots(self) -> list[Span]:
        """Spans whose parent is not in this trace (the client's span, which no one exported, is
        the parent of Envoy's server span when the client sent a ``traceparent``)."""
        ids = self.by_id()
        return sorted((s for s in self.spans if s["parent_span_id"] not in ids), key=lambda s: s["start_ns"])

    def edge_span(self) -> Span | None:
        """Envoy's server span: the request as the edge saw it."""
        servers = [s for s in self.of_service(ENVOY_SERVICE) if s["kind"] == SPAN_KIND_SERVER]
        return min(servers, key=lambda s: s["start_ns"]) if servers else None

    @property
    def duration_ns(self) -> int:
        return max(s["end_ns"] for s in self.spans) - min(s["start_ns"] for s in self.spans)

    def depth(self, span: Span) -> int:
        ids, depth = self.by_id(), 0
        while span["parent_span_id"] in ids and depth < 64:
            span, depth = ids[span["parent_span_id"]], depth + 1
        return depth


def group_traces(spans: Iterable[Span]) -> dict[str, Trace]:
    grouped: dict[str, list[Span]] = defaultdict(list)
    for s in spans:
        grouped[s["trace_id"]].append(s)
    return {tid: Trace(tid, tuple(sorted(ss, key=lambda s: s["start_ns"]))) for tid, ss in grouped.items()}


def linked_problems(trace: Trace) -> list[str]:
    """Why ``trace`` is not one linked Envoy -> Triton tree (empty when it is): Envoy's server span,
    an Envoy upstream span under it, and Triton's ``InferRequest`` under that upstream span."""
    edge = trace.edge_span()
    if edge is None:
        return ["no Envoy server span"]
    upstream = [s for s in trace.children(edge) if s["service"] == ENVOY_SERVICE and s["kind"] == SPAN_KIND_CLIENT]
    if not upstream:
        return ["no Envoy upstream span under the server span"]
    upstream_ids = {s["span_id"] for s in upstream}
    triton = trace.of_service(TRITON_SERVICE)
    if not triton:
        return ["no Triton span in the trace"]
    requests = [s for s in triton if s["name"] == "InferRequest"]
    if not any(s["parent_span_id"] in upstream_ids for s in requests):
        return [f"Triton's InferRequest is not a child of Envoy's upstream span ({sorted(upstream_ids)}); "
                f"its parents: {[s['parent_span_id'] for s in requests]}"]
    orphans = [s["name"] for s in triton if s["name"] != "InferRequest" and s["parent_span_id"] not in trace.by_id()]
    if orphans:
        return [f"Triton spans whose parent is missing: {orphans}"]
    return []


def slowest(traces: Iterable[Trace], *, tier: str | None = None, linked_only: bool = True) -> Trace | None:
    """The trace whose Envoy server span lasted longest (of ``tier``, by Envoy's ``sla.tier`` tag)."""
    best: tuple[int, Trace] | None = None
    for t in traces:
        edge = t.edge_span()
        if edge is None or (tier is not None and edge["attributes"].get(TIER_TAG) != tier):
            continue
        if linked_only and linked_problems(t):
            continue
        took = edge["end_ns"] - edge["start_ns"]
        if best is None or took > best[0]:
            best = (took, t)
    return best[1] if best else None
