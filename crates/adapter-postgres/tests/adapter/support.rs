//! Fresh databases per test, on both backends.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use std::time::Duration;

use spendgate_adapter_postgres::{
    ConnectSettings, connect_and_migrate_with_settings, connect_with_settings,
};
use spendgate_domain::Timestamp;
use spendgate_ports::Clock;

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The pools of the tests wait up to 30 s for a connection, not the
/// default 5 s: the contract's 1,000 simultaneous reserves on a pool of 16
/// queue for connections longer than 5 s on a loaded test machine, and
/// those tests are about overspend, not about the pool's fail-fast (which
/// `outage.rs` covers with short timeouts of its own).
pub fn test_settings() -> ConnectSettings {
    ConnectSettings {
        acquire_timeout: Duration::from_secs(30),
        ..ConnectSettings::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The admin URL of the test server.
pub fn pg_admin_url() -> String {
    std::env::var("SPENDGATE_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// `url` with another database and, optionally, other credentials.
pub fn pg_url_with(url: &str, credentials: Option<(&str, &str)>, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("URL has a scheme");
    let (authority_path, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let authority = authority_path.split('/').next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let mut out = match credentials {
        Some((user, password)) => format!("{scheme}://{user}:{password}@{host}/{database}"),
        None => {
            let userinfo = authority.rsplit_once('@').map(|(u, _)| u);
            match userinfo {
                Some(u) => format!("{scheme}://{u}@{host}/{database}"),
                None => format!("{scheme}://{host}/{database}"),
            }
        }
    };
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other test (of this or another run) uses.
pub fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos % 1_000_000_000
    )
}

pub async fn admin() -> DatabaseConnection {
    let url = pg_admin_url();
    Database::connect(url.as_str()).await.unwrap_or_else(|e| {
        panic!("cannot connect to PostgreSQL at {url} (set SPENDGATE_TEST_DATABASE_URL): {e}")
    })
}

enum Place {
    Postgres { database: String },
    Sqlite { _dir: tempfile::TempDir },
}

/// A migrated, empty database that is dropped with this value.
pub struct TestDb {
    pub db: DatabaseConnection,
    pub backend: Backend,
    pub url: String,
    place: Place,
    /// PostgreSQL roles created by the test, dropped after the database.
    roles: Mutex<Vec<String>>,
}

impl TestDb {
    pub async fn fresh(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => {
                let admin = admin().await;
                let database = unique_name("sg_test");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {database}"))
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "cannot create database {database} at {}: {e}",
                            pg_admin_url()
                        )
                    });
                let _ = admin.close().await;
                let url = pg_url_with(&pg_admin_url(), None, &database);
                let db = connect_and_migrate_with_settings(&url, test_settings())
                    .await
                    .unwrap_or_else(|e| panic!("{url}: {e}"));
                Self {
                    db,
                    backend,
                    url,
                    place: Place::Postgres { database },
                    roles: Mutex::new(Vec::new()),
                }
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("spendgate.db").display()
                );
                let db = connect_and_migrate_with_settings(&url, test_settings())
                    .await
                    .unwrap_or_else(|e| panic!("{url}: {e}"));
                Self {
                    db,
                    backend,
                    url,
                    place: Place::Sqlite { _dir: dir },
                    roles: Mutex::new(Vec::new()),
                }
            }
        }
    }

    /// Another pool on the same database (a second process, as far as the
    /// database can tell).
    pub async fn reconnect(&self) -> DatabaseConnection {
        connect_with_settings(&self.url, test_settings())
            .await
            .expect("reconnect")
    }

    /// A pool of one connection, for schema changes.
    pub async fn single_connection(&self) -> DatabaseConnection {
        let mut options = sea_orm::ConnectOptions::new(self.url.clone());
        options.max_connections(1).sqlx_logging(false);
        Database::connect(options).await.expect("single connection")
    }

    pub fn database_name(&self) -> Option<&str> {
        match &self.place {
            Place::Postgres { database } => Some(database),
            Place::Sqlite { .. } => None,
        }
    }

    pub fn drop_role_later(&self, role: &str) {
        self.roles.lock().expect("roles").push(role.to_owned());
    }

    pub async fn exec(
        &self,
        sql: &str,
        values: Vec<sea_orm::Value>,
    ) -> Result<u64, sea_orm::DbErr> {
        self.db
            .execute_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                sql,
                values,
            ))
            .await
            .map(|r| r.rows_affected())
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let row = self
            .db
            .query_one_raw(Statement::from_string(self.db.get_database_backend(), sql))
            .await
            .expect("count query")
            .expect("a row");
        row.try_get_by_index::<i64>(0).expect("an integer")
    }

    /// `CAST($n AS JSONB)` on PostgreSQL, `$n` on SQLite.
    pub fn json_param(&self, n: usize) -> String {
        match self.db.get_database_backend() {
            DbBackend::Postgres => format!("CAST(${n} AS JSONB)"),
            _ => format!("${n}"),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Place::Postgres { database } = &self.place else {
            return;
        };
        let database = database.clone();
        let roles = std::mem::take(&mut *self.roles.lock().unwrap_or_else(|e| e.into_inner()));
        let db = self.db.clone();
        // Drop runs inside the test's runtime: clean up on a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                drop(db);
                let Ok(admin) = Database::connect(pg_admin_url().as_str()).await else {
                    return;
                };
                let _ = admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                    .await;
                for role in roles {
                    let _ = admin
                        .execute_unprepared(&format!("DROP ROLE IF EXISTS {role}"))
                        .await;
                }
                let _ = admin.close().await;
            });
        })
        .join();
    }
}

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn at(ms: i64) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(ms)))
    }

    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::SeqCst)).expect("non-negative")
    }
}

pub fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms).expect("non-negative")
}

/// Runs each named `async fn(&TestDb)` of the calling module as one test on
/// PostgreSQL and one on SQLite.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let t = $crate::support::TestDb::fresh($crate::support::Backend::Postgres).await;
                    super::$name(&t).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let t = $crate::support::TestDb::fresh($crate::support::Backend::Sqlite).await;
                    super::$name(&t).await;
                }
            )*
        }
    };
}
