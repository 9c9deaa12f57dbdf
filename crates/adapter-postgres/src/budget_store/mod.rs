//! [`SqlBudgetStore`]: the budget laws on PostgreSQL and SQLite, so a
//! deployment can run without Redis.
//!
//! # Locking
//!
//! Every write first locks the community's row in `budget_community` and
//! only then reads the hold and marker of the (user, key) it concerns and
//! the counters it changes. Writes of one community are therefore
//! serialized (no overspend under any race, law 1; exactly one effect per
//! key, law 3), while on PostgreSQL different communities lock different
//! rows and never wait for each other. No table locks, no SERIALIZABLE
//! retry loops. Any error rolls the write back: nothing is half-written.
//!
//! On PostgreSQL every write but `restore_committed` is one statement: a
//! call of its PL/pgSQL function (migration `m20261129_000012`, see
//! `calls`), which takes the lock through `spendgate_budget_lookup`
//! (migration `m20261128_000009`), reads in later statements with a
//! snapshot taken under the lock, applies the same rules as
//! [`spendgate_domain::CommunityBudget`] with checked arithmetic, writes
//! and returns the outcome as a row. The lock is held for one statement.
//! (Reading the hold and marker in the locking statement itself is the
//! bug of issue 8: under READ COMMITTED a statement that waited for the
//! lock re-checks only the locked row, so it would see them as they were
//! before the previous holder committed.) The rules thus live in Rust and
//! in SQL; the contract suite, its property test and its race section
//! hold the two to the same behaviour. `restore_committed`, a rare repair,
//! stays a Rust transaction that takes the same lock through the look-up
//! function.
//!
//! On SQLite every write is one Rust transaction (`BEGIN IMMEDIATE`, which
//! takes the database's write lock before the first read) applying the
//! domain's rules; writers of one store also take turns on an in-process
//! mutex, so they do not spin on the busy handler.
//!
//! # Bounded waits
//!
//! Every PostgreSQL write runs with `lock_timeout` and `statement_timeout`
//! set for its transaction ([`StoreTimeouts`], 2 s and 5 s by default;
//! set by the look-up function, which every write calls to take the
//! community's lock, or by `spendgate_budget_set_limits`). A lock wait that
//! expires is [`StoreError::Unavailable`]: `reserve` denies. PostgreSQL
//! arms `statement_timeout` when a statement starts, so a value set inside
//! a one-statement write bounds only the later statements of a
//! `restore_committed` transaction; the one-statement calls are bounded by
//! the pool's session `statement_timeout`
//! ([`crate::ConnectSettings::statement_timeout`], 5 s by default), and a
//! cancelled statement is [`StoreError::Unavailable`] too. `reap` releases at most
//! [`REAP_BATCH`] holds per statement or transaction, so one community
//! with many expired holds never keeps its lock for long. Waiting for a
//! pooled connection is bounded by the pool's acquire timeout
//! ([`crate::ConnectSettings`], 5 s by default), so during a database
//! outage that refuses or closes connections every call fails with
//! [`StoreError::Unavailable`] within it instead of hanging. (A statement
//! already sent on a connection that then goes silent, without being
//! closed, waits on the TCP stack: the driver has no client-side statement
//! timeout.) At most [`SqlBudgetStore::connections_per_community`]
//! writes of one community hold or wait for a pooled connection at once
//! (half the pool by default), so waiters on one hot or locked community
//! never take the connections the other communities need.
//!
//! # Expiry
//!
//! Holds and markers carry their expiry in milliseconds and are compared
//! with the caller's `now`, never the database clock. A marker past its
//! expiry counts as absent whether or not its row is still there; `reap`
//! deletes expired markers in batches of at most [`MARKER_CLEANUP_BATCH`].
//! Expired holds are found through the `(community_id, expires_at)` index,
//! so reaping costs O(expired holds); `due_communities` answers from the
//! `(expires_at, community_id)` index (migration `m20261128_000010`), so a
//! reaper pass costs O(expired holds), not O(configured communities).
//!
//! # Reads
//!
//! `status`, `lookup` and `due_communities` are single statements outside
//! any write transaction: one snapshot each, no lock taken.
//!
//! # Files
//!
//! `rows` (rows read and their checked decoding), `calls` (the
//! PostgreSQL writes, one function call each), `gate` (how many writes of
//! one community may hold or wait for a connection), `txn` (the Rust
//! transaction and the rules its writes share), `writes` (its write
//! statements), `reap` (batched reaping in a transaction), `recovery` (the
//! due list, `lookup` and `restore_committed`), `port` (the
//! [`spendgate_ports::BudgetStore`] impl).

mod calls;
mod gate;
mod port;
mod reap;
mod recovery;
mod rows;
mod txn;
mod writes;

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{DatabaseConnection, DbBackend};
use spendgate_domain::{BudgetError, BudgetPolicy, CommunityId, HoldRef, MoneyError};
use spendgate_ports::StoreError;
use tokio::sync::Mutex;

use crate::connection::SQLITE_BUSY_TIMEOUT;
use crate::error::store_error;
use crate::transaction::begin_write;
use gate::{CommunityGate, Pass};
use txn::Txn;

/// Most expired markers one `reap` deletes; the rest go on later passes
/// (they already count as absent).
pub const MARKER_CLEANUP_BATCH: u32 = 1_000;

/// Most expired holds one reap transaction releases; a `reap` call runs
/// as many such transactions as it needs, so one community with many
/// expired holds never keeps its lock for long.
pub const REAP_BATCH: u32 = 1_000;

/// How long a store transaction may wait and run before it gives up with
/// [`StoreError::Unavailable`] (for `reserve`: deny).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreTimeouts {
    /// Longest wait for the community's lock (PostgreSQL `lock_timeout`).
    /// SQLite has one write lock for the whole file, not one per
    /// community: its writers queue for the store's in-process write turn
    /// and the file lock up to [`SQLITE_BUSY_TIMEOUT`] instead, so a burst
    /// of writers to many communities is served in turn rather than
    /// refused.
    pub lock: Duration,
    /// Longest run of one statement (PostgreSQL `statement_timeout`) after
    /// the first of a transaction; the first, and so every one-statement
    /// call, is bounded by the pool's
    /// [`crate::ConnectSettings::statement_timeout`].
    pub statement: Duration,
}

impl Default for StoreTimeouts {
    /// 2 s to get the lock, 5 s per statement.
    fn default() -> Self {
        Self {
            lock: Duration::from_secs(2),
            statement: Duration::from_secs(5),
        }
    }
}

impl StoreTimeouts {
    fn setting(d: Duration) -> String {
        // At least 1 ms: PostgreSQL reads 0 as "no timeout".
        format!("{}ms", d.as_millis().max(1))
    }
}

/// [`BudgetStore`](spendgate_ports::BudgetStore) on the tables of migration `m20261127_000005` (and the
/// look-up function of `m20261128_000009` on PostgreSQL).
#[derive(Debug, Clone)]
pub struct SqlBudgetStore {
    db: DatabaseConnection,
    policy: BudgetPolicy,
    timeouts: StoreTimeouts,
    /// On SQLite, writers of this store take turns here instead of spinning
    /// on the file lock's busy timeout (which still guards against other
    /// processes and other stores on the same file).
    writer: Option<Arc<Mutex<()>>>,
    /// On PostgreSQL, how many writes of one community may hold or wait
    /// for a pooled connection at once (see `gate`).
    gate: Arc<CommunityGate>,
}

impl SqlBudgetStore {
    /// A store on `db` (migrated) with `policy`, which must be the policy
    /// every other store of the deployment uses. On PostgreSQL at most
    /// half of the pool's connections (at least one) serve or wait for
    /// writes of one community at once: see
    /// [`SqlBudgetStore::with_connections_per_community`].
    pub fn new(db: DatabaseConnection, policy: BudgetPolicy) -> Self {
        let backend = db.get_database_backend();
        let writer = (backend == DbBackend::Sqlite).then(|| Arc::new(Mutex::new(())));
        let gate = if backend == DbBackend::Postgres {
            let pool = db.get_postgres_connection_pool().options();
            CommunityGate::new(
                usize::try_from(pool.get_max_connections() / 2).unwrap_or(usize::MAX),
                pool.get_acquire_timeout(),
            )
        } else {
            CommunityGate::new(1, Duration::ZERO)
        };
        Self {
            db,
            policy,
            timeouts: StoreTimeouts::default(),
            writer,
            gate: Arc::new(gate),
        }
    }

    /// The same store letting at most `per_community` writes of one
    /// community (at least one) hold or wait for a pooled connection at
    /// once on PostgreSQL, so that waiters on one hot or locked community
    /// never take every connection from the others. A write that finds its
    /// community's places taken waits for one up to the pool's acquire
    /// timeout ([`crate::ConnectSettings::acquire_timeout`]), as long as
    /// it would wait for a connection, then fails with
    /// [`StoreError::Unavailable`] (`reserve` denies). Writes of one
    /// community run one at a time under its row lock, so a few places
    /// keep its queue busy. SQLite's writers take turns on the whole file
    /// instead, and ignore this.
    #[must_use]
    pub fn with_connections_per_community(mut self, per_community: usize) -> Self {
        self.gate = Arc::new(CommunityGate::new(per_community, self.gate.wait()));
        self
    }

    /// How many writes of one community may hold or wait for a pooled
    /// connection at once on PostgreSQL.
    pub fn connections_per_community(&self) -> usize {
        self.gate.per_community()
    }

    /// The same store with other [`StoreTimeouts`].
    #[must_use]
    pub fn with_timeouts(mut self, timeouts: StoreTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    fn postgres(&self) -> bool {
        self.db.get_database_backend() == DbBackend::Postgres
    }

    /// The community's pass on PostgreSQL, before a write asks the pool
    /// for a connection; nothing on SQLite.
    async fn pass(&self, community: &CommunityId) -> Result<Option<Pass>, StoreError> {
        if !self.postgres() {
            return Ok(None);
        }
        self.gate.enter(community).await.map(Some)
    }

    async fn begin<'a>(&self, community: &'a CommunityId) -> Result<Txn<'a>, StoreError> {
        let pass = self.pass(community).await?;
        let turn = match &self.writer {
            Some(writer) => Some(
                tokio::time::timeout(SQLITE_BUSY_TIMEOUT, Arc::clone(writer).lock_owned())
                    .await
                    .map_err(|_| {
                        StoreError::Unavailable(format!(
                            "no write turn within {SQLITE_BUSY_TIMEOUT:?}"
                        ))
                    })?,
            ),
            None => None,
        };
        Ok(Txn {
            txn: begin_write(&self.db).await.map_err(store_error)?,
            community,
            timeouts: self.timeouts,
            _turn: turn,
            _pass: pass,
        })
    }
}

fn money(error: MoneyError) -> BudgetError {
    BudgetError::Money(error)
}

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {error}"))
}

fn unknown(hold_ref: &HoldRef) -> StoreError {
    StoreError::UnknownHold {
        user: hold_ref.user.to_string(),
        key: hold_ref.key.to_string(),
    }
}

fn domain(community: &CommunityId) -> impl Fn(BudgetError) -> StoreError + '_ {
    move |e| StoreError::from_domain(community, e)
}
