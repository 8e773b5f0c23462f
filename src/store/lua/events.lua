-- Appends events to the capped stream.
-- KEYS[1] {p}stream:events   ARGV[1] most entries kept   ARGV[2..] type, JSON, type, JSON, ...
for i = 2, #ARGV, 2 do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'type', ARGV[i], 'data', ARGV[i + 1])
end
return (#ARGV - 1) / 2
