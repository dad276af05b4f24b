//! Leases and singular workers on real processes: three controllers (`jujud-controller` in
//! their machines' network namespaces) with short leases (3 s, extended every second,
//! stopped 1 s early) and the fenced singular heartbeat every 200 ms. The holder is killed
//! (-9) and another takes over; the next holder is cut off (its links down) and stops its
//! workers before the new holder's first action; the fencing log never shows two holders'
//! actions overlapping. Needs root and the workspace's binaries built, as `ha.rs`.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agent::lease::{check_no_overlap, FencedAction, Token};
use test_support::sim::Model as SimModel;

const JUJU_SIM: &str = env!("CARGO_BIN_EXE_juju-sim");

/// The lease timings every agent of the model gets (through the environment that the
/// machine agents pass down).
const LEASE_ENV: &[(&str, &str)] = &[
    ("JUJUD_LEASE_DURATION_MS", "3000"),
    ("JUJUD_LEASE_EXTEND_MS", "1000"),
    ("JUJUD_LEASE_MARGIN_MS", "1000"),
    ("JUJUD_SINGULAR_HEARTBEAT_MS", "200"),
];
const LEASE_MS: i64 = 3000;
/// How much longer than the lease a takeover may take: an election, the supervisor's
/// restart of nothing in particular, a claim poll, a loaded 2-core machine.
const TAKEOVER_BOUND_MS: i64 = 20_000;

test_support::sim_model!(
    /// A model dir whose model is destroyed on drop; its agents get [`LEASE_ENV`].
    Model
);

impl Model {
    fn new() -> Self {
        Self(SimModel::new(JUJU_SIM, "jsim-lease-").with_env(LEASE_ENV))
    }

    /// Waits until a fenced action of a token other than those in `seen` appears; returns
    /// the log then.
    fn wait_for_new_token(&self, seen: &[Token], within: Duration) -> Vec<FencedAction> {
        let until = Instant::now() + within;
        loop {
            if let Some(log) = self.fencing_log() {
                if log.iter().any(|a| !seen.contains(&a.token)) {
                    return log;
                }
            }
            assert!(
                Instant::now() < until,
                "no new holder acted within {within:?}; status: {:#?}",
                self.status()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn machine_of(holder: &str) -> u32 {
    holder
        .strip_prefix("controller-")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("holder {holder:?} is not controller-<id>"))
}

/// The tokens in the order they first acted.
fn tokens(log: &[FencedAction]) -> Vec<Token> {
    let mut tokens: Vec<Token> = Vec::new();
    for action in log {
        if !tokens.contains(&action.token) {
            tokens.push(action.token.clone());
        }
    }
    tokens
}

/// Links of machine `namespace` other than loopback, set `state` (`up`/`down`).
fn set_links(namespace: &str, state: &str) {
    let output = Command::new("ip")
        .args(["-n", namespace, "-o", "link", "show"])
        .output()
        .expect("ip runs");
    let text = String::from_utf8_lossy(&output.stdout);
    for line in text.lines() {
        // "2: eth0@if7: <...>": the name before any '@'.
        let Some(name) = line.split(':').nth(1).map(|n| n.trim()) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if name == "lo" {
            continue;
        }
        let status = Command::new("ip")
            .args(["-n", namespace, "link", "set", name, state])
            .status()
            .expect("ip runs");
        assert!(
            status.success(),
            "ip link set {name} {state} in {namespace}"
        );
    }
}

#[test]
fn the_lease_moves_on_kill_and_isolation_and_no_two_holders_ever_act_at_once() {
    let model = Model::new();
    model.ok(&["bootstrap", "--quorum-timeout-ms", "2000"]);
    model.ok(&["enable-ha"]);

    // One holder, shown by status, acting.
    let until = Instant::now() + Duration::from_secs(60);
    let first = loop {
        if let Some(lease) = model.singular_holder() {
            break lease;
        }
        assert!(
            Instant::now() < until,
            "nobody holds the lease: {:#?}",
            model.status()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let table = model.ok(&["status"]);
    assert!(
        table.contains("singular-controller/controller/controller")
            && table.contains(&first.holder),
        "{table}"
    );
    // The cluster-status action shows the holder too, from the agent's lease-status file
    // (written every second here).
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let result = model.ok(&["run", "controller/2", "cluster-status", "--format", "json"]);
        let result: serde_json::Value = serde_json::from_str(&result).expect("action JSON");
        let leases = &result["controller/2"]["results"]["leases"];
        if leases["singular-controller"]["holder"] == first.holder.as_str() {
            assert_eq!(
                leases["seen-by"]
                    .as_str()
                    .map(|s| s.starts_with("controller-2 (")),
                Some(true),
                "{result}"
            );
            break;
        }
        assert!(
            Instant::now() < until,
            "cluster-status shows no holder: {result}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = model.wait_for_new_token(&[], Duration::from_secs(30));
    let before_kill = tokens(&log);
    let holder = before_kill.last().expect("a token").clone();

    // kill -9 the holder's controller agent.
    let status = model.status();
    let victim = status
        .machines
        .iter()
        .find(|m| m.id == machine_of(&holder.holder))
        .expect("the holder's machine");
    let pid = victim.dbaccessor_pid.expect("a running controller agent");
    let killed_at = wall_ms();
    assert!(Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill runs")
        .success());
    let log = model.wait_for_new_token(&before_kill, Duration::from_secs(60));
    let next = log
        .iter()
        .find(|a| !before_kill.contains(&a.token))
        .expect("a new token");
    let takeover_ms = next.at_ms - killed_at;
    eprintln!(
        "kill -9 of {}: {} acted {takeover_ms} ms later (lease {LEASE_MS} ms)",
        holder, next.token
    );
    assert!(
        takeover_ms < LEASE_MS + TAKEOVER_BOUND_MS,
        "takeover took {takeover_ms} ms"
    );
    check_no_overlap(&log).expect("no two holders acted at once");

    // Let the cluster settle (the killed agent's node rejoins), then cut the new holder off.
    model.ok(&["wait"]);
    let log = model.wait_for_new_token(&before_kill, Duration::from_secs(10));
    let before_isolation = tokens(&log);
    let isolated = before_isolation.last().expect("a token").clone();
    let machine = machine_of(&isolated.holder);
    let namespace = model
        .status()
        .machines
        .iter()
        .find(|m| m.id == machine)
        .expect("the holder's machine")
        .namespace
        .clone();
    set_links(&namespace, "down");
    let log = model.wait_for_new_token(&before_isolation, Duration::from_secs(60));
    let after = log
        .iter()
        .find(|a| !before_isolation.contains(&a.token))
        .expect("a new token")
        .clone();
    set_links(&namespace, "up");
    assert_ne!(after.token.holder, isolated.holder, "{log:?}");
    check_no_overlap(&log).expect("no two holders acted at once");

    // The isolated holder, unable to reach anyone, stopped its workers by its own clock
    // before the new holder's first action (same host: one wall clock for both).
    let agent_log = model.agent_log(machine);
    let marker = format!("singular workers of {isolated} stopped (unix_ms=");
    let stopped_ms: i64 = agent_log
        .lines()
        .filter_map(|line| line.split_once(&marker))
        .filter_map(|(_, rest)| rest.split(')').next()?.parse().ok())
        .next()
        .unwrap_or_else(|| panic!("no {marker:?} in machine {machine}'s log:\n{agent_log}"));
    eprintln!(
        "isolated {isolated}: workers stopped {} ms before {} first acted",
        after.at_ms - stopped_ms,
        after.token
    );
    assert!(
        stopped_ms < after.at_ms,
        "the isolated holder stopped at {stopped_ms}, the new one acted at {}",
        after.at_ms
    );

    // Everything since: still one holder at a time.
    model.ok(&["wait"]);
    let log = model.fencing_log().expect("the fencing log");
    let grants = check_no_overlap(&log).expect("no two holders acted at once");
    assert!(grants >= 3, "{grants} grants");
}
