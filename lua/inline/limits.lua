-- Reads limits_v, field "L" of the record hash (a string): "<limit>" or
-- "<limit> <cap>", into limit and cap (nil when there is none).
limit, cap = match(limits_v, "^(%d+) ?(%d*)$")
if limit == nil then fail("corrupt", "limits") end
limit = tonumber(limit)
if limit > MAX then fail("corrupt", "limit") end
if cap == "" then
  cap = nil
else
  cap = tonumber(cap)
  if cap > MAX then fail("corrupt", "cap") end
end
