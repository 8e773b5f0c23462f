-- A finished task dropped by retention.
-- KEYS[1] {p}task:{id}   KEYS[2] {p}queue:tasks:pending   ARGV[1] id
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
