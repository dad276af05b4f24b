//! Application leadership from the `application-leadership` lease, on real processes: three
//! controller units whose trackers (in their machines' `jujud-controller`) claim with short
//! grants (3 s, extended every second, stopped 1 s early). The leader unit's machine agent
//! is stopped (SIGSTOP of the supervisor and of the agent: a killed agent alone is restarted
//! within 100 ms and keeps its leadership, as in Juju); another unit leads within the grant
//! plus a bound, `leader-elected` runs on it, and no two units ever lead at once: checked
//! by sampling every unit's `leadership.json` throughout and, at the end, from the trackers'
//! record of their grants (monotonic intervals, database-clock starts). Needs root and the
//! workspace's binaries built, as `ha.rs`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use controller_contract::leadership::{check_one_leader, HeldGrant, UnitLeadership};
use juju_sim::leadership::monotonic_ms;
use juju_sim::store::Store;
use juju_sim::State;
use test_support::sim::Model as SimModel;

const JUJU_SIM: &str = env!("CARGO_BIN_EXE_juju-sim");

/// The leadership timings every agent of the model gets.
const LEADERSHIP_ENV: &[(&str, &str)] = &[
    ("JUJUD_LEADERSHIP_DURATION_MS", "3000"),
    ("JUJUD_LEADERSHIP_EXTEND_MS", "1000"),
    ("JUJUD_LEADERSHIP_MARGIN_MS", "1000"),
    ("JUJUD_LEADERSHIP_POLL_MS", "300"),
];
const GRANT_MS: u128 = 3000;
/// How much longer than the grant a takeover may take: a Dqlite election when the stopped
/// machine held the Dqlite leader, dials that time out on the stopped API server, a loaded
/// 2-core machine.
const TAKEOVER_BOUND_MS: u128 = 20_000;

test_support::sim_model!(
    /// A model dir whose model is destroyed on drop; its agents get [`LEADERSHIP_ENV`].
    Model
);

impl Model {
    fn new() -> Self {
        Self(SimModel::new(JUJU_SIM, "jsim-leadership-").with_env(LEADERSHIP_ENV))
    }

    fn state(&self) -> State {
        Store::new(self.path().join("state.json"))
            .load()
            .expect("the hook-tool state")
    }

    /// Each controller unit's `leadership.json` path.
    fn files(&self) -> Vec<(String, PathBuf)> {
        let world = self.world();
        world
            .units
            .iter()
            .map(|(unit, queue)| {
                let data_dir = juju_sim::simulation::machine_data_dir(&self.path(), queue.machine);
                (
                    unit.clone(),
                    controller_contract::paths::unit_leadership(&data_dir, unit),
                )
            })
            .collect()
    }
}

fn read(path: &PathBuf) -> Option<UnitLeadership> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The units leading now by their files.
fn leaders(files: &[(String, PathBuf)]) -> Vec<String> {
    let now = monotonic_ms();
    files
        .iter()
        .filter(|(_, path)| read(path).is_some_and(|f| f.leads_at(now)))
        .map(|(unit, _)| unit.clone())
        .collect()
}

fn wait_for_leader(files: &[(String, PathBuf)], not: Option<&str>, within: Duration) -> String {
    let until = Instant::now() + within;
    loop {
        let now = leaders(files);
        if let [leader] = now.as_slice() {
            if Some(leader.as_str()) != not {
                return leader.clone();
            }
        }
        assert!(
            Instant::now() < until,
            "no leader other than {not:?} within {within:?}: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn signal(name: &str, pid: u32) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

/// Continues the stopped processes when dropped (before the model is destroyed), should
/// the test fail while they are stopped.
struct Stopped(Vec<u32>);

impl Drop for Stopped {
    fn drop(&mut self) {
        for pid in self.0.drain(..).rev() {
            let _ = Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
    }
}

#[test]
fn stopping_the_leaders_agent_moves_leadership_and_no_two_units_ever_lead() {
    let model = Model::new();
    model.ok(&["bootstrap", "--quorum-timeout-ms", "2000"]);
    model.ok(&["enable-ha"]);
    let files = model.files();
    assert_eq!(files.len(), 3, "{files:?}");

    // One leader by the lease, shown by status (the unit's star and the lease row).
    let first = wait_for_leader(&files, None, Duration::from_secs(60));
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let status = model.status();
        let starred: Vec<&str> = status
            .units
            .iter()
            .filter(|u| u.leader)
            .map(|u| u.name.as_str())
            .collect();
        let row = status
            .leases
            .iter()
            .find(|l| l.kind == "application-leadership" && l.name == "controller");
        if starred == [first.as_str()] && row.is_some_and(|r| r.holder == first && r.held()) {
            break;
        }
        assert!(
            Instant::now() < until,
            "status does not show {first} leading: {starred:?}, {:?}",
            status.leases
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let table = model.ok(&["status"]);
    assert!(
        table.contains("application-leadership/controller/controller") && table.contains(&first),
        "{table}"
    );

    // The cluster-status action shows it too (from the agent's lease-status file, written
    // every 5 s here).
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let result = model.ok(&["run", "controller/2", "cluster-status", "--format", "json"]);
        let result: serde_json::Value = serde_json::from_str(&result).expect("action JSON");
        let lease = &result["controller/2"]["results"]["leases"]["application-leadership"];
        if lease["holder"] == first.as_str() {
            assert!(
                lease["token"]
                    .as_str()
                    .is_some_and(|t| t.starts_with(&format!("{first}@"))),
                "{result}"
            );
            break;
        }
        assert!(
            Instant::now() < until,
            "cluster-status shows no leader: {result}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Sample every file throughout: never two leaders.
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = {
        let files = files.clone();
        let stop = stop_sampling.clone();
        std::thread::spawn(move || {
            let mut samples = 0u64;
            let mut two = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let now = leaders(&files);
                if now.len() > 1 {
                    two.push(now);
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (samples, two)
        })
    };

    // Stop the leader unit's machine agent: its supervisor first (or it would restart the
    // agent), then the agent.
    let world = model.world();
    let machine = world.units[&first].machine;
    let supervisor = world.machines[&machine].agent_pid.expect("a supervisor");
    let agent = juju_sim::agent::dbaccessor_pid(&model.path(), machine).expect("an agent");
    let stopped_wall = wall_ms();
    let stopped_at = Instant::now();
    signal("STOP", supervisor);
    let mut stopped = Stopped(vec![supervisor]);
    signal("STOP", agent);
    stopped.0.push(agent);

    let next = wait_for_leader(
        &files,
        Some(&first),
        Duration::from_millis((GRANT_MS + TAKEOVER_BOUND_MS) as u64),
    );
    let takeover = stopped_at.elapsed().as_millis();
    eprintln!("machine {machine} ({first}) stopped: {next} leads {takeover} ms later (grant {GRANT_MS} ms)");

    // The uniter's part, while the old leader is still stopped: leader-elected on the new
    // leader, leader-settings-changed on the third unit.
    model.ok(&["wait", "--hooks-only"]);
    let history = model.state().history;
    let ran = |unit: &str, hook: &str| {
        history.iter().any(|r| {
            r.unit == unit
                && r.dispatch_path == format!("hooks/{hook}")
                && r.exit_code == Some(0)
                && r.span.started_ms >= stopped_wall
        })
    };
    assert!(
        ran(&next, "leader-elected"),
        "no leader-elected on {next}: {history:#?}"
    );
    let third = files
        .iter()
        .map(|(u, _)| u.as_str())
        .find(|u| *u != first && *u != next)
        .expect("a third unit");
    assert!(ran(third, "leader-settings-changed"), "{history:#?}");
    assert!(!ran(third, "leader-elected") && !ran(&first, "leader-elected"));

    // Restore: the old leader's agent resumes past its deadline and leads no more.
    drop(stopped);
    std::thread::sleep(Duration::from_millis(3 * GRANT_MS as u64));
    assert_eq!(leaders(&files), std::slice::from_ref(&next));
    model.ok(&["wait"]);
    let status = model.status();
    let starred: Vec<&str> = status
        .units
        .iter()
        .filter(|u| u.leader)
        .map(|u| u.name.as_str())
        .collect();
    assert_eq!(starred, [next.as_str()], "{status:#?}");

    stop_sampling.store(true, Ordering::SeqCst);
    let (samples, two) = sampler.join().expect("the sampler");
    eprintln!("{samples} samples of the three files");
    assert!(samples > 100, "{samples} samples");
    assert!(two.is_empty(), "two leaders at once: {two:?}");

    // The trackers' record: every grant each unit held, by the monotonic clock.
    let grants: Vec<(String, HeldGrant)> = files
        .iter()
        .filter_map(|(unit, path)| Some((unit.clone(), read(path)?.grants)))
        .flat_map(|(unit, grants)| grants.into_iter().map(move |g| (unit.clone(), g)))
        .collect();
    eprintln!("grants: {grants:?}");
    let count = check_one_leader(&grants).expect("no two units led at once");
    assert!(
        grants.iter().any(|(u, _)| *u == first) && grants.iter().any(|(u, _)| *u == next),
        "{grants:?}"
    );
    assert!(count >= 2);
}
