//! Embedding spendgate with the hot path on Redis and the durable record on
//! PostgreSQL.
//!
//! ```text
//! SPENDGATE_REDIS_URL=redis://127.0.0.1:6379 \
//! SPENDGATE_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//! cargo run -p spendgate --example embed_redis_postgres
//! ```

use spendgate::domain::{CommunityId, IdempotencyKey, Limits, Micros, ModelAlias, UserId};
use spendgate::{ReserveDecision, ReserveRequest, Spendgate, Usage};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis = std::env::var("SPENDGATE_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let database = std::env::var("SPENDGATE_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let spendgate = Spendgate::builder()
        .redis(redis)
        .database(database)
        .build()
        .await?;
    let budget = spendgate.budget();
    let community = CommunityId::parse("example-guild")?;
    budget
        .set_budget(&community, Limits::new(Micros::from_usd(20)))
        .await?;

    let key = format!("example-{}", std::process::id());
    let request = ReserveRequest::tokens(
        community.clone(),
        UserId::parse("alice")?,
        IdempotencyKey::parse(key)?,
        ModelAlias::parse("reviewer")?,
        5,
        4_000,
        1_000,
    )
    .with_tools();
    if let ReserveDecision::Reserved(mut hold) = budget.reserve(request).await? {
        hold.keep_alive(spendgate::domain::Ttl::from_secs(60)?);
        // ... stream the model's answer here ...
        let settled = hold.finalize(Usage::tokens(3_950, 870)).await?;
        println!("{settled:?}");
    }
    println!("{:?}", budget.status(&community, None, None).await?);
    Ok(())
}
