//! The commands, one module per concern, each a function from parsed
//! arguments and [`Settings`] to a [`Report`].

pub mod bench;
pub mod budget;
pub mod config;
pub mod dead_letters;
pub mod holds;
pub mod maintenance;
pub mod migrate;
pub mod serve;
mod unreachable;

use std::sync::Arc;

use spendgate_ports::StoreError;
use tokio_util::sync::CancellationToken;

use super::output::{CliError, Report};
use super::{Command, Console};
use crate::Spendgate;
use crate::settings::Settings;

/// Runs `command`.
pub(super) async fn dispatch(
    command: Command,
    settings: &Settings,
    console: &mut Console<'_>,
    shutdown: CancellationToken,
) -> Result<Report, CliError> {
    match command {
        Command::Serve => serve::serve(settings, console, shutdown).await,
        Command::Migrate { action } => migrate::migrate(settings, action, console).await,
        Command::Config => config::config(settings),
        Command::Status {
            community,
            period,
            user,
        } => {
            let app = open(settings, console).await?;
            budget::status(&app, &community, period, user.as_ref()).await
        }
        Command::Users {
            community,
            period,
            cursor,
            limit,
        } => {
            let app = open(settings, console).await?;
            budget::users(&app, &community, period, cursor.as_ref(), limit).await
        }
        Command::SetBudget {
            community,
            limit,
            per_user_cap,
        } => {
            let app = open(settings, console).await?;
            budget::set_budget(&app, &community, limit, per_user_cap).await
        }
        Command::Reserve(args) => {
            let app = open(settings, console).await?;
            holds::reserve(&app, args).await
        }
        Command::Finalize(args) => {
            let app = open_for_settling(settings, console).await?;
            holds::finalize(&app, args).await
        }
        Command::Cancel { ids } => {
            let app = open_for_settling(settings, console).await?;
            holds::cancel(&app, ids).await
        }
        Command::Extend { ids, ttl_ms } => {
            let app = open(settings, console).await?;
            holds::extend(&app, ids, ttl_ms).await
        }
        Command::Reap { community } => {
            let app = open(settings, console).await?;
            maintenance::reap(&app, community.as_ref(), console).await
        }
        Command::Drift => {
            let app = open(settings, console).await?;
            maintenance::drift(&app, console).await
        }
        Command::Rebuild { community, period } => {
            let app = open(settings, console).await?;
            maintenance::rebuild(&app, &community, period, console).await
        }
        Command::DeadLetters { limit } => {
            let app = open(settings, console).await?;
            dead_letters::dead_letters(&app, limit).await
        }
        Command::Bench(args) => bench::bench(settings, args, console).await,
    }
}

/// Builds the services from the settings: the database (the embedded
/// SQLite file by default, migrated at build), the hot path on Redis or a
/// Redis Cluster when one is configured, and the provider's usage look-up
/// for reconciliation when its URL is set.
///
/// # Errors
/// [`CliError::Build`] when a store or the database cannot be reached or
/// set up, [`CliError::ProviderUrl`] for a usage URL the HTTP adapter
/// refuses.
pub async fn open(settings: &Settings, console: &mut Console<'_>) -> Result<Spendgate, CliError> {
    console.progress(&format!(
        "opening {}",
        crate::settings::redact_url(&settings.database_url)
    ));
    let mut builder = Spendgate::builder()
        .database(settings.database_url.clone())
        .redis_options(settings.redis.clone())
        .settings(settings.budget_settings());
    if let Some(url) = &settings.redis_url {
        builder = builder.redis(url.clone());
    }
    if !settings.redis_cluster_urls.is_empty() {
        builder = builder.redis_cluster(settings.redis_cluster_urls.clone());
    }
    if let Some(url) = &settings.provider_usage_url {
        builder = builder.usage_source(usage_source(url)?);
    }
    builder.build().await.map_err(CliError::Build)
}

/// [`open`] for `finalize` and `cancel`: when the budget store cannot be
/// reached, the services run over a store that answers every call
/// "unavailable", so the settlement is written to the finalize queue in the
/// database and reported queued (`serve`'s replay worker applies it),
/// rather than the command refusing to run while the money is spent.
///
/// # Errors
/// As [`open`], except an unreachable budget store.
pub async fn open_for_settling(
    settings: &Settings,
    console: &mut Console<'_>,
) -> Result<Spendgate, CliError> {
    match open(settings, console).await {
        Err(CliError::Build(crate::BuildError::Store(StoreError::Unavailable(reason)))) => {
            console.progress("budget store unreachable: the settlement will be queued");
            Spendgate::builder()
                .database(settings.database_url.clone())
                .store(Arc::new(unreachable::UnreachableStore::new(reason)))
                .build()
                .await
                .map_err(CliError::Build)
        }
        other => other,
    }
}

#[cfg(feature = "http")]
fn usage_source(url: &str) -> Result<Arc<dyn spendgate_ports::UsageSource>, CliError> {
    let source = spendgate_adapter_http::HttpUsageSource::new(url)
        .map_err(|e| CliError::ProviderUrl(e.to_string()))?;
    Ok(Arc::new(source))
}

#[cfg(not(feature = "http"))]
fn usage_source(_: &str) -> Result<Arc<dyn spendgate_ports::UsageSource>, CliError> {
    Err(CliError::Build(crate::BuildError::FeatureDisabled {
        setting: "provider_usage_url",
        feature: "http",
    }))
}
