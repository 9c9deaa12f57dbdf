//! What one claim of the in-memory work queue costs while many items wait
//! for a later time: the finalize queue's memory fallback during a long
//! database outage, where every settlement waits out its backoff.
//!
//! For each backlog size n, n items are queued due an hour later, then
//! 2,000 rounds each enqueue one due item, claim it and complete it. Only
//! the port's enqueue, claim and complete are used, so the same bench
//! measures any implementation of the queue.
//!
//! `cargo bench -p spendgate-adapter-memory --bench queue_claim`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use spendgate_adapter_memory::MemoryWorkQueue;
use spendgate_domain::{
    CommunityId, Hold, IdempotencyKey, Micros, ModelAlias, Period, Timestamp, Ttl, UserId,
};
use spendgate_ports::{Handover, QueueItem, WorkQueue};

const ROUNDS: u32 = 2_000;

fn handover(n: u64) -> Handover {
    let at = Timestamp::from_millis(1_794_700_800_000).unwrap();
    Handover {
        community: CommunityId::parse(format!("community-{}", n % 100)).unwrap(),
        hold: Hold {
            user: UserId::parse(format!("user-{}", n % 1_000)).unwrap(),
            key: IdempotencyKey::parse(format!("key-{n}")).unwrap(),
            estimate: Micros::new(2_500).unwrap(),
            model: ModelAlias::parse("cheap").unwrap(),
            period: Period::parse("2026-11").unwrap(),
            created_at: at,
            expires_at: at,
        },
        trace_id: None,
        handed_at: at,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let now = Timestamp::from_millis(1_794_700_800_000).unwrap();
    let later = Timestamp::from_millis(1_794_704_400_000).unwrap();
    let lease = Ttl::from_millis(30_000).unwrap();
    println!("backlog      µs per enqueue + claim + complete (median of 5 runs)");
    for backlog in [1_000_u64, 10_000, 100_000] {
        let mut runs = Vec::new();
        for _ in 0..5 {
            let queue = MemoryWorkQueue::<Handover>::new();
            for n in 0..backlog {
                queue.enqueue(&handover(n), later).await.unwrap();
            }
            let items: Vec<Handover> = (0..u64::from(ROUNDS))
                .map(|r| handover(backlog + r))
                .collect();
            let started = Instant::now();
            for item in &items {
                queue.enqueue(item, now).await.unwrap();
                let claimed = queue.claim_due(now, 1, lease).await.unwrap();
                assert_eq!(claimed.len(), 1);
                queue
                    .complete(item.community(), &item.hold_ref(), item.instance())
                    .await
                    .unwrap();
            }
            runs.push(started.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS));
        }
        runs.sort_by(f64::total_cmp);
        println!("{backlog:>7}      {:>10.2}", runs[2]);
    }
}
