-- users: one page of a period's users and their sums, for listings. Each
-- call does O(page) work: SSCAN steps of the period's user set until the
-- page is full, then one HMGET of their sums.
--
-- KEYS[1] record hash  KEYS[2] the period's user set
-- ARGV[1] period (YYYY-MM)  ARGV[2] SSCAN cursor ("0": from the start)
-- ARGV[3] page size (1..1000)
--
-- Reply: {next cursor ("0": the listing is complete), {user, sums, ...}}
-- (sums "<committed> <reserved>", "0 0" for a user without a field; the
-- adapter drops users whose sums are both zero).
--
-- A step's members are taken whole or not at all, so the cursor returned
-- always resumes where the page stopped: a step that would overfill a
-- page that already holds users is left for the next page. Only a first
-- step can exceed the size (a set in a compact encoding answers whole,
-- at most its encoding's entry limit).
-- @include period
-- @include header
-- @include community_key

local R, P = KEYS[1]
-- @inline prefix
local per = period(ARGV[1], "period")
local U = community_key(P, KEYS[2], per, "user set")
local cursor = ARGV[2]
if not cursor or not match(cursor, "^%d+$") or #cursor > 20 then fail("invalid", "cursor") end
local size = tonumber(ARGV[3])
if not size or size < 1 or size > 1000 or size ~= math.floor(size) then fail("invalid", "page size") end
local header_v = redis.call("HGET", R, "V")
-- @inline header
local STEP = 16
local users = {}
repeat
  local got = redis.call("SSCAN", U, cursor, "COUNT", STEP)
  local members = got[2]
  if #users > 0 and #users + #members > size then break end
  for _, m in ipairs(members) do users[#users + 1] = m end
  cursor = got[1]
until cursor == "0" or #users >= size
local flat = {}
if #users > 0 then
  local fields = {}
  for i, u in ipairs(users) do fields[i] = per .. ":" .. u end
  local sums = redis.call("HMGET", R, unpack(fields))
  for i, u in ipairs(users) do
    flat[#flat + 1] = u
    flat[#flat + 1] = sums[i] or "0 0"
  end
end
return { cursor, flat }
