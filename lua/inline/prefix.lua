-- Checks P, the community's key prefix (KEYS[1]):
-- `sg:{<community>}:`, built in Rust from a validated CommunityId
-- (printable ASCII, no whitespace, no braces), re-checked here: a
-- non-empty tag without a brace or a space (an empty `{}` would not be a
-- Cluster hash tag), at most 140 bytes. Every key a script touches is
-- that prefix plus a fixed suffix, so no script can leave its
-- community's hash slot.
if not P or #P > 140 or not find(P, "^sg:{[^{} ]+}:$") then fail("invalid", "key prefix") end
