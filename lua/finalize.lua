-- finalize (and cancel, with actual 0): commit the actual cost to the
-- hold's own period. A live (or expired, unreaped) hold is released too;
-- a reaped hold's tombstone is committed only (late finalize); a finalized
-- marker answers the replay. One round trip.
--
-- KEYS[1] community prefix
-- ARGV[1] hold digest  ARGV[2] actual  ARGV[3] now  ARGV[4] marker expires_at
-- ARGV[5] period of now (read along with the record: usually the hold's)
-- ARGV[6] user (the digest's; checked against the record)
--
-- Reply: {0} unknown hold
-- | {1 finalized | 2 late, actual, estimate, overshoot, period, model, created_at}
-- | {3, actual} already finalized
local P = prefix(KEYS[1])
local d = digest(ARGV[1])
local actual = money(ARGV[2], "actual")
local now = instant(ARGV[3], "now")
local mexp = pack_instant(tonumber(instant(ARGV[4], "marker expires_at")))
local guess = period(ARGV[5], "period")
local me = id(ARGV[6], "user", 128)

local R = P .. "r"
local got = redis.call("HMGET", R, d, "L", guess, guess .. ":" .. me)
local v = got[1]
if not v then return { 0 } end
local kind = string.sub(v, 1, 1)
local body
if kind == "H" then
  body = string.sub(v, 2)
elseif kind == "F" then
  if tonumber(now) < marker_expiry(v) then return { 3, stored(string.sub(v, 8), "actual") } end
  return { 0 }
elseif kind == "R" then
  local e, rest = string.match(v, "^R(%d+) (.*)$")
  if e == nil then fail("corrupt", "tombstone") end
  if not before(now, e) then return { 0 } end
  body = rest
else
  fail("corrupt", "record")
end
local est, created, _, per, user, model = parse_hold(body)
if user ~= me then fail("corrupt", "record of another user under this digest") end
local releases = kind == "H"
period(per, "stored period")
local UF = per .. ":" .. user
local current, sums = got[3], got[4]
if per ~= guess then
  local again = redis.call("HMGET", R, per, UF)
  current, sums = again[1], again[2]
end
local committed, reserved, holds, warned = totals(current)
local uc, ur = user_sums(sums)

committed = committed + actual
if committed > MAX then fail("overflow", "committed") end
if releases then
  reserved = reserved - est
  holds = holds - 1
  if reserved < 0 then fail("overflow", "reserved would go negative") end
  if holds < 0 then fail("overflow", "hold count would go negative") end
end
local used = committed + reserved
if used > MAX then fail("overflow", "committed + reserved") end
local limit = 0
if got[2] then limit = limits(got[2]) end
local overshoot = 0
if used > limit then overshoot = used - limit end

uc = uc + actual
if uc > MAX then fail("overflow", "user committed") end
if releases then
  ur = ur - est
  if ur < 0 then fail("overflow", "user reserved would go negative") end
end
redis.call("HSET", R, d, "F" .. mexp .. fmt(actual), per, pack_totals(committed, reserved, holds, warned),
  UF, string.format("%d %d", uc, ur))
-- The hold's entry in the expiry index is left behind; reap skips it.
redis.call("RPUSH", P .. "q", d .. mexp)
local outcome = 2
if releases then outcome = 1 end
return { outcome, actual, est, overshoot, per, model, created }
