-- Sets P, the community's key prefix `sg:{<community>}:`, from R, the
-- record hash (KEYS[1]). Every key a script reads or writes is declared in
-- KEYS and named in Rust (crates/adapter-redis/src/keys.rs, the one place
-- key names and suffixes are defined), so that a Cluster routes, redirects
-- (MOVED, ASK) and refuses (TRYAGAIN) a call by the keys it really touches
-- while a slot migrates. The prefix is re-checked here: a non-empty tag
-- without a brace or a space (an empty `{}` would not be a Cluster hash
-- tag); every other key must start with it (community_key.lua), so no
-- call, however wrong, writes outside its community, even on a standalone
-- server where no slot check stands in the way.
P = R and #R <= 200 and match(R, "^sg:{[^{} ]+}:")
if not P then fail("invalid", "key prefix") end
