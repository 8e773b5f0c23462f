-- Takes the coordinator lease if it is free (released) or expired, raising the epoch.
-- KEYS[1] {p}coordinator (hash epoch, holder, url, expiresAt; never expires)
-- KEYS[2] {p}meta:counters   ARGV[1] holder   ARGV[2] advertised url   ARGV[3] lease in ms
-- Time is Redis's own (TIME), so coordinators' clocks do not matter.
-- Returns {1, epoch} when taken, else {0, epoch, holder, url, remaining ms}.
-- The new epoch is above the stored one and above the epoch part (value / 2^32) of every
-- counter, so it never goes below any epoch used before; at most 2^21 - 1 (values < 2^53).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', KEYS[1], 'epoch', 'holder', 'url', 'expiresAt')
local epoch = tonumber(h[1] or '0')
local expires = tonumber(h[4] or '0')
if epoch == nil or expires == nil then
  return redis.error_reply('CORRUPT ' .. KEYS[1] .. ' holds a non-numeric epoch or expiresAt')
end
local holder = h[2] or ''
if holder ~= '' and expires > now then
  return {0, epoch, holder, h[3] or '', expires - now}
end
local floor = 0
for _, field in ipairs({'termReserved', 'lastFencingToken', 'lastEpoch'}) do
  local v = redis.call('HGET', KEYS[2], field)
  local n = tonumber(v or '0')
  if n == nil then
    return redis.error_reply('CORRUPT ' .. KEYS[2] .. ' field ' .. field .. ' is not a number')
  end
  if n > floor then floor = n end
end
local next_epoch = math.max(epoch + 1, math.floor(floor / 4294967296) + 1)
if next_epoch > 2097151 then
  return redis.error_reply('EPOCH_EXHAUSTED ' .. string.format('%.0f', next_epoch))
end
redis.call('HSET', KEYS[1], 'epoch', string.format('%.0f', next_epoch), 'holder', ARGV[1],
  'url', ARGV[2], 'expiresAt', string.format('%.0f', now + tonumber(ARGV[3])))
return {1, next_epoch}
