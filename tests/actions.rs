//! The actions run through the compiled `dispatch` under the hook-tool emulator against
//! REAL dbaccessor processes: three controllers on loopback (127.41.<scenario>.1-3, this
//! test's range), healthy, with one down, and with the quorum lost; `recover-cluster`
//! refused without confirm, refused while the quorum holds, refused on a stale member,
//! and successful with every committed row kept.
//!
//! The model's units keep their 10.0.0.x bindings: the charm never chooses a loopback
//! address, so these tests write each controller's controller.conf themselves (with the
//! 127.41 map) and run only actions, which never write it.

#[allow(dead_code)]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use controller_contract::status::{LogPosition, NodeState, Probe, Request, Role, Verdict};
use dqlite::client::{Client, Options};
use juju_sim::Invocation;
use serde_json::{json, Value};
use support::{unit, Model};

/// The dbaccessor binary beside `dispatch`, built once when missing.
fn dbaccessor_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_BIN_EXE_dispatch"))
                .parent()
                .expect("dispatch has a dir")
                .to_owned();
            let binary = dir.join("dbaccessor");
            if !binary.is_file() {
                let status = Command::new(env!("CARGO"))
                    .args(["build", "-p", "dbaccessor"])
                    .status()
                    .expect("run cargo build -p dbaccessor");
                assert!(status.success(), "cargo build -p dbaccessor failed");
            }
            binary
        })
        .clone()
}

/// One controller's dbaccessor, on machine n's data dir (the one the charm derives).
struct Daemon {
    data_dir: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    fn start(data_dir: &Path, agent_id: usize) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("dbaccessor.log"))
            .expect("open log");
        let child = Command::new(dbaccessor_binary())
            .args(["--agent-id", &agent_id.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--network-latency-ms", "20", "--quorum-timeout-ms", "1500"])
            .args(["--log-level", "info"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn dbaccessor");
        Self {
            data_dir: data_dir.to_owned(),
            child: Some(child),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("dbaccessor.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// One request on the status socket (3 s timeouts), the raw answer.
    fn ask(&self, request: &Request) -> Option<Value> {
        let socket = controller_contract::paths::status_socket(&self.data_dir);
        let mut stream = UnixStream::connect(socket).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .ok()?;
        let mut line = serde_json::to_string(request).expect("request");
        line.push('\n');
        stream.write_all(line.as_bytes()).ok()?;
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).ok()?;
        serde_json::from_str(&answer).ok()
    }

    fn probe(&self) -> Option<Probe> {
        let answer = self.ask(&Request::Probe {
            log_position_only: false,
        })?;
        serde_json::from_value(answer).ok()
    }

    /// Polls the probe until `ready` holds.
    fn wait_for(&self, what: &str, ready: impl Fn(&Probe) -> bool) -> Probe {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(probe) = self.probe() {
                if ready(&probe) {
                    return probe;
                }
                assert!(
                    Instant::now() < deadline,
                    "not {what}: {probe:#?}\n{}",
                    self.log()
                );
            } else {
                assert!(Instant::now() < deadline, "no status: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The dbaccessor's health verdict in a probe.
fn verdict(probe: &Probe) -> Option<Verdict> {
    probe.status.health.as_ref().map(|h| h.verdict)
}

fn voters(probe: &Probe) -> usize {
    probe
        .status
        .members
        .iter()
        .filter(|m| m.role == Role::Voter)
        .count()
}

/// A model of three units with a running 3-voter cluster on 127.41.<net>.1-3.
struct Cluster {
    daemons: Vec<Daemon>,
    ips: Vec<String>,
    model: Model,
}

impl Cluster {
    fn start(net: u8) -> Self {
        let model = Model::new(3);
        let ips: Vec<String> = (1..=3).map(|n| format!("127.41.{net}.{n}")).collect();
        let map = |upto: usize| {
            let mut conf = String::from("db-bind-addresses:\n");
            for (n, ip) in ips.iter().enumerate().take(upto) {
                conf.push_str(&format!("  '{n}': {ip}\n"));
            }
            conf
        };
        // As the charm brings a cluster up: the first controller bootstraps alone, then
        // every controller gets the whole map (the first by its file watch).
        let mut daemons = vec![];
        write_conf(&model.conf_path(0), &map(1));
        daemons.push(Daemon::start(&model.data_dir(0), 0));
        daemons[0].wait_for("bootstrapped", |p| p.status.leader_id.is_some());
        for n in 0..3 {
            write_conf(&model.conf_path(n), &map(3));
            if n > 0 {
                daemons.push(Daemon::start(&model.data_dir(n), n));
            }
        }
        for daemon in &daemons {
            daemon.wait_for("a member of 3 voters", |p| {
                p.status.state == NodeState::Member
                    && p.status.leader_id.is_some()
                    && voters(p) == 3
            });
        }
        Self {
            daemons,
            ips,
            model,
        }
    }

    fn addresses(&self, which: &[usize]) -> Vec<String> {
        which
            .iter()
            .map(|n| format!("{}:17666", self.ips[*n]))
            .collect()
    }

    /// Runs an action on unit n: (outcome, results, failure message).
    fn action(&self, n: usize, name: &str, params: Value) -> (String, Value, Option<String>) {
        self.model.hook(n, Invocation::action(name, params.clone()));
        let record = self
            .model
            .state()
            .actions
            .last()
            .expect("action record")
            .clone();
        let results = serde_json::to_value(&record.action.results).expect("json");
        // What `juju run` would print, for the operator guide (`--nocapture` shows it).
        println!(
            "== juju run {} {name} {params}\n{}status: {}\nmessage: {:?}\n",
            unit(n),
            serde_yaml_ng::to_string(&results).expect("yaml"),
            record.outcome,
            record.action.failed
        );
        (record.outcome, results, record.action.failed)
    }

    /// Sets what unit n has published in its bag as its log position.
    fn publish_position(&self, n: usize, position: Option<&str>) {
        self.model.update(|state| {
            let bags = &mut state
                .relations
                .get_mut(support::RELATION)
                .expect("relation")
                .unit_bags;
            let bag = bags.entry(unit(n)).or_default();
            match position {
                Some(text) => bag.insert("db-log-position".into(), text.into()),
                None => bag.remove("db-log-position"),
            };
        });
    }
}

/// Writes controller.conf as the charm does: temp file and rename.
fn write_conf(path: &Path, text: &str) {
    let dir = path.parent().expect("conf dir");
    std::fs::create_dir_all(dir).expect("mkdir");
    let tmp = dir.join(".controller.conf.tmp");
    std::fs::write(&tmp, text).expect("write conf");
    std::fs::rename(&tmp, path).expect("rename conf");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn client(addresses: &[String]) -> Client {
    let options = Options {
        retry_timeout: Duration::from_secs(15),
        ..Options::default()
    };
    Client::connect_leader(addresses, options)
        .await
        .expect("a leader among the addresses")
}

fn insert_rows(addresses: &[String], rows: std::ops::Range<i64>) {
    runtime().block_on(async {
        test_support::rows::insert(&mut client(addresses).await, rows).await;
    });
}

fn read_rows(addresses: &[String]) -> Vec<i64> {
    runtime().block_on(async { test_support::rows::read(&mut client(addresses).await).await })
}

/// `results[a][b]...` as a string ("" when absent).
fn get(results: &Value, path: &str) -> String {
    path.split('.')
        .try_fold(results, |value, key| value.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn cluster_status_healthy_then_one_down() {
    let mut cluster = Cluster::start(1);
    // Every voter reports its progress once a second: healthy once all three have.
    cluster.daemons[0].wait_for("healthy", |p| verdict(p) == Some(Verdict::Healthy));
    let (outcome, results, failed) = cluster.action(0, "cluster-status", json!({}));
    assert_eq!(
        (outcome.as_str(), failed),
        ("completed", None),
        "{results:#}"
    );
    assert_eq!(get(&results, "unit"), "controller/0");
    assert_eq!(get(&results, "agent-id"), "0");
    assert_eq!(get(&results, "bind-address.address"), "10.0.0.5");
    assert_eq!(get(&results, "dbaccessor.state"), "member");
    assert_eq!(get(&results, "dbaccessor.node-id"), "1");
    assert_eq!(get(&results, "dbaccessor.node-address"), "127.41.1.1:17666");
    assert_eq!(
        get(&results, "dbaccessor.map-read"),
        r#"{"0":"127.41.1.1","1":"127.41.1.2","2":"127.41.1.3"}"#
    );
    assert!(
        get(&results, "dbaccessor.log-position")
            .parse::<LogPosition>()
            .is_ok(),
        "{results:#}"
    );
    let members = results["members"].as_object().expect("members");
    assert_eq!(members.len(), 3, "{results:#}");
    let mut addresses: Vec<String> = vec![];
    for member in members.values() {
        assert_eq!(get(member, "role"), "voter");
        assert_eq!(get(member, "reachable"), "true");
        addresses.push(get(member, "address"));
    }
    addresses.sort();
    assert_eq!(addresses, cluster.addresses(&[0, 1, 2]));
    assert!(
        get(&results, "leader").contains(" at 127.41.1."),
        "{results:#}"
    );
    assert_eq!(
        get(&results, "health"),
        "healthy: 3 of 3 voters connected and caught up, 2 needed; survives 1 more voter failure"
    );
    assert_eq!(get(&results, "health-verdict"), "healthy");
    for member in members.values() {
        assert_eq!(get(member, "connected"), "true", "{results:#}");
        assert_eq!(get(member, "caught-up"), "true", "{results:#}");
    }

    // One controller down: still a quorum, no spare failure left.
    let gone_id = cluster.daemons[2]
        .probe()
        .and_then(|p| p.status.node_id)
        .expect("node 2 has an id");
    cluster.daemons[2].kill();
    cluster.daemons[0].wait_for("seeing one member down", |p| {
        p.reachable.iter().any(|r| r.id == gone_id && !r.reachable)
            && p.status.leader_id.is_some()
            && verdict(p) == Some(Verdict::Degraded)
    });
    let (outcome, results, _) = cluster.action(0, "cluster-status", json!({}));
    assert_eq!(outcome, "completed");
    assert_eq!(
        get(&results, &format!("members.{gone_id}.reachable")),
        "false"
    );
    let health = get(&results, "health");
    assert!(
        health.starts_with(&format!("degraded: voter {gone_id} has not reported for ")),
        "{health}"
    );
    assert!(
        health.ends_with(
            "(not connected); 2 of 3 voters connected and caught up, 2 needed; survives no \
             further voter failure"
        ),
        "{health}"
    );
    assert_eq!(
        get(&results, &format!("members.{gone_id}.connected")),
        "false"
    );
}

#[test]
fn recover_cluster_refuses_then_recovers_keeping_every_row() {
    let mut cluster = Cluster::start(2);
    insert_rows(&cluster.addresses(&[0, 1, 2]), 0..20);
    // Wait until every member's log holds the inserts, then publish as the hooks would.
    let positions: Vec<LogPosition> = (0..3)
        .map(|n| {
            let probe = cluster.daemons[n].wait_for("a log position", |p| {
                p.log_position.is_some_and(|p| p.index > 20)
            });
            probe.log_position.expect("position")
        })
        .collect();
    for (n, position) in positions.iter().enumerate() {
        cluster.publish_position(n, Some(&position.to_string()));
    }

    // Without confirm: refused, nothing touched.
    let (outcome, _, failed) = cluster.action(0, "recover-cluster", json!({}));
    assert_eq!(outcome, "failed");
    assert!(
        failed
            .as_deref()
            .unwrap_or_default()
            .starts_with("recover-cluster rewrites the Dqlite cluster to this controller alone"),
        "{failed:?}"
    );
    // A bad parameter.
    let (outcome, _, failed) = cluster.action(0, "recover-cluster", json!({"confirm": "yes"}));
    assert_eq!(outcome, "failed");
    assert_eq!(
        failed.as_deref(),
        Some("confirm must be true or false, not \"yes\"")
    );
    // With the quorum held: refused.
    let (outcome, _, failed) = cluster.action(0, "recover-cluster", json!({"confirm": true}));
    assert_eq!(outcome, "failed");
    assert!(
        failed
            .as_deref()
            .unwrap_or_default()
            .starts_with("the cluster has a quorum"),
        "{failed:?}"
    );

    // Quorum lost for good: two of three machines gone.
    cluster.daemons[1].kill();
    cluster.daemons[2].kill();
    let lost = cluster.daemons[0].wait_for("without a quorum", |p| {
        p.reachable.iter().filter(|r| r.reachable).count() == 1
            && verdict(p) == Some(Verdict::QuorumLost)
    });
    let (outcome, results, failed) = cluster.action(0, "cluster-status", json!({}));
    assert_eq!((outcome.as_str(), failed), ("completed", None));
    let health = get(&results, "health");
    assert!(health.starts_with("quorum "), "{health}");
    assert_eq!(get(&results, "health-verdict"), "quorum-lost");

    // A peer published a later log than ours: this member is stale, refused. (Without a
    // quorum the log no longer moves: no progress report commits.)
    let own = lost.log_position.expect("a log position");
    let ahead = LogPosition {
        term: own.term,
        index: own.index + 5,
    };
    cluster.publish_position(1, Some(&ahead.to_string()));
    cluster.publish_position(2, None);
    let (outcome, results, failed) = cluster.action(0, "recover-cluster", json!({"confirm": true}));
    assert_eq!(outcome, "failed");
    assert_eq!(
        failed.as_deref(),
        Some(
            format!(
                "this unit's log ({own}) is behind controller/1's ({ahead}): run \
                 recover-cluster on controller/1, or pass force=true to lose the entries \
                 after {own}"
            )
            .as_str()
        )
    );
    assert_eq!(
        get(&results, "log-positions.controller-2"),
        "unknown: not published (machine gone or its hooks not run)"
    );
    assert_eq!(
        get(&results, "most-up-to-date"),
        format!("controller/1 ({ahead})")
    );

    // The peers' real positions: this member is the most up to date; recovered.
    cluster.publish_position(1, Some(&positions[1].to_string()));
    let (outcome, results, failed) = cluster.action(0, "recover-cluster", json!({"confirm": true}));
    assert_eq!(
        (outcome.as_str(), failed),
        ("completed", None),
        "{results:#}"
    );
    assert_eq!(get(&results, "recovered.node-id"), "1");
    assert_eq!(get(&results, "recovered.address"), "127.41.2.1:17666");
    let recovered_at: LogPosition = get(&results, "recovered.log-position")
        .parse()
        .expect("a log position");
    assert!(recovered_at >= own, "{recovered_at} < {own}");
    assert_eq!(get(&results, "recovered.state"), "member", "{results:#}");
    assert!(get(&results, "recovered.steps.0").starts_with("stopped node 1 at 127.41.2.1:17666"));
    assert!(get(&results, "recovered.steps.2")
        .starts_with("rewrote membership to node 1 at 127.41.2.1:17666 alone"));
    assert!(!get(&results, "recovered.members-before").is_empty());

    let probe = cluster.daemons[0].wait_for("a lone voter with a leader", |p| {
        p.status.leader_id.is_some() && p.status.members.len() == 1
    });
    assert_eq!(voters(&probe), 1);
    assert_eq!(
        read_rows(&cluster.addresses(&[0])),
        (0..20).collect::<Vec<_>>(),
        "every committed row is kept"
    );
    // The map still names the two lost controllers (nobody removed their machines yet):
    // the verdict says so instead of calling a one-voter cluster healthy.
    cluster.daemons[0].wait_for("reporting alone", |p| {
        p.status
            .health
            .as_ref()
            .is_some_and(|h| h.ready_voters == 1)
    });
    let (outcome, results, _) = cluster.action(0, "cluster-status", json!({}));
    assert_eq!(outcome, "completed");
    assert_eq!(
        get(&results, "health"),
        "degraded: controller 1 (127.41.2.2:17666) is named by controller.conf but is not in \
         the Dqlite configuration; controller 2 (127.41.2.3:17666) is named by controller.conf \
         but is not in the Dqlite configuration; 1 of 1 voters connected and caught up, 1 \
         needed; survives no further voter failure"
    );
}

#[test]
fn hooks_publish_the_log_position_and_actions_fail_without_a_dbaccessor() {
    let model = Model::new(1);
    // No dbaccessor: recover-cluster fails clearly (confirm given).
    model.hook(
        0,
        Invocation::action("recover-cluster", json!({"confirm": true})),
    );
    let state = model.state();
    let record = state.actions.last().expect("record");
    assert_eq!(record.outcome, "failed");
    let failed = record.action.failed.clone().unwrap_or_default();
    assert!(
        failed.starts_with("the dbaccessor does not answer: status socket "),
        "{failed}"
    );

    // A lone dbaccessor on 127.41.3.1: update-status publishes its log position.
    let path = model.conf_path(0);
    std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    std::fs::write(&path, "db-bind-addresses:\n  '0': 127.41.3.1\n").expect("conf");
    let daemon = Daemon::start(&model.data_dir(0), 0);
    let probe = daemon.wait_for("bootstrapped", |p| {
        p.status.leader_id.is_some() && p.log_position.is_some()
    });
    // While a leader is known the log moves with every write: hooks other than
    // update-status must not publish it, or the peers' relation-changed hooks would answer
    // each other without end.
    model.hook(0, Invocation::hook("config-changed"));
    assert_eq!(
        model.unit_bag(0).get("db-log-position"),
        None,
        "config-changed published the log position while a leader is known"
    );
    model.hook(0, Invocation::hook("update-status"));
    let published = model.unit_bag(0).get("db-log-position").cloned();
    let published: LogPosition = published
        .expect("db-log-position published")
        .parse()
        .expect("term/index");
    assert!(published >= probe.log_position.expect("position"));
}
