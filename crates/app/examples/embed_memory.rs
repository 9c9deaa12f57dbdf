//! Embedding spendgate on memory alone: no server, nothing to install.
//!
//! `cargo run -p spendgate --no-default-features --example embed_memory`

use spendgate::domain::{CommunityId, IdempotencyKey, Limits, Micros, ModelAlias, UserId};
use spendgate::{ReserveDecision, ReserveRequest, Settled, Spendgate, Usage};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spendgate = Spendgate::builder().build().await?;
    let budget = spendgate.budget();
    let community = CommunityId::parse("guild-42")?;
    budget
        .set_budget(&community, Limits::new(Micros::from_usd(5)))
        .await?;

    let request = ReserveRequest::tokens(
        community.clone(),
        UserId::parse("alice")?,
        IdempotencyKey::parse("message-1")?,
        ModelAlias::parse("cheap")?,
        1,
        1_200,
        800,
    );
    match budget.reserve(request).await? {
        ReserveDecision::Reserved(hold) => {
            println!("held {} USD", hold.estimate());
            // ... call the model here ...
            match hold.finalize(Usage::tokens(1_180, 412)).await? {
                Settled::Committed { outcome } => println!("settled: {outcome:?}"),
                Settled::Queued { actual } => println!("queued {actual} USD for replay"),
                other => println!("settled: {other:?}"),
            }
        }
        ReserveDecision::BudgetExceeded { remaining, .. } => {
            println!("denied: {remaining} USD left");
        }
        other => println!("not reserved: {other:?}"),
    }

    let report = budget.status(&community, None, None).await?;
    println!(
        "{}: committed {} reserved {} remaining {} of {:?}",
        report.period,
        report.committed,
        report.reserved,
        report.remaining,
        report.limits.map(|l| l.limit)
    );
    Ok(())
}
