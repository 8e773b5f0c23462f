-- Reads many hashes at once for recovery: one JSON string per call instead of one reply
-- element per field, which is what makes reading 100k records fast.
-- KEYS[i] hash keys. Returns a JSON array with, per key, its flat [field, value, ...] list,
-- [] for a missing key, or an error string when the key is not a hash.
local out = {}
for i, key in ipairs(KEYS) do
  local ok, fields = pcall(redis.call, 'HGETALL', key)
  if ok then
    out[i] = fields
  else
    out[i] = tostring(fields.err or fields)
  end
end
-- cjson encodes an empty table as {}; the reader treats {} and [] alike.
return cjson.encode(out)
