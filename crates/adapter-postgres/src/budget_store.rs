//! [`SqlBudgetStore`]: the budget laws on PostgreSQL and SQLite, so a
//! deployment can run without Redis.
//!
//! # Locking
//!
//! Every write is one short transaction that first locks the community's
//! row in `budget_community` (`SELECT … FOR UPDATE` on PostgreSQL; on
//! SQLite the transaction is `BEGIN IMMEDIATE`, which takes the database's
//! write lock, and writers queue on the busy timeout; writers of one store
//! also take turns on an in-process mutex, so they do not spin on the busy
//! handler). The lock comes with the hold and its live marker in one query
//! (`commit_unheld` reads them in a statement after the lock instead, and
//! first creates the row, without limits, for a community that has none);
//! a second query reads the period's counters and the user's sums. The
//! transaction then applies the same rules as
//! [`spendgate_domain::CommunityBudget`] in Rust with checked arithmetic and
//! writes the results back (on PostgreSQL as one statement of data-modifying
//! CTEs) before committing: five round trips per operation. Writes of one community
//! are therefore serialized (no overspend under any race, law 1), while
//! different communities lock different rows and never wait for each other
//! on PostgreSQL. No table locks, no SERIALIZABLE retry loops. Any error
//! rolls the transaction back: nothing is half-written.
//!
//! # Expiry
//!
//! Holds and markers carry their expiry in milliseconds and are compared
//! with the caller's `now`, never the database clock. A marker past its
//! expiry counts as absent whether or not its row is still there; `reap`
//! deletes expired markers in batches of at most [`MARKER_CLEANUP_BATCH`].
//! Expired holds are found through the `(community_id, expires_at)` index,
//! so reaping costs O(expired holds).

use std::sync::Arc;

use async_trait::async_trait;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, FromQueryResult,
    Statement, Value,
};
use spendgate_domain::{
    Admission, BudgetError, BudgetPolicy, CommunityId, ExtendOutcome, FinalizeOutcome, Hold,
    HoldRef, IdempotencyKey, Limits, Micros, ModelAlias, MoneyError, Period, PeriodSums, Reaped,
    Receipt, Reservation, ReserveOutcome, SettledAs, Settlement, Timestamp, Ttl, UnheldCommit,
    UserId, UserSpend, admit, apply_settlement,
};
use spendgate_ports::{BudgetStatus, BudgetStore, StoreError};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::error::store_error;
use crate::transaction::begin_write;

/// Most expired markers one `reap` deletes; the rest go on later passes
/// (they already count as absent).
pub const MARKER_CLEANUP_BATCH: u32 = 1_000;

/// [`BudgetStore`] on the tables of migration `m20261127_000005`.
#[derive(Debug, Clone)]
pub struct SqlBudgetStore {
    db: DatabaseConnection,
    policy: BudgetPolicy,
    /// On SQLite, writers of this store take turns here instead of spinning
    /// on the file lock's busy timeout (which still guards against other
    /// processes and other stores on the same file).
    writer: Option<Arc<Mutex<()>>>,
}

impl SqlBudgetStore {
    /// A store on `db` (migrated) with `policy`, which must be the policy
    /// every other store of the deployment uses.
    pub fn new(db: DatabaseConnection, policy: BudgetPolicy) -> Self {
        let writer =
            (db.get_database_backend() == DbBackend::Sqlite).then(|| Arc::new(Mutex::new(())));
        Self { db, policy, writer }
    }

    async fn begin<'a>(&self, community: &'a CommunityId) -> Result<Txn<'a>, StoreError> {
        let turn = match &self.writer {
            Some(writer) => Some(Arc::clone(writer).lock_owned().await),
            None => None,
        };
        Ok(Txn {
            txn: begin_write(&self.db).await.map_err(store_error)?,
            community,
            _turn: turn,
        })
    }
}

fn money(error: MoneyError) -> BudgetError {
    BudgetError::Money(error)
}

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {error}"))
}

fn read_micros(what: &str, value: i64) -> Result<Micros, StoreError> {
    Micros::new(value).map_err(|e| corrupt(what, e))
}

fn read_count(what: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|e| corrupt(what, e))
}

fn read_time(what: &str, value: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_millis(value).map_err(|e| corrupt(what, e))
}

fn count_to_db(count: u64) -> Result<i64, StoreError> {
    i64::try_from(count).map_err(|_| StoreError::Overflow("hold count".into()))
}

/// One period's counters as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    committed: Micros,
    reserved: Micros,
    holds: u64,
    warned: bool,
}

impl Counters {
    fn sums(self) -> PeriodSums {
        PeriodSums {
            committed: self.committed,
            reserved: self.reserved,
            holds: self.holds,
        }
    }

    fn set_sums(&mut self, sums: PeriodSums) {
        self.committed = sums.committed;
        self.reserved = sums.reserved;
        self.holds = sums.holds;
    }
}

#[derive(Debug, FromQueryResult)]
struct LimitsRow {
    limit_micros: Option<i64>,
    per_user_cap_micros: Option<i64>,
}

#[derive(Debug, FromQueryResult)]
struct CountersRow {
    committed_micros: i64,
    reserved_micros: i64,
    holds: i64,
    warned: bool,
}

#[derive(Debug, FromQueryResult)]
struct UserRow {
    user_id: String,
    committed_micros: i64,
    reserved_micros: i64,
}

/// The community row (locked), the hold and its live marker, in one
/// round trip.
#[derive(Debug, FromQueryResult)]
struct LookupRow {
    limit_micros: Option<i64>,
    per_user_cap_micros: Option<i64>,
    h_estimate: Option<i64>,
    h_model: Option<String>,
    h_period: Option<String>,
    h_created: Option<i64>,
    h_expires: Option<i64>,
    m_kind: Option<String>,
    m_actual: Option<i64>,
    m_estimate: Option<i64>,
    m_model: Option<String>,
    m_period: Option<String>,
    m_created: Option<i64>,
    m_hold_expires: Option<i64>,
}

/// What a write needs to know about one (user, key), read under the lock.
struct Lookup {
    limits: Option<Limits>,
    hold: Option<Hold>,
    marker: Option<SettledAs>,
}

#[derive(Debug, FromQueryResult)]
struct SumsRow {
    committed_micros: Option<i64>,
    reserved_micros: Option<i64>,
    holds: Option<i64>,
    warned: Option<bool>,
    u_committed: Option<i64>,
    u_reserved: Option<i64>,
}

#[derive(Debug, FromQueryResult)]
struct StatusRow {
    kind: String,
    user_id: Option<String>,
    a: Option<i64>,
    b: Option<i64>,
    c: Option<i64>,
    d: Option<i64>,
}

#[derive(Debug, FromQueryResult)]
struct HoldRow {
    user_id: String,
    idempotency_key: String,
    estimate_micros: i64,
    model_alias: String,
    period: String,
    created_at: i64,
    expires_at: i64,
}

#[derive(Debug, FromQueryResult)]
struct MarkerRow {
    kind: String,
    actual_micros: Option<i64>,
    estimate_micros: Option<i64>,
    model_alias: Option<String>,
    period: Option<String>,
    created_at: Option<i64>,
    hold_expires_at: Option<i64>,
}

impl HoldRow {
    fn into_hold(self) -> Result<Hold, StoreError> {
        Ok(Hold {
            user: UserId::parse(self.user_id).map_err(|e| corrupt("hold user", e))?,
            key: IdempotencyKey::parse(self.idempotency_key).map_err(|e| corrupt("hold key", e))?,
            estimate: read_micros("hold estimate", self.estimate_micros)?,
            model: ModelAlias::parse(self.model_alias).map_err(|e| corrupt("hold model", e))?,
            period: Period::parse(&self.period).map_err(|e| corrupt("hold period", e))?,
            created_at: read_time("hold created_at", self.created_at)?,
            expires_at: read_time("hold expires_at", self.expires_at)?,
        })
    }
}

impl MarkerRow {
    fn into_settled(self, hold_ref: &HoldRef) -> Result<SettledAs, StoreError> {
        let missing = |field: &str| corrupt("marker", format!("{} has no {field}", self.kind));
        match self.kind.as_str() {
            "finalized" => Ok(SettledAs::Finalized {
                actual: read_micros(
                    "marker actual",
                    self.actual_micros.ok_or_else(|| missing("actual"))?,
                )?,
            }),
            "reaped" => {
                let estimate = self.estimate_micros.ok_or_else(|| missing("estimate"))?;
                let model = self.model_alias.clone().ok_or_else(|| missing("model"))?;
                let period = self.period.clone().ok_or_else(|| missing("period"))?;
                let created_at = self.created_at.ok_or_else(|| missing("created_at"))?;
                let expires_at = self
                    .hold_expires_at
                    .ok_or_else(|| missing("hold_expires_at"))?;
                Ok(SettledAs::Reaped {
                    hold: Hold {
                        user: hold_ref.user.clone(),
                        key: hold_ref.key.clone(),
                        estimate: read_micros("tombstone estimate", estimate)?,
                        model: ModelAlias::parse(model)
                            .map_err(|e| corrupt("tombstone model", e))?,
                        period: Period::parse(&period)
                            .map_err(|e| corrupt("tombstone period", e))?,
                        created_at: read_time("tombstone created_at", created_at)?,
                        expires_at: read_time("tombstone hold_expires_at", expires_at)?,
                    },
                })
            }
            other => Err(corrupt("marker kind", format!("unknown kind {other:?}"))),
        }
    }
}

impl LookupRow {
    /// The hold and the live marker of `hold_ref` this row carries.
    fn into_found(
        self,
        hold_ref: &HoldRef,
    ) -> Result<(Option<Hold>, Option<SettledAs>), StoreError> {
        let hold = match (
            self.h_estimate,
            self.h_model,
            self.h_period,
            self.h_created,
            self.h_expires,
        ) {
            (
                Some(estimate_micros),
                Some(model_alias),
                Some(period),
                Some(created_at),
                Some(expires_at),
            ) => Some(
                HoldRow {
                    user_id: hold_ref.user.to_string(),
                    idempotency_key: hold_ref.key.to_string(),
                    estimate_micros,
                    model_alias,
                    period,
                    created_at,
                    expires_at,
                }
                .into_hold()?,
            ),
            _ => None,
        };
        let marker = match self.m_kind {
            Some(kind) => Some(
                MarkerRow {
                    kind,
                    actual_micros: self.m_actual,
                    estimate_micros: self.m_estimate,
                    model_alias: self.m_model,
                    period: self.m_period,
                    created_at: self.m_created,
                    hold_expires_at: self.m_hold_expires,
                }
                .into_settled(hold_ref)?,
            ),
            None => None,
        };
        Ok((hold, marker))
    }
}

/// A write transaction scoped to one community.
struct Txn<'a> {
    txn: DatabaseTransaction,
    community: &'a CommunityId,
    /// Released after `txn` (fields drop in order).
    _turn: Option<OwnedMutexGuard<()>>,
}

impl Txn<'_> {
    fn backend(&self) -> DbBackend {
        self.txn.get_database_backend()
    }

    fn stmt(&self, sql: &str, mut values: Vec<Value>) -> Statement {
        values.insert(0, self.community.as_str().into());
        Statement::from_sql_and_values(self.backend(), sql, values)
    }

    async fn exec(&self, sql: &str, values: Vec<Value>) -> Result<u64, StoreError> {
        self.txn
            .execute_raw(self.stmt(sql, values))
            .await
            .map(|r| r.rows_affected())
            .map_err(store_error)
    }

    async fn commit(self) -> Result<(), StoreError> {
        self.txn.commit().await.map_err(store_error)
    }

    /// Locks the community's row; `None` when it has none (no limits were
    /// ever set, so it has no holds or markers either).
    async fn lock(&self) -> Result<Option<Option<Limits>>, StoreError> {
        let lock = if self.backend() == DbBackend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let sql = format!(
            "SELECT limit_micros, per_user_cap_micros FROM budget_community WHERE community_id = $1{lock}"
        );
        let row = LimitsRow::find_by_statement(self.stmt(&sql, vec![]))
            .one(&self.txn)
            .await
            .map_err(store_error)?;
        row.map(|r| limits_from(r.limit_micros, r.per_user_cap_micros))
            .transpose()
    }

    /// Locks the community's row and reads the hold of (user, key) and its
    /// marker if unexpired at `now`. `None` when the community has no row
    /// (no limits were ever set, so no holds or markers either).
    async fn lookup(
        &self,
        hold_ref: &HoldRef,
        now: Timestamp,
    ) -> Result<Option<Lookup>, StoreError> {
        let lock = if self.backend() == DbBackend::Postgres {
            " FOR UPDATE OF c"
        } else {
            ""
        };
        let sql = format!(
            "SELECT c.limit_micros, c.per_user_cap_micros, \
               h.estimate_micros AS h_estimate, h.model_alias AS h_model, h.period AS h_period, \
               h.created_at AS h_created, h.expires_at AS h_expires, \
               m.kind AS m_kind, m.actual_micros AS m_actual, m.estimate_micros AS m_estimate, \
               m.model_alias AS m_model, m.period AS m_period, m.created_at AS m_created, \
               m.hold_expires_at AS m_hold_expires \
             FROM budget_community c \
             LEFT JOIN budget_hold h ON h.community_id = c.community_id \
               AND h.user_id = $2 AND h.idempotency_key = $3 \
             LEFT JOIN budget_marker m ON m.community_id = c.community_id \
               AND m.user_id = $2 AND m.idempotency_key = $3 AND m.expires_at > $4 \
             WHERE c.community_id = $1{lock}"
        );
        let Some(row) = LookupRow::find_by_statement(self.stmt(
            &sql,
            vec![
                hold_ref.user.as_str().into(),
                hold_ref.key.as_str().into(),
                now.as_millis().into(),
            ],
        ))
        .one(&self.txn)
        .await
        .map_err(store_error)?
        else {
            return Ok(None);
        };
        let limits = limits_from(row.limit_micros, row.per_user_cap_micros)?;
        let (hold, marker) = row.into_found(hold_ref)?;
        Ok(Some(Lookup {
            limits,
            hold,
            marker,
        }))
    }

    /// Like [`Txn::lookup`], but the hold and its marker are read by a
    /// statement that runs after the lock statement returned. On
    /// PostgreSQL (read committed) that statement's snapshot is taken once
    /// the lock is held, so it sees what every earlier holder of the lock
    /// committed; in `lookup`'s single statement the joined hold and marker
    /// rows come from the snapshot taken before waiting for the lock.
    ///
    /// A community without a row gets one with no limits first (rolled
    /// back with the transaction on any error), so that this write takes
    /// the same lock as every other.
    async fn lock_then_lookup(
        &self,
        hold_ref: &HoldRef,
        now: Timestamp,
    ) -> Result<Lookup, StoreError> {
        let limits = match self.lock().await? {
            Some(limits) => limits,
            None => {
                self.exec(
                    "INSERT INTO budget_community (community_id) VALUES ($1) \
                     ON CONFLICT (community_id) DO NOTHING",
                    vec![],
                )
                .await?;
                self.lock().await?.ok_or_else(|| {
                    StoreError::Corrupt("community row vanished under its lock".into())
                })?
            }
        };
        let row = LookupRow::find_by_statement(self.stmt(
            "SELECT CAST(NULL AS BIGINT) AS limit_micros, CAST(NULL AS BIGINT) AS per_user_cap_micros, \
               h.estimate_micros AS h_estimate, h.model_alias AS h_model, h.period AS h_period, \
               h.created_at AS h_created, h.expires_at AS h_expires, \
               m.kind AS m_kind, m.actual_micros AS m_actual, m.estimate_micros AS m_estimate, \
               m.model_alias AS m_model, m.period AS m_period, m.created_at AS m_created, \
               m.hold_expires_at AS m_hold_expires \
             FROM (SELECT 1 AS one) x \
             LEFT JOIN budget_hold h ON h.community_id = $1 \
               AND h.user_id = $2 AND h.idempotency_key = $3 \
             LEFT JOIN budget_marker m ON m.community_id = $1 \
               AND m.user_id = $2 AND m.idempotency_key = $3 AND m.expires_at > $4",
            vec![
                hold_ref.user.as_str().into(),
                hold_ref.key.as_str().into(),
                now.as_millis().into(),
            ],
        ))
        .one(&self.txn)
        .await
        .map_err(store_error)?;
        let (hold, marker) = match row {
            Some(row) => row.into_found(hold_ref)?,
            None => (None, None),
        };
        Ok(Lookup {
            limits,
            hold,
            marker,
        })
    }

    /// A period's counters and one user's sums in it, in one round trip.
    async fn sums(
        &self,
        period: Period,
        user: &UserId,
    ) -> Result<(Counters, UserSpend), StoreError> {
        let row = SumsRow::find_by_statement(self.stmt(
            "SELECT p.committed_micros, p.reserved_micros, p.holds, p.warned, \
               u.committed_micros AS u_committed, u.reserved_micros AS u_reserved \
             FROM (SELECT 1 AS one) x \
             LEFT JOIN budget_period p ON p.community_id = $1 AND p.period = $2 \
             LEFT JOIN budget_user_period u ON u.community_id = $1 AND u.period = $2 AND u.user_id = $3",
            vec![period.to_string().into(), user.as_str().into()],
        ))
        .one(&self.txn)
        .await
        .map_err(store_error)?;
        let Some(row) = row else {
            return Ok((Counters::default(), UserSpend::default()));
        };
        let counters = match (
            row.committed_micros,
            row.reserved_micros,
            row.holds,
            row.warned,
        ) {
            (Some(committed_micros), Some(reserved_micros), Some(holds), Some(warned)) => {
                counters_from(CountersRow {
                    committed_micros,
                    reserved_micros,
                    holds,
                    warned,
                })?
            }
            _ => Counters::default(),
        };
        let spend = UserSpend {
            committed: read_micros("user committed", row.u_committed.unwrap_or_default())?,
            reserved: read_micros("user reserved", row.u_reserved.unwrap_or_default())?,
        };
        Ok((counters, spend))
    }

    async fn counters(&self, period: Period) -> Result<Counters, StoreError> {
        let row = CountersRow::find_by_statement(self.stmt(
            "SELECT committed_micros, reserved_micros, holds, warned FROM budget_period \
             WHERE community_id = $1 AND period = $2",
            vec![period.to_string().into()],
        ))
        .one(&self.txn)
        .await
        .map_err(store_error)?;
        row.map_or(Ok(Counters::default()), counters_from)
    }

    async fn user_spend(&self, period: Period, user: &UserId) -> Result<UserSpend, StoreError> {
        let row = UserRow::find_by_statement(self.stmt(
            "SELECT user_id, committed_micros, reserved_micros FROM budget_user_period \
             WHERE community_id = $1 AND period = $2 AND user_id = $3",
            vec![period.to_string().into(), user.as_str().into()],
        ))
        .one(&self.txn)
        .await
        .map_err(store_error)?;
        row.map_or(Ok(UserSpend::default()), |r| user_from(&r).map(|(_, s)| s))
    }

    /// Applies `writes` in order: as one statement of data-modifying CTEs on
    /// PostgreSQL (one round trip; the writes touch different rows), one by
    /// one on SQLite.
    async fn apply(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        if self.backend() == DbBackend::Postgres {
            let (sql, values) = combine(writes);
            return self.exec(&sql, values).await.map(drop);
        }
        for write in writes {
            self.exec(write.sql, write.values).await?;
        }
        Ok(())
    }

    async fn write_counters(&self, period: Period, c: Counters) -> Result<(), StoreError> {
        self.apply(vec![counters_write(period, c)?]).await
    }

    async fn write_user(
        &self,
        period: Period,
        user: &UserId,
        s: UserSpend,
    ) -> Result<(), StoreError> {
        self.apply(vec![user_write(period, user, s)]).await
    }

    /// Commits `actual` to the hold's period, releasing its estimate when
    /// `releases_hold`; every sum is checked before anything is written.
    async fn commit_cost(
        &self,
        hold: &Hold,
        actual: Micros,
        releases_hold: bool,
        limits: Option<Limits>,
        writes: &mut Vec<Write>,
    ) -> Result<Receipt, StoreError> {
        let (mut counters, user) = self.sums(hold.period, &hold.user).await?;
        let limit = limits.map_or(Micros::ZERO, |l| l.limit);
        let checked = || -> Result<(PeriodSums, UserSpend, Micros), MoneyError> {
            let (sums, user) =
                apply_settlement(counters.sums(), user, hold, actual, releases_hold)?;
            Ok((sums, user, sums.overshoot(limit)?))
        };
        let (sums, next_user, overshoot) = checked()
            .map_err(|e| StoreError::from_domain(self.community, BudgetError::Money(e)))?;
        counters.set_sums(sums);
        writes.push(counters_write(hold.period, counters)?);
        writes.push(user_write(hold.period, &hold.user, next_user));
        Ok(Receipt::for_hold(hold, actual, overshoot))
    }

    /// The finalize rule on what was found under the lock: releases a hold,
    /// commits late on a tombstone, answers a replay from a finalized
    /// marker, and commits the transaction when it wrote. `None` when
    /// neither a hold nor a live marker exists (nothing was written).
    async fn settle_found(
        self,
        found: Lookup,
        hold_ref: &HoldRef,
        actual: Micros,
        marker_expires: Timestamp,
    ) -> Result<Option<FinalizeOutcome>, StoreError> {
        let limits = found.limits;
        let mut writes = Vec::new();
        if let Some(hold) = found.hold {
            let receipt = self
                .commit_cost(&hold, actual, true, limits, &mut writes)
                .await?;
            writes.push(delete_hold_write(hold_ref));
            writes.push(settle_write(hold_ref, actual, marker_expires));
            self.apply(writes).await?;
            self.commit().await?;
            return Ok(Some(FinalizeOutcome::Finalized(receipt)));
        }
        match found.marker {
            Some(SettledAs::Finalized { actual }) => {
                Ok(Some(FinalizeOutcome::AlreadyFinalized { actual }))
            }
            Some(SettledAs::Reaped { hold }) => {
                let receipt = self
                    .commit_cost(&hold, actual, false, limits, &mut writes)
                    .await?;
                writes.push(settle_write(hold_ref, actual, marker_expires));
                self.apply(writes).await?;
                self.commit().await?;
                Ok(Some(FinalizeOutcome::LateFinalized(receipt)))
            }
            None => Ok(None),
        }
    }
}

/// One write statement; `$1` is the community, the values bind `$2` on.
struct Write {
    sql: &'static str,
    values: Vec<Value>,
}

/// Renumbers `$n` (n ≥ 2) by `offset`, leaving `$1` (the community).
fn renumber(sql: &str, offset: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch != '$' {
            out.push(ch);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
            digits.push(d);
            chars.next();
        }
        match digits.parse::<usize>() {
            Ok(n) if n >= 2 => out.push_str(&format!("${}", n + offset)),
            _ => {
                out.push('$');
                out.push_str(&digits);
            }
        }
    }
    out
}

/// `WITH w0 AS (first), w1 AS (second) last`, with the parameters of every
/// statement renumbered after those of the statements before it.
fn combine(writes: Vec<Write>) -> (String, Vec<Value>) {
    let count = writes.len();
    let mut sql = String::new();
    let mut values = Vec::new();
    for (i, write) in writes.into_iter().enumerate() {
        let part = renumber(write.sql, values.len());
        if i + 1 < count {
            sql.push_str(if i == 0 { "WITH " } else { ", " });
            sql.push_str(&format!("w{i} AS ({part})"));
        } else {
            if i > 0 {
                sql.push(' ');
            }
            sql.push_str(&part);
        }
        values.extend(write.values);
    }
    (sql, values)
}

fn counters_write(period: Period, c: Counters) -> Result<Write, StoreError> {
    Ok(Write {
        sql: "INSERT INTO budget_period (community_id, period, committed_micros, reserved_micros, holds, warned) \
              VALUES ($1, $2, $3, $4, $5, $6) \
              ON CONFLICT (community_id, period) DO UPDATE SET committed_micros = excluded.committed_micros, \
              reserved_micros = excluded.reserved_micros, holds = excluded.holds, warned = excluded.warned",
        values: vec![
            period.to_string().into(),
            c.committed.get().into(),
            c.reserved.get().into(),
            count_to_db(c.holds)?.into(),
            c.warned.into(),
        ],
    })
}

fn user_write(period: Period, user: &UserId, s: UserSpend) -> Write {
    Write {
        sql: "INSERT INTO budget_user_period (community_id, period, user_id, committed_micros, reserved_micros) \
              VALUES ($1, $2, $3, $4, $5) \
              ON CONFLICT (community_id, period, user_id) DO UPDATE SET \
              committed_micros = excluded.committed_micros, reserved_micros = excluded.reserved_micros",
        values: vec![
            period.to_string().into(),
            user.as_str().into(),
            s.committed.get().into(),
            s.reserved.get().into(),
        ],
    }
}

fn settle_write(hold_ref: &HoldRef, actual: Micros, expires_at: Timestamp) -> Write {
    Write {
        sql: "INSERT INTO budget_marker (community_id, user_id, idempotency_key, kind, actual_micros, expires_at) \
              VALUES ($1, $2, $3, 'finalized', $4, $5) \
              ON CONFLICT (community_id, user_id, idempotency_key) DO UPDATE SET kind = excluded.kind, \
              actual_micros = excluded.actual_micros, estimate_micros = NULL, model_alias = NULL, \
              period = NULL, created_at = NULL, hold_expires_at = NULL, expires_at = excluded.expires_at",
        values: vec![
            hold_ref.user.as_str().into(),
            hold_ref.key.as_str().into(),
            actual.get().into(),
            expires_at.as_millis().into(),
        ],
    }
}

fn delete_hold_write(hold_ref: &HoldRef) -> Write {
    Write {
        sql: "DELETE FROM budget_hold WHERE community_id = $1 AND user_id = $2 AND idempotency_key = $3",
        values: vec![hold_ref.user.as_str().into(), hold_ref.key.as_str().into()],
    }
}

fn limits_from(limit: Option<i64>, cap: Option<i64>) -> Result<Option<Limits>, StoreError> {
    let Some(limit) = limit else {
        return Ok(None);
    };
    let mut limits = Limits::new(read_micros("limit", limit)?);
    if let Some(cap) = cap {
        limits = limits.with_per_user_cap(read_micros("per-user cap", cap)?);
    }
    Ok(Some(limits))
}

fn counters_from(row: CountersRow) -> Result<Counters, StoreError> {
    Ok(Counters {
        committed: read_micros("committed", row.committed_micros)?,
        reserved: read_micros("reserved", row.reserved_micros)?,
        holds: read_count("holds", row.holds)?,
        warned: row.warned,
    })
}

fn user_from(row: &UserRow) -> Result<(UserId, UserSpend), StoreError> {
    Ok((
        UserId::parse(row.user_id.as_str()).map_err(|e| corrupt("user id", e))?,
        UserSpend {
            committed: read_micros("user committed", row.committed_micros)?,
            reserved: read_micros("user reserved", row.reserved_micros)?,
        },
    ))
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

#[async_trait]
impl BudgetStore for SqlBudgetStore {
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn reserve(
        &self,
        community: &CommunityId,
        reservation: &Reservation,
        now: Timestamp,
    ) -> Result<ReserveOutcome, StoreError> {
        let txn = self.begin(community).await?;
        let hold_ref = HoldRef {
            user: reservation.user.clone(),
            key: reservation.key.clone(),
        };
        let Some(found) = txn.lookup(&hold_ref, now).await? else {
            return Err(StoreError::NotConfigured(community.clone()));
        };
        if let Some(hold) = found.hold {
            return Ok(ReserveOutcome::AlreadyReserved { hold });
        }
        if found.marker.is_some() {
            return Ok(ReserveOutcome::AlreadySettled);
        }
        let limits = found
            .limits
            .ok_or_else(|| StoreError::NotConfigured(community.clone()))?;
        let period = Period::containing(now).map_err(|e| domain(community)(e.into()))?;
        let expires_at = now
            .plus(reservation.ttl)
            .map_err(|e| domain(community)(e.into()))?;
        let (mut counters, spend) = txn.sums(period, &reservation.user).await?;
        let estimate = reservation.estimate;
        let admission = admit(
            limits,
            counters.committed,
            counters.reserved,
            counters.warned,
            spend,
            estimate,
            self.policy,
        )
        .map_err(|e| domain(community)(money(e)))?;
        let (used_after, spend, warning) = match admission {
            Admission::Denied(outcome) => return Ok(outcome),
            Admission::Accepted {
                used_after,
                reserved,
                user,
                warning,
            } => {
                counters.reserved = reserved;
                (used_after, user, warning)
            }
        };
        counters.holds = counters
            .holds
            .checked_add(1)
            .ok_or_else(|| StoreError::Overflow("hold count".into()))?;
        counters.warned |= warning;
        txn.apply(vec![
            counters_write(period, counters)?,
            user_write(period, &reservation.user, spend),
            Write {
                sql: "INSERT INTO budget_hold (community_id, user_id, idempotency_key, estimate_micros, \
                      model_alias, period, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                values: vec![
                    reservation.user.as_str().into(),
                    reservation.key.as_str().into(),
                    estimate.get().into(),
                    reservation.model.as_str().into(),
                    period.to_string().into(),
                    now.as_millis().into(),
                    expires_at.as_millis().into(),
                ],
            },
        ])
        .await?;
        txn.commit().await?;
        Ok(ReserveOutcome::Reserved {
            remaining: limits.limit.headroom_after(used_after),
            limit: limits.limit,
            warning,
            expires_at,
        })
    }

    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn extend(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        ttl: Ttl,
        now: Timestamp,
    ) -> Result<ExtendOutcome, StoreError> {
        let wanted = now.plus(ttl).map_err(|e| domain(community)(e.into()))?;
        let txn = self.begin(community).await?;
        let Some(found) = txn.lookup(hold, now).await? else {
            return Err(unknown(hold));
        };
        match found.hold {
            Some(found) if found.is_live_at(now) => {
                let expires_at = found.expires_at.max(wanted);
                txn.exec(
                    "UPDATE budget_hold SET expires_at = $4 \
                     WHERE community_id = $1 AND user_id = $2 AND idempotency_key = $3",
                    vec![
                        hold.user.as_str().into(),
                        hold.key.as_str().into(),
                        expires_at.as_millis().into(),
                    ],
                )
                .await?;
                txn.commit().await?;
                Ok(ExtendOutcome::Extended { expires_at })
            }
            Some(_) => Ok(ExtendOutcome::NotLive),
            None if found.marker.is_some() => Ok(ExtendOutcome::NotLive),
            None => Err(unknown(hold)),
        }
    }

    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn finalize(
        &self,
        community: &CommunityId,
        settlement: &Settlement,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        let hold_ref = HoldRef {
            user: settlement.user.clone(),
            key: settlement.key.clone(),
        };
        let marker_expires = now
            .plus(self.policy.marker_ttl())
            .map_err(|e| domain(community)(e.into()))?;
        let txn = self.begin(community).await?;
        let Some(found) = txn.lookup(&hold_ref, now).await? else {
            return Err(unknown(&hold_ref));
        };
        txn.settle_found(found, &hold_ref, settlement.actual, marker_expires)
            .await?
            .ok_or_else(|| unknown(&hold_ref))
    }

    /// Locks the community row first (creating it, without limits, when
    /// the community has none), then reads the hold and marker in a later
    /// statement: see `Txn::lock_then_lookup`.
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn commit_unheld(
        &self,
        community: &CommunityId,
        commit: &UnheldCommit,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        let hold_ref = HoldRef {
            user: commit.user.clone(),
            key: commit.key.clone(),
        };
        let marker_expires = now
            .plus(self.policy.marker_ttl())
            .map_err(|e| domain(community)(e.into()))?;
        let txn = self.begin(community).await?;
        let found = txn.lock_then_lookup(&hold_ref, now).await?;
        let limits = found.limits;
        // Where a hold or marker exists it is exactly a finalize (the
        // hold's period wins); `settle_found` consumes the transaction, so
        // the check comes first.
        if found.hold.is_some() || found.marker.is_some() {
            return txn
                .settle_found(found, &hold_ref, commit.actual, marker_expires)
                .await?
                .ok_or_else(|| StoreError::Corrupt("found hold or marker vanished".into()));
        }
        // Nothing held: commit to the given period, releasing nothing.
        let unheld = commit.as_hold(now);
        let mut writes = Vec::new();
        let receipt = txn
            .commit_cost(&unheld, commit.actual, false, limits, &mut writes)
            .await?;
        writes.push(settle_write(&hold_ref, commit.actual, marker_expires));
        txn.apply(writes).await?;
        txn.commit().await?;
        Ok(FinalizeOutcome::CommittedWithoutHold(receipt))
    }

    async fn cancel(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        let settlement = Settlement {
            user: hold.user.clone(),
            key: hold.key.clone(),
            actual: Micros::ZERO,
        };
        self.finalize(community, &settlement, now).await
    }

    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn reap(&self, community: &CommunityId, now: Timestamp) -> Result<Reaped, StoreError> {
        let tombstone_expires = now
            .plus(self.policy.marker_ttl())
            .map_err(|e| domain(community)(e.into()))?;
        let txn = self.begin(community).await?;
        if txn.lock().await?.is_none() {
            return Ok(Reaped::default());
        }
        let expired = HoldRow::find_by_statement(txn.stmt(
            "SELECT user_id, idempotency_key, estimate_micros, model_alias, period, created_at, expires_at \
             FROM budget_hold WHERE community_id = $1 AND expires_at <= $2",
            vec![now.as_millis().into()],
        ))
        .all(&txn.txn)
        .await
        .map_err(store_error)?
        .into_iter()
        .map(HoldRow::into_hold)
        .collect::<Result<Vec<_>, _>>()?;

        // Stage every touched period and user, checked, before any write.
        let mut periods: std::collections::BTreeMap<Period, Counters> = Default::default();
        let mut users: std::collections::BTreeMap<(Period, UserId), UserSpend> = Default::default();
        let mut reaped = Reaped::default();
        for hold in &expired {
            if let std::collections::btree_map::Entry::Vacant(slot) = periods.entry(hold.period) {
                slot.insert(txn.counters(hold.period).await?);
            }
            let user_key = (hold.period, hold.user.clone());
            if let std::collections::btree_map::Entry::Vacant(slot) = users.entry(user_key.clone())
            {
                slot.insert(txn.user_spend(hold.period, &hold.user).await?);
            }
            let (Some(c), Some(u)) = (periods.get_mut(&hold.period), users.get_mut(&user_key))
            else {
                return Err(StoreError::Corrupt("staged counters vanished".into()));
            };
            let (sums, user) = apply_settlement(c.sums(), *u, hold, Micros::ZERO, true)
                .map_err(|e| domain(community)(money(e)))?;
            c.set_sums(sums);
            *u = user;
            reaped.count += 1;
            reaped.reclaimed = reaped
                .reclaimed
                .checked_add(hold.estimate)
                .map_err(|e| domain(community)(money(e)))?;
        }
        for (period, counters) in periods {
            txn.write_counters(period, counters).await?;
        }
        for ((period, user), spend) in users {
            txn.write_user(period, &user, spend).await?;
        }
        // Markers expired at `now` count as absent already; delete a bounded
        // batch of them before the tombstones may replace some.
        txn.exec(
            "DELETE FROM budget_marker WHERE (community_id, user_id, idempotency_key) IN ( \
               SELECT community_id, user_id, idempotency_key FROM budget_marker \
               WHERE community_id = $1 AND expires_at <= $2 LIMIT $3)",
            vec![
                now.as_millis().into(),
                i64::from(MARKER_CLEANUP_BATCH).into(),
            ],
        )
        .await?;
        if !expired.is_empty() {
            txn.exec(
                "INSERT INTO budget_marker (community_id, user_id, idempotency_key, kind, actual_micros, \
                   estimate_micros, model_alias, period, created_at, hold_expires_at, expires_at) \
                 SELECT community_id, user_id, idempotency_key, 'reaped', NULL, estimate_micros, \
                   model_alias, period, created_at, expires_at, $3 \
                 FROM budget_hold WHERE community_id = $1 AND expires_at <= $2 \
                 ON CONFLICT (community_id, user_id, idempotency_key) DO UPDATE SET kind = excluded.kind, \
                   actual_micros = NULL, estimate_micros = excluded.estimate_micros, \
                   model_alias = excluded.model_alias, period = excluded.period, \
                   created_at = excluded.created_at, hold_expires_at = excluded.hold_expires_at, \
                   expires_at = excluded.expires_at",
                vec![now.as_millis().into(), tombstone_expires.as_millis().into()],
            )
            .await?;
            let deleted = txn
                .exec(
                    "DELETE FROM budget_hold WHERE community_id = $1 AND expires_at <= $2",
                    vec![now.as_millis().into()],
                )
                .await?;
            if deleted != reaped.count {
                return Err(StoreError::Corrupt(format!(
                    "reaped {} holds but deleted {deleted}",
                    reaped.count
                )));
            }
        }
        txn.commit().await?;
        Ok(reaped)
    }

    /// One round trip: the limits, the period's counters and its users' sums
    /// as rows of one `UNION ALL`.
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn status(
        &self,
        community: &CommunityId,
        period: Period,
    ) -> Result<BudgetStatus, StoreError> {
        let stmt = Statement::from_sql_and_values(
            self.db.get_database_backend(),
            "SELECT 'l' AS kind, CAST(NULL AS TEXT) AS user_id, CAST(limit_micros AS BIGINT) AS a, \
               CAST(per_user_cap_micros AS BIGINT) AS b, CAST(NULL AS BIGINT) AS c, CAST(NULL AS BIGINT) AS d \
               FROM budget_community WHERE community_id = $1 \
             UNION ALL SELECT 'p', CAST(NULL AS TEXT), CAST(committed_micros AS BIGINT), \
               CAST(reserved_micros AS BIGINT), CAST(holds AS BIGINT), \
               CAST(CASE WHEN warned THEN 1 ELSE 0 END AS BIGINT) \
               FROM budget_period WHERE community_id = $1 AND period = $2 \
             UNION ALL SELECT 'u', CAST(user_id AS TEXT), CAST(committed_micros AS BIGINT), \
               CAST(reserved_micros AS BIGINT), CAST(NULL AS BIGINT), CAST(NULL AS BIGINT) \
               FROM budget_user_period WHERE community_id = $1 AND period = $2 \
               AND (committed_micros > 0 OR reserved_micros > 0)",
            [community.as_str().into(), period.to_string().into()],
        );
        let rows = StatusRow::find_by_statement(stmt)
            .all(&self.db)
            .await
            .map_err(store_error)?;
        let mut status = BudgetStatus {
            period,
            limits: None,
            committed: Micros::ZERO,
            reserved: Micros::ZERO,
            holds: 0,
            warned: false,
            users: Default::default(),
        };
        for row in rows {
            match row.kind.as_str() {
                "l" => status.limits = limits_from(row.a, row.b)?,
                "p" => {
                    let c = counters_from(CountersRow {
                        committed_micros: row.a.unwrap_or_default(),
                        reserved_micros: row.b.unwrap_or_default(),
                        holds: row.c.unwrap_or_default(),
                        warned: row.d.unwrap_or_default() != 0,
                    })?;
                    (
                        status.committed,
                        status.reserved,
                        status.holds,
                        status.warned,
                    ) = (c.committed, c.reserved, c.holds, c.warned);
                }
                _ => {
                    let (user, spend) = user_from(&UserRow {
                        user_id: row.user_id.unwrap_or_default(),
                        committed_micros: row.a.unwrap_or_default(),
                        reserved_micros: row.b.unwrap_or_default(),
                    })?;
                    status.users.insert(user, spend);
                }
            }
        }
        Ok(status)
    }

    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn set_limits(&self, community: &CommunityId, limits: Limits) -> Result<(), StoreError> {
        let stmt = Statement::from_sql_and_values(
            self.db.get_database_backend(),
            "INSERT INTO budget_community (community_id, limit_micros, per_user_cap_micros) VALUES ($1, $2, $3) \
             ON CONFLICT (community_id) DO UPDATE SET limit_micros = excluded.limit_micros, \
             per_user_cap_micros = excluded.per_user_cap_micros",
            [
                community.as_str().into(),
                limits.limit.get().into(),
                limits.per_user_cap.map(Micros::get).into(),
            ],
        );
        self.db.execute_raw(stmt).await.map_err(store_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_writes_number_their_parameters_after_the_community() {
        let writes = vec![
            Write {
                sql: "INSERT INTO a VALUES ($1, $2, $3)",
                values: vec![2.into(), 3.into()],
            },
            Write {
                sql: "DELETE FROM b WHERE c = $1 AND d = $2",
                values: vec![4.into()],
            },
            Write {
                sql: "INSERT INTO e VALUES ($1, $2, $3, $10)",
                values: vec![5.into(), 6.into()],
            },
        ];
        let (sql, values) = combine(writes);
        assert_eq!(
            sql,
            "WITH w0 AS (INSERT INTO a VALUES ($1, $2, $3)), \
             w1 AS (DELETE FROM b WHERE c = $1 AND d = $4) \
             INSERT INTO e VALUES ($1, $5, $6, $13)"
        );
        assert_eq!(values.len(), 5);
        let single = combine(vec![Write {
            sql: "DELETE FROM x WHERE y = $1 AND z = $2",
            values: vec![1.into()],
        }]);
        assert_eq!(single.0, "DELETE FROM x WHERE y = $1 AND z = $2");
    }
}
