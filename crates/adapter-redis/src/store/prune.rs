//! Pruning periods long past: a community's record hash gains a period's
//! totals, one sums field per user and a user set every month; without
//! pruning, its memory would grow month after month.
//!
//! A period is kept while anything may still write to it: a hold of it
//! lives at most [`Ttl::MAX_MS`] past the period's end, and its reap
//! tombstone (which a late finalize commits into the period) the
//! policy's marker TTL after the reap. The retention doubles that sum, so
//! a reaper as late as the sum itself still finds the period, and the
//! current and previous periods are always kept. A period whose totals
//! still count a hold is never pruned (the script checks), whatever the
//! clock says. Status of a pruned period reads as empty; the durable
//! record of past periods is the usage log.

use redis::aio::ConnectionLike;
use spendgate_domain::{CommunityId, Period, Timestamp, Ttl};
use spendgate_ports::StoreError;

use super::RedisBudgetStore;
use crate::keys::{records_key, user_sums_key};
use crate::script::Op;

/// How long after its end a period is kept, in ms: twice the longest a
/// hold and then its tombstone may still write to it.
fn retention_ms(marker_ttl: Ttl) -> i64 {
    2 * (Ttl::MAX_MS + marker_ttl.as_millis())
}

/// The periods of `listed` (the header's list, space separated) that a
/// reap at `now` may prune: those ended more than the retention ago.
///
/// # Errors
/// [`StoreError::Corrupt`] for a listed period that does not parse.
fn prunable(listed: &str, now: Timestamp, marker_ttl: Ttl) -> Result<Vec<Period>, StoreError> {
    let Ok(horizon) = now.plus_millis(-retention_ms(marker_ttl)) else {
        return Ok(Vec::new());
    };
    let Ok(keep_from) = Period::containing(horizon) else {
        return Ok(Vec::new());
    };
    let mut old = Vec::new();
    for text in listed.split_ascii_whitespace() {
        let period = Period::parse(text)
            .map_err(|e| StoreError::Corrupt(format!("listed period {text:?}: {e}")))?;
        if period < keep_from {
            old.push(period);
        }
    }
    Ok(old)
}

impl<C> RedisBudgetStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Prunes the periods of `listed` that ended more than the retention
    /// before `now` and count no hold: script calls of bounded work each
    /// (`lua/prune.lua` deletes at most a batch of users' sums a call)
    /// until none is left, and none when no listed period is that old.
    /// Returns how many periods were pruned.
    ///
    /// # Errors
    /// As any script call: [`StoreError::Unavailable`],
    /// [`StoreError::Corrupt`]; a refused call prunes nothing.
    pub(super) async fn prune_periods(
        &self,
        community: &CommunityId,
        now: Timestamp,
        listed: &str,
    ) -> Result<i64, StoreError> {
        let periods = prunable(listed, now, self.policy.marker_ttl())?;
        if periods.is_empty() {
            return Ok(0);
        }
        let mut keys = vec![records_key(community)];
        keys.extend(periods.iter().map(|p| user_sums_key(community, *p)));
        let texts: Vec<String> = periods.iter().map(Period::to_string).collect();
        let args: Vec<&[u8]> = texts.iter().map(String::as_bytes).collect();
        let mut pruned = 0;
        loop {
            let reply = self.invoke(Op::Prune, &keys, &args).await?;
            pruned += reply.int(0, "pruned periods")?;
            if reply.int(2, "more")? == 0 {
                return Ok(pruned);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        let period = Period::parse(text).unwrap();
        period.start()
    }

    fn texts(periods: &[Period]) -> Vec<String> {
        periods.iter().map(Period::to_string).collect()
    }

    #[test]
    fn only_periods_ended_more_than_the_retention_ago_are_prunable() {
        // Retention with a one-day marker TTL: 62 days. On 2027-03-01,
        // 62 days back is 2026-12-29: December is kept, November not.
        let got = prunable("2026-10 2026-11 2026-12 2027-01", at("2027-03"), Ttl::DAY).unwrap();
        assert_eq!(texts(&got), ["2026-10", "2026-11"]);
    }

    #[test]
    fn the_current_and_previous_periods_are_never_prunable() {
        let got = prunable("2027-02 2027-03", at("2027-03"), Ttl::DAY).unwrap();
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn a_clock_within_the_retention_of_1970_prunes_nothing() {
        let got = prunable("1970-01", Timestamp::from_millis(5).unwrap(), Ttl::DAY).unwrap();
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn an_unreadable_listed_period_is_corrupt() {
        assert!(matches!(
            prunable("2026-13", at("2027-03"), Ttl::DAY),
            Err(StoreError::Corrupt(_))
        ));
    }
}
