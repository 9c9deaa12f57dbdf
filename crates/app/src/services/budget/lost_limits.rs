//! Communities whose limits the store turned out not to hold although it
//! was given them: the store lost its data (a Redis restarted without
//! persistence). A reserve the store refuses as not configured records
//! its community; the next config sync pass rebuilds the community's
//! current period from the usage log and then gives the store its limits
//! back, in that order, so limits never return over counters that forgot
//! the period's spend.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use spendgate_domain::CommunityId;

/// The communities recorded since config sync last took them.
#[derive(Debug, Default)]
pub(crate) struct LostLimits(Mutex<BTreeSet<CommunityId>>);

impl LostLimits {
    /// Records `community` (again).
    pub(crate) fn note(&self, community: &CommunityId) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(community.clone());
    }

    /// Every community recorded, forgetting them.
    pub(crate) fn take(&self) -> BTreeSet<CommunityId> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
