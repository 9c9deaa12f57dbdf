-- @include base
-- A canonical decimal: "0" or digits without a leading zero, at most 16
-- of them, at most MAX. Every amount and instant argument, and every
-- number a script stored, has this shape; instants stay text and compare
-- by (length, text) (see `before`). A predicate, so the caller names the
-- error: `invalid` for an argument, `corrupt` for stored data.
local function canonical(v)
  return v and #v <= 16 and (v == "0" or find(v, "^[1-9]%d*$") ~= nil)
    and (#v < 16 or tonumber(v) <= MAX)
end
