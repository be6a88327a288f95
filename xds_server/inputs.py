"""What the control plane knows, as frozen values: the input of ``build_snapshot``.

These are the only types the rest of the platform needs to drive the data plane: replica
discovery reports ``PoolEndpoints``, the deciders produce ``RouteWeights`` (defined once, in
``router_lib.routes``, and used as is from the decision to the snapshot and the state file), and
``DataPlaneSettings`` holds the few knobs of Envoy's listeners, retries and outlier detection.
They are validated once, here, when built (``__post_init__``), so the builders can trust them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from router_lib.release_split import VersionSplit
from router_lib.routes import RouteWeights
from tracing.settings import TracingSettings
from xds_server.edge_settings import EdgeSettings
from xds_server.tls import UpstreamTls

__all__ = ["CandidatePool", "DataPlaneSettings", "Endpoint", "MirrorTarget", "OutlierSettings", "OverloadSettings",
           "PoolEndpoints",
           "RetrySettings", "RouteWeights", "VersionSplit"]

# Triton model names and pool names become parts of Envoy resource names, header values and
# regexes; keep them to a safe alphabet so no escaping is ever needed downstream.
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
PROTOCOLS = ("grpc", "http")


def _check_name(kind: str, value: str) -> None:
    if not _NAME.match(value) or "--" in value:
        raise ValueError(f"{kind} {value!r}: must match {_NAME.pattern} and not contain '--'")


# A DNS name (RFC 1123 labels), e.g. triton-cpu.inference.svc.cluster.local.
_AUTHORITY = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


@dataclass(frozen=True)
class Endpoint:
    """One Triton replica: where its KServe v2 HTTP and gRPC ports listen.

    ``authority``: in a cluster, the host name of the replica's Service
    (``<service>.<namespace>.svc.cluster.local``); Envoy sends it as the request's Host/:authority.
    Istio's sidecar picks the mesh route of a headless Service's pod by that header, and with any
    other Host it passes the request through in plaintext, which STRICT mTLS refuses.  Empty
    (the local platform): the client's Host is kept."""

    host: str
    http_port: int
    grpc_port: int
    authority: str = ""

    def __post_init__(self) -> None:
        if self.authority and not _AUTHORITY.match(self.authority):
            raise ValueError(f"Endpoint.authority {self.authority!r} is not a DNS name")
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            # EDS endpoints are addresses, never resolved: a hostname would be NACKed by Envoy.
            raise ValueError(f"Endpoint.host {self.host!r} is not an IP address") from None
        for name in ("http_port", "grpc_port"):
            port = getattr(self, name)
            if not 0 < port < 65536:
                raise ValueError(f"Endpoint.{name}: {port} is not a TCP port")

    def port(self, proto: str) -> int:
        return self.grpc_port if proto == "grpc" else self.http_port


@dataclass(frozen=True)
class PoolEndpoints:
    """The live replicas of one pool and the models it serves.

    ``replicas`` may change at run time (autoscaling, a replica restarting): only the EDS answers
    change then.  ``model_versions`` maps a model to the version its replicas serve; when a model
    has one, its clusters carry the version in their name (``<model>--<pool>--<proto>--v<version>``)
    so a canary pool serving another version is a separate cluster that routes can weight.
    """

    pool: str
    accelerator: str
    emulated: bool
    models: tuple[str, ...]
    replicas: tuple[Endpoint, ...]
    model_versions: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        _check_name("pool", self.pool)
        for model in self.models:
            _check_name("model", model)
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"pool {self.pool}: models listed twice: {self.models}")
        for model, _version in self.model_versions:
            if model not in self.models:
                raise ValueError(f"pool {self.pool}: version given for {model!r}, which it does not serve")

    def version_of(self, model: str) -> str | None:
        return dict(self.model_versions).get(model)


@dataclass(frozen=True)
class CandidatePool:
    """Replicas serving a release's candidate version of one model in one pool (separate replicas
    per version: see docs/releases.md).  They get their own cluster,
    ``<model>--<pool>--<proto>--v<version>``, which a route weights beside the stable one
    (``VersionSplit``); its load assignment holds the candidate replicas at priority 0 and the
    stable pools serving the model behind them, so a failing candidate replica is retried on stable."""

    model: str
    pool: str
    version: str
    accelerator: str
    emulated: bool
    replicas: tuple[Endpoint, ...]

    def __post_init__(self) -> None:
        _check_name("model", self.model)
        _check_name("pool", self.pool)
        if not self.version.isdigit():
            raise ValueError(f"candidate {self.model}/{self.pool}: version {self.version!r} is not a number")


@dataclass(frozen=True)
class MirrorTarget:
    """Shadow mode: where mirrored requests of ``model`` go (a comparator that asks both versions
    and compares their answers; Envoy discards the mirror's response and never waits for it).
    ``port``: its KServe v2 REST port (HTTP routes); ``grpc_port``: its KServe v2 gRPC port, when
    the model's gRPC routes are mirrored too (None: HTTP only)."""

    model: str
    host: str
    port: int
    grpc_port: int | None = None

    def __post_init__(self) -> None:
        _check_name("model", self.model)
        Endpoint(self.host, self.port, self.grpc_port or self.port)  # the same address checks


@dataclass(frozen=True)
class RetrySettings:
    """Retries stay inside the weighted cluster Envoy picked; with the fallback pools at priority 1+
    of every cluster, ``previous_priorities`` is what moves a retry to another pool (FINDINGS)."""

    num_retries: int = 3
    retry_on_http: str = "connect-failure,refused-stream,reset"
    retry_on_grpc: str = "connect-failure,refused-stream,reset,unavailable,cancelled"
    host_selection_retry_max_attempts: int = 5
    # Envoy's default circuit breaker allows 3 concurrent retries per cluster: far too few when a
    # whole pool dies under load, so every in-flight request retries at once.
    max_concurrent_retries: int = 1024
    # Per tier: how long one try may take before Envoy gives up on that replica and retries
    # elsewhere (a hung replica); () = no per-try timeout (the route timeout alone, as before).
    # Built from the tiers' bounds by ``xds_server.overload.tier_resilience``.
    per_try_timeouts_ms: tuple[tuple[str, float], ...] = ()
    # Tiers whose per-try timeout sends a hedged try without cancelling the first (the first
    # answer wins): for a tight tier, where a slow-but-alive replica would cost its bound.
    hedge_tiers: tuple[str, ...] = ()
    # A retry budget (Envoy ``retry_budget``): retries in flight at most this % of the cluster's
    # active requests, and never fewer than ``min_retry_concurrency`` (a whole pool failing over
    # at once).  None: the fixed ``max_concurrent_retries``, as before.
    retry_budget_percent: float | None = None
    min_retry_concurrency: int = 64
    # With per-try timeouts, a request's whole bound is the per-try timeout x (retries + 1), but
    # never below this: a hedged try keeps running after its per-try timeout, and on a machine
    # where every try is slow (CPU starved) it answers late instead of the client getting a 504.
    route_timeout_floor_ms: float = 1000.0

    def __post_init__(self) -> None:
        for tier, ms in self.per_try_timeouts_ms:
            if not ms > 0:
                raise ValueError(f"RetrySettings.per_try_timeouts_ms[{tier!r}]: must be > 0 ms, got {ms}")
        unknown = set(self.hedge_tiers) - {t for t, _ in self.per_try_timeouts_ms}
        if unknown:
            raise ValueError(f"RetrySettings.hedge_tiers {sorted(unknown)}: hedging needs a per-try timeout for the tier")
        if self.retry_budget_percent is not None and not 0 < self.retry_budget_percent <= 100:
            raise ValueError(f"RetrySettings.retry_budget_percent must be in (0, 100], got {self.retry_budget_percent}")
        if self.min_retry_concurrency < 1:
            raise ValueError(f"RetrySettings.min_retry_concurrency must be >= 1, got {self.min_retry_concurrency}")
        if self.route_timeout_floor_ms < 0:
            raise ValueError(f"RetrySettings.route_timeout_floor_ms must be >= 0, got {self.route_timeout_floor_ms}")

    def per_try_timeout_ms(self, tier: str) -> float | None:
        return dict(self.per_try_timeouts_ms).get(tier)


@dataclass(frozen=True)
class OutlierSettings:
    consecutive_local_origin_failure: int = 2
    base_ejection_time_ms: int = 5000
    interval_ms: int = 1000
    max_ejection_percent: int = 100


@dataclass(frozen=True)
class OverloadSettings:
    """Shedding by tier (docs/overload.md).  ``priority_levels``: tier -> Triton priority level
    (``router_lib.priority``); when set, the edge writes each request's ``priority`` parameter
    from its tier, and replies a pool shed (Triton's queue policy: 503 "Exceeds maximum queue
    size" / "Request timeout expired", gRPC UNAVAILABLE) become 429 / RESOURCE_EXHAUSTED with
    ``retry-after: retry_after_s`` (gRPC also ``grpc-retry-pushback-ms``).  () = off, as before."""

    priority_levels: tuple[tuple[str, int], ...] = ()
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        for tier, level in self.priority_levels:
            if not 1 <= level <= 127:
                raise ValueError(f"OverloadSettings.priority_levels[{tier!r}]: level must be in 1..127, got {level}")
        if self.retry_after_s < 1:
            raise ValueError(f"OverloadSettings.retry_after_s must be >= 1, got {self.retry_after_s}")

    @property
    def enabled(self) -> bool:
        return bool(self.priority_levels)


@dataclass(frozen=True)
class DataPlaneSettings:
    """Knobs of the data plane.  Defaults are where Triton clients look: HTTP :8000, gRPC :8001."""

    listen_address: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    # Every route's weights sum to this (the routing policy's ``total_weight``; the control
    # server passes its value, so the two cannot disagree).
    total_weight: int = 100
    tier_header: str = "x-sla-tier"
    default_tier: str = "silver"
    tiers: tuple[str, ...] = ("gold", "silver", "bronze")
    fallback_order: tuple[str, ...] = ("gpu", "inferentia", "cpu")
    connect_timeout_ms: int = 500
    route_timeout_s: float = 60.0
    # Envoy buffers a gRPC ModelInfer body to read the model name; bigger requests fail with
    # "Payload Too Large" (FINDINGS), so the limit is a setting, not an accident.
    max_request_bytes: int = 16 * 1024 * 1024
    retry: RetrySettings = field(default_factory=RetrySettings)
    outlier: OutlierSettings = field(default_factory=OutlierSettings)
    # OpenTelemetry traces at the edge (xds_server.tracing, docs/tracing.md); None: off, as before.
    tracing: TracingSettings | None = None
    overload: OverloadSettings = field(default_factory=OverloadSettings)
    # Proxyless gRPC clients dial ``xds:///<prefix><model>``; set to None for no api_listeners.
    proxyless_listener_prefix: str | None = ""
    # Authentication, entitlement, rate limit and strict validation at the edge (docs/edge.md);
    # the default builds none of them: the listeners are as before.
    edge: EdgeSettings = field(default_factory=EdgeSettings)
    # mTLS to every replica's gRPC port (docs/security.md); None: plaintext, as before.  Triton's
    # HTTP port has no TLS, so HTTP clusters stay plaintext on loopback either way.
    upstream_tls: UpstreamTls | None = None

    def __post_init__(self) -> None:
        if self.default_tier not in self.tiers:
            raise ValueError(f"default_tier {self.default_tier!r} is not one of tiers {self.tiers}")
        for tier in self.tiers:
            if not re.match(r"^[a-z0-9_-]+$", tier):
                raise ValueError(f"tier {tier!r}: lower-case letters, digits, '_' and '-' only")
        if self.total_weight < 1:
            raise ValueError(f"total_weight must be >= 1, got {self.total_weight}")
        for what, named in (("retry.per_try_timeouts_ms", self.retry.per_try_timeouts_ms),
                            ("overload.priority_levels", self.overload.priority_levels)):
            unknown = sorted({t for t, _ in named} - set(self.tiers))
            if unknown:
                raise ValueError(f"{what}: unknown tiers {unknown}; tiers are {self.tiers}")
        if self.http_port == self.grpc_port and self.http_port != 0:
            raise ValueError("http_port and grpc_port must differ")
