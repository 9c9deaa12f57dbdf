//! What the program does when a part of it cannot answer for long:
//! `[workers] reconciliation_give_up`, what becomes of a dropped call the
//! provider never reports, and `[budget] fallback_queue_capacity`, how
//! many settlements are kept in memory while the database is down.

use serde::Serialize;

use super::SettingsError;
use super::key::Key;
use super::source::Layers;
use super::value::{invalid, positive};
use crate::services::budget::DEFAULT_FALLBACK_QUEUE_CAPACITY;
use crate::workers::GiveUp;

/// The two settings, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoverySettings {
    /// What reconciliation does after its last try.
    pub reconciliation_give_up: GiveUp,
    /// The most settlements kept in memory while the finalize queue's
    /// database cannot answer.
    pub fallback_queue_capacity: usize,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        Self {
            reconciliation_give_up: GiveUp::default(),
            fallback_queue_capacity: DEFAULT_FALLBACK_QUEUE_CAPACITY,
        }
    }
}

/// A give-up action as the settings spell it.
pub fn give_up_name(give_up: GiveUp) -> &'static str {
    match give_up {
        GiveUp::ChargeEstimate => "charge-estimate",
        GiveUp::Release => "release",
    }
}

pub(super) fn parse(layers: &Layers) -> Result<RecoverySettings, SettingsError> {
    let defaults = RecoverySettings::default();
    let reconciliation_give_up = match layers.get(Key::WorkersReconciliationGiveUp) {
        None => defaults.reconciliation_give_up,
        Some((raw, origin)) => match raw.text().trim().to_ascii_lowercase().as_str() {
            "charge-estimate" => GiveUp::ChargeEstimate,
            "release" => GiveUp::Release,
            other => {
                return Err(invalid(
                    Key::WorkersReconciliationGiveUp,
                    origin,
                    format!("{other:?} is not charge-estimate or release"),
                ));
            }
        },
    };
    let default_capacity = u64::try_from(defaults.fallback_queue_capacity).unwrap_or(u64::MAX);
    let capacity = positive(layers, Key::BudgetFallbackQueueCapacity, default_capacity)?;
    Ok(RecoverySettings {
        reconciliation_give_up,
        fallback_queue_capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
    })
}

/// The `[budget]` section of the printed configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[allow(missing_docs)] // the keys of the module's table
pub struct RedactedBudget {
    pub fallback_queue_capacity: usize,
}

#[cfg(test)]
mod tests {
    use super::super::{FlagValues, Settings};
    use super::*;

    fn load(vars: &[(&str, &str)], flags: &FlagValues) -> Result<Settings, SettingsError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::load(flags, &move |name: &str| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn by_default_a_call_never_reported_is_charged_and_100_000_settlements_are_kept() {
        let s = load(&[], &FlagValues::default()).unwrap();
        let workers = s.worker_settings();
        assert_eq!(
            workers.reconciliation_settings.on_give_up,
            GiveUp::ChargeEstimate
        );
        assert_eq!(s.budget_settings().fallback_queue_capacity, 100_000);
    }

    #[test]
    fn the_flag_beats_the_environment_for_both() {
        let flags = FlagValues {
            reconciliation_give_up: Some("release".into()),
            fallback_queue_capacity: Some("5".into()),
            ..FlagValues::default()
        };
        let vars = [
            (
                "SPENDGATE_WORKERS_RECONCILIATION_GIVE_UP",
                "charge-estimate",
            ),
            ("SPENDGATE_BUDGET_FALLBACK_QUEUE_CAPACITY", "7"),
        ];
        let s = load(&vars, &flags).unwrap();
        assert_eq!(
            s.worker_settings().reconciliation_settings.on_give_up,
            GiveUp::Release
        );
        assert_eq!(s.budget_settings().fallback_queue_capacity, 5);
        let printed = s.redacted();
        assert_eq!(printed.workers.reconciliation_give_up, "release");
        assert_eq!(printed.budget.fallback_queue_capacity, 5);
        let s = load(&vars, &FlagValues::default()).unwrap();
        assert_eq!(s.budget_settings().fallback_queue_capacity, 7);
    }

    #[test]
    fn bad_values_are_refused_naming_the_setting() {
        for (var, value, key) in [
            (
                "SPENDGATE_WORKERS_RECONCILIATION_GIVE_UP",
                "forget",
                "workers.reconciliation_give_up",
            ),
            (
                "SPENDGATE_BUDGET_FALLBACK_QUEUE_CAPACITY",
                "0",
                "budget.fallback_queue_capacity",
            ),
            (
                "SPENDGATE_BUDGET_FALLBACK_QUEUE_CAPACITY",
                "-1",
                "budget.fallback_queue_capacity",
            ),
        ] {
            let message = load(&[(var, value)], &FlagValues::default())
                .unwrap_err()
                .to_string();
            assert!(
                message.contains(&format!("invalid {key} from environment variable {var}")),
                "{var}={value:?}: {message}"
            );
        }
    }
}
