-- a < b for canonical decimal strings: the shorter is smaller, equal
-- lengths compare as text.
local function before(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
