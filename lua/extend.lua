-- extend: push a live hold's expiry out to now + ttl, never earlier.
--
-- KEYS[1] record hash  KEYS[2] expiry zset
-- KEYS[3] the bucket list of the wanted expiry (declared even when the
--   hold stays in its bucket, since only the record tells)
-- ARGV[1] hold digest  ARGV[2] now  ARGV[3] wanted expires_at (now + ttl)
--
-- Reply: {0} unknown hold | {1, expires_at} extended | {2} not live
-- @include canonical
-- @include header
-- @include before
-- @include hold
-- @include index
-- @include community_key

local R, P = KEYS[1]
-- @inline prefix
local d = ARGV[1]
-- @inline digest
local now = ARGV[2]
if not canonical(now) then fail("invalid", "now") end
local wanted = ARGV[3]
if not canonical(wanted) then fail("invalid", "expires_at") end
local X = community_key(P, KEYS[2])
local E = community_key(P, KEYS[3], bucket(wanted), "expiry bucket")

local got = redis.call("HMGET", R, d, "V")
local header_v = got[2]
-- @inline header
local v = got[1]
if not v then return { 0 } end
local mexp
-- @inline marker
if mexp ~= nil then
  if tonumber(now) < mexp then return { 2 } end
  return { 0 }
end
local body = sub(v, 2)
local est, created, expires, per, user, model
-- @inline parse_hold
local current = expires
if not before(now, current) then return { 2 } end
if before(current, wanted) then
  -- The index first: its keys may be tampered keys of another type, and
  -- it undoes itself when refused; the HSET cannot fail (the HGET read the
  -- record as a hash). The entry under the old bucket stays; reap skips
  -- it because the record's expiry no longer falls in that bucket.
  if bucket(wanted) ~= bucket(current) then index(X, E, d, wanted) end
  redis.call("HSET", R, d, hold_record(format("%d", est), created, wanted, per, user, model))
  return { 1, wanted }
end
return { 1, current }
