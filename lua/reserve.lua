-- reserve: hold an estimate if it fits under the limit and the user's cap,
-- atomically with the check. One round trip; three commands: HMGET of
-- record + limits + period totals + the user's sums, HSET of the same
-- fields, RPUSH to the expiry index (plus SADD for the user's first hold
-- of the period, and ZADD + ZRANGE for the first hold of a 100 ms expiry
-- bucket).
--
-- KEYS[1] record hash  KEYS[2] expiry zset
-- KEYS[3] the bucket list of expires_at  KEYS[4] the period's user set
-- (KEYS[2..4] only when expires_at and the period are given: the call
-- answers {5} before it needs them otherwise)
-- ARGV[1] hold digest (12 bytes)  ARGV[2] user      ARGV[3] estimate
-- ARGV[4] model alias            ARGV[5] now (ms)  ARGV[6] expires_at or ""
-- ARGV[7] period of now or ""    ARGV[8] warning percent (1..100)
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
-- Hot path: written out inline (no prelude closures, no per-argument
-- helper calls) because every Lua library call costs ~0.2-0.5 us here; the
-- checks are the prelude's rules, spelled with fewer calls (see
-- prelude.lua for what each rule means).
local find, byte, fmt, tonumber = string.find, string.byte, string.format, tonumber
local MAX = 9007199254740991

local function fail(kind, what)
  error({ err = "ERR spendgate:" .. kind .. " " .. what })
end

-- Canonical decimal (0, or no leading zero), at most 16 digits, <= MAX.
local function canonical(v)
  return v ~= nil and #v <= 16 and (v == "0" or find(v, "^[1-9]%d*$") ~= nil)
    and (#v < 16 or tonumber(v) <= MAX)
end

-- Keys (the prelude's `community_keys` and `named` rules): all of one
-- community; the bucket list and the user set named after their bucket and
-- period.
local R = KEYS[1]
local P = R ~= nil and #R <= 200 and string.match(R, "^sg:{[^{} ]+}:")
if not P then fail("invalid", "key prefix") end
local d = ARGV[1]
if d == nil or #d ~= 12 or byte(d) < 128 then fail("invalid", "hold digest") end
local user = ARGV[2]
if user == nil or #user == 0 or #user > 128 or find(user, " ", 1, true) then fail("invalid", "user") end
local est_s = ARGV[3]
if not canonical(est_s) then fail("invalid", "estimate") end
local est = tonumber(est_s)
local model = ARGV[4]
if model == nil or #model == 0 or #model > 64 or find(model, " ", 1, true) then fail("invalid", "model") end
local now = ARGV[5]
if not canonical(now) then fail("invalid", "now") end
local expires = ARGV[6]
local per = ARGV[7]
if expires ~= "" and not canonical(expires) then fail("invalid", "expires_at") end
if per ~= "" then
  if per == nil or not find(per, "^%d%d%d%d%-[01]%d$") or per < "1970" then fail("invalid", "period") end
  local m1, m2 = byte(per, 6, 7)
  if (m1 == 48 and m2 == 48) or (m1 == 49 and m2 > 50) then fail("invalid", "period") end
end
local pct = ARGV[8]
if pct == nil or not find(pct, "^[1-9]%d?%d?$") then fail("invalid", "warning percent") end
pct = tonumber(pct)
if pct > 100 then fail("invalid", "warning percent") end
local b = "0"
if #expires > 2 then b = string.sub(expires, 1, -3) end
local X, E, U = KEYS[2], KEYS[3], KEYS[4]
if expires ~= "" and per ~= "" then
  local n, sub = #P, string.sub
  if X == nil or E == nil or U == nil or sub(X, 1, n) ~= P or sub(E, 1, n) ~= P or sub(U, 1, n) ~= P then
    fail("invalid", "key outside the community")
  end
  if sub(E, -#b - 1) ~= ":" .. b then fail("invalid", "expiry bucket key") end
  if sub(U, -8) ~= ":" .. per then fail("invalid", "user set key") end
end

local UF = per .. ":" .. user
local got
if per ~= "" then
  got = redis.call("HMGET", R, d, "L", per, UF)
else
  got = redis.call("HMGET", R, d, "L")
end
local v = got[1]
if v then
  local kind = byte(v)
  if kind == 72 then return { 2, v } end -- "H": a live hold
  local mexp
  if kind == 70 and #v >= 8 then
    mexp = struct.unpack(">I6", v, 2)
  elseif kind == 82 then
    mexp = string.match(v, "^R(%d+) ")
    if mexp ~= nil then mexp = tonumber(mexp) end
  end
  if mexp == nil then fail("corrupt", "record") end
  if tonumber(now) < mexp then return { 3 } end
end
if not got[2] then return { 0 } end
if expires == "" or per == "" then return { 5 } end
local l, c = string.match(got[2], "^(%d+) ?(%d*)$")
if l == nil then fail("corrupt", "limits") end
local cap = nil
if c ~= "" then
  cap = tonumber(c)
  if cap > MAX then fail("corrupt", "cap") end
end
local limit = tonumber(l)
if limit > MAX then fail("corrupt", "limit") end
local committed, reserved, holds, warned = 0, 0, 0, "0"
if got[3] then
  committed, reserved, holds, warned = string.match(got[3], "^(%d+) (%d+) (%d+) ([01])$")
  if committed == nil then fail("corrupt", "period totals") end
  committed, reserved, holds = tonumber(committed), tonumber(reserved), tonumber(holds)
  if committed > MAX or reserved > MAX or holds > MAX then fail("corrupt", "period totals") end
end

local used = committed + reserved
if used > MAX then fail("overflow", "committed + reserved") end
if used + est > limit then
  local left = limit - used
  if left < 0 then left = 0 end
  return { 4, left, limit, 0 }
end
local uc, ur = 0, 0
if got[4] then
  uc, ur = string.match(got[4], "^(%d+) (%d+)$")
  if uc == nil then fail("corrupt", "user sums") end
  uc, ur = tonumber(uc), tonumber(ur)
  if uc > MAX or ur > MAX then fail("corrupt", "user sums") end
end
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
redis.call("HSET", R,
  d, "H" .. est_s .. " " .. now .. " " .. expires .. " " .. per .. " " .. user .. " " .. model,
  per, fmt("%d %d %d %s", committed, reserved + est, holds + 1, warned),
  UF, fmt("%d %d", uc, ur))
-- The period's user list, for status.
if got[4] == false then redis.call("SADD", U, user) end
-- The expiry index: the hold under the 100 ms bucket of its expiry (the
-- decimal expiry without its last two digits), as digest ‖ expiry (6
-- packed bytes); the zset names the buckets that have a list.
-- A bucket that already had a list is not below the lowest bucket, so
-- only a new one can be a new earliest expiry (one ZRANGE, once per
-- bucket).
local first = 0
if redis.call("RPUSH", E, d .. struct.pack(">I6", tonumber(expires))) == 1 then
  redis.call("ZADD", X, b, b)
  if redis.call("ZRANGE", X, 0, 0)[1] == b then first = 1 end
end
local left = limit - after
if left < 0 then left = 0 end
return { 1, left, limit, warning, expires, first }
