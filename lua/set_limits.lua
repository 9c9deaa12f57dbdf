-- set_limits: replace the community's limit and optional per-user cap
-- (field "L" of the record hash, read by reserve in the same HMGET as the
-- record). Live holds stay; a lowered limit only affects later
-- reservations.
--
-- KEYS[1] record hash  ARGV[1] limit  ARGV[2] per-user cap or ""
-- @include canonical

local R, P = KEYS[1]
-- @inline prefix
local value = ARGV[1]
if not canonical(value) then fail("invalid", "limit") end
local cap = ARGV[2]
if cap ~= "" then
  if not canonical(cap) then fail("invalid", "per-user cap") end
  value = value .. " " .. cap
end
redis.call("HSET", R, "L", value)
return { 1 }
