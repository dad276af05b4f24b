//! The compute provisioner on real processes: three controllers with short leases (3 s,
//! extended every second, stopped 1 s early); workload machines requested through the
//! controller database are started through the simulated cloud by the lease holder only,
//! each exactly once, even when the holder is killed (-9) between starting an instance and
//! recording it: the next holder finds the instance, records it, and starts the rest. The
//! cloud's log (`cloud.log`), each machine's agent log and its agent's login show it.
//! Needs root and the workspace's binaries built, as `ha.rs`.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use agent::lease::check_no_overlap;
use controller_contract::agentaddr::{ApiConnection, API_CONNECTION_NAME};
use juju_sim::cloud::CloudLogLine;
use test_support::sim::Model as SimModel;

const JUJU_SIM: &str = env!("CARGO_BIN_EXE_juju-sim");

/// The lease timings every agent of the model gets (through the machine agents'
/// environment).
const LEASE_ENV: &[(&str, &str)] = &[
    ("JUJUD_LEASE_DURATION_MS", "3000"),
    ("JUJUD_LEASE_EXTEND_MS", "1000"),
    ("JUJUD_LEASE_MARGIN_MS", "1000"),
    ("JUJUD_SINGULAR_HEARTBEAT_MS", "200"),
    ("JUJUD_PROVISIONER_POLL_MS", "200"),
];

/// How late the cloud answers a start while the holder is to die waiting for it.
const START_REPLY_DELAY_MS: &str = "6000";

test_support::sim_model!(
    /// A model dir whose model is destroyed on drop (agents stopped, namespaces deleted).
    Model
);

impl Model {
    fn new() -> Self {
        Self(SimModel::new(JUJU_SIM, "jsim-prov-").with_env(LEASE_ENV))
    }

    fn cloud_log(&self) -> Vec<CloudLogLine> {
        juju_sim::cloud::read_log(&self.path())
    }

    fn connection(&self, machine: u32) -> Option<ApiConnection> {
        let path = juju_sim::simulation::machine_agent_dir(&self.path(), machine)
            .join(API_CONNECTION_NAME);
        std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

fn machine_of(holder: &str) -> u32 {
    holder
        .strip_prefix("controller-")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("holder {holder:?} is not controller-<id>"))
}

fn wait_until<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < until, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn machines_are_started_once_by_the_holder_even_when_it_dies_midway() {
    let model = Model::new();
    model.ok(&["bootstrap", "--quorum-timeout-ms", "2000"]);
    model.ok(&["enable-ha"]);
    model.ok(&["wait"]);
    let holder = wait_until(
        "a singular-controller holder",
        Duration::from_secs(60),
        || model.singular_holder(),
    );

    // Requested machines wait in the database until the provisioner starts them; the
    // cloud answers each start late, and the holder is killed while it waits.
    model.ok(&["fault-cloud-delay", START_REPLY_DELAY_MS]);
    let requested = model.ok(&["add-machine", "-n", "3", "--no-wait"]);
    let ids: Vec<u32> = requested
        .lines()
        .filter_map(|line| line.strip_prefix("requested machine "))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(ids.len(), 3, "{requested}");
    let first = wait_until("the first instance start", Duration::from_secs(60), || {
        model
            .cloud_log()
            .into_iter()
            .find(|l| l.op == "start-instance" && l.outcome == "started")
    });
    let starter = first.fence.clone();
    let victim = machine_of(starter.split('@').next().expect("holder@start"));
    assert_eq!(
        victim,
        machine_of(&holder.holder),
        "the holder provisions: {first:?}, {holder:?}"
    );
    // While the holder waits for the cloud's late answer, status shows the machine as
    // requested and being provisioned by the holder's grant, the others still pending.
    let status = model.status();
    let shown: Vec<(u32, &str, &str)> = status
        .requested
        .iter()
        .map(|m| (m.id, m.status.as_str(), m.provisioned_by.as_str()))
        .collect();
    assert!(
        shown.contains(&(first.machine, "provisioning", starter.as_str())),
        "{shown:?}"
    );
    assert!(shown.iter().all(|(id, _, _)| ids.contains(id)), "{shown:?}");
    let machine = status
        .machines
        .iter()
        .find(|m| m.id == victim)
        .expect("the holder's machine");
    let jujud = machine
        .dbaccessor_pid
        .expect("the holder's controller agent");
    // Its supervisor is held back, so another controller takes over.
    let supervisor = machine.agent_pid.expect("a supervisor");
    signal(supervisor, "STOP");
    signal(jujud, "KILL");
    let killed = Instant::now();
    model.ok(&["fault-cloud-delay", "0"]);

    // The next holder finishes: every machine started, and recorded.
    let rows = wait_until("every machine started", Duration::from_secs(90), || {
        let rows = model
            .sql_rows("SELECT id, status, instance_id, provisioned_by FROM machine ORDER BY id")?;
        (rows.len() == 3 && rows.iter().all(|r| r[1] == "started")).then_some(rows)
    });
    eprintln!(
        "holder {starter} killed mid-start: every machine started {} ms later",
        killed.elapsed().as_millis()
    );
    signal(supervisor, "CONT");
    let first_row = rows
        .iter()
        .find(|r| r[0] == first.machine.to_string())
        .expect("the first machine's row");
    assert_ne!(
        first_row[3], starter,
        "the machine whose start the dead holder never recorded was recorded by the next: {rows:?}"
    );

    // Exactly once: one start per machine in the cloud, one machine agent start each; the
    // first machine was found (not started again) by the next holder.
    let log = model.cloud_log();
    let mut starts: BTreeMap<u32, usize> = BTreeMap::new();
    for line in log.iter().filter(|l| l.outcome == "started") {
        *starts.entry(line.machine).or_default() += 1;
    }
    let expected: BTreeMap<u32, usize> = ids.iter().map(|id| (*id, 1)).collect();
    assert_eq!(starts, expected, "{log:#?}");
    assert!(
        log.iter().any(|l| l.machine == first.machine
            && l.op == "instance"
            && l.outcome == "found"
            && l.fence != starter),
        "the next holder found the first machine's instance: {log:#?}"
    );
    // Per machine, the tokens the cloud accepted never go back to an older grant.
    for id in &ids {
        let accepted: Vec<i64> = log
            .iter()
            .filter(|l| l.machine == *id && l.outcome != "stale")
            .map(|l| {
                l.fence
                    .rsplit_once('@')
                    .and_then(|(_, start)| start.parse().ok())
                    .expect("holder@start")
            })
            .collect();
        assert!(
            accepted.windows(2).all(|w| w[0] <= w[1]),
            "machine {id}: {accepted:?}"
        );
        let agent_log = model.agent_log(*id);
        assert_eq!(
            agent_log
                .matches(&format!("machine-agent {id}: starting"))
                .count(),
            1,
            "machine {id}'s agent started once:\n{agent_log}"
        );
    }
    // Each agent logs in with the password whose hash the provisioner wrote.
    for id in &ids {
        wait_until(
            &format!("machine {id}'s agent connected"),
            Duration::from_secs(60),
            || model.connection(*id).filter(|c| c.state == "connected"),
        );
    }

    // Removal goes through the provisioner too: the instance stops, the credential goes.
    let gone = ids[0].to_string();
    let removed = model.ok(&["remove-machine", &gone]);
    assert!(
        removed.contains(&format!("credential of machine-{gone}")),
        "{removed}"
    );
    let credentials = model
        .sql_rows("SELECT name FROM credential ORDER BY name")
        .expect("credentials");
    let names: Vec<&str> = credentials.iter().map(|r| r[0].as_str()).collect();
    assert!(
        !names.contains(&format!("machine-{gone}").as_str()),
        "{names:?}"
    );
    assert!(
        names.contains(&format!("machine-{}", ids[1]).as_str()),
        "{names:?}"
    );
    assert!(model
        .cloud_log()
        .iter()
        .any(|l| l.machine == ids[0] && l.op == "stop-instance" && l.outcome == "stopped"));
    let status = model.status();
    assert!(status.workload.iter().all(|m| m.id != ids[0]));
    assert!(status.workload.iter().any(|m| m.id == ids[1]));

    // And the singular workers never overlapped meanwhile.
    let fenced = model.fencing_log().expect("the fencing log");
    let grants = check_no_overlap(&fenced).expect("no two holders acted at once");
    assert!(grants >= 2, "{grants} grants");
}
