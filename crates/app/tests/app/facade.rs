//! The builder and the service boundary: instances share nothing, and bad
//! input gets a typed error before anything is held.

use spendgate::domain::{CommunityId, Limits, Micros, PricingError};
use spendgate::ports::StoreError;
use spendgate::{
    CostBasis, EstimateError, FinalizeError, MAX_TRACE_ID_LEN, ReserveError, Spendgate, Usage,
};

use crate::support::{community, model, usd};

use crate::support::memory as env;

#[tokio::test]
async fn two_instances_in_one_process_share_nothing() {
    let a = Spendgate::builder().build().await.unwrap();
    let b = Spendgate::builder().build().await.unwrap();
    let c = community("shared");
    a.budget()
        .set_budget(&c, Limits::new(usd(5)))
        .await
        .unwrap();
    let request = spendgate::ReserveRequest::tokens(
        c.clone(),
        crate::support::user("u"),
        crate::support::key("k"),
        model("cheap"),
        1,
        10,
        10,
    );
    let refused = b.budget().reserve(request).await.unwrap_err();
    assert!(
        matches!(refused, ReserveError::NotConfigured(_)),
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_oversized_trace_id_is_refused_before_any_hold() {
    let env = env().await;
    let c = env.community("trace", 10).await;
    let request = env
        .request(&c, "k1")
        .with_trace_id("t".repeat(MAX_TRACE_ID_LEN + 1));
    let refused = env.sg.budget().reserve(request).await.unwrap_err();
    assert!(
        matches!(refused, ReserveError::InvalidInput(_)),
        "{refused:?}"
    );
    assert_eq!(
        env.sg.budget().status(&c, None, None).await.unwrap().holds,
        0
    );
}

#[tokio::test]
async fn an_overflowing_token_count_is_a_pricing_error() {
    let env = env().await;
    let c = env.community("overflow", 10).await;
    let error = env
        .sg
        .budget()
        .estimate(&c, &model("reasoning"), u64::MAX, u64::MAX, true)
        .await
        .unwrap_err();
    assert_eq!(error, EstimateError::Pricing(PricingError::Overflow));
    let mut request = env.request(&c, "k1");
    request.cost = CostBasis::Tokens {
        prompt: u64::MAX,
        max_completion: u64::MAX,
        tool_use: false,
    };
    let refused = env.sg.budget().reserve(request).await.unwrap_err();
    assert!(
        matches!(refused, ReserveError::Pricing(PricingError::Overflow)),
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_unknown_model_cannot_be_estimated() {
    let env = env().await;
    let c = env.community("unknown-model", 10).await;
    let error = env
        .sg
        .budget()
        .estimate(&c, &model("mystery"), 1, 1, false)
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        EstimateError::Pricing(PricingError::UnknownAlias(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_that_cannot_be_costed_writes_nothing_and_hands_the_hold_over() {
    let env = env().await;
    let c = env.community("uncostable", 10).await;
    let hold = env.reserve(env.request(&c, "k1")).await;
    let error = hold
        .finalize(Usage::tokens(u64::MAX, u64::MAX))
        .await
        .unwrap_err();
    assert!(
        matches!(error, FinalizeError::Pricing(PricingError::Overflow)),
        "{error:?}"
    );
    let status = env.sg.budget().status(&c, None, None).await.unwrap();
    assert_eq!((status.committed, status.holds), (Micros::ZERO, 1));
    assert_eq!(env.queue.len().await.unwrap(), 0);
    assert_eq!(env.handovers(1).await.len(), 1);
}

#[tokio::test]
async fn status_shows_overspend_beside_a_remaining_floored_at_zero() {
    let env = env().await;
    let c = env.community("overspend", 1).await;
    let hold = env.reserve(env.request(&c, "k1")).await;
    hold.finalize(Usage::cost(Micros::from_usd(3)))
        .await
        .unwrap();
    let report = env.sg.budget().status(&c, None, None).await.unwrap();
    assert_eq!(report.remaining, Micros::ZERO);
    assert_eq!(report.overspend, Micros::from_usd(2));
}

#[tokio::test]
async fn a_budget_saved_while_the_store_is_down_says_config_sync_will_apply_it() {
    let env = env().await;
    let c = env.community("set-budget", 1).await;
    env.faults.set_store_down(true);
    let error = env
        .sg
        .budget()
        .set_budget(&c, Limits::new(usd(7)))
        .await
        .unwrap_err();
    assert!(
        matches!(error, spendgate::BudgetChangeError::StoreNotUpdated(_)),
        "{error:?}"
    );
    assert!(error.to_string().contains("next config sync"));
    let saved = env.sg.ports().config.community(&c).await.unwrap().unwrap();
    assert_eq!(saved.limits, Limits::new(usd(7)));
}

#[test]
fn malformed_money_and_ids_never_reach_the_services() {
    use spendgate::domain::{CommunityId, MoneyError};
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.01, 1e300] {
        assert!(Micros::from_usd_f64(bad).is_err(), "{bad} was accepted");
    }
    assert!(matches!(
        Micros::parse_usd("-1.00"),
        Err(MoneyError::Negative(_) | MoneyError::Malformed(_))
    ));
    assert!(
        Micros::parse_usd("0.0000001").is_err(),
        "sub-micro amounts are refused, not rounded"
    );
    assert!(CommunityId::parse("c".repeat(200)).is_err());
    assert!(CommunityId::parse("").is_err());
    assert!(CommunityId::parse("a{b}").is_err());
}

#[test]
fn reserve_outcomes_are_counted_by_outcome() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let env = env().await;
            let c = env.community("metrics", 10).await;
            let hold = env.reserve(env.request(&c, "k1")).await;
            hold.cancel().await.unwrap();
            let _ = env.sg.budget().reserve(env.request(&c, "k1")).await;
        });
    });
    let counted: Vec<(String, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == spendgate::services::telemetry::RESERVES)
        .filter_map(|(key, _, _, value)| match value {
            metrics_util::debugging::DebugValue::Counter(n) => Some((
                key.key()
                    .labels()
                    .map(|l| l.value().to_owned())
                    .collect::<String>(),
                n,
            )),
            _ => None,
        })
        .collect();
    assert!(counted.contains(&("reserved".to_owned(), 1)), "{counted:?}");
    assert!(
        counted.contains(&("already_settled".to_owned(), 1)),
        "{counted:?}"
    );
}

/// A spendgate on a mocked store (configured through a memory config).
async fn on_mock_store(store: spendgate::ports::MockBudgetStore) -> (Spendgate, CommunityId) {
    let config = std::sync::Arc::new(spendgate_adapter_memory::MemoryConfig::default());
    let c = community("mocked");
    spendgate::ports::ConfigProvider::upsert(
        config.as_ref(),
        &spendgate::ports::CommunityConfig {
            community: c.clone(),
            ai_enabled: true,
            limits: Limits::new(usd(10)),
            pricing_overrides: Default::default(),
            version: Default::default(),
        },
    )
    .await
    .unwrap();
    let sg = Spendgate::builder()
        .store(std::sync::Arc::new(store))
        .config(config)
        .build()
        .await
        .unwrap();
    (sg, c)
}

#[tokio::test]
async fn a_store_that_cannot_answer_denies_the_reserve() {
    let mut store = spendgate::ports::MockBudgetStore::new();
    store
        .expect_reserve()
        .times(1)
        .returning(|_, _, _| Err(StoreError::Unavailable("timed out".into())));
    let (sg, c) = on_mock_store(store).await;
    let request = spendgate::ReserveRequest::tokens(
        c,
        crate::support::user("u"),
        crate::support::key("k"),
        model("cheap"),
        1,
        10,
        10,
    );
    let refused = sg.budget().reserve(request).await.unwrap_err();
    assert!(
        matches!(refused, ReserveError::StoreUnavailable(_)),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_finalize_the_store_cannot_answer_is_queued_without_a_commit_elsewhere() {
    let mut store = spendgate::ports::MockBudgetStore::new();
    store
        .expect_finalize()
        .times(1)
        .returning(|_, _, _| Err(StoreError::Unavailable("connection reset".into())));
    store.expect_commit_unheld().never();
    let (sg, c) = on_mock_store(store).await;
    // A hold made just now: the store cannot have forgotten it, so the
    // finalize goes straight to it.
    let now = sg.ports().clock.now();
    let ticket = spendgate::HoldTicket {
        community: c,
        hold: spendgate::domain::Hold {
            user: crate::support::user("u"),
            key: crate::support::key("k"),
            estimate: Micros::new(10).unwrap(),
            model: model("cheap"),
            period: spendgate::domain::Period::containing(now).unwrap(),
            created_at: now,
            expires_at: now.plus_millis(60_000).unwrap(),
        },
        trace_id: None,
    };
    let settled = sg
        .budget()
        .finalize(&ticket, Usage::cost(Micros::new(7).unwrap()))
        .await
        .unwrap();
    assert_eq!(
        settled,
        spendgate::Settled::Queued {
            actual: Micros::new(7).unwrap()
        }
    );
    assert_eq!(sg.ports().finalize_queue.len().await.unwrap(), 1);
}
