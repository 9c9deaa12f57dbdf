//! The idempotent usage log: [`UsageLog`] on `agent_usage_log`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    FromQueryResult, QueryFilter, QueryOrder, Statement,
};
use spendgate_domain::{
    CommunityId, HoldRef, IdempotencyKey, Micros, ModelAlias, Period, Timestamp, TokenCounts,
    UserId,
};
use spendgate_ports::{CostSource, RepoError, UsageLog, UsageRecord};

use crate::entity::agent_usage_log::{ActiveModel, Column, Entity, Model};
use crate::error::repo_error;
use crate::transaction::begin_write;

/// Rows per `INSERT` statement: 13 bound values each keeps a statement well
/// under both PostgreSQL's (65,535) and SQLite's (32,766) parameter limits.
pub const ROWS_PER_STATEMENT: usize = 1_000;

/// The longest trace id stored, in bytes.
pub const MAX_TRACE_ID_LEN: usize = 256;

/// Appends to and sums `agent_usage_log`.
#[derive(Debug, Clone)]
pub struct SqlUsageLog {
    db: DatabaseConnection,
}

/// `value` as a `BIGINT`, or [`RepoError::InvalidInput`] naming `field`.
pub(crate) fn to_i64(field: &str, value: u64) -> Result<i64, RepoError> {
    i64::try_from(value)
        .map_err(|_| RepoError::InvalidInput(format!("{field} {value} exceeds the BIGINT range")))
}

/// Refuses a trace id longer than [`MAX_TRACE_ID_LEN`] bytes.
pub(crate) fn check_trace_id(trace_id: Option<&str>) -> Result<(), RepoError> {
    match trace_id {
        Some(trace) if trace.len() > MAX_TRACE_ID_LEN => Err(RepoError::InvalidInput(format!(
            "trace id is {} bytes; at most {MAX_TRACE_ID_LEN} are stored",
            trace.len()
        ))),
        _ => Ok(()),
    }
}

/// Reads the columns shared by `agent_usage_log` and `finalize_outbox` back
/// into domain values; every refusal is a [`RepoError::BadData`] naming the
/// community and `table.column`.
pub(crate) struct RowReader<'a> {
    community: &'a str,
    table: &'static str,
}

impl<'a> RowReader<'a> {
    pub(crate) fn new(community: &'a str, table: &'static str) -> Self {
        Self { community, table }
    }

    pub(crate) fn bad(&self, column: &str, reason: impl ToString) -> RepoError {
        RepoError::BadData {
            community: self.community.to_owned(),
            field: format!("{}.{column}", self.table),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn community(&self) -> Result<CommunityId, RepoError> {
        CommunityId::parse(self.community).map_err(|e| self.bad("community_id", e))
    }

    pub(crate) fn user(&self, text: String) -> Result<UserId, RepoError> {
        UserId::parse(text).map_err(|e| self.bad("user_id", e))
    }

    pub(crate) fn key(&self, text: String) -> Result<IdempotencyKey, RepoError> {
        IdempotencyKey::parse(text).map_err(|e| self.bad("idempotency_key", e))
    }

    pub(crate) fn model(&self, text: String) -> Result<ModelAlias, RepoError> {
        ModelAlias::parse(text).map_err(|e| self.bad("model_alias", e))
    }

    pub(crate) fn period(&self, text: &str) -> Result<Period, RepoError> {
        Period::parse(text).map_err(|e| self.bad("period", e))
    }

    pub(crate) fn micros(&self, column: &str, value: i64) -> Result<Micros, RepoError> {
        Micros::new(value).map_err(|e| self.bad(column, e))
    }

    pub(crate) fn tokens(&self, prompt: i64, completion: i64) -> Result<TokenCounts, RepoError> {
        let count = |column: &str, value: i64| {
            u64::try_from(value).map_err(|_| self.bad(column, format!("{value} is negative")))
        };
        Ok(TokenCounts {
            prompt: count("prompt_tokens", prompt)?,
            completion: count("completion_tokens", completion)?,
        })
    }

    pub(crate) fn trace_id(&self, trace_id: Option<String>) -> Result<Option<String>, RepoError> {
        check_trace_id(trace_id.as_deref())
            .map_err(|_| self.bad("trace_id", format!("longer than {MAX_TRACE_ID_LEN} bytes")))?;
        Ok(trace_id)
    }

    pub(crate) fn source(&self, text: &str) -> Result<CostSource, RepoError> {
        [
            CostSource::Finalize,
            CostSource::LateFinalize,
            CostSource::Reconciliation,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| self.bad("source", format!("unknown source {text:?}")))
    }

    pub(crate) fn timestamp(&self, column: &str, ms: i64) -> Result<Timestamp, RepoError> {
        Timestamp::from_millis(ms).map_err(|e| self.bad(column, e))
    }
}

/// A logged row as a [`UsageRecord`], refusing anything the domain would
/// not accept.
fn parse_record(model: Model) -> Result<UsageRecord, RepoError> {
    let read = RowReader::new(&model.community_id, "agent_usage_log");
    Ok(UsageRecord {
        community: read.community()?,
        user: read.user(model.user_id)?,
        key: read.key(model.idempotency_key)?,
        model: read.model(model.model_alias)?,
        tokens: read.tokens(model.prompt_tokens, model.completion_tokens)?,
        cost: read.micros("cost_micros", model.cost_micros)?,
        estimate: read.micros("estimated_cost_micros", model.estimated_cost_micros)?,
        trace_id: read.trace_id(model.trace_id)?,
        source: read.source(&model.source)?,
        period: read.period(&model.period)?,
        created_at: read.timestamp("created_at", model.created_at)?,
        hold_created_at: read.timestamp("hold_created_at", model.hold_created_at)?,
    })
}

fn row(record: &UsageRecord) -> Result<ActiveModel, RepoError> {
    check_trace_id(record.trace_id.as_deref())?;
    Ok(ActiveModel {
        id: NotSet,
        community_id: Set(record.community.to_string()),
        user_id: Set(record.user.to_string()),
        model_alias: Set(record.model.to_string()),
        prompt_tokens: Set(to_i64("prompt tokens", record.tokens.prompt)?),
        completion_tokens: Set(to_i64("completion tokens", record.tokens.completion)?),
        cost_micros: Set(record.cost.get()),
        estimated_cost_micros: Set(record.estimate.get()),
        idempotency_key: Set(record.key.to_string()),
        trace_id: Set(record.trace_id.clone()),
        source: Set(record.source.as_str().to_owned()),
        period: Set(record.period.to_string()),
        created_at: Set(record.created_at.as_millis()),
        hold_created_at: Set(record.hold_created_at.as_millis()),
    })
}

/// One `INSERT … ON CONFLICT (community_id, user_id, idempotency_key) DO
/// NOTHING`; returns how many rows were new.
async fn insert_ignoring_duplicates<C: ConnectionTrait>(
    db: &C,
    rows: Vec<ActiveModel>,
) -> Result<u64, RepoError> {
    Entity::insert_many(rows)
        .on_conflict(
            OnConflict::columns([
                Column::CommunityId,
                Column::UserId,
                Column::IdempotencyKey,
                Column::HoldCreatedAt,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(db)
        .await
        .map_err(repo_error)
}

#[derive(Debug, FromQueryResult)]
struct Total {
    total: String,
}

impl SqlUsageLog {
    /// A usage log on `db` (migrated).
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[async_trait]
impl UsageLog for SqlUsageLog {
    /// Validates every record first (nothing is written if one is refused),
    /// then inserts them sorted by (community, user, key) in one
    /// transaction, [`ROWS_PER_STATEMENT`] rows per `INSERT … ON CONFLICT DO
    /// NOTHING`. The fixed order keeps concurrent overlapping batches from
    /// deadlocking on PostgreSQL; on SQLite the transaction is `IMMEDIATE`.
    #[tracing::instrument(skip_all, err, fields(records = records.len()))]
    async fn append(&self, records: &[UsageRecord]) -> Result<u64, RepoError> {
        if records.is_empty() {
            return Ok(0);
        }
        let mut sorted: Vec<&UsageRecord> = records.iter().collect();
        sorted.sort_by(|a, b| {
            (&a.community, &a.user, &a.key, a.hold_created_at).cmp(&(
                &b.community,
                &b.user,
                &b.key,
                b.hold_created_at,
            ))
        });
        let rows = sorted.into_iter().map(row).collect::<Result<Vec<_>, _>>()?;
        if rows.len() <= ROWS_PER_STATEMENT {
            // One statement is atomic on its own: no BEGIN / COMMIT round trips.
            return insert_ignoring_duplicates(&self.db, rows).await;
        }
        let txn = begin_write(&self.db).await.map_err(repo_error)?;
        let mut inserted = 0_u64;
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<ActiveModel> = rows.by_ref().take(ROWS_PER_STATEMENT).collect();
            inserted += insert_ignoring_duplicates(&txn, chunk).await?;
        }
        txn.commit().await.map_err(repo_error)?;
        Ok(inserted)
    }

    /// One `SELECT` on the unique (community_id, user_id, idempotency_key,
    /// hold_created_at) index (a key has a handful of uses at most); the
    /// row is parsed strictly.
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn logged(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        since: Timestamp,
    ) -> Result<Option<UsageRecord>, RepoError> {
        Entity::find()
            .filter(Column::CommunityId.eq(community.as_str()))
            .filter(Column::UserId.eq(hold.user.as_str()))
            .filter(Column::IdempotencyKey.eq(hold.key.as_str()))
            .filter(Column::CreatedAt.gte(since.as_millis()))
            .order_by_desc(Column::CreatedAt)
            .one(&self.db)
            .await
            .map_err(repo_error)?
            .map(parse_record)
            .transpose()
    }

    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn logged_use(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        hold_created_at: Timestamp,
    ) -> Result<Option<UsageRecord>, RepoError> {
        Entity::find()
            .filter(Column::CommunityId.eq(community.as_str()))
            .filter(Column::UserId.eq(hold.user.as_str()))
            .filter(Column::IdempotencyKey.eq(hold.key.as_str()))
            .filter(
                Condition::any()
                    .add(Column::HoldCreatedAt.eq(hold_created_at.as_millis()))
                    .add(
                        Condition::all()
                            .add(Column::HoldCreatedAt.eq(0_i64))
                            .add(Column::CreatedAt.gte(hold_created_at.as_millis())),
                    ),
            )
            .order_by_desc(Column::HoldCreatedAt)
            .one(&self.db)
            .await
            .map_err(repo_error)?
            .map(parse_record)
            .transpose()
    }

    #[tracing::instrument(skip_all, err, fields(community = %community, period = %period))]
    async fn total_cost(
        &self,
        community: &CommunityId,
        period: Period,
    ) -> Result<Micros, RepoError> {
        let backend = self.db.get_database_backend();
        // PostgreSQL sums BIGINT into NUMERIC (exact, never overflows); SQLite
        // raises "integer overflow". Either way the sum comes back as text and
        // is range-checked here.
        let sql = "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS TEXT) AS total \
                   FROM agent_usage_log WHERE community_id = $1 AND period = $2";
        let stmt = Statement::from_sql_and_values(
            backend,
            sql,
            [community.as_str().into(), period.to_string().into()],
        );
        let out_of_range = |reason: String| RepoError::BadData {
            community: community.to_string(),
            field: "agent_usage_log.cost_micros".into(),
            reason,
        };
        let total = match Total::find_by_statement(stmt).one(&self.db).await {
            Ok(row) => row.map_or_else(|| "0".to_owned(), |r| r.total),
            Err(e)
                if backend == DbBackend::Sqlite && e.to_string().contains("integer overflow") =>
            {
                return Err(out_of_range(format!("sum for {period} overflows: {e}")));
            }
            Err(e) => return Err(repo_error(e)),
        };
        let micros = total.parse::<i64>().map_err(|_| {
            out_of_range(format!(
                "sum {total} for {period} is outside the micro-USD range"
            ))
        })?;
        Micros::new(micros).map_err(|e| out_of_range(e.to_string()))
    }

    async fn committed_by_user(
        &self,
        community: &CommunityId,
        period: Period,
    ) -> Result<BTreeMap<UserId, Micros>, RepoError> {
        let backend = self.db.get_database_backend();
        let sql = "SELECT user_id, CAST(SUM(cost_micros) AS TEXT) AS total \
                   FROM agent_usage_log WHERE community_id = $1 AND period = $2 \
                   GROUP BY user_id";
        let stmt = Statement::from_sql_and_values(
            backend,
            sql,
            [community.as_str().into(), period.to_string().into()],
        );
        let bad = |field: &str, reason: String| RepoError::BadData {
            community: community.to_string(),
            field: format!("agent_usage_log.{field}"),
            reason,
        };
        let rows = match UserTotal::find_by_statement(stmt).all(&self.db).await {
            Ok(rows) => rows,
            Err(e)
                if backend == DbBackend::Sqlite && e.to_string().contains("integer overflow") =>
            {
                return Err(bad(
                    "cost_micros",
                    format!("sum for {period} overflows: {e}"),
                ));
            }
            Err(e) => return Err(repo_error(e)),
        };
        let mut sums = BTreeMap::new();
        for row in rows {
            let user = UserId::parse(&row.user_id).map_err(|e| bad("user_id", e.to_string()))?;
            let micros = row
                .total
                .parse::<i64>()
                .map_err(|_| bad("cost_micros", format!("sum {} is out of range", row.total)))
                .and_then(|m| Micros::new(m).map_err(|e| bad("cost_micros", e.to_string())))?;
            sums.insert(user, micros);
        }
        Ok(sums)
    }
}

/// One user's summed cost in a period.
#[derive(Debug, FromQueryResult)]
struct UserTotal {
    user_id: String,
    total: String,
}
