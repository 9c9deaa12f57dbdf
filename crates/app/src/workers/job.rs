//! The shape every background job has: one testable pass, [`Job::tick`],
//! and what it did.

use async_trait::async_trait;
use spendgate_domain::Timestamp;

/// What one pass of a job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TickOutcome {
    /// Items handled (holds reaped, settlements replayed, …).
    pub items: u64,
    /// Items that failed and are retried on a later pass; one failing
    /// community or item never stops the rest of the pass.
    pub failures: u64,
}

impl TickOutcome {
    /// Adds another outcome's counts.
    #[must_use]
    pub fn plus(self, other: TickOutcome) -> Self {
        Self {
            items: self.items.saturating_add(other.items),
            failures: self.failures.saturating_add(other.failures),
        }
    }
}

/// A background job: a pass at a time, driven by a
/// [`super::runner`] loop or called directly by a test.
#[async_trait]
pub trait Job: Send + Sync {
    /// A stable name: metric label, lease name, span field.
    fn name(&self) -> &'static str;

    /// Whether only one replica may run a pass at a time (the runner then
    /// takes a lease named after the job before each pass).
    fn singleton(&self) -> bool {
        true
    }

    /// One pass at `now`. Never fails as a whole: failures are counted in
    /// the outcome and logged, and the next pass retries them.
    async fn tick(&self, now: Timestamp) -> TickOutcome;
}
