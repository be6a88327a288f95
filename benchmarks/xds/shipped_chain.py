"""The data-plane settings the platform ships, for the overhead benchmark: the control server's own
construction (``control/__main__.py``: ``dataplane_settings`` from the fleet, then the edge and
tracing settings) with the parts issue 16 says the measured chain must have on.

* authentication: the cluster default, ``mode: closed`` (jwt_authn with a JWKS, entitlement and a
  per-identity rate limit), with a key made here and one identity entitled to every tier whose
  rate limit is far above what the benchmark sends (a limit that refused requests would measure
  refusals, not the chain);
* validation: strict KServe v2 checks against the models' schemas (``schemas_from_models``);
* tracing: Envoy's OpenTelemetry tracer exporting to a local OTLP receiver, at the platform's
  default sampling ratio (``tracing.settings.DEFAULT_SAMPLE_RATIO``);
* per-tier timeouts and retries as ``make up`` runs them (``control serve --tier-timeouts 2``:
  ``xds_server.overload.tier_resilience`` with each tier's bound x 2, gold hedged, no shedding);
  per-tier admission (the priority-writing Lua) only when asked, as ``make up`` does not ship it
  (it needs pools whose model configs declare priority levels).

Each part is optional so the benchmark can also measure the chain as ``make up`` starts it today.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xds_server.inputs import DataPlaneSettings

ISSUER, AUDIENCE, IDENTITY = "https://overhead.bench", "kserve", "overhead-bench"


@dataclass
class ShippedChain:
    settings: DataPlaneSettings
    client_metadata: tuple[tuple[str, str], ...]
    receiver: Any = None  # tracing.receiver.OtlpReceiver when tracing is on
    parts: tuple[str, ...] = ()

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()


def platform_settings(fleet: Any, **overrides: Any) -> DataPlaneSettings:
    """``dataplane_settings`` as the control server calls it (its fleet, its routing policy)."""
    from control.server import dataplane_settings
    from router_lib.policy_types import PolicySettings

    return dataplane_settings(fleet, PolicySettings(**fleet.routing), **overrides)


def shipped_chain(fleet: Any, models: dict[str, Any], workdir: Path, *, auth: bool = True, validation: bool = True,
                  tracing: bool = True, tier_timeouts: float | None = 2.0, admission: bool = False) -> ShippedChain:
    parts: list[str] = []
    metadata: list[tuple[str, str]] = []
    receiver = None
    tracing_settings = None
    if tracing:
        from tracing.receiver import OtlpReceiver
        from tracing.settings import DEFAULT_SAMPLE_RATIO, TracingSettings

        receiver = OtlpReceiver(workdir / "spans.jsonl").start()
        tracing_settings = TracingSettings(endpoint=receiver.endpoint, sample_ratio=DEFAULT_SAMPLE_RATIO)
        parts.append(f"tracing (sampling {DEFAULT_SAMPLE_RATIO:g})")
    settings = platform_settings(fleet, tracing=tracing_settings)
    if tier_timeouts or admission:
        from xds_server.overload import tier_resilience

        # As control/__main__.py does for --tier-timeouts (admission: shed=True on top).
        settings = dataclasses.replace(settings, **tier_resilience(
            fleet.tiers, per_try_factor=tier_timeouts or 1.0, shed=admission,
            best_effort_per_try_ms=2000.0 * fleet.time_dilation))
        parts.append(f"per-tier timeouts x{tier_timeouts or 1.0:g} + retries" + (" + admission" if admission else ""))
    if auth or validation:
        from xds_server.edge_settings import EdgeAuth, EdgeSettings, EdgeValidation, Identity
        from xds_server.edge_tokens import jwks, mint, new_key
        from xds_server.edge_validation import schemas_from_models

        edge = EdgeSettings()
        if auth:
            key = new_key()
            edge = dataclasses.replace(edge, auth=EdgeAuth(
                mode="closed", issuer=ISSUER, audiences=(AUDIENCE,), jwks=jwks(key),
                identities=(Identity(IDENTITY, settings.tiers, requests_per_second=1_000_000),)))
            metadata.append(("authorization", f"Bearer {mint(key, subject=IDENTITY, issuer=ISSUER, audience=AUDIENCE, ttl_s=6 * 3600)}"))
            parts.append("authentication (closed: JWT, entitlement, rate limit)")
        if validation:
            edge = dataclasses.replace(edge, validation=EdgeValidation(enabled=True, models=schemas_from_models(models)))
            parts.append("validation (strict KServe v2)")
        settings = dataclasses.replace(settings, edge=edge)
    return ShippedChain(settings, tuple(metadata), receiver, tuple(parts))
