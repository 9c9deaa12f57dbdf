//! Giving the store a community's limits: a budget change, a whole
//! configuration written, a config sync pass. Every writer goes through
//! [`BudgetService::push_limits`], so limits never reach a store that lost
//! the period's spend before the period is rebuilt from the usage log:
//! limits over forgotten counters would admit reserves as if nothing had
//! been spent (law 1).

use spendgate_domain::{CommunityId, ConfigVersion, Limits, Period};
use spendgate_ports::CommunityConfig;

use super::{BudgetChangeError, BudgetService, RebuildError, RebuildReport};
use crate::services::telemetry::StoreTimer;

impl BudgetService {
    /// Gives the store `community`'s limits of configuration `version`.
    ///
    /// A store that holds no limits for the community lost its data (a
    /// Redis restarted without persistence) or never had them; either way
    /// its counters of the current period may have forgotten spend the
    /// usage log records, so the period is rebuilt from the log first
    /// ([`BudgetService::rebuild`]) and the limits pushed after. A store
    /// that holds limits again (another replica repaired it first) is not
    /// rebuilt twice: its counters have counted every cost since that
    /// repair, some of which the log may not have yet. Answers the rebuild
    /// when there was one.
    ///
    /// The read and the write are two steps: a store that loses its data
    /// between them gets its limits without a rebuild, and the repair is
    /// the same as for a running replica (the next reserve is refused as
    /// not configured only if the limits were lost again; otherwise the
    /// drift monitor reports the difference).
    ///
    /// # Errors
    /// [`BudgetChangeError::StoreNotUpdated`] (the store could not be read
    /// or did not take the limits); [`BudgetChangeError::StoreNotRebuilt`]
    /// (it held none and the period could not be rebuilt: nothing pushed,
    /// reserves stay refused).
    pub(crate) async fn push_limits(
        &self,
        community: &CommunityId,
        limits: Limits,
        version: ConfigVersion,
    ) -> Result<Option<RebuildReport>, BudgetChangeError> {
        let core = self.core();
        let period = Period::containing(core.clock.now())
            .map_err(|e| BudgetChangeError::StoreNotRebuilt(RebuildError::Period(e.to_string())))?;
        let holds_none = {
            let _timer = StoreTimer::start("status");
            core.store
                .status(community, period)
                .await
                .map_err(BudgetChangeError::StoreNotUpdated)?
                .limits
                .is_none()
        };
        let rebuilt = if holds_none {
            Some(
                self.rebuild(community, Some(period))
                    .await
                    .map_err(BudgetChangeError::StoreNotRebuilt)?,
            )
        } else {
            None
        };
        let _timer = StoreTimer::start("set_limits");
        core.store
            .set_limits(community, limits, version)
            .await
            .map_err(BudgetChangeError::StoreNotUpdated)?;
        Ok(rebuilt)
    }

    /// Communities whose reserves found the store without limits since
    /// the last call (see `lost_limits`), for config sync to repair.
    pub(crate) fn take_lost_limits(&self) -> std::collections::BTreeSet<CommunityId> {
        self.core().lost_limits.take()
    }

    /// Records again a community whose repair did not finish.
    pub(crate) fn note_lost_limits(&self, community: &CommunityId) {
        self.core().lost_limits.note(community);
    }

    /// Sets a community's monthly limit and per-user cap: the database
    /// first, then the store. A community without configuration gets one,
    /// with AI enabled and default pricing. One write of the limits alone
    /// ([`ConfigProvider::set_limits`](spendgate_ports::ConfigProvider::set_limits)),
    /// not a read and a write of the whole configuration, so an AI switch
    /// or pricing changed meanwhile is kept.
    ///
    /// # Errors
    /// [`BudgetChangeError::Database`] (nothing changed);
    /// [`BudgetChangeError::StoreNotUpdated`] and
    /// [`BudgetChangeError::StoreNotRebuilt`] (saved; the next config sync
    /// applies it to the store).
    #[tracing::instrument(skip_all, err, fields(community = %community))]
    pub async fn set_budget(
        &self,
        community: &CommunityId,
        limits: Limits,
    ) -> Result<(), BudgetChangeError> {
        let provider = self.core().config.provider();
        let version = provider
            .set_limits(community, limits)
            .await
            .map_err(BudgetChangeError::Database)?;
        // The cache takes the row as it is now; a newer write's copy, if
        // one is cached already, is kept (the cache keeps the newest).
        match provider.community(community).await {
            Ok(Some(config)) => {
                self.core().config.put(community, Some(config));
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "budget saved; the cached configuration refreshes later");
            }
        }
        self.push_limits(community, limits, version).await?;
        Ok(())
    }

    /// Writes a community's whole configuration (AI switch, limits,
    /// pricing): the database first, then the cache and the store's limits
    /// with the version the database issued (`config.version` is
    /// ignored), so neither can be put back to an older value by a config
    /// sync pass that read the row before this write.
    ///
    /// # Errors
    /// As [`BudgetService::set_budget`].
    #[tracing::instrument(skip_all, err, fields(community = %config.community))]
    pub async fn configure(&self, config: &CommunityConfig) -> Result<(), BudgetChangeError> {
        let version = self
            .core()
            .config
            .provider()
            .upsert(config)
            .await
            .map_err(BudgetChangeError::Database)?;
        let written = CommunityConfig {
            version,
            ..config.clone()
        };
        self.core().config.put(&config.community, Some(written));
        self.push_limits(&config.community, config.limits, version)
            .await?;
        Ok(())
    }
}
