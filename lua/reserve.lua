-- reserve: hold an estimate if it fits under the limit and the user's cap,
-- atomically with the check. One round trip; three commands: HMGET of
-- record + limits + period totals + the user's sums, HSET of the same
-- fields, RPUSH to the expiry index (plus SADD for the user's first hold
-- of the period and ZADD for the first hold of a 100 ms expiry bucket).
--
-- KEYS[1] community prefix
-- ARGV[1] hold digest (12 bytes)  ARGV[2] user      ARGV[3] estimate
-- ARGV[4] model alias            ARGV[5] now (ms)  ARGV[6] expires_at or ""
-- ARGV[7] period of now or ""    ARGV[8] warning percent (1..100)
-- ("" = out of range; refused only where the model would refuse it.)
--
-- Reply: {0} not configured | {1, remaining, limit, warning, expires_at}
-- | {2, hold record} already reserved | {3} already settled
-- | {4, remaining, limit, scope (0 community, 1 user)} exceeded
-- | {5} time out of range

-- Exact a * m (a <= 2^53, m <= 100) as (high, low) in base 1e7.
local function mul(a, m)
  local h = math.floor(a / 1e7)
  local l = a - h * 1e7
  if l < 0 then h = h - 1; l = l + 1e7 elseif l >= 1e7 then h = h + 1; l = l - 1e7 end
  l = l * m
  local carry = math.floor(l / 1e7)
  return h * m + carry, l - carry * 1e7
end

local P = prefix(KEYS[1])
local d = digest(ARGV[1])
local user = id(ARGV[2], "user", 128)
local est = money(ARGV[3], "estimate")
local model = id(ARGV[4], "model", 64)
local now = instant(ARGV[5], "now")
local expires = ARGV[6]
local per = ARGV[7]
if expires ~= "" then instant(expires, "expires_at") end
if per ~= "" then period(per, "period") end
local pct = ARGV[8]
if not digits(pct) or #pct > 3 then fail("invalid", "warning percent") end
pct = tonumber(pct)
if pct < 1 or pct > 100 then fail("invalid", "warning percent") end

local R = P .. "r"
local UF = per .. ":" .. user
local got
if per ~= "" then
  got = redis.call("HMGET", R, d, "L", per, UF)
else
  got = redis.call("HMGET", R, d, "L")
end
local v = got[1]
if v then
  local mexp = marker_expiry(v)
  if mexp == nil then return { 2, v } end
  if tonumber(now) < mexp then return { 3 } end
end
if not got[2] then return { 0 } end
if expires == "" or per == "" then return { 5 } end
local limit, cap = limits(got[2])
local committed, reserved, holds, warned = totals(got[3])

local used = committed + reserved
if used > MAX then fail("overflow", "committed + reserved") end
if used + est > limit then
  return { 4, math.max(limit - used, 0), limit, 0 }
end
local uc, ur = user_sums(got[4])
if cap ~= nil then
  local uused = uc + ur
  if uused > MAX then fail("overflow", "user committed + reserved") end
  if uused + est > cap then
    return { 4, math.max(cap - uused, 0), cap, 1 }
  end
end
local after = used + est
local warning = 0
if warned == "0" then
  local uh, ul = mul(after, 100)
  local lh, ll = mul(limit, pct)
  if uh > lh or (uh == lh and ul >= ll) then
    warning = 1
    warned = "1"
  end
end

ur = ur + est
if ur > MAX then fail("overflow", "user reserved") end
redis.call("HSET", R,
  d, string.format("H%d %s %s %s %s %s", est, now, expires, per, user, model),
  per, pack_totals(committed, reserved + est, holds + 1, warned),
  UF, string.format("%d %d", uc, ur))
-- The period's user list, for status.
if got[4] == false then redis.call("SADD", P .. "u:" .. per, user) end
index(P, d, expires)
return { 1, math.max(limit - after, 0), limit, warning, expires }
