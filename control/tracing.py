"""The control server's part of the traces: each control-loop tick is a span.

``start_tracing`` reads the OTEL_* environment once (``tracing.settings``) and, when it names a
collector, installs the OpenTelemetry SDK's tracer provider: OTLP/HTTP (protobuf) export from a
batch processor (a background thread, so a tick never waits on the collector), and a sampler
that keeps every tick (one a second costs nothing measurable, and a slow tick is exactly what an
operator looks for).  ``control.loop`` only uses the OpenTelemetry API: with no provider
installed its spans are no-ops, so tests and tracing-off runs pay nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

from tracing.settings import TracingSettings

CONTROL_SERVICE_NAME = "control-server"
EXPORT_DELAY_MS = 1000


def tracer_provider(tracing: TracingSettings, *, service_name: str = CONTROL_SERVICE_NAME) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}),
                              sampler=ParentBased(ALWAYS_ON))
    exporter = OTLPSpanExporter(endpoint=tracing.traces_url, timeout=2)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=EXPORT_DELAY_MS))
    return provider


def start_tracing(env: Mapping[str, str] | None = None) -> TracingSettings | None:
    """Install the tracer provider if the environment asks for tracing; -> the settings (the data
    plane's too: Envoy samples and exports as they say), or None when tracing is off."""
    tracing = TracingSettings.from_env(os.environ if env is None else env)
    if tracing is not None:
        trace.set_tracer_provider(tracer_provider(tracing))
    return tracing
