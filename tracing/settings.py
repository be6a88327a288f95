"""Where spans go and how many requests are traced: one value, read once from the environment.

Configuration is OpenTelemetry's own: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces-only
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) names the collector and ``OTEL_TRACES_SAMPLER_ARG`` the
fraction of requests the edge traces.  Every process of the platform inherits its parent's
environment (the local platform, a pod spec), so Envoy's bootstrap, each Triton's command line and
the control server agree without a new argument threaded through each constructor.  Tracing is
off unless an endpoint is set.

Why the edge decides: a request is sampled once, where it enters (Envoy's ``random_sampling``).
Triton 2.51 cannot follow that decision: it does not read the ``traceparent``'s sampled flag and
samples on its own (``rate``: one request in N), so a 1-in-N sample would rarely meet the edge's.
Triton traces every request (``rate=1``) or none.  And its OpenTelemetry mode is not safe under
concurrent load: tritonserver 2.51 crashed (SIGSEGV) with two or four concurrent clients after
9k-42k traced requests, at rate 1 and at rate 100, with and without a ``traceparent``; with one
client, 40k traced requests ran clean.  So Triton is traced only when the edge samples every
request (the demo, the trace test: light load) or when ``PLATFORM_TRITON_TRACE_RATE=1`` asks for
it; never by default in a load run (docs/tracing.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
SAMPLE_VAR = "OTEL_TRACES_SAMPLER_ARG"
TRITON_RATE_VAR = "PLATFORM_TRITON_TRACE_RATE"
TRACES_PATH = "/v1/traces"
# A load run's default: 1 request in 100 traced at the edge (docs/tracing.md gives what it costs).
DEFAULT_SAMPLE_RATIO = 0.01


class TracingConfigError(ValueError):
    """An OTEL_* variable that cannot be used; the message names it."""


@dataclass(frozen=True)
class TracingSettings:
    """``endpoint``: the collector's OTLP/HTTP base URL (``http://host:4318``); spans go to
    ``<endpoint>/v1/traces``.  ``sample_ratio`` in [0, 1]: the fraction of requests the edge
    traces (a client forces its own with ``x-client-trace-id``).  ``triton_rate``: 1, Triton
    traces every request; 0, none; None, follow the edge (every request when ``sample_ratio`` is
    1, none otherwise).  Other rates are refused: see the module docstring."""

    endpoint: str
    sample_ratio: float = DEFAULT_SAMPLE_RATIO
    triton_rate: int | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TracingConfigError(f"OTLP endpoint {self.endpoint!r}: expected http(s)://host[:port]")
        if not (0.0 <= self.sample_ratio <= 1.0) or math.isnan(self.sample_ratio):
            raise TracingConfigError(f"{SAMPLE_VAR}={self.sample_ratio!r}: a fraction in [0, 1] (0.01 = 1%)")
        if self.triton_rate not in (None, 0, 1):
            raise TracingConfigError(
                f"{TRITON_RATE_VAR}={self.triton_rate}: 1 (Triton traces every request) or 0 (none); Triton 2.51 "
                "samples on its own and cannot follow the edge's decision, so 1 in N would rarely meet an "
                "edge-sampled request (docs/tracing.md)")

    @property
    def traces_url(self) -> str:
        """Where OTLP/HTTP exporters POST: the endpoint itself if it already names the path."""
        base = self.endpoint.rstrip("/")
        return base if base.endswith(TRACES_PATH) else base + TRACES_PATH

    @property
    def host(self) -> str:
        return urlsplit(self.endpoint).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.endpoint)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def sample_percent(self) -> float:
        return self.sample_ratio * 100.0

    @property
    def effective_triton_rate(self) -> int:
        """1: Triton traces every request; 0: Triton runs without trace flags."""
        if self.triton_rate is not None:
            return self.triton_rate
        return 1 if self.sample_ratio >= 1.0 else 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TracingSettings | None:
        """None when tracing is off (no endpoint, or ``OTEL_SDK_DISABLED=true``)."""
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return None
        endpoint = next((env[v].strip() for v in ENDPOINT_VARS if env.get(v, "").strip()), "")
        if not endpoint:
            return None
        ratio = DEFAULT_SAMPLE_RATIO
        if env.get(SAMPLE_VAR, "").strip():
            try:
                ratio = float(env[SAMPLE_VAR])
            except ValueError:
                raise TracingConfigError(f"{SAMPLE_VAR}={env[SAMPLE_VAR]!r}: not a number (0.01 = 1%)") from None
        rate = None
        if env.get(TRITON_RATE_VAR, "").strip():
            try:
                rate = int(env[TRITON_RATE_VAR])
            except ValueError:
                raise TracingConfigError(f"{TRITON_RATE_VAR}={env[TRITON_RATE_VAR]!r}: not an integer") from None
        return cls(endpoint=endpoint, sample_ratio=ratio, triton_rate=rate)

    def to_env(self) -> dict[str, str]:
        """The variables that reproduce these settings in a child process."""
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint, SAMPLE_VAR: repr(self.sample_ratio)}
        if self.triton_rate is not None:
            env[TRITON_RATE_VAR] = str(self.triton_rate)
        return env
