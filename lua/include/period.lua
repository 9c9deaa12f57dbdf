-- @include base
-- A period: exactly `YYYY-MM`, 1970-01 to 9999-12 (digits only, so a key
-- or field built from it stays what it says).
local function period(v, what)
  if not v or not find(v, "^%d%d%d%d%-[01]%d$") or v < "1970" then fail("invalid", what) end
  local m1, m2 = byte(v, 6, 7)
  if (m1 == 48 and m2 == 48) or (m1 == 49 and m2 > 50) then fail("invalid", what) end
  return v
end
