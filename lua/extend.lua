-- extend: push a live hold's expiry out to now + ttl, never earlier.
--
-- KEYS[1] record hash  KEYS[2] expiry zset
-- KEYS[3] the bucket list of the wanted expiry (declared even when the
--   hold stays in its bucket, since only the record tells)
-- ARGV[1] hold digest  ARGV[2] now  ARGV[3] wanted expires_at (now + ttl)
--
-- Reply: {0} unknown hold | {1, expires_at} extended | {2} not live
local R, X, E = community_keys(3)
local d = digest(ARGV[1])
local now = instant(ARGV[2], "now")
local wanted = instant(ARGV[3], "expires_at")
named(E, bucket_name(wanted), "expiry bucket")

local v = redis.call("HGET", R, d)
if not v then return { 0 } end
local mexp = marker_expiry(v)
if mexp ~= nil then
  if tonumber(now) < mexp then return { 2 } end
  return { 0 }
end
local est, created, current, per, user, model = parse_hold(string.sub(v, 2))
if not before(now, current) then return { 2 } end
if before(current, wanted) then
  redis.call("HSET", R, d,
    "H" .. fmt(est) .. " " .. created .. " " .. wanted .. " " .. per .. " " .. user .. " " .. model)
  -- The entry under the old bucket stays; reap skips it because the
  -- record's expiry no longer falls in that bucket.
  if bucket(wanted) ~= bucket(current) then index(X, E, d, wanted) end
  return { 1, wanted }
end
return { 1, current }
