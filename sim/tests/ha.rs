//! End-to-end HA scenarios on real processes: the `juju-sim` CLI, the compiled charm, one
//! real `dbaccessor` per machine in its own network namespace, and the go-dqlite `dqlite`
//! shell as an independent client. Needs root (namespaces) and the workspace's binaries
//! built (`cargo build --workspace --bins`, as scripts/test.sh does).
//!
//! Scenarios run one at a time (a lock) so that 2 cores are not shared by several clusters;
//! each model has its own dir and namespaces and is destroyed by a drop guard even when the
//! test fails.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use juju_sim::report::StatusReport;
use serde_json::Value;
use test_support::sim::Model as SimModel;

const JUJU_SIM: &str = env!("CARGO_BIN_EXE_juju-sim");

/// One scenario at a time.
static SERIAL: Mutex<()> = Mutex::new(());

test_support::sim_model!(
    /// A model dir whose model is destroyed on drop (agents stopped, namespaces deleted).
    Model
);

impl Model {
    fn new() -> Self {
        Self(SimModel::new(JUJU_SIM, "jsim-test-"))
    }

    /// Writes a row, retrying as a client does while the cluster is unavailable (each try
    /// is bounded by the shell's timeout) for up to two minutes. A write that needed retries
    /// is reported on stderr: right after a shrink to one node libdqlite has been seen to
    /// hold writes for tens of seconds, which is an availability finding, not a lost row.
    ///
    /// The insert is idempotent: a try whose outcome the shell could not learn (leadership
    /// lost mid-commit) may have committed, and a blind retry would write the row twice.
    fn write_row(&self, step: &str) {
        let sql = format!(
            "INSERT INTO rows (step) SELECT '{step}' \
             WHERE NOT EXISTS (SELECT 1 FROM rows WHERE step = '{step}')"
        );
        let started = std::time::Instant::now();
        let mut tries = 1;
        while !self.run(&["sql", &sql]).status.success() {
            if started.elapsed() > std::time::Duration::from_secs(120) {
                self.ok(&["sql", &sql]);
            }
            tries += 1;
        }
        if tries > 1 {
            eprintln!(
                "write {step:?} succeeded after {tries} tries ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
        }
    }

    /// Every row's step, in id order.
    fn rows(&self) -> Vec<String> {
        self.ok(&["sql", "SELECT step FROM rows ORDER BY id"])
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

const LAYOUT: &[&str] = &["--quorum-timeout-ms", "2000"];

fn bootstrap(model: &Model, extra: &[&str]) {
    let mut args = vec!["bootstrap"];
    args.extend_from_slice(LAYOUT);
    args.extend_from_slice(extra);
    model.ok(&args);
}

fn member_addresses(status: &StatusReport) -> BTreeSet<String> {
    status.dqlite.iter().map(|m| m.address.clone()).collect()
}

fn voters(status: &StatusReport) -> usize {
    status.dqlite.iter().filter(|m| m.role == "voter").count()
}

fn leader_unit(status: &StatusReport) -> String {
    status
        .units
        .iter()
        .find(|u| u.leader)
        .map(|u| u.name.clone())
        .expect("a leader unit")
}

/// Checks the settled model: `n` active units, `n` members at the published addresses, the
/// expected voters.
fn assert_cluster(model: &Model, n: usize) -> StatusReport {
    let status = model.status();
    assert_eq!(status.units.len(), n, "{status:#?}");
    for unit in &status.units {
        assert_eq!(unit.workload, "active", "{status:#?}");
    }
    let wanted: BTreeSet<String> = status
        .map
        .values()
        .map(|ip| controller_contract::dqlite_address(ip.parse().expect("an IP in the map")))
        .collect();
    assert_eq!(wanted.len(), n, "{status:#?}");
    assert_eq!(member_addresses(&status), wanted, "{status:#?}");
    assert_eq!(voters(&status), if n >= 3 { 3 } else { 1 }, "{status:#?}");
    status
}

#[test]
fn grow_to_seven_and_shrink_to_one_loses_no_row() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let model = Model::new();
    bootstrap(&model, &[]);
    assert_cluster(&model, 1);
    model.ok(&[
        "sql",
        "CREATE TABLE rows (id INTEGER PRIMARY KEY, step TEXT)",
    ]);
    let mut written = vec![];
    let mut write = |step: &str| {
        model.write_row(step);
        written.push(step.to_owned());
        assert_eq!(model.rows(), written, "after {step}");
    };
    write("one");
    for n in ["3", "5", "7"] {
        model.ok(&["enable-ha", "-n", n]);
        assert_cluster(&model, n.parse().expect("a number"));
        write(&format!("grown to {n}"));
    }

    // The go-dqlite shell, an independent client, sees the members status shows.
    let status = model.status();
    let shell: Vec<Value> =
        serde_json::from_str(&model.ok(&["sql", "--json", ".cluster"])).expect("shell JSON");
    let shell_members: BTreeSet<(String, String)> = shell
        .iter()
        .map(|m| {
            let role = match m["Role"].as_u64() {
                Some(0) => "voter",
                Some(1) => "stand-by",
                _ => "spare",
            };
            (
                m["Address"].as_str().unwrap_or_default().to_owned(),
                role.to_owned(),
            )
        })
        .collect();
    let status_members: BTreeSet<(String, String)> = status
        .dqlite
        .iter()
        .map(|m| (m.address.clone(), m.role.clone()))
        .collect();
    assert_eq!(shell_members, status_members);

    // Juju's rules for the count.
    let refused = model.run(&["enable-ha", "-n", "4"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr)
        .contains("number of controllers must be odd and non-negative"));

    // Back down, one controller at a time, newest first, to 3 and then to 1.
    for (machine, left) in [("6", 6), ("5", 5), ("4", 4), ("3", 3), ("2", 2), ("1", 1)] {
        model.ok(&["remove-machine", machine]);
        assert_cluster(&model, left);
        if left % 2 == 1 {
            write(&format!("shrunk to {left}"));
        }
    }
    let status = model.status();
    assert_eq!(status.map.keys().collect::<Vec<_>>(), vec!["0"]);
    assert_eq!(model.rows(), written);
}

#[test]
fn two_candidate_addresses_block_until_the_endpoint_is_bound() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let model = Model::new();
    bootstrap(&model, &["--space", "internal=10.132.0.0/24"]);
    model.ok(&["enable-ha", "-n", "3"]);
    let status = model.status();
    assert!(status.map.is_empty(), "{status:#?}");
    for unit in &status.units {
        assert_eq!(unit.workload, "blocked", "{status:#?}");
        let machine = unit.machine;
        for address in [
            format!("10.131.0.{}", 10 + machine),
            format!("10.132.0.{}", 10 + machine),
        ] {
            assert!(
                unit.message.contains(&address),
                "{}: {}",
                unit.name,
                unit.message
            );
        }
    }
    let candidates = model.ok(&["run", "controller/1", "bind-candidates"]);
    assert!(candidates.contains("result: ambiguous"), "{candidates}");

    model.ok(&["bind", "db-cluster", "internal"]);
    let status = assert_cluster(&model, 3);
    for address in member_addresses(&status) {
        assert!(address.starts_with("10.132.0."), "{address}");
    }
    model.ok(&["sql", "CREATE TABLE t (x INTEGER)"]);
}

#[test]
fn a_bundle_with_bindings_deploys_a_three_node_cluster() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let model = Model::new();
    let bundle = model.dir().join("bundle.yaml");
    std::fs::write(
        &bundle,
        "applications:\n  controller:\n    charm: ./controller\n    num_units: 3\n    bindings:\n      \"\": alpha\n      db-cluster: internal\n",
    )
    .expect("bundle written");
    let mut args = vec!["deploy", "--bundle", bundle.to_str().expect("utf-8 path")];
    args.extend_from_slice(LAYOUT);
    args.extend_from_slice(&["--space", "internal=10.132.0.0/24"]);
    model.ok(&args);
    let status = assert_cluster(&model, 3);
    assert_eq!(status.binding, "internal");
    for address in member_addresses(&status) {
        assert!(address.starts_with("10.132.0."), "{address}");
    }
    let result = model.ok(&["run", "controller/2", "cluster-status", "--format", "json"]);
    let result: Value = serde_json::from_str(&result).expect("action JSON");
    assert_eq!(result["controller/2"]["status"], "completed", "{result}");
    assert_eq!(
        result["controller/2"]["results"]["unit"], "controller/2",
        "{result}"
    );
}

#[test]
fn a_new_leader_takes_over_the_map_when_the_leader_unit_goes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let model = Model::new();
    bootstrap(&model, &[]);
    model.ok(&["enable-ha"]);
    assert_cluster(&model, 3);
    assert_eq!(leader_unit(&model.status()), "controller/0");

    model.ok(&["remove-machine", "0"]);
    // The leaving leader published the map without itself: the survivors dropped it without
    // waiting for a new leader.
    let status = assert_cluster(&model, 2);
    assert_eq!(status.map.keys().collect::<Vec<_>>(), vec!["1", "2"]);
    // Its lease was revoked with its unit: a remaining unit's tracker claims it at its next
    // poll (2 s by default), and the simulator runs leader-elected there.
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        model.ok(&["wait", "--hooks-only"]);
        if let Some(unit) = model.status().units.iter().find(|u| u.leader) {
            break unit.name.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no unit leads 30 s after the leader's machine went"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        ["controller/1", "controller/2"].contains(&leader.as_str()),
        "{leader}"
    );

    // The new leader publishes the newcomer too.
    model.ok(&["enable-ha", "-n", "3"]);
    let status = assert_cluster(&model, 3);
    assert_eq!(status.map.keys().collect::<Vec<_>>(), vec!["1", "2", "3"]);
}

#[test]
fn a_killed_dbaccessor_is_restarted_and_rejoins() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let model = Model::new();
    bootstrap(&model, &[]);
    model.ok(&["enable-ha"]);
    model.ok(&[
        "sql",
        "CREATE TABLE rows (id INTEGER PRIMARY KEY, step TEXT)",
    ]);
    model.write_row("before");
    let status = assert_cluster(&model, 3);
    let leader_node = status.dqlite_leader.expect("a leader");
    let victim = status
        .machines
        .iter()
        .find(|m| m.node_id == Some(leader_node))
        .expect("the leader's machine");
    let old_pid = victim.dbaccessor_pid.expect("a running dbaccessor");
    let killed = Command::new("kill")
        .args(["-9", &old_pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());

    model.write_row("after");
    model.ok(&["wait"]);
    let status = assert_cluster(&model, 3);
    let machine = status
        .machines
        .iter()
        .find(|m| m.id == victim.id)
        .expect("the machine is still there");
    let new_pid = machine.dbaccessor_pid.expect("restarted");
    assert_ne!(new_pid, old_pid);
    assert_eq!(machine.node_id, victim.node_id, "it rejoined as itself");
    assert_eq!(model.rows(), vec!["before", "after"]);
    let log = std::fs::read_to_string(
        model
            .path()
            .join(format!("machines/{}/agent.log", victim.id)),
    )
    .expect("agent log");
    assert!(log.contains("restarting in"), "{log}");
}

/// Samples the Dqlite configuration with the go-dqlite shell (through `juju-sim sql`, in
/// the model's cloud namespace) every 0.5 s until finished: the voter count of each
/// sample, `None` when the shell could not answer.
struct VoterWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Option<usize>>>>,
}

impl VoterWatch {
    fn start(model: &Model) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let path = model.path();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = vec![];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let output = Command::new(JUJU_SIM)
                    .args(["sql", "--json", ".cluster"])
                    .env("JUJU_SIM_MODEL", &path)
                    .output()
                    .expect("juju-sim runs");
                let voters = serde_json::from_slice::<Vec<Value>>(&output.stdout)
                    .ok()
                    .filter(|_| output.status.success())
                    .map(|members| {
                        members
                            .iter()
                            .filter(|m| m["Role"].as_u64() == Some(0))
                            .count()
                    });
                samples.push(voters);
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            samples
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; asserts that every answer counted `voters` voters and that most
    /// samples were answered.
    fn assert_always(mut self, voters: usize) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let samples = self
            .thread
            .take()
            .expect("the watch runs")
            .join()
            .expect("the watch thread ends");
        let answered: Vec<usize> = samples.iter().flatten().copied().collect();
        assert!(
            answered.len() >= 10 && answered.len() * 2 >= samples.len(),
            "too few answers from the shell: {samples:?}"
        );
        assert!(
            answered.iter().all(|v| *v == voters),
            "the configuration did not keep {voters} voters: {samples:?}"
        );
    }
}

impl Drop for VoterWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// kill -9 of machine `machine`'s dbaccessor (its agent restarts it).
fn kill_dbaccessor(model: &Model, machine: u32) {
    let status = model.status();
    let pid = status
        .machines
        .iter()
        .find(|m| m.id == machine)
        .and_then(|m| m.dbaccessor_pid)
        .expect("a running dbaccessor");
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
}

/// A three-controller model that takes a glitch which leaves `victim`'s unit unable to
/// tell its address (or the leader unable to read the binding), then a kill -9 of the
/// victim's dbaccessor, then the operator's fix: the configuration keeps three voters
/// throughout, the map never loses an entry, and everything is active afterwards.
fn glitch_and_restart(glitch: &[&[&str]], victim: u32, blocked_unit: &str, fix: &[&[&str]]) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let model = Model::new();
    bootstrap(&model, &[]);
    model.ok(&["enable-ha"]);
    let before = assert_cluster(&model, 3);
    let watch = VoterWatch::start(&model);
    for command in glitch {
        model.ok(command);
    }
    let status = model.status();
    assert_eq!(
        status.map, before.map,
        "the map keeps every entry: {status:#?}"
    );
    let unit = status
        .units
        .iter()
        .find(|u| u.name == blocked_unit)
        .expect("the unit");
    assert_eq!(unit.workload, "blocked", "{status:#?}");

    kill_dbaccessor(&model, victim);
    // Long enough for the agent to restart it and for any removal rule to fire (the old
    // rule removed an absent member after 2 s of quorum timeout here).
    std::thread::sleep(std::time::Duration::from_secs(8));
    let status = model.status();
    assert_eq!(
        status.map, before.map,
        "the map keeps every entry: {status:#?}"
    );
    assert_eq!(voters(&status), 3, "{status:#?}");

    for command in fix {
        model.ok(command);
    }
    model.ok(&["wait"]);
    let after = assert_cluster(&model, 3);
    assert_eq!(after.map, before.map);
    watch.assert_always(3);
    let health = after.health.clone().unwrap_or_default();
    assert!(health.starts_with("healthy"), "{after:#?}");
}

#[test]
fn a_bind_cidr_typo_and_a_restart_cost_no_voter() {
    glitch_and_restart(
        &[&["config", "bind-cidr=10.99.0.0/24"]],
        0,
        "controller/0",
        &[&["config", "bind-cidr="]],
    );
}

#[test]
fn an_invalid_option_and_a_restart_cost_no_voter() {
    // A value of the wrong type never reaches the charm: juju-sim refuses it as `juju
    // config` does. A string option with a value the charm does not accept does.
    glitch_and_restart(
        &[&["config", "address-family=ipv5"]],
        0,
        "controller/0",
        &[&["config", "address-family=auto"]],
    );
}

#[test]
fn a_wrongly_typed_option_is_refused_as_juju_refuses_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let model = Model::new();
    bootstrap(&model, &[]);
    let output = model.run(&["config", "run-dbaccessor=yes"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("option \"run-dbaccessor\" expected boolean, got \"yes\""),
        "{stderr}"
    );
    let output = model.run(&["config", "colour=red"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown option \"colour\""));
}

#[test]
fn an_ambiguous_address_after_add_nic_and_a_restart_cost_no_voter() {
    glitch_and_restart(
        &[
            &["add-space", "internal", "10.132.0.0/24"],
            &["add-nic", "1", "internal"],
        ],
        1,
        "controller/1",
        &[&["bind", "db-cluster", "alpha"]],
    );
}

/// The unit of the controller machine whose node is a voter but not the leader.
fn follower_machine(status: &StatusReport) -> u32 {
    let leader = status.dqlite_leader.expect("a leader");
    let node = status
        .dqlite
        .iter()
        .find(|m| m.role == "voter" && m.id != leader)
        .expect("a follower voter")
        .id;
    status
        .machines
        .iter()
        .find(|m| m.node_id == Some(node))
        .expect("the follower's machine")
        .id
}

/// `juju run <unit> cluster-status`'s results.
fn cluster_status(model: &Model, unit: &str) -> Value {
    let text = model.ok(&["run", unit, "cluster-status", "--format", "json"]);
    let value: Value = serde_json::from_str(&text).expect("action JSON");
    value[unit]["results"].clone()
}

fn log_index(results: &Value) -> u64 {
    results["dbaccessor"]["log-position"]
        .as_str()
        .and_then(|p| p.parse::<controller_contract::status::LogPosition>().ok())
        .map(|p| p.index)
        .expect("a log position")
}

#[test]
fn a_healed_follower_counts_for_fault_tolerance_only_once_caught_up() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let model = Model::new();
    bootstrap(&model, &[]);
    model.ok(&["enable-ha"]);
    model.ok(&[
        "sql",
        "CREATE TABLE rows (id INTEGER PRIMARY KEY, step TEXT)",
    ]);
    let status = assert_cluster(&model, 3);
    assert!(
        status
            .health
            .as_deref()
            .unwrap_or_default()
            .contains("survives 1 more"),
        "{status:#?}"
    );
    let follower = follower_machine(&status);
    let namespace = status
        .machines
        .iter()
        .find(|m| m.id == follower)
        .expect("the machine")
        .namespace
        .clone();
    let link = |state: &str| {
        let done = Command::new("ip")
            .args(["-n", &namespace, "link", "set", "eth0", state])
            .status()
            .expect("ip runs");
        assert!(done.success(), "ip link set eth0 {state}");
    };

    // Cut the follower off for 30 s while the others keep writing.
    link("down");
    let cut = std::time::Instant::now();
    let mut n = 0;
    while cut.elapsed() < std::time::Duration::from_secs(30) {
        model.write_row(&format!("while cut {n}"));
        n += 1;
        if cut.elapsed() > std::time::Duration::from_secs(6) {
            let health = model.status().health.unwrap_or_default();
            assert!(
                !health.contains("survives 1 more"),
                "cut off, yet: {health}"
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let leader_unit = format!("controller/{}", {
        let status = model.status();
        let leader = status.dqlite_leader.expect("a leader");
        status
            .machines
            .iter()
            .find(|m| m.node_id == Some(leader))
            .expect("the leader's machine")
            .id
    });
    let leader_at_heal = log_index(&cluster_status(&model, &leader_unit));
    link("up");
    let healed = std::time::Instant::now();

    // Until the follower's own log has reached where the leader's was at the heal (less
    // the verdict's catch-up window for a quiet log, 8 entries plus 3 s of reports), the
    // verdict must not claim a spare failure.
    let follower_unit = format!("controller/{follower}");
    let mut claimed_at = None;
    while healed.elapsed() < std::time::Duration::from_secs(40) {
        let health = model.status().health.unwrap_or_default();
        let follower_index = log_index(&cluster_status(&model, &follower_unit));
        if health.contains("survives 1 more") {
            assert!(
                follower_index + 30 >= leader_at_heal,
                "fault tolerance claimed while the follower is at {follower_index} and the \
                 leader was at {leader_at_heal} when the network healed: {health}"
            );
            claimed_at = Some(healed.elapsed());
            break;
        }
    }
    let claimed_at = claimed_at.expect("healthy again within 40 s of the heal");
    eprintln!(
        "fault tolerance claimed again {:.1} s after the heal ({n} rows written while cut)",
        claimed_at.as_secs_f64()
    );
    model.ok(&["wait"]);
    assert_cluster(&model, 3);
}

#[test]
fn malformed_network_get_on_the_leader_and_a_restart_cost_no_voter() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let model = Model::new();
    bootstrap(&model, &[]);
    model.ok(&["enable-ha"]);
    let before = assert_cluster(&model, 3);
    assert_eq!(leader_unit(&before), "controller/0");
    let watch = VoterWatch::start(&model);
    // Truncated JSON with a NUL byte: the leader's hook fails (Juju retries it) and
    // commits nothing; the settle gives up after a few seconds of retries.
    let broken = model.run(&[
        "--timeout",
        "6",
        "fault-network-get",
        "controller/0",
        "{\"bind-addresses\":[{\"addresses\":[{\"value\":\"10.\u{1}",
    ]);
    assert!(
        !broken.status.success(),
        "the failing hook keeps the model unsettled"
    );
    let status = model.status();
    assert_eq!(
        status.map, before.map,
        "the map keeps every entry: {status:#?}"
    );
    let leader = status
        .units
        .iter()
        .find(|u| u.name == "controller/0")
        .expect("the leader unit");
    assert_eq!(leader.workload, "error", "{status:#?}");

    kill_dbaccessor(&model, 0);
    std::thread::sleep(std::time::Duration::from_secs(8));
    let status = model.status();
    assert_eq!(status.map, before.map, "{status:#?}");
    assert_eq!(voters(&status), 3, "{status:#?}");

    model.ok(&["fault-network-get", "controller/0"]);
    model.ok(&["wait"]);
    let after = assert_cluster(&model, 3);
    assert_eq!(after.map, before.map);
    watch.assert_always(3);
}

#[test]
fn an_ipv6_only_model_grows_to_three_and_shrinks_to_one() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let model = Model::new();
    // The only space is a ULA /64: every machine has one IPv6 address (and link-local
    // ones, which the charm drops), and the charm is told to take IPv6 only.
    bootstrap(&model, &["--default-space", "v6=fd00:131::/64"]);
    model.ok(&["config", "address-family=ipv6"]);
    model.ok(&["wait"]);
    assert_cluster(&model, 1);
    model.ok(&[
        "sql",
        "CREATE TABLE rows (id INTEGER PRIMARY KEY, step TEXT)",
    ]);
    model.write_row("one");
    model.ok(&["enable-ha", "-n", "3"]);
    let status = assert_cluster(&model, 3);
    for address in member_addresses(&status) {
        assert!(address.starts_with("[fd00:131::"), "{address}");
    }
    // The agents run their nodes with mutual TLS: one CA everywhere (provisioned by the
    // simulator), and a node certificate for each.
    let controller_dir = |machine: u32| {
        model.path().join(format!(
            "machines/{machine}/var/lib/juju/agents/controller-{machine}"
        ))
    };
    let ca = std::fs::read(controller_dir(0).join("ca.pem")).expect("machine 0's CA");
    for machine in 0..3 {
        let dir = controller_dir(machine);
        assert_eq!(
            std::fs::read(dir.join("ca.pem")).expect("CA"),
            ca,
            "machine {machine}"
        );
        assert!(dir.join("dqlite-node.pem").is_file(), "machine {machine}");
    }
    model.write_row("three");
    for (machine, left) in [("2", 2), ("1", 1)] {
        model.ok(&["remove-machine", machine]);
        assert_cluster(&model, left);
    }
    model.write_row("back to one");
    assert_eq!(model.rows(), vec!["one", "three", "back to one"]);
    let status = model.status();
    assert_eq!(
        member_addresses(&status),
        BTreeSet::from(["[fd00:131::a]:17666".to_owned()])
    );
}
