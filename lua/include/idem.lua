-- @include base
-- An idempotency record key (idem_claim, idem_complete, their only key):
-- `sg:{<tenant>}:i:` and a 32-hex-digit digest, built in Rust.
local function idem_key(v)
  if not v or #v > 200
    or not find(v, "^sg:{[!-z|~]+}:i:" .. string.rep("%x", 32) .. "$") then
    fail("invalid", "idempotency key")
  end
  return v
end

-- A fingerprint or body: any bytes, min..65536 of them
-- (spendgate_ports::MAX_RECORD_BYTES).
local function idem_bytes(v, what, min)
  if not v or #v < min or #v > 65536 then fail("invalid", what) end
  return v
end
