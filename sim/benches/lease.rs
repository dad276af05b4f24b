//! The lease takeover benchmark on real processes (as root): three controllers, kill -9 of the
//! `singular-controller` holder's agent, and the time from the kill to the first fenced
//! action of a new grant (by the host's one wall clock: the kill is read before it is sent,
//! the action's time is the Dqlite leader's). With short leases (3 s, extended every 1 s,
//! 1 s margin; `LEASE_BENCH_SHORT_RUNS`, 3 by default) and with the defaults (60 s, 30 s,
//! 10 s; `LEASE_BENCH_DEFAULT_RUNS`, 1 by default, 0 to skip). The takeover is at most the
//! lease's remaining time at the kill plus a claim poll; the remaining time is between
//! `duration - extend` and `duration`. Prints numbers; asserts no timing.
//!
//! The times are dominated by the lease durations, so a debug build measures the same:
//! `flock /tmp/net-tests.lock cargo test -p juju-sim --bench lease`.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use test_support::sim::Model as SimModel;

const JUJU_SIM: &str = env!("CARGO_BIN_EXE_juju-sim");

test_support::sim_model!(
    /// A model destroyed on drop, whose agents get the lease timings.
    Model
);

impl Model {
    fn new(duration_ms: u64, extend_ms: u64, margin_ms: u64) -> Self {
        Self(SimModel::new(JUJU_SIM, "jsim-lease-bench-").with_env(&[
            ("JUJUD_LEASE_DURATION_MS", duration_ms),
            ("JUJUD_LEASE_EXTEND_MS", extend_ms),
            ("JUJUD_LEASE_MARGIN_MS", margin_ms),
            ("JUJUD_SINGULAR_HEARTBEAT_MS", 100),
        ]))
    }

    /// The newest fenced action: (holder, grant start, database time).
    fn last_action(&self) -> Option<(String, i64, i64)> {
        let output = self.run(&[
            "sql",
            "--database",
            "controller",
            "SELECT holder, lease_start_ms, at_ms FROM fencing_log ORDER BY id DESC LIMIT 1",
        ]);
        let text = String::from_utf8_lossy(&output.stdout);
        let columns: Vec<&str> = text.trim().split('|').collect();
        match columns.as_slice() {
            [holder, start, at] => {
                Some(((*holder).to_owned(), start.parse().ok()?, at.parse().ok()?))
            }
            _ => None,
        }
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Kills the holder `runs` times; returns each takeover in milliseconds.
fn takeovers(model: &Model, runs: usize, give_up: Duration) -> Vec<i64> {
    let mut times = Vec::new();
    for _ in 0..runs {
        model.ok(&["wait"]);
        // A grant that has acted, and the holder's agent.
        let until = Instant::now() + give_up;
        let (holder, start, _) = loop {
            if let Some(action) = model.last_action() {
                break action;
            }
            assert!(Instant::now() < until, "nobody acted");
            std::thread::sleep(Duration::from_millis(200));
        };
        let machine: u32 = holder
            .strip_prefix("controller-")
            .and_then(|id| id.parse().ok())
            .expect("controller-<id>");
        let pid = model
            .status()
            .machines
            .iter()
            .find(|m| m.id == machine)
            .and_then(|m| m.dbaccessor_pid)
            .expect("the holder's agent runs");
        let killed_at = wall_ms();
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        let until = Instant::now() + give_up;
        loop {
            match model.last_action() {
                Some((h, s, at)) if (h.as_str(), s) != (holder.as_str(), start) => {
                    times.push(at - killed_at);
                    break;
                }
                _ => {}
            }
            assert!(Instant::now() < until, "no takeover within {give_up:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    times
}

fn report(label: &str, duration_ms: u64, extend_ms: u64, times: &[i64]) {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
    println!(
        "{label:<8} lease {duration_ms:>6} ms, extend {extend_ms:>6} ms: takeover after kill -9 {:?} ms, median {median} ms ({:.2} x the lease; bound {} ms + poll)",
        times,
        median as f64 / duration_ms as f64,
        duration_ms
    );
}

fn runs(variable: &str, default: usize) -> usize {
    std::env::var(variable)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo test --benches` passes libtest flags; only a real run measures.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    for (label, duration, extend, margin, count) in [
        (
            "short",
            3_000,
            1_000,
            1_000,
            runs("LEASE_BENCH_SHORT_RUNS", 3),
        ),
        (
            "default",
            60_000,
            30_000,
            10_000,
            runs("LEASE_BENCH_DEFAULT_RUNS", 1),
        ),
    ] {
        if count == 0 {
            continue;
        }
        let model = Model::new(duration, extend, margin);
        model.ok(&["bootstrap", "--quorum-timeout-ms", "2000"]);
        model.ok(&["enable-ha"]);
        let give_up = Duration::from_millis(duration * 3) + Duration::from_secs(60);
        let times = takeovers(&model, count, give_up);
        report(label, duration, extend, &times);
    }
}
