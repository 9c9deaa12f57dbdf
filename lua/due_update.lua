-- due_update: after a reap of one community, record its next due bound in
-- the index (or drop it from the index when it has no unreaped hold).
--
-- KEYS[1] sg:{due}:at  KEYS[2] sg:{due}:gen  KEYS[3] sg:{due}:seq
-- ARGV[1] community id
-- ARGV[2] the community's generation read before the reap ("" = none)
-- ARGV[3] the bound the reap returned: ms, or "" when no hold is left
--
-- If the generation is unchanged, no reserve touched the index since the
-- reap started, so the reap's bound is the whole truth: set it (it may
-- rise), or remove the community. Otherwise a reserve lowered the bound
-- meanwhile (possibly for a hold the reap did not see): only lower it.
-- A community is in `at` exactly when it has a generation: one entered
-- here (an unindexed community whose reap left holds, e.g. after a failed
-- touch) gets a fresh one, so the adapter can skip this script for a
-- community without a generation whose reap left nothing.
--
-- Reply: {0} removed | {1} set | {2} only lowered | {3} nothing to do
-- @include canonical
-- @include due

local AT, GEN, SEQ = due_keys()
local c = community(ARGV[1])
local seen = ARGV[2]
if seen ~= "" and not canonical(seen) then fail("invalid", "generation") end
local bound = ARGV[3]
if bound ~= "" and not canonical(bound) then fail("invalid", "due bound") end
local current = redis.call("HGET", GEN, c) or ""
if current == seen then
  if bound == "" then
    redis.call("ZREM", AT, c)
    redis.call("HDEL", GEN, c)
    return { 0 }
  end
  -- INCR before any write: it can fail (an unreadable sequence), and a
  -- refused call must change nothing; the ZSCORE makes a tampered index
  -- of another type refuse the call before it too (WRONGTYPE).
  redis.call("ZSCORE", AT, c)
  local g = nil
  if current == "" then g = redis.call("INCR", SEQ) end
  redis.call("ZADD", AT, bound, c)
  if g ~= nil then redis.call("HSET", GEN, c, g) end
  return { 1 }
end
if bound == "" then return { 3 } end
redis.call("ZADD", AT, "LT", bound, c)
return { 2 }
