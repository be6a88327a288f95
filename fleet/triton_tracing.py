"""Triton's part of the traces: ``--trace-config`` flags for its OpenTelemetry mode.

Verified with the ``nvidia-pytriton`` wheel's tritonserver 2.51 (docs/tracing.md): in
``mode=opentelemetry`` it exports OTLP/HTTP (JSON bodies) to ``opentelemetry,url=...``, honours
a request's W3C ``traceparent`` (its ``InferRequest`` span is a child of the caller's span, here
Envoy's upstream span) and adds one span per model: an ensemble's span has one child per step,
each with a ``compute`` span.  It does not read the ``traceparent``'s sampled flag, so it traces
every request (``rate=1``) or runs without trace flags (``TracingSettings.effective_triton_rate``);
and its OpenTelemetry mode crashed under concurrent load (``tracing.settings`` says when), so it
is on only where the load is light or someone asked for it.
"""

from __future__ import annotations

from tracing.settings import TracingSettings

TRITON_SERVICE_NAME = "triton"
# Triton's batch span processor exports every this many ms (its default 5000): a replica stopped
# right after a request loses less.
EXPORT_DELAY_MS = 1000


def triton_trace_args(tracing: TracingSettings | None, *, instance: str) -> list[str]:
    """The flags for one replica (``instance``: its name, e.g. ``cpu-0``); [] when tracing is off."""
    if tracing is None or tracing.effective_triton_rate == 0:
        return []
    flags = [
        "mode=opentelemetry",
        "level=TIMESTAMPS",
        f"rate={tracing.effective_triton_rate}",
        f"opentelemetry,url={tracing.traces_url}",
        f"opentelemetry,resource=service.name={TRITON_SERVICE_NAME}",
        f"opentelemetry,resource=service.instance.id={instance}",
        f"opentelemetry,bsp_schedule_delay={EXPORT_DELAY_MS}",
    ]
    return [f"--trace-config={flag}" for flag in flags]
