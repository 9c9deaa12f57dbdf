-- status: the community's limits, one period's totals and, when asked,
-- one user's sums, read at once. O(1) in the period's users: the listing
-- of every user is paged (users.lua), so that one community's size never
-- stalls another's calls on the same server.
--
-- KEYS[1] record hash
-- ARGV[1] period (YYYY-MM)  ARGV[2] user (optional)
--
-- Reply: {limits or "", totals or "", the user's sums or ""} (the third
-- only when a user was given). Totals are "<committed> <reserved> <holds>
-- <warned>", sums "<committed> <reserved>".
-- @include period
-- @include header

local R, P = KEYS[1]
-- @inline prefix
local per = period(ARGV[1], "period")
local user = ARGV[2]
if user then
  -- @inline user
end
local got = redis.call("HMGET", R, "L", per, "V", per .. ":" .. (user or ""))
local header_v = got[3]
-- @inline header
if user then return { got[1] or "", got[2] or "", got[4] or "" } end
return { got[1] or "", got[2] or "" }
