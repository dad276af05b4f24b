//! The machine agents' benchmark on real processes (as root): one model with 3 controllers
//! (NICs in two spaces) grown to 3, 10 and 30 workload machines. At each size:
//!
//! - the time from a control-plane change (`juju-sim controller-config juju-mgmt-space=...`,
//!   alternating between the two spaces, timed from the command's start and from its
//!   return) to every agent.conf (workload machines' and controllers') listing the new
//!   addresses, median of [`CHANGES`];
//! - the reconnect time after a controller dies: the controller most agents are connected
//!   to has its `jujud-controller` killed (its supervisor held with SIGSTOP so that it
//!   cannot come back at once); per agent, the time from the kill to its new login
//!   elsewhere (from its `api-connection.json`), and until every one of them is back, the
//!   median of [`KILLS`] kills.
//!
//! Prints numbers and `summary:` lines; asserts no timing. Runs with the binaries of its
//! profile (`cargo bench`: release; `cargo test --bench agents`: debug).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use controller_contract::agentaddr::{ApiConnection, API_CONNECTION_NAME};
use juju_sim::world::World;
use test_support::sim::Model as SimModel;

const JUJU_SIM: &str = env!("CARGO_BIN_EXE_juju-sim");
/// `juju-mgmt-space` changes measured per size.
const CHANGES: usize = 5;
/// Controllers killed per size.
const KILLS: usize = 3;
/// The sizes measured.
const SIZES: [usize; 3] = [3, 10, 30];
/// What the update should take: one read of the server's address watch (500 ms) plus the
/// long poll's wake-up and a file write.
const UPDATE_TARGET_MS: f64 = 1000.0;
/// What a reconnect should take: the host's first back-off (100 ms) and one staggered dial
/// with an Argon2 check; 2 s leaves room for two stagger steps.
const RECONNECT_TARGET_MS: f64 = 2000.0;

test_support::sim_model!(
    /// A model destroyed on drop.
    Model
);

impl Model {
    fn new() -> Self {
        Self(SimModel::new(JUJU_SIM, "jsim-bench-agents-"))
    }

    fn controller_addresses(&self, space: &str) -> BTreeSet<String> {
        let world = self.world();
        world
            .controller_machines()
            .iter()
            .flat_map(|id| world.machines[id].nics.clone())
            .filter(|nic| space.is_empty() || nic.space == space)
            .map(|nic| format!("{}:17070", nic.address))
            .collect()
    }

    /// Whether every agent.conf (workload and controller) lists exactly `want`.
    fn all_list(&self, world: &World, want: &BTreeSet<String>) -> bool {
        let workload = world
            .workload_machines()
            .into_iter()
            .map(|id| juju_sim::simulation::machine_agent_dir(&self.path(), id).join("agent.conf"));
        let controllers = world
            .controller_machines()
            .into_iter()
            .map(|id| juju_sim::simulation::controller_dir(&self.path(), id).join("agent.conf"));
        workload.chain(controllers).all(|path| {
            let Ok(text) = std::fs::read_to_string(&path) else {
                return false;
            };
            let listed: Option<Vec<String>> =
                serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text)
                    .ok()
                    .and_then(|doc| {
                        doc.get("apiaddresses")?
                            .as_sequence()?
                            .iter()
                            .map(|a| a.as_str().map(str::to_owned))
                            .collect()
                    });
            listed.is_some_and(|l| l.len() == want.len() && l.iter().all(|a| want.contains(a)))
        })
    }

    fn wait_all_list(&self, want: &BTreeSet<String>, since: Instant) -> Duration {
        let world = self.world();
        while !self.all_list(&world, want) {
            assert!(
                since.elapsed() < Duration::from_secs(120),
                "agent.confs never listed {want:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        since.elapsed()
    }

    fn connections(&self) -> BTreeMap<u32, Option<ApiConnection>> {
        self.world()
            .workload_machines()
            .into_iter()
            .map(|id| {
                let path = juju_sim::simulation::machine_agent_dir(&self.path(), id)
                    .join(API_CONNECTION_NAME);
                let status = std::fs::read(path)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok());
                (id, status)
            })
            .collect()
    }

    fn wait_all_connected(&self) {
        let started = Instant::now();
        while self
            .connections()
            .values()
            .any(|c| c.as_ref().is_none_or(|c| c.state != "connected"))
        {
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "not every agent connected: {:?}",
                self.connections()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

/// Toggles `juju-mgmt-space` [`CHANGES`] times; returns the medians from the command's
/// start and from its return.
fn measure_updates(model: &Model) -> (Duration, Duration) {
    let mut from_start = Vec::new();
    let mut from_return = Vec::new();
    for i in 0..CHANGES {
        let space = if i % 2 == 0 { "beta" } else { "alpha" };
        let want = model.controller_addresses(space);
        let started = Instant::now();
        model.ok(&["controller-config", &format!("juju-mgmt-space={space}")]);
        let returned = Instant::now();
        let total = model.wait_all_list(&want, started);
        println!(
            "  juju-mgmt-space={space}: every agent.conf updated {:.0} ms after the command started ({:.0} ms after it returned)",
            ms(total),
            ms(total.saturating_sub(returned - started))
        );
        from_start.push(total);
        from_return.push(total.saturating_sub(returned - started));
    }
    (median(from_start), median(from_return))
}

/// Kills [`KILLS`] controllers' agents in turn; returns the medians of the per-agent
/// reconnect and of the time until every affected agent was back.
fn measure_reconnects(model: &Model) -> (Duration, Duration, usize) {
    let mut per_agent = Vec::new();
    let mut until_all = Vec::new();
    let mut moved = 0;
    for _ in 0..KILLS {
        model.wait_all_connected();
        let world = model.world();
        let connections = model.connections();
        let controller_of = |endpoint: &str| {
            world.controller_machines().into_iter().find(|id| {
                world.machines[id]
                    .nics
                    .iter()
                    .any(|nic| format!("{}:17070", nic.address) == endpoint)
            })
        };
        let mut load: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (agent, connection) in &connections {
            if let Some(controller) = connection.as_ref().and_then(|c| controller_of(&c.endpoint)) {
                load.entry(controller).or_default().push(*agent);
            }
        }
        let (victim, agents) = load
            .into_iter()
            .max_by_key(|(_, agents)| agents.len())
            .expect("agents are connected");
        let supervisor = world.machines[&victim].agent_pid.expect("a supervisor");
        let jujud: u32 = std::fs::read_to_string(
            model
                .path()
                .join(format!("machines/{victim}/dbaccessor.pid")),
        )
        .expect("the agent's pid")
        .trim()
        .parse()
        .expect("a pid");
        let gone: BTreeSet<String> = world.machines[&victim]
            .nics
            .iter()
            .map(|nic| format!("{}:17070", nic.address))
            .collect();
        signal(supervisor, "STOP");
        let killed_at = now_ms();
        let killed = Instant::now();
        signal(jujud, "KILL");
        let mut back: BTreeMap<u32, u64> = BTreeMap::new();
        while back.len() < agents.len() {
            for (agent, connection) in model.connections() {
                if let Some(c) = connection.filter(|c| {
                    agents.contains(&agent) && c.state == "connected" && !gone.contains(&c.endpoint)
                }) {
                    back.entry(agent)
                        .or_insert(c.since_ms.saturating_sub(killed_at));
                }
            }
            assert!(
                killed.elapsed() < Duration::from_secs(60),
                "agents {agents:?} not back after 60 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let all = back.values().copied().max().unwrap_or_default();
        println!(
            "  controller {victim} killed: {} agents reconnected elsewhere, each in {:?} ms, all within {all} ms",
            agents.len(),
            back.values().collect::<Vec<_>>()
        );
        per_agent.extend(back.values().map(|ms| Duration::from_millis(*ms)));
        until_all.push(Duration::from_millis(all));
        moved += agents.len();
        signal(supervisor, "CONT");
        // The supervisor restarts the agent; its controller serves again before the next kill.
        std::thread::sleep(Duration::from_secs(3));
    }
    (median(per_agent), median(until_all), moved)
}

fn main() {
    let model = Model::new();
    let setup = Instant::now();
    model.ok(&[
        "bootstrap",
        "--quorum-timeout-ms",
        "2000",
        "--space",
        "beta=10.132.0.0/24",
    ]);
    model.ok(&["bind", "db-cluster", "alpha"]);
    model.ok(&["enable-ha", "-n", "3"]);
    println!("3 controllers in {:.1} s", setup.elapsed().as_secs_f64());
    let mut machines = 0;
    let mut rows = Vec::new();
    for size in SIZES {
        let adding = Instant::now();
        let more = (size - machines).to_string();
        model.ok(&[
            "add-machine",
            "-n",
            &more,
            "--space",
            "alpha",
            "--space",
            "beta",
        ]);
        machines = size;
        model.wait_all_connected();
        println!(
            "{size} workload machines: {more} added and every agent logged in within {:.1} s",
            adding.elapsed().as_secs_f64()
        );
        let (from_start, from_return) = measure_updates(&model);
        let (per_agent, until_all, moved) = measure_reconnects(&model);
        println!(
            "{size} machines: median over {CHANGES} changes: every agent.conf updated {:.0} ms after the command started, {:.0} ms after it returned",
            ms(from_start),
            ms(from_return)
        );
        println!(
            "{size} machines: median over {KILLS} kills ({moved} agents moved): one agent reconnects in {:.0} ms, all of a controller's agents within {:.0} ms",
            ms(per_agent),
            ms(until_all)
        );
        rows.push((size, from_start, per_agent, until_all));
    }
    for (size, update, per_agent, until_all) in rows {
        println!(
            "summary: agents: change -> every agent.conf, {size} machines | {:.0} ms | target {UPDATE_TARGET_MS:.0} ms | {:.2}x",
            ms(update),
            ms(update) / UPDATE_TARGET_MS
        );
        println!(
            "summary: agents: reconnect after a controller dies, {size} machines (one agent / all) | {:.0} / {:.0} ms | target {RECONNECT_TARGET_MS:.0} ms | {:.2}x",
            ms(per_agent),
            ms(until_all),
            ms(until_all) / RECONNECT_TARGET_MS
        );
    }
}
