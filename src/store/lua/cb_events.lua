-- One event for ClaudeBench's tools: its envelope appended to its type's capped stream and
-- PUBLISHed on the channel named by its type.
-- KEYS[1] {p}stream:<type> (absent when ARGV[1] is '0')
-- ARGV[1] most entries kept, '0' for no XADD   ARGV[2] channel, '' for no PUBLISH   ARGV[3] envelope
if ARGV[1] ~= '0' then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'data', ARGV[3])
end
if ARGV[2] ~= '' then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return 1
