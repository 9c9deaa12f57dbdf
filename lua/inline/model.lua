-- Checks model, a model alias (ARGV): 1..64 bytes without a space (the
-- record separator; see user.lua).
if not model or #model == 0 or #model > 64 or find(model, " ", 1, true) then fail("invalid", "model") end
