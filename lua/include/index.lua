-- @include bucket
-- Lists the hold `d` in E, the bucket list of `expires` (see bucket.lua;
-- its name checked by the caller before its first write), and the bucket
-- in the zset X. Returns the bucket when its list is new (and so now
-- named in X), else false: only a new bucket can be a community's new
-- earliest expiry.
local function index(X, E, d, expires)
  local b = bucket(expires)
  if redis.call("RPUSH", E, d .. struct.pack(">I6", tonumber(expires))) == 1 then
    redis.call("ZADD", X, b, b)
    return b
  end
  return false
end
