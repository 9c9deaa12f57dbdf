//! [`RedisTierCache`]: the [`TierCache`] port on one Redis string per
//! community, expired by Redis itself.
//!
//! The key is [`tier_cache_key`] (`sg:{c}:tiers`), on the community's slot.
//! The value is a small versioned JSON document:
//!
//! ```text
//! {"v":2,"n":1765400000000,"t":{"4":"enterprise","7":"pro"}}
//! ```
//!
//! `v` is the encoding version (only `2` is read), `n` the configuration
//! version the overrides were read at (a [`ConfigVersion`]), `t` maps each
//! overridden tier (canonical decimal, 1–9) to its access level (`free`,
//! `pro`, `enterprise`). `{"v":2,"n":…,"t":{}}` is the negative entry: the
//! community has no overrides. A put is one script (`lua/tier_put.lua`)
//! that keeps an entry of a greater `n`, so a reader that read the
//! database before a write cannot put the older overrides back over the
//! writer's. Reading is strict: malformed JSON, another encoding version
//! (entries of version 1, written before configuration versions, are
//! misses and replaced by the next put), a missing or out-of-range `n`, an
//! unknown or duplicated member, a tier outside 1–9 or not written
//! canonically (`"04"`), an unknown level, or a key that is not a string is
//! [`RepoError::BadData`] (the caller treats it as a miss and the next
//! `put` overwrites it), never a panic.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue};
use serde::Deserialize;
use serde::de::{Error as _, IgnoredAny, MapAccess, Visitor};
use spendgate_domain::{AccessLevel, CommunityId, ConfigVersion, Tier, TierOverrides, Ttl};
use spendgate_ports::{RepoError, TierCache, Versioned};

use crate::connection;
use crate::error::CallError;
use crate::keys::tier_cache_key;
use crate::script::{self, TIER_PUT};
use crate::store::DEFAULT_TIMEOUT;
use crate::tls::TlsFiles;

/// The encoding version written by [`encode`] and the only one read.
const VERSION: u64 = 2;

/// The `field` of every [`RepoError::BadData`] this cache returns.
const FIELD: &str = "tier cache";

/// A [`TierCache`] on Redis (standalone or Cluster).
///
/// `C` is any multiplexed async connection: [`ConnectionManager`]
/// (reconnects by itself) or the Cluster connection; the connection of a
/// [`RedisBudgetStore`](crate::RedisBudgetStore) can be shared
/// (`RedisTierCache::new(store.connection())`). Every call is one command
/// (`GET`, or the put script) bounded by the timeout: no answer in time,
/// or any connection or server error, is [`RepoError::Unavailable`].
#[derive(Clone)]
pub struct RedisTierCache<C> {
    conn: C,
    timeout: Duration,
}

impl<C> fmt::Debug for RedisTierCache<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTierCache")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisTierCache<ConnectionManager> {
    /// Connects to a standalone Redis at `url` (`redis://host:port/db`)
    /// through a reconnecting [`ConnectionManager`].
    ///
    /// # Errors
    /// [`RepoError::InvalidInput`] for a malformed URL,
    /// [`RepoError::Unavailable`] when the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, RepoError> {
        Ok(Self::new(
            connection::standalone(url, &TlsFiles::default()).await?,
        ))
    }
}

impl RedisTierCache<ClusterConnection> {
    /// Connects to a Redis Cluster through any of `urls`.
    ///
    /// # Errors
    /// [`RepoError::InvalidInput`] for malformed URLs,
    /// [`RepoError::Unavailable`] when no node can be reached.
    pub async fn connect_cluster<S: AsRef<str>>(urls: &[S]) -> Result<Self, RepoError> {
        Ok(Self::new(
            connection::cluster(urls, &TlsFiles::default()).await?,
        ))
    }
}

impl<C> RedisTierCache<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A cache over an existing connection, with [`DEFAULT_TIMEOUT`].
    pub fn new(conn: C) -> Self {
        Self {
            conn,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same cache with another operation timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A clone of the underlying connection (for admin commands in tests
    /// and tools; the cache itself needs nothing else).
    pub fn connection(&self) -> C {
        self.conn.clone()
    }

    /// Runs `cmd` within the timeout.
    async fn run<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, CallError> {
        let mut conn = self.conn.clone();
        tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn))
            .await
            .map_err(|_| CallError::Timeout(self.timeout))?
            .map_err(CallError::from)
    }
}

/// No answer in time, a dropped or refused connection, a cluster that is
/// down, a server error: the cache could not answer.
fn unavailable(op: &str, community: &CommunityId, error: &CallError) -> RepoError {
    RepoError::Unavailable(format!("tier cache {op} for {community}: {error}"))
}

fn bad_data(community: &CommunityId, reason: String) -> RepoError {
    RepoError::BadData {
        community: community.to_string(),
        field: FIELD.to_owned(),
        reason,
    }
}

#[async_trait]
impl<C> TierCache for RedisTierCache<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn get(
        &self,
        community: &CommunityId,
    ) -> Result<Option<Versioned<TierOverrides>>, RepoError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(tier_cache_key(community));
        let value = self
            .run::<Option<Vec<u8>>>(&cmd)
            .await
            .map_err(|error| match error {
                // Something other than a string under our key: unreadable
                // data, not an outage (the next `put` replaces it).
                CallError::Redis(e) if e.code() == Some("WRONGTYPE") => {
                    bad_data(community, format!("not a string: {e}"))
                }
                other => unavailable("get", community, &other),
            })?;
        value
            .map(|bytes| decode(&bytes).map_err(|reason| bad_data(community, reason)))
            .transpose()
    }

    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn put(
        &self,
        community: &CommunityId,
        overrides: &TierOverrides,
        version: ConfigVersion,
        ttl: Ttl,
    ) -> Result<(), RepoError> {
        let entry = encode(overrides, version);
        let version = version.get().to_string();
        let ttl = ttl.as_millis().to_string();
        script::run::<_, i64, _>(
            &self.conn,
            &TIER_PUT,
            &[tier_cache_key(community)],
            &[entry.as_bytes(), version.as_bytes(), ttl.as_bytes()],
            self.timeout,
        )
        .await
        .map(|_| ())
        .map_err(|e| unavailable("put", community, &e))
    }
}

/// The cached value of `overrides` read at `version`:
/// `{"v":2,"n":<version>,"t":{"<tier>":"<level>",…}}`, tiers ascending.
/// Tier digits and level names need no JSON escaping.
fn encode(overrides: &TierOverrides, version: ConfigVersion) -> String {
    let entries: Vec<String> = overrides
        .iter()
        .map(|(tier, level)| format!("\"{}\":\"{}\"", tier.get(), level.as_str()))
        .collect();
    format!(
        "{{\"v\":{VERSION},\"n\":{version},\"t\":{{{}}}}}",
        entries.join(",")
    )
}

/// A document as read. Its members are judged once the whole object is
/// read, so a document of another version is reported as such whatever
/// else it holds.
#[derive(Default)]
struct Document {
    version: Option<u64>,
    /// The configuration version, `n`.
    number: Option<i64>,
    /// The members of `t` in document order, duplicates kept (so they are
    /// refused rather than silently resolved).
    tiers: Option<Vec<(String, serde_json::Value)>>,
    /// The first member that is neither `v` nor `t`.
    unknown: Option<String>,
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(DocumentVisitor)
    }
}

struct DocumentVisitor;

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tier cache entry object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut document = Document::default();
        while let Some(member) = map.next_key::<String>()? {
            match member.as_str() {
                "v" if document.version.is_none() => document.version = Some(map.next_value()?),
                "n" if document.number.is_none() => document.number = Some(map.next_value()?),
                "t" if document.tiers.is_none() => {
                    document.tiers = Some(map.next_value::<Entries>()?.0);
                }
                "v" | "n" | "t" => {
                    return Err(A::Error::custom(format!("duplicate member {member:?}")));
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    document.unknown.get_or_insert(member);
                }
            }
        }
        Ok(document)
    }
}

/// The members of `t`, in document order.
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EntriesVisitor)
    }
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of tier → access level")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
            entries.push(entry);
        }
        Ok(Entries(entries))
    }
}

/// Parses a cached value; the error is the reason it is unreadable.
fn decode(bytes: &[u8]) -> Result<Versioned<TierOverrides>, String> {
    let document: Document =
        serde_json::from_slice(bytes).map_err(|e| format!("malformed entry: {e}"))?;
    let version = document
        .version
        .ok_or("malformed entry: no version member \"v\"")?;
    if version != VERSION {
        return Err(format!(
            "unsupported encoding version {version} (expected {VERSION})"
        ));
    }
    if let Some(member) = document.unknown {
        return Err(format!("malformed entry: unknown member {member:?}"));
    }
    let number = document
        .number
        .ok_or("malformed entry: no configuration version member \"n\"")?;
    let config_version = ConfigVersion::new(number).map_err(|e| format!("malformed entry: {e}"))?;
    let entries = document
        .tiers
        .ok_or("malformed entry: no tiers member \"t\"")?;
    let mut overrides = TierOverrides::new();
    for (key, value) in entries {
        let tier = key
            .parse::<u8>()
            .ok()
            .filter(|n| n.to_string() == key)
            .and_then(|n| Tier::new(i64::from(n)).ok())
            .ok_or_else(|| format!("tier {key:?} is not a number from 1 to 9"))?;
        let serde_json::Value::String(level) = value else {
            return Err(format!(
                "tier {key}: expected an access level string, found {value}"
            ));
        };
        let level: AccessLevel = level
            .parse()
            .map_err(|e: spendgate_domain::TierError| format!("tier {key}: {e}"))?;
        if overrides.insert(tier, level).is_some() {
            return Err(format!("tier {key} appears twice"));
        }
    }
    Ok(Versioned {
        value: overrides,
        version: config_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(n: i64) -> Tier {
        Tier::new(n).unwrap()
    }

    fn at(version: i64, overrides: TierOverrides) -> Versioned<TierOverrides> {
        Versioned {
            value: overrides,
            version: ConfigVersion::new(version).unwrap(),
        }
    }

    #[test]
    fn encodes_compactly_and_round_trips() {
        let v = |n| ConfigVersion::new(n).unwrap();
        let empty = TierOverrides::new();
        assert_eq!(encode(&empty, v(0)), r#"{"v":2,"n":0,"t":{}}"#);
        assert_eq!(decode(encode(&empty, v(0)).as_bytes()), Ok(at(0, empty)));

        let some = TierOverrides::from([
            (tier(7), AccessLevel::Pro),
            (tier(4), AccessLevel::Enterprise),
            (tier(1), AccessLevel::Free),
        ]);
        let text = encode(&some, v(1_765_400_000_000));
        assert_eq!(
            text,
            r#"{"v":2,"n":1765400000000,"t":{"1":"free","4":"enterprise","7":"pro"}}"#
        );
        assert_eq!(
            decode(text.as_bytes()),
            Ok(at(1_765_400_000_000, some.clone()))
        );
        assert_eq!(
            decode(encode(&some, ConfigVersion::MAX).as_bytes()),
            Ok(at(ConfigVersion::MAX.get(), some.clone()))
        );

        // Every tier at every level survives.
        for n in 1..=9 {
            for level in [AccessLevel::Free, AccessLevel::Pro, AccessLevel::Enterprise] {
                let one = TierOverrides::from([(tier(n), level)]);
                assert_eq!(decode(encode(&one, v(3)).as_bytes()), Ok(at(3, one)));
            }
        }
        // Whitespace and member order are JSON's business.
        assert_eq!(
            decode(
                br#" { "t" : { "7" : "pro", "4":"enterprise", "1":"free" } , "n" : 9, "v" : 2 } "#
            ),
            Ok(at(9, some))
        );
    }

    #[test]
    fn anything_malformed_is_refused_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "malformed"),
            (b"not json", "malformed"),
            (b"\xff\xfe", "malformed"),
            (b"[1]", "malformed"),
            (br#"{"v":2,"n":1,"t":{}} x"#, "malformed"),
            (br#"{"v":2,"n":1,"t":{}"#, "malformed"),
            (br#"{"t":{}}"#, "malformed"),
            (br#"{"n":1,"t":{}}"#, "malformed"),
            (br#"{"v":2,"n":1}"#, "malformed"),
            (br#"{"v":"2","n":1,"t":{}}"#, "malformed"),
            (br#"{"v":-2,"n":1,"t":{}}"#, "malformed"),
            (br#"{"v":2.0,"n":1,"t":{}}"#, "malformed"),
            (br#"{"v":2,"n":1,"v":2,"t":{}}"#, "malformed"),
            (br#"{"v":2,"n":1,"t":[]}"#, "malformed"),
            (br#"{"v":2,"n":1,"t":null}"#, "malformed"),
            (
                br#"{"v":2,"n":1,"t":{"4":4}}"#,
                "expected an access level string",
            ),
            (
                br#"{"v":2,"n":1,"t":{"4":null}}"#,
                "expected an access level string",
            ),
            (
                br#"{"v":2,"n":1,"t":{"4":["pro"]}}"#,
                "expected an access level string",
            ),
            (
                br#"{"t":{"4":"pro"},"v":2,"n":1,"t":{}}"#,
                "duplicate member",
            ),
            (br#"{"v":2,"n":1,"n":2,"t":{}}"#, "duplicate member"),
            (br#"{"v":1,"t":{}}"#, "version 1"),
            (br#"{"v":2,"t":{}}"#, "no configuration version"),
            (br#"{"v":2,"n":-1,"t":{}}"#, "outside"),
            (br#"{"v":2,"n":9007199254740992,"t":{}}"#, "outside"),
            (br#"{"v":2,"n":1.5,"t":{}}"#, "malformed"),
            (br#"{"v":2,"n":"1","t":{}}"#, "malformed"),
            (br#"{"v":0,"t":{}}"#, "version 0"),
            (br#"{"v":3,"n":1,"t":{"4":"pro"}}"#, "version 3"),
            (br#"{"v":3,"x":[]}"#, "version 3"),
            (br#"{"x":[],"t":{"4":"pro"},"v":3}"#, "version 3"),
            (br#"{"v":2,"n":1,"t":{},"x":0}"#, "unknown member \"x\""),
            (
                br#"{"v":2,"n":1,"t":{"0":"pro"}}"#,
                "not a number from 1 to 9",
            ),
            (
                br#"{"v":2,"n":1,"t":{"10":"pro"}}"#,
                "not a number from 1 to 9",
            ),
            (
                br#"{"v":2,"n":1,"t":{"-4":"pro"}}"#,
                "not a number from 1 to 9",
            ),
            (
                br#"{"v":2,"n":1,"t":{"04":"pro"}}"#,
                "not a number from 1 to 9",
            ),
            (
                br#"{"v":2,"n":1,"t":{"+4":"pro"}}"#,
                "not a number from 1 to 9",
            ),
            (
                br#"{"v":2,"n":1,"t":{" 4":"pro"}}"#,
                "not a number from 1 to 9",
            ),
            (
                br#"{"v":2,"n":1,"t":{"":"pro"}}"#,
                "not a number from 1 to 9",
            ),
            (
                br#"{"v":2,"n":1,"t":{"256":"pro"}}"#,
                "not a number from 1 to 9",
            ),
            (br#"{"v":2,"n":1,"t":{"4":"gold"}}"#, "unknown access level"),
            (br#"{"v":2,"n":1,"t":{"4":"Pro"}}"#, "unknown access level"),
            (br#"{"v":2,"n":1,"t":{"4":""}}"#, "unknown access level"),
            (
                br#"{"v":2,"n":1,"t":{"4":"pro","4":"free"}}"#,
                "appears twice",
            ),
        ];
        for (bytes, expected) in cases {
            let text = String::from_utf8_lossy(bytes);
            match decode(bytes) {
                Ok(parsed) => panic!("{text:?} was accepted as {parsed:?}"),
                Err(reason) => assert!(
                    reason.contains(expected),
                    "{text:?}: reason {reason:?} does not mention {expected:?}"
                ),
            }
        }
    }
}
