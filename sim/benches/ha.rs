//! The HA benchmark on real processes (release build, as root): the median of several runs of
//! `enable-ha -n 3` until the cluster has 3 voters (target under 2 s, hooks included),
//! `enable-ha -n 7` from one controller until all 7 are members (target under 2 s), and the
//! fail-over seen by a client after kill -9 of the Dqlite leader's dbaccessor: from the kill
//! to the first write that succeeds through the go-dqlite shell (target under 1 s), and
//! `remove-machine` of a follower's and of the leader's machine at 3 and at 7 controllers,
//! until the model has settled (hooks run, the departed member gone from the Dqlite
//! configuration, every voter connected and caught up; target under 1 s), with each one's
//! phases (last hook done, member removed from the Dqlite configuration, settled). Prints
//! numbers; asserts no timing.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use juju_sim::report::StatusReport;
use test_support::sim::Model as SimModel;

const JUJU_SIM: &str = env!("CARGO_BIN_EXE_juju-sim");
const RUNS: usize = 3;

test_support::sim_model!(
    /// A model destroyed on drop.
    Model
);

impl Model {
    fn new() -> Self {
        Self(SimModel::new(JUJU_SIM, "jsim-bench-"))
    }

    fn timed(&self, args: &[&str]) -> Duration {
        let started = Instant::now();
        self.ok(args);
        started.elapsed()
    }
}

/// One command's timeline: when its last hook finished, when an agent logged the member's
/// removal from the Dqlite configuration, and when the command returned (settled).
#[derive(Debug, Clone, Copy)]
struct Phases {
    hooks_done: Option<Duration>,
    member_removed: Option<Duration>,
    settled: Duration,
}

impl Model {
    /// Runs `juju-sim -v <args>`, timing its phases from its output as it streams and from
    /// the agents' logs (see [`Phases`]).
    fn phased(&self, args: &[&str]) -> Phases {
        let wall = SystemTime::now();
        let started = Instant::now();
        let mut child = self
            .command(&[&["-v"], args].concat())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("juju-sim runs");
        let mut hooks_done = None;
        let stdout = child.stdout.take().expect("piped");
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // `  unit: hook ok (N ms)` per hook; `hooks done` when a removed unit is gone.
            if line.contains(" ok (") || line.contains("hooks done") {
                hooks_done = Some(started.elapsed());
            }
        }
        assert!(
            child.wait().expect("wait").success(),
            "juju-sim {args:?} failed"
        );
        let settled = started.elapsed();
        Phases {
            hooks_done,
            member_removed: self.logged_after("removed departed member", wall),
            settled,
        }
    }

    /// How long after `since` an agent first logged a line containing `needle` (log lines
    /// start `[YYYY-MM-DDTHH:MM:SS.mmmZ`; compared within the day, UTC).
    fn logged_after(&self, needle: &str, since: SystemTime) -> Option<Duration> {
        let day_ms = |t: SystemTime| {
            (t.duration_since(UNIX_EPOCH)
                .expect("after 1970")
                .as_millis()
                % 86_400_000) as i64
        };
        let since_ms = day_ms(since);
        let machines = std::fs::read_dir(self.path().join("machines")).ok()?;
        machines
            .filter_map(Result::ok)
            .filter_map(|m| std::fs::read_to_string(m.path().join("agent.log")).ok())
            .flat_map(|log| {
                log.lines()
                    .filter(|line| line.contains(needle))
                    .filter_map(|line| {
                        let time = line.get(12..24)?; // HH:MM:SS.mmm
                        let h: i64 = time.get(0..2)?.parse().ok()?;
                        let m: i64 = time.get(3..5)?.parse().ok()?;
                        let s: i64 = time.get(6..8)?.parse().ok()?;
                        let ms: i64 = time.get(9..12)?.parse().ok()?;
                        Some(((h * 60 + m) * 60 + s) * 1000 + ms)
                    })
                    .collect::<Vec<_>>()
            })
            .filter(|at| *at >= since_ms)
            .min()
            .map(|at| Duration::from_millis((at - since_ms) as u64))
    }
}

/// The machine of the Dqlite leader, or of a voter that does not lead.
fn pick_machine(model: &Model, leader: bool) -> u32 {
    let status: StatusReport =
        serde_json::from_str(&model.ok(&["status", "--format", "json"])).expect("status");
    let leader_id = status.dqlite_leader.expect("a leader");
    let node = status
        .dqlite
        .iter()
        .find(|m| (m.id == leader_id) == leader && m.role == "voter")
        .expect("a voter")
        .id;
    status
        .machines
        .iter()
        .find(|m| m.node_id == Some(node))
        .expect("its machine")
        .id
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn print(name: &str, samples: Vec<Duration>, target: &str) {
    let text: Vec<String> = samples
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect();
    let median = median(samples.clone()).as_secs_f64();
    println!(
        "{name}: median {median:.2} s over {} runs [{}] (target {target})",
        samples.len(),
        text.join(" ")
    );
    // For scripts/bench.sh's table: Juju has no published number for these, so the
    // comparison is with the target.
    println!("summary: {name}, s | {median:.2} | - | target {target}");
}

fn print_phases(name: &str, runs: &[Phases], target: &str) {
    let med = |pick: &dyn Fn(&Phases) -> Option<Duration>| {
        let samples: Vec<Duration> = runs.iter().filter_map(pick).collect();
        if samples.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.2} s", median(samples).as_secs_f64())
        }
    };
    print(name, runs.iter().map(|p| p.settled).collect(), target);
    println!(
        "    phases (medians): last hook done {}, member removed from Dqlite {}, settled {}",
        med(&|p| p.hooks_done),
        med(&|p| p.member_removed),
        med(&|p| Some(p.settled)),
    );
}

fn main() {
    let target = Path::new(JUJU_SIM).parent().expect("a target dir");
    for needed in ["dispatch", "jujud-controller", "juju-hook-tool"] {
        if !target.join(needed).is_file() {
            eprintln!(
                "{} missing: run `cargo build --release -p controller-charm -p agent -p juju-sim` first",
                target.join(needed).display()
            );
            std::process::exit(1);
        }
    }
    let mut to_three = Vec::new();
    let mut failover = Vec::new();
    for _ in 0..RUNS {
        let model = Model::new();
        model.ok(&["bootstrap"]);
        to_three.push(model.timed(&["enable-ha", "-n", "3"]));
        model.ok(&["sql", "CREATE TABLE t (x INTEGER)"]);
        let status: StatusReport =
            serde_json::from_str(&model.ok(&["status", "--format", "json"])).expect("status");
        let leader = status.dqlite_leader.expect("a leader");
        let pid = status
            .machines
            .iter()
            .find(|m| m.node_id == Some(leader))
            .and_then(|m| m.dbaccessor_pid)
            .expect("the leader's dbaccessor");
        let started = Instant::now();
        let killed = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        while !model
            .run(&["sql", "INSERT INTO t VALUES (1)"])
            .status
            .success()
        {
            assert!(started.elapsed() < Duration::from_secs(60), "no fail-over");
        }
        failover.push(started.elapsed());
    }
    let mut to_seven: Vec<Phases> = Vec::new();
    for _ in 0..RUNS {
        let model = Model::new();
        model.ok(&["bootstrap"]);
        to_seven.push(model.phased(&["enable-ha", "-n", "7"]));
    }
    let mut removals: Vec<(String, Vec<Phases>)> = Vec::new();
    for controllers in ["3", "7"] {
        for whose in ["a follower's", "the leader's"] {
            let mut samples = Vec::new();
            for _ in 0..RUNS {
                let model = Model::new();
                model.ok(&["bootstrap"]);
                model.ok(&["enable-ha", "-n", controllers]);
                let machine = pick_machine(&model, whose == "the leader's");
                samples.push(model.phased(&["remove-machine", &machine.to_string()]));
            }
            removals.push((
                format!("remove-machine of {whose} machine at {controllers} controllers"),
                samples,
            ));
        }
    }
    print("enable-ha 1 -> 3 until 3 voters", to_three, "< 2 s");
    for (name, samples) in removals {
        print_phases(&name, &samples, "< 1 s");
    }
    print_phases("enable-ha 1 -> 7 until 7 members", &to_seven, "< 2 s");
    print(
        "fail-over after kill -9 of the leader's dbaccessor (first write that succeeds)",
        failover,
        "< 1 s",
    );
}
