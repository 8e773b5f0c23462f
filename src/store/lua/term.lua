-- A change of leader. The term never goes back: an older term is ignored.
-- KEYS[1] {p}leader:term   KEYS[2] {p}leader:current   KEYS[3] {p}leader:epoch
-- ARGV[1] term   ARGV[2] leader id or ''   ARGV[3] leader epoch or ''
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local term = tonumber(ARGV[1])
if term < current then
  return current
end
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  redis.call('DEL', KEYS[2], KEYS[3])
else
  redis.call('SET', KEYS[2], ARGV[2])
  redis.call('SET', KEYS[3], ARGV[3])
end
return term
