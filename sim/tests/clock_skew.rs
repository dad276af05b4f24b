//! Leases with skewed controller clocks: three controllers with short leases (3 s, extended
//! every second, stopped 1 s early), two of them with their wall clock 6 s off (one ahead,
//! one behind, through libfaketime; the monotonic clock stays true). A skew twice the
//! lease would hand the lease to two controllers at once if any decision read a
//! controller's wall clock; the store decides by the database's clock and the holders stop
//! by their monotonic clocks, so holders killed one after another (-9) still hand over one
//! at a time: in commit order each grant's fenced actions form one run, and each later
//! grant has a later start, even when the Dqlite leader (whose clock is the database's)
//! moves to a controller whose clock is behind. Needs root, libfaketime and the
//! workspace's binaries built, as `lease.rs`.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant, UNIX_EPOCH};

use agent::lease::{check_commit_order, FencedAction, Token};
use test_support::sim::Model as SimModel;

const JUJU_SIM: &str = env!("CARGO_BIN_EXE_juju-sim");

const LEASE_ENV: &[(&str, &str)] = &[
    ("JUJUD_LEASE_DURATION_MS", "3000"),
    ("JUJUD_LEASE_EXTEND_MS", "1000"),
    ("JUJUD_LEASE_MARGIN_MS", "1000"),
    ("JUJUD_SINGULAR_HEARTBEAT_MS", "200"),
];
const LEASE_MS: u128 = 3000;
/// How much longer than the lease a takeover may take (an election, a loaded machine).
const TAKEOVER_BOUND_MS: u128 = 20_000;
const SKEW_MS: i64 = 6000;

test_support::sim_model!(
    /// A model dir whose model is destroyed on drop (agents stopped, namespaces deleted).
    Model
);

impl Model {
    fn new() -> Self {
        assert!(
            juju_sim::agent::libfaketime().is_some(),
            "libfaketime is missing: run scripts/setup.sh"
        );
        Self(SimModel::new(JUJU_SIM, "jsim-skew-").with_env(LEASE_ENV))
    }

    /// Waits until a fenced action of a token not in `seen` appears; returns the log then.
    fn wait_for_new_token(&self, seen: &[Token], within: Duration) -> Vec<FencedAction> {
        let until = Instant::now() + within;
        loop {
            if let Some(log) = self.fencing_log() {
                if log.iter().any(|a| !seen.contains(&a.token)) {
                    return log;
                }
            }
            if Instant::now() >= until {
                // The agents' own account of what happened, for whoever reads the failure.
                let log = self.run(&["debug-log"]);
                let log = String::from_utf8_lossy(&log.stdout);
                for machine in 0..3 {
                    let prefix = format!("machine-{machine}:");
                    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with(&prefix)).collect();
                    eprintln!("debug-log of machine {machine}, last 80 lines:");
                    for line in &lines[lines.len().saturating_sub(80)..] {
                        eprintln!("{line}");
                    }
                }
                panic!(
                    "no new holder acted within {within:?}; status: {:#?}",
                    self.status()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// How far machine `id`'s agent's wall clock is from this host's: its lease-status
    /// file's own time (the agent's clock) against the file's modification time (the
    /// kernel's, which libfaketime does not touch). `None` until a fresh file is there.
    fn clock_offset_ms(&self, id: u32) -> Option<i64> {
        let path = controller_contract::paths::lease_status(
            &juju_sim::simulation::machine_data_dir(&self.path(), id),
        );
        let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
        let modified_ms =
            i64::try_from(modified.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()?;
        let text = std::fs::read_to_string(&path).ok()?;
        let status: controller_contract::lease::LeaseStatus = serde_json::from_str(&text).ok()?;
        Some(status.written_unix_ms - modified_ms)
    }
}

fn machine_of(holder: &str) -> u32 {
    holder
        .strip_prefix("controller-")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("holder {holder:?} is not controller-<id>"))
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

fn tokens(log: &[FencedAction]) -> Vec<Token> {
    let mut tokens: Vec<Token> = Vec::new();
    for action in log {
        if !tokens.contains(&action.token) {
            tokens.push(action.token.clone());
        }
    }
    tokens
}

/// `wait` after agents restarted: settled, then settled again once every dbaccessor has
/// looked at the cluster afresh. `wait` reads the leader's dbaccessor, whose member list
/// may be up to one health tick (1 s) old when no map change came with the restarts; a
/// restarted voter rejoins as a spare and is promoted again by the leader, and a kill in
/// that second found two voters, one of them the killed leader (quorum lost, seen here:
/// the test was then about Dqlite's voter count, not the leases).
fn settled_after_restarts(model: &Model) {
    model.ok(&["wait"]);
    std::thread::sleep(Duration::from_millis(1500));
    model.ok(&["wait"]);
}

#[test]
fn skewed_controller_clocks_never_give_the_lease_to_two_holders() {
    let model = Model::new();
    model.ok(&["bootstrap", "--quorum-timeout-ms", "2000"]);
    model.ok(&["enable-ha"]);
    model.ok(&["wait"]);
    let skews = [(1u32, SKEW_MS), (2u32, -SKEW_MS)];
    for (machine, skew) in skews {
        model.ok(&["fault-clock-skew", &machine.to_string(), &skew.to_string()]);
    }
    // The skew is real: each restarted agent writes its own (skewed) time.
    for (machine, skew) in skews {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let offset = model.clock_offset_ms(machine);
            if offset.is_some_and(|o| (o - skew).abs() < 1500) {
                eprintln!("machine {machine}: agent clock {offset:?} ms off");
                break;
            }
            assert!(
                Instant::now() < until,
                "machine {machine}'s agent clock is {offset:?} ms off, not {skew}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    settled_after_restarts(&model);

    // Kill holders one after another until a skewed controller has held the lease and
    // been killed too (at least 3 rounds): every takeover within the lease plus a bound.
    let mut killed_holders = BTreeSet::new();
    let mut rounds = 0;
    while rounds < 3 || !killed_holders.iter().any(|m| *m != 0) {
        rounds += 1;
        assert!(
            rounds <= 4,
            "no skewed controller held the lease in 4 rounds"
        );
        let seen = tokens(&model.wait_for_new_token(&[], Duration::from_secs(60)));
        let holder = seen.last().expect("a token").clone();
        let machine = machine_of(&holder.holder);
        let status = model.status();
        let victim = status
            .machines
            .iter()
            .find(|m| m.id == machine)
            .expect("the holder's machine");
        let pid = victim
            .dbaccessor_pid
            .expect("the holder's controller agent");
        // The unskewed controller is held down until another grant acts, so that the lease
        // surely reaches a skewed one (a restarted agent may win its own lease back).
        let held_down = (machine == 0).then(|| victim.agent_pid.expect("a supervisor"));
        if let Some(supervisor) = held_down {
            signal(supervisor, "STOP");
        }
        let killed = Instant::now();
        signal(pid, "KILL");
        killed_holders.insert(machine);
        let log = model.wait_for_new_token(&seen, Duration::from_secs(60));
        let took = killed.elapsed().as_millis();
        if let Some(supervisor) = held_down {
            signal(supervisor, "CONT");
        }
        let next = tokens(&log)
            .into_iter()
            .find(|t| !seen.contains(t))
            .expect("a new token");
        eprintln!("round {rounds}: {holder} killed, {next} acting {took} ms later");
        assert!(
            took < LEASE_MS + TAKEOVER_BOUND_MS,
            "takeover took {took} ms"
        );
        check_commit_order(&log).expect("one holder at a time");
        // The killed agent restarts and rejoins before the next round.
        settled_after_restarts(&model);
    }
    let log = model.fencing_log().expect("the fencing log");
    let grants = check_commit_order(&log).expect("one holder at a time");
    assert!(grants > rounds, "{grants} grants after {rounds} kills");
    let holders: BTreeSet<&str> = log.iter().map(|a| a.token.holder.as_str()).collect();
    assert!(
        holders.contains("controller-1") || holders.contains("controller-2"),
        "a skewed controller held the lease: {holders:?}"
    );
}
