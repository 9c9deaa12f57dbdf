-- @include base
-- Marker expiries are packed as 6-byte big-endian integers (instants stay
-- below 2^48 ms, year 10889): a finalize marker is
-- `F<expires_at: 6 bytes><actual>`, a marker queue entry
-- `<digest><expires_at: 6 bytes>`.
local function pack_instant(ms)
  if ms >= 281474976710656 then fail("invalid", "instant past 2^48 ms") end
  return struct.pack(">I6", ms)
end
