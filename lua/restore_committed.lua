-- restore_committed: set one period's committed sums from an outside
-- record (the usage log), user by user, keeping reserved, holds, the
-- warning flag, limits and records.
--
-- KEYS[1] record hash  KEYS[2] the period's user set
-- ARGV[1] period (YYYY-MM)
-- ARGV[2], ARGV[3], ... pairs: user, committed (the record; no user twice)
--
-- The period's total committed becomes the sum of the record; each listed
-- user's committed becomes theirs (their reserved kept; the user joins the
-- period's user set); every other user of the set gets committed 0. A
-- user's sums that end "0 0" are deleted (reported as absent either way),
-- but the user stays in the set: a late finalize of one of their reaped
-- holds writes their sums without adding them again.
--
-- Every argument and every stored value read is checked before the first
-- write (Redis does not undo a script that fails after writing).
--
-- Reply: {1}
-- @include canonical
-- @include period
-- @include layout
-- @include header
-- @include community_key

local R, P = KEYS[1]
-- @inline prefix
local per = period(ARGV[1], "period")
local U = community_key(P, KEYS[2], per, "user set")
if (#ARGV - 1) % 2 ~= 0 then fail("invalid", "user list") end

local listed = {}
local order = {}
local sum = 0
for i = 2, #ARGV, 2 do
  local user = ARGV[i]
  -- @inline user
  local u = user
  if listed[u] ~= nil then fail("invalid", "user listed twice") end
  local c = ARGV[i + 1]
  if not canonical(c) then fail("invalid", "committed") end
  c = tonumber(c)
  listed[u] = c
  order[#order + 1] = u
  sum = sum + c
  if sum > MAX then fail("overflow", "committed total") end
end

local got = redis.call("HMGET", R, per, "V")
local totals_v, header_v = got[1], got[2]
-- @inline header
local committed, reserved, holds, warned
-- @inline totals

-- Every user concerned: the listed ones, then the set's others.
local users = {}
for _, u in ipairs(order) do users[#users + 1] = u end
for _, u in ipairs(redis.call("SMEMBERS", U)) do
  if listed[u] == nil then users[#users + 1] = u end
end

-- Read (and check) every user's sums before writing anything.
local chunk = 500
local current = {}
for i = 1, #users, chunk do
  local fields = {}
  for j = i, math.min(i + chunk - 1, #users) do
    fields[#fields + 1] = per .. ":" .. users[j]
  end
  local got = redis.call("HMGET", R, unpack(fields))
  for j, sums_v in ipairs(got) do
    local uc, ur
    -- @inline user_sums
    current[i + j - 1] = { present = sums_v ~= false, r = ur }
  end
end

redis.call("HSET", R, per, format(TOTALS_FMT, sum, reserved, holds, warned))
if totals_v == false then
  -- The period's first totals in this hash: listed in the header.
  local header_new
  -- @inline listed
  if header_new then redis.call("HSET", R, "V", header_new) end
end
local sets, dels, joins = {}, {}, {}
local function flush(force)
  if #sets >= 2 * chunk or (force and #sets > 0) then
    redis.call("HSET", R, unpack(sets))
    sets = {}
  end
  if #dels >= chunk or (force and #dels > 0) then
    redis.call("HDEL", R, unpack(dels))
    dels = {}
  end
  if #joins >= chunk or (force and #joins > 0) then
    redis.call("SADD", U, unpack(joins))
    joins = {}
  end
end
for i, u in ipairs(users) do
  local c = listed[u] or 0
  local cur = current[i]
  local field = per .. ":" .. u
  if c == 0 and cur.r == 0 then
    if cur.present then dels[#dels + 1] = field end
  else
    sets[#sets + 1] = field
    sets[#sets + 1] = format(USER_SUMS_FMT, c, cur.r)
    if listed[u] ~= nil then joins[#joins + 1] = u end
  end
  flush(false)
end
flush(true)
return { 1 }
