//! The write statements of the Rust transactions, as [`Write`]s that
//! [`super::txn::Txn::apply`] runs in order, one statement each: every
//! value is a bound parameter, no text is ever spliced into the SQL.

use sea_orm::Value;
use spendgate_domain::{HoldRef, Micros, Period, PeriodSums, Timestamp, UserId, UserSpend};
use spendgate_ports::StoreError;

use super::rows::count_to_db;

/// One write statement; `$1` is the community, the values bind `$2` on.
pub(super) struct Write {
    pub(super) sql: &'static str,
    pub(super) values: Vec<Value>,
}

pub(super) fn counters_write(period: Period, c: PeriodSums) -> Result<Write, StoreError> {
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

/// A user's sums in a period; sums that are both zero keep no row (as the
/// model keeps no entry), so a reserve of estimate 0 adds no user.
pub(super) fn user_write(period: Period, user: &UserId, s: UserSpend) -> Write {
    let keys = vec![period.to_string().into(), user.as_str().into()];
    if s == UserSpend::default() {
        return Write {
            sql: "DELETE FROM budget_user_period WHERE community_id = $1 AND period = $2 AND user_id = $3",
            values: keys,
        };
    }
    let mut values = keys;
    values.extend([s.committed.get().into(), s.reserved.get().into()]);
    Write {
        sql: "INSERT INTO budget_user_period (community_id, period, user_id, committed_micros, reserved_micros) \
              VALUES ($1, $2, $3, $4, $5) \
              ON CONFLICT (community_id, period, user_id) DO UPDATE SET \
              committed_micros = excluded.committed_micros, reserved_micros = excluded.reserved_micros",
        values,
    }
}

pub(super) fn settle_write(hold_ref: &HoldRef, actual: Micros, expires_at: Timestamp) -> Write {
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

pub(super) fn delete_hold_write(hold_ref: &HoldRef) -> Write {
    Write {
        sql: "DELETE FROM budget_hold WHERE community_id = $1 AND user_id = $2 AND idempotency_key = $3",
        values: vec![hold_ref.user.as_str().into(), hold_ref.key.as_str().into()],
    }
}
