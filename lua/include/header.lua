-- The record hash's header, field "V": `<layout>[ <period>]...`, the
-- layout version of everything stored under the community (records,
-- totals, sums, index, queue) and the periods that have totals in the
-- hash, for pruning (prune.lua). A later layout writes another version;
-- every script checks the header before it reads anything else
-- (inline/header.lua) and refuses a hash of another layout, so it never
-- misreads what it does not know, and a migration can tell old records
-- from new. set_limits stamps the header; a hash without one is of
-- layout 1 with no period listed (written before headers existed, or by
-- a commit to a community never configured, until its first new period).
local LAYOUT = "1"
local LAYOUT_HEAD = LAYOUT .. " "
