-- @include base
-- Raises the error of a write made with `redis.pcall` that Redis refused
-- (`r`, its error reply as a table; check a write's reply with `tonumber`
-- first, every such write answering a count). WRONGTYPE means a tampered
-- key of another type, which Redis finds only on the write: the call is
-- refused as corrupt. Anything else (OOM, which Redis checks on a
-- script's first write only) is raised as Redis gave it. Either way the
-- caller has undone its own writes before.
local function refuse_write(r, what)
  if find(r.err, "^WRONGTYPE") then fail("corrupt", what) end
  error(r)
end
