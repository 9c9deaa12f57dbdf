-- set_limits: replace the community's limit and optional per-user cap
-- (field "L" of the record hash, read by reserve in the same HMGET as the
-- record), unless the hash holds limits of a newer configuration. Field
-- "LV" keeps the configuration version of the limits in "L": limits of a
-- version at least "LV" (or with no "LV": never set, or set before
-- versions existed) replace both and the reply is { 1 }; an older
-- version changes nothing and the reply is { 0 }. Live holds stay; a
-- lowered limit only affects later reservations.
--
-- KEYS[1] record hash  ARGV[1] limit  ARGV[2] per-user cap or ""
-- ARGV[3] configuration version
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
local version = ARGV[3]
if not canonical(version) then fail("invalid", "limits version") end
-- A new hash is stamped with the layout (include/header.lua); an
-- existing one keeps its header, once checked.
local got = redis.call("HMGET", R, "V", "LV")
local header_v, held = got[1], got[2]
-- @inline header
if held then
  if not canonical(held) then fail("corrupt", "limits version") end
  if tonumber(held) > tonumber(version) then return { 0 } end
end
redis.call("HSET", R, "L", value, "LV", version, "V", header_v or LAYOUT)
return { 1 }
