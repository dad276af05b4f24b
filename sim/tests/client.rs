//! The API client end to end: `juju-sim login`, `status` and `show-controller` against real
//! controller agents, dialling from the model's client namespace. Needs root (namespaces)
//! and the workspace's binaries built (`cargo build --workspace --bins`).
//!
//! One three-controller simulation carries every check (each simulation costs CI time):
//! the store learns every controller's address, the next login dials the last good address
//! first (read from the debug log of the dial order), an isolated controller is passed over
//! and leaves the first place, `juju-mgmt-space` does not change the client's list, a wrong
//! password is a 401 that stores nothing, a client trusting another CA is refused by TLS at
//! every address, and a removed controller's address leaves the store at the next login.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use juju_sim::report::StatusReport;
use test_support::sim::Model as SimModel;

const JUJU_SIM: &str = env!("CARGO_BIN_EXE_juju-sim");

test_support::sim_model!(
    /// A model dir whose model is destroyed on drop (agents stopped, namespaces deleted).
    Model
);

impl Model {
    fn new() -> Self {
        Self(SimModel::new(JUJU_SIM, "jsim-client-"))
    }

    /// Runs `juju-sim <args>`; returns stdout and stderr, failing the test when it fails.
    fn ok(&self, args: &[&str]) -> (String, String) {
        self.0.ok_with_stderr(args)
    }

    fn store(&self) -> PathBuf {
        self.path().join("client")
    }

    /// `api-endpoints` of the current controller, as stored.
    fn endpoints(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.store().join("controllers.yaml")).expect("a store");
        let store: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("YAML");
        let current = store["current-controller"]
            .as_str()
            .expect("a current controller");
        store["controllers"][current]["api-endpoints"]
            .as_sequence()
            .expect("api-endpoints")
            .iter()
            .map(|e| e.as_str().expect("an endpoint").to_owned())
            .collect()
    }

    /// `login --debug` until it succeeds and `done` holds of the stored endpoints (each
    /// try is bounded by the client's own timeout), for up to two minutes; returns the
    /// last login's address used and dial order.
    fn login_until(&self, what: &str, done: impl Fn(&[String]) -> bool) -> (String, Vec<String>) {
        let started = Instant::now();
        loop {
            let output = self.run(&["login", "--debug"]);
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            if output.status.success() && done(&self.endpoints()) {
                return (used(&stdout), dials(&stderr));
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no login reached {what} in two minutes; last:\n{stdout}\n{stderr}\nstore: {:?}\n{}",
                self.endpoints(),
                self.logs_tail()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// The addresses dialled, in order, from a `--debug` log.
fn dials(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|line| line.split("dialing ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The address a `login` went through, from its output.
fn used(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|line| line.split(" through ").nth(1))
        .expect("a login line")
        .trim()
        .to_owned()
}

fn set(list: &[String]) -> BTreeSet<String> {
    list.iter().cloned().collect()
}

/// A CA certificate nobody in the model signed with.
fn other_ca(dir: &Path) -> String {
    let (key, cert) = (dir.join("other.key"), dir.join("other.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=juju-ca"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    std::fs::read_to_string(cert).expect("the other CA")
}

#[test]
fn a_client_follows_the_controllers_through_ha_isolation_and_removal() {
    let model = Model::new();
    model.ok(&["bootstrap", "--quorum-timeout-ms", "2000"]);
    // Logged in after bootstrap, as `juju bootstrap` leaves a client: one address.
    let (bootstrap_login, _) = model.ok(&["login"]);
    assert!(
        bootstrap_login.contains("as admin through 10.131.0.10:17070"),
        "{bootstrap_login}"
    );
    assert_eq!(model.endpoints(), ["10.131.0.10:17070"]);
    model.ok(&["enable-ha", "-n", "3"]);
    let status: StatusReport =
        serde_json::from_str(&model.ok(&["status", "--format", "json"]).0).expect("status JSON");
    let all: BTreeSet<String> = status
        .map
        .values()
        .map(|ip| format!("{ip}:17070"))
        .collect();
    assert_eq!(all.len(), 3, "{status:#?}");

    // A login learns the new controllers from what the controller sent (every controller
    // publishes its addresses once its node is a member).
    model.login_until("every controller's address", |e| set(e) == all);
    let stored = model.endpoints();
    assert_eq!(stored.len(), 3, "each address once: {stored:?}");
    let mode = std::fs::metadata(model.store().join("controllers.yaml"))
        .expect("store")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // The next connection dials the last good address first, and it answers.
    let last_good = stored[0].clone();
    let (through, order) = model.login_until("a login", |_| true);
    assert_eq!(order.first(), Some(&last_good), "dial order {order:?}");
    assert_eq!(through, last_good);
    assert_eq!(model.endpoints()[0], last_good);

    // Logged in, `status` reads the controller through the API too.
    let status: StatusReport =
        serde_json::from_str(&model.ok(&["status", "--format", "json"]).0).expect("status JSON");
    let api = status.api.expect("the API part of status");
    let answer = api
        .status
        .unwrap_or_else(|| panic!("no API status: {:?}", api.error));
    assert_eq!(api.endpoint, last_good);
    let published: BTreeSet<String> = answer
        .controllers
        .iter()
        .flat_map(|c| c.api_addresses.iter().cloned())
        .filter(|a| all.contains(a))
        .collect();
    assert_eq!(published, all, "{answer:#?}");
    assert_eq!(answer.schema_version, agent::schema::latest_version());

    // The last good controller's machine is cut off: the client passes it over (after
    // trying it first) and the address that worked becomes the first.
    // The map's keys are the controller (agent) ids, which are the machine ids.
    let victim: u32 = status
        .map
        .iter()
        .find(|(_, ip)| last_good == format!("{ip}:17070"))
        .and_then(|(id, _)| id.parse().ok())
        .expect("the last good address's machine");
    model.ok(&["isolate", &victim.to_string()]);
    let (through, order) = model.login_until("another controller first", |e| e[0] != last_good);
    assert_eq!(order.first(), Some(&last_good), "dial order {order:?}");
    assert_ne!(through, last_good);
    let stored = model.endpoints();
    assert_eq!(stored[0], through);
    assert_eq!(
        set(&stored),
        all,
        "an unreachable controller is still a controller"
    );
    model.ok(&["isolate", &victim.to_string(), "--undo"]);
    model.ok(&["wait"]);

    // juju-mgmt-space is for agents: the client's list stays every controller's address.
    model.ok(&["controller-config", "juju-mgmt-space=alpha"]);
    let (config, _) = model.ok(&["controller-config"]);
    assert!(config.contains("juju-mgmt-space: alpha"), "{config}");
    model.login_until("a login", |_| true);
    assert_eq!(set(&model.endpoints()), all);

    // A wrong password is a 401 from a verified controller, and is not stored.
    let accounts = std::fs::read_to_string(model.store().join("accounts.yaml")).expect("accounts");
    let refused = model.run(&["login", "--password", "wrong"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("HTTP 401: invalid login"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(model.store().join("accounts.yaml")).expect("accounts"),
        accounts
    );

    // A client that trusts another CA is refused by TLS at every address, and says so.
    let other = model.dir().join("other-client");
    std::fs::create_dir(&other).expect("dir");
    let ca = other_ca(model.dir());
    let mut store: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(model.store().join("controllers.yaml")).expect("store"),
    )
    .expect("YAML");
    let current = store["current-controller"]
        .as_str()
        .expect("current")
        .to_owned();
    store["controllers"][current.as_str()]["ca-cert"] = ca.into();
    std::fs::write(
        other.join("controllers.yaml"),
        serde_yaml_ng::to_string(&store).expect("YAML"),
    )
    .expect("written");
    std::fs::write(other.join("accounts.yaml"), &accounts).expect("written");
    let refused = model.run(&["login", "--client-dir", other.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    for address in &all {
        assert!(
            stderr.contains(&format!("{address}: TLS: invalid peer certificate")),
            "{address} not named as refused by TLS:\n{stderr}"
        );
    }

    // Removed, the controller's address leaves the store at the next login.
    model.ok(&["remove-machine", &victim.to_string()]);
    let remaining: BTreeSet<String> = all.iter().filter(|a| **a != last_good).cloned().collect();
    model.login_until("the removed controller's address gone", |e| {
        set(e) == remaining
    });
    let (shown, _) = model.ok(&["show-controller"]);
    assert!(!shown.contains(&last_good), "{shown}");
}
