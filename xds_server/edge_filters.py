"""The edge's part of each listener: the one hook ``listeners.py`` calls.

Order inside the HTTP filter chain (agreed for issue 16): authentication (jwt_authn, entitlement,
rate limit per identity), then validation, then overload admission and the gRPC model-header Lua,
then the router.  Authenticating first means an unauthenticated flood is refused before Envoy
buffers or parses a body; rate-limiting before validation means malformed requests spend the
sender's own quota.  With ``EdgeSettings()`` (the default) both functions return nothing and the
listeners are exactly as before.
"""

from __future__ import annotations

from typing import Any

from xds_server.edge_auth import auth_filters
from xds_server.edge_validation import edge_hcm_options, validation_filter
from xds_server.inputs import DataPlaneSettings


def edge_http_filters(settings: DataPlaneSettings) -> list[dict[str, Any]]:
    edge = settings.edge
    if edge.validation.enabled and edge.validation.max_body_bytes > settings.max_request_bytes:
        raise ValueError(f"edge validation max_body_bytes {edge.validation.max_body_bytes} exceeds the listener "
                         f"buffer max_request_bytes {settings.max_request_bytes}: Envoy would refuse first")
    filters = auth_filters(edge.auth, tiers=settings.tiers, default_tier=settings.default_tier,
                           tier_header=settings.tier_header)
    if edge.validation.enabled:
        filters.append(validation_filter(edge.validation))
    return filters


def edge_connection_options(settings: DataPlaneSettings) -> dict[str, Any]:
    """Connection-manager fields (header limits) to merge into each listener's HCM."""
    return edge_hcm_options(settings.edge.validation) if settings.edge.validation.enabled else {}
