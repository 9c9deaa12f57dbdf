//! Random interleavings, checked step by step against the domain model.
//!
//! Each case drives three communities (one sometimes left unconfigured)
//! and five users through 50–80 operations (reserve, extend, finalize,
//! commit_unheld, cancel, reap, limit changes, clock advances) starting
//! ten minutes before a month boundary, with clock advances from 1 ms to a day so that holds
//! expire, markers age out and periods change. After every operation the
//! store's result must equal the model's, and the touched community's
//! status must equal the model's in every period seen so far; the harness
//! also keeps its own ledger to check the laws directly:
//!
//! 1. an accepted reserve never leaves `committed + reserved` above the limit;
//! 2. `committed` equals the sum of committed actuals, and `reserved` the
//!    sum of live estimates (the model's conservation check);
//! 3. each hold commits at most once, whatever is replayed;
//! 4. every receipt names the period its hold was reserved in.
//!
//! Cases default to 1,000; `SPENDGATE_CONTRACT_CASES` overrides.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use spendgate_domain::{
    BudgetPolicy, CommunityBudget, CommunityId, ConfigVersion, FinalizeOutcome, HoldRef, Limits,
    ModelAlias, Period, Reservation, ReserveOutcome, Settlement, Timestamp, Ttl, UnheldCommit,
};
use spendgate_ports::{BudgetStatus, BudgetStore, PageSize, StoreError};

use crate::fixture::{december_start, key, listing_in_pages, m, unique_community, user};

const COMMUNITIES: usize = 3;
const USERS: usize = 5;
const KEYS: usize = 6;

/// One step of a generated interleaving; indices pick among the case's
/// communities, users and keys.
#[derive(Debug, Clone)]
pub enum Op {
    /// Reserve `estimate` for `ttl_ms`.
    Reserve {
        /// Community index.
        c: usize,
        /// User index.
        u: usize,
        /// Key index.
        k: usize,
        /// Estimate in micro-USD.
        estimate: i64,
        /// Hold TTL.
        ttl_ms: i64,
    },
    /// Extend by `ttl_ms`.
    Extend {
        /// Community index.
        c: usize,
        /// User index.
        u: usize,
        /// Key index.
        k: usize,
        /// New TTL from now.
        ttl_ms: i64,
    },
    /// Finalize with `actual`.
    Finalize {
        /// Community index.
        c: usize,
        /// User index.
        u: usize,
        /// Key index.
        k: usize,
        /// Actual cost.
        actual: i64,
    },
    /// Commit `actual` whether or not the store holds the call, to one of
    /// the periods the case has seen (picked by `p` modulo their count).
    CommitUnheld {
        /// Community index.
        c: usize,
        /// User index.
        u: usize,
        /// Key index.
        k: usize,
        /// Actual cost.
        actual: i64,
        /// Period pick.
        p: usize,
    },
    /// Cancel.
    Cancel {
        /// Community index.
        c: usize,
        /// User index.
        u: usize,
        /// Key index.
        k: usize,
    },
    /// Reap one community.
    Reap {
        /// Community index.
        c: usize,
    },
    /// Replace a community's limits, of a configuration version (from a
    /// small range, so older and equal versions come up often).
    SetLimits {
        /// Community index.
        c: usize,
        /// Community limit.
        limit: i64,
        /// Optional per-user cap.
        cap: Option<i64>,
        /// Configuration version.
        version: i64,
    },
    /// Move the clock forward.
    Advance {
        /// Milliseconds.
        ms: i64,
    },
}

fn ttl_ms() -> impl Strategy<Value = i64> {
    prop_oneof![Just(1), Just(1_000), Just(60_000), Just(600_000)]
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..COMMUNITIES;
    let u = 0..USERS;
    let k = 0..KEYS;
    prop_oneof![
        5 => (c.clone(), u.clone(), k.clone(), prop_oneof![Just(0i64), 1..400i64], ttl_ms())
            .prop_map(|(c, u, k, estimate, ttl_ms)| Op::Reserve { c, u, k, estimate, ttl_ms }),
        1 => (c.clone(), u.clone(), k.clone(), ttl_ms())
            .prop_map(|(c, u, k, ttl_ms)| Op::Extend { c, u, k, ttl_ms }),
        4 => (c.clone(), u.clone(), k.clone(), 0..600i64)
            .prop_map(|(c, u, k, actual)| Op::Finalize { c, u, k, actual }),
        1 => (c.clone(), u.clone(), k.clone(), 0..600i64, 0..4usize)
            .prop_map(|(c, u, k, actual, p)| Op::CommitUnheld { c, u, k, actual, p }),
        1 => (c.clone(), u.clone(), k.clone()).prop_map(|(c, u, k)| Op::Cancel { c, u, k }),
        2 => c.clone().prop_map(|c| Op::Reap { c }),
        1 => (c, 0..2000i64, proptest::option::of(0..800i64), 0..4i64)
            .prop_map(|(c, limit, cap, version)| Op::SetLimits { c, limit, cap, version }),
        2 => prop_oneof![
            Just(1i64), Just(999), Just(30_000), Just(120_000), Just(3_600_000), Just(86_400_000)
        ]
        .prop_map(|ms| Op::Advance { ms }),
    ]
}

fn limits(limit: i64, cap: Option<i64>) -> Limits {
    let base = Limits::new(m(limit));
    match cap {
        Some(cap) => base.with_per_user_cap(m(cap)),
        None => base,
    }
}

/// Runs the property test against stores built by `factory`: one store for
/// all cases, fresh community ids per case.
pub fn check<F, Fut>(factory: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Arc<dyn BudgetStore>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let store = runtime.block_on(factory());
    let cases = std::env::var("SPENDGATE_CONTRACT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let initial = proptest::collection::vec(
        proptest::option::weighted(0.9, (0..2000i64, proptest::option::of(0..800i64))),
        COMMUNITIES,
    );
    let strategy = (initial, proptest::collection::vec(op(), 50..=80));
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |(initial, ops)| {
        runtime.block_on(Case::new(Arc::clone(&store)).run(&initial, &ops))
    });
    if let Err(failure) = result {
        panic!("store diverged from the model: {failure}");
    }
}

/// One generated case: the store, the model and the harness's own ledger.
struct Case {
    store: Arc<dyn BudgetStore>,
    policy: BudgetPolicy,
    ids: Vec<CommunityId>,
    models: Vec<CommunityBudget>,
    now: Timestamp,
    periods: BTreeSet<Period>,
    /// Period each live hold instance was reserved in, and whether it has
    /// committed a cost yet.
    instances: BTreeMap<(usize, HoldRef), (Period, bool)>,
    /// Sum of receipts' actuals per (community, period).
    committed: BTreeMap<(usize, Period), i64>,
}

impl Case {
    fn new(store: Arc<dyn BudgetStore>) -> Self {
        let ids = (0..COMMUNITIES)
            .map(|i| unique_community(&format!("model{i}")))
            .collect();
        let now = december_start(-600_000);
        Self {
            store,
            policy: BudgetPolicy::default(),
            ids,
            models: vec![CommunityBudget::default(); COMMUNITIES],
            now,
            periods: BTreeSet::from([Period::containing(now).unwrap()]),
            instances: BTreeMap::new(),
            committed: BTreeMap::new(),
        }
    }

    async fn run(
        mut self,
        initial: &[Option<(i64, Option<i64>)>],
        ops: &[Op],
    ) -> Result<(), TestCaseError> {
        for (c, limit) in initial.iter().enumerate() {
            if let Some((limit, cap)) = limit {
                self.apply(&Op::SetLimits {
                    c,
                    limit: *limit,
                    cap: *cap,
                    version: 0,
                })
                .await?;
            }
        }
        for (step, op) in ops.iter().enumerate() {
            self.apply(op)
                .await
                .map_err(|e| TestCaseError::fail(format!("step {step} {op:?}: {e}")))?;
        }
        Ok(())
    }

    fn hold_ref(u: usize, k: usize) -> HoldRef {
        HoldRef {
            user: user(&format!("user{u}")),
            key: key(&format!("key{k}")),
        }
    }

    async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.now;
        let policy = self.policy;
        let touched = match *op {
            Op::Reserve {
                c,
                u,
                k,
                estimate,
                ttl_ms,
            } => {
                let hold = Self::hold_ref(u, k);
                let reservation = Reservation {
                    user: hold.user.clone(),
                    key: hold.key.clone(),
                    estimate: m(estimate),
                    model: ModelAlias::parse("cheap").unwrap(),
                    ttl: Ttl::from_millis(ttl_ms).unwrap(),
                };
                let got = self.store.reserve(&self.ids[c], &reservation, now).await;
                let want = self.models[c]
                    .reserve(&reservation, now, policy)
                    .map_err(|e| StoreError::from_domain(&self.ids[c], e));
                prop_assert_eq!(&got, &want);
                if let Ok(ReserveOutcome::Reserved { .. }) = got {
                    let period = Period::containing(now).unwrap();
                    self.instances.insert((c, hold), (period, false));
                    let status = self.status(c, period).await?;
                    let used = status.committed.checked_add(status.reserved).unwrap();
                    let limit = status.limits.map(|l| l.limit);
                    prop_assert!(Some(used) <= limit, "law 1: {:?} over {:?}", used, limit);
                }
                c
            }
            Op::Extend { c, u, k, ttl_ms } => {
                let hold = Self::hold_ref(u, k);
                let ttl = Ttl::from_millis(ttl_ms).unwrap();
                let got = self.store.extend(&self.ids[c], &hold, ttl, now).await;
                let want = self.models[c]
                    .extend(&hold, ttl, now)
                    .map_err(|e| StoreError::from_domain(&self.ids[c], e));
                prop_assert_eq!(got, want);
                c
            }
            Op::Finalize { c, u, k, actual } => {
                let hold = Self::hold_ref(u, k);
                let settlement = Settlement {
                    user: hold.user.clone(),
                    key: hold.key.clone(),
                    actual: m(actual),
                };
                let got = self.store.finalize(&self.ids[c], &settlement, now).await;
                let want = self.models[c]
                    .finalize(&settlement, now, policy)
                    .map_err(|e| StoreError::from_domain(&self.ids[c], e));
                prop_assert_eq!(&got, &want);
                self.record(c, hold, got)?;
                c
            }
            Op::CommitUnheld { c, u, k, actual, p } => {
                let hold = Self::hold_ref(u, k);
                let seen: Vec<Period> = self.periods.iter().copied().collect();
                let commit = UnheldCommit {
                    user: hold.user.clone(),
                    key: hold.key.clone(),
                    actual: m(actual),
                    period: seen[p % seen.len()],
                    model: ModelAlias::parse("cheap").unwrap(),
                };
                let got = self.store.commit_unheld(&self.ids[c], &commit, now).await;
                let want = self.models[c]
                    .commit_unheld(&commit, now, policy)
                    .map_err(|e| StoreError::from_domain(&self.ids[c], e));
                prop_assert_eq!(&got, &want);
                self.record(c, hold, got)?;
                c
            }
            Op::Cancel { c, u, k } => {
                let hold = Self::hold_ref(u, k);
                let got = self.store.cancel(&self.ids[c], &hold, now).await;
                let want = self.models[c]
                    .cancel(&hold, now, policy)
                    .map_err(|e| StoreError::from_domain(&self.ids[c], e));
                prop_assert_eq!(&got, &want);
                self.record(c, hold, got)?;
                c
            }
            Op::Reap { c } => {
                let got = self.store.reap(&self.ids[c], now).await;
                let want = self.models[c]
                    .reap(now, policy)
                    .map_err(|e| StoreError::from_domain(&self.ids[c], e));
                prop_assert_eq!(got, want);
                c
            }
            Op::SetLimits {
                c,
                limit,
                cap,
                version,
            } => {
                let limits = limits(limit, cap);
                let version = ConfigVersion::new(version).unwrap();
                let got = self.store.set_limits(&self.ids[c], limits, version).await;
                prop_assert_eq!(got, Ok(()));
                self.models[c].set_limits(limits, version);
                c
            }
            Op::Advance { ms } => {
                self.now = self.now.plus_millis(ms).unwrap();
                self.periods.insert(Period::containing(self.now).unwrap());
                return Ok(());
            }
        };
        self.check_laws(touched).await
    }

    /// Ledger for laws 3 and 4: a committed receipt belongs to a hold
    /// instance that has not committed before, in its reservation period.
    fn record(
        &mut self,
        c: usize,
        hold: HoldRef,
        got: Result<FinalizeOutcome, StoreError>,
    ) -> Result<(), TestCaseError> {
        let receipt = match got {
            Ok(FinalizeOutcome::Finalized(r) | FinalizeOutcome::LateFinalized(r)) => r,
            // A cost for a call the store held nothing about: no hold
            // instance to settle (any earlier one was settled, or its
            // tombstone aged out), so it only adds to its period's ledger.
            Ok(FinalizeOutcome::CommittedWithoutHold(r)) => {
                *self.committed.entry((c, r.period)).or_default() += r.actual.get();
                return Ok(());
            }
            _ => return Ok(()),
        };
        let Some((period, committed)) = self.instances.get_mut(&(c, hold)) else {
            return Err(TestCaseError::fail("receipt for a hold never reserved"));
        };
        prop_assert!(!*committed, "law 3: a hold committed twice");
        prop_assert_eq!(*period, receipt.period, "law 4: receipt in another period");
        *committed = true;
        *self.committed.entry((c, receipt.period)).or_default() += receipt.actual.get();
        Ok(())
    }

    async fn status(&self, c: usize, period: Period) -> Result<BudgetStatus, TestCaseError> {
        self.store
            .status(&self.ids[c], period)
            .await
            .map_err(|e| TestCaseError::fail(format!("status failed: {e}")))
    }

    async fn check_laws(&self, c: usize) -> Result<(), TestCaseError> {
        self.models[c]
            .check_conservation()
            .map_err(|e| TestCaseError::fail(format!("law 2 (model): {e}")))?;
        for period in &self.periods {
            let got = self.status(c, *period).await?;
            let want = BudgetStatus::from_model(&self.models[c], *period, None);
            prop_assert_eq!(&got, &want, "status of {}", period);
            let listed =
                listing_in_pages(self.store.as_ref(), &self.ids[c], *period, PageSize::MAX).await;
            let users = self.models[c].counters(*period).users;
            prop_assert_eq!(&listed, &users, "users of {}", period);
            let ledger = self.committed.get(&(c, *period)).copied().unwrap_or(0);
            prop_assert_eq!(got.committed, m(ledger), "law 2: committed of {}", period);
        }
        Ok(())
    }
}
