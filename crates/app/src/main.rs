//! The `spendgate` program: parses the command line and runs it through
//! [`spendgate::inbound::cli::run`], which holds every command so tests
//! run them in-process.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use spendgate::inbound::cli::{Cli, Console, process_env, run};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    // Usage errors exit 2 and `--help` / `--version` exit 0, as documented.
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    let progress = err.is_terminal();
    let mut console = Console {
        out: &mut out,
        err: &mut err,
        progress,
        env: &process_env,
        install_logging: true,
    };
    let exit = run(cli, &mut console).await;
    Ok(exit.into())
}
