//! The embedded Lua scripts and their error protocol.
//!
//! Each script is `lua/prelude.lua` followed by the operation's file,
//! except the hot path's two (reserve and finalize), which stand alone:
//! the prelude's ~20 helper closures are created anew on every call, and
//! on the measured machine that and one helper call per rule cost more
//! than the scripts' Redis commands (see BENCHMARKS.md), so those two spell
//! the prelude's rules inline. Every script is
//! embedded with `include_str!` and run by SHA through [`redis::Script`]
//! (`EVALSHA`, loaded again on `NOSCRIPT`, e.g. after `SCRIPT FLUSH` or a
//! restart). A script refuses bad input before writing anything, with an
//! error reply whose message starts with one of the prefixes below. Every
//! script is called with every key it reads or writes in `KEYS`, named by
//! [`crate::keys`] (the reason is there: a Cluster routes a call by its
//! declared keys, also while a slot migrates).

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{ErrorKind, FromRedisValue, Script, ServerErrorKind};

use crate::error::CallError;

/// Error-reply prefix of an argument a script re-checked and refused; the
/// store maps it to `StoreError::InvalidInput`.
pub const INVALID_PREFIX: &str = "spendgate:invalid";
/// Error-reply prefix of a counter that would overflow or go negative;
/// mapped to `StoreError::Overflow`.
pub const OVERFLOW_PREFIX: &str = "spendgate:overflow";
/// Error-reply prefix of stored data a script cannot read; mapped to
/// `StoreError::Corrupt`.
pub const CORRUPT_PREFIX: &str = "spendgate:corrupt";

macro_rules! lua {
    ($file:literal) => {
        concat!(
            include_str!("../../../lua/prelude.lua"),
            include_str!(concat!("../../../lua/", $file, ".lua"))
        )
    };
}

/// A hot-path script that carries its own checks (no prelude).
macro_rules! lua_alone {
    ($file:literal) => {
        include_str!(concat!("../../../lua/", $file, ".lua"))
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
    /// Read limits and a period's counters (`lua/status.lua`).
    Status,
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
}

impl Op {
    /// Every operation, in a fixed order.
    pub const ALL: [Op; 9] = [
        Op::Reserve,
        Op::Extend,
        Op::Finalize,
        Op::Reap,
        Op::Status,
        Op::SetLimits,
        Op::RestoreCommitted,
        Op::DueTouch,
        Op::DueUpdate,
    ];

    /// The full script text (the prelude included, for the scripts that use it).
    pub fn source(self) -> &'static str {
        match self {
            Op::Reserve => lua_alone!("reserve"),
            Op::Extend => lua!("extend"),
            Op::Finalize => lua_alone!("finalize"),
            Op::Reap => lua!("reap"),
            Op::Status => lua!("status"),
            Op::SetLimits => lua!("set_limits"),
            Op::RestoreCommitted => lua!("restore_committed"),
            Op::DueTouch => lua!("due_touch"),
            Op::DueUpdate => lua!("due_update"),
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
        }
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
        }
    }
}

static SCRIPTS: LazyLock<[Script; 9]> =
    LazyLock::new(|| Op::ALL.map(|op| Script::new(op.source())));

/// `lua/idem_claim.lua` with the prelude: read-compare-or-create one
/// idempotency record (`RedisIdempotency`). Kept out of [`Op`], the budget
/// store's scripts: it is loaded on first use (`EVALSHA`, then `SCRIPT
/// LOAD` on `NOSCRIPT`) rather than at connect.
pub(crate) static IDEM_CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(lua!("idem_claim")));

/// `lua/idem_complete.lua` with the prelude: store a pending record's
/// first answer (`RedisIdempotency`).
pub(crate) static IDEM_COMPLETE: LazyLock<Script> =
    LazyLock::new(|| Script::new(lua!("idem_complete")));

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
