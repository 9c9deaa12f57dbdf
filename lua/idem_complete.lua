-- Complete a request's idempotency record (RedisIdempotency::complete).
--
-- KEYS[1]  the record `sg:{<tenant>}:i:<32 hex digits>` (see idem_claim.lua)
-- ARGV[1]  the request fingerprint (1..65536 bytes)
-- ARGV[2]  the answer's HTTP status (100..599)
-- ARGV[3]  the answer's body (0..65536 bytes)
--
-- Only a record with this fingerprint is completed; a completed one keeps
-- its first answer. The key keeps the TTL its claim gave it. Returns 1
-- when the record holds an answer afterwards, 0 when there is no record
-- or it belongs to another fingerprint (nothing is written then).

-- @include canonical
-- @include idem

local key = idem_key(KEYS[1])
local fingerprint = idem_bytes(ARGV[1], "fingerprint", 1)
local status = ARGV[2]
if not canonical(status) or #status ~= 3 or tonumber(status) < 100 or tonumber(status) > 599 then
  fail("invalid", "status")
end
local body = idem_bytes(ARGV[3], "body", 0)

local record = redis.call('HMGET', key, 'f', 's')
if not record[1] or record[1] ~= fingerprint then return 0 end
if record[2] ~= "0" then return 1 end
redis.call('HSET', key, 's', status, 'b', body)
return 1
