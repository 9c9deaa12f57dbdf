-- Checks d, a hold's digest (ARGV[1] of every script on one hold). A
-- hold's field in the record hash is the 12-byte digest of (user, key),
-- first byte >= 0x80; every other field starts with an ASCII character,
-- so the two kinds never meet.
if not d or #d ~= 12 or byte(d) < 128 then fail("invalid", "hold digest") end
