"""The Lua filter that lets Envoy route gRPC KServe calls by model with clients unchanged.

A gRPC ModelInfer request carries the model name only in its body (``ModelInferRequest.model_name``,
protobuf field 1, as are ``name`` of ModelMetadata/ModelReady/ModelConfig/ModelStatistics requests).
Envoy chooses a route from the headers, so this filter buffers the (unary) request, reads field 1
of the first gRPC message and writes it to ``x-model``, then clears the route cache so the router
matches again with it.  Any ``x-model`` a client sent is removed first: the body is the truth.

Why this and not ``grpc_field_extraction`` + a ``dynamic_metadata`` route match (which also works,
FINDINGS): it needs no descriptor set built from tritonclient's protos, routes on a plain header
that the access log and tests can see, and measured cheaper here (docs/xds.md has the figures).
Limits, both deliberate: a compressed message (flag byte 1) is not parsed, so the request goes to
the server-level route and Triton answers for itself; bodies over the listener's buffer limit are
rejected by Envoy (``DataPlaneSettings.max_request_bytes``).  Streaming calls are never buffered.
"""

from __future__ import annotations

MODEL_HEADER = "x-model"

# Unary KServe v2 methods whose request has the model name in field 1.
MODEL_METHODS = ("ModelInfer", "ModelMetadata", "ModelReady", "ModelConfig", "ModelStatistics")

LUA_SOURCE = r"""
local PREFIX = "/inference.GRPCInferenceService/"
local METHODS = { %(methods)s }

-- Reads a base-128 varint at 1-based position pos of s; returns value, next position (nil if cut).
local function varint(s, pos)
  local value, scale = 0, 1
  while pos <= #s do
    local b = string.byte(s, pos)
    value = value + (b %% 128) * scale
    pos = pos + 1
    if b < 128 then return value, pos end
    scale = scale * 128
  end
  return nil, pos
end

-- Field 1 (length-delimited) of the protobuf message in s, scanning past other fields.
local function field_one(s)
  local pos = 1
  while pos <= #s do
    local tag
    tag, pos = varint(s, pos)
    if tag == nil then return nil end
    local wire = tag %% 8
    if wire == 2 then
      local len
      len, pos = varint(s, pos)
      if len == nil or pos + len - 1 > #s then return nil end
      if tag == 10 then return string.sub(s, pos, pos + len - 1) end
      pos = pos + len
    elseif wire == 0 then
      local _
      _, pos = varint(s, pos)
      if _ == nil then return nil end
    elseif wire == 1 then pos = pos + 8
    elseif wire == 5 then pos = pos + 4
    else return nil end
  end
  return nil
end

function envoy_on_request(handle)
  local headers = handle:headers()
  headers:remove("%(header)s")
  local path = headers:get(":path")
  if path == nil or string.sub(path, 1, #PREFIX) ~= PREFIX then return end
  if not METHODS[string.sub(path, #PREFIX + 1)] then return end
  local body = handle:body()
  if body == nil then return end
  local n = body:length()
  if n < 5 then return end
  -- gRPC frame: 1 byte compressed flag, 4 bytes length, then the message.  Only the head of the
  -- message is copied into Lua: field 1 comes first in practice, 600 bytes leave room for others.
  local head = body:getBytes(0, math.min(n, 605))
  if string.byte(head, 1) ~= 0 then return end
  local model = field_one(string.sub(head, 6))
  if model ~= nil and #model > 0 then
    -- A header handle taken before body() is invalid after it (the script yielded): fetch again.
    handle:headers():add("%(header)s", model)
    handle:clearRouteCache()
  end
end
"""


def lua_source() -> str:
    methods = ", ".join(f'["{m}"] = true' for m in MODEL_METHODS)
    return LUA_SOURCE % {"methods": methods, "header": MODEL_HEADER}
