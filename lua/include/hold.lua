-- A live hold's record, the value of its digest field in the record hash:
--   H<estimate> <created_at> <expires_at> <period> <user> <model>
-- (canonical decimals as text, the period `YYYY-MM`, ids without
-- spaces; read back by inline/parse_hold.lua). Built by concatenation:
-- a `string.format` with `%d` costs several times more here.
local function hold_record(estimate, created, expires, per, user, model)
  return "H" .. estimate .. " " .. created .. " " .. expires .. " " .. per .. " " .. user .. " " .. model
end
