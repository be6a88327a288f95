"""Where spans go and how many requests are traced: one value, read once from the environment.

Configuration is OpenTelemetry's own: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces-only
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) names the collector and ``OTEL_TRACES_SAMPLER_ARG`` the
fraction of requests the edge traces.  Every process of the platform inherits its parent's
environment (the local platform, a pod spec), so Envoy's bootstrap, each Triton's command line and
the control server agree without a new argument threaded through each constructor.  Tracing is
off unless an endpoint is set.

Why the edge decides: a request is sampled once, where it enters (Envoy's ``random_sampling``),
and the decision travels in the W3C ``traceparent`` header's sampled flag.  The control server's
SDK samples parent-based.  Triton 2.51 samples on its own (``rate``, one in N; it does not read
the sampled flag, see docs/tracing.md), so it is told to trace every request when the edge
samples them all and otherwise ``triton_rate``.
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
    ``<endpoint>/v1/traces``.  ``sample_ratio`` in [0, 1]: the fraction of requests without a
    sampled parent that the edge traces.  ``triton_rate``: Triton traces one request in this many
    (0 = follow ``sample_ratio``: every request when it is 1, else one in ``round(1/ratio)``)."""

    endpoint: str
    sample_ratio: float = DEFAULT_SAMPLE_RATIO
    triton_rate: int = 0

    def __post_init__(self) -> None:
        parts = urlsplit(self.endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TracingConfigError(f"OTLP endpoint {self.endpoint!r}: expected http(s)://host[:port]")
        if not (0.0 <= self.sample_ratio <= 1.0) or math.isnan(self.sample_ratio):
            raise TracingConfigError(f"{SAMPLE_VAR}={self.sample_ratio!r}: a fraction in [0, 1] (0.01 = 1%)")
        if self.triton_rate < 0:
            raise TracingConfigError(f"{TRITON_RATE_VAR}={self.triton_rate}: 0 (follow the edge) or N >= 1")

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
        if self.triton_rate:
            return self.triton_rate
        if self.sample_ratio <= 0.0:
            return 0  # nothing sampled at the edge: Triton traces nothing either
        return max(1, round(1.0 / self.sample_ratio))

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
        rate = 0
        if env.get(TRITON_RATE_VAR, "").strip():
            try:
                rate = int(env[TRITON_RATE_VAR])
            except ValueError:
                raise TracingConfigError(f"{TRITON_RATE_VAR}={env[TRITON_RATE_VAR]!r}: not an integer") from None
        return cls(endpoint=endpoint, sample_ratio=ratio, triton_rate=rate)

    def to_env(self) -> dict[str, str]:
        """The variables that reproduce these settings in a child process."""
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint, SAMPLE_VAR: repr(self.sample_ratio)}
        if self.triton_rate:
            env[TRITON_RATE_VAR] = str(self.triton_rate)
        return env
