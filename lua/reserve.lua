-- reserve: hold an estimate if it fits under the limit and the user's cap,
-- atomically with the check. One round trip; three commands: HMGET of
-- record + limits + period totals + the user's sums, RPUSH to the expiry
-- index, HSET of the fields read (plus SADD for the user's first sums of
-- the period, and ZADD + ZRANGE for the first hold of a 100 ms expiry
-- bucket).
--
-- KEYS[1] record hash  KEYS[2] expiry zset
-- KEYS[3] the bucket list of expires_at  KEYS[4] the period's user set
-- (KEYS[2..4] only when expires_at and the period are given: the call
-- answers {5} before it needs them otherwise)
-- ARGV[1] hold digest (12 bytes)  ARGV[2] user      ARGV[3] estimate
-- ARGV[4] model alias            ARGV[5] now (ms)  ARGV[6] expires_at or ""
-- ARGV[7] period of now or ""    ARGV[8] warning percent (1..100)
-- (the header, field "V", is read with the record: include/header.lua)
-- ("" = out of range; refused only where the model would refuse it.)
--
-- Reply: {0} not configured | {1, remaining, limit, warning, expires_at,
-- first} (first = 1 when the hold's bucket is new and now the lowest of
-- `x`: the community's earliest expiry moved down, and the adapter lowers
-- its entry in the due index)
-- | {2, hold record} already reserved | {3} already settled
-- | {4, remaining, limit, scope (0 community, 1 user)} exceeded
-- | {5} time out of range
--
-- Hot path. Each rule is written once, in lua/include/ (helpers this
-- script calls more than once, and constants) or lua/inline/ (statement
-- snippets, expanded in place: no closure to create per call); only the
-- rules that reserve alone has (the warning percent and threshold) are
-- written here.
-- @include canonical
-- @include period
-- @include layout
-- @include header
-- @include hold
-- @include index
-- @include community_key
-- @include wrongtype

local R, P = KEYS[1]
-- @inline prefix
local d = ARGV[1]
-- @inline digest
local user = ARGV[2]
-- @inline user
local est_s = ARGV[3]
if not canonical(est_s) then fail("invalid", "estimate") end
local est = tonumber(est_s)
local model = ARGV[4]
-- @inline model
local now = ARGV[5]
if not canonical(now) then fail("invalid", "now") end
local expires = ARGV[6]
local per = ARGV[7]
if expires ~= "" and not canonical(expires) then fail("invalid", "expires_at") end
if per ~= "" then period(per, "period") end
local pct = ARGV[8]
if pct == nil or not find(pct, "^[1-9]%d?%d?$") then fail("invalid", "warning percent") end
pct = tonumber(pct)
if pct > 100 then fail("invalid", "warning percent") end
local X, E, U
if expires ~= "" and per ~= "" then
  X = community_key(P, KEYS[2])
  E = community_key(P, KEYS[3], bucket(expires), "expiry bucket")
  U = community_key(P, KEYS[4], per, "user set")
end

local UF = per .. ":" .. user
local got
if per ~= "" then
  got = redis.call("HMGET", R, d, "L", "V", per, UF)
else
  got = redis.call("HMGET", R, d, "L", "V")
end
local header_v = got[3]
-- @inline header
local v = got[1]
if v then
  local mexp
  -- @inline marker
  if mexp == nil then return { 2, v } end -- a live hold
  if tonumber(now) < mexp then return { 3 } end
end
if not got[2] then return { 0 } end
if expires == "" or per == "" then return { 5 } end
local limits_v, totals_v = got[2], got[4]
local limit, cap, committed, reserved, holds, warned
-- @inline limits
-- @inline totals

local used = committed + reserved
if used > MAX then fail("overflow", "committed + reserved") end
if used + est > limit then
  local left = limit - used
  if left < 0 then left = 0 end
  return { 4, left, limit, 0 }
end
local sums_v = got[5]
local uc, ur
-- @inline user_sums
if cap ~= nil then
  local uused = uc + ur
  if uused > MAX then fail("overflow", "user committed + reserved") end
  if uused + est > cap then
    local left = cap - uused
    if left < 0 then left = 0 end
    return { 4, left, cap, 1 }
  end
end
local after = used + est
local warning = 0
if warned == "0" then
  -- after / limit >= pct / 100, exactly: after * 100 and limit * pct are
  -- below 2^60, so each double product is within 64 of the true one; only
  -- when they are that close is the comparison redone in base 1e7.
  local a, b = after * 100, limit * pct
  local reached
  if a - b > 1024 then
    reached = true
  elseif b - a > 1024 then
    reached = false
  else
    local floor = math.floor
    local ah = floor(after / 1e7)
    local al = (after - ah * 1e7) * 100
    local bh = floor(limit / 1e7)
    local bl = (limit - bh * 1e7) * pct
    local ac, bc = floor(al / 1e7), floor(bl / 1e7)
    ah, al, bh, bl = ah * 100 + ac, al - ac * 1e7, bh * pct + bc, bl - bc * 1e7
    reached = ah > bh or (ah == bh and al >= bl)
  end
  if reached then
    warning = 1
    warned = "1"
  end
end

ur = ur + est
if ur > MAX then fail("overflow", "user reserved") end
-- The writes. The expiry index and the user set may be tampered keys of
-- another type, which Redis finds only on the write (WRONGTYPE): they go
-- first, each undone if a later one fails, so a refused call changes
-- nothing. The HSET cannot fail (the HMGET read the record as a hash).
-- A bucket that already had a list is not below the lowest bucket, so
-- only a new one can be a new earliest expiry (one ZRANGE, once per
-- bucket).
local b, added = index(X, E, d, expires)
-- The period's user list, for the paged listing (users.lua). A user
-- whose sums stay zero gets no sums and no entry: a reserve of estimate
-- 0 costs nothing, so it must not grow the list either (finalize adds
-- the user once a cost makes its sums non-zero).
local user_sums = sums_v or est > 0
if sums_v == false and est > 0 then
  local r = redis.pcall("SADD", U, user)
  if not tonumber(r) then
    redis.call("RPOP", E)
    if added then redis.call("ZREM", X, b) end
    refuse_write(r, "user set")
  end
end
local record = hold_record(est_s, now, expires, per, user, model)
local totals = format(TOTALS_FMT, committed, reserved + est, holds + 1, warned)
if user_sums then
  redis.call("HSET", R, d, record, per, totals, UF, format(USER_SUMS_FMT, uc, ur))
else
  redis.call("HSET", R, d, record, per, totals)
end
if totals_v == false then
  -- The period's first totals in this hash: listed in the header.
  local header_new
  -- @inline listed
  if header_new then redis.call("HSET", R, "V", header_new) end
end
local first = 0
if b and redis.call("ZRANGE", X, 0, 0)[1] == b then first = 1 end
local left = limit - after
if left < 0 then left = 0 end
return { 1, left, limit, warning, expires, first }
