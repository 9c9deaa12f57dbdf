//! Runs the command line in-process on one temporary SQLite file.

use std::collections::HashMap;

use serde_json::Value;
use spendgate::inbound::cli::{Cli, Console, Exit, run_args, run_until};
use tokio_util::sync::CancellationToken;

/// A scratch directory holding the SQLite file every command of a test
/// shares, and a fake environment.
pub struct Sandbox {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
    progress: bool,
}

/// What one command printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub exit: Exit,
    pub out: String,
    pub err: String,
}

impl Run {
    /// The `--json` document on stdout.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.out).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.out, self.err
            )
        })
    }

    /// Asserts exit 0 and returns the JSON document.
    pub fn ok_json(&self) -> Value {
        assert_eq!(
            self.exit,
            Exit::Ok,
            "stdout: {}\nstderr: {}",
            self.out,
            self.err
        );
        self.json()
    }
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            env: HashMap::new(),
            progress: false,
        }
    }

    /// Commands print their progress lines on stderr, as on a terminal.
    pub fn with_progress(mut self) -> Self {
        self.progress = true;
        self
    }

    /// Sets a variable of the fake environment.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.to_owned(), value.to_owned());
        self
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    fn argv(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec![
            "spendgate".to_owned(),
            "--data-file".to_owned(),
            self.path("spendgate.db"),
        ];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        argv
    }

    /// `spendgate --data-file <tmp>/spendgate.db <args…>`.
    pub async fn run(&self, args: &[&str]) -> Run {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let env = |name: &str| self.env.get(name).cloned();
        let exit = {
            let mut console = Console {
                out: &mut out,
                err: &mut err,
                progress: self.progress,
                env: &env,
                install_logging: false,
            };
            run_args(self.argv(args), &mut console).await
        };
        Run {
            exit,
            out: String::from_utf8(out).unwrap(),
            err: String::from_utf8(err).unwrap(),
        }
    }

    /// Runs `args` (a `serve`) until `shutdown` is cancelled.
    pub async fn run_until(&self, args: &[&str], shutdown: CancellationToken) -> Run {
        use clap::Parser;
        let cli = Cli::try_parse_from(self.argv(args)).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let env = |name: &str| self.env.get(name).cloned();
        let exit = {
            let mut console = Console {
                out: &mut out,
                err: &mut err,
                progress: self.progress,
                env: &env,
                install_logging: false,
            };
            run_until(cli, &mut console, shutdown).await
        };
        Run {
            exit,
            out: String::from_utf8(out).unwrap(),
            err: String::from_utf8(err).unwrap(),
        }
    }

    /// `set-budget <community> <usd> --json`, asserted to succeed.
    pub async fn budget(&self, community: &str, usd: &str) {
        self.run(&["set-budget", community, usd, "--json"])
            .await
            .ok_json();
    }

    /// `status <community> --json`, asserted to succeed.
    pub async fn status(&self, community: &str) -> Value {
        self.run(&["status", community, "--json"]).await.ok_json()
    }

    /// Reserves `usd` for (community, user, key) on the cheap model.
    pub async fn reserve_usd(&self, community: &str, user: &str, key: &str, usd: &str) -> Run {
        self.run(&[
            "reserve",
            community,
            user,
            key,
            "--model",
            "cheap",
            "--tier",
            "1",
            "--estimate-usd",
            usd,
            "--json",
        ])
        .await
    }
}
