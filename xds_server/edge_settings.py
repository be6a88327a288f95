"""What the edge (Envoy's listeners) checks before a request reaches a model: frozen values.

Two independent parts, both off by default so that ``DataPlaneSettings()`` builds exactly the
filter chain it always did:

* ``auth`` (``EdgeAuth``): who may ask for what.  ``mode: open`` (local development, the default)
  authenticates nobody and trusts ``x-sla-tier`` as before; ``mode: closed`` (the cluster default)
  requires a JWT signed by a key of ``jwks``, maps its identity claim to the tiers that identity
  may use and rate-limits each identity.
* ``validation`` (``EdgeValidation``): strict KServe v2 checks of every inference request against
  the models' schemas (``ModelSchema``, generated from the model repository by the control plane),
  so malformed input gets a 4xx / INVALID_ARGUMENT naming the problem and never reaches Triton.

Validated once here (``__post_init__``); the builders in ``edge_auth`` and ``edge_validation``
trust them.  ``edge_config.load_edge_config`` reads them from a YAML file with errors naming the
field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

AUTH_MODES = ("open", "closed")
ABOVE_ENTITLEMENT = ("deny", "downgrade")
# KServe v2 datatypes and their size in bytes (None: variable length).
DATATYPE_BYTES: dict[str, int | None] = {
    "BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8, "INT8": 1, "INT16": 2, "INT32": 4,
    "INT64": 8, "FP16": 2, "BF16": 2, "FP32": 4, "FP64": 8, "BYTES": None,
}
_IDENTITY = re.compile(r"^[A-Za-z0-9_.@:/+-]{1,128}$")
_HEADER = re.compile(r"^[a-z0-9-]{1,64}$")


@dataclass(frozen=True)
class Identity:
    """One client: the tiers it may ask for and its own token bucket (requests per second)."""

    name: str
    tiers: tuple[str, ...]
    requests_per_second: float = 100.0
    burst: int = 0  # 0: one second's worth

    def __post_init__(self) -> None:
        if not _IDENTITY.match(self.name):
            raise ValueError(f"identity {self.name!r}: must match {_IDENTITY.pattern}")
        if not self.tiers:
            raise ValueError(f"identity {self.name!r}: tiers must name at least one tier")
        if self.requests_per_second <= 0:
            raise ValueError(f"identity {self.name!r}: requests_per_second must be > 0")
        if self.burst < 0:
            raise ValueError(f"identity {self.name!r}: burst must be >= 0")

    @property
    def bucket_size(self) -> int:
        return self.burst or max(1, round(self.requests_per_second))


@dataclass(frozen=True)
class EdgeAuth:
    """``mode: closed``: every request except ``public_prefixes`` carries ``Authorization: Bearer
    <JWT>`` signed by a key in ``jwks`` (a JWKS document, JSON text: public keys only), with
    ``issuer`` and one of ``audiences``.  The ``identity_claim`` names the identity."""

    mode: str = "open"
    issuer: str = ""
    audiences: tuple[str, ...] = ()
    jwks: str = ""
    identity_claim: str = "sub"
    identities: tuple[Identity, ...] = ()
    above_entitlement: str = "deny"  # or "downgrade": to the best allowed tier below the one asked
    identity_header: str = "x-edge-identity"
    # Health and readiness stay reachable without a token (load balancers and probes ask them).
    public_prefixes: tuple[str, ...] = (
        "/v2/health/", "/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady",
    )

    def __post_init__(self) -> None:
        if self.mode not in AUTH_MODES:
            raise ValueError(f"auth mode {self.mode!r}: must be one of {AUTH_MODES}")
        if self.above_entitlement not in ABOVE_ENTITLEMENT:
            raise ValueError(f"above_entitlement {self.above_entitlement!r}: must be one of {ABOVE_ENTITLEMENT}")
        if not _HEADER.match(self.identity_header):
            raise ValueError(f"identity_header {self.identity_header!r}: lower-case header name expected")
        if self.mode == "closed":
            for name in ("issuer", "jwks", "identity_claim"):
                if not getattr(self, name):
                    raise ValueError(f"auth mode closed needs {name}")
            if not self.identities:
                raise ValueError("auth mode closed needs at least one identity")
        names = [i.name for i in self.identities]
        if len(set(names)) != len(names):
            raise ValueError(f"identities listed twice: {sorted({n for n in names if names.count(n) > 1})}")

    @property
    def closed(self) -> bool:
        return self.mode == "closed"


@dataclass(frozen=True)
class TensorSchema:
    """One input as a request must send it: ``dims`` without the batch dimension, -1 = any."""

    name: str
    datatype: str
    dims: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.datatype not in DATATYPE_BYTES:
            raise ValueError(f"input {self.name!r}: datatype {self.datatype!r} is not a KServe v2 datatype")
        if any(d == 0 or d < -1 for d in self.dims):
            raise ValueError(f"input {self.name!r}: dims must be positive or -1, got {self.dims}")


@dataclass(frozen=True)
class ModelSchema:
    """``max_batch_size`` > 0: requests carry a leading batch dimension in 1..max_batch_size."""

    name: str
    max_batch_size: int
    inputs: tuple[TensorSchema, ...]

    def __post_init__(self) -> None:
        if self.max_batch_size < 0:
            raise ValueError(f"model {self.name!r}: max_batch_size must be >= 0")
        if not self.inputs:
            raise ValueError(f"model {self.name!r}: no inputs")


@dataclass(frozen=True)
class EdgeValidation:
    """``models``: schemas to check against.  A request for a model without one is left to the routes
    (404 / NOT_FOUND: the control plane derives the schemas from the same repository as the routes).
    ``max_body_bytes`` must not exceed the listener buffer (``DataPlaneSettings.max_request_bytes``)."""

    enabled: bool = False
    models: tuple[ModelSchema, ...] = ()
    max_body_bytes: int = 8 * 1024 * 1024
    # Header limits answered 431 / RESOURCE_EXHAUSTED with a message (Envoy's defaults: 60 kB, 100).
    max_request_headers_kb: int = 60
    max_headers_count: int = 100
    # Upstream (Triton) answers that are the client's fault, recognised by their message, become
    # 400 / INVALID_ARGUMENT instead of 500 / INTERNAL.
    map_upstream_client_errors: bool = True

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be >= 1")
        if not 1 <= self.max_request_headers_kb <= 8192:
            raise ValueError("max_request_headers_kb must be in 1..8192")
        if self.max_headers_count < 1:
            raise ValueError("max_headers_count must be >= 1")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model schemas listed twice: {names}")


@dataclass(frozen=True)
class EdgeSettings:
    """The default builds no edge filter at all: today's data plane, byte for byte."""

    auth: EdgeAuth = field(default_factory=EdgeAuth)
    validation: EdgeValidation = field(default_factory=EdgeValidation)

    @property
    def active(self) -> bool:
        return self.auth.closed or self.validation.enabled
