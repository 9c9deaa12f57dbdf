-- Reads totals_v, field "<YYYY-MM>" of the record hash or false when
-- absent, "<committed> <reserved> <holds> <warned 0|1>" (TOTALS_FMT,
-- include/layout.lua), into committed, reserved, holds (numbers) and
-- warned ("0" or "1"); all zero when absent.
if totals_v then
  committed, reserved, holds, warned = match(totals_v, "^(%d+) (%d+) (%d+) ([01])$")
  if committed == nil then fail("corrupt", "period totals") end
  committed, reserved, holds = tonumber(committed), tonumber(reserved), tonumber(holds)
  if committed > MAX or reserved > MAX or holds > MAX then fail("corrupt", "period totals") end
else
  committed, reserved, holds, warned = 0, 0, 0, "0"
end
