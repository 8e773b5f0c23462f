-- An instance left (unregistered or expired): its record and its place in the active set go.
-- KEYS[1] {p}instance:{id}   KEYS[2] {p}instances:active   ARGV[1] id
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
