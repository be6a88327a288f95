-- Strict KServe v2 validation at the edge (xds_server/edge_validation.py fills in the model tables).
-- Requests: REST POST /v2/models/<m>[/versions/<v>]/infer (JSON, with or without the binary
-- extension) and gRPC /inference.GRPCInferenceService/ModelInfer (protobuf wire format, decoded
-- here field by field).  Other gRPC calls of the service are checked for a decodable message.
-- Responses: Triton's 500 / INTERNAL whose message says the request was malformed -> 400 /
-- INVALID_ARGUMENT.  Everything else passes untouched.
local MODELS = %(models)s
local DTYPE_BYTES = %(dtype_bytes)s
local MAX_BODY = %(max_body)d
local MAP_UPSTREAM = %(map_upstream)s
local MAX_HEADERS = %(max_headers)d
local MAX_HEADER_BYTES = %(max_header_bytes)d
local GRPC_PREFIX = "/inference.GRPCInferenceService/"
local STREAMING = { ["ModelStreamInfer"] = true }
local MAX_DEPTH = 32
local MAX_INT = 9007199254740991  -- 2^53 - 1: larger integers are not exact in a double
-- Counting numbers costs ~70 ns each (one gsub match): larger numeric arrays are accepted uncounted
-- and a wrong count is Triton's "Unable to parse 'data'" 500, mapped to 400 below.
local COUNT_LIMIT_BYTES = 4096

local byte, sub, find, gsub, format = string.byte, string.sub, string.find, string.gsub, string.format
local floor, concat = math.floor, table.concat
local OBJ, ARR, NUM = {}, {}, {}  -- metatables tagging parsed JSON objects, arrays, fast numeric arrays
local NULL = setmetatable({}, {})

-- Replies ---------------------------------------------------------------------------------------
local function grpc_message(msg)
  return (gsub(msg, "[^ -$&-~]", function(c) return format("%%%%%%02X", byte(c)) end))
end

local function json_string(msg)
  return '"' .. gsub(msg, '[%%c"\\]', function(c) return format("\\u%%04x", byte(c)) end) .. '"'
end

-- http: 400/404/413/...; grpc: the gRPC status code (3 INVALID_ARGUMENT, 5 NOT_FOUND, 8 RESOURCE_EXHAUSTED)
local function reject(handle, is_grpc, http_status, grpc_status, msg)
  if is_grpc then
    handle:respond({ [":status"] = "200", ["content-type"] = "application/grpc",
                     ["grpc-status"] = tostring(grpc_status), ["grpc-message"] = grpc_message(msg),
                     ["x-edge-rejected"] = "validation" }, "")
  else
    handle:respond({ [":status"] = tostring(http_status), ["content-type"] = "application/json",
                     ["x-edge-rejected"] = "validation" }, '{"error":' .. json_string(msg) .. '}')
  end
end

-- JSON ------------------------------------------------------------------------------------------
-- A strict RFC 8259 parser into tagged tables.  "data" arrays of numbers take a fast path: one
-- balanced-bracket match and one character-class check in C, elements counted, not converted;
-- a malformed number there (e.g. "1.2.3") is left to Triton, whose parse error is mapped to 400.
local function fail(pos, what) error({ edge = format("failed to parse the request JSON: malformed JSON at byte %%d: %%s", pos, what) }, 0) end

local function ws(s, pos)
  local _, e = find(s, "^[ \t\r\n]*", pos)
  return e + 1
end

local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

local function parse_string(s, pos)
  local parts, i = nil, pos + 1
  while true do
    local j = find(s, '["\\]', i)
    if j == nil then fail(pos, "unterminated string") end
    local piece = sub(s, i, j - 1)
    if find(piece, "[%%z\1-\31]") then fail(i, "control character in string") end
    if byte(s, j) == 34 then
      if parts == nil then return piece, j + 1 end
      parts[#parts + 1] = piece
      return concat(parts), j + 1
    end
    parts = parts or {}
    parts[#parts + 1] = piece
    local c = sub(s, j + 1, j + 1)
    if c == "u" then
      local hex = sub(s, j + 2, j + 5)
      if not find(hex, "^%%x%%x%%x%%x$") then fail(j, "bad \\u escape") end
      local code = tonumber(hex, 16)
      parts[#parts + 1] = code < 128 and string.char(code) or "?"
      i = j + 6
    elseif ESCAPES[c] then
      parts[#parts + 1] = ESCAPES[c]
      i = j + 2
    else
      fail(j, "bad escape")
    end
  end
end

local function parse_number(s, pos)
  local _, e = find(s, "^-?0", pos)
  if e == nil then _, e = find(s, "^-?[1-9]%%d*", pos) end
  if e == nil then fail(pos, "unexpected character " .. format("%%q", sub(s, pos, pos))) end
  local _, f = find(s, "^%%.%%d+", e + 1)
  if f then e = f elseif byte(s, e + 1) == 46 then fail(e + 1, "bad number") end
  local _, x = find(s, "^[eE][-+]?%%d+", e + 1)
  if x then e = x elseif find(s, "^[eE]", e + 1) then fail(e + 1, "bad exponent") end
  return tonumber(sub(s, pos, e)), e + 1
end

local parse_value

local function parse_array(s, pos, depth, fast)
  if fast then
    -- The longest run of number characters from pos: if the balanced array ends inside it, the
    -- array holds only numbers (one C scan each, no copy); small ones are counted in one gsub.
    local _, e = find(s, "^%%b[]", pos)
    local _, run = find(s, "^[%%d%%s,%%.eE+%%-%%[%%]]*", pos)
    if e ~= nil and run >= e then
      local count = nil
      if e - pos < COUNT_LIMIT_BYTES then _, count = gsub(sub(s, pos, e), "[^%%[%%]%%s,]+", "") end
      return setmetatable({ count = count }, NUM), e + 1
    end
  end
  local out, n = setmetatable({}, ARR), 0
  pos = ws(s, pos + 1)
  if byte(s, pos) == 93 then return out, pos + 1 end
  while true do
    local v
    v, pos = parse_value(s, pos, depth + 1, fast)
    n = n + 1
    out[n] = v
    pos = ws(s, pos)
    local c = byte(s, pos)
    if c == nil then fail(pos, "unexpected end of input") end
    if c == 93 then return out, pos + 1 end
    if c ~= 44 then fail(pos, "expected ',' or ']' in array") end
    pos = ws(s, pos + 1)
  end
end

local function parse_object(s, pos, depth)
  local out = setmetatable({}, OBJ)
  pos = ws(s, pos + 1)
  if byte(s, pos) == 125 then return out, pos + 1 end
  while true do
    if byte(s, pos) == nil then fail(pos, "unexpected end of input") end
    if byte(s, pos) ~= 34 then fail(pos, "expected a string key") end
    local key
    key, pos = parse_string(s, pos)
    pos = ws(s, pos)
    if byte(s, pos) ~= 58 then fail(pos, "expected ':' after key") end
    local v
    v, pos = parse_value(s, ws(s, pos + 1), depth + 1, key == "data")
    out[key] = v
    pos = ws(s, pos)
    local c = byte(s, pos)
    if c == nil then fail(pos, "unexpected end of input") end
    if c == 125 then return out, pos + 1 end
    if c ~= 44 then fail(pos, "expected ',' or '}' in object") end
    pos = ws(s, pos + 1)
  end
end

parse_value = function(s, pos, depth, fast)
  if depth > MAX_DEPTH then fail(pos, "nested too deeply") end
  local c = byte(s, pos)
  if c == 123 then return parse_object(s, pos, depth) end
  if c == 91 then return parse_array(s, pos, depth, fast) end
  if c == 34 then return parse_string(s, pos) end
  if c == nil then fail(pos, "unexpected end of input") end
  if find(s, "^true", pos) then return true, pos + 4 end
  if find(s, "^false", pos) then return false, pos + 5 end
  if find(s, "^null", pos) then return NULL, pos + 4 end
  return parse_number(s, pos)
end

local function parse_json(s)
  local v, pos = parse_value(s, ws(s, 1), 0, false)
  pos = ws(s, pos)
  if pos <= #s then fail(pos, "trailing characters after the JSON value") end
  return v
end

-- Shared checks of one input ---------------------------------------------------------------------
local function shape_text(shape)
  local t = {}
  for i = 1, #shape do t[i] = format("%%d", shape[i]) end
  return "[" .. concat(t, ",") .. "]"
end

local function input_names(schema)
  local t = {}
  for i = 1, #schema.order do t[i] = schema.order[i] end
  return concat(t, ", ")
end

-- Checks name, datatype and shape against the model's schema (when the edge knows the model).
local function check_against_schema(model, schema, name, dtype, shape)
  if schema == nil then return nil end
  local spec = schema.inputs[name]
  if spec == nil then
    return format("model '%%s' has no input '%%s' (its inputs: %%s)", model, name, input_names(schema))
  end
  if dtype ~= spec.datatype then
    return format("input '%%s' of model '%%s' is %%s, got %%s", name, model, spec.datatype, dtype)
  end
  local batched = schema.max_batch > 0
  local rank = #spec.dims + (batched and 1 or 0)
  if #shape ~= rank then
    return format("input '%%s': shape %%s has rank %%d, model '%%s' expects rank %%d (%%s)", name, shape_text(shape),
      #shape, model, rank, spec.expect)
  end
  local first = 1
  if batched then
    local b = shape[1]
    if b < 1 or b > schema.max_batch then
      return format("input '%%s': batch size %%d is outside 1..%%d (model '%%s' max_batch_size)", name, b,
        schema.max_batch, model)
    end
    first = 2
  end
  for i = first, #shape do
    local want = spec.dims[i - first + 1]
    if want ~= -1 and shape[i] ~= want then
      return format("input '%%s': shape %%s, model '%%s' expects %%s", name, shape_text(shape), model, spec.expect)
    end
  end
  return nil
end

local function missing_inputs(model, schema, seen)
  if schema == nil then return nil end
  for i = 1, #schema.order do
    if not seen[schema.order[i]] then
      return format("missing input '%%s' of model '%%s' (its inputs: %%s)", schema.order[i], model, input_names(schema))
    end
  end
  return nil
end

local function product(shape)
  local n = 1
  for i = 1, #shape do n = n * shape[i] end
  return n
end

-- REST -----------------------------------------------------------------------------------------
local function is_int(v) return type(v) == "number" and v >= 0 and v <= MAX_INT and floor(v) == v end

-- Number of leaves of a (nested) JSON array (nil: not counted), and whether every leaf has the
-- Lua type wanted.
local function leaves(v, want)
  local mt = getmetatable(v)
  if mt == NUM then return v.count, want == "number" end
  if mt ~= ARR then return 1, type(v) == want end
  local n, ok = 0, true
  for i = 1, #v do
    local c, k = leaves(v[i], want)
    if c == nil or n == nil then n = nil else n = n + c end
    ok = ok and k
  end
  return n, ok
end

local LEAF_TYPE = { BOOL = "boolean", BYTES = "string" }

local function check_rest(req, model, binary_bytes)
  if getmetatable(req) ~= OBJ then return "the request body must be a JSON object" end
  if req.id ~= nil and type(req.id) ~= "string" then return "'id' must be a string" end
  if req.parameters ~= nil and getmetatable(req.parameters) ~= OBJ then return "'parameters' must be an object" end
  local outputs = req.outputs
  if outputs ~= nil then
    if getmetatable(outputs) ~= ARR then return "'outputs' must be an array" end
    for i = 1, #outputs do
      if getmetatable(outputs[i]) ~= OBJ or type(outputs[i].name) ~= "string" then
        return format("outputs[%%d] must be an object with a string 'name'", i - 1)
      end
    end
  end
  local inputs = req.inputs
  if inputs == nil then return "missing required field 'inputs': the request carries no input" end
  if getmetatable(inputs) ~= ARR then return "'inputs' must be an array" end
  if #inputs == 0 then return "'inputs' is empty: the request carries no input" end
  local schema, seen, declared_binary = MODELS[model], {}, 0
  for i = 1, #inputs do
    local inp, at = inputs[i], format("inputs[%%d]", i - 1)
    if getmetatable(inp) ~= OBJ then return at .. " must be an object" end
    local name = inp.name
    if type(name) ~= "string" or name == "" then return at .. ": 'name' must be a non-empty string" end
    at = format("%%s ('%%s')", at, name)
    if seen[name] then return format("input '%%s' is given twice", name) end
    seen[name] = true
    local dtype = inp.datatype
    if type(dtype) ~= "string" then return at .. ": 'datatype' must be a string" end
    if DTYPE_BYTES[dtype] == nil then return format("%%s: unknown datatype '%%s'", at, dtype) end
    local shape = inp.shape
    if getmetatable(shape) ~= ARR then return at .. ": 'shape' must be an array of integers" end
    for k = 1, #shape do
      if not is_int(shape[k]) then return format("%%s: shape[%%d] must be a non-negative integer", at, k - 1) end
    end
    local err = check_against_schema(model, schema, name, dtype, shape)
    if err then return err end
    local elements = product(shape)
    if elements == 0 then return format("%%s: shape %%s holds no element: the request carries no input", at,
      shape_text(shape)) end
    local params, bds = inp.parameters, nil
    if params ~= nil then
      if getmetatable(params) ~= OBJ then return at .. ": 'parameters' must be an object" end
      bds = params.binary_data_size
    end
    local data = inp.data
    if data == nil and bds == nil then
      return at .. ": neither 'data' nor parameters.binary_data_size: the input carries no data"
    end
    if data ~= nil and bds ~= nil then return at .. ": both 'data' and parameters.binary_data_size" end
    if bds ~= nil then
      if not is_int(bds) then return at .. ": parameters.binary_data_size must be a non-negative integer" end
      local size = DTYPE_BYTES[dtype]
      if size > 0 and bds ~= elements * size then
        return format("%%s: binary_data_size is %%d bytes, shape %%s of %%s needs %%d", at, bds, shape_text(shape),
          dtype, elements * size)
      end
      declared_binary = declared_binary + bds
    else
      local mt = getmetatable(data)
      if mt ~= ARR and mt ~= NUM then return at .. ": 'data' must be an array" end
      local n, typed = leaves(data, LEAF_TYPE[dtype] or "number")
      if n ~= nil and n ~= elements then
        return format("%%s: 'data' has %%d elements, shape %%s holds %%d", at, n, shape_text(shape), elements)
      end
      if not typed then return format("%%s: 'data' of a %%s input must hold %%ss", at, dtype, LEAF_TYPE[dtype] or "number") end
    end
  end
  local err = missing_inputs(model, schema, seen)
  if err then return err end
  if declared_binary ~= binary_bytes then
    return format("the inputs declare %%d bytes of binary data, the body carries %%d", declared_binary, binary_bytes)
  end
  return nil
end

local function validate_rest(handle, headers, path)
  local model, rest = string.match(path, "^/v2/models/([^/?]+)(/[^?]*)")
  if model == nil or not (rest == "/infer" or find(rest, "^/versions/[^/]+/infer$")) then return end
  -- A model outside the repository is nobody's: the routes answer 404 / NOT_FOUND, which says more.
  if MODELS[model] == nil then return end
  if headers:get(":method") ~= "POST" then return end
  local declared = tonumber(headers:get("content-length"))
  if declared ~= nil and declared > MAX_BODY then
    return reject(handle, false, 413, 8, format("request body of %%d bytes exceeds the limit of %%d", declared, MAX_BODY))
  end
  local header_len = headers:get("inference-header-content-length")
  local body = handle:body()
  local n = body and body:length() or 0
  if n == 0 then return reject(handle, false, 400, 3, "empty request body: an inference request is a JSON object with 'inputs'") end
  if n > MAX_BODY then return reject(handle, false, 413, 8, format("request body of %%d bytes exceeds the limit of %%d", n, MAX_BODY)) end
  local json_len = n
  if header_len ~= nil then
    json_len = tonumber(header_len)
    if json_len == nil or json_len < 1 or json_len > n or floor(json_len) ~= json_len then
      return reject(handle, false, 400, 3, format("Inference-Header-Content-Length %%s does not fit a body of %%d bytes", header_len, n))
    end
  end
  local ok, req = pcall(parse_json, body:getBytes(0, json_len))
  if not ok then return reject(handle, false, 400, 3, type(req) == "table" and req.edge or tostring(req)) end
  local err = check_rest(req, model, n - json_len)
  if err then return reject(handle, false, 400, 3, err) end
end

-- gRPC (protobuf wire format) --------------------------------------------------------------------
local function varint(s, pos, last)
  local value, scale = 0, 1
  while pos <= last do
    local b = byte(s, pos)
    value = value + (b %% 128) * scale
    pos = pos + 1
    if b < 128 then return value, pos end
    scale = scale * 128
    if scale > 2 ^ 70 then return nil, pos end
  end
  return nil, pos
end

-- Calls visit(field, wire, a, b) for each field of the message s[first..last]: for wire 0, a is
-- the value; for wire 2, a..b are the payload's bounds.  Returns an error text or nil.
local function walk(s, first, last, what, visit)
  local pos = first
  while pos <= last do
    local tag
    tag, pos = varint(s, pos, last)
    if tag == nil then return format("%%s: truncated field tag", what) end
    local field, wire = floor(tag / 8), tag %% 8
    if field == 0 then return format("%%s: field number 0", what) end
    local a, b
    if wire == 0 then
      a, pos = varint(s, pos, last)
      if a == nil then return format("%%s: truncated varint in field %%d", what, field) end
    elseif wire == 2 then
      local len
      len, pos = varint(s, pos, last)
      if len == nil or pos + len - 1 > last then return format("%%s: field %%d overruns the message", what, field) end
      a, b = pos, pos + len - 1
      pos = pos + len
    elseif wire == 1 or wire == 5 then
      a = pos
      pos = pos + (wire == 1 and 8 or 4)
      if pos - 1 > last then return format("%%s: field %%d overruns the message", what, field) end
    else
      return format("%%s: invalid wire type %%d in field %%d", what, wire, field)
    end
    if visit ~= nil then
      local err = visit(field, wire, a, b)
      if err then return err end
    end
  end
  return nil
end

-- InferTensorContents: elements per field (1 bool .. 5 uint64 varints, 6 fp32, 7 fp64, 8 bytes).
local function count_contents(s, first, last)
  local n = 0
  local err = walk(s, first, last, "contents", function(field, wire, a, b)
    if field < 1 or field > 8 then return nil end
    if wire == 2 then
      if field == 8 then n = n + 1
      elseif field == 6 then n = n + (b - a + 1) / 4
      elseif field == 7 then n = n + (b - a + 1) / 8
      else local _, c = gsub(sub(s, a, b), "[%%z\1-\127]", ""); n = n + c end
    else
      n = n + 1
    end
  end)
  return n, err
end

-- Raw BYTES tensor: 4-byte little-endian length, then the bytes, per element.
local function count_raw_bytes(s, first, last)
  local n, pos = 0, first
  while pos <= last do
    if pos + 3 > last then return nil end
    local b1, b2, b3, b4 = byte(s, pos, pos + 3)
    pos = pos + 4 + b1 + b2 * 256 + b3 * 65536 + b4 * 16777216
    n = n + 1
  end
  if pos ~= last + 1 then return nil end
  return n
end

local function parse_tensor(s, first, last, index)
  local t = { shape = {}, index = index }
  local at = format("inputs[%%d]", index - 1)
  local err = walk(s, first, last, at, function(field, wire, a, b)
    if field == 1 or field == 2 then
      if wire ~= 2 then return format("%%s: field %%d must be a string", at, field) end
      if field == 1 then t.name = sub(s, a, b) else t.datatype = sub(s, a, b) end
    elseif field == 3 then
      if wire == 0 then t.shape[#t.shape + 1] = a
      elseif wire == 2 then
        local pos = a
        while pos <= b do
          local v
          v, pos = varint(s, pos, b)
          if v == nil then return at .. ": truncated shape" end
          t.shape[#t.shape + 1] = v
        end
      else return at .. ": shape must be int64" end
    elseif field == 5 then
      if wire ~= 2 then return at .. ": contents must be a message" end
      local n, cerr = count_contents(s, a, b)
      if cerr then return at .. " " .. cerr end
      t.contents = (t.contents or 0) + n
    elseif field == 4 and wire ~= 2 then
      return at .. ": parameters must be a map"
    end
  end)
  return t, err
end

local function check_grpc_infer(s, first, last)
  local model, inputs, raw = nil, {}, {}
  local err = walk(s, first, last, "ModelInferRequest", function(field, wire, a, b)
    if field >= 1 and field <= 7 and wire ~= 2 then
      return format("ModelInferRequest: field %%d has wire type %%d, expected length-delimited", field, wire)
    end
    if field == 1 then model = sub(s, a, b)
    elseif field == 5 then
      local t, terr = parse_tensor(s, a, b, #inputs + 1)
      if terr then return terr end
      inputs[#inputs + 1] = t
    elseif field == 7 then raw[#raw + 1] = { a, b }
    elseif field == 4 or field == 6 then
      return walk(s, a, b, field == 4 and "parameters" or "outputs", nil)
    end
  end)
  if err then return 3, err end
  if model == nil or model == "" then return 3, "model_name is empty" end
  if not find(model, "^[%%w_.%%-]+$") then return 3, "model_name is not a valid model name" end
  if MODELS[model] == nil then return nil end  -- the routes answer NOT_FOUND
  if #inputs == 0 then return 3, "no inputs: the request carries no input" end
  if #raw > 0 and #raw ~= #inputs then
    return 3, format("raw_input_contents has %%d entries for %%d inputs", #raw, #inputs)
  end
  local schema, seen = MODELS[model], {}
  for i = 1, #inputs do
    local t = inputs[i]
    local at = format("inputs[%%d]", i - 1)
    if t.name == nil or t.name == "" then return 3, at .. ": name is empty" end
    at = format("%%s ('%%s')", at, t.name)
    if seen[t.name] then return 3, format("input '%%s' is given twice", t.name) end
    seen[t.name] = true
    local size = t.datatype and DTYPE_BYTES[t.datatype]
    if size == nil then return 3, format("%%s: unknown datatype '%%s'", at, t.datatype or "") end
    for k = 1, #t.shape do
      if t.shape[k] > MAX_INT then return 3, format("%%s: shape[%%d] is negative or too large", at, k - 1) end
    end
    local serr = check_against_schema(model, schema, t.name, t.datatype, t.shape)
    if serr then return 3, serr end
    local elements = product(t.shape)
    if elements == 0 then return 3, format("%%s: shape %%s holds no element: the request carries no input", at,
      shape_text(t.shape)) end
    if #raw > 0 then
      if t.contents then return 3, at .. ": both contents and raw_input_contents" end
      local a, b = raw[i][1], raw[i][2]
      if size > 0 then
        if b - a + 1 ~= elements * size then
          return 3, format("%%s: raw_input_contents[%%d] is %%d bytes, shape %%s of %%s needs %%d", at, i - 1,
            b - a + 1, shape_text(t.shape), t.datatype, elements * size)
        end
      else
        local n = count_raw_bytes(s, a, b)
        if n == nil then return 3, format("%%s: raw_input_contents[%%d] is not length-prefixed BYTES", at, i - 1) end
        if n ~= elements then
          return 3, format("%%s: raw_input_contents[%%d] holds %%d elements, shape %%s holds %%d", at, i - 1, n,
            shape_text(t.shape), elements)
        end
      end
    elseif t.contents == nil then
      return 3, at .. ": no contents and no raw_input_contents: the input carries no data"
    elseif t.contents ~= elements then
      return 3, format("%%s: contents hold %%d elements, shape %%s holds %%d", at, t.contents, shape_text(t.shape), elements)
    end
  end
  local merr = missing_inputs(model, schema, seen)
  if merr then return 3, merr end
  return nil
end

local function validate_grpc(handle, path)
  local method = sub(path, #GRPC_PREFIX + 1)
  if STREAMING[method] then return end
  local body = handle:body()
  local n = body and body:length() or 0
  if n > MAX_BODY then
    return reject(handle, true, 413, 8, format("request message of %%d bytes exceeds the limit of %%d", n, MAX_BODY))
  end
  if n < 5 then return reject(handle, true, 400, 3, "empty request: no gRPC message") end
  local s = body:getBytes(0, n)
  local flag, l1, l2, l3, l4 = byte(s, 1, 5)
  if flag ~= 0 then return end  -- compressed: Triton decodes and checks it itself
  local len = l1 * 16777216 + l2 * 65536 + l3 * 256 + l4
  if len ~= n - 5 then
    return reject(handle, true, 400, 3, format("gRPC frame declares %%d bytes, carries %%d", len, n - 5))
  end
  local code, err
  if method == "ModelInfer" then
    code, err = check_grpc_infer(s, 6, n)
  else
    err = walk(s, 6, n, method .. " request", nil)
    code = 3
  end
  if err then return reject(handle, true, 400, code, err) end
end

-- Entry points -----------------------------------------------------------------------------------
-- Header limits with a message: Envoy's own (the connection manager's, set at twice these) would
-- answer HTTP/1 with a bare 431 and reset an HTTP/2 stream, which a gRPC client sees as INTERNAL.
local function header_problem(headers)
  local count, bytes = 0, 0
  for key, value in pairs(headers) do
    count = count + 1
    bytes = bytes + #key + #value
  end
  if count > MAX_HEADERS then return format("too many headers: %%d, the limit is %%d", count, MAX_HEADERS) end
  if bytes > MAX_HEADER_BYTES then
    return format("headers of %%d bytes, the limit is %%d", bytes, MAX_HEADER_BYTES)
  end
  return nil
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local path = headers:get(":path")
  if path == nil then return end
  local ctype = headers:get("content-type")
  local is_grpc = ctype ~= nil and sub(ctype, 1, 16) == "application/grpc"
  local too_big = header_problem(headers)
  if too_big then return reject(handle, is_grpc, 431, 8, too_big) end
  if sub(path, 1, #GRPC_PREFIX) == GRPC_PREFIX then
    if is_grpc then return validate_grpc(handle, path) end
    return
  end
  return validate_rest(handle, headers, path)
end

-- Triton's messages for requests it could not parse (it answers them 500 / INTERNAL).
local CLIENT_FAULT = { "Unable to parse", "unable to parse", "failed to parse", "Failed to parse",
                       "unexpected shape", "unexpected datatype", "expected .* elements" }

local function client_fault(msg)
  for i = 1, #CLIENT_FAULT do
    if find(msg, CLIENT_FAULT[i]) then return true end
  end
  return false
end

function envoy_on_response(handle)
  if not MAP_UPSTREAM then return end
  local headers = handle:headers()
  local grpc_status = headers:get("grpc-status")
  if grpc_status == "13" then
    local msg = headers:get("grpc-message") or ""
    if client_fault(msg) then headers:replace("grpc-status", "3") end
    return
  end
  if headers:get(":status") ~= "500" then return end
  local body = handle:body()
  if body == nil then return end
  local text = body:getBytes(0, math.min(body:length(), 4096))
  if client_fault(text) then
    handle:headers():replace(":status", "400")
    handle:headers():add("x-edge-mapped", "upstream-500")
  end
end
