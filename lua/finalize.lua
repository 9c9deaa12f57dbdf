-- finalize (and cancel, with actual 0): commit the actual cost to the
-- hold's own period. A live (or expired, unreaped) hold is released too;
-- a reaped hold's tombstone is committed only (late finalize); a finalized
-- marker answers the replay. One round trip.
--
-- With ARGV[7] (a model alias) it is commit_unheld: where a hold, a live
-- marker or a live tombstone exists it is the finalize above, unchanged;
-- where none does (or only an expired marker or tombstone), `actual` is
-- committed to the period ARGV[5] (the period's committed and the user's;
-- no limit check, nothing released, hold count unchanged), the user joins
-- the period's user set (when the cost is not 0), and a finalized marker
-- is written and queued exactly as a finalize writes it, so a replay is
-- `already finalized`.
--
-- KEYS[1] record hash  KEYS[2] marker queue
-- KEYS[3] the user set of the period ARGV[5]
-- ARGV[1] hold digest  ARGV[2] actual  ARGV[3] now  ARGV[4] marker expires_at
-- ARGV[5] period: for finalize, the period of now (read along with the
--   record: usually the hold's); for commit_unheld, the period to commit
--   to when there is no hold (and the guess of the hold's otherwise)
-- ARGV[6] user (the digest's; checked against the record)
-- ARGV[7] absent for finalize; the model alias for commit_unheld
--
-- Reply: {0} unknown hold (finalize only)
-- | {1 finalized | 2 late | 4 committed without a hold, actual, estimate,
--    overshoot, period, model, created_at}
-- | {3, actual} already finalized
-- | {5, period} the user joins the user set of the hold's period, which
--   is not ARGV[5]: nothing written; call again with that period
--
-- Every argument is checked and every sum computed before the first write,
-- so an error leaves the store as it was.
--
-- Hot path, composed like reserve.lua: helpers from lua/include/,
-- single-use rules as snippets from lua/inline/.
-- @include canonical
-- @include period
-- @include packed
-- @include layout
-- @include header
-- @include community_key
-- @include wrongtype

local R, P = KEYS[1]
-- @inline prefix
local d = ARGV[1]
-- @inline digest
local actual_s = ARGV[2]
if not canonical(actual_s) then fail("invalid", "actual") end
local actual = tonumber(actual_s)
local now = ARGV[3]
if not canonical(now) then fail("invalid", "now") end
if not canonical(ARGV[4]) then fail("invalid", "marker expires_at") end
local marker_until = pack_instant(tonumber(ARGV[4]))
local guess = period(ARGV[5], "period")
local user = ARGV[6]
-- @inline user
local me = user
-- commit_unheld: the model alias of the call (reserve's rule for models).
local model = ARGV[7]
if model ~= nil then
  -- @inline model
end
local unheld = model
local Q = community_key(P, KEYS[2])
local U = community_key(P, KEYS[3], guess, "user set")

local got = redis.call("HMGET", R, d, "L", "V", guess, guess .. ":" .. me)
local header_v = got[3]
-- @inline header
local v = got[1]
-- kind 0: nothing usable under the digest (no record, or an expired
-- marker or tombstone): unknown to finalize, a fresh commit for
-- commit_unheld.
local kind = 0
local body
if v then
  kind = byte(v)
  local mexp
  -- @inline marker
  if mexp == nil then -- "H": a live (or expired, unreaped) hold
    body = sub(v, 2)
  elseif tonumber(now) >= mexp then
    kind = 0
  elseif kind == 70 then -- "F": a live finalize marker answers the replay
    local a = sub(v, 8)
    if not canonical(a) then fail("corrupt", "actual") end
    return { 3, tonumber(a) }
  else -- "R": a live reap tombstone, committed only (late finalize)
    body = match(v, "^R%d+ (.*)$")
  end
end
local est, created, expires, per, user, model
if kind == 0 then
  if unheld == nil then return { 0 } end
  -- commit_unheld without a hold: nothing to release, the given period.
  est, created, per, user, model = 0, now, guess, me, unheld
else
  -- @inline parse_hold
  if user ~= me then fail("corrupt", "record of another user under this digest") end
end
local releases = kind == 72
period(per, "stored period")
local UF = per .. ":" .. user
local totals_v, sums_v = got[4], got[5]
if per ~= guess then
  local again = redis.call("HMGET", R, per, UF)
  totals_v, sums_v = again[1], again[2]
end
local committed, reserved, holds, warned, uc, ur
-- @inline totals
-- @inline user_sums

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
local limit, cap = 0, nil
local limits_v = got[2]
if limits_v then
  -- @inline limits
end
local overshoot = 0
if used > limit then overshoot = used - limit end

uc = uc + actual
if uc > MAX then fail("overflow", "user committed") end
if releases then
  ur = ur - est
  if ur < 0 then fail("overflow", "user reserved would go negative") end
end
-- A user joins the period's user set (the paged listing, users.lua) with
-- its first non-zero sums: here when its hold had estimate 0 (reserve
-- kept no sums for it) or there was no hold. The set declared is the
-- guessed period's; a hold of another period answers {5, period} before
-- any write, and the adapter calls again with that period.
local joins = sums_v == false and (uc > 0 or ur > 0)
if joins and per ~= guess then return { 5, per } end
-- The writes. The marker queue and the user set may be tampered keys of
-- another type, which Redis finds only on the write (WRONGTYPE): they go
-- first, the queue entry undone if the SADD fails, so a refused call
-- changes nothing. The HSET cannot fail (the HMGET read the record as a
-- hash). The hold's entry in the expiry index is left behind; reap skips
-- it.
local r = redis.pcall("RPUSH", Q, d .. marker_until)
if not tonumber(r) then refuse_write(r, "marker queue") end
if joins then
  r = redis.pcall("SADD", U, user)
  if not tonumber(r) then
    redis.call("RPOP", Q)
    refuse_write(r, "user set")
  end
end
local outcome = 2
if releases then
  outcome = 1
elseif kind == 0 then
  outcome = 4
end
local marker = "F" .. marker_until .. actual_s
local totals = format(TOTALS_FMT, committed, reserved, holds, warned)
if sums_v or joins then
  redis.call("HSET", R, d, marker, per, totals, UF, format(USER_SUMS_FMT, uc, ur))
else
  redis.call("HSET", R, d, marker, per, totals)
end
if totals_v == false then
  -- The period's first totals in this hash (a commit without a hold, or
  -- a late finalize into a period pruned meanwhile): listed in the header.
  local header_new
  -- @inline listed
  if header_new then redis.call("HSET", R, "V", header_new) end
end
return { outcome, actual, est, overshoot, per, model, created }
