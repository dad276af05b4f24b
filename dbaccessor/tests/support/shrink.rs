//! Shrink to one with black-holed peers, with real `dbaccessor` processes (issue 13): a
//! cluster of `1 + peers` controllers forms in a network namespace the caller made with
//! [`namespace`], the peers are killed and their addresses black-holed (SYNs dropped, not
//! refused: their machines are gone), and once raft has redialled them for
//! [`BLACKHOLED_BEFORE_RELOAD`] the survivor's map is reduced to itself and `POST /reload`
//! sent. [`run_once`] measures the time from the reload to the first write the survivor
//! accepts. It runs inside the namespace (the test and the bench re-run themselves there
//! with `ip netns exec`); it changes the namespace's addresses and neighbour entries.

use std::time::{Duration, Instant};

use dqlite::client::{Client, Options};
use dqlite::wire::Value;

use super::netns::{run, run_quietly, Namespace};
use super::{insert_rows, read_rows, Controller};

/// The survivor's address, on the veth `bh0` (a routed network: only addresses off
/// loopback can be black-holed). A namespace of our own, so no crate range is needed.
pub const OWN: &str = "10.221.1.1";
/// The peers live on `lo` (as /32s) while they run and move to `bh0`'s black hole once
/// killed. At most 6.
pub const PEERS: [&str; 6] = [
    "10.221.1.2",
    "10.221.1.3",
    "10.221.1.4",
    "10.221.1.5",
    "10.221.1.6",
    "10.221.1.7",
];
/// The simulator's quorum timeout (`juju-sim`'s default `--quorum-timeout-ms`): the
/// survivor looks for a leader this long before it shrinks.
pub const QUORUM_TIMEOUT_MS: &str = "3000";
/// How long raft redials the black-holed peers before the map changes (each dial waits
/// for its bounded connect; libdqlite's own connect sat in SYN-SENT for minutes).
pub const BLACKHOLED_BEFORE_RELOAD: Duration = Duration::from_secs(2);
/// How long the survivor may take at all before a run gives up.
pub const GIVE_UP: Duration = Duration::from_secs(60);

/// Makes the namespace: loopback, the veth pair `bh0`/`bh1` (`bh1` up without addresses:
/// what reaches it is dropped) and `OWN/24` on `bh0`.
pub fn namespace(name: &str) -> Namespace {
    let namespace = Namespace::create(name);
    namespace.ip(&["link", "add", "bh0", "type", "veth", "peer", "name", "bh1"]);
    namespace.ip(&["addr", "add", &format!("{OWN}/24"), "dev", "bh0"]);
    namespace.ip(&["link", "set", "bh0", "up"]);
    namespace.ip(&["link", "set", "bh1", "up"]);
    namespace
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Shrink {
    /// From sending `POST /reload` to the first write the survivor committed.
    pub first_write: Duration,
    /// The survivor's own account of the shrink (its log's `membership rewritten in`).
    pub rewritten: Option<Duration>,
    /// Failed write attempts before the first accepted one.
    pub attempts: u32,
}

/// One run inside the namespace: form, kill, black-hole, reload, write. Panics (with the
/// survivor's log) when the survivor accepts no write within `GIVE_UP` or loses a row.
pub async fn run_once(peers: usize) -> Shrink {
    assert!((1..=PEERS.len()).contains(&peers), "1 to 6 peers");
    let peers = &PEERS[..peers];
    // A previous run's black hole: the addresses come back to `lo`.
    for peer in peers {
        run_quietly(&["ip", "neigh", "del", peer, "dev", "bh0"]);
        run_quietly(&["ip", "addr", "del", &format!("{peer}/32"), "dev", "lo"]);
        run(&["ip", "addr", "add", &format!("{peer}/32"), "dev", "lo"]);
    }
    let mut controllers: Vec<Controller> = std::iter::once(OWN)
        .chain(peers.iter().copied())
        .enumerate()
        .map(|(i, ip)| {
            let mut controller = Controller::new(&i.to_string(), ip);
            controller.quorum_timeout_ms = QUORUM_TIMEOUT_MS.into();
            controller
        })
        .collect();
    let ids: Vec<String> = (0..controllers.len()).map(|i| i.to_string()).collect();
    let map: Vec<(&str, &str)> = ids
        .iter()
        .zip(std::iter::once(OWN).chain(peers.iter().copied()))
        .map(|(id, ip)| (id.as_str(), ip))
        .collect();
    controllers[0].write_map(&map[..1]);
    controllers[0].start().await;
    controllers[0].wait_voters(1).await;
    for controller in &mut controllers[1..] {
        controller.write_map(&map);
        controller.start().await;
    }
    controllers[0].set_map(&map).await;
    let voters = if controllers.len() >= 3 { 3 } else { 1 };
    let everyone = controllers.len();
    controllers[0]
        .wait_for(
            &format!("a member of {everyone} with a leader"),
            Duration::from_secs(60),
            |s| {
                s.state == controller_contract::status::NodeState::Member
                    && s.leader_id.is_some()
                    && s.members.len() == everyone
                    && s.members
                        .iter()
                        .filter(|m| m.role == controller_contract::status::Role::Voter)
                        .count()
                        == voters
            },
        )
        .await;
    let own = controllers[0].address();
    insert_rows(std::slice::from_ref(&own), 0, 3).await;

    // The peers' machines go: processes killed, addresses gone, SYNs to them dropped.
    for (index, peer) in peers.iter().enumerate() {
        controllers[index + 1].kill();
        run(&["ip", "addr", "del", &format!("{peer}/32"), "dev", "lo"]);
        let mac = format!("02:00:00:00:01:{:02x}", index + 2);
        run(&[
            "ip",
            "neigh",
            "replace",
            peer,
            "lladdr",
            &mac,
            "dev",
            "bh0",
            "nud",
            "permanent",
        ]);
    }
    tokio::time::sleep(BLACKHOLED_BEFORE_RELOAD).await;

    // The charm's side: the map names the survivor alone.
    let survivor = &mut controllers[0];
    survivor.write_map(&map[..1]);
    let reloaded = Instant::now();
    survivor.reload().await;
    let mut attempts = 0;
    let options = Options {
        connect_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_secs(2),
        retry_timeout: Duration::from_millis(200),
        ..Options::default()
    };
    let first_write = loop {
        let attempt = async {
            let mut client = Client::connect_leader(&[own.as_str()], options.clone()).await?;
            client
                .exec(
                    "test",
                    "INSERT INTO t (n) VALUES (?)",
                    &[Value::Integer(100)],
                )
                .await
        };
        match tokio::time::timeout(Duration::from_secs(3), attempt).await {
            Ok(Ok(_)) => break reloaded.elapsed(),
            _ if reloaded.elapsed() > GIVE_UP => panic!(
                "no write accepted within {GIVE_UP:?} of the reload; survivor's log:\n{}",
                survivor.log()
            ),
            _ => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let log = survivor.log();
    assert!(log.contains("decided shrink to one"), "{log}");
    if std::env::var_os("DBACCESSOR_SHRINK_LOG").is_some() {
        println!("survivor's log:\n{log}");
    }
    assert_eq!(
        read_rows(&[own]).await,
        vec![0, 1, 2, 100],
        "the survivor keeps every row"
    );
    let rewritten = log
        .lines()
        .filter_map(|line| line.split("membership rewritten in ").nth(1))
        .filter_map(|rest| rest.trim_end_matches(" ms").parse::<u64>().ok())
        .next_back()
        .map(Duration::from_millis);
    assert_eq!(survivor.terminate(), Some(0), "{}", survivor.log());
    Shrink {
        first_write,
        rewritten,
        attempts,
    }
}
