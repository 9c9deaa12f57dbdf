-- reap: release the holds whose expiry is at or before now, each into a
-- tombstone kept until ARGV[2]; then drop up to ARGV[4] expired markers
-- from the head of the marker queue.
--
-- Cost. The expiry index lists each hold under the 100 ms bucket of its
-- expiry (one entry per reserve, one more per extend that changes bucket).
-- Reap reads the due buckets only, at most ARGV[3] entries of fully due
-- buckets per call, each entry once: an entry names an expired hold, or one already settled or
-- moved by extend (skipped, and trimmed with the rest). The bucket of now
-- itself is read but kept, since part of it may not be due yet; it is read
-- in batches too, from the offset ARGV[5] the previous call returned.
-- Live holds of later buckets are never read: O(due entries), not
-- O(live holds). The index points at the record hash, which carries no
-- Redis TTL, so nothing the reaper needs can vanish before it runs.
--
-- KEYS[1] record hash  KEYS[2] expiry zset  KEYS[3] marker queue
-- KEYS[4..] the bucket lists of the buckets ARGV[6..], one each
-- ARGV[1] now  ARGV[2] tombstone expires_at (now + marker ttl)
-- ARGV[3] entry batch (1..10000)  ARGV[4] marker batch (0..10000)
-- ARGV[5] offset into the bucket of now (0 on the first call)
-- ARGV[6..] the due buckets to read, ascending, none above the bucket of
--   now: the lowest members of the zset as the adapter read them just
--   before (`ZRANGEBYSCORE -inf <bucket of now> LIMIT 0 n`; a key known
--   only after a read must still be declared, so the read cannot happen
--   in here).
--
-- The zset may have changed since that read: a bucket reaped meanwhile by
-- another reaper has no list left and reads as empty; a bucket added
-- meanwhile is not read. Only the declared buckets are read; when the
-- lowest bucket left is due and was not finished here (undeclared, or cut
-- by the entry batch), `more` is 1 and the adapter reads and calls again.
--
-- Reply: {count, reclaimed, more (0/1), markers dropped, next offset,
-- next due, damaged marker entries, the periods the header lists (space
-- separated)}; `more` says a batch was full, so the adapter calls again with
-- the same now and the offset returned. `next due` (ms, or "" when `x` is
-- empty) is a lower bound of the expiry of every hold left unreaped, for
-- the due index: the start of the lowest bucket left, or now + 1 when that
-- is the bucket of now (kept because part of it may not be due, but every
-- due hold of it was just released), so a community reaped at `now` is
-- not due again at `now`. Meaningful on the last call (`more` = 0).
-- @include canonical
-- @include period
-- @include packed
-- @include layout
-- @include header
-- @include bucket
-- @include community_key

local R, P = KEYS[1]
-- @inline prefix
local now = ARGV[1]
if not canonical(now) then fail("invalid", "now") end
local texp = ARGV[2]
if not canonical(texp) then fail("invalid", "tombstone expires_at") end
local texp_packed = pack_instant(tonumber(texp))
local function batch(v, what, min)
  if not canonical(v) or tonumber(v) < min or tonumber(v) > 10000 then fail("invalid", what) end
  return tonumber(v)
end
local hold_batch = batch(ARGV[3], "entry batch", 1)
local marker_batch = batch(ARGV[4], "marker batch", 0)
local offset = ARGV[5]
if not canonical(offset) or #offset > 9 then fail("invalid", "offset") end
offset = tonumber(offset)
-- Kept unless the bucket of now is read here.
local next_offset = offset

local X = community_key(P, KEYS[2])
local Q = community_key(P, KEYS[3])
local nowms = tonumber(now)
local nb = bucket(now)
local nbn = tonumber(nb)
if #ARGV - 5 ~= #KEYS - 3 then fail("invalid", "bucket list") end
local buckets = {}
local last = -1
for i = 6, #ARGV do
  local b = ARGV[i]
  if not canonical(b) or #b > 14 or tonumber(b) <= last or tonumber(b) > nbn then fail("invalid", "bucket") end
  last = tonumber(b)
  buckets[#buckets + 1] = b
  community_key(P, KEYS[i - 2], b, "expiry bucket")
end
local header_v = redis.call("HGET", R, "V")
-- @inline header
local more = 0
local now_read = false

-- Collect the due holds: digest, record, parsed fields.
local due = {}
local seen = {}
local trims = {}
local budget = hold_batch
for i, b in ipairs(buckets) do
  local key = KEYS[3 + i]
  local whole = tonumber(b) < nbn
  local entries
  if whole then
    entries = redis.call("LRANGE", key, 0, budget - 1)
  else
    now_read = true
    entries = redis.call("LRANGE", key, offset, offset + budget - 1)
    if #entries == budget then
      more = 1
      next_offset = offset + budget
    else
      next_offset = 0
    end
  end
  for _, e in ipairs(entries) do
    -- An entry is due when its own expiry is; only then is the record
    -- read. A hold is due only under its own bucket, and `seen` skips a
    -- second entry for it there (extend within the bucket, a replayed key).
    if #e ~= 18 then fail("corrupt", "expiry entry") end
    local d = sub(e, 1, 12)
    if not seen[d] and struct.unpack(">I6", e, 13) <= nowms then
      local v = redis.call("HGET", R, d)
      if v and byte(v) == 72 then
        local body = sub(v, 2)
        local est, created, expires, per, user, model
        -- @inline parse_hold
        if bucket(expires) == b and tonumber(expires) <= nowms then
          seen[d] = true
          due[#due + 1] = { d = d, v = v, est = est, per = per, user = user }
        end
      end
    end
  end
  if whole then
    trims[#trims + 1] = { key = key, n = #entries, b = b }
    budget = budget - #entries
    if budget <= 0 then
      more = 1
      break
    end
  end
end

-- Stage every change first, so that drift refuses the batch whole.
local periods = {}
local order = {}
local records = {}
local reclaimed = 0
for i, h in ipairs(due) do
  local est, per, user = h.est, h.per, h.user
  period(per, "stored period")
  local s = periods[per]
  if s == nil then
    local totals_v = redis.call("HGET", R, per)
    local committed, reserved, holds, warned
    -- @inline totals
    s = { c = committed, r = reserved, n = holds, w = warned, users = {} }
    periods[per] = s
    order[#order + 1] = per
  end
  -- A hold of estimate 0 changes no user's sums (its reserve wrote none):
  -- no sums are read or written for it.
  if est > 0 then
    local u = s.users[user]
    if u == nil then
      local sums_v = redis.call("HGET", R, per .. ":" .. user)
      local uc, ur
      -- @inline user_sums
      u = { c = uc, r = ur }
      s.users[user] = u
    end
    u.r = u.r - est
    if u.r < 0 then fail("overflow", "reserved would go negative on reap") end
  end
  s.r = s.r - est
  s.n = s.n - 1
  if s.r < 0 or s.n < 0 then fail("overflow", "reserved would go negative on reap") end
  reclaimed = reclaimed + est
  if reclaimed > MAX then fail("overflow", "reclaimed") end
  records[i] = "R" .. texp .. " " .. sub(h.v, 2)
end

-- Markers expire in (about) the order they were made: drop from the head
-- while the head is due. An entry names a digest and the expiry it was
-- queued with (6 packed bytes); the record is deleted only if it is still
-- a marker that has expired (a later hold or marker for the same digest is
-- left alone). A damaged entry, or one naming an unreadable record, is
-- popped and counted, not deleted and not fatal: it can never become due,
-- and failing on it would stop marker clean-up for good.
-- The marker expiry of a record, as a function for pcall.
local function marker_expiry(v)
  local mexp
  -- @inline marker
  return mexp
end
local drops = {}
local popped = 0
local damaged = 0
local head = nil
if marker_batch > 0 then head = redis.call("LINDEX", Q, 0) end
if head and (#head ~= 18 or struct.unpack(">I6", head, 13) <= nowms) then
  local entries = redis.call("LRANGE", Q, 0, marker_batch - 1)
  for _, e in ipairs(entries) do
    if #e ~= 18 then
      damaged = damaged + 1
    else
      if nowms < struct.unpack(">I6", e, 13) then break end
      local d = sub(e, 1, 12)
      local v = redis.call("HGET", R, d)
      if v then
        local ok, mexp = pcall(marker_expiry, v)
        if not ok then
          damaged = damaged + 1
        elseif mexp ~= nil and mexp <= nowms then
          drops[#drops + 1] = d
        end
      end
    end
    popped = popped + 1
  end
end
if marker_batch > 0 and popped == marker_batch then more = 1 end

-- The lowest bucket left, known before any write: the lowest member of
-- the zset that this call does not empty (one of the first emptied + 1).
local emptied = {}
local n_emptied = 0
for _, t in ipairs(trims) do
  t.empties = redis.call("LLEN", t.key) <= t.n
  if t.empties then
    emptied[t.b] = true
    n_emptied = n_emptied + 1
  end
end
local next_due = ""
local firsts = redis.call("ZRANGE", X, 0, n_emptied, "WITHSCORES")
for i = 1, #firsts, 2 do
  local m = firsts[i]
  if not emptied[m] then
    -- A member is its own score; anything else is drift (and could keep
    -- the adapter calling again for a bucket it never reads).
    local lb = tonumber(m)
    if lb == nil or not canonical(m) or tonumber(firsts[i + 1]) ~= lb then fail("corrupt", "expiry bucket") end
    if lb == nbn then
      next_due = format("%d", nowms + 1)
      if not now_read then more = 1 end
    else
      next_due = format("%d", lb * BUCKET_MS)
      if lb < nbn then more = 1 end
    end
    break
  end
end

-- A key is of its type once a command has read it. The marker queue is
-- read above only with a marker batch; a released hold still queues its
-- tombstone there, so a tampered queue must refuse the call here, before
-- the first write, not on the RPUSH after it.
if marker_batch == 0 and #due > 0 then redis.call("LLEN", Q) end

-- Every read and check is done, and every key written has been read as
-- its type: from here on nothing can fail, so a refused call has changed
-- nothing.
for _, per in ipairs(order) do
  local s = periods[per]
  redis.call("HSET", R, per, format(TOTALS_FMT, s.c, s.r, s.n, s.w))
  for user, u in pairs(s.users) do
    redis.call("HSET", R, per .. ":" .. user, format(USER_SUMS_FMT, u.c, u.r))
  end
end
for i, h in ipairs(due) do
  redis.call("HSET", R, h.d, records[i])
  redis.call("RPUSH", Q, h.d .. texp_packed)
end
for _, t in ipairs(trims) do
  if t.empties then
    redis.call("DEL", t.key)
    redis.call("ZREM", X, t.b)
  elseif t.n > 0 then
    redis.call("LTRIM", t.key, t.n, -1)
  end
end
for _, d in ipairs(drops) do
  redis.call("HDEL", R, d)
end
if popped > 0 then redis.call("LTRIM", Q, popped, -1) end

-- The periods the header lists, for the adapter to prune those long past.
local listed = ""
if header_v then listed = sub(header_v, #LAYOUT_HEAD + 1) end
return { #due, reclaimed, more, #drops, next_offset, next_due, damaged, listed }
