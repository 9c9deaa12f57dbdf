-- @include base
-- The expiry index: holds are listed under the 100 ms bucket of their
-- expiry, a list per bucket (named in keys.rs) of digest ‖ expiry
-- entries, the expiry as 6 packed bytes, so reap reads a record only once
-- its entry is due; a zset names the buckets that have a list (member and
-- score: the bucket). The bucket of a canonical decimal
-- instant is its text without the last two digits ("0" below 100 ms),
-- which is floor(ms / BUCKET_MS) without a division.
local BUCKET_MS = 100

local function bucket(ms)
  if #ms > 2 then return sub(ms, 1, -3) end
  return "0"
end
