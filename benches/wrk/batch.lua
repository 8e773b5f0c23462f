-- Batches of `BATCH` (default 100) system.heartbeat calls per request over `WORKERS` ids.
-- The bodies are built once at start (one per window of ids) and sent in rotation.
local workers = tonumber(os.getenv("WORKERS") or "1000")
local batch = tonumber(os.getenv("BATCH") or "100")
local requests = {}
local n = 0
init = function(args)
  local bodies = math.max(1, math.floor(workers / batch))
  for b = 0, bodies - 1 do
    local parts = {}
    for i = 1, batch do
      local k = (b * batch + i) % workers
      parts[i] = '{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"worker-'
        .. k .. '"},"id":' .. i .. '}'
    end
    requests[b + 1] = wrk.format("POST", "/rpc", {["Content-Type"] = "application/json"},
      "[" .. table.concat(parts, ",") .. "]")
  end
end
request = function()
  n = n % #requests + 1
  return requests[n]
end
