//! The same-run reference: what `pgbench` gets from the same server at the
//! same client count, so the store's figures read as a fraction of what
//! this PostgreSQL can do on this machine rather than as absolute numbers.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The one-statement write a store operation is compared with: one
/// indexed single-row update in its own autocommit transaction.
const ONE_STATEMENT: &str = "\\set aid random(1, 100000)\nUPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n";

/// Creates pgbench's tables (scale 1) in the bench's scratch database.
pub fn init(url: &str) -> Result<()> {
    run(&["-i", "-q", "-s", "1", url]).map(drop)
}

/// Prints a table row per reference: `-S` (select-only) and the
/// one-statement update, each at `clients` for `duration`.
pub fn reference(url: &str, clients: u32, duration: Duration) -> Result<()> {
    let script = tempfile::NamedTempFile::new()?;
    std::fs::write(script.path(), ONE_STATEMENT)?;
    let script_path = script.path().to_str().context("temp path is not UTF-8")?;
    let clients_arg = clients.to_string();
    let secs = duration.as_secs().max(1).to_string();
    let common = [
        "-n",
        "-M",
        "prepared",
        "-j",
        "2",
        "-c",
        &clients_arg,
        "-T",
        &secs,
    ];
    let runs: [(&str, Vec<&str>); 2] = [
        ("select-only (-S)", vec!["-S"]),
        ("one-row UPDATE", vec!["-f", script_path]),
    ];
    for (name, extra) in runs {
        let mut args: Vec<&str> = common.to_vec();
        args.extend(extra);
        args.push(url);
        let out = run(&args)?;
        let tps: f64 = field(&out, "tps = ")?.parse()?;
        let avg_ms: f64 = field(&out, "latency average = ")?.parse()?;
        println!("| pgbench {name} | {clients} | | {tps:.0} tx/s | {avg_ms:.3} avg | |");
    }
    Ok(())
}

fn run(args: &[&str]) -> Result<String> {
    let out = Command::new("pgbench")
        .args(args)
        .output()
        .context("running pgbench (is it on PATH?)")?;
    if !out.status.success() {
        bail!("pgbench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The number after `label` on pgbench's summary line.
fn field<'a>(out: &'a str, label: &str) -> Result<&'a str> {
    out.lines()
        .find_map(|line| line.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .with_context(|| format!("pgbench printed no '{label}' line"))
}
