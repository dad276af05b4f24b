//! Workload machines and their agents end to end: real `jujud-controller --machine-agent`
//! processes in their own namespaces log in with their own credentials, follow the
//! controllers' address watch and rewrite `apiaddresses` in their `agent.conf` at every
//! control-plane change. Needs root (namespaces) and the workspace's binaries built
//! (`cargo build --workspace --bins`).
//!
//! One model carries every check (each simulation costs CI time): 3 controllers with NICs in
//! two spaces and 3 workload machines: every agent.conf lists every controller's addresses;
//! a new NIC on a controller reaches every agent.conf; an unknown `juju-mgmt-space` is
//! refused and changes nothing; `juju-mgmt-space=beta` leaves only beta's addresses in every
//! agent.conf (controllers' own included) while the client's store still lists all; after
//! `enable-ha -n 5` every agent.conf lists 5; with one controller's agent killed (and its
//! restart held back) every agent is connected to another; after `remove-machine` of that
//! controller its address is gone everywhere; a removed workload machine's credential is
//! gone. Each wait prints how long the change took to reach every agent.conf.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use controller_contract::agentaddr::{parse_agent_conf, ApiConnection, API_CONNECTION_NAME};
use test_support::sim::Model as SimModel;

const JUJU_SIM: &str = env!("CARGO_BIN_EXE_juju-sim");

test_support::sim_model!(
    /// A model dir whose model is destroyed on drop (agents stopped, namespaces deleted).
    Model
);

impl Model {
    fn new() -> Self {
        // Short leases: a killed controller that held the singular-controller lease (the
        // compute provisioner, which starts and removes workload machines) is replaced
        // within seconds rather than a minute.
        Self(SimModel::new(JUJU_SIM, "jsim-agents-").with_env(&[
            ("JUJUD_LEASE_DURATION_MS", "3000"),
            ("JUJUD_LEASE_EXTEND_MS", "1000"),
            ("JUJUD_LEASE_MARGIN_MS", "1000"),
        ]))
    }

    /// Every controller's `ip:17070` in `space` (every space with `None`).
    fn controller_addresses(&self, space: Option<&str>) -> BTreeSet<String> {
        let world = self.world();
        world
            .controller_machines()
            .iter()
            .flat_map(|id| world.machines[id].nics.clone())
            .filter(|nic| space.is_none_or(|s| nic.space == s))
            .map(|nic| format!("{}:17070", nic.address))
            .collect()
    }

    /// Every agent.conf's `apiaddresses`: workload machines' by id, and the controllers'
    /// own (`c<id>`).
    fn agent_confs(&self) -> BTreeMap<String, Vec<String>> {
        let world = self.world();
        let mut confs = BTreeMap::new();
        for id in world.workload_machines() {
            let path = juju_sim::simulation::machine_agent_dir(&self.path(), id).join("agent.conf");
            let text = std::fs::read_to_string(&path).expect("a workload agent.conf");
            let conf = parse_agent_conf(&text).expect("agent.conf parses");
            confs.insert(id.to_string(), conf.api_addresses);
        }
        for id in world.controller_machines() {
            let path = juju_sim::simulation::controller_dir(&self.path(), id).join("agent.conf");
            let listed = std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text).ok())
                .and_then(|doc| {
                    doc.get("apiaddresses")?
                        .as_sequence()?
                        .iter()
                        .map(|a| a.as_str().map(str::to_owned))
                        .collect::<Option<Vec<String>>>()
                })
                .unwrap_or_default();
            confs.insert(format!("c{id}"), listed);
        }
        confs
    }

    /// Every workload agent's connection status.
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

    /// Waits until every agent.conf (workload and controller) lists exactly `want`;
    /// returns how long that took.
    fn wait_for_lists(&self, what: &str, want: &BTreeSet<String>) -> Duration {
        let started = Instant::now();
        loop {
            let confs = self.agent_confs();
            let done = confs.values().all(|listed| {
                &listed.iter().cloned().collect::<BTreeSet<_>>() == want
                    && listed.len() == want.len()
            });
            if done {
                let took = started.elapsed();
                println!(
                    "{what}: every agent.conf updated {} ms after the command",
                    took.as_millis()
                );
                return took;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{what}: not every agent.conf lists {want:?} after 60 s: {confs:#?}\n{}",
                self.logs_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The machine id of the controller whose address `endpoint` is.
    fn controller_of(&self, endpoint: &str) -> Option<u32> {
        let world = self.world();
        world.controller_machines().into_iter().find(|id| {
            world.machines[id]
                .nics
                .iter()
                .any(|nic| format!("{}:17070", nic.address) == endpoint)
        })
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

#[test]
fn agents_follow_the_control_plane_and_the_management_space() {
    let model = Model::new();
    model.ok(&[
        "bootstrap",
        "--quorum-timeout-ms",
        "2000",
        "--space",
        "beta=10.132.0.0/24",
    ]);
    // Two candidate addresses per machine: the database cluster is told which to use.
    model.ok(&["bind", "db-cluster", "alpha"]);
    model.ok(&["enable-ha", "-n", "3"]);
    model.ok(&["login"]);
    let added = model.ok(&[
        "add-machine",
        "-n",
        "3",
        "--space",
        "alpha",
        "--space",
        "beta",
    ]);
    assert_eq!(added.matches("added machine").count(), 3, "{added}");

    // Every agent.conf lists every controller's usable addresses (both spaces; the
    // provisioner gave them the default space's only), and every agent logs in with its own
    // credential.
    let all = model.controller_addresses(None);
    assert_eq!(all.len(), 6, "{all:?}");
    model.wait_for_lists("3 controllers", &all);
    let started = Instant::now();
    while model
        .connections()
        .values()
        .any(|c| c.as_ref().is_none_or(|c| c.state != "connected"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not every agent connected: {:#?}\n{}",
            model.connections(),
            model.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let world = model.world();
    let workload = world.workload_machines();
    let first =
        juju_sim::simulation::machine_agent_dir(&model.path(), workload[0]).join("agent.conf");
    let text = std::fs::read_to_string(&first).expect("agent.conf");
    let conf = parse_agent_conf(&text).expect("parses");
    assert_eq!(conf.tag, format!("machine-{}", workload[0]));
    assert_eq!(conf.api_password.len(), 32, "a 128-bit password in hex");
    assert!(text.contains("controller: controller-"), "{text}");
    assert!(text.contains("model: model-"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&first)
        .expect("stat")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let status = model.ok(&["status"]);
    assert!(status.contains("Connected to"), "{status}");
    for id in &workload {
        let row = status
            .lines()
            .find(|line| line.starts_with(&format!("{id} ")) && line.contains("10.132."))
            .unwrap_or_else(|| panic!("no row for machine {id}:\n{status}"));
        assert!(row.contains("controller "), "{row}");
        assert!(row.trim_end().ends_with(" 6"), "{row}");
    }

    // An address change: a new NIC on controller 0 reaches every agent.conf.
    model.ok(&["add-space", "gamma", "10.133.0.0/24"]);
    model.ok(&["add-nic", "0", "gamma"]);
    let with_gamma = model.controller_addresses(None);
    assert_eq!(with_gamma.len(), 7);
    model.wait_for_lists("a new controller address", &with_gamma);

    // An unknown space is refused, and nothing changes.
    let refused = model.run(&["controller-config", "juju-mgmt-space=nosuch"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("cannot set juju-mgmt-space: space \"nosuch\" not found"),
        "{stderr}"
    );
    let shown = model.ok(&["controller-config"]);
    assert!(shown.contains("juju-mgmt-space: ''"), "{shown}");

    // The management space: agents keep only beta's addresses, the client keeps all.
    let set = model.ok(&["controller-config", "juju-mgmt-space=beta"]);
    assert!(set.contains("through the API"), "{set}");
    let beta = model.controller_addresses(Some("beta"));
    assert_eq!(beta.len(), 3);
    model.wait_for_lists("juju-mgmt-space=beta", &beta);
    let login = model.ok(&["login"]);
    let endpoints: BTreeSet<String> = login
        .lines()
        .find_map(|line| line.strip_prefix("api-endpoints: "))
        .expect("an api-endpoints line")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        endpoints, with_gamma,
        "the client's store lists every address"
    );

    // enable-ha -n 5: five controllers in every agent.conf.
    model.ok(&["enable-ha", "-n", "5"]);
    let beta5 = model.controller_addresses(Some("beta"));
    assert_eq!(beta5.len(), 5);
    model.wait_for_lists("enable-ha -n 5", &beta5);

    // One controller's agent killed (its supervisor held back from restarting it): every
    // agent is connected to another controller.
    let connections = model.connections();
    let victim_endpoint = connections
        .values()
        .flatten()
        .map(|c| c.endpoint.clone())
        .next()
        .expect("a connected agent");
    let victim = model
        .controller_of(&victim_endpoint)
        .expect("a controller's address");
    let world = model.world();
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
    signal(supervisor, "STOP");
    let killed = Instant::now();
    signal(jujud, "KILL");
    let victim_addresses: BTreeSet<String> = world.machines[&victim]
        .nics
        .iter()
        .map(|nic| format!("{}:17070", nic.address))
        .collect();
    loop {
        let connections = model.connections();
        let elsewhere = connections.values().all(|c| {
            c.as_ref()
                .is_some_and(|c| c.state == "connected" && !victim_addresses.contains(&c.endpoint))
        });
        if elsewhere {
            println!(
                "controller {victim} killed: every agent connected to another within {} ms",
                killed.elapsed().as_millis()
            );
            break;
        }
        if killed.elapsed() > Duration::from_secs(30) {
            signal(supervisor, "CONT");
            panic!(
                "agents still on controller {victim} or not connected after 30 s: {connections:#?}\n{}",
                model.logs_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(supervisor, "CONT");

    // remove-machine of that controller: its address leaves every agent.conf.
    model.ok(&["remove-machine", &victim.to_string()]);
    let beta4 = model.controller_addresses(Some("beta"));
    assert_eq!(beta4.len(), 4);
    assert!(beta4.is_disjoint(&victim_addresses));
    model.wait_for_lists("remove-machine of a controller", &beta4);

    // A workload machine removed: its agent stops and its credential is gone.
    let gone = workload[0].to_string();
    let removed = model.ok(&["remove-machine", &gone]);
    assert!(
        removed.contains(&format!("credential of machine-{gone}")),
        "{removed}"
    );
    let rows = model.ok(&[
        "sql",
        "--database",
        "controller",
        "SELECT name FROM credential ORDER BY name",
    ]);
    assert!(!rows.contains(&format!("machine-{gone}")), "{rows}");
    assert!(rows.contains(&format!("machine-{}", workload[1])), "{rows}");
    assert!(!model.world().machines.contains_key(&workload[0]));
}
