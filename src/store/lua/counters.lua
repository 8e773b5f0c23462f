-- Counters that only move forward (last task id, fencing token, epoch).
-- KEYS[1] {p}meta:counters   ARGV[..] field, value, ...
for i = 1, #ARGV, 2 do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > current then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
