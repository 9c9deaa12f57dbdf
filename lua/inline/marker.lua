-- Reads v, a record under a digest (a string), into mexp: the marker
-- expiry (ms, a number) of a finalize marker or reap tombstone, nil for a
-- live hold; anything else is corrupt. The records under a digest:
--   live hold   H<estimate> <created_at> <expires_at> <period> <user> <model>
--               (include/hold.lua)
--   finalized   F<marker expires_at: 6 packed bytes><actual>
--   reaped      R<marker expires_at> <the hold record without its H>
mexp = nil
do
  local kind = byte(v)
  if kind == 70 and #v >= 8 then
    mexp = struct.unpack(">I6", v, 2)
  elseif kind == 82 then
    mexp = tonumber(match(v, "^R(%d+) "))
    if mexp == nil then fail("corrupt", "record") end
  elseif kind ~= 72 then
    fail("corrupt", "record")
  end
end
