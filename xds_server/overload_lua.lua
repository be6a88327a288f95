-- Tier admission at the edge (xds_server/overload.py fills the %%(name)s slots; docs/overload.md).
-- Request: write the KServe v2 "priority" request parameter from the tier, so every tier reaches
--   the same Triton scheduler at its own priority level (REST: into the JSON header's top-level
--   "parameters", first and last, so it wins over one the client sent; gRPC: a map entry appended
--   to the ModelInferRequest, and protobuf keeps the last entry of a key).
-- Response: a request the pool shed (Triton's queue policy) becomes 429 / RESOURCE_EXHAUSTED with
--   a retry hint, as does Envoy's own overflow (x-envoy-overloaded).
local LEVELS = { %(levels)s }
local DEFAULT_TIER = "%(default_tier)s"
local TIER_HEADER = "%(tier_header)s"
local RETRY_AFTER_S = %(retry_after_s)d
local GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"
local NS = "tmas.overload"

-- Top-level "parameters" object of the JSON text s: (open, close) positions of its braces, or the
-- position of the top-level "{" and nil when there is none.  nil, nil when s is not an object.
local function scan(s)
  local top = string.find(s, "%%S")
  if top == nil or string.sub(s, top, top) ~= "{" then return nil, nil, nil end
  local depth, pos, open, close, inside = 0, top, nil, nil, false
  while true do
    local j = string.find(s, '[{}%%[%%]"]', pos)
    if j == nil then return nil, nil, nil end
    local c = string.sub(s, j, j)
    if c == '"' then
      local k = j + 1
      while true do
        local q = string.find(s, '["\\]', k)
        if q == nil then return nil, nil, nil end
        if string.sub(s, q, q) == "\\" then k = q + 2 else k = q break end
      end
      pos = k + 1
      if depth == 1 and open == nil and string.sub(s, j + 1, k - 1) == "parameters" then
        local colon = string.find(s, "%%S", k + 1)
        if colon ~= nil and string.sub(s, colon, colon) == ":" then
          local v = string.find(s, "%%S", colon + 1)
          if v == nil or string.sub(s, v, v) ~= "{" then return nil, nil, nil end
          open, inside, depth, pos = v, true, 2, v + 1
        end
      end
    elseif c == "{" or c == "[" then
      depth, pos = depth + 1, j + 1
    else
      depth, pos = depth - 1, j + 1
      if inside and depth == 1 then close, inside = j, false end
      if depth == 0 then return top, open, close end
    end
  end
end

-- Our priority goes first AND last in the parameters object: Triton 2.51 takes the first of
-- duplicate keys (measured: a body with priority 1 then 3 was served at level 1), a parser that
-- iterates would take the last; either way a priority the client wrote never wins.
local function with_priority(json, level)
  local top, open, close = scan(json)
  if top == nil then return nil end
  local entry = '"priority":' .. level
  if open ~= nil then
    local first = string.find(json, "%%S", open + 1)
    if first == close then
      return string.sub(json, 1, open) .. entry .. string.sub(json, close)
    end
    return string.sub(json, 1, open) .. entry .. "," .. string.sub(json, open + 1, close - 1) .. "," .. entry
      .. string.sub(json, close)
  end
  local first = string.find(json, "%%S", top + 1)
  local sep = (string.sub(json, first, first) == "}") and "" or ","
  return string.sub(json, 1, top) .. '"parameters":{' .. entry .. "}" .. sep .. string.sub(json, top + 1)
end

local function be32(n)
  return string.char(math.floor(n / 16777216) %% 256, math.floor(n / 65536) %% 256, math.floor(n / 256) %% 256, n %% 256)
end

-- ModelInferRequest.parameters (field 4) entry {key: "priority", value: InferParameter{int64_param: level}}.
local function priority_entry(level)
  return "\34\14\10\8priority\18\2\16" .. string.char(level)
end

local function tier_of(headers)
  local tier = headers:get(TIER_HEADER)
  if tier == nil then return DEFAULT_TIER end
  return tier
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local tier = tier_of(headers)
  local level = LEVELS[tier]
  if level == nil then return end  -- an unknown tier: the route answers 400
  handle:streamInfo():dynamicMetadata():set(NS, "tier", tier)
  local path = headers:get(":path") or ""
  if path == GRPC_INFER then
    local body = handle:body()
    if body == nil then return end
    local n = body:length()
    if n < 5 then return end
    local frame = body:getBytes(0, n)
    local b1, b2, b3, b4 = string.byte(frame, 2, 5)
    -- One uncompressed message exactly filling the body; anything else goes as it came.
    if string.byte(frame, 1) ~= 0 or ((b1 * 256 + b2) * 256 + b3) * 256 + b4 ~= n - 5 then return end
    local entry = priority_entry(level)
    body:setBytes("\0" .. be32(n - 5 + #entry) .. string.sub(frame, 6) .. entry)
    return
  end
  if headers:get(":method") ~= "POST" or string.find(path, "^/v2/models/[^/]+/") == nil
     or string.find(path, "/infer$") == nil then return end
  local json_len = tonumber(headers:get("inference-header-content-length") or "")
  local body = handle:body()
  if body == nil then return end
  local n = body:length()
  if n == 0 then return end
  local whole = body:getBytes(0, n)
  local json = json_len and string.sub(whole, 1, json_len) or whole
  local rewritten = with_priority(json, level)
  if rewritten == nil then return end  -- not a JSON object: left to validation / Triton
  body:setBytes(rewritten .. (json_len and string.sub(whole, json_len + 1) or ""))
  if json_len then handle:headers():replace("inference-header-content-length", tostring(#rewritten)) end
end

local function shed_reason(text)
  if text == nil then return nil end
  if string.find(text, "%(queue_full)s", 1, true) or string.find(text, "%(queue_full_encoded)s", 1, true) then
    return "the pool's queue for this tier is full"
  end
  if string.find(text, "%(timed_out)s", 1, true) or string.find(text, "%(timed_out_encoded)s", 1, true) then
    return "the request waited past this tier's queue timeout"
  end
  return nil
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local meta = handle:streamInfo():dynamicMetadata():get(NS)
  if meta == nil then return end
  local tier = meta["tier"] or DEFAULT_TIER
  local grpc_status = headers:get("grpc-status")
  if grpc_status ~= nil then
    -- Trailers-only reply (Triton's errors, Envoy's own): the status is in the headers.
    local reason = shed_reason(headers:get("grpc-message"))
    if grpc_status == "14" and reason == nil and headers:get("x-envoy-overloaded") ~= nil then
      reason = "the data plane is at its concurrency limit"
    end
    -- 8: the gRPC clusters' upstream filter already turned a shed into RESOURCE_EXHAUSTED so
    -- that the router would not retry it (overload.py); the message and hints are added here.
    if (grpc_status ~= "14" and grpc_status ~= "8") or reason == nil then return end
    headers:replace("grpc-status", "8")
    headers:replace("grpc-message", "overloaded: " .. tier .. " request shed (" .. reason .. "); retry after "
      .. RETRY_AFTER_S .. " s")
    headers:replace("grpc-retry-pushback-ms", tostring(RETRY_AFTER_S * 1000))
    headers:replace("retry-after", tostring(RETRY_AFTER_S))
    return
  end
  if headers:get(":status") ~= "503" then return end
  local reason = nil
  if headers:get("x-envoy-overloaded") ~= nil then
    reason = "the data plane is at its concurrency limit"
  else
    local body = handle:body()
    if body == nil then return end
    reason = shed_reason(body:getBytes(0, math.min(body:length(), 512)))
  end
  if reason == nil then return end
  local message = '{"error":"overloaded: ' .. tier .. ' request shed (' .. reason .. '); retry after '
    .. RETRY_AFTER_S .. ' s"}'
  handle:body():setBytes(message)
  headers = handle:headers()
  headers:replace(":status", "429")
  headers:replace("content-type", "application/json")
  headers:replace("retry-after", tostring(RETRY_AFTER_S))
end
