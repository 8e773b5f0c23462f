-- Writes a task's whole record (create, claim, step heartbeat, complete, fail, reassign) and
-- keeps the pending queue in step: in it exactly while the task is pending.
-- KEYS[1] {p}task:{id}   KEYS[2] {p}queue:tasks:pending
-- ARGV[1] id   ARGV[2] pending score, or '' when not pending   ARGV[3..] field, value, ...
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 1
