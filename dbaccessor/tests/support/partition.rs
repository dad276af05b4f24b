//! A partition between real `dbaccessor` processes (issue 13): three controllers, each in a
//! network namespace of its own plugged into a bridge in a hub namespace (where the test's
//! client runs), so that a controller is cut off by taking its bridge port down (its
//! process keeps running: a partition, as `juju-sim isolate` does). [`run_once`]: a
//! follower is cut for a while and healed, then the other follower is cut; it measures how
//! long the healed follower takes to catch up with the leader's log as it was at the heal,
//! and how long writes stop when the second cut leaves the leader with the healed one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use controller_contract::status::{LogPosition, Probe, Request};
use dqlite::client::{Client, Options};
use dqlite::wire::Value;
use test_support::status as client;

use super::netns::Namespace;
use super::Controller;

/// The controllers' subnet: namespaces of our own, so no crate range is needed (the
/// black-hole tests use 10.221/16).
const SUBNET: &str = "10.222.0";
/// The hub's address on the bridge (the client's).
const HUB_IP: &str = "10.222.0.254";
/// The simulator's quorum timeout.
const QUORUM_TIMEOUT_MS: &str = "3000";
/// Pause between a writer's writes.
const WRITE_EVERY: Duration = Duration::from_millis(20);
/// How long after the second cut the writes are watched.
const WATCH_AFTER_CUT: Duration = Duration::from_secs(5);
/// Give up waiting for a catch-up after this long.
const GIVE_UP: Duration = Duration::from_secs(30);

/// The namespaces: `<prefix>-h` (the hub, bridge `br0`) and `<prefix>-1..3`, each with
/// `eth0` at `10.222.0.<k>` whose other end `c<k>` is a port of the bridge.
pub struct Network {
    pub hub: Namespace,
    pub machines: Vec<Namespace>,
}

impl Network {
    pub fn create(prefix: &str) -> Network {
        let hub = Namespace::create(&format!("{prefix}-h"));
        hub.ip(&["link", "add", "br0", "type", "bridge"]);
        hub.ip(&["addr", "add", &format!("{HUB_IP}/24"), "dev", "br0"]);
        hub.ip(&["link", "set", "br0", "up"]);
        let mut machines = Vec::new();
        for k in 1..=3 {
            let machine = Namespace::create(&format!("{prefix}-{k}"));
            let port = format!("c{k}");
            hub.ip(&[
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &machine.name,
            ]);
            hub.ip(&["link", "set", &port, "master", "br0"]);
            hub.ip(&["link", "set", &port, "up"]);
            machine.ip(&["addr", "add", &format!("{SUBNET}.{k}/24"), "dev", "eth0"]);
            machine.ip(&["link", "set", "eth0", "up"]);
            machines.push(machine);
        }
        Network { hub, machines }
    }

    /// The namespaces `create` made in another process (this one runs inside the hub).
    pub fn attach(prefix: &str) -> Network {
        Network {
            hub: Namespace::existing(&format!("{prefix}-h")),
            machines: (1..=3)
                .map(|k| Namespace::existing(&format!("{prefix}-{k}")))
                .collect(),
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Partition {
    /// Writes committed while the first follower was cut.
    pub writes_while_cut: usize,
    /// From the heal to the healed follower's log reaching the leader's log at the heal.
    pub catch_up: Duration,
    /// From the second cut to the first write begun after it that committed.
    pub resume: Duration,
    /// The longest time without a committed write in `WATCH_AFTER_CUT` after the second cut.
    pub stall: Duration,
    /// Node ids: the leader, the first and the second follower cut.
    pub leader: u64,
    pub first_cut: u64,
    pub second_cut: u64,
}

/// Writes one row every `WRITE_EVERY` until stopped, recording when each began and
/// committed.
struct Writer {
    stop: Arc<AtomicBool>,
    done: Arc<Mutex<Vec<(Instant, Instant)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(addresses: Vec<String>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (stop, done) = (stop.clone(), done.clone());
            async move {
                // A write waits for its commit (up to 10 s) rather than being abandoned and
                // sent again: a pause is measured as it is, not cut at a timeout.
                let options = Options {
                    connect_timeout: Duration::from_millis(300),
                    request_timeout: Duration::from_secs(10),
                    retry_timeout: Duration::from_millis(500),
                    ..Options::default()
                };
                let mut client: Option<Client> = None;
                let mut n = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    let began = Instant::now();
                    if client.is_none() {
                        client = Client::connect_leader(&addresses, options.clone())
                            .await
                            .ok();
                    }
                    let Some(connected) = client.as_mut() else {
                        tokio::time::sleep(WRITE_EVERY).await;
                        continue;
                    };
                    n += 1;
                    let row = [Value::Integer(n)];
                    let write = connected.exec("test", "INSERT INTO t (n) VALUES (?)", &row);
                    match tokio::time::timeout(Duration::from_secs(12), write).await {
                        Ok(Ok(_)) => done.lock().expect("lock").push((began, Instant::now())),
                        _ => client = None,
                    }
                    tokio::time::sleep(WRITE_EVERY).await;
                }
            }
        });
        Writer { stop, done, task }
    }

    fn done(&self) -> Vec<(Instant, Instant)> {
        self.done.lock().expect("lock").clone()
    }

    async fn stop(self) -> Vec<(Instant, Instant)> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the writer ends");
        self.done.lock().expect("lock").clone()
    }
}

async fn log_position(controller: &Controller) -> LogPosition {
    let probe: Probe = client::request(
        &controller.status_socket(),
        &Request::Probe {
            log_position_only: true,
        },
        Duration::from_secs(10),
    )
    .await
    .unwrap_or_else(|e| panic!("probe of {}: {e}", controller.agent_id));
    probe.log_position.unwrap_or_else(|| {
        panic!(
            "controller {} has no log position: {:?}",
            controller.agent_id, probe.log_position_error
        )
    })
}

/// Takes machine `k`'s bridge port down (`cut`) or up.
fn set_cut(network: &Network, k: usize, cut: bool) {
    let state = if cut { "down" } else { "up" };
    network
        .hub
        .ip(&["link", "set", &format!("c{}", k + 1), state]);
}

/// One run, from inside the hub namespace: form three, cut a follower for `cut_for`, heal,
/// wait for its catch-up, cut the other follower. Panics (with the logs) when a step does
/// not happen within `GIVE_UP` or an acknowledged write is missing.
pub async fn run_once(network: &Network, cut_for: Duration) -> Partition {
    let mut controllers: Vec<Controller> = (0..3)
        .map(|i| {
            let mut controller = Controller::new(&i.to_string(), &format!("{SUBNET}.{}", i + 1));
            controller.quorum_timeout_ms = QUORUM_TIMEOUT_MS.into();
            controller.namespace = Some(network.machines[i].name.clone());
            controller
        })
        .collect();
    let ips: Vec<String> = controllers.iter().map(|c| c.ip.clone()).collect();
    let map: Vec<(&str, &str)> = vec![("0", &ips[0]), ("1", &ips[1]), ("2", &ips[2])];
    controllers[0].write_map(&map[..1]);
    controllers[0].start().await;
    controllers[0].wait_voters(1).await;
    for controller in &mut controllers[1..] {
        controller.write_map(&map);
        controller.start().await;
    }
    controllers[0].set_map(&map).await;
    for controller in &controllers {
        controller.wait_voters(3).await;
    }
    let addresses: Vec<String> = controllers.iter().map(Controller::address).collect();
    super::insert_rows(&addresses, 0, 0).await;
    let status = controllers[0].status().await;
    let node_of = |address: &str| {
        status
            .members
            .iter()
            .find(|m| m.address == address)
            .expect("every controller is a member")
            .id
    };
    let ids: Vec<u64> = addresses.iter().map(|a| node_of(a)).collect();
    let leader = status.leader_id.expect("a leader");
    let followers: Vec<usize> = (0..3).filter(|&i| ids[i] != leader).collect();
    let leader_index = (0..3)
        .find(|&i| ids[i] == leader)
        .expect("the leader is ours");
    let (first, second) = (followers[0], followers[1]);

    let writer = Writer::start(addresses.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    set_cut(network, first, true);
    let cut = Instant::now();
    tokio::time::sleep(cut_for).await;
    let writes_while_cut = writer
        .done()
        .iter()
        .filter(|(began, _)| *began >= cut)
        .count();
    assert!(
        writes_while_cut > 0,
        "no write committed while one follower of three was cut; leader's log:\n{}",
        controllers[leader_index].log()
    );
    // The leader's log when the follower comes back (the writes go on).
    let target = log_position(&controllers[leader_index]).await;
    set_cut(network, first, false);
    let healed = Instant::now();
    let catch_up = loop {
        let position = log_position(&controllers[first]).await;
        if position.index >= target.index {
            break healed.elapsed();
        }
        assert!(
            healed.elapsed() < GIVE_UP,
            "the healed follower is at {position}, the leader was at {target} at the heal; \
             its log:\n{}",
            controllers[first].log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // The other follower goes: the leader needs the healed one for every commit.
    let now_leader = controllers[leader_index].status().await.leader_id;
    assert_eq!(now_leader, Some(leader), "the leader did not change");
    set_cut(network, second, true);
    let second_cut = Instant::now();
    tokio::time::sleep(WATCH_AFTER_CUT).await;
    let done = writer.done();
    let resume = done
        .iter()
        .filter(|(began, _)| *began >= second_cut)
        .map(|(_, committed)| *committed - second_cut)
        .min();
    let mut stall = Duration::ZERO;
    let mut last = second_cut;
    for (_, committed) in done.iter().filter(|(_, c)| *c >= second_cut) {
        stall = stall.max(*committed - last);
        last = *committed;
    }
    stall = stall.max(Instant::now() - last);
    set_cut(network, second, false);
    let done = writer.stop().await;
    let resume = resume.unwrap_or_else(|| {
        panic!(
            "no write committed within {WATCH_AFTER_CUT:?} of the second cut; leader's log:\n{}",
            controllers[leader_index].log()
        )
    });
    // Every acknowledged write is there (a write whose outcome was unknown may be too).
    let rows = super::read_rows(&addresses).await;
    assert!(
        rows.len() >= done.len(),
        "{} rows for {} acknowledged writes",
        rows.len(),
        done.len()
    );
    for controller in &mut controllers {
        assert_eq!(controller.terminate(), Some(0), "{}", controller.log());
    }
    if let Some(dir) = std::env::var_os("DBACCESSOR_PARTITION_KEEP_LOGS") {
        for controller in &controllers {
            let to =
                std::path::Path::new(&dir).join(format!("controller-{}.log", controller.agent_id));
            let _ = std::fs::write(to, controller.log());
        }
        println!(
            "partition: ids {ids:?}; leader {leader}; cut at +0, healed at +{} ms, second cut at +{} ms",
            (healed - cut).as_millis(),
            (second_cut - cut).as_millis()
        );
    }
    Partition {
        writes_while_cut,
        catch_up,
        resume,
        stall,
        leader,
        first_cut: ids[first],
        second_cut: ids[second],
    }
}
