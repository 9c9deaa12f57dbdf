//! The one contract suite every spendgate `BudgetStore` (and every
//! `IdempotencyStore`) runs.
//!
//! A test-support crate: adapters add it as a dev-dependency and invoke
//! [`budget_store_contract!`] with a factory in their integration tests, so
//! the memory, Redis, Redis Cluster, PostgreSQL and SQLite stores are held
//! to the same scenarios and cannot drift apart. The suite has three parts:
//!
//! * [`scenarios`]: named, one-behaviour-each specifications of the port
//!   (and [`limits`]: those of `set_limits` and configuration versions);
//! * [`model`]: a property test replaying random interleavings of reserve,
//!   extend, finalize, commit_unheld, cancel, reap, limit changes and clock
//!   advances against the store and the domain model side by side, checking
//!   laws 1–4 after every step;
//! * [`concurrency`]: 1,000 racing reserves that must never overspend;
//! * [`race`]: same-key races (N callers of one (community, user, key) at
//!   once, optionally behind the store's own community lock), each round
//!   checked for exactly one effect and against the model.
//!
//! [`idempotency_store_contract!`] does the same for every
//! `IdempotencyStore`: the [`idempotency`] scenarios and the
//! [`idempotency_race`] races (one start among N racing claims).
//!
//! Notes for adapter authors: money ([`spendgate_domain::Micros`]) and time
//! ([`spendgate_domain::Timestamp`]) are bounded below 2^53 so Lua's doubles
//! stay exact; stores must use the `now` they are given (never their own
//! clock, never key TTLs for logic), and must be built with
//! [`spendgate_domain::BudgetPolicy::default`]. Each scenario makes its own
//! community ids, unique per process and run, so tests share one server.

// Panicking on a broken expectation is how a test suite reports it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

pub mod concurrency;
pub mod fixture;
pub mod idempotency;
pub mod idempotency_race;
pub mod limits;
pub mod load;
pub mod model;
pub mod race;
pub mod recovery;
pub mod scenarios;

use std::future::Future;

/// Runs one async check on a fresh multi-threaded runtime: the store (a
/// `BudgetStore`, an `IdempotencyStore`, …) is built inside it, as
/// connection-based stores must be.
pub fn run<F, Fut, T, S, SFut>(factory: F, check: S)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
    S: FnOnce(T) -> SFut,
    SFut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let store = factory().await;
        check(store).await;
    });
}

/// Expands, in the calling module, to one `#[test]` per contract scenario,
/// the model-equivalence property test and the concurrency test, each
/// building its store with `$factory`: a path to an
/// `async fn() -> Arc<dyn BudgetStore>` whose store uses
/// `BudgetPolicy::default()`.
///
/// ```text
/// async fn store() -> Arc<dyn BudgetStore> {
///     Arc::new(MemoryBudgetStore::new(BudgetPolicy::default()))
/// }
/// spendgate_contract::budget_store_contract!(store);
/// ```
///
/// A store that can hold a community's lock for the race section passes a
/// second factory, an `async fn() -> race::RaceTarget`:
/// `budget_store_contract!(store, races = race_target)`.
#[macro_export]
macro_rules! budget_store_contract {
    ($factory:path) => {
        $crate::budget_store_contract!(@all $factory, || async {
            $crate::race::RaceTarget::plain($factory().await)
        });
    };
    ($factory:path, races = $races:path) => {
        $crate::budget_store_contract!(@all $factory, $races);
    };
    (@all $factory:path, $races:expr) => {
        $crate::__race_tests!(
            $races;
            race_reserve_of_one_key_holds_once,
            race_finalize_with_one_actual_commits_once,
            race_finalize_with_different_actuals_commits_one,
            race_cancel_against_finalize_settles_once,
            race_finalize_against_reap_at_expiry_commits_once,
            race_extend_against_reap_releases_at_most_once,
            race_finalize_against_set_limits_commits_once,
            race_reserve_against_reap_of_an_expired_hold_holds_nothing_new,
            race_commit_unheld_against_finalize_on_a_live_hold_commits_once,
        );

        $crate::__scenario_tests!(
            $factory, recovery;
            due_communities_names_each_community_with_an_expired_hold,
            due_communities_skips_a_hold_not_yet_expired,
            due_communities_returns_at_most_the_limit_earliest_first,
            reaped_community_is_not_due_until_another_hold_expires,
            settled_community_leaves_the_due_list_after_one_reap,
            lookup_follows_a_call_from_reserve_to_marker_expiry,
            lookup_after_reap_shows_the_reaped_hold,
            lookup_is_scoped_to_the_community,
            restore_committed_replaces_committed_sums_and_keeps_holds,
            restore_committed_changes_only_its_period,
            restore_committed_without_limits_keeps_reserves_refused,
            restore_committed_that_would_overflow_is_refused_whole,
            restore_committed_with_no_costs_clears_the_period,
        );

        $crate::__scenario_tests!(
            $factory, limits;
            set_limits_of_an_older_version_after_a_newer_one_changes_nothing,
            set_limits_of_the_same_or_a_newer_version_applies,
            racing_set_limits_of_several_versions_leave_the_newest,
        );

        $crate::__scenario_tests!(
            $factory, scenarios;
            reserve_within_the_limit_is_reserved,
            reserve_replay_returns_the_original_hold,
            reserve_replay_past_the_time_range_returns_the_original_hold,
            reserve_past_the_time_range_is_refused_and_holds_nothing,
            reserve_past_the_limit_is_denied_and_changes_nothing,
            reserve_without_configured_limits_is_refused,
            spend_exactly_at_the_limit_is_accepted,
            zero_estimate_is_accepted_on_a_full_budget,
            very_large_estimate_is_denied_without_overflow,
            finalize_that_would_overflow_committed_is_refused_whole,
            limit_zero_denies_any_positive_estimate,
            lowering_the_limit_keeps_live_holds_and_denies_new_ones,
            set_limits_replaces_the_limit_and_the_cap,
            finalize_releases_the_estimate_and_commits_the_actual,
            finalize_replay_is_already_finalized_with_the_first_actual,
            finalize_over_the_estimate_reports_the_overshoot,
            finalize_of_an_unknown_hold_is_an_error,
            expired_but_unreaped_hold_finalizes_normally,
            cancel_releases_the_estimate_without_committing,
            cancel_replay_is_already_finalized,
            cancel_after_finalize_keeps_the_committed_cost,
            reserve_after_finalize_is_already_settled,
            reap_before_expiry_releases_nothing,
            reap_at_the_expiry_millisecond_releases_the_hold,
            reap_twice_releases_once,
            late_finalize_after_reap_commits_once,
            late_finalize_after_marker_retention_is_unknown,
            finalize_replay_after_marker_retention_is_unknown,
            reserve_after_reap_is_already_settled,
            extend_pushes_the_expiry_past_the_reaper,
            extend_replay_never_shortens_the_hold,
            extend_of_an_expired_hold_is_not_live,
            extend_of_a_settled_hold_is_not_live,
            extend_of_an_unknown_hold_is_an_error,
            warning_fires_once_when_spend_reaches_the_threshold,
            warning_fires_again_in_the_next_period,
            month_boundary_finalize_changes_the_reservation_period,
            month_boundary_reap_and_late_finalize_change_the_reservation_period,
            new_period_starts_clean_while_old_holds_are_live,
            same_user_and_key_in_two_communities_stay_independent,
            reaping_one_community_leaves_another_alone,
            per_user_cap_denies_one_user_while_another_reserves,
            per_user_cap_counts_committed_spend,
            community_limit_is_checked_before_the_user_cap,
            status_lists_only_users_with_spend,
            reserve_with_expiry_past_the_supported_range_is_invalid_input,
            commit_unheld_without_a_hold_commits_to_the_given_period,
            commit_unheld_replay_is_already_finalized,
            commit_unheld_on_a_live_hold_is_a_finalize,
            commit_unheld_after_reap_is_a_late_finalize,
            commit_unheld_works_without_configured_limits,
            commit_unheld_ignores_the_limit_and_reports_the_overshoot,
            commit_unheld_that_would_overflow_is_refused_whole,
            commit_unheld_after_marker_retention_commits_again,
            commit_unheld_racing_itself_commits_once,
        );

        #[test]
        fn store_matches_the_model_under_random_interleavings() {
            $crate::model::check(|| $factory());
        }

        #[test]
        fn concurrent_reserves_never_overspend() {
            $crate::run($factory, $crate::concurrency::thousand_reserves_of_seven);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __scenario_tests {
    ($factory:path, $module:ident; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::run($factory, $crate::$module::$name);
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __race_tests {
    ($races:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::race::run($races, $crate::race::$name);
            }
        )*
    };
}

/// Expands, in the calling module, to one `#[test]` per idempotency
/// scenario and race, each building its store with `$factory`: a path to
/// an `async fn() -> Arc<dyn IdempotencyStore>` returning a fresh, empty
/// store (scenarios count what a purge of everything deletes).
///
/// ```text
/// async fn store() -> Arc<dyn IdempotencyStore> {
///     Arc::new(MemoryIdempotency::new())
/// }
/// spendgate_contract::idempotency_store_contract!(store);
/// ```
///
/// A store that can hold every claim's write back for the races passes a
/// second factory, an `async fn() -> idempotency_race::RaceTarget`:
/// `idempotency_store_contract!(store, races = race_target)`.
///
/// A store whose records expire by the server's clock (a Redis TTL of
/// `keep_until - now`) adds `purge = ttl`: the two scenarios that purge by
/// the caller's clock records kept a few milliseconds (which the server
/// may already have dropped) are left out; every other scenario, including
/// the counts of what a purge of everything deletes, still runs, through a
/// factory whose purge counts the records actually kept.
#[macro_export]
macro_rules! idempotency_store_contract {
    ($factory:path) => {
        $crate::idempotency_store_contract!(@all $factory, || async {
            $crate::idempotency_race::RaceTarget::plain($factory().await)
        });
    };
    ($factory:path, races = $races:path) => {
        $crate::idempotency_store_contract!(@all $factory, $races);
    };
    ($factory:path, races = $races:path, purge = ttl) => {
        $crate::idempotency_store_contract!(@kept $factory, $races);
    };
    (@all $factory:path, $races:expr) => {
        $crate::idempotency_store_contract!(@kept $factory, $races);
        $crate::__scenario_tests!(
            $factory, idempotency;
            purge_removes_only_records_kept_until_now_or_before,
            purge_respects_its_limit_oldest_first,
        );
    };
    (@kept $factory:path, $races:expr) => {
        $crate::__scenario_tests!(
            $factory, idempotency;
            claim_of_a_new_request_starts,
            same_fingerprint_while_pending_is_pending,
            completed_request_replays_the_stored_bytes,
            other_fingerprint_while_pending_is_a_mismatch,
            other_fingerprint_once_completed_is_a_mismatch,
            complete_is_idempotent_and_keeps_the_first_answer,
            complete_with_another_fingerprint_is_refused,
            complete_of_an_unknown_request_is_refused,
            expired_record_is_replaced_by_a_new_claim,
            records_are_separate_per_tenant_operation_resource_and_key,
            invalid_request_ids_are_invalid_input_and_write_nothing,
            empty_or_oversized_fingerprints_are_invalid_input_and_write_nothing,
            oversized_bodies_and_bad_statuses_are_invalid_input_and_change_nothing,
        );

        $crate::__idempotency_race_tests!(
            $races;
            racing_claims_of_a_new_request_start_exactly_once,
            racing_claims_with_mixed_fingerprints_start_once_and_judge_the_rest,
            racing_claims_of_an_expired_record_replace_it_exactly_once,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __idempotency_race_tests {
    ($races:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::run($races, $crate::idempotency_race::$name);
            }
        )*
    };
}
