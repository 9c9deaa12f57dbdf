//! Rebuilding a period's committed sums from the usage log: the repair for
//! a store that lost data (a Redis restarted without persistence) or
//! drifted from the durable record.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spendgate_domain::{CommunityId, Micros, Period, UserId};

use super::{BudgetService, RebuildError};

/// Settlements replayed before a rebuild reads the log, so costs that
/// reached the store but not yet the log are logged first.
const REPLAY_BEFORE_REBUILD: u32 = 10_000;

/// What a rebuild changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildReport {
    /// The community rebuilt.
    pub community: CommunityId,
    /// The period rebuilt.
    pub period: Period,
    /// The store's committed before.
    pub before: Micros,
    /// The store's committed now: the usage log's sum.
    pub after: Micros,
    /// The usage log's sum per user, now the store's per-user committed.
    pub users: BTreeMap<UserId, Micros>,
}

impl BudgetService {
    /// Sets the store's committed sums of `community` in `period` (the
    /// current one when `None`) to the usage log's, user by user, keeping
    /// live holds and limits. Idempotent; run it when the drift monitor
    /// reports a difference or after the store lost data.
    ///
    /// Queued settlements are replayed first, so a cost already in the
    /// store but not yet logged is logged before the log is read; while
    /// any settlement of the community is still queued after that (leased
    /// to its caller or to another replica, or failing), nothing is
    /// restored and [`RebuildError::SettlementsPending`] says to run it
    /// again. A finalize that is written ahead and lands in the store
    /// while the rebuild runs can still be counted in the store but not
    /// the log; the drift monitor reports that, and a second rebuild
    /// settles it. A settlement another replica keeps in memory (it was
    /// made while the database was down) is invisible here until that
    /// replica's replay pass writes it to the database: rebuild once the
    /// database has been back for a replay interval.
    ///
    /// # Errors
    /// [`RebuildError`]; nothing changes on error.
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    pub async fn rebuild(
        &self,
        community: &CommunityId,
        period: Option<Period>,
    ) -> Result<RebuildReport, RebuildError> {
        let core = self.core();
        let period = match period {
            Some(p) => p,
            None => Period::containing(core.clock.now())
                .map_err(|e| RebuildError::Period(e.to_string()))?,
        };
        if let Err(error) = self.replay_settlements(REPLAY_BEFORE_REBUILD).await {
            tracing::warn!(%error, "rebuild: queued settlements not replayed first");
        }
        // A settlement still queued (leased to its caller or another
        // replica, or failing) may be in the store and not yet in the log:
        // restoring the log's sums now would make the store forget it.
        let pending = core
            .finalize_queue
            .pending(community)
            .await
            .map_err(RebuildError::Queue)?;
        if pending > 0 {
            return Err(RebuildError::SettlementsPending { pending });
        }
        let users = core
            .usage_log
            .committed_by_user(community, period)
            .await
            .map_err(RebuildError::UsageLog)?;
        let before = core
            .store
            .status(community, period)
            .await
            .map_err(RebuildError::Store)?
            .committed;
        core.store
            .restore_committed(community, period, &users)
            .await
            .map_err(RebuildError::Store)?;
        let after = users
            .values()
            .try_fold(Micros::ZERO, |sum, c| sum.checked_add(*c))
            .map_err(|e| {
                RebuildError::Store(spendgate_ports::StoreError::Overflow(e.to_string()))
            })?;
        tracing::info!(%period, before = before.get(), after = after.get(), "rebuilt committed from the usage log");
        Ok(RebuildReport {
            community: community.clone(),
            period,
            before,
            after,
            users,
        })
    }
}
