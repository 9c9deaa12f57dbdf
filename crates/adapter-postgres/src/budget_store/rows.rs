//! The rows the store reads, and their checked conversion to domain
//! values: anything out of range is [`StoreError::Corrupt`], never
//! trusted.

use sea_orm::FromQueryResult;
use spendgate_domain::{
    Hold, HoldRef, IdempotencyKey, Limits, Micros, ModelAlias, Period, PeriodSums, SettledAs,
    Timestamp, UserId, UserSpend,
};
use spendgate_ports::StoreError;

use super::corrupt;

pub(super) fn read_micros(what: &str, value: i64) -> Result<Micros, StoreError> {
    Micros::new(value).map_err(|e| corrupt(what, e))
}

pub(super) fn read_count(what: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|e| corrupt(what, e))
}

pub(super) fn read_time(what: &str, value: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_millis(value).map_err(|e| corrupt(what, e))
}

pub(super) fn count_to_db(count: u64) -> Result<i64, StoreError> {
    i64::try_from(count).map_err(|_| StoreError::Overflow("hold count".into()))
}

#[derive(Debug, FromQueryResult)]
pub(super) struct LimitsRow {
    pub(super) limit_micros: Option<i64>,
    pub(super) per_user_cap_micros: Option<i64>,
}

#[derive(Debug, FromQueryResult)]
pub(super) struct CountersRow {
    pub(super) committed_micros: i64,
    pub(super) reserved_micros: i64,
    pub(super) holds: i64,
    pub(super) warned: bool,
}

#[derive(Debug, FromQueryResult)]
pub(super) struct UserRow {
    pub(super) user_id: String,
    pub(super) committed_micros: i64,
    pub(super) reserved_micros: i64,
}

/// The community row (locked), the hold and its live marker, in one
/// round trip.
#[derive(Debug, FromQueryResult)]
pub(super) struct LookupRow {
    pub(super) limit_micros: Option<i64>,
    pub(super) per_user_cap_micros: Option<i64>,
    pub(super) h_estimate: Option<i64>,
    pub(super) h_model: Option<String>,
    pub(super) h_period: Option<String>,
    pub(super) h_created: Option<i64>,
    pub(super) h_expires: Option<i64>,
    pub(super) m_kind: Option<String>,
    pub(super) m_actual: Option<i64>,
    pub(super) m_estimate: Option<i64>,
    pub(super) m_model: Option<String>,
    pub(super) m_period: Option<String>,
    pub(super) m_created: Option<i64>,
    pub(super) m_hold_expires: Option<i64>,
}

/// What a write needs to know about one (user, key), read under the lock.
pub(super) struct Lookup {
    pub(super) limits: Option<Limits>,
    pub(super) hold: Option<Hold>,
    pub(super) marker: Option<SettledAs>,
}

#[derive(Debug, FromQueryResult)]
pub(super) struct SumsRow {
    pub(super) committed_micros: Option<i64>,
    pub(super) reserved_micros: Option<i64>,
    pub(super) holds: Option<i64>,
    pub(super) warned: Option<bool>,
    pub(super) u_committed: Option<i64>,
    pub(super) u_reserved: Option<i64>,
}

#[derive(Debug, FromQueryResult)]
pub(super) struct StatusRow {
    pub(super) kind: String,
    pub(super) user_id: Option<String>,
    pub(super) a: Option<i64>,
    pub(super) b: Option<i64>,
    pub(super) c: Option<i64>,
    pub(super) d: Option<i64>,
}

#[derive(Debug, FromQueryResult)]
pub(super) struct HoldRow {
    pub(super) user_id: String,
    pub(super) idempotency_key: String,
    pub(super) estimate_micros: i64,
    pub(super) model_alias: String,
    pub(super) period: String,
    pub(super) created_at: i64,
    pub(super) expires_at: i64,
}

#[derive(Debug, FromQueryResult)]
pub(super) struct MarkerRow {
    pub(super) kind: String,
    pub(super) actual_micros: Option<i64>,
    pub(super) estimate_micros: Option<i64>,
    pub(super) model_alias: Option<String>,
    pub(super) period: Option<String>,
    pub(super) created_at: Option<i64>,
    pub(super) hold_expires_at: Option<i64>,
}

impl HoldRow {
    pub(super) fn into_hold(self) -> Result<Hold, StoreError> {
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
    pub(super) fn into_settled(self, hold_ref: &HoldRef) -> Result<SettledAs, StoreError> {
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
    pub(super) fn into_found(
        self,
        hold_ref: &HoldRef,
    ) -> Result<(Option<Hold>, Option<SettledAs>), StoreError> {
        let hold = found_hold(
            hold_ref,
            self.h_estimate,
            self.h_model,
            self.h_period,
            self.h_created,
            self.h_expires,
        )?;
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

/// The hold of `hold_ref` from the columns of a row that carries one
/// when its (NOT NULL) columns are there, checked.
pub(super) fn found_hold(
    hold_ref: &HoldRef,
    estimate: Option<i64>,
    model: Option<String>,
    period: Option<String>,
    created: Option<i64>,
    expires: Option<i64>,
) -> Result<Option<Hold>, StoreError> {
    let (
        Some(estimate_micros),
        Some(model_alias),
        Some(period),
        Some(created_at),
        Some(expires_at),
    ) = (estimate, model, period, created, expires)
    else {
        return Ok(None);
    };
    HoldRow {
        user_id: hold_ref.user.to_string(),
        idempotency_key: hold_ref.key.to_string(),
        estimate_micros,
        model_alias,
        period,
        created_at,
        expires_at,
    }
    .into_hold()
    .map(Some)
}

pub(super) fn limits_from(
    limit: Option<i64>,
    cap: Option<i64>,
) -> Result<Option<Limits>, StoreError> {
    let Some(limit) = limit else {
        return Ok(None);
    };
    let mut limits = Limits::new(read_micros("limit", limit)?);
    if let Some(cap) = cap {
        limits = limits.with_per_user_cap(read_micros("per-user cap", cap)?);
    }
    Ok(Some(limits))
}

pub(super) fn counters_from(row: CountersRow) -> Result<PeriodSums, StoreError> {
    Ok(PeriodSums {
        committed: read_micros("committed", row.committed_micros)?,
        reserved: read_micros("reserved", row.reserved_micros)?,
        holds: read_count("holds", row.holds)?,
        warned: row.warned,
    })
}

pub(super) fn user_from(row: &UserRow) -> Result<(UserId, UserSpend), StoreError> {
    Ok((
        UserId::parse(row.user_id.as_str()).map_err(|e| corrupt("user id", e))?,
        UserSpend {
            committed: read_micros("user committed", row.committed_micros)?,
            reserved: read_micros("user reserved", row.reserved_micros)?,
        },
    ))
}
