-- Reads body, a hold record without its first byte (`H`, or `R<expiry> `
-- of a tombstone; see marker.lua), into est (a number), created,
-- expires, per, user and model (text). The period's shape is left to
-- `period` where it matters.
est, created, expires, per, user, model = match(body, "^(%d+) (%d+) (%d+) ([^ ]+) ([^ ]+) ([^ ]+)$")
if est == nil or #per ~= 7 or (#est > 1 and byte(est) == 48) or (#created > 1 and byte(created) == 48)
  or (#expires > 1 and byte(expires) == 48) then
  fail("corrupt", "hold")
end
est = tonumber(est)
if est > MAX then fail("corrupt", "estimate") end
