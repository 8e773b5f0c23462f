-- Writes the grants on one lease key (acquire, renew, partial release) and lets the key lapse
-- with the last grant.
-- KEYS[1] {p}lease:{key}   ARGV[1] key lifetime in ms   ARGV[2..] field, value, ...
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
