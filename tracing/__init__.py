"""OpenTelemetry traces of the request path: settings, a small OTLP receiver, traces read back, waterfalls.

The platform's processes (Envoy, every Triton, the control server) export OTLP over HTTP to one
collector endpoint.  In a cluster that is the OpenTelemetry Collector (``k8s/otel/``); locally it
is ``tracing.receiver``, which writes every span as one JSON line where the demo reads them.
This package imports nothing else of the project: every process-level package may use it.
"""
