-- wrk script for scripts/load-test.sh: POST /search with rotating queries; counts 429 and 5xx
-- answers per thread and prints one JSON summary line ("LOAD {...}"). With DIM set, each query
-- also carries a random `vector` of that many numbers (fixed seed), so dense search measures
-- the store without the encoder.
local queries = {
  "why does bread rise", "ocean tides and the moon", "how do vaccines work",
  "what is an inverted index", "black holes and gravity", "photosynthesis in plants",
  "how do volcanoes erupt", "the history of printing", "why is the sky blue",
  "how do batteries store energy",
}
local mode = os.getenv("MODE") or "hybrid"
local dim = tonumber(os.getenv("DIM") or "")
local vectors = {}
if dim then
  math.randomseed(7)
  for i = 1, #queries do
    local v = {}
    for j = 1, dim do v[j] = string.format("%.5f", math.random() * 2 - 1) end
    vectors[i] = "[" .. table.concat(v, ",") .. "]"
  end
end
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  n, s429, s5xx, other = 0, 0, 0, 0
end

function request()
  n = n + 1
  local i = (n % #queries) + 1
  local body
  if dim then
    body = string.format('{"query": "%s", "vector": %s, "k": 10, "mode": "%s"}', queries[i], vectors[i], mode)
  else
    body = string.format('{"query": "%s", "k": 10, "mode": "%s"}', queries[i], mode)
  end
  return wrk.format("POST", "/search", { ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  if status == 429 then s429 = s429 + 1
  elseif status >= 500 then s5xx = s5xx + 1
  elseif status ~= 200 then other = other + 1 end
end

function done(summary, latency, requests)
  local t429, t5xx, tother = 0, 0, 0
  for _, t in ipairs(threads) do
    t429 = t429 + t:get("s429")
    t5xx = t5xx + t:get("s5xx")
    tother = tother + t:get("other")
  end
  local secs = summary.duration / 1e6
  io.write(string.format(
    'LOAD {"requests": %d, "seconds": %.1f, "rps": %.1f, "ok_rps": %.1f, "p50_ms": %.1f, "p99_ms": %.1f, "max_ms": %.1f, "status_429": %d, "status_5xx": %d, "other_non_200": %d, "socket_errors": %d}\n',
    summary.requests, secs, summary.requests / secs, (summary.requests - t429 - t5xx - tother) / secs,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    t429, t5xx, tother,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
