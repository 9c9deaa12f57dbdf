-- prune: drop the totals, the users' sums and the user set of periods
-- long past, so a community's memory does not grow month after month.
-- The adapter picks the periods (those the header lists that ended more
-- than its retention ago: every hold of them has expired, and every
-- tombstone a late finalize could commit to has too); a period that
-- still counts a hold is kept whatever the caller says, since its hold
-- is yet to be released into it.
--
-- KEYS[1] record hash  KEYS[2..] the user set of each period ARGV[1..]
-- ARGV[1..] periods (YYYY-MM), each listed in the header, no one twice
--
-- A call does O(BATCH) work whatever a period holds: it pops at most
-- BATCH users from the named periods' user sets (SPOP) and deletes their
-- sums; a period whose set is then empty loses its totals and its entry
-- in the header. A period with users left answers `more`, and the adapter
-- calls again until none is left.
--
-- Every key is read (and so known to be of its type) and every value
-- checked before the first write.
--
-- Reply: {pruned periods, fields deleted, more (1: call again)}
-- @include period
-- @include layout
-- @include header
-- @include community_key

local BATCH = 1000
local R, P = KEYS[1]
-- @inline prefix
if #ARGV == 0 or #KEYS ~= #ARGV + 1 then fail("invalid", "period list") end
local header_v = redis.call("HGET", R, "V")
-- @inline header
if not header_v then fail("invalid", "no period listed") end
local kept = " " .. sub(header_v, #LAYOUT_HEAD + 1) .. " "
local due = {}
local named = {}
for i, per in ipairs(ARGV) do
  period(per, "period")
  if named[per] then fail("invalid", "period named twice") end
  named[per] = true
  local U = community_key(P, KEYS[i + 1], per, "user set")
  if not find(kept, " " .. per .. " ", 1, true) then fail("invalid", "period not listed") end
  local totals_v = redis.call("HGET", R, per)
  local committed, reserved, holds, warned
  -- @inline totals
  if holds == 0 then
    redis.call("SCARD", U)
    due[#due + 1] = { per = per, U = U }
  end
end

local pruned, deleted, more = 0, 0, 0
local budget = BATCH
for _, p in ipairs(due) do
  if budget > 0 then
    local users = redis.call("SPOP", p.U, budget)
    budget = budget - #users
    local fields = {}
    for j, user in ipairs(users) do fields[j] = p.per .. ":" .. user end
    for j = 1, #fields, 500 do
      deleted = deleted + redis.call("HDEL", R, unpack(fields, j, math.min(j + 499, #fields)))
    end
  end
  if redis.call("SCARD", p.U) == 0 then
    local at = find(kept, " " .. p.per .. " ", 1, true)
    kept = sub(kept, 1, at) .. sub(kept, at + #p.per + 2)
    deleted = deleted + redis.call("HDEL", R, p.per)
    pruned = pruned + 1
  else
    more = 1
  end
end
if pruned > 0 then redis.call("HSET", R, "V", LAYOUT .. sub(kept, 1, -2)) end
return { pruned, deleted, more }
