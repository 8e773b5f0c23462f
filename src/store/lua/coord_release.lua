-- Gives the coordinator lease up (on shutdown), keeping the epoch, so a standby takes over
-- at its next try instead of after the lease.
-- KEYS[1] {p}coordinator   ARGV[1] epoch   ARGV[2] holder
-- Returns 1 when released, 0 when the lease was not ours.
local h = redis.call('HMGET', KEYS[1], 'epoch', 'holder')
if h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'holder', '', 'url', '', 'expiresAt', '0')
return 1
