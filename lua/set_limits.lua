-- set_limits: replace the community's limit and optional per-user cap
-- (field "L" of the record hash, read by reserve in the same HMGET as the
-- record). Live holds stay; a lowered limit only affects later
-- reservations.
--
-- KEYS[1] record hash  ARGV[1] limit  ARGV[2] per-user cap or ""
-- @include canonical
-- @include header

local R, P = KEYS[1]
-- @inline prefix
local value = ARGV[1]
if not canonical(value) then fail("invalid", "limit") end
local cap = ARGV[2]
if cap ~= "" then
  if not canonical(cap) then fail("invalid", "per-user cap") end
  value = value .. " " .. cap
end
-- A new hash is stamped with the layout (include/header.lua); an
-- existing one keeps its header, once checked.
local header_v = redis.call("HGET", R, "V")
-- @inline header
redis.call("HSET", R, "L", value, "V", header_v or LAYOUT)
return { 1 }
