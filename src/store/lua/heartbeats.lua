-- A batch of heartbeat timestamps (write-behind flush, or one write-through heartbeat).
-- KEYS[i] {p}instance:{id}
-- ARGV[4i-3..4i] lastSeen ms, lastHeartbeat ISO 8601, status, key lifetime in ms
-- Only existing records are touched (a partial hash is never created): PEXPIRE answers 0 for a
-- missing key. Returns the indexes of the keys that were missing, so the caller writes those
-- instances in full.
local missing = {}
for i, key in ipairs(KEYS) do
  local b = (i - 1) * 4
  if redis.call('PEXPIRE', key, ARGV[b + 4]) == 1 then
    redis.call('HSET', key, 'lastSeen', ARGV[b + 1], 'lastHeartbeat', ARGV[b + 2], 'status', ARGV[b + 3])
  else
    missing[#missing + 1] = i
  end
end
return missing
