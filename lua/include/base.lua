-- The error protocol, the number bound and the string functions the
-- scripts use, as locals (a local is one VM register away; a global is a
-- table lookup on every use). Included by every other part that needs
-- one of them; aliasing all six costs less than a closure.
--
-- Arguments. KEYS and ARGV entries are strings or nil (a missing one), and
-- stored values strings or false, so a check starts with `not v`;
-- `type(v)` would cost a string lookup per call.
--
-- Errors. A script refuses with `ERR spendgate:<kind> <what>`: `invalid`
-- for an argument (mapped to StoreError::InvalidInput), `overflow` for a
-- counter that would leave 0..MAX (StoreError::Overflow), `corrupt` for
-- stored data it cannot read (StoreError::Corrupt). Every script checks
-- everything it will need before its first write, so a refusal changes
-- nothing (Redis does not undo a script that fails after writing).
--
-- Numbers. Amounts are micro-USD in 0..2^53-1 (spendgate_domain::Micros),
-- so a Lua double holds every amount and every sum exactly; a sum is
-- compared against MAX before anything is written.
local find, byte, sub, match, format, tonumber = string.find, string.byte, string.sub, string.match, string.format, tonumber
local MAX = 9007199254740991

local function fail(kind, what)
  error({ err = "ERR spendgate:" .. kind .. " " .. what })
end
