-- @include base
-- The due index's keys, all on the `{due}` hash tag: KEYS[1] the zset of
-- due bounds, KEYS[2] the hash of generations, KEYS[3] the generation
-- sequence. Scripts on them touch nothing else.
local function due_keys()
  if KEYS[1] ~= "sg:{due}:at" or KEYS[2] ~= "sg:{due}:gen" or KEYS[3] ~= "sg:{due}:seq" then
    fail("invalid", "due index keys")
  end
  return KEYS[1], KEYS[2], KEYS[3]
end

-- A community id as a member of the due index (never part of a key name
-- there): printable ASCII without braces, 1..128 bytes, the CommunityId
-- rules.
local function community(v)
  if not v or #v == 0 or #v > 128 or not find(v, "^[!-z|~]+$") then
    fail("invalid", "community id")
  end
  return v
end
