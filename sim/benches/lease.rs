//! The lease takeover benchmark on real processes (as root): three controllers, kill -9 of the
//! `singular-controller` holder's agent, and the time from the kill to the first fenced
//! action of a new grant (by the host's one wall clock: the kill is read before it is sent,
//! the action's time is the Dqlite leader's). With short leases (3 s, extended every 1 s,
//! 1 s margin; `LEASE_BENCH_SHORT_RUNS`, 3 by default) and with the defaults (60 s, 30 s,
//! 10 s; `LEASE_BENCH_DEFAULT_RUNS`, 1 by default, 0 to skip). The takeover is at most the
//! lease's remaining time at the kill plus a claim poll; the remaining time is between
//! `duration - extend` and `duration`. Right after each kill a workload machine is requested
//! (`add-machine --no-wait`): the time from the kill until the new holder's compute
//! provisioner has started and recorded it is printed too, and `cloud.log` must show one
//! start per machine. Prints numbers; asserts no timing.
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

/// Kills the holder `runs` times; returns each takeover and each provisioning of a machine
/// requested right after the kill, in milliseconds from the kill.
fn takeovers(model: &Model, runs: usize, give_up: Duration) -> (Vec<i64>, Vec<i64>) {
    let mut times = Vec::new();
    let mut provisioned = Vec::new();
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
        let requested = model.ok(&["add-machine", "--no-wait"]);
        let machine: u32 = requested
            .split_whitespace()
            .nth(2)
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("no machine id in {requested:?}"));
        let until = Instant::now() + give_up;
        let mut taken_over = false;
        loop {
            match model.last_action() {
                Some((h, s, at)) if !taken_over && (h.as_str(), s) != (holder.as_str(), start) => {
                    times.push(at - killed_at);
                    taken_over = true;
                }
                _ => {}
            }
            let status = model.run(&[
                "sql",
                "--database",
                "controller",
                &format!("SELECT status FROM machine WHERE id = {machine}"),
            ]);
            if taken_over && String::from_utf8_lossy(&status.stdout).trim() == "started" {
                provisioned.push(wall_ms() - killed_at);
                break;
            }
            assert!(
                Instant::now() < until,
                "no takeover and provisioning within {give_up:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let starts = juju_sim::cloud::read_log(&model.path())
        .into_iter()
        .filter(|line| line.outcome == "started")
        .count();
    assert_eq!(starts, runs, "one instance start per requested machine");
    (times, provisioned)
}

fn median(times: &[i64]) -> i64 {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

fn report(label: &str, duration_ms: u64, extend_ms: u64, times: &[i64], provisioned: &[i64]) {
    let median_takeover = median(times);
    println!(
        "{label:<8} lease {duration_ms:>6} ms, extend {extend_ms:>6} ms: takeover after kill -9 {:?} ms, median {median_takeover} ms ({:.2} x the lease; bound {} ms + poll)",
        times,
        median_takeover as f64 / duration_ms as f64,
        duration_ms
    );
    println!(
        "{label:<8} a machine requested at the kill started and recorded after {provisioned:?} ms, median {} ms",
        median(provisioned)
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
        let (times, provisioned) = takeovers(&model, count, give_up);
        report(label, duration, extend, &times, &provisioned);
    }
}
