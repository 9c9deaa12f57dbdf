-- @include bucket
-- Lists the hold `d` under the bucket of `expires` (see bucket.lua).
-- Returns the bucket when its list is new (and so now named in `x`),
-- else false: only a new bucket can be a community's new earliest expiry.
local function index(P, d, expires)
  local b = bucket(expires)
  if redis.call("RPUSH", P .. "e:" .. b, d .. struct.pack(">I6", tonumber(expires))) == 1 then
    redis.call("ZADD", P .. "x", b, b)
    return b
  end
  return false
end
