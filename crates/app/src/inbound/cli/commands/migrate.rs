//! `migrate up | down | status`: the database schema, run on purpose (the
//! other commands also apply pending migrations as they open the
//! database, so `up` is for deployments that migrate before rolling out).

use crate::inbound::cli::output::{CliError, Report};
use crate::inbound::cli::{Console, MigrateAction};
use crate::settings::Settings;

/// Runs a `migrate` action against the configured database.
///
/// # Errors
/// [`CliError::Migration`] when the database cannot be reached or a
/// migration fails; [`CliError::Build`] in a build without SQL support.
pub async fn migrate(
    settings: &Settings,
    action: MigrateAction,
    console: &mut Console<'_>,
) -> Result<Report, CliError> {
    sql::migrate(settings, action, console).await
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql {
    use spendgate_adapter_postgres::{Migrator, MigratorTrait, connect};
    use spendgate_ports::RepoError;

    use serde_json::json;

    use crate::inbound::cli::output::{CliError, Report};
    use crate::inbound::cli::{Console, MigrateAction};
    use crate::settings::{Settings, redact_url};

    /// One migration and whether it is applied.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Row {
        name: String,
        applied: bool,
    }

    fn report(rows: &[Row], headline: String, extra: serde_json::Value) -> Report {
        let list: Vec<_> = rows
            .iter()
            .map(|r| json!({ "name": r.name, "applied": r.applied }))
            .collect();
        let pending = rows.iter().filter(|r| !r.applied).count();
        let mut doc = json!({ "migrations": list, "pending": pending });
        if let (serde_json::Value::Object(doc), serde_json::Value::Object(extra)) =
            (&mut doc, extra)
        {
            doc.extend(extra);
        }
        let mut text = headline;
        for row in rows {
            text.push_str(&format!(
                "\n  {} {}",
                if row.applied { "applied" } else { "pending" },
                row.name
            ));
        }
        Report::ok(doc, text)
    }

    fn failed(url: &str, what: &str, e: impl std::fmt::Display) -> CliError {
        CliError::Migration(RepoError::Unavailable(format!(
            "{what} on {} failed: {e}",
            redact_url(url)
        )))
    }

    /// The migrations and their status, read without creating the
    /// migrations table (so `status` writes nothing). A macro: the
    /// connection's type belongs to SeaORM, which this crate does not name.
    macro_rules! read_rows {
        ($db:expr, $url:expr) => {
            Migrator::get_migration_with_status_read_only($db)
                .await
                .map_err(|e| failed($url, "reading migrations", e))?
                .iter()
                .map(|m| Row {
                    name: m.name().to_owned(),
                    applied: m.status().to_string() == "Applied",
                })
                .collect::<Vec<Row>>()
        };
    }

    pub(super) async fn migrate(
        settings: &Settings,
        action: MigrateAction,
        console: &mut Console<'_>,
    ) -> Result<Report, CliError> {
        let url = settings.database_url.as_str();
        console.progress(&format!("connecting to {}", redact_url(url)));
        let db = connect(url).await.map_err(CliError::Migration)?;
        let before = read_rows!(&db, url);
        let (headline, extra) = match action {
            MigrateAction::Status => {
                let pending = before.iter().filter(|r| !r.applied).count();
                (
                    format!("{} migration(s), {pending} pending", before.len()),
                    serde_json::json!({}),
                )
            }
            MigrateAction::Up => {
                let pending = before.iter().filter(|r| !r.applied).count();
                console.progress(&format!("applying {pending} migration(s)"));
                Migrator::up(&db, None)
                    .await
                    .map_err(|e| failed(url, "migrating up", e))?;
                (
                    format!("applied {pending} migration(s)"),
                    serde_json::json!({ "applied_now": pending }),
                )
            }
            MigrateAction::Down { steps } => {
                console.progress(&format!("undoing {steps} migration(s)"));
                let applied = before.iter().filter(|r| r.applied).count();
                Migrator::down(&db, Some(steps))
                    .await
                    .map_err(|e| failed(url, "migrating down", e))?;
                let undone = applied.min(usize::try_from(steps).unwrap_or(usize::MAX));
                (
                    format!("undid {undone} migration(s)"),
                    serde_json::json!({ "undone_now": undone }),
                )
            }
        };
        let after = read_rows!(&db, url);
        // Closing is best effort: the work is done and committed.
        let _ = db.close().await;
        Ok(report(&after, headline, extra))
    }
}

#[cfg(not(any(feature = "postgres", feature = "sqlite")))]
mod sql {
    use crate::BuildError;
    use crate::inbound::cli::output::{CliError, Report};
    use crate::inbound::cli::{Console, MigrateAction};
    use crate::settings::Settings;

    pub(super) async fn migrate(
        _: &Settings,
        _: MigrateAction,
        _: &mut Console<'_>,
    ) -> Result<Report, CliError> {
        Err(CliError::Build(BuildError::FeatureDisabled {
            setting: "migrate",
            feature: "sqlite",
        }))
    }
}
