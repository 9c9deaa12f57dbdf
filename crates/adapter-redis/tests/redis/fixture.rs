//! Calls and inspections the Redis-specific tests share: instants in ms,
//! reservations and settlements of one model, and a dump of every key of
//! a community for "changed nothing" checks.

use redis::aio::ConnectionLike;
use spendgate_adapter_redis::keys::community_prefix;
use spendgate_contract::fixture::{key, m, user};
use spendgate_domain::{CommunityId, ModelAlias, Reservation, Settlement, Timestamp, Ttl};

/// The instant `ms` milliseconds after the epoch.
pub fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms).unwrap()
}

/// A reservation by `who` under key `k` for the model `cheap`.
pub fn reservation(who: &str, k: &str, estimate: i64, ttl_ms: i64) -> Reservation {
    Reservation {
        user: user(who),
        key: key(k),
        estimate: m(estimate),
        model: ModelAlias::parse("cheap").unwrap(),
        ttl: Ttl::from_millis(ttl_ms).unwrap(),
    }
}

/// The settlement of `who`'s hold under key `k`.
pub fn settlement(who: &str, k: &str, actual: i64) -> Settlement {
    Settlement {
        user: user(who),
        key: key(k),
        actual: m(actual),
    }
}

/// Every key of the community with its serialized value, in key order.
pub async fn snapshot<C: ConnectionLike + Send>(
    conn: &mut C,
    c: &CommunityId,
) -> Vec<(String, Vec<u8>)> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", community_prefix(c)))
        .query_async(conn)
        .await
        .unwrap();
    keys.sort();
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let dump: Vec<u8> = redis::cmd("DUMP").arg(&k).query_async(conn).await.unwrap();
        out.push((k, dump));
    }
    out
}
