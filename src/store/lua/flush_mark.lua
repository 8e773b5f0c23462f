-- The time of the last successful flush; recovery reads it to bound lost heartbeats.
-- KEYS[1] {p}meta:counters   ARGV[1] wall ms
redis.call('HSET', KEYS[1], 'lastFlush', ARGV[1])
return 1
