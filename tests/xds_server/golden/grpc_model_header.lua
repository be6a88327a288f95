
local PREFIX = "/inference.GRPCInferenceService/"
local METHODS = { ["ModelInfer"] = true, ["ModelMetadata"] = true, ["ModelReady"] = true, ["ModelConfig"] = true, ["ModelStatistics"] = true }

-- Reads a base-128 varint at 1-based position pos of s; returns value, next position (nil if cut).
local function varint(s, pos)
  local value, scale = 0, 1
  while pos <= #s do
    local b = string.byte(s, pos)
    value = value + (b % 128) * scale
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
    local wire = tag % 8
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
  headers:remove("x-model")
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
    handle:headers():add("x-model", model)
    handle:clearRouteCache()
  end
end
