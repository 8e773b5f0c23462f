-- A batch of heartbeat timestamps (write-behind flush, or one write-through heartbeat).
-- KEYS[1] {p}meta:counters   KEYS[1 + i] {p}instance:{id}
-- ARGV[1] the flush's time (wall ms) to record as lastFlush, or '' for none
-- ARGV[4i-2..4i+1] lastSeen ms, lastHeartbeat ISO 8601, status, key lifetime in ms
-- Only existing records are touched (a partial hash is never created): PEXPIRE answers 0 for a
-- missing key. Returns the indexes (from 1) of the instances whose record was missing, so the
-- caller writes those instances in full.
local missing = {}
for i = 1, #KEYS - 1 do
  local key = KEYS[i + 1]
  local b = (i - 1) * 4 + 1
  if redis.call('PEXPIRE', key, ARGV[b + 4]) == 1 then
    redis.call('HSET', key, 'lastSeen', ARGV[b + 1], 'lastHeartbeat', ARGV[b + 2], 'status', ARGV[b + 3])
  else
    missing[#missing + 1] = i
  end
end
if ARGV[1] ~= '' then
  redis.call('HSET', KEYS[1], 'lastFlush', ARGV[1])
end
return missing
