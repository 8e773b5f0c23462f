-- The last grant on a key was released or reaped.
-- KEYS[1] {p}lease:{key}
redis.call('DEL', KEYS[1])
return 1
