//! A clock tests can move.

use std::sync::atomic::{AtomicI64, Ordering};

use spendgate_domain::{TimeError, Timestamp};
use spendgate_ports::Clock;

/// A [`Clock`] that reads what it was last set to; for tests and for
/// replaying a recorded timeline.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicI64,
}

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            now_ms: AtomicI64::new(start.as_millis()),
        }
    }

    /// Sets the time.
    pub fn set(&self, now: Timestamp) {
        self.now_ms.store(now.as_millis(), Ordering::SeqCst);
    }

    /// Moves the time forward by `ms`, returning the new time.
    ///
    /// # Errors
    /// [`TimeError::Overflow`] past [`Timestamp::MAX`]; the clock is unchanged.
    pub fn advance(&self, ms: i64) -> Result<Timestamp, TimeError> {
        let next = self.now().plus_millis(ms)?;
        self.set(next);
        Ok(next)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.now_ms.load(Ordering::SeqCst)).unwrap_or_default()
    }
}
