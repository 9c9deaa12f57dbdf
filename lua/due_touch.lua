-- due_touch: a reserve made a new earliest expiry bucket for a community;
-- lower the community's due bound in the index to the bucket's start and
-- mark the touch with a fresh generation.
--
-- The index lives on its own hash tag (`{due}`), never on a community's,
-- so this runs as its own script after the reserve (a Cluster script
-- cannot touch two slots).
--
-- KEYS[1] sg:{due}:at  KEYS[2] sg:{due}:gen  KEYS[3] sg:{due}:seq
-- ARGV[1] community id  ARGV[2] due bound (ms, the bucket's start)
--
-- `ZADD LT` only ever lowers an existing bound (and adds a missing one).
-- The generation comes from one sequence shared by every community, so a
-- value is never seen twice, even after due_update deleted the field: a
-- reap that read the generation before its pass can tell that a touch
-- happened since (no ABA).
--
-- Reply: {the new generation} (an array, as every script's reply is).
-- @include canonical
-- @include due

local AT, GEN, SEQ = due_keys()
local c = community(ARGV[1])
local bound = ARGV[2]
if not canonical(bound) then fail("invalid", "due bound") end
-- A refused call must change nothing. Reading the index and the
-- generations first makes a tampered key of another type refuse the call
-- here (WRONGTYPE); INCR is then the one write that can fail (an
-- unreadable sequence), and it comes first.
redis.call("ZSCORE", AT, c)
redis.call("HGET", GEN, c)
local g = redis.call("INCR", SEQ)
redis.call("ZADD", AT, "LT", bound, c)
redis.call("HSET", GEN, c, g)
return { g }
