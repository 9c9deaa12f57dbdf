//! The service scenarios on memory alone.

use spendgate::Spendgate;

use crate::support::{Env, Parts, Wipe};

async fn env() -> Env {
    let clock = Env::clock_at_mid_november();
    let spendgate = Spendgate::builder()
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    Env::assemble(
        Parts {
            spendgate,
            keep: Box::new(()),
            wipe: Wipe::FreshMemoryStore,
        },
        clock,
    )
    .await
}

crate::service_scenarios!(env);
