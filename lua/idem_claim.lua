-- Claim a request's idempotency record (RedisIdempotency::claim).
--
-- KEYS[1]  the record `sg:{<tenant>}:i:<32 hex digits>` (a hash)
-- ARGV[1]  the request fingerprint (1..65536 bytes, compared byte for byte)
-- ARGV[2]  now (ms)
-- ARGV[3]  keep_until (ms)
--
-- Fields: `f` fingerprint, `s` status (`0` while pending), `b` body (only
-- once completed), `k` keep_until. A record whose `k` is <= now counts as
-- absent and is replaced. The key's Redis TTL (keep_until - now, at least
-- 1 ms) only collects it; every decision compares `k` with ARGV[2].
--
-- Returns {code, status, body}: 0 started, 1 pending, 2 completed (with
-- the stored status and body), 3 mismatch (another fingerprint).

-- @include canonical
-- @include before
-- @include idem

local key = idem_key(KEYS[1])
local fingerprint = idem_bytes(ARGV[1], "fingerprint", 1)
local now = ARGV[2]
if not canonical(now) then fail("invalid", "now") end
local keep_until = ARGV[3]
if not canonical(keep_until) then fail("invalid", "keep_until") end

local record = redis.call('HMGET', key, 'f', 's', 'b', 'k')
if record[1] then
  local kept = record[4]
  if not canonical(kept) then fail("corrupt", "idempotency record keep_until") end
  if before(now, kept) then
    if record[1] ~= fingerprint then return { 3, 0, "" } end
    local status = record[2]
    if status == "0" then return { 1, 0, "" } end
    if not canonical(status) or not record[3] then fail("corrupt", "idempotency record answer") end
    return { 2, tonumber(status), record[3] }
  end
end

-- New, or expired: the record is this request's now.
redis.call('DEL', key)
redis.call('HSET', key, 'f', fingerprint, 's', '0', 'k', keep_until)
local ttl = tonumber(keep_until) - tonumber(now)
if ttl < 1 then ttl = 1 end
redis.call('PEXPIRE', key, ttl)
return { 0, 0, "" }
