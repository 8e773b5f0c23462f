-- Extends the coordinator lease for its holder.
-- KEYS[1] {p}coordinator   ARGV[1] epoch   ARGV[2] holder   ARGV[3] lease in ms
-- Returns {1} when renewed, {0, stored epoch or 0} when the lease is not ours (taken over,
-- released, or gone): the caller must stop writing at once. A renewal after expiresAt that
-- nobody took over is allowed: the epoch has not changed.
local h = redis.call('HMGET', KEYS[1], 'epoch', 'holder')
if h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then
  return {0, tonumber(h[1] or '0') or 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'expiresAt', string.format('%.0f', now + tonumber(ARGV[3])))
return {1}
