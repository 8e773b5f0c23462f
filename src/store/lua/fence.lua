-- Fencing prelude, put before every write script's source (src/store/redis.rs, Scripts::new).
-- KEYS[1] {p}coordinator   ARGV[1] the writer's coordinator epoch, or '' (no HA: no check).
-- Both are removed, so the script below sees its own KEYS and ARGV from index 1.
local fence_key = table.remove(KEYS, 1)
local fence = table.remove(ARGV, 1)
if fence ~= '' then
  local fence_cur = redis.call('HGET', fence_key, 'epoch')
  if fence_cur ~= fence then
    return redis.error_reply('FENCED ' .. (fence_cur or 'none'))
  end
end
