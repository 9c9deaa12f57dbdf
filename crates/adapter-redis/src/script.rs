//! The embedded Lua scripts and their error protocol.
//!
//! Each script is its operation's file in `lua/`, composed at build time
//! (`build.rs`, `build/lua_include.rs`) from two kinds of parts, so that
//! every rule (the canonical-number check, the prefix, digest, id and
//! period checks, the record layouts and their readers) is written once:
//!
//! * `-- @include NAME` (`lua/include/`): helpers called more than once in
//!   a script, and constants; each defined once per script, and only in
//!   the scripts that ask for it.
//! * `-- @inline NAME` (`lua/inline/`): statement snippets for rules a
//!   script applies once, expanded in place; they read and assign names
//!   the script declared.
//!
//! Why this shape: a script's top-level `local function`s are closures
//! created anew on every `EVALSHA`. Counted with callgrind on Redis 7.0,
//! creating one with its upvalues costs ~700 instructions and a call ~300
//! (a reserve is ~130,000 in all, I/O included); a shared prelude of every
//! helper made reserve and finalize pay for ~20 closures, which is why
//! they once restated its rules by hand. Snippets cost nothing at run
//! time, and a script carries no helper it does not call (a test checks
//! it), so the composed reserve and finalize cost within a few thousand
//! instructions of the hand-inlined ones. A Redis Functions library would
//! create the helpers once per load instead, but must then be loaded, and
//! versioned, on every Cluster master and after every restart or
//! `FUNCTION FLUSH`, beside the scripts' `NOSCRIPT` reload; the composed
//! scripts keep one deterministic text per operation, so [`Op::sha`] still
//! names it and `EVALSHA` / `SCRIPT LOAD` work as before.
//!
//! Every script is run by SHA through [`redis::Script`] (`EVALSHA`, loaded
//! again on `NOSCRIPT`, e.g. after `SCRIPT FLUSH` or a restart). A script
//! refuses bad input before writing anything, with an
//! error reply whose message starts with one of the prefixes below. Every
//! script is called with every key it reads or writes in `KEYS`, named by
//! [`crate::keys`] (the reason is there: a Cluster routes a call by its
//! declared keys, also while a slot migrates).
//!
//! A call goes over the store's multiplexed connection, except a budget
//! write ([`Op::is_budget_write`]) of a store that waits for replicas: it
//! goes over a dedicated connection followed by `WAIT` (see
//! [`ReplicaWait`](crate::ReplicaWait)).

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{ErrorKind, FromRedisValue, RedisError, Script, ServerErrorKind, Value};

use crate::error::CallError;
use crate::replicas::Writers;

/// Error-reply prefix of an argument a script re-checked and refused; the
/// store maps it to `StoreError::InvalidInput`.
pub const INVALID_PREFIX: &str = "spendgate:invalid";
/// Error-reply prefix of a counter that would overflow or go negative;
/// mapped to `StoreError::Overflow`.
pub const OVERFLOW_PREFIX: &str = "spendgate:overflow";
/// Error-reply prefix of stored data a script cannot read; mapped to
/// `StoreError::Corrupt`.
pub const CORRUPT_PREFIX: &str = "spendgate:corrupt";

/// The composed text of `lua/<file>.lua` (its includes expanded by
/// `build.rs`).
macro_rules! lua {
    ($file:literal) => {
        include_str!(concat!(env!("OUT_DIR"), "/lua/", $file, ".lua"))
    };
}

/// One operation's script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Hold an estimate (`lua/reserve.lua`).
    Reserve,
    /// Push a live hold's expiry out (`lua/extend.lua`).
    Extend,
    /// Finalize, late finalize, cancel or commit_unheld (`lua/finalize.lua`).
    Finalize,
    /// Release expired holds and drop expired markers (`lua/reap.lua`).
    Reap,
    /// Read limits, a period's totals and at most one user's sums
    /// (`lua/status.lua`).
    Status,
    /// One page of a period's users and their sums (`lua/users.lua`).
    Users,
    /// Replace the limits (`lua/set_limits.lua`).
    SetLimits,
    /// Set a period's committed sums from an outside record
    /// (`lua/restore_committed.lua`).
    RestoreCommitted,
    /// Lower a community's bound in the due index after a reserve made a
    /// new earliest expiry (`lua/due_touch.lua`, on the `{due}` keys).
    DueTouch,
    /// Record a community's next due bound after a reap
    /// (`lua/due_update.lua`, on the `{due}` keys).
    DueUpdate,
    /// Drop the totals, sums and user sets of periods long past
    /// (`lua/prune.lua`).
    Prune,
}

impl Op {
    /// Every operation, in a fixed order.
    pub const ALL: [Op; 11] = [
        Op::Reserve,
        Op::Extend,
        Op::Finalize,
        Op::Reap,
        Op::Status,
        Op::SetLimits,
        Op::RestoreCommitted,
        Op::DueTouch,
        Op::DueUpdate,
        Op::Prune,
        Op::Users,
    ];

    /// The full script text, its includes expanded.
    pub fn source(self) -> &'static str {
        match self {
            Op::Reserve => lua!("reserve"),
            Op::Extend => lua!("extend"),
            Op::Finalize => lua!("finalize"),
            Op::Reap => lua!("reap"),
            Op::Status => lua!("status"),
            Op::SetLimits => lua!("set_limits"),
            Op::RestoreCommitted => lua!("restore_committed"),
            Op::DueTouch => lua!("due_touch"),
            Op::DueUpdate => lua!("due_update"),
            Op::Prune => lua!("prune"),
            Op::Users => lua!("users"),
        }
    }

    /// A short name, as used in logs and benchmark output.
    pub fn name(self) -> &'static str {
        match self {
            Op::Reserve => "reserve",
            Op::Extend => "extend",
            Op::Finalize => "finalize",
            Op::Reap => "reap",
            Op::Status => "status",
            Op::SetLimits => "set_limits",
            Op::RestoreCommitted => "restore_committed",
            Op::DueTouch => "due_touch",
            Op::DueUpdate => "due_update",
            Op::Prune => "prune",
            Op::Users => "users",
        }
    }

    /// Whether the script writes budget data (records, totals, limits),
    /// which a store waiting for replicas must see replicated. The due
    /// index scripts write only a hint the reaper's sweep repairs.
    pub fn is_budget_write(self) -> bool {
        !matches!(self, Op::Status | Op::Users | Op::DueTouch | Op::DueUpdate)
    }

    /// The SHA1 the script is called by.
    pub fn sha(self) -> &'static str {
        self.script().get_hash()
    }

    pub(crate) fn script(self) -> &'static Script {
        let scripts = &*SCRIPTS;
        match self {
            Op::Reserve => &scripts[0],
            Op::Extend => &scripts[1],
            Op::Finalize => &scripts[2],
            Op::Reap => &scripts[3],
            Op::Status => &scripts[4],
            Op::SetLimits => &scripts[5],
            Op::RestoreCommitted => &scripts[6],
            Op::DueTouch => &scripts[7],
            Op::DueUpdate => &scripts[8],
            Op::Prune => &scripts[9],
            Op::Users => &scripts[10],
        }
    }
}

static SCRIPTS: LazyLock<[Script; 11]> =
    LazyLock::new(|| Op::ALL.map(|op| Script::new(op.source())));

/// `lua/idem_claim.lua`: read-compare-or-create one
/// idempotency record (`RedisIdempotency`). Kept out of [`Op`], the budget
/// store's scripts: it is loaded on first use (`EVALSHA`, then `SCRIPT
/// LOAD` on `NOSCRIPT`) rather than at connect.
pub(crate) static IDEM_CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(lua!("idem_claim")));

/// `lua/idem_complete.lua`: store a pending record's
/// first answer (`RedisIdempotency`).
pub(crate) static IDEM_COMPLETE: LazyLock<Script> =
    LazyLock::new(|| Script::new(lua!("idem_complete")));

/// `lua/tier_put.lua`: cache tier overrides unless a newer version is
/// cached (`RedisTierCache`), loaded on first use like [`IDEM_CLAIM`].
pub(crate) static TIER_PUT: LazyLock<Script> = LazyLock::new(|| Script::new(lua!("tier_put")));

/// How often one call loads its script again after `NOSCRIPT` (the
/// server's script cache was flushed, or a failover lost it) before giving
/// up.
const NOSCRIPT_ATTEMPTS: usize = 3;

/// Runs one script call with `keys` and `args` on a clone of `conn` within
/// `timeout`, loading the script again on `NOSCRIPT`: the one way every
/// Redis adapter of this crate calls its scripts. On a Cluster the client
/// follows `MOVED` and `ASK` and retries `TRYAGAIN` meanwhile; `timeout`
/// bounds them all (dropping the call ends its retries).
///
/// # Errors
/// [`CallError::Timeout`] when no answer came in time,
/// [`CallError::Redis`] for any client or server error.
pub(crate) async fn run<C, T, K>(
    conn: &C,
    script: &Script,
    keys: &[K],
    args: &[&[u8]],
    timeout: Duration,
) -> Result<T, CallError>
where
    C: ConnectionLike + Clone + Send + Sync,
    T: FromRedisValue,
    K: AsRef<str>,
{
    let mut invocation = script.prepare_invoke();
    for key in keys {
        invocation.key(key.as_ref());
    }
    for arg in args {
        invocation.arg(*arg);
    }
    let mut conn = conn.clone();
    let attempts = async {
        let mut attempt = 1;
        loop {
            match invocation.invoke_async::<T>(&mut conn).await {
                Err(e)
                    if attempt < NOSCRIPT_ATTEMPTS
                        && e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    };
    tokio::time::timeout(timeout, attempts)
        .await
        .map_err(|_| CallError::Timeout(timeout))?
        .map_err(CallError::from)
}

/// Runs one script call as [`run`] does, but on a dedicated connection of
/// `writers` taken for this call alone, with `WAIT` for the required
/// replicas pipelined behind it (on a Cluster the pipeline follows the
/// script's key, so the `WAIT` reaches the master that ran it). The time
/// limit is `timeout` plus the `WAIT` timeout.
///
/// # Errors
/// As [`run`]; [`CallError::NotReplicated`] when the script succeeded but
/// fewer replicas than required acknowledged within the `WAIT` timeout (a
/// script's error reply is returned as such).
pub(crate) async fn run_and_wait<C, T, K>(
    writers: &Writers<C>,
    script: &Script,
    keys: &[K],
    args: &[&[u8]],
    timeout: Duration,
) -> Result<T, CallError>
where
    C: ConnectionLike + Send,
    T: FromRedisValue,
    K: AsRef<str>,
{
    let wait = writers.wait();
    let mut call = redis::cmd("EVALSHA");
    call.arg(script.get_hash()).arg(keys.len());
    for key in keys {
        call.arg(key.as_ref());
    }
    for arg in args {
        call.arg(*arg);
    }
    let mut pipe = redis::pipe();
    pipe.add_command(call)
        .cmd("WAIT")
        .arg(wait.replicas())
        .arg(wait.timeout_ms())
        .ignore_errors();
    let attempts = async {
        let mut writer = writers.take().await?;
        let conn = writer.conn()?;
        let mut attempt = 1;
        loop {
            let replies: Vec<Value> = pipe.query_async(conn).await?;
            let [reply, acked] = <[Value; 2]>::try_from(replies).map_err(|replies| {
                RedisError::from((
                    ErrorKind::UnexpectedReturnType,
                    "script and WAIT pipeline",
                    format!("{} replies instead of 2", replies.len()),
                ))
            })?;
            match reply {
                Value::ServerError(e)
                    if attempt < NOSCRIPT_ATTEMPTS
                        && e.kind() == Some(ServerErrorKind::NoScript) =>
                {
                    // Nothing ran; load the script on this node and again.
                    script.load_async(conn).await?;
                    attempt += 1;
                }
                Value::ServerError(e) => return Err(CallError::Redis(e.into())),
                reply => {
                    let acked = i64::from_redis_value(acked).map_err(RedisError::from)?;
                    if acked < i64::from(wait.replicas()) {
                        return Err(CallError::NotReplicated {
                            acked,
                            wanted: wait.replicas(),
                            timeout: wait.timeout(),
                        });
                    }
                    return T::from_redis_value(reply).map_err(|e| CallError::Redis(e.into()));
                }
            }
        }
    };
    let limit = timeout.saturating_add(wait.timeout());
    tokio::time::timeout(limit, attempts)
        .await
        .map_err(|_| CallError::Timeout(limit))?
}

/// The include step itself, tested with the library's tests.
#[cfg(test)]
#[path = "../build/lua_include.rs"]
mod lua_include;

#[cfg(test)]
mod tests {
    use super::*;

    fn all_sources() -> Vec<(&'static str, &'static str)> {
        let mut all: Vec<_> = Op::ALL.iter().map(|op| (op.name(), op.source())).collect();
        all.push(("idem_claim", lua!("idem_claim")));
        all.push(("idem_complete", lua!("idem_complete")));
        all
    }

    /// The names a script defines with `local function NAME`.
    fn helpers(source: &str) -> Vec<&str> {
        source
            .split("local function ")
            .skip(1)
            .filter_map(|rest| rest.split('(').next())
            .collect()
    }

    /// How often `name` occurs in `source` as a whole word.
    fn uses(source: &str, name: &str) -> usize {
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        source
            .match_indices(name)
            .filter(|(at, _)| {
                let before = source.as_bytes().get(at.wrapping_sub(1)).copied();
                let after = source.as_bytes().get(at + name.len()).copied();
                !before.is_some_and(word) && !after.is_some_and(word)
            })
            .count()
    }

    #[test]
    fn every_directive_is_expanded() {
        for (name, source) in all_sources() {
            assert!(
                !source.contains(lua_include::INCLUDE) && !source.contains(lua_include::INLINE),
                "{name} still holds a directive"
            );
        }
    }

    #[test]
    fn every_script_defines_each_helper_once() {
        for (name, source) in all_sources() {
            for helper in helpers(source) {
                let defined = source.matches(&format!("local function {helper}(")).count();
                assert_eq!(defined, 1, "{name} defines {helper} {defined} times");
            }
        }
    }

    #[test]
    fn every_script_carries_only_the_helpers_it_calls() {
        for (name, source) in all_sources() {
            for helper in helpers(source) {
                assert!(
                    uses(source, helper) > 1,
                    "{name} defines {helper} and never uses it"
                );
            }
        }
    }

    #[test]
    fn a_script_is_named_by_the_sha_of_its_composed_text() {
        for op in Op::ALL {
            assert_eq!(op.sha(), Script::new(op.source()).get_hash());
        }
    }
}
