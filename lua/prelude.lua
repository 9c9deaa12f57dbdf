-- spendgate prelude: prepended by the adapter to every script but the hot
-- path's two, so the checks and number rules are written once. reserve.lua
-- and finalize.lua stand alone and spell the same rules inline (creating
-- these closures on every call costs more than their Redis commands on the
-- measured machine): a rule changed here must be changed there too.
--
-- Keys. Every key a script reads or writes is declared in KEYS, so a
-- Cluster routes, redirects (MOVED, ASK) and refuses (TRYAGAIN) the call by
-- the keys it really touches while a slot migrates, and every key name is
-- built in Rust (crates/adapter-redis/src/keys.rs, the one place names and
-- suffixes are defined); no script appends a suffix. The idempotency
-- scripts (idem_claim, idem_complete) name their one record key in KEYS[1]
-- (checked by `idem_key`). The due index's scripts (due_touch, due_update)
-- name their three `sg:{due}:…` keys in KEYS (checked by `due_keys`). Every
-- other script names its community's keys in the order its header lists,
-- checked by `community_keys`: each starts with the prefix `sg:{<tag>}:` of
-- KEYS[1]. Whatever follows the closing brace never changes the hash slot,
-- so no call, however wrong, writes outside its community, even on a
-- standalone server where no slot check stands in the way. A key named
-- after a value (an expiry bucket, a period) ends with `:` and that value
-- (`named`), so no hold is listed, and no user counted, under another's key.
--
-- Numbers. Amounts are micro-USD in 0..2^53-1 (spendgate_domain::Micros),
-- so a Lua double holds every amount and every sum check exactly; sums are
-- compared against MAX before anything is written. Instants are canonical
-- decimal ms (at most 16 digits), compared by (length, text). Every
-- argument is re-checked here; a bad one is refused with
-- `ERR spendgate:invalid <what>` before any write.

local MAX = 9007199254740991

local function fail(kind, what)
  error({ err = "ERR spendgate:" .. kind .. " " .. what })
end

local function digits(v)
  return type(v) == "string" and string.find(v, "^%d+$") ~= nil
    and (#v == 1 or string.byte(v, 1) ~= 48)
end

-- An amount argument: canonical decimal, 0..MAX.
local function money(v, what)
  if not digits(v) or #v > 16 then fail("invalid", what) end
  local n = tonumber(v)
  if n > MAX then fail("invalid", what) end
  return n
end

-- An instant argument: canonical decimal ms, 0..MAX, kept as text.
local function instant(v, what)
  if not digits(v) or #v > 16 or tonumber(v) > MAX then fail("invalid", what) end
  return v
end

-- a < b for canonical decimal strings.
local function before(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end

-- An idempotency record key (idem_claim, idem_complete, their only key):
-- `sg:{<tenant>}:i:` and a 32-hex-digit digest, built in Rust.
local function idem_key(v)
  if type(v) ~= "string" or #v > 200
    or string.find(v, "^sg:{[!-z|~]+}:i:" .. string.rep("%x", 32) .. "$") == nil then
    fail("invalid", "idempotency key")
  end
  return v
end

-- A fingerprint or body: any bytes, min..65536 of them
-- (spendgate_ports::MAX_RECORD_BYTES).
local function idem_bytes(v, what, min)
  if type(v) ~= "string" or #v < min or #v > 65536 then fail("invalid", what) end
  return v
end

-- Ids go into records and hash fields, never into key names: they only
-- need a bounded length and no space (the record separator).
local function id(v, what, max_len)
  if type(v) ~= "string" or #v == 0 or #v > max_len or string.find(v, " ", 1, true) then
    fail("invalid", what)
  end
  return v
end

-- Record fields are 12-byte digests whose first byte is >= 0x80; every
-- other field of the record hash starts with an ASCII character, so the
-- two kinds never meet.
local function digest(v)
  if type(v) ~= "string" or #v ~= 12 or string.byte(v, 1) < 128 then fail("invalid", "hold digest") end
  return v
end

-- A period: exactly `YYYY-MM`, 1970-01 to 9999-12 (digits only, so a key
-- built from it stays inside the tag).
local function period(v, what)
  if type(v) ~= "string" or string.find(v, "^%d%d%d%d%-%d%d$") == nil then fail("invalid", what) end
  local mm = string.sub(v, 6, 7)
  if mm < "01" or mm > "12" or v < "1970" then fail("invalid", what) end
  return v
end

-- The first n keys of KEYS, all of one community: KEYS[1] starts with
-- `sg:{<tag>}:` (a non-empty tag without braces or spaces; an empty `{}`
-- would not be a Cluster hash tag) and every other key with the same
-- prefix.
local function community_keys(n)
  local k = KEYS[1]
  local p = type(k) == "string" and #k <= 200 and string.match(k, "^sg:{[^{} ]+}:")
  if not p then fail("invalid", "key prefix") end
  for i = 2, n do
    local ki = KEYS[i]
    if ki == nil or string.sub(ki, 1, #p) ~= p then fail("invalid", "key outside the community") end
  end
  return unpack(KEYS, 1, n)
end

-- A key named after `v` (an expiry bucket, a period) ends with `:` and `v`.
local function named(key, v, what)
  if string.sub(key, -#v - 1) ~= ":" .. v then fail("invalid", what .. " key") end
  return key
end

-- A community id as a member of the due index (never part of a key
-- name there): printable ASCII without braces, 1..128 bytes, the
-- CommunityId rules.
local function community(v)
  if type(v) ~= "string" or #v == 0 or #v > 128 or string.find(v, "^[!-z|~]+$") == nil then
    fail("invalid", "community id")
  end
  return v
end

-- The due index's keys, all on the `{due}` hash tag: KEYS[1] the zset of
-- due bounds, KEYS[2] the hash of generations, KEYS[3] the generation
-- sequence. Scripts on them touch nothing else.
local function due_keys()
  if KEYS[1] ~= "sg:{due}:at" or KEYS[2] ~= "sg:{due}:gen" or KEYS[3] ~= "sg:{due}:seq" then
    fail("invalid", "due index keys")
  end
  return KEYS[1], KEYS[2], KEYS[3]
end

-- Stored numbers were written by these scripts; anything else is drift.
local function stored(v, what)
  if v == false or v == nil then return 0 end
  local n = tonumber(v)
  if n == nil or n < 0 or n > MAX or n ~= math.floor(n) then fail("corrupt", what) end
  return n
end

local function fmt(n)
  return string.format("%d", n)
end

-- Limits, field "L" of the record hash: "<limit>" or "<limit> <cap>".
local function limits(v)
  local l, c = string.match(v, "^(%d+) ?(%d*)$")
  if l == nil then fail("corrupt", "limits") end
  local cap = nil
  if c ~= "" then cap = stored(c, "cap") end
  return stored(l, "limit"), cap
end

-- A user's sums in a period, field "<YYYY-MM>:<user>" of the record hash:
-- "<committed> <reserved>" (absent, or "0 0", when there are none).
local function user_sums(v)
  if v == false or v == nil then return 0, 0 end
  local c, r = string.match(v, "^(%d+) (%d+)$")
  if c == nil then fail("corrupt", "user sums") end
  c, r = tonumber(c), tonumber(r)
  if c > MAX or r > MAX then fail("corrupt", "user sums") end
  return c, r
end

-- Period totals, field "<YYYY-MM>" of the record hash:
-- "<committed> <reserved> <holds> <warned 0|1>".
local function totals(v)
  if v == false or v == nil then return 0, 0, 0, "0" end
  local c, r, n, w = string.match(v, "^(%d+) (%d+) (%d+) ([01])$")
  if c == nil then fail("corrupt", "period totals") end
  c, r, n = tonumber(c), tonumber(r), tonumber(n)
  if c > MAX or r > MAX or n > MAX then fail("corrupt", "period totals") end
  return c, r, n, w
end

local function pack_totals(c, r, n, w)
  return string.format("%d %d %d %s", c, r, n, w)
end

-- Records (fields of 12-byte digests in the record hash):
--   live hold   H<estimate> <created_at> <expires_at> <period> <user> <model>
--   finalized   F<marker expires_at, 6 bytes><actual>
--   reaped      R<marker expires_at> <estimate> <created_at> <expires_at> <period> <user> <model>
local function parse_hold(body)
  local find, sub = string.find, string.sub
  local a = find(body, " ", 1, true)
  local b = a and find(body, " ", a + 1, true)
  local c = b and find(body, " ", b + 1, true)
  local d = c and find(body, " ", c + 1, true)
  local e = d and find(body, " ", d + 1, true)
  if not e or find(body, " ", e + 1, true) then fail("corrupt", "hold") end
  local est, created, expires, p = sub(body, 1, a - 1), sub(body, a + 1, b - 1), sub(body, b + 1, c - 1), sub(body, c + 1, d - 1)
  local user, model = sub(body, d + 1, e - 1), sub(body, e + 1)
  if not digits(est) or not digits(created) or not digits(expires) or #p ~= 7 or user == "" or model == "" then
    fail("corrupt", "hold")
  end
  return stored(est, "estimate"), created, expires, p, user, model
end

-- The expiry index: holds are listed under the 100 ms bucket of their
-- expiry, a list of digest ‖ expiry entries per bucket; a zset names the
-- buckets that have a list (member and score: the bucket).
local BUCKET_MS = 100

local function bucket(expires)
  return math.floor(tonumber(expires) / BUCKET_MS)
end

-- The bucket of `expires` (canonical decimal ms) as text: dropping the
-- last two digits divides by 100.
local function bucket_name(expires)
  if #expires > 2 then return string.sub(expires, 1, -3) end
  return "0"
end

-- Lists the hold `d` in the bucket list E (named after the bucket of
-- `expires`, checked by the caller before its first write) and the bucket
-- in the zset X. The entry is the digest and the expiry (6 packed bytes),
-- so reap reads a record only once its entry is due.
local function index(X, E, d, expires)
  if redis.call("RPUSH", E, d .. struct.pack(">I6", tonumber(expires))) == 1 then
    local b = bucket_name(expires)
    redis.call("ZADD", X, b, b)
  end
end

-- Marker expiries are packed as 6-byte big-endian integers (instants stay
-- below 2^48 ms, year 10889): a finalize marker is
-- `F<expires_at: 6 bytes><actual>`, a queue entry `<digest><expires_at>`.
local function pack_instant(ms)
  if ms >= 281474976710656 then fail("invalid", "instant past 2^48 ms") end
  return struct.pack(">I6", ms)
end

-- The marker expiry (ms, a number) of an F or R record, nil for a hold.
local function marker_expiry(v)
  local kind = string.sub(v, 1, 1)
  if kind == "H" then return nil end
  if kind == "F" and #v >= 8 then
    return (struct.unpack(">I6", v, 2))
  elseif kind == "R" then
    local e = string.match(v, "^R(%d+) ")
    if e ~= nil then return tonumber(e) end
  end
  fail("corrupt", "record")
end

