//! The contract suites on the in-memory stores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use spendgate_adapter_memory::MemoryBudgetStore;
use spendgate_domain::BudgetPolicy;
use spendgate_ports::BudgetStore;

async fn store() -> Arc<dyn BudgetStore> {
    Arc::new(MemoryBudgetStore::new(BudgetPolicy::default()))
}

spendgate_contract::budget_store_contract!(store);

/// The idempotency scenarios and races on the in-memory records.
mod idempotency {
    use std::sync::Arc;

    use spendgate_adapter_memory::MemoryIdempotency;
    use spendgate_ports::IdempotencyStore;

    async fn store() -> Arc<dyn IdempotencyStore> {
        Arc::new(MemoryIdempotency::new())
    }

    spendgate_contract::idempotency_store_contract!(store);
}

/// The in-memory work queue: claims by due time without scanning, an
/// optional bound, dead letters kept out of every claim.
mod queue {
    use spendgate_adapter_memory::MemoryWorkQueue;
    use spendgate_domain::{
        CommunityId, Hold, HoldRef, IdempotencyKey, Micros, ModelAlias, Period, Timestamp, Ttl,
        UserId,
    };
    use spendgate_ports::{Handover, RepoError, WorkQueue};

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms).unwrap()
    }

    fn lease() -> Ttl {
        Ttl::from_millis(1_000).unwrap()
    }

    fn handover(key: &str) -> Handover {
        Handover {
            community: CommunityId::parse("c").unwrap(),
            hold: Hold {
                user: UserId::parse("u").unwrap(),
                key: IdempotencyKey::parse(key).unwrap(),
                estimate: Micros::new(5).unwrap(),
                model: ModelAlias::parse("cheap").unwrap(),
                period: Period::parse("2026-11").unwrap(),
                created_at: at(0),
                expires_at: at(1),
            },
            trace_id: None,
            handed_at: at(0),
        }
    }

    fn keys(claimed: &[spendgate_ports::Claimed<Handover>]) -> Vec<&str> {
        claimed.iter().map(|c| c.item.hold.key.as_str()).collect()
    }

    fn hold(key: &str) -> HoldRef {
        handover(key).hold.hold_ref()
    }

    /// Which use of its key every `handover` is.
    fn instance() -> Option<Timestamp> {
        Some(at(0))
    }

    fn community() -> CommunityId {
        CommunityId::parse("c").unwrap()
    }

    #[tokio::test]
    async fn claims_take_the_earliest_due_first_and_skip_running_leases() {
        let q = MemoryWorkQueue::new();
        for (key, due) in [("late", 30), ("early", 10), ("future", 1_000), ("mid", 20)] {
            assert!(q.enqueue(&handover(key), at(due)).await.unwrap());
        }
        assert_eq!(
            keys(&q.claim_due(at(25), 2, lease()).await.unwrap()),
            ["early", "mid"]
        );
        assert_eq!(
            keys(&q.claim_due(at(30), 10, lease()).await.unwrap()),
            ["late"]
        );
        // The first two are leased until 1,025, the third until 1,030.
        assert_eq!(
            keys(&q.claim_due(at(1_025), 10, lease()).await.unwrap()),
            ["early", "mid", "future"]
        );
        assert!(
            q.claim_due(at(1_029), 10, lease())
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            keys(&q.claim_due(at(1_030), 10, lease()).await.unwrap()),
            ["late"]
        );
    }

    #[tokio::test]
    async fn a_key_used_again_has_an_item_per_use_and_each_is_settled_alone() {
        let q = MemoryWorkQueue::new();
        let first = handover("k");
        let mut second = handover("k");
        second.hold.created_at = at(100);
        assert!(q.enqueue(&first, at(0)).await.unwrap());
        assert!(q.enqueue(&second, at(0)).await.unwrap());
        assert!(!q.enqueue(&second, at(0)).await.unwrap(), "the same use");
        assert_eq!(q.len().await.unwrap(), 2);
        assert!(
            q.dead_letter(&community(), &hold("k"), instance(), "x", at(5))
                .await
                .unwrap()
        );
        let next = Some(at(100));
        assert!(q.complete(&community(), &hold("k"), next).await.unwrap());
        assert!(!q.complete(&community(), &hold("k"), next).await.unwrap());
        assert_eq!(
            (q.len().await.unwrap(), q.dead_letter_count().await.unwrap()),
            (0, 1)
        );
        // The next use is queued beside the parked one, which stays parked.
        let mut third = handover("k");
        third.hold.created_at = at(200);
        assert!(q.enqueue(&third, at(0)).await.unwrap());
        assert_eq!(
            (q.len().await.unwrap(), q.dead_letter_count().await.unwrap()),
            (1, 1)
        );
    }

    #[tokio::test]
    async fn a_retried_item_is_due_at_its_new_time_with_one_more_attempt() {
        let q = MemoryWorkQueue::new();
        q.enqueue(&handover("k"), at(0)).await.unwrap();
        q.claim_due(at(0), 1, lease()).await.unwrap();
        assert!(
            q.retry_at(&community(), &hold("k"), instance(), "down", at(50))
                .await
                .unwrap()
        );
        assert!(q.claim_due(at(49), 1, lease()).await.unwrap().is_empty());
        let claimed = q.claim_due(at(50), 1, lease()).await.unwrap();
        assert_eq!(claimed[0].attempts, 1);
        assert_eq!(claimed[0].last_error.as_deref(), Some("down"));
        assert!(
            q.complete(&community(), &hold("k"), instance())
                .await
                .unwrap()
        );
        assert_eq!(q.len().await.unwrap(), 0);
        assert!(
            q.claim_due(at(10_000), 1, lease())
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_bounded_queue_refuses_past_its_capacity_and_accepts_once_drained() {
        let q = MemoryWorkQueue::bounded(2);
        assert!(q.enqueue(&handover("a"), at(0)).await.unwrap());
        assert!(q.enqueue(&handover("b"), at(0)).await.unwrap());
        assert!(
            !q.enqueue(&handover("a"), at(0)).await.unwrap(),
            "a replay is no new item"
        );
        assert_eq!(
            q.enqueue(&handover("c"), at(0)).await,
            Err(RepoError::Full { capacity: 2 })
        );
        assert_eq!(q.len().await.unwrap(), 2);
        q.complete(&community(), &hold("a"), instance())
            .await
            .unwrap();
        assert!(q.enqueue(&handover("c"), at(0)).await.unwrap());
    }

    #[tokio::test]
    async fn a_dead_letter_is_never_claimed_nor_retried_and_complete_removes_it() {
        let q = MemoryWorkQueue::new();
        q.enqueue(&handover("dead"), at(0)).await.unwrap();
        q.enqueue(&handover("live"), at(0)).await.unwrap();
        q.claim_due(at(0), 10, lease()).await.unwrap();
        assert!(
            q.dead_letter(
                &community(),
                &hold("dead"),
                instance(),
                "counter out of range",
                at(5)
            )
            .await
            .unwrap()
        );
        assert!(
            !q.dead_letter(&community(), &hold("none"), instance(), "x", at(5))
                .await
                .unwrap()
        );
        assert!(
            !q.retry_at(&community(), &hold("dead"), instance(), "x", at(0))
                .await
                .unwrap()
        );
        assert_eq!(
            keys(&q.claim_due(at(5_000), 10, lease()).await.unwrap()),
            ["live"]
        );
        assert_eq!(
            (q.len().await.unwrap(), q.dead_letter_count().await.unwrap()),
            (1, 1)
        );
        let dead = q.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].item, handover("dead"));
        assert_eq!((dead[0].attempts, dead[0].dead_at), (1, at(5)));
        assert_eq!(dead[0].error, "counter out of range");
        assert!(
            q.complete(&community(), &hold("dead"), instance())
                .await
                .unwrap()
        );
        assert_eq!(q.dead_letter_count().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn pending_counts_the_communitys_live_items_leased_or_not() {
        let q = MemoryWorkQueue::new();
        for k in ["due", "leased", "dead"] {
            q.enqueue(&handover(k), at(0)).await.unwrap();
        }
        q.claim_due(at(0), 1, lease()).await.unwrap();
        q.dead_letter(&community(), &hold("dead"), instance(), "x", at(0))
            .await
            .unwrap();
        assert_eq!(q.pending(&community()).await.unwrap(), 2);
        let other = spendgate_domain::CommunityId::parse("someone-else").unwrap();
        assert_eq!(q.pending(&other).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_new_item_of_a_dead_lettered_call_takes_its_place() {
        let q = MemoryWorkQueue::bounded(1);
        q.enqueue(&handover("k"), at(0)).await.unwrap();
        assert!(
            q.dead_letter(&community(), &hold("k"), instance(), "out of range", at(5))
                .await
                .unwrap()
        );
        assert!(
            q.enqueue(&handover("k"), at(10)).await.unwrap(),
            "within the bound"
        );
        assert!(
            !q.enqueue(&handover("k"), at(10)).await.unwrap(),
            "live now"
        );
        assert_eq!(
            (q.len().await.unwrap(), q.dead_letter_count().await.unwrap()),
            (1, 0)
        );
        assert_eq!(
            keys(&q.claim_due(at(10), 10, lease()).await.unwrap()),
            ["k"]
        );
    }
}

/// The in-memory usage log's answer for one use of a key.
mod usage {
    use spendgate_adapter_memory::MemoryUsageLog;
    use spendgate_domain::{
        CommunityId, HoldRef, IdempotencyKey, Micros, ModelAlias, Period, Timestamp, TokenCounts,
        UserId,
    };
    use spendgate_ports::{CostSource, UsageLog, UsageRecord};

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms).unwrap()
    }

    fn record(key: &str, hold_created_at: i64, created_at: i64) -> UsageRecord {
        UsageRecord {
            community: CommunityId::parse("c").unwrap(),
            user: UserId::parse("u").unwrap(),
            key: IdempotencyKey::parse(key).unwrap(),
            hold_created_at: at(hold_created_at),
            model: ModelAlias::parse("cheap").unwrap(),
            tokens: TokenCounts::default(),
            cost: Micros::new(5).unwrap(),
            estimate: Micros::new(5).unwrap(),
            trace_id: None,
            source: CostSource::Finalize,
            period: Period::parse("2026-11").unwrap(),
            created_at: at(created_at),
        }
    }

    fn hold(key: &str) -> HoldRef {
        HoldRef {
            user: UserId::parse("u").unwrap(),
            key: IdempotencyKey::parse(key).unwrap(),
        }
    }

    #[tokio::test]
    async fn logged_use_answers_for_exactly_one_use_of_a_key() {
        let log = MemoryUsageLog::default();
        let c = CommunityId::parse("c").unwrap();
        let second = record("reuse", 2_000, 2_100);
        let legacy = record("old", 0, 1_100);
        log.append(&[second.clone(), legacy.clone()]).await.unwrap();
        assert_eq!(
            log.logged_use(&c, &hold("reuse"), at(1_000)).await.unwrap(),
            None
        );
        assert_eq!(
            log.logged_use(&c, &hold("reuse"), at(2_000)).await.unwrap(),
            Some(second)
        );
        assert_eq!(
            log.logged_use(&c, &hold("old"), at(1_000)).await.unwrap(),
            Some(legacy)
        );
        assert_eq!(
            log.logged_use(&c, &hold("old"), at(1_101)).await.unwrap(),
            None
        );
    }
}
