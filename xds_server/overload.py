"""Overload by tier and resilience per tier: the edge's admission filter and the settings that
derive per-try timeouts, hedging and retry budgets from the tiers' bounds (docs/overload.md).

The decision that shapes it: the pool, not the edge, decides what to shed.  Envoy cannot see a
pool's capacity, and a fixed rate limit per tier is either too loose under overload or throws
away bronze the pool could serve.  So tiers share a pool through Triton's priority levels
(``router_lib.priority``): gold is always served first, a best-effort tier has a bounded queue, a
bounded tier's request that waited past its bound is rejected.  The edge does two cheap things:
it writes the request's ``priority`` from its tier (the one way a tier reaches Triton's scheduler:
Triton takes priority only as a request parameter, and per-tier model entries would be separate
schedulers with no priority between them), and it turns a shed reply into 429 /
RESOURCE_EXHAUSTED with a retry hint, so a client backs off instead of treating it as a failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from router_lib.domain import TierSet
from router_lib.priority import TierPriorities, tier_priorities
from xds_server.inputs import DataPlaneSettings, OverloadSettings, RetrySettings
from xds_server.protos import LUA_TYPE

__all__ = ["admission_filter", "lua_source", "shed_by_tier", "shed_upstream_filters", "tier_resilience"]

_LUA = Path(__file__).with_name("overload_lua.lua")
# Triton's queue-policy rejections (HTTP 503 body / gRPC UNAVAILABLE message), as sent and as a
# grpc-message header percent-encodes them: what both Lua scripts recognise as a shed.
SHED_QUEUE_FULL = "Exceeds maximum queue size"
SHED_TIMED_OUT = "Request timeout expired"
_SHED_TEXTS = {"queue_full": SHED_QUEUE_FULL, "queue_full_encoded": SHED_QUEUE_FULL.replace(" ", "%20"),
               "timed_out": SHED_TIMED_OUT, "timed_out_encoded": SHED_TIMED_OUT.replace(" ", "%20")}


def lua_source(settings: DataPlaneSettings) -> str:
    levels = ", ".join(f'["{tier}"] = {level}' for tier, level in sorted(settings.overload.priority_levels))
    return _LUA.read_text() % {
        "levels": levels, "default_tier": settings.default_tier, "tier_header": settings.tier_header,
        "retry_after_s": settings.overload.retry_after_s, **_SHED_TEXTS,
    }


def admission_filter(settings: DataPlaneSettings) -> list[dict[str, Any]]:
    """The per-tier admission filter for a listener's chain (empty when shedding by tier is off).
    It goes after authentication and validation (a request they refuse never gets a priority) and
    before the gRPC model-header Lua and the router."""
    if not settings.overload.enabled:
        return []
    return [{
        "name": "tmas.overload_admission",
        "typed_config": {"@type": LUA_TYPE, "default_source_code": {"inline_string": lua_source(settings)}},
    }]


# An upstream filter of the gRPC clusters: Triton answers a shed gRPC request with UNAVAILABLE,
# which the router retries ("unavailable" is in gRPC's retry_on: a replica that is stopping says
# the same, and failover needs it).  A shed is the pool's answer, not a dead replica's: as
# RESOURCE_EXHAUSTED before the router sees it, it is not retried on other replicas and fallback
# pools (which added load to a saturated fleet and delayed the client's answer), as REST's 503
# is not; the edge's admission filter then adds the message and retry hint.
_SHED_UPSTREAM_LUA = """
function envoy_on_request(handle) end
function envoy_on_response(handle)
  local headers = handle:headers()
  if headers:get("grpc-status") ~= "14" then return end
  local text = headers:get("grpc-message")
  if text == nil then return end
  if {shed} then
    headers:replace("grpc-status", "8")
  end
end
""".format(shed=" or ".join(f'string.find(text, "{t}", 1, true)' for t in _SHED_TEXTS.values()))
UPSTREAM_CODEC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"


def shed_upstream_filters(settings: DataPlaneSettings) -> list[dict[str, Any]]:
    """``http_filters`` of a gRPC cluster's protocol options: [] when shedding by tier is off."""
    if not settings.overload.enabled:
        return []
    return [
        {"name": "tmas.shed_not_retried",
         "typed_config": {"@type": LUA_TYPE, "default_source_code": {"inline_string": _SHED_UPSTREAM_LUA}}},
        {"name": "envoy.filters.http.upstream_codec", "typed_config": {"@type": UPSTREAM_CODEC_TYPE}},
    ]


def shed_by_tier(tiers: TierSet, priorities: TierPriorities | None = None) -> OverloadSettings:
    """Shedding by tier on: the edge writes each tier's level (``priorities``: default
    ``tier_priorities(tiers)``, the mapping the model configs are written from) and maps sheds."""
    levels = (priorities or tier_priorities(tiers)).by_tier()
    return OverloadSettings(priority_levels=tuple(sorted(levels.items())))


def tier_resilience(tiers: TierSet, *, per_try_factor: float = 1.0, best_effort_per_try_ms: float = 2000.0,
                    hedge: bool = True, retry_budget_percent: float | None = 25.0, min_retry_concurrency: int = 64,
                    priorities: TierPriorities | None = None, shed: bool = True,
                    base: RetrySettings | None = None) -> dict[str, Any]:
    """``DataPlaneSettings`` keyword arguments (``retry`` and ``overload``) derived from the tiers.

    Per-try timeout of a tier = its bound x ``per_try_factor`` (a try that outlives the bound has
    missed it; another replica gets the request); a best-effort tier gets
    ``best_effort_per_try_ms``, longer than its Triton queue timeout so that the pool, not Envoy,
    sheds it.  ``hedge``: the tightest tier's per-try timeout hedges (the slow try keeps running).
    ``shed``: write priorities at the edge and map shed replies (``priorities``: default
    ``tier_priorities(tiers)``, the same mapping the model configs are written from)."""
    if per_try_factor <= 0:
        raise ValueError(f"per_try_factor must be > 0, got {per_try_factor}")
    per_try = []
    for tier in sorted(tiers.tiers.values(), key=lambda t: t.name):
        per_try.append((tier.name, tier.p99_ms * per_try_factor if tier.p99_ms is not None else best_effort_per_try_ms))
    bounded = sorted((t for t in tiers.tiers.values() if t.p99_ms is not None), key=lambda t: (t.p99_ms, t.name))
    base = base or RetrySettings()
    retry = RetrySettings(
        num_retries=base.num_retries, retry_on_http=base.retry_on_http, retry_on_grpc=base.retry_on_grpc,
        host_selection_retry_max_attempts=base.host_selection_retry_max_attempts,
        max_concurrent_retries=base.max_concurrent_retries, per_try_timeouts_ms=tuple(per_try),
        hedge_tiers=(bounded[0].name,) if hedge and bounded else (),
        retry_budget_percent=retry_budget_percent, min_retry_concurrency=min_retry_concurrency,
        route_timeout_floor_ms=base.route_timeout_floor_ms,
    )
    return {"retry": retry, "overload": shed_by_tier(tiers, priorities) if shed else OverloadSettings()}
