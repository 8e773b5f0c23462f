-- Reserves terms: raises the reserved term ceiling to at least ARGV[1] and returns the ceiling
-- now stored (as text). The LeaderActor hands out terms only up to it; recovery resumes above.
-- KEYS[1] {p}meta:counters   ARGV[1] the ceiling wanted
local stored = redis.call('HGET', KEYS[1], 'termReserved')
local current = tonumber(stored or '0')
if current == nil then
  return redis.error_reply('termReserved of ' .. KEYS[1] .. ' is not a number: ' .. stored)
end
if tonumber(ARGV[1]) > current then
  redis.call('HSET', KEYS[1], 'termReserved', ARGV[1])
  return ARGV[1]
end
return stored
