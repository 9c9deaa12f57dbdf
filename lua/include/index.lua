-- @include bucket
-- @include wrongtype
-- Lists the hold `d` in E, the bucket list of `expires` (see bucket.lua;
-- its name checked by the caller), and a new bucket in the zset X.
-- Returns the bucket when its list is new (and so now named in X), else
-- false, and whether X gained the member: only a new bucket can be a
-- community's new earliest expiry.
--
-- All or nothing. Either key may be a tampered key of another type
-- (WRONGTYPE), which Redis finds only on the write; a failed write undoes
-- the ones before it here and refuses the call as corrupt. A caller that
-- calls this before its own writes, and undoes it (RPOP of E, ZREM of a
-- bucket X gained) when a later fallible write fails, changes nothing
-- when it is refused.
local function index(X, E, d, expires)
  local b = bucket(expires)
  local n = redis.pcall("RPUSH", E, d .. struct.pack(">I6", tonumber(expires)))
  if not tonumber(n) then refuse_write(n, "expiry bucket list") end
  if n ~= 1 then return false, false end
  local added = redis.pcall("ZADD", X, b, b)
  if not tonumber(added) then
    redis.call("RPOP", E)
    refuse_write(added, "expiry index")
  end
  return b, added == 1
end
