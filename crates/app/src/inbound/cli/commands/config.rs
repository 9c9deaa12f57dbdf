//! `config`: the effective configuration after precedence, secrets
//! redacted, so an operator sees what the program will run with.

use crate::inbound::cli::output::{CliError, Report};
use crate::settings::Settings;

/// Prints the effective configuration: TOML (the config file's shape), or
/// JSON with `--json`; token secrets and URL passwords as `***`.
///
/// # Errors
/// [`CliError::Failed`] if the configuration cannot be rendered.
pub fn config(settings: &Settings) -> Result<Report, CliError> {
    let redacted = settings.redacted();
    let json = serde_json::to_value(&redacted)
        .map_err(|e| CliError::Failed(format!("rendering the configuration: {e}")))?;
    let toml = toml::to_string(&redacted)
        .map_err(|e| CliError::Failed(format!("rendering the configuration: {e}")))?;
    Ok(Report::ok(json, toml))
}
