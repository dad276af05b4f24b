//! The HA benchmark on real processes (release build, as root): the median of several runs of
//! `enable-ha -n 3` until the cluster has 3 voters (target under 2 s, hooks included),
//! `enable-ha -n 7` from one controller until all 7 are members (target under 5 s), and the
//! fail-over seen by a client after kill -9 of the Dqlite leader's dbaccessor: from the kill
//! to the first write that succeeds through the go-dqlite shell (target under 1 s), and
//! `remove-machine` of a follower's and of the leader's machine at 3 and at 7 controllers,
//! until the model has settled (hooks run, the departed member gone from the Dqlite
//! configuration, every voter connected and caught up; target under 1 s). Prints numbers;
//! asserts no timing.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use juju_sim::report::StatusReport;

const JUJU_SIM: &str = env!("CARGO_BIN_EXE_juju-sim");
const RUNS: usize = 3;

/// A model destroyed on drop.
struct Model {
    dir: tempfile::TempDir,
}

impl Model {
    fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("jsim-bench-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    fn run(&self, args: &[&str]) -> bool {
        Command::new(JUJU_SIM)
            .args(args)
            .env("JUJU_SIM_MODEL", self.dir.path().join("model"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = Command::new(JUJU_SIM)
            .args(args)
            .env("JUJU_SIM_MODEL", self.dir.path().join("model"))
            .output()
            .expect("juju-sim runs");
        assert!(
            output.status.success(),
            "juju-sim {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn timed(&self, args: &[&str]) -> Duration {
        let started = Instant::now();
        self.ok(args);
        started.elapsed()
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        if self.dir.path().join("model/world.json").exists() {
            self.run(&["destroy"]);
        }
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
    println!(
        "{name}: median {:.2} s over {} runs [{}] (target {target})",
        median(samples.clone()).as_secs_f64(),
        samples.len(),
        text.join(" ")
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
        while !model.run(&["sql", "INSERT INTO t VALUES (1)"]) {
            assert!(started.elapsed() < Duration::from_secs(60), "no fail-over");
        }
        failover.push(started.elapsed());
    }
    let mut to_seven = Vec::new();
    for _ in 0..RUNS {
        let model = Model::new();
        model.ok(&["bootstrap"]);
        to_seven.push(model.timed(&["enable-ha", "-n", "7"]));
    }
    let mut removals: Vec<(String, Vec<Duration>)> = Vec::new();
    for controllers in ["3", "7"] {
        for whose in ["a follower's", "the leader's"] {
            let mut samples = Vec::new();
            for _ in 0..RUNS {
                let model = Model::new();
                model.ok(&["bootstrap"]);
                model.ok(&["enable-ha", "-n", controllers]);
                let machine = pick_machine(&model, whose == "the leader's");
                samples.push(model.timed(&["remove-machine", &machine.to_string()]));
            }
            removals.push((
                format!("remove-machine of {whose} machine at {controllers} controllers"),
                samples,
            ));
        }
    }
    print("enable-ha 1 -> 3 until 3 voters", to_three, "< 2 s");
    for (name, samples) in removals {
        print(&name, samples, "< 1 s");
    }
    print("enable-ha 1 -> 7 until 7 members", to_seven, "< 5 s");
    print(
        "fail-over after kill -9 of the leader's dbaccessor (first write that succeeds)",
        failover,
        "< 1 s",
    );
}
