//! What a command hands back, how it is printed (human text or `--json`),
//! and which exit code it ends with, so scripts can branch on the code and
//! read the JSON, and people read the text.

use std::io::Write;

use serde_json::{Value, json};
use spendgate_domain::Micros;
use spendgate_ports::{RepoError, StoreError};

use crate::builder::BuildError;
use crate::services::budget::{
    BudgetChangeError, ExtendError, FinalizeError, RebuildError, ReserveError, StatusError,
};
use crate::settings::SettingsError;

/// The program's exit codes, documented in `--help` and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// 0: the command did what was asked.
    Ok = 0,
    /// 1: anything else (a store refusing corrupt data, an I/O error).
    Other = 1,
    /// 2: bad usage or input (a malformed amount or id, a bad setting, a
    /// model the tier may not use).
    Usage = 2,
    /// 3: the reservation does not fit in the budget; nothing is held.
    BudgetExceeded = 3,
    /// 4: the budget store or the database could not answer.
    Unavailable = 4,
    /// 5: not found: no such hold (or no live one), or a community without
    /// a budget.
    NotFound = 5,
}

impl Exit {
    /// The numeric code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// A stable name for JSON error objects.
    pub fn kind(self) -> &'static str {
        match self {
            Exit::Ok => "ok",
            Exit::Other => "error",
            Exit::Usage => "usage",
            Exit::BudgetExceeded => "budget_exceeded",
            Exit::Unavailable => "unavailable",
            Exit::NotFound => "not_found",
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

/// The exit codes as `--help` shows them.
pub const EXIT_CODES_HELP: &str = "Exit codes:
  0  ok
  1  other error
  2  usage or bad input (malformed amount, id, period or setting)
  3  budget exceeded (nothing is held)
  4  budget store or database unavailable
  5  not found (unknown or no longer live hold, community without a budget)";

/// Why a command failed; each variant maps to one [`Exit`] code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The configuration is invalid.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The services could not be built (store or database unreachable, a
    /// URL needing a feature this build lacks).
    #[error("cannot start: {0}")]
    Build(#[source] BuildError),
    /// The provider usage URL was refused by the HTTP adapter.
    #[error("invalid provider_usage_url: {0}")]
    ProviderUrl(String),
    /// A reserve was refused before the budget was consulted.
    #[error(transparent)]
    Reserve(#[from] ReserveError),
    /// A finalize or cancel failed.
    #[error(transparent)]
    Finalize(#[from] FinalizeError),
    /// A status or look-up failed.
    #[error(transparent)]
    Status(#[from] StatusError),
    /// An extend failed.
    #[error(transparent)]
    Extend(#[from] ExtendError),
    /// A budget change did not fully apply.
    #[error(transparent)]
    BudgetChange(#[from] BudgetChangeError),
    /// The store could not answer a maintenance call.
    #[error("budget store: {0}")]
    Store(#[source] StoreError),
    /// A migration command failed.
    #[error("migration: {0}")]
    Migration(#[source] RepoError),
    /// The finalize queue could not be read.
    #[error("finalize queue: {0}")]
    Queue(#[source] RepoError),
    /// No hold is kept for the ids given (or none still to be settled).
    #[error("{0}")]
    NotFound(String),
    /// An argument is valid on its own but not for this command.
    #[error("{0}")]
    Usage(String),
    /// A server named with `--url` could not be reached, or answered that
    /// it cannot serve (503): the same as a store being unavailable.
    #[error("{what}: {source}")]
    ServerUnreachable {
        /// The request that failed.
        what: String,
        /// Why it failed.
        #[source]
        source: reqwest::Error,
    },
    /// A server named with `--url` answered 503: its store or database is
    /// unavailable.
    #[error("{0}")]
    ServerUnavailable(String),
    /// A rebuild from the usage log failed; nothing changed.
    #[error(transparent)]
    Rebuild(#[from] RebuildError),
    /// Writing the output or listening failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A background worker stopped abnormally.
    #[error("{0}")]
    Failed(String),
}

fn store_exit(error: &StoreError) -> Exit {
    match error {
        StoreError::Unavailable(_) => Exit::Unavailable,
        StoreError::InvalidInput(_) => Exit::Usage,
        StoreError::NotConfigured(_) | StoreError::UnknownHold { .. } => Exit::NotFound,
        _ => Exit::Other,
    }
}

fn rebuild_exit(error: &RebuildError) -> Exit {
    match error {
        RebuildError::Period(_) => Exit::Usage,
        RebuildError::UsageLog(e) | RebuildError::Queue(e) => repo_exit(e),
        RebuildError::Store(e) => store_exit(e),
        RebuildError::SettlementsPending { .. } => Exit::Unavailable,
    }
}

fn repo_exit(error: &RepoError) -> Exit {
    match error {
        RepoError::Unavailable(_) => Exit::Unavailable,
        RepoError::InvalidInput(_) => Exit::Usage,
        _ => Exit::Other,
    }
}

impl CliError {
    /// The exit code this error ends the program with.
    pub fn exit(&self) -> Exit {
        match self {
            CliError::Settings(_) | CliError::ProviderUrl(_) | CliError::Usage(_) => Exit::Usage,
            CliError::Build(BuildError::Store(e)) => store_exit(e).max_unavailable(),
            CliError::Build(BuildError::Database(e)) => repo_exit(e).max_unavailable(),
            CliError::Build(_) => Exit::Usage,
            CliError::Reserve(e) => match e {
                ReserveError::InvalidTier(_)
                | ReserveError::ModelNotAllowed { .. }
                | ReserveError::Pricing(_)
                | ReserveError::InvalidInput(_) => Exit::Usage,
                ReserveError::NotConfigured(_) => Exit::NotFound,
                ReserveError::ConfigUnavailable(_) | ReserveError::StoreUnavailable(_) => {
                    Exit::Unavailable
                }
                ReserveError::Store(e) => store_exit(e),
                ReserveError::AiDisabled(_) => Exit::Other,
            },
            CliError::Finalize(e) => match e {
                FinalizeError::Pricing(_)
                | FinalizeError::InvalidInput(_)
                | FinalizeError::ModelUnknown
                | FinalizeError::SettledOtherwise { .. }
                | FinalizeError::CostOutOfRange(_) => Exit::Usage,
                FinalizeError::NotKept(_) | FinalizeError::ModelUnavailable(_) => Exit::Unavailable,
                FinalizeError::UnknownHold { .. } => Exit::NotFound,
                FinalizeError::Store(e) => store_exit(e),
            },
            CliError::Status(e) => match e {
                StatusError::Store(e) => store_exit(e),
                StatusError::Period(_) => Exit::Usage,
            },
            CliError::Extend(e) => match e {
                ExtendError::UnknownHold(_) => Exit::NotFound,
                ExtendError::Unavailable(_) => Exit::Unavailable,
                ExtendError::Store(e) => store_exit(e),
            },
            CliError::BudgetChange(e) => match e {
                BudgetChangeError::Database(e) => repo_exit(e),
                BudgetChangeError::StoreNotUpdated(e) => store_exit(e),
                BudgetChangeError::StoreNotRebuilt(e) => rebuild_exit(e),
            },
            CliError::Rebuild(e) => rebuild_exit(e),
            CliError::Store(e) => store_exit(e),
            CliError::Migration(e) | CliError::Queue(e) => repo_exit(e),
            CliError::NotFound(_) => Exit::NotFound,
            CliError::ServerUnreachable { .. } | CliError::ServerUnavailable(_) => {
                Exit::Unavailable
            }
            CliError::Io { .. } | CliError::Failed(_) => Exit::Other,
        }
    }
}

impl Exit {
    /// Build errors are about reaching a server: anything but bad input is
    /// reported as unavailable.
    fn max_unavailable(self) -> Exit {
        match self {
            Exit::Usage => Exit::Usage,
            _ => Exit::Unavailable,
        }
    }
}

/// A command's result: the JSON document, the text for people, and the
/// exit code (a budget refusal is a result, not an error, yet exits 3).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// What `--json` prints.
    pub json: Value,
    /// What is printed otherwise.
    pub human: String,
    /// How the program ends.
    pub exit: Exit,
}

impl Report {
    /// A successful result.
    pub fn ok(json: Value, human: impl Into<String>) -> Self {
        Self {
            json,
            human: human.into(),
            exit: Exit::Ok,
        }
    }
}

/// Money as the CLI prints it: a decimal USD string that `parse_usd` reads
/// back exactly (`"0.0042"`, `"10"`).
pub fn usd(amount: Micros) -> Value {
    Value::String(amount.to_string())
}

/// Prints `report` as asked.
pub(super) fn print_report(
    out: &mut dyn Write,
    report: &Report,
    as_json: bool,
) -> std::io::Result<()> {
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report.json)?)
    } else {
        writeln!(out, "{}", report.human.trim_end())
    }
}

/// Prints an error: always a line on `err`, and with `--json` a document
/// on `out` too, so a script reading stdout sees why it failed.
pub(super) fn print_error(
    out: &mut dyn Write,
    err: &mut dyn Write,
    error: &CliError,
    as_json: bool,
) -> Exit {
    let exit = error.exit();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = cause.source();
    }
    // Output errors are reported but cannot change the exit code.
    let _ = writeln!(err, "spendgate: error: {message}");
    if as_json {
        let doc = json!({
            "error": { "code": exit.code(), "kind": exit.kind(), "message": message }
        });
        let _ = writeln!(out, "{doc:#}");
    }
    exit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget_change_exit(error: RebuildError) -> Exit {
        CliError::BudgetChange(BudgetChangeError::StoreNotRebuilt(error)).exit()
    }

    #[test]
    fn a_budget_change_over_a_store_that_could_not_be_rebuilt_exits_by_the_rebuilds_cause() {
        assert_eq!(
            budget_change_exit(RebuildError::SettlementsPending { pending: 2 }),
            Exit::Unavailable
        );
        assert_eq!(
            budget_change_exit(RebuildError::Queue(RepoError::Unavailable("down".into()))),
            Exit::Unavailable
        );
        assert_eq!(
            budget_change_exit(RebuildError::Store(StoreError::Unavailable("down".into()))),
            Exit::Unavailable
        );
        assert_eq!(
            budget_change_exit(RebuildError::Period("out of range".into())),
            Exit::Usage
        );
    }
}
