//! [`RedisBudgetStore`]: the port implemented by calling one script per
//! operation.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{ErrorKind, ServerErrorKind, Value};
use spendgate_domain::{
    BudgetError, BudgetPolicy, CommunityId, ExtendOutcome, FinalizeOutcome, HoldRef, LimitScope,
    Limits, Micros, ModelAlias, Period, Reaped, Receipt, Reservation, ReserveOutcome, Settlement,
    Timestamp, Ttl, UnheldCommit,
};
use spendgate_ports::{BudgetStatus, BudgetStore, StoreError};

use crate::codec::{self, Reply};
use crate::connection;
use crate::error::CallError;
use crate::keys::{community_prefix, hold_digest};
use crate::script::Op;

/// The default operation timeout: a reserve that gets no answer within it
/// is `Unavailable`, which the caller treats as deny.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// Attempts per call when the script cache was flushed between loading a
/// script and running it (`redis::Script` already loads once on NOSCRIPT).
const NOSCRIPT_ATTEMPTS: usize = 3;

/// Expiry-index entries read per reap script call; the adapter calls
/// again while more are due, so one call never blocks Redis for long.
const REAP_BATCH: u32 = 1000;
/// Expired markers dropped per reap script call.
const MARKER_BATCH: u32 = 1000;

/// A [`BudgetStore`] on Redis (standalone or Cluster) via Lua scripts.
///
/// `C` is any multiplexed async connection: [`ConnectionManager`]
/// (reconnects by itself) or the Cluster connection. It is cloned per call;
/// there is no pool, the connection multiplexes.
#[derive(Clone)]
pub struct RedisBudgetStore<C> {
    conn: C,
    policy: BudgetPolicy,
    timeout: Duration,
}

impl<C> std::fmt::Debug for RedisBudgetStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBudgetStore")
            .field("policy", &self.policy)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisBudgetStore<ConnectionManager> {
    /// Connects to a standalone Redis at `url` (`redis://host:port/db`)
    /// through a reconnecting [`ConnectionManager`].
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] for a malformed URL,
    /// [`StoreError::Unavailable`] when the server cannot be reached.
    pub async fn connect(url: &str, policy: BudgetPolicy) -> Result<Self, StoreError> {
        Ok(Self::new(connection::standalone(url).await?, policy))
    }
}

impl RedisBudgetStore<ClusterConnection> {
    /// Connects to a Redis Cluster through any of `urls`.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] for malformed URLs,
    /// [`StoreError::Unavailable`] when no node can be reached.
    pub async fn connect_cluster<S: AsRef<str>>(
        urls: &[S],
        policy: BudgetPolicy,
    ) -> Result<Self, StoreError> {
        Ok(Self::new(connection::cluster(urls).await?, policy))
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
            policy,
            timeout: DEFAULT_TIMEOUT,
        }
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

    async fn call(
        &self,
        op: Op,
        community: &CommunityId,
        args: &[&[u8]],
    ) -> Result<Reply, StoreError> {
        let mut invocation = op.script().prepare_invoke();
        invocation.key(community_prefix(community));
        for arg in args {
            invocation.arg(*arg);
        }
        let mut conn = self.conn.clone();
        let attempts = async {
            let mut attempt = 1;
            loop {
                match invocation.invoke_async::<Value>(&mut conn).await {
                    Err(e)
                        if attempt < NOSCRIPT_ATTEMPTS
                            && e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) =>
                    {
                        attempt += 1;
                    }
                    other => return other,
                }
            }
        };
        let value = tokio::time::timeout(self.timeout, attempts)
            .await
            .map_err(|_| CallError::Timeout(self.timeout))?
            .map_err(CallError::from)?;
        Reply::new(value)
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
        let period = match unheld {
            Some((period, _)) => period,
            None => Period::containing(now).map_err(|e| domain(community, e))?,
        };
        let digest = hold_digest(&hold.user, &hold.key);
        let actual_text = actual.get().to_string();
        let now_text = now.as_millis().to_string();
        let marker_text = marker_expires.as_millis().to_string();
        let period_text = period.to_string();
        // A finalize sends six arguments; commit_unheld adds the model.
        let (model, count) = match unheld {
            Some((_, model)) => (model.as_str().as_bytes(), 7),
            None => (&b""[..], 6),
        };
        let args: [&[u8]; 7] = [
            &digest,
            actual_text.as_bytes(),
            now_text.as_bytes(),
            marker_text.as_bytes(),
            period_text.as_bytes(),
            hold.user.as_str().as_bytes(),
            model,
        ];
        let reply = self.call(Op::Finalize, community, &args[..count]).await?;
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
        let timing = Period::containing(now)
            .map_err(BudgetError::from)
            .and_then(|p| Ok((p, now.plus(reservation.ttl)?)));
        let (period, expires) = match &timing {
            Ok((p, e)) => (p.to_string(), e.as_millis().to_string()),
            Err(_) => (String::new(), String::new()),
        };
        let digest = hold_digest(&reservation.user, &reservation.key);
        let reply = self
            .call(
                Op::Reserve,
                community,
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
            1 => Ok(ReserveOutcome::Reserved {
                remaining: reply.micros(1, "remaining")?,
                limit: reply.micros(2, "limit")?,
                warning: reply.int(3, "warning")? == 1,
                expires_at: reply.timestamp(4, "expires_at")?,
            }),
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
        let reply = self
            .call(
                Op::Extend,
                community,
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
        let mut reaped = Reaped::default();
        let mut offset = String::from("0");
        loop {
            let reply = self
                .call(
                    Op::Reap,
                    community,
                    &[
                        now_text.as_bytes(),
                        tombstone_text.as_bytes(),
                        hold_batch.as_bytes(),
                        marker_batch.as_bytes(),
                        offset.as_bytes(),
                    ],
                )
                .await?;
            let count = u64::try_from(reply.int(0, "count")?)
                .map_err(|_| StoreError::Corrupt("negative reap count".into()))?;
            reaped.count += count;
            reaped.reclaimed = reaped
                .reclaimed
                .checked_add(reply.micros(1, "reclaimed")?)
                .map_err(|e| StoreError::Overflow(e.to_string()))?;
            if reply.int(2, "more")? == 0 {
                return Ok(reaped);
            }
            offset = reply.int(4, "next offset")?.to_string();
        }
    }

    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn status(
        &self,
        community: &CommunityId,
        period: Period,
    ) -> Result<BudgetStatus, StoreError> {
        let reply = self
            .call(Op::Status, community, &[period.to_string().as_bytes()])
            .await?;
        let limits = codec::limits(&reply.text(0, "limits")?)?;
        let totals = reply.text(1, "period totals")?;
        let items = reply.into_items();
        let users = match items.get(2) {
            Some(Value::Array(users)) => users.as_slice(),
            Some(Value::Nil) | None => &[],
            _ => return Err(StoreError::Corrupt("status reply without user sums".into())),
        };
        codec::status(period, limits, &totals, users)
    }

    async fn due_communities(
        &self,
        _now: Timestamp,
        _limit: usize,
    ) -> Result<Vec<CommunityId>, StoreError> {
        Err(StoreError::Unavailable(
            "due_communities: not yet implemented".into(),
        ))
    }

    async fn lookup(
        &self,
        _community: &CommunityId,
        _hold: &HoldRef,
        _now: Timestamp,
    ) -> Result<spendgate_domain::HoldState, StoreError> {
        Err(StoreError::Unavailable(
            "lookup: not yet implemented".into(),
        ))
    }

    async fn restore_committed(
        &self,
        _community: &CommunityId,
        _period: Period,
        _committed: &std::collections::BTreeMap<spendgate_domain::UserId, Micros>,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "restore_committed: not yet implemented".into(),
        ))
    }

    #[tracing::instrument(skip_all, err, fields(community = %community))]
    async fn set_limits(&self, community: &CommunityId, limits: Limits) -> Result<(), StoreError> {
        let cap = limits
            .per_user_cap
            .map(|c| c.get().to_string())
            .unwrap_or_default();
        self.call(
            Op::SetLimits,
            community,
            &[limits.limit.get().to_string().as_bytes(), cap.as_bytes()],
        )
        .await?;
        Ok(())
    }
}
