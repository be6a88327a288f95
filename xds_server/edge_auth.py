"""Who may ask for what: authentication, tier entitlement and a rate limit per identity at the edge.

Three filters, in this order, built only in ``mode: closed`` (``EdgeAuth``):

1. ``envoy.filters.http.jwt_authn`` (built-in, C++): a request carries ``Authorization: Bearer
   <JWT>`` signed by a key of the configured JWKS, with the issuer, one of the audiences and an
   expiry.  No token or a bad one: 401 (gRPC: UNAUTHENTICATED, Envoy's own mapping).  The verified
   payload goes to dynamic metadata, which a client cannot forge (a header could be).
2. A short Lua filter (entitlement): reads the identity claim from that metadata, looks it up in the
   identity -> tiers table compiled into the script, and either lets the request through, downgrades
   ``x-sla-tier`` to the best tier the identity may use below the one asked (``above_entitlement:
   downgrade``), or answers 403 / PERMISSION_DENIED naming the identity, the tier and what it may use.
   It writes the identity to ``x-edge-identity`` (a client-sent one is removed first).
3. ``envoy.filters.http.local_ratelimit`` (built-in): one token bucket per identity, chosen by a
   descriptor on ``x-edge-identity``; over the limit: 429 with ``retry-after`` (gRPC:
   RESOURCE_EXHAUSTED).  The buckets are per Envoy instance: N Envoy replicas admit N times the rate.

Why not RBAC for the entitlement: RBAC can deny by header and metadata but cannot downgrade, and a
policy per identity x tier grows as their product; the Lua table lookup is one coroutine per request.
"""

from __future__ import annotations

import json
import re
from typing import Any

from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as _jwt_authn_pb2  # noqa: F401  (registers the Any type)
from envoy.extensions.filters.http.local_ratelimit.v3 import (  # noqa: F401  (registers the Any type)
    local_rate_limit_pb2 as _local_rate_limit_pb2,
)

from xds_server.edge_settings import EdgeAuth, Identity
from xds_server.protos import LUA_TYPE, header_option

JWT_AUTHN_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
LOCAL_RATELIMIT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
PROVIDER = "edge"
PAYLOAD_METADATA_KEY = "jwt_payload"
RATE_LIMIT_DESCRIPTOR_KEY = "edge_identity"
_LUA_SAFE = re.compile(r"^[A-Za-z0-9_.@:/+-]+$")

ENTITLEMENT_LUA = r"""
local IDENTITIES = %(identities)s
local ORDER = { %(order)s }
local RANK = {}
for i, t in ipairs(ORDER) do RANK[t] = i end
local DEFAULT_TIER = "%(default_tier)s"
local TIER_HEADER = "%(tier_header)s"
local IDENTITY_HEADER = "%(identity_header)s"
local CLAIM = "%(claim)s"
local DOWNGRADE = %(downgrade)s

local function deny(handle, msg)
  local ctype = handle:headers():get("content-type") or ""
  if string.sub(ctype, 1, 16) == "application/grpc" then
    local encoded = string.gsub(msg, "[^ -$&-~]", function(c) return string.format("%%%%%%02X", string.byte(c)) end)
    handle:respond({ [":status"] = "200", ["content-type"] = "application/grpc", ["grpc-status"] = "7",
                     ["grpc-message"] = encoded, ["x-edge-rejected"] = "entitlement" }, "")
  else
    handle:respond({ [":status"] = "403", ["content-type"] = "application/json", ["x-edge-rejected"] = "entitlement" },
      '{"error":"' .. string.gsub(msg, '[%%c"\\]', "?") .. '"}')
  end
end

local function allowed_text(allowed)
  local t = {}
  for _, tier in ipairs(ORDER) do if allowed[tier] then t[#t + 1] = tier end end
  return table.concat(t, ", ")
end

function envoy_on_request(handle)
  local headers = handle:headers()
  headers:remove(IDENTITY_HEADER)
  local meta = handle:streamInfo():dynamicMetadata():get("envoy.filters.http.jwt_authn")
  if meta == nil then return end  -- a public path: jwt_authn required no token
  local payload = meta["%(payload_key)s"]
  local id = payload and payload[CLAIM]
  if type(id) ~= "string" then return deny(handle, "the token has no string '" .. CLAIM .. "' claim") end
  local allowed = IDENTITIES[id]
  if allowed == nil then return deny(handle, "identity '" .. id .. "' is not entitled to any tier") end
  headers:add(IDENTITY_HEADER, id)
  local asked = headers:get(TIER_HEADER)
  local tier = asked or DEFAULT_TIER
  if RANK[tier] == nil or allowed[tier] then return end  -- an unknown tier gets the routes' 400
  if DOWNGRADE or asked == nil then
    for i = RANK[tier] + 1, #ORDER do
      if allowed[ORDER[i]] then
        headers:replace(TIER_HEADER, ORDER[i])
        handle:clearRouteCache()
        return
      end
    end
    if asked == nil then
      for i = 1, #ORDER do
        if allowed[ORDER[i]] then headers:replace(TIER_HEADER, ORDER[i]); handle:clearRouteCache(); return end
      end
    end
  end
  return deny(handle, "identity '" .. id .. "' may not use tier '" .. tier .. "' (allowed: " .. allowed_text(allowed) .. ")")
end
"""


def _lua_str(value: str) -> str:
    if not _LUA_SAFE.match(value):
        raise ValueError(f"{value!r} cannot be written into the entitlement script")
    return value


def jwt_authn_filter(auth: EdgeAuth) -> dict[str, Any]:
    json.loads(auth.jwks)  # a JWKS that is not JSON fails here, not as a NACK
    public = [{"match": {"prefix": p}} for p in auth.public_prefixes]
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": JWT_AUTHN_TYPE,
            "providers": {
                PROVIDER: {
                    "issuer": auth.issuer,
                    "audiences": list(auth.audiences),
                    "local_jwks": {"inline_string": auth.jwks},
                    "require_expiration": True,
                    "payload_in_metadata": PAYLOAD_METADATA_KEY,
                    # A token seen before skips signature verification (RS256: ~20 us each).
                    "jwt_cache_config": {"jwt_cache_size": 1000},
                    "forward": False,  # the token is the edge's business: Triton never sees it
                }
            },
            "rules": [*public, {"match": {"prefix": "/"}, "requires": {"provider_name": PROVIDER}}],
        },
    }


def _lua_identities(identities: tuple[Identity, ...], tiers: tuple[str, ...]) -> str:
    rows = []
    for ident in identities:
        unknown = [t for t in ident.tiers if t not in tiers]
        if unknown:
            raise ValueError(f"identity {ident.name!r}: unknown tiers {unknown}; tiers are {list(tiers)}")
        allowed = ", ".join(f"{_lua_str(t)} = true" for t in ident.tiers)
        rows.append(f'  ["{_lua_str(ident.name)}"] = {{ {allowed} }}')
    return "{\n" + ",\n".join(rows) + "\n}"


def entitlement_filter(auth: EdgeAuth, *, tiers: tuple[str, ...], default_tier: str, tier_header: str) -> dict[str, Any]:
    source = ENTITLEMENT_LUA % {
        "identities": _lua_identities(auth.identities, tiers),
        "order": ", ".join(f'"{_lua_str(t)}"' for t in tiers),
        "default_tier": _lua_str(default_tier),
        "tier_header": _lua_str(tier_header),
        "identity_header": auth.identity_header,
        "claim": _lua_str(auth.identity_claim),
        "downgrade": "true" if auth.above_entitlement == "downgrade" else "false",
        "payload_key": PAYLOAD_METADATA_KEY,
    }
    return {"name": "envoy.filters.http.lua.edge_entitlement",
            "typed_config": {"@type": LUA_TYPE, "default_source_code": {"inline_string": source}}}


def token_bucket(requests_per_second: float, bucket_size: int) -> dict[str, Any]:
    """Envoy refills whole tokens at a fixed interval (at least 50 ms): below 1 request per second
    one token per 1/rate seconds, else the rate's tokens every second."""
    if requests_per_second >= 1:
        return {"max_tokens": bucket_size, "tokens_per_fill": round(requests_per_second), "fill_interval": "1s"}
    interval_ms = round(1000 / requests_per_second)
    return {"max_tokens": bucket_size, "tokens_per_fill": 1, "fill_interval": f"{interval_ms / 1000:g}s"}


def rate_limit_filter(auth: EdgeAuth) -> dict[str, Any]:
    everyone = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}, "runtime_key": "edge_rate_limit"}
    return {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": LOCAL_RATELIMIT_TYPE,
            "stat_prefix": "edge_identity",
            # Requests without an identity (public paths only) share this generous bucket.
            "token_bucket": {"max_tokens": 100000, "tokens_per_fill": 100000, "fill_interval": "1s"},
            "filter_enabled": everyone,
            "filter_enforced": everyone,
            "rate_limits": [{"actions": [{"request_headers": {"header_name": auth.identity_header,
                                                              "descriptor_key": RATE_LIMIT_DESCRIPTOR_KEY}}]}],
            "descriptors": [
                {"entries": [{"key": RATE_LIMIT_DESCRIPTOR_KEY, "value": i.name}],
                 "token_bucket": token_bucket(i.requests_per_second, i.bucket_size)}
                for i in auth.identities
            ],
            "rate_limited_as_resource_exhausted": True,
            "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
            "response_headers_to_add": [header_option("retry-after", "1"),
                                        header_option("x-edge-rejected", "rate-limit")],
        },
    }


def auth_filters(auth: EdgeAuth, *, tiers: tuple[str, ...], default_tier: str, tier_header: str) -> list[dict[str, Any]]:
    """The filters of ``mode: closed`` in their order; none in ``mode: open``."""
    if not auth.closed:
        return []
    return [jwt_authn_filter(auth),
            entitlement_filter(auth, tiers=tiers, default_tier=default_tier, tier_header=tier_header),
            rate_limit_filter(auth)]
