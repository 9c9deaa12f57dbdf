-- Cache a community's tier overrides (RedisTierCache::put) unless the
-- entry holds those of a newer configuration.
--
-- KEYS[1]  the entry `sg:{<community>}:tiers`
-- ARGV[1]  the encoded entry, `{"v":2,"n":<version>,"t":{...}}`
-- ARGV[2]  its configuration version (the `n` above)
-- ARGV[3]  its time to live in ms
--
-- An entry whose `n` is greater than ARGV[2] stays, with its expiry, and
-- the reply is 0. Anything else under the key (no entry, an older or
-- equal version, an entry of another encoding or of another type, which
-- the reader refuses anyway) is replaced and the reply is 1.

-- @include canonical

local version = ARGV[2]
if not canonical(version) then fail("invalid", "version") end
if not canonical(ARGV[3]) or ARGV[3] == "0" then fail("invalid", "ttl") end
local current = redis.pcall("GET", KEYS[1])
if type(current) == "string" then
  local held = match(current, '^{"v":2,"n":(%d+),')
  if held and #held <= 16 and tonumber(held) > tonumber(version) then return 0 end
end
redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[3])
return 1
