//! The service scenarios on one SQLite file: budgets, configuration, usage
//! log and finalize queue together, as the embedded default runs.

use spendgate::Spendgate;

use crate::support::{Env, Parts, Wipe};

async fn env() -> Env {
    let clock = Env::clock_at_mid_november();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}/spendgate.db?mode=rwc", dir.path().display());
    let spendgate = Spendgate::builder()
        .database(url)
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    Env::assemble(
        Parts {
            spendgate,
            keep: Box::new(dir),
            wipe: Wipe::FreshSqliteStore,
        },
        clock,
    )
    .await
}

crate::service_scenarios!(env);
