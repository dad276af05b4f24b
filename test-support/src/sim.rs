//! A simulated model for the `juju-sim` tests and benchmarks: its own temp dir, the CLI run
//! on it, and destroyed on drop (agents stopped, namespaces deleted) even when the test
//! fails. A test file wraps it in a type of its own for its own queries
//! ([`sim_model!`](crate::sim_model)).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use agent::lease::{FencedAction, Token};
use juju_sim::report::{LeaseReport, StatusReport};
use juju_sim::world::World;

/// A model dir whose model is destroyed on drop.
pub struct Model {
    /// The `juju-sim` binary (`env!("CARGO_BIN_EXE_juju-sim")` in the sim crate's tests).
    juju_sim: PathBuf,
    dir: tempfile::TempDir,
    /// Environment every `juju-sim` run gets (and passes down to its agents).
    env: Vec<(String, String)>,
}

impl Model {
    /// A fresh model dir named `<prefix>XXXX` under the temp dir. Checks first that the
    /// binaries `juju-sim` runs are built beside it.
    pub fn new(juju_sim: &str, prefix: &str) -> Self {
        let target = Path::new(juju_sim)
            .parent()
            .expect("juju-sim lives in a target dir");
        for needed in ["dispatch", "jujud-controller", "juju-hook-tool"] {
            assert!(
                target.join(needed).is_file(),
                "{} is missing: run `cargo build --workspace --bins` first",
                target.join(needed).display()
            );
        }
        Self {
            juju_sim: juju_sim.into(),
            dir: tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .expect("temp dir"),
            env: vec![],
        }
    }

    /// Adds `env` to every run's environment.
    pub fn with_env<K: ToString, V: ToString>(mut self, env: &[(K, V)]) -> Self {
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// The temp dir the model dir is in, for a test's other files (gone with the model).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The model dir (`JUJU_SIM_MODEL`).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("model")
    }

    /// `juju-sim <args>` on this model, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.juju_sim);
        command
            .args(args)
            .env("JUJU_SIM_MODEL", self.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs `juju-sim <args>` on this model.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("juju-sim runs")
    }

    /// Runs `juju-sim <args>`; returns stdout and stderr, failing the test (with both and
    /// the logs' ends) when it fails.
    pub fn ok_with_stderr(&self, args: &[&str]) -> (String, String) {
        let output = self.run(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "juju-sim {args:?} failed:\n{stdout}\n{stderr}\n{}",
            self.logs_tail()
        );
        (stdout, stderr)
    }

    /// Runs `juju-sim <args>`; returns stdout, failing the test when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with_stderr(args).0
    }

    /// `juju-sim sql --database controller` rows split on `|`; `None` when the read fails
    /// (while the cluster elects, say).
    pub fn sql_rows(&self, sql: &str) -> Option<Vec<Vec<String>>> {
        let output = self.run(&["sql", "--database", "controller", sql]);
        output.status.success().then(|| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.split('|').map(|c| c.trim().to_owned()).collect())
                .collect()
        })
    }

    /// Every fenced action of the singular workers, in commit order (`None` while the
    /// database cannot be read).
    pub fn fencing_log(&self) -> Option<Vec<FencedAction>> {
        let rows = self.sql_rows(
            "SELECT id, holder, lease_start_ms, seq, at_ms FROM fencing_log ORDER BY id",
        )?;
        Some(
            rows.into_iter()
                .map(|columns| {
                    assert_eq!(columns.len(), 5, "{columns:?}");
                    let number = |i: usize| columns[i].parse::<i64>().expect("a number");
                    FencedAction {
                        id: number(0),
                        token: Token {
                            holder: columns[1].clone(),
                            start_ms: number(2),
                        },
                        seq: number(3),
                        action: "heartbeat".into(),
                        at_ms: number(4),
                    }
                })
                .collect(),
        )
    }

    /// The `singular-controller` lease while it is held, as status shows it.
    pub fn singular_holder(&self) -> Option<LeaseReport> {
        self.status()
            .leases
            .into_iter()
            .find(|l| l.kind == "singular-controller" && l.held())
    }

    /// `juju-sim status --format json`.
    pub fn status(&self) -> StatusReport {
        serde_json::from_str(&self.ok(&["status", "--format", "json"])).expect("status JSON")
    }

    /// The model's `world.json`.
    pub fn world(&self) -> World {
        let text = std::fs::read_to_string(self.path().join("world.json")).expect("world.json");
        serde_json::from_str(&text).expect("a world")
    }

    /// Machine `machine`'s agent log (empty when there is none yet).
    pub fn agent_log(&self, machine: u32) -> String {
        std::fs::read_to_string(self.path().join(format!("machines/{machine}/agent.log")))
            .unwrap_or_default()
    }

    /// The ends of the hook log and of every machine agent's log, for failure messages.
    pub fn logs_tail(&self) -> String {
        let tail = |path: &Path, n: usize| {
            let log = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        let mut text = String::from("hooks.log tail:\n");
        text.push_str(&tail(&self.path().join("hooks.log"), 30));
        if let Ok(machines) = std::fs::read_dir(self.path().join("machines")) {
            for machine in machines.flatten() {
                text.push_str(&format!("\n== {}\n", machine.path().display()));
                text.push_str(&tail(&machine.path().join("agent.log"), 15));
            }
        }
        text
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        if !self.path().join("world.json").exists() {
            return;
        }
        if !self.run(&["destroy"]).status.success() {
            // The model dir goes with the temp dir; cleanup then finds its namespaces stale
            // (and the agents end by themselves once world.json is gone).
            let _ = std::fs::remove_file(self.path().join("world.json"));
            let _ = self.run(&["cleanup"]);
        }
    }
}

/// Declares `struct $name(test_support::sim::Model)`, which derefs to the shared model, so
/// that a test file adds its own queries in an `impl $name` block of its own.
#[macro_export]
macro_rules! sim_model {
    ($(#[$attr:meta])* $name:ident) => {
        $(#[$attr])*
        struct $name($crate::sim::Model);

        impl std::ops::Deref for $name {
            type Target = $crate::sim::Model;

            fn deref(&self) -> &$crate::sim::Model {
                &self.0
            }
        }
    };
}
