//! [`RedisBudgetStore`]: the port implemented by calling one script per
//! operation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, Value};
use spendgate_domain::{
    BudgetError, BudgetPolicy, CommunityId, ConfigVersion, ExtendOutcome, FinalizeOutcome, HoldRef,
    HoldState, LimitScope, Limits, Micros, ModelAlias, Period, Reaped, Receipt, Reservation,
    ReserveOutcome, Settlement, Timestamp, Ttl, UnheldCommit, UserId,
};
use spendgate_ports::{BudgetStatus, BudgetStore, PageSize, StoreError, UsersCursor, UsersPage};

use crate::codec::{self, Reply};
use crate::connection::ConnectOptions;
use crate::error::CallError;
use crate::keys::{
    DUE_AT_KEY, DUE_GEN_KEY, DUE_SEQ_KEY, expiry_bucket, expiry_bucket_key, expiry_key,
    hold_digest, marker_queue_key, records_key, user_sums_key,
};
use crate::replicas::{ReplicaWait, Writers};
use crate::script::{self, Op};

mod prune;

/// The default operation timeout: a reserve that gets no answer within it
/// is `Unavailable`, which the caller treats as deny.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// Expiry-index entries read per reap script call; the adapter calls
/// again while more are due, so one call never blocks Redis for long.
const REAP_BATCH: u32 = 1000;
/// Due expiry buckets read (and declared as keys) per reap script call.
const REAP_BUCKETS: u32 = 100;
/// Expired markers dropped per reap script call.
const MARKER_BATCH: u32 = 1000;

/// The due index keys, in the order the index scripts declare them.
const DUE_KEYS: [&str; 3] = [DUE_AT_KEY, DUE_GEN_KEY, DUE_SEQ_KEY];

/// A [`BudgetStore`] on Redis (standalone or Cluster) via Lua scripts.
///
/// # The due index
///
/// [`BudgetStore::due_communities`] reads a zset of its own,
/// `sg:{due}:at` (see [`crate::keys`]): community → a lower bound (ms) of
/// the expiry of its earliest unreaped hold. A Cluster script touches one
/// slot, so the index cannot be written inside a community's scripts; two
/// small scripts on the `{due}` keys keep it, each run right after a
/// community script:
///
/// * after a reserve whose hold made a new lowest expiry bucket of the
///   community (the reserve script says so), `due_touch` lowers the
///   community's bound to the bucket's start (`ZADD LT`) and gives it a
///   new generation (`sg:{due}:gen`, from one global sequence, so a value
///   never repeats). A reserve into an existing bucket, or into a bucket
///   above the lowest, cannot lower the earliest expiry below a bound the
///   index already has, and costs nothing more. Nor can `extend`: it
///   lists the hold again under a later bucket while its current bucket
///   stays listed until a reap has passed it.
/// * a reap reads the community's generation first, then runs the reap,
///   which returns a lower bound of every hold it left (or none), then
///   `due_update`: if the generation is unchanged, no reserve touched the
///   index since the reap began, and the bound replaces the entry (which
///   may rise, or leave the index); if it changed, a reserve may have
///   added a hold the reap did not see, and the bound may only lower the
///   entry. Either way every unreaped hold keeps a bound at or below its
///   expiry, and a community reaped at `now` gets a bound above `now`.
///
/// The narrower promise: if `due_touch` fails after its reserve succeeded
/// (the `{due}` slot unreachable, a timeout), the reserve still succeeds
/// (the hold exists and is counted) and the failure is logged; the
/// community may then be missing from the index, or listed too late,
/// until its next reap (a reap repairs the entry, whatever the index said)
/// or its next new lowest bucket. The application's reaper therefore also
/// sweeps every configured community now and then. A failed `due_update`
/// after a successful reap is logged and the reap's result returned: the
/// entry stays at its older, lower bound, which costs one wasted visit.
/// (`ZADD LT` needs Redis 6.2 or later.)
///
/// Cost: a reserve pays a second round trip only when it makes the
/// community's lowest bucket. Finalize leaves a hold's bucket listed until
/// a reap passes it, so with steady traffic that is about the first
/// reserve after each reap of the community, not one reserve in two. A
/// reap is two round trips (a community never indexed and left with
/// nothing) or three. An active community is named at every reaper pass
/// while a passed bucket of it is listed, even if all its holds were
/// finalized: O(active communities) visits, never O(configured).
///
/// # Cluster resharding
///
/// Every script declares every key it reads or writes (built in
/// [`crate::keys`]), so while a community's slot migrates, Redis routes
/// each call by its real keys: the source node runs it while all of them
/// are there; when none is left there it answers `ASK` and the target runs
/// it; when they are split between the two (or a key the call would create
/// exists on neither) it answers `TRYAGAIN`. A call never runs against
/// half a community. A reap's due bucket lists are known only after
/// reading the expiry zset, so a reap reads first and then declares what
/// it read; its script reads only the declared lists and says when the
/// zset left more due work, and the adapter reads and calls again.
///
/// The cluster client follows `MOVED` and `ASK` at once and retries
/// `TRYAGAIN` after a few ms (up to 40 times, about 1.5 s, past the
/// default timeout); when the operation timeout or the retries run out
/// the call is [`StoreError::Unavailable`] (reserve:
/// deny; the application keeps a finalize and replays it). So during a
/// migration a call that would create a key (a reserve into a new expiry
/// bucket or the first reserve of a period, an extend into a new bucket)
/// waits until the slot has moved, and may time out; a finalize, whose
/// keys all exist, runs on one node or the other throughout, save while
/// its two keys are split.
///
/// A retried write stays exactly-once. `MOVED`, `ASK`, `TRYAGAIN` and
/// `CLUSTERDOWN` are answered before a script runs (Redis routes on the
/// declared keys first), so resending one is the first run. The one
/// resend that may follow a run is after a connection lost between
/// sending and the reply (the client reconnects and sends again, as does
/// a caller retrying after `Unavailable`): there the scripts' own
/// idempotency holds, since every effect is recorded under the (user, key)
/// digest in the same atomic step: a second reserve finds its hold
/// (`AlreadyReserved`), a second finalize its marker (`AlreadyFinalized`),
/// a second reap the tombstones it left, and `set_limits` and
/// `restore_committed` write the same values again.
///
/// `C` is any multiplexed async connection: [`ConnectionManager`]
/// (reconnects by itself) or the Cluster connection. It is cloned per call;
/// there is no pool, the connection multiplexes. A store that waits for
/// replicas sends its budget writes over a few dedicated connections
/// instead (see [`Self::with_replica_wait`]).
#[derive(Clone)]
pub struct RedisBudgetStore<C> {
    conn: C,
    writers: Option<Arc<Writers<C>>>,
    policy: BudgetPolicy,
    timeout: Duration,
}

impl<C> std::fmt::Debug for RedisBudgetStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBudgetStore")
            .field("policy", &self.policy)
            .field("timeout", &self.timeout)
            .field("replica_wait", &self.writers.as_ref().map(|w| w.wait()))
            .finish_non_exhaustive()
    }
}

impl RedisBudgetStore<ConnectionManager> {
    /// Connects to a standalone Redis at `url` (`redis://host:port/db`, or
    /// `rediss://` with the `tls` feature) through a reconnecting
    /// [`ConnectionManager`], checks that its `maxmemory-policy` cannot
    /// evict a budget record, and loads the scripts.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] for a malformed URL, a `rediss://` URL
    /// without the `tls` feature, or an evicting `maxmemory-policy`
    /// (`allkeys-*`; the message names the setting),
    /// [`StoreError::Unavailable`] when the server cannot be reached.
    pub async fn connect(url: &str, policy: BudgetPolicy) -> Result<Self, StoreError> {
        Self::connect_with(url, policy, &ConnectOptions::default()).await
    }
}

impl RedisBudgetStore<ClusterConnection> {
    /// Connects to a Redis Cluster through any of `urls`, checks every
    /// master's `maxmemory-policy` as [`Self::connect`] does, and loads the
    /// scripts on every master.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] for malformed URLs or a master with an
    /// evicting `maxmemory-policy` (the message names it),
    /// [`StoreError::Unavailable`] when no node can be reached.
    pub async fn connect_cluster<S: AsRef<str>>(
        urls: &[S],
        policy: BudgetPolicy,
    ) -> Result<Self, StoreError> {
        Self::connect_cluster_with(urls, policy, &ConnectOptions::default()).await
    }
}

impl<C> RedisBudgetStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A store over an existing connection, with [`DEFAULT_TIMEOUT`].
    pub fn new(conn: C, policy: BudgetPolicy) -> Self {
        Self {
            conn,
            writers: None,
            policy,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same store, waiting after each budget write until
    /// `wait.replicas()` replicas acknowledged it (see [`ReplicaWait`] for
    /// the design, the outcome when they do not, and the cost). `writers` are dedicated connections to the same
    /// server or cluster, not clones of the store's: each carries one call
    /// at a time, and a `WAIT` on them holds up nobody else.
    /// [`Self::connect_with`] opens `wait.connections()` of them; with
    /// none, every budget write waits out its timeout (`Unavailable`).
    #[must_use]
    pub fn with_replica_wait(mut self, wait: ReplicaWait, writers: Vec<C>) -> Self {
        self.writers = Some(Arc::new(Writers::new(wait, writers)));
        self
    }

    /// The same store with another operation timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The policy the store was built with.
    pub fn policy(&self) -> BudgetPolicy {
        self.policy
    }

    /// A clone of the underlying connection (for admin commands in tests
    /// and tools; the store itself needs nothing else).
    pub fn connection(&self) -> C {
        self.conn.clone()
    }

    /// Runs one script with `keys` (every key it touches, all on one slot,
    /// from [`crate::keys`]) and `args`, reloading it on `NOSCRIPT`,
    /// within the timeout.
    async fn invoke<K: AsRef<str>>(
        &self,
        op: Op,
        keys: &[K],
        args: &[&[u8]],
    ) -> Result<Reply, StoreError> {
        let value: Value = match &self.writers {
            Some(writers) if op.is_budget_write() => {
                script::run_and_wait(writers, op.script(), keys, args, self.timeout).await?
            }
            _ => script::run(&self.conn, op.script(), keys, args, self.timeout).await?,
        };
        Reply::new(value)
    }

    /// Runs one plain (read-only) command within the timeout.
    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        let value = tokio::time::timeout(self.timeout, cmd.query_async::<Value>(&mut conn))
            .await
            .map_err(|_| CallError::Timeout(self.timeout))?
            .map_err(CallError::from)?;
        T::from_redis_value(value)
            .map_err(|e| StoreError::Corrupt(format!("unreadable reply: {e}")))
    }
}

fn domain(community: &CommunityId, error: impl Into<BudgetError>) -> StoreError {
    StoreError::from_domain(community, error.into())
}

fn unknown(hold: &HoldRef) -> StoreError {
    StoreError::UnknownHold {
        user: hold.user.to_string(),
        key: hold.key.to_string(),
    }
}

fn unexpected(op: &str, code: i64) -> StoreError {
    StoreError::Corrupt(format!("{op} script answered with unknown outcome {code}"))
}

fn receipt(reply: &Reply) -> Result<Receipt, StoreError> {
    Ok(Receipt {
        actual: reply.micros(1, "actual")?,
        estimate: reply.micros(2, "estimate")?,
        overshoot: reply.micros(3, "overshoot")?,
        period: reply.period(4, "period")?,
        model: reply.model(5, "model")?,
        created_at: reply.timestamp(6, "created_at")?,
    })
}

impl<C> RedisBudgetStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Lowers the community's due bound to the start of the 100 ms bucket
    /// of `expires_at` (a reserve made it the community's lowest bucket).
    /// A failure is logged, never returned: the reserve it follows
    /// succeeded.
    async fn touch_due(&self, community: &CommunityId, expires_at: Timestamp) {
        let ms = expires_at.as_millis();
        let bound = (ms - ms.rem_euclid(100)).to_string();
        let args: [&[u8]; 2] = [community.as_str().as_bytes(), bound.as_bytes()];
        if let Err(error) = self.invoke(Op::DueTouch, &DUE_KEYS, &args).await {
            tracing::warn!(
                %community,
                %error,
                "hold reserved, but the due index was not updated; the reaper's full sweep will find it"
            );
        }
    }

    /// The lowest [`REAP_BUCKETS`] expiry buckets of the community that are
    /// due at `now` (their start is at or before it), ascending.
    async fn due_buckets(
        &self,
        community: &CommunityId,
        now: Timestamp,
    ) -> Result<Vec<i64>, StoreError> {
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(expiry_key(community))
            .arg("-inf")
            .arg(expiry_bucket(now))
            .arg("LIMIT")
            .arg(0)
            .arg(REAP_BUCKETS);
        let members: Vec<Vec<u8>> = self.query(&cmd).await?;
        let mut buckets = Vec::with_capacity(members.len());
        for member in &members {
            // A member is its bucket, in canonical decimal, and its score.
            let bucket = std::str::from_utf8(member)
                .ok()
                .and_then(|text| text.parse::<i64>().ok().filter(|b| b.to_string() == text))
                .filter(|b| *b >= 0 && *b <= expiry_bucket(now))
                .filter(|b| buckets.last().is_none_or(|last| last < b))
                .ok_or_else(|| StoreError::Corrupt("unreadable expiry bucket".into()))?;
            buckets.push(bucket);
        }
        Ok(buckets)
    }

    /// The community's generation in the due index (`None`: not indexed).
    async fn due_generation(&self, community: &CommunityId) -> Result<Option<String>, StoreError> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(DUE_GEN_KEY).arg(community.as_str());
        self.query(&cmd).await
    }

    /// Records the bound a reap returned, given the generation read before
    /// the reap. A failure is logged, never returned: the reap succeeded.
    async fn update_due(
        &self,
        community: &CommunityId,
        seen: Option<&str>,
        next_due: Option<&str>,
    ) {
        if seen.is_none() && next_due.is_none() {
            // Not indexed before the reap and nothing left: nothing to do
            // (a touch since then carries its own bound).
            return;
        }
        let args: [&[u8]; 3] = [
            community.as_str().as_bytes(),
            seen.unwrap_or_default().as_bytes(),
            next_due.unwrap_or_default().as_bytes(),
        ];
        if let Err(error) = self.invoke(Op::DueUpdate, &DUE_KEYS, &args).await {
            tracing::warn!(
                %community,
                %error,
                "holds reaped, but the due index was not updated; its older bound only costs a wasted visit"
            );
        }
    }

    /// Runs `lua/finalize.lua`: a finalize (or cancel) when `unheld` is
    /// `None`; a commit_unheld when it names the period to commit to and
    /// the call's model (the script then commits without a hold where
    /// there is none, instead of answering "unknown").
    async fn settle(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        actual: Micros,
        now: Timestamp,
        unheld: Option<(Period, &ModelAlias)>,
    ) -> Result<FinalizeOutcome, StoreError> {
        let marker_expires = now
            .plus(self.policy.marker_ttl())
            .map_err(|e| domain(community, e))?;
        // The hold's period is read from its record; the given one is a
        // guess that saves a read in the common case: the current period
        // for a finalize, the commit's period for commit_unheld (which is
        // also where the cost goes when there is no hold).
        let mut period = match unheld {
            Some((period, _)) => period,
            None => Period::containing(now).map_err(|e| domain(community, e))?,
        };
        let digest = hold_digest(&hold.user, &hold.key);
        let actual_text = actual.get().to_string();
        let now_text = now.as_millis().to_string();
        let marker_text = marker_expires.as_millis().to_string();
        // A finalize sends six arguments; commit_unheld adds the model.
        let (model, count) = match unheld {
            Some((_, model)) => (model.as_str().as_bytes(), 7),
            None => (&b""[..], 6),
        };
        // The script declares the guessed period's user set; when the
        // user must join another period's (a hold of estimate 0 from an
        // earlier period, now with a cost), it answers 5 with that period
        // and changes nothing, and the second call names it.
        let mut reply = None;
        for _ in 0..2 {
            let period_text = period.to_string();
            let args: [&[u8]; 7] = [
                &digest,
                actual_text.as_bytes(),
                now_text.as_bytes(),
                marker_text.as_bytes(),
                period_text.as_bytes(),
                hold.user.as_str().as_bytes(),
                model,
            ];
            let keys = [
                records_key(community),
                marker_queue_key(community),
                user_sums_key(community, period),
            ];
            let got = self.invoke(Op::Finalize, &keys, &args[..count]).await?;
            if got.code()? != 5 {
                reply = Some(got);
                break;
            }
            period = Period::parse(&got.text(1, "period")?)
                .map_err(|_| StoreError::Corrupt("finalize: period of the hold".into()))?;
        }
        let reply = reply.ok_or_else(|| unexpected("finalize", 5))?;
        match reply.code()? {
            0 if unheld.is_none() => Err(unknown(hold)),
            1 => Ok(FinalizeOutcome::Finalized(receipt(&reply)?)),
            2 => Ok(FinalizeOutcome::LateFinalized(receipt(&reply)?)),
            3 => Ok(FinalizeOutcome::AlreadyFinalized {
                actual: reply.micros(1, "actual")?,
            }),
            4 if unheld.is_some() => Ok(FinalizeOutcome::CommittedWithoutHold(receipt(&reply)?)),
            code => Err(unexpected("finalize", code)),
        }
    }
}

#[async_trait]
impl<C> BudgetStore for RedisBudgetStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn reserve(
        &self,
        community: &CommunityId,
        reservation: &Reservation,
        now: Timestamp,
    ) -> Result<ReserveOutcome, StoreError> {
        // Computed here, refused by the script only where the model would
        // refuse them (after the replay and configuration checks).
        let timing = reservation.timing(now);
        let (period, expires) = match &timing {
            Ok((p, e)) => (p.to_string(), e.as_millis().to_string()),
            Err(_) => (String::new(), String::new()),
        };
        // Without a period and expiry the script answers before it needs
        // more than the record hash.
        let mut keys = vec![records_key(community)];
        if let Ok((p, e)) = &timing {
            keys.push(expiry_key(community));
            keys.push(expiry_bucket_key(community, expiry_bucket(*e)));
            keys.push(user_sums_key(community, *p));
        }
        let digest = hold_digest(&reservation.user, &reservation.key);
        let reply = self
            .invoke(
                Op::Reserve,
                &keys,
                &[
                    &digest,
                    reservation.user.as_str().as_bytes(),
                    reservation.estimate.get().to_string().as_bytes(),
                    reservation.model.as_str().as_bytes(),
                    now.as_millis().to_string().as_bytes(),
                    expires.as_bytes(),
                    period.as_bytes(),
                    self.policy.warning_percent().to_string().as_bytes(),
                ],
            )
            .await?;
        match reply.code()? {
            0 => Err(StoreError::NotConfigured(community.clone())),
            1 => {
                let expires_at = reply.timestamp(4, "expires_at")?;
                let outcome = ReserveOutcome::Reserved {
                    remaining: reply.micros(1, "remaining")?,
                    limit: reply.micros(2, "limit")?,
                    warning: reply.int(3, "warning")? == 1,
                    expires_at,
                };
                if reply.int(5, "first bucket")? == 1 {
                    self.touch_due(community, expires_at).await;
                }
                Ok(outcome)
            }
            2 => {
                let record = reply.text(1, "hold record")?;
                Ok(ReserveOutcome::AlreadyReserved {
                    hold: codec::hold(&record, &reservation.key)?,
                })
            }
            3 => Ok(ReserveOutcome::AlreadySettled),
            4 => Ok(ReserveOutcome::BudgetExceeded {
                remaining: reply.micros(1, "remaining")?,
                limit: reply.micros(2, "limit")?,
                scope: if reply.int(3, "scope")? == 1 {
                    LimitScope::User
                } else {
                    LimitScope::Community
                },
            }),
            5 => match timing {
                Err(e) => Err(domain(community, e)),
                Ok(_) => Err(unexpected("reserve", 5)),
            },
            code => Err(unexpected("reserve", code)),
        }
    }

    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn extend(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        ttl: Ttl,
        now: Timestamp,
    ) -> Result<ExtendOutcome, StoreError> {
        let wanted = now.plus(ttl).map_err(|e| domain(community, e))?;
        let digest = hold_digest(&hold.user, &hold.key);
        let keys = [
            records_key(community),
            expiry_key(community),
            expiry_bucket_key(community, expiry_bucket(wanted)),
        ];
        let reply = self
            .invoke(
                Op::Extend,
                &keys,
                &[
                    &digest,
                    now.as_millis().to_string().as_bytes(),
                    wanted.as_millis().to_string().as_bytes(),
                ],
            )
            .await?;
        match reply.code()? {
            0 => Err(unknown(hold)),
            1 => Ok(ExtendOutcome::Extended {
                expires_at: reply.timestamp(1, "expires_at")?,
            }),
            2 => Ok(ExtendOutcome::NotLive),
            code => Err(unexpected("extend", code)),
        }
    }

    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn finalize(
        &self,
        community: &CommunityId,
        settlement: &Settlement,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        let hold = HoldRef {
            user: settlement.user.clone(),
            key: settlement.key.clone(),
        };
        self.settle(community, &hold, settlement.actual, now, None)
            .await
    }

    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn commit_unheld(
        &self,
        community: &CommunityId,
        commit: &UnheldCommit,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        let hold = HoldRef {
            user: commit.user.clone(),
            key: commit.key.clone(),
        };
        self.settle(
            community,
            &hold,
            commit.actual,
            now,
            Some((commit.period, &commit.model)),
        )
        .await
    }

    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn cancel(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        now: Timestamp,
    ) -> Result<FinalizeOutcome, StoreError> {
        self.settle(community, hold, Micros::ZERO, now, None).await
    }

    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn reap(&self, community: &CommunityId, now: Timestamp) -> Result<Reaped, StoreError> {
        let tombstone_expires = now
            .plus(self.policy.marker_ttl())
            .map_err(|e| domain(community, e))?;
        let now_text = now.as_millis().to_string();
        let tombstone_text = tombstone_expires.as_millis().to_string();
        let hold_batch = REAP_BATCH.to_string();
        let marker_batch = MARKER_BATCH.to_string();
        // Read before the reap: `update_due` compares it afterwards.
        let seen = match self.due_generation(community).await {
            Ok(seen) => Some(seen),
            Err(error) => {
                tracing::warn!(
                    %community,
                    %error,
                    "due index unreadable; reaping without updating it"
                );
                None
            }
        };
        let mut reaped = Reaped::default();
        let mut offset = String::from("0");
        loop {
            // The due buckets' lists are keys known only after this read;
            // the script takes them declared, and copes with the index
            // having changed since.
            let buckets = self.due_buckets(community, now).await?;
            let mut keys = vec![
                records_key(community),
                expiry_key(community),
                marker_queue_key(community),
            ];
            keys.extend(buckets.iter().map(|b| expiry_bucket_key(community, *b)));
            let bucket_texts: Vec<String> = buckets.iter().map(i64::to_string).collect();
            let mut args: Vec<&[u8]> = vec![
                now_text.as_bytes(),
                tombstone_text.as_bytes(),
                hold_batch.as_bytes(),
                marker_batch.as_bytes(),
                offset.as_bytes(),
            ];
            args.extend(bucket_texts.iter().map(String::as_bytes));
            let reply = self.invoke(Op::Reap, &keys, &args).await?;
            let count = u64::try_from(reply.int(0, "count")?)
                .map_err(|_| StoreError::Corrupt("negative reap count".into()))?;
            reaped.count += count;
            reaped.reclaimed = reaped
                .reclaimed
                .checked_add(reply.micros(1, "reclaimed")?)
                .map_err(|e| StoreError::Overflow(e.to_string()))?;
            let damaged = reply.int(6, "damaged marker entries")?;
            if damaged > 0 {
                tracing::warn!(
                    %community,
                    damaged,
                    "damaged marker queue entries skipped; their markers (if any) stay until a later record replaces them"
                );
            }
            if reply.int(2, "more")? == 0 {
                if let Some(seen) = seen {
                    let next_due = reply.text(5, "next due")?;
                    let next_due = Some(next_due.as_str()).filter(|t| !t.is_empty());
                    self.update_due(community, seen.as_deref(), next_due).await;
                }
                // Housekeeping after the reap has committed: a pruning that
                // fails is retried by the next reap, and must not turn this
                // one into an error (nor stop the reaps of a community
                // whose period list is damaged).
                let listed = reply.text(7, "listed periods")?;
                if let Err(error) = self.prune_periods(community, now, &listed).await {
                    tracing::warn!(%community, %error, "periods long past not pruned");
                }
                return Ok(reaped);
            }
            offset = reply.int(4, "next offset")?.to_string();
        }
    }

    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn status_with_user<'a>(
        &self,
        community: &CommunityId,
        period: Period,
        user: Option<&'a UserId>,
    ) -> Result<BudgetStatus, StoreError> {
        let keys = [records_key(community)];
        let period_text = period.to_string();
        let reply = match user {
            Some(u) => {
                let args: [&[u8]; 2] = [period_text.as_bytes(), u.as_str().as_bytes()];
                self.invoke(Op::Status, &keys, &args).await?
            }
            None => {
                self.invoke(Op::Status, &keys, &[period_text.as_bytes()])
                    .await?
            }
        };
        let limits = codec::limits(&reply.text(0, "limits")?)?;
        let totals = reply.text(1, "period totals")?;
        let sums = match user {
            Some(_) => Some(reply.text(2, "user sums")?),
            None => None,
        };
        codec::status(period, limits, &totals, sums.as_deref())
    }

    /// A page of the period's user set, scanned (SSCAN) by `lua/users.lua`:
    /// unordered, the cursor is the scan's.
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn users<'a>(
        &self,
        community: &CommunityId,
        period: Period,
        cursor: Option<&'a UsersCursor>,
        size: PageSize,
    ) -> Result<UsersPage, StoreError> {
        let scan = match cursor {
            Some(c) => c
                .as_str()
                .parse::<u64>()
                .map_err(|_| StoreError::InvalidInput("cursor".into()))?,
            None => 0,
        };
        let keys = [records_key(community), user_sums_key(community, period)];
        let (period_text, scan_text, size_text) =
            (period.to_string(), scan.to_string(), size.get().to_string());
        let args: [&[u8]; 3] = [
            period_text.as_bytes(),
            scan_text.as_bytes(),
            size_text.as_bytes(),
        ];
        let reply = self.invoke(Op::Users, &keys, &args).await?;
        let next = reply.text(0, "cursor")?;
        let items = reply.into_items();
        let users = match items.get(1) {
            Some(Value::Array(users)) => codec::user_pairs(users)?,
            _ => return Err(StoreError::Corrupt("users reply without users".into())),
        };
        let next = match next.as_str() {
            "0" => None,
            more => Some(
                UsersCursor::parse(more)
                    .map_err(|_| StoreError::Corrupt("users reply cursor".into()))?,
            ),
        };
        Ok(UsersPage { users, next })
    }

    #[tracing::instrument(skip_all, err)]
    async fn due_communities(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<CommunityId>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(DUE_AT_KEY)
            .arg("-inf")
            .arg(now.as_millis())
            .arg("LIMIT")
            .arg(0)
            .arg(i64::try_from(limit).unwrap_or(i64::MAX));
        let members: Vec<Vec<u8>> = self.query(&cmd).await?;
        members
            .into_iter()
            .map(|member| {
                String::from_utf8(member)
                    .ok()
                    .and_then(|text| CommunityId::parse(text).ok())
                    .ok_or_else(|| {
                        StoreError::Corrupt("due index member is not a community id".into())
                    })
            })
            .collect()
    }

    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn lookup(
        &self,
        community: &CommunityId,
        hold: &HoldRef,
        now: Timestamp,
    ) -> Result<HoldState, StoreError> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(records_key(community))
            .arg(&hold_digest(&hold.user, &hold.key)[..]);
        let record: Option<Vec<u8>> = self.query(&cmd).await?;
        match record {
            None => Ok(HoldState::Unknown),
            Some(record) => codec::hold_state(&record, hold, now),
        }
    }

    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn restore_committed(
        &self,
        community: &CommunityId,
        period: Period,
        committed: &BTreeMap<UserId, Micros>,
    ) -> Result<(), StoreError> {
        // The script checks again; refusing here sends nothing.
        committed
            .values()
            .try_fold(Micros::ZERO, |sum, c| sum.checked_add(*c))
            .map_err(|e| StoreError::Overflow(format!("restored committed total: {e}")))?;
        let period_text = period.to_string();
        let amounts: Vec<String> = committed.values().map(|c| c.get().to_string()).collect();
        let mut args: Vec<&[u8]> = Vec::with_capacity(1 + 2 * committed.len());
        args.push(period_text.as_bytes());
        for (user, amount) in committed.keys().zip(&amounts) {
            args.push(user.as_str().as_bytes());
            args.push(amount.as_bytes());
        }
        let keys = [records_key(community), user_sums_key(community, period)];
        self.invoke(Op::RestoreCommitted, &keys, &args).await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn set_limits(
        &self,
        community: &CommunityId,
        limits: Limits,
        version: ConfigVersion,
    ) -> Result<(), StoreError> {
        let cap = limits
            .per_user_cap
            .map(|c| c.get().to_string())
            .unwrap_or_default();
        self.invoke(
            Op::SetLimits,
            &[records_key(community)],
            &[
                limits.limit.get().to_string().as_bytes(),
                cap.as_bytes(),
                version.get().to_string().as_bytes(),
            ],
        )
        .await?;
        Ok(())
    }
}
