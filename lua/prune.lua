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
-- Every key is read (and so known to be of its type) and every value
-- checked before the first write.
--
-- Reply: {pruned periods, fields deleted}
-- @include period
-- @include layout
-- @include header
-- @include community_key

local R, P = KEYS[1]
-- @inline prefix
if #ARGV == 0 or #KEYS ~= #ARGV + 1 then fail("invalid", "period list") end
local header_v = redis.call("HGET", R, "V")
-- @inline header
if not header_v then fail("invalid", "no period listed") end
local kept = " " .. sub(header_v, #LAYOUT_HEAD + 1) .. " "
local drop = {}
local sets = {}
local named = {}
for i, per in ipairs(ARGV) do
  period(per, "period")
  if named[per] then fail("invalid", "period named twice") end
  named[per] = true
  local U = community_key(P, KEYS[i + 1], per, "user set")
  local at = find(kept, " " .. per .. " ", 1, true)
  if not at then fail("invalid", "period not listed") end
  local totals_v = redis.call("HGET", R, per)
  local committed, reserved, holds, warned
  -- @inline totals
  if holds == 0 then
    kept = sub(kept, 1, at) .. sub(kept, at + #per + 2)
    drop[#drop + 1] = per
    for _, user in ipairs(redis.call("SMEMBERS", U)) do drop[#drop + 1] = per .. ":" .. user end
    sets[#sets + 1] = U
  end
end

local pruned = #sets
if pruned > 0 then
  for i = 1, #drop, 500 do
    redis.call("HDEL", R, unpack(drop, i, math.min(i + 499, #drop)))
  end
  redis.call("DEL", unpack(sets))
  redis.call("HSET", R, "V", LAYOUT .. sub(kept, 1, -2))
end
return { pruned, #drop }
