-- Checks user, a user id (ARGV). Ids go into records and hash fields,
-- never into key names: they only need a bounded length (1..128 bytes,
-- spendgate_domain::UserId) and no space (the record separator).
if not user or #user == 0 or #user > 128 or find(user, " ", 1, true) then fail("invalid", "user") end
