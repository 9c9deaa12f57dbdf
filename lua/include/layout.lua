-- The layouts of the sums the scripts write into the record hash, as
-- `string.format` patterns (constants: no closure, no call of ours); the
-- matching readers are inline/totals.lua and inline/user_sums.lua. A
-- hold's record is built by hold.lua.
--   period totals, field "<YYYY-MM>": <committed> <reserved> <holds> <warned 0|1>
--   a user's sums, field "<YYYY-MM>:<user>": <committed> <reserved>
local TOTALS_FMT = "%d %d %d %s"
local USER_SUMS_FMT = "%d %d"
