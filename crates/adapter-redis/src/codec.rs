//! Reading script replies and stored records back into domain types.

use redis::Value;
use spendgate_domain::{
    Hold, HoldRef, HoldState, IdempotencyKey, Limits, Micros, ModelAlias, Period, SettledAs,
    Timestamp, UserId, UserSpend,
};
use spendgate_ports::{BudgetStatus, StoreError};

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("unexpected {what} in script reply"))
}

/// A script reply: a flat array.
pub(crate) struct Reply(Vec<Value>);

impl Reply {
    pub(crate) fn new(value: Value) -> Result<Self, StoreError> {
        match value {
            Value::Array(items) => Ok(Self(items)),
            _ => Err(corrupt("reply shape")),
        }
    }

    fn get(&self, index: usize, what: &str) -> Result<&Value, StoreError> {
        self.0.get(index).ok_or_else(|| corrupt(what))
    }

    /// The outcome code in the first slot.
    pub(crate) fn code(&self) -> Result<i64, StoreError> {
        self.int(0, "outcome code")
    }

    pub(crate) fn int(&self, index: usize, what: &str) -> Result<i64, StoreError> {
        match self.get(index, what)? {
            Value::Int(n) => Ok(*n),
            Value::BulkString(bytes) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| corrupt(what)),
            _ => Err(corrupt(what)),
        }
    }

    pub(crate) fn text(&self, index: usize, what: &str) -> Result<String, StoreError> {
        match self.get(index, what)? {
            Value::BulkString(bytes) => String::from_utf8(bytes.clone()).map_err(|_| corrupt(what)),
            Value::SimpleString(s) => Ok(s.clone()),
            Value::Int(n) => Ok(n.to_string()),
            _ => Err(corrupt(what)),
        }
    }

    pub(crate) fn micros(&self, index: usize, what: &str) -> Result<Micros, StoreError> {
        Micros::new(self.int(index, what)?).map_err(|_| corrupt(what))
    }

    pub(crate) fn timestamp(&self, index: usize, what: &str) -> Result<Timestamp, StoreError> {
        Timestamp::from_millis(self.int(index, what)?).map_err(|_| corrupt(what))
    }

    pub(crate) fn period(&self, index: usize, what: &str) -> Result<Period, StoreError> {
        Period::parse(&self.text(index, what)?).map_err(|_| corrupt(what))
    }

    pub(crate) fn model(&self, index: usize, what: &str) -> Result<ModelAlias, StoreError> {
        ModelAlias::parse(self.text(index, what)?).map_err(|_| corrupt(what))
    }

    pub(crate) fn into_items(self) -> Vec<Value> {
        self.0
    }
}

fn stored_corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("stored {what} unreadable"))
}

fn parse_micros(text: &str, what: &str) -> Result<Micros, StoreError> {
    text.parse::<i64>()
        .ok()
        .and_then(|n| Micros::new(n).ok())
        .ok_or_else(|| stored_corrupt(what))
}

/// A live hold record
/// `H<estimate> <created_at> <expires_at> <period> <user> <model>`. The key
/// is the caller's: the record is found by the digest of (user, key).
pub(crate) fn hold(record: &str, key: &IdempotencyKey) -> Result<Hold, StoreError> {
    let body = record
        .strip_prefix('H')
        .ok_or_else(|| stored_corrupt("hold"))?;
    let mut parts = body.split(' ');
    let mut next = || parts.next().ok_or_else(|| stored_corrupt("hold"));
    let estimate = parse_micros(next()?, "hold estimate")?;
    let created_at = parse_timestamp(next()?, "hold created_at")?;
    let expires_at = parse_timestamp(next()?, "hold expires_at")?;
    let period = Period::parse(next()?).map_err(|_| stored_corrupt("hold period"))?;
    let user = UserId::parse(next()?).map_err(|_| stored_corrupt("hold user"))?;
    let model = ModelAlias::parse(next()?).map_err(|_| stored_corrupt("hold model"))?;
    Ok(Hold {
        user,
        key: key.clone(),
        estimate,
        model,
        period,
        created_at,
        expires_at,
    })
}

/// The record of (user, key) read as [`HoldState`] at `now`: a live hold
/// (`H…`), a finalize marker (`F` ‖ 6-byte big-endian expiry ‖ actual) or
/// a reap tombstone (`R<expiry> ` ‖ the hold's fields). Markers expire
/// logically: one whose expiry is at or before `now` is `Unknown`, as if
/// reap had already dropped it.
pub(crate) fn hold_state(
    record: &[u8],
    hold_ref: &HoldRef,
    now: Timestamp,
) -> Result<HoldState, StoreError> {
    let live = |expires: i64| now.as_millis() < expires;
    let text = |bytes: &[u8]| {
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| stored_corrupt("record"))
    };
    let ours = |hold: Hold| {
        if hold.user == hold_ref.user {
            Ok(hold)
        } else {
            Err(stored_corrupt("record of another user under this digest"))
        }
    };
    match record.first() {
        Some(b'H') => Ok(HoldState::Held {
            hold: ours(hold(&text(record)?, &hold_ref.key)?)?,
        }),
        Some(b'F') if record.len() > 7 => {
            let mut packed = [0u8; 8];
            packed[2..].copy_from_slice(&record[1..7]);
            let expires = i64::from_be_bytes(packed);
            if !live(expires) {
                return Ok(HoldState::Unknown);
            }
            let actual = parse_micros(&text(&record[7..])?, "marker actual")?;
            Ok(HoldState::Settled {
                settled: SettledAs::Finalized { actual },
            })
        }
        Some(b'R') => {
            let body = text(&record[1..])?;
            let (expires, fields) = body
                .split_once(' ')
                .ok_or_else(|| stored_corrupt("tombstone"))?;
            let expires = parse_timestamp(expires, "tombstone expires_at")?;
            if !live(expires.as_millis()) {
                return Ok(HoldState::Unknown);
            }
            Ok(HoldState::Settled {
                settled: SettledAs::Reaped {
                    hold: ours(hold(&format!("H{fields}"), &hold_ref.key)?)?,
                },
            })
        }
        _ => Err(stored_corrupt("record")),
    }
}

fn parse_timestamp(text: &str, what: &str) -> Result<Timestamp, StoreError> {
    text.parse::<i64>()
        .ok()
        .and_then(|ms| Timestamp::from_millis(ms).ok())
        .ok_or_else(|| stored_corrupt(what))
}

/// Limits stored as `"<limit>"` or `"<limit> <cap>"`; empty means none.
pub(crate) fn limits(text: &str) -> Result<Option<Limits>, StoreError> {
    if text.is_empty() {
        return Ok(None);
    }
    let mut parts = text.split(' ');
    let limit = parse_micros(parts.next().unwrap_or_default(), "limit")?;
    let mut limits = Limits::new(limit);
    if let Some(cap) = parts.next() {
        limits = limits.with_per_user_cap(parse_micros(cap, "per-user cap")?);
    }
    if parts.next().is_some() {
        return Err(stored_corrupt("limits"));
    }
    Ok(Some(limits))
}

fn bulk(value: &Value, what: &str) -> Result<String, StoreError> {
    match value {
        Value::BulkString(bytes) => {
            String::from_utf8(bytes.clone()).map_err(|_| stored_corrupt(what))
        }
        _ => Err(stored_corrupt(what)),
    }
}

/// Period totals `"<committed> <reserved> <holds> <warned 0|1>"` (empty
/// when the period saw nothing) and the flat list of users and their sums
/// (`"<committed> <reserved>"`) as a [`BudgetStatus`].
pub(crate) fn status(
    period: Period,
    limits: Option<Limits>,
    totals: &str,
    user_sums: Option<&str>,
) -> Result<BudgetStatus, StoreError> {
    let mut status = BudgetStatus {
        period,
        limits,
        committed: Micros::ZERO,
        reserved: Micros::ZERO,
        holds: 0,
        warned: false,
        user: user_sums.map(user_spend).transpose()?,
    };
    if !totals.is_empty() {
        let parts: Vec<&str> = totals.split(' ').collect();
        let [c, r, n, w] = parts.as_slice() else {
            return Err(stored_corrupt("period totals"));
        };
        status.committed = parse_micros(c, "committed")?;
        status.reserved = parse_micros(r, "reserved")?;
        status.holds = n.parse().map_err(|_| stored_corrupt("hold count"))?;
        status.warned = match *w {
            "0" => false,
            "1" => true,
            _ => return Err(stored_corrupt("warned flag")),
        };
    }
    Ok(status)
}

/// A user's sums field, `"<committed> <reserved>"`; `""` (no field) is
/// zeros.
pub(crate) fn user_spend(sums: &str) -> Result<UserSpend, StoreError> {
    if sums.is_empty() {
        return Ok(UserSpend::default());
    }
    let (c, r) = sums
        .split_once(' ')
        .ok_or_else(|| stored_corrupt("user sums"))?;
    Ok(UserSpend {
        committed: parse_micros(c, "user committed")?,
        reserved: parse_micros(r, "user reserved")?,
    })
}

/// A page's `{user, sums, ...}` pairs, without users whose sums are both
/// zero.
pub(crate) fn user_pairs(users: &[Value]) -> Result<Vec<(UserId, UserSpend)>, StoreError> {
    let mut page = Vec::with_capacity(users.len() / 2);
    for pair in users.chunks(2) {
        let [user, sums] = pair else {
            return Err(stored_corrupt("user sums"));
        };
        let user = UserId::parse(bulk(user, "user")?).map_err(|_| stored_corrupt("user"))?;
        let spend = user_spend(&bulk(sums, "user sums")?)?;
        if spend != UserSpend::default() {
            page.push((user, spend));
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk_value(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn hold_records_read_back_whole() {
        let key = IdempotencyKey::parse("k1").unwrap();
        let hold = hold(
            "H2500 1794700800000 1794700860000 2026-11 0xabc fast-code",
            &key,
        )
        .unwrap();
        assert_eq!(hold.estimate, Micros::new(2_500).unwrap());
        assert_eq!(hold.created_at.as_millis(), 1_794_700_800_000);
        assert_eq!(hold.expires_at.as_millis(), 1_794_700_860_000);
        assert_eq!(hold.period.to_string(), "2026-11");
        assert_eq!(hold.user.as_str(), "0xabc");
        assert_eq!(hold.model.as_str(), "fast-code");
        assert_eq!(hold.key, key);
        for bad in [
            "F1 2",
            "H1 2 3 2026-11 u",
            "H-1 2 3 2026-11 u m",
            "Hx 2 3 2026-13 u m",
        ] {
            assert!(
                matches!(super::hold(bad, &key), Err(StoreError::Corrupt(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn records_read_back_as_hold_states_and_markers_expire_logically() {
        let hold_ref = HoldRef {
            user: UserId::parse("alice").unwrap(),
            key: IdempotencyKey::parse("k1").unwrap(),
        };
        let at = |ms| Timestamp::from_millis(ms).unwrap();
        let fields = "300 1000 61000 2026-11 alice cheap";
        let held = hold_state(format!("H{fields}").as_bytes(), &hold_ref, at(5)).unwrap();
        let HoldState::Held { hold } = held else {
            panic!("expected Held, got {held:?}");
        };
        assert_eq!(
            (hold.estimate, hold.expires_at, hold.key.as_str()),
            (Micros::new(300).unwrap(), at(61_000), "k1")
        );

        let mut marker = b"F".to_vec();
        marker.extend_from_slice(&90_000u64.to_be_bytes()[2..]);
        marker.extend_from_slice(b"250");
        assert_eq!(
            hold_state(&marker, &hold_ref, at(89_999)).unwrap(),
            HoldState::Settled {
                settled: SettledAs::Finalized {
                    actual: Micros::new(250).unwrap()
                }
            }
        );
        assert_eq!(
            hold_state(&marker, &hold_ref, at(90_000)).unwrap(),
            HoldState::Unknown
        );

        let tombstone = format!("R90000 {fields}");
        assert_eq!(
            hold_state(tombstone.as_bytes(), &hold_ref, at(89_999)).unwrap(),
            HoldState::Settled {
                settled: SettledAs::Reaped { hold }
            }
        );
        assert_eq!(
            hold_state(tombstone.as_bytes(), &hold_ref, at(90_000)).unwrap(),
            HoldState::Unknown
        );

        let bob = "H300 1000 61000 2026-11 bob cheap";
        for bad in [
            &b"X1"[..],
            b"F12",
            b"R90000",
            b"Rx 1",
            bob.as_bytes(),
            b"\xff",
        ] {
            assert!(
                matches!(
                    hold_state(bad, &hold_ref, at(1)),
                    Err(StoreError::Corrupt(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn limits_read_back_with_and_without_a_cap() {
        assert_eq!(limits("").unwrap(), None);
        assert_eq!(
            limits("100").unwrap(),
            Some(Limits::new(Micros::new(100).unwrap()))
        );
        assert_eq!(
            limits("100 7").unwrap(),
            Some(Limits::new(Micros::new(100).unwrap()).with_per_user_cap(Micros::new(7).unwrap()))
        );
        assert!(limits("100 7 1").is_err());
        assert!(limits("lots").is_err());
    }

    #[test]
    fn status_reads_totals_and_the_one_user_asked_for() {
        let period = Period::parse("2026-11").unwrap();
        let status = status(period, None, "5 10 1 1", Some("5 10")).unwrap();
        assert_eq!(status.committed, Micros::new(5).unwrap());
        assert_eq!(status.reserved, Micros::new(10).unwrap());
        assert_eq!(status.holds, 1);
        assert!(status.warned);
        assert_eq!(status.user.map(|u| u.reserved), Micros::new(10).ok());
        let empty = super::status(period, None, "", Some("")).unwrap();
        assert_eq!(
            (empty.committed, empty.holds, empty.warned, empty.user),
            (Micros::ZERO, 0, false, Some(UserSpend::default()))
        );
        assert!(super::status(period, None, "1 2 3", None).is_err());
        assert!(super::status(period, None, "1 2 3 2", None).is_err());
        assert!(super::status(period, None, "", Some("12")).is_err());
    }

    #[test]
    fn user_pages_drop_users_without_spend() {
        let users = [
            bulk_value("alice"),
            bulk_value("5 10"),
            bulk_value("bob"),
            bulk_value("0 0"),
        ];
        let page = user_pairs(&users).unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].0.as_str(), "alice");
        assert!(user_pairs(&users[..3]).is_err());
    }
}
