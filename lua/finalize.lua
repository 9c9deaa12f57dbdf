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
-- the period's user set, and a finalized marker is written and queued
-- exactly as a finalize writes it, so a replay is `already finalized`.
--
-- KEYS[1] record hash  KEYS[2] marker queue
-- KEYS[3] commit_unheld only: the user set of the period ARGV[5]
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
--
-- Every argument is checked and every sum computed before the first write,
-- so an error leaves the store as it was.
--
-- Hot path: like reserve.lua, written out without the prelude (its
-- closures and one helper call per rule cost more than the commands); the
-- rules are the prelude's (see prelude.lua), spelled with fewer calls.
local find, byte, sub, match, tonumber = string.find, string.byte, string.sub, string.match, tonumber
local MAX = 9007199254740991

local function fail(kind, what)
  error({ err = "ERR spendgate:" .. kind .. " " .. what })
end

-- Canonical decimal (0, or no leading zero), at most 16 digits, <= MAX.
local function canonical(v)
  return v ~= nil and #v <= 16 and (v == "0" or find(v, "^[1-9]%d*$") ~= nil)
    and (#v < 16 or tonumber(v) <= MAX)
end

-- A period: exactly `YYYY-MM`, 1970-01 to 9999-12.
local function period(v, what)
  if v == nil or not find(v, "^%d%d%d%d%-[01]%d$") or v < "1970" then fail("invalid", what) end
  local m1, m2 = byte(v, 6, 7)
  if (m1 == 48 and m2 == 48) or (m1 == 49 and m2 > 50) then fail("invalid", what) end
  return v
end

-- Keys (the prelude's `community_keys` and `named` rules): all of one
-- community, the user set named after the period.
local R, Q, U = KEYS[1], KEYS[2], KEYS[3]
local P = R ~= nil and #R <= 200 and match(R, "^sg:{[^{} ]+}:")
if not P then fail("invalid", "key prefix") end
if Q == nil or sub(Q, 1, #P) ~= P then fail("invalid", "key outside the community") end
local d = ARGV[1]
if d == nil or #d ~= 12 or byte(d) < 128 then fail("invalid", "hold digest") end
local actual_s = ARGV[2]
if not canonical(actual_s) then fail("invalid", "actual") end
local actual = tonumber(actual_s)
local now = ARGV[3]
if not canonical(now) then fail("invalid", "now") end
if not canonical(ARGV[4]) then fail("invalid", "marker expires_at") end
local mexp = tonumber(ARGV[4])
-- Marker expiries are packed in 6 bytes (instants below 2^48 ms).
if mexp >= 281474976710656 then fail("invalid", "instant past 2^48 ms") end
mexp = struct.pack(">I6", mexp)
local guess = period(ARGV[5], "period")
local me = ARGV[6]
if me == nil or #me == 0 or #me > 128 or find(me, " ", 1, true) then fail("invalid", "user") end
-- commit_unheld: the model alias of the call (reserve's rule for models).
local unheld = ARGV[7]
if unheld ~= nil and (#unheld == 0 or #unheld > 64 or find(unheld, " ", 1, true)) then
  fail("invalid", "model")
end
if unheld ~= nil and (U == nil or sub(U, 1, #P) ~= P or sub(U, -8) ~= ":" .. guess) then
  fail("invalid", "user set key")
end

local got = redis.call("HMGET", R, d, "L", guess, guess .. ":" .. me)
local v = got[1]
-- kind 0: nothing usable under the digest (no record, or an expired
-- marker or tombstone): unknown to finalize, a fresh commit for
-- commit_unheld.
local kind = 0
local body
if v then
  kind = byte(v)
  if kind == 72 then -- "H": a live (or expired, unreaped) hold
    body = sub(v, 2)
  elseif kind == 70 then -- "F": a finalize marker
    if #v < 8 then fail("corrupt", "record") end
    if tonumber(now) < struct.unpack(">I6", v, 2) then
      local a = tonumber(sub(v, 8))
      if a == nil or a < 0 or a > MAX or a ~= math.floor(a) then fail("corrupt", "actual") end
      return { 3, a }
    end
    kind = 0
  elseif kind == 82 then -- "R": a reap tombstone
    local e, rest = match(v, "^R(%d+) (.*)$")
    if e == nil then fail("corrupt", "tombstone") end
    -- now < e, both canonical decimals: compared by (length, text).
    if #now > #e or (#now == #e and now >= e) then
      kind = 0
    else
      body = rest
    end
  else
    fail("corrupt", "record")
  end
end
local est, created, per, user, model
if kind == 0 then
  if unheld == nil then return { 0 } end
  -- commit_unheld without a hold: nothing to release, the given period.
  est, created, per, user, model = 0, now, guess, me, unheld
else
  -- The hold: <estimate> <created_at> <expires_at> <period> <user> <model>.
  local expires
  est, created, expires, per, user, model = match(body, "^(%d+) (%d+) (%d+) ([^ ]+) ([^ ]+) ([^ ]+)$")
  if est == nil or #per ~= 7 or (#est > 1 and byte(est) == 48) or (#created > 1 and byte(created) == 48)
    or (#expires > 1 and byte(expires) == 48) then
    fail("corrupt", "hold")
  end
  est = tonumber(est)
  if est > MAX then fail("corrupt", "estimate") end
  if user ~= me then fail("corrupt", "record of another user under this digest") end
end
local releases = kind == 72
period(per, "stored period")
local UF = per .. ":" .. user
local current, sums = got[3], got[4]
if per ~= guess then
  local again = redis.call("HMGET", R, per, UF)
  current, sums = again[1], again[2]
end
local committed, reserved, holds, warned = 0, 0, 0, "0"
if current then
  committed, reserved, holds, warned = match(current, "^(%d+) (%d+) (%d+) ([01])$")
  if committed == nil then fail("corrupt", "period totals") end
  committed, reserved, holds = tonumber(committed), tonumber(reserved), tonumber(holds)
  if committed > MAX or reserved > MAX or holds > MAX then fail("corrupt", "period totals") end
end
local uc, ur = 0, 0
if sums then
  uc, ur = match(sums, "^(%d+) (%d+)$")
  if uc == nil then fail("corrupt", "user sums") end
  uc, ur = tonumber(uc), tonumber(ur)
  if uc > MAX or ur > MAX then fail("corrupt", "user sums") end
end

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
if got[2] then
  -- Limits: "<limit>" or "<limit> <cap>".
  local l, c = match(got[2], "^(%d+) ?(%d*)$")
  if l == nil then fail("corrupt", "limits") end
  if c ~= "" and tonumber(c) > MAX then fail("corrupt", "cap") end
  limit = tonumber(l)
  if limit > MAX then fail("corrupt", "limit") end
end
local overshoot = 0
if used > limit then overshoot = used - limit end

uc = uc + actual
if uc > MAX then fail("overflow", "user committed") end
if releases then
  ur = ur - est
  if ur < 0 then fail("overflow", "user reserved would go negative") end
end
redis.call("HSET", R, d, "F" .. mexp .. actual_s, per, string.format("%d %d %d %s", committed, reserved, holds, warned),
  UF, string.format("%d %d", uc, ur))
-- The hold's entry in the expiry index is left behind; reap skips it.
redis.call("RPUSH", Q, d .. mexp)
local outcome = 2
if releases then
  outcome = 1
elseif kind == 0 then
  -- The period's user set, for status (a hold's user joined it at reserve).
  redis.call("SADD", U, user)
  outcome = 4
end
return { outcome, actual, est, overshoot, per, model, created }
