-- Writes an instance's whole record and lists it as active.
-- KEYS[1] {p}instance:{id}   KEYS[2] {p}instances:active
-- ARGV[1] id   ARGV[2] key lifetime in ms (the instance's remaining TTL)   ARGV[3..] field, value, ...
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
