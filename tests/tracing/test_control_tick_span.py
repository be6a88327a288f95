"""A control-loop tick is one span, with what it published; without a provider it costs nothing."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import control.loop
from tests.control.test_loop import make_loop


def test_each_tick_is_a_span_naming_the_snapshot_it_published(monkeypatch):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(control.loop, "TICK_TRACER", provider.get_tracer("control.loop"))
    loop, parts = make_loop()
    view = loop.tick()
    parts["metrics"].error = RuntimeError("prometheus down")
    loop.tick()
    first, second = exporter.get_finished_spans()
    assert first.name == second.name == "control.tick"
    assert first.attributes["control.snapshot_version"] == view.snapshot_version
    assert first.attributes["control.routes"] == len(view.routes)
    assert "prometheus down" in second.attributes["control.error"]
