//! The write statements, as [`Write`]s that [`super::txn::Txn::apply`]
//! runs in order (on PostgreSQL combined into one statement of
//! data-modifying CTEs).

use sea_orm::Value;
use spendgate_domain::{HoldRef, Micros, Period, PeriodSums, Timestamp, UserId, UserSpend};
use spendgate_ports::StoreError;

use super::rows::count_to_db;

/// One write statement; `$1` is the community, the values bind `$2` on.
pub(super) struct Write {
    pub(super) sql: &'static str,
    pub(super) values: Vec<Value>,
}

/// Renumbers `$n` (n ≥ 2) by `offset`, leaving `$1` (the community).
/// Text inside single-quoted literals (`'…'`, with `''` as an escaped
/// quote) is copied unchanged. The statements are this module's own
/// constants: no caller text ever reaches here.
pub(super) fn renumber(sql: &str, offset: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.chars().peekable();
    let mut in_literal = false;
    while let Some(ch) = chars.next() {
        if ch == '\'' {
            // `''` inside a literal toggles twice: still inside.
            in_literal = !in_literal;
        }
        if ch != '$' || in_literal {
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
pub(super) fn combine(writes: Vec<Write>) -> (String, Vec<Value>) {
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

pub(super) fn user_write(period: Period, user: &UserId, s: UserSpend) -> Write {
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

    #[test]
    fn renumbering_leaves_string_literals_alone() {
        assert_eq!(
            renumber("SELECT '$2 it''s $3', $2, 'x' || $3", 10),
            "SELECT '$2 it''s $3', $12, 'x' || $13"
        );
    }
}
