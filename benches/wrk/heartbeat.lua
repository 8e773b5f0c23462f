-- One system.heartbeat per request, instance ids rotating over `WORKERS` (default 1000).
-- Request strings are built once at start, so the load generator spends its CPU on sending.
local workers = tonumber(os.getenv("WORKERS") or "1000")
local requests = {}
local n = 0
init = function(args)
  for i = 0, workers - 1 do
    requests[i + 1] = wrk.format("POST", "/rpc", {["Content-Type"] = "application/json"},
      '{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"worker-' .. i .. '"},"id":' .. i .. '}')
  end
end
request = function()
  n = n % workers + 1
  return requests[n]
end
