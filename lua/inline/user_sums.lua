-- Reads sums_v, field "<YYYY-MM>:<user>" of the record hash or false
-- when absent, "<committed> <reserved>" (USER_SUMS_FMT,
-- include/layout.lua), into uc and ur (numbers; zero when absent).
if sums_v then
  uc, ur = match(sums_v, "^(%d+) (%d+)$")
  if uc == nil then fail("corrupt", "user sums") end
  uc, ur = tonumber(uc), tonumber(ur)
  if uc > MAX or ur > MAX then fail("corrupt", "user sums") end
else
  uc, ur = 0, 0
end
