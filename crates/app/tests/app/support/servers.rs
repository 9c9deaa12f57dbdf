//! The shared servers the tests reach: Redis and a fresh PostgreSQL
//! database per test (dropped with its [`PgDb`]). Used by the app and the
//! HTTP test binaries.

use sea_orm::{ConnectionTrait, Database};

pub fn redis_url() -> String {
    std::env::var("SPENDGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The test Redis Cluster's nodes (`scripts/test` starts one).
pub fn redis_cluster_urls() -> Vec<String> {
    std::env::var("SPENDGATE_TEST_REDIS_CLUSTER_URLS")
        .unwrap_or_else(|_| {
            "redis://127.0.0.1:7101,redis://127.0.0.1:7102,redis://127.0.0.1:7103".into()
        })
        .split(',')
        .map(|url| url.trim().to_owned())
        .filter(|url| !url.is_empty())
        .collect()
}

fn pg_admin_url() -> String {
    std::env::var("SPENDGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh PostgreSQL database, dropped with this value.
pub struct PgDb {
    name: String,
}

impl PgDb {
    pub async fn create() -> (Self, String) {
        let admin = pg_admin_url();
        let name = format!("sg_app_{}_{}", std::process::id(), rand_suffix());
        let conn = Database::connect(admin.as_str()).await.unwrap_or_else(|e| {
            panic!("cannot connect to PostgreSQL at {admin} (SPENDGATE_TEST_DATABASE_URL): {e}")
        });
        conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        (Self { name }, url)
    }
}

fn rand_suffix() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    N.fetch_add(1, Ordering::Relaxed) * 1_000_000_000 + usize::try_from(nanos).unwrap()
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = pg_admin_url();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok(conn) = Database::connect(admin.as_str()).await {
                    let _ = conn
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}
