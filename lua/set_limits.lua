-- set_limits: replace the community's limit and optional per-user cap
-- (field "L" of the record hash, read by reserve in the same HMGET as the
-- record). Live holds stay; a lowered limit only affects later
-- reservations.
--
-- KEYS[1] record hash  ARGV[1] limit  ARGV[2] per-user cap or ""
local R = community_keys(1)
local limit = money(ARGV[1], "limit")
local value = fmt(limit)
if ARGV[2] ~= "" then value = value .. " " .. fmt(money(ARGV[2], "per-user cap")) end
redis.call("HSET", R, "L", value)
return { 1 }
