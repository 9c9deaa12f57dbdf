-- status: the community's limits, one period's totals and its users' sums,
-- read at once.
--
-- KEYS[1] record hash  KEYS[2] the period's user set
-- ARGV[1] period (YYYY-MM)
--
-- Reply: {limits or "", totals or "", {user, "<committed> <reserved>", ...}}.
-- Totals are "<committed> <reserved> <holds> <warned>". Users whose sums
-- are both zero are left for the adapter to drop.
-- @include period
-- @include header
-- @include community_key

local R, P = KEYS[1]
-- @inline prefix
local per = period(ARGV[1], "period")
local U = community_key(P, KEYS[2], per, "user set")
local got = redis.call("HMGET", R, "L", per, "V")
local header_v = got[3]
-- @inline header
local users = redis.call("SMEMBERS", U)
local flat = {}
local chunk = 500
for i = 1, #users, chunk do
  local fields = {}
  for j = i, math.min(i + chunk - 1, #users) do
    fields[#fields + 1] = per .. ":" .. users[j]
  end
  local sums = redis.call("HMGET", R, unpack(fields))
  for j, v in ipairs(sums) do
    flat[#flat + 1] = users[i + j - 1]
    flat[#flat + 1] = v or "0 0"
  end
end
return { got[1] or "", got[2] or "", flat }
