-- @include base
-- A declared key of the community whose prefix is P (inline/prefix.lua):
-- it starts with P and, when `v` is given (an expiry bucket, a period),
-- ends with `:` and `v`, so no hold is listed, and no user counted, under
-- another's key.
local function community_key(P, key, v, what)
  if not key or sub(key, 1, #P) ~= P then fail("invalid", "key outside the community") end
  if v and sub(key, -#v - 1) ~= ":" .. v then fail("invalid", what .. " key") end
  return key
end
