//! Regression test: a leader whose stand-bys' addresses are blackholed (their machines gone,
//! SYNs dropped rather than refused) still commits writes, and stops promptly, because the
//! node's raft connects are bounded (`dqlite::node::RaftConnect`) and `main` raises libuv's
//! thread pool (see `dbaccessor::threadpool`). Reproduces without the simulator: the test
//! makes a network namespace whose peer addresses have a permanent neighbour entry on a veth
//! that drops everything, and re-runs itself inside it (this process must be in the
//! namespace for the node and the client to share it). Needs root and `ip`.
//!
//! It prints the time from the restart to the first committed write, the slowest of the
//! writes that follow, and the stop time. For before/after measurements only, the inner run
//! reads `DBACCESSOR_BLACKHOLE_CONNECT=libdqlite` (libdqlite's own connect: the stall this
//! test guards against, so the run fails) and `DBACCESSOR_BLACKHOLE_POOL=default` (libuv's
//! 4 threads); `ip netns exec` passes the environment on.
//!
//! The second test is issue 13's shrink to one with black-holed peers, with real
//! `dbaccessor` processes (`support::shrink`): three controllers form in a namespace of its
//! own, two are killed and their addresses black-holed, the survivor's map is reduced to
//! itself and reloaded; the first write it accepts must come within `SHRINK_BOUND` of the
//! reload (generous: the target is 5 s, which `cargo bench -p dbaccessor --bench
//! blackhole_shrink` measures over 10 runs).
#![forbid(unsafe_code)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dqlite::client::{Client, Options};
use dqlite::node::{self, Node, NodeOptions, RaftConnect, BOOTSTRAP_ID};
use dqlite::{NodeInfo, NodeRole};

/// What the inner test prints once every write committed.
const WRITES_DONE: &str = "blackhole: every write committed";
/// Set in the child that runs the scenario inside the namespace.
const INNER: &str = "DBACCESSOR_BLACKHOLE_INNER";
/// The namespace's own address (dbaccessor's test range is 127.21/16 on loopback; a
/// namespace of our own needs a routed network, which only this test uses).
const OWN: &str = "10.221.0.1";
/// Stand-bys whose SYNs vanish: one more than libuv's default 4 pool threads.
const DEAD: [&str; 5] = [
    "10.221.0.2",
    "10.221.0.3",
    "10.221.0.4",
    "10.221.0.5",
    "10.221.0.6",
];
const PORT: u16 = 9001;
/// Far below the kernel's SYN timeout (about 2 minutes) that the bug waited out, far above
/// a local commit.
const WRITE_WAIT: Duration = Duration::from_secs(30);
/// How long the writes go on after the first one, while raft redials the dead stand-bys
/// (about once a second each, every dial holding a pool thread until it gives up).
const WRITE_PERIOD: Duration = Duration::from_secs(3);
/// A stop waits for the connects under way: at most one bounded connect timeout each.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// Measurement switches (see the module doc).
const CONNECT_VARIABLE: &str = "DBACCESSOR_BLACKHOLE_CONNECT";
const POOL_VARIABLE: &str = "DBACCESSOR_BLACKHOLE_POOL";

#[test]
fn a_leader_with_blackholed_stand_bys_still_writes() {
    if std::env::var_os(INNER).is_some() {
        // What `main` does first (this child runs this test alone, on one thread).
        if std::env::var(POOL_VARIABLE).as_deref() != Ok("default") {
            dbaccessor::threadpool::configure();
        }
        let raft_connect = if std::env::var(CONNECT_VARIABLE).as_deref() == Ok("libdqlite") {
            RaftConnect::Libdqlite
        } else {
            RaftConnect::default()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime starts");
        let dir = tempfile::tempdir().expect("a temp dir");
        let node = runtime.block_on(scenario(dir.path(), raft_connect));
        if raft_connect == RaftConnect::Libdqlite {
            // Neither stopping the node nor exiting returns before the stuck connects time
            // out (libdqlite cannot cancel a connect under way, and libuv joins its pool at
            // exit): report success, then wait for the outer test to end this process.
            drop(dir);
            println!("{WRITES_DONE}");
            let _keep = (node, runtime);
            std::thread::sleep(Duration::from_secs(3600));
            return;
        }
        let stopping = Instant::now();
        drop(node);
        let stopped = stopping.elapsed();
        println!("blackhole: the node stopped in {} ms", stopped.as_millis());
        assert!(
            stopped < STOP_WAIT,
            "a stop waits at most for the bounded connects under way: {stopped:?}"
        );
        println!("{WRITES_DONE}");
        return;
    }
    let namespace = Namespace::create(&format!("dbacc-bh-{}", std::process::id()));
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let child = Command::new("ip")
        .args(["netns", "exec", &namespace.name, "timeout", "120"])
        .arg(exe)
        .args([
            "a_leader_with_blackholed_stand_bys_still_writes",
            "--exact",
            "--nocapture",
        ])
        .env(INNER, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("ip netns exec starts");
    let mut child = TerminateOnDrop(child);
    let stdout = child.0.stdout.take().expect("stdout is piped");
    // Ends at the marker, or when the inner test fails (it exits, or `timeout` ends it).
    let done = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .inspect(|line| println!("{line}"))
        .any(|line| line == WRITES_DONE);
    assert!(done, "the inner test failed (its output is above)");
}

/// Set in the child that runs the shrink inside its namespace.
const SHRINK_INNER: &str = "DBACCESSOR_SHRINK_INNER";
/// What the inner shrink test prints when it passed.
const SHRUNK: &str = "shrink: passed";
/// Generous: the target is 5 s; the bug took 4 to 122 s.
const SHRINK_BOUND: Duration = Duration::from_secs(20);

#[test]
fn a_survivor_with_blackholed_peers_shrinks_to_one_and_writes_within_the_bound() {
    const NAME: &str =
        "a_survivor_with_blackholed_peers_shrinks_to_one_and_writes_within_the_bound";
    if std::env::var_os(SHRINK_INNER).is_some() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime starts");
        let shrink = runtime.block_on(support::shrink::run_once(2));
        println!(
            "shrink: first write accepted {} ms after POST /reload (membership rewritten in {:?}, \
             {} failed attempts before)",
            shrink.first_write.as_millis(),
            shrink.rewritten,
            shrink.attempts
        );
        assert!(
            shrink.first_write < SHRINK_BOUND,
            "the survivor took {:?} (bound {SHRINK_BOUND:?})",
            shrink.first_write
        );
        println!("{SHRUNK}");
        return;
    }
    let namespace = support::shrink::namespace(&format!("dbacc-shr-{}", std::process::id()));
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let child = Command::new("ip")
        .args(["netns", "exec", &namespace.name, "timeout", "180"])
        .arg(exe)
        .args([NAME, "--exact", "--nocapture"])
        .env(SHRINK_INNER, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("ip netns exec starts");
    let mut child = TerminateOnDrop(child);
    let stdout = child.0.stdout.take().expect("stdout is piped");
    let done = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .inspect(|line| println!("{line}"))
        .any(|line| line == SHRUNK);
    assert!(done, "the inner test failed (its output is above)");
}

/// Bootstraps a node, forces a configuration naming it the only voter and `DEAD` as
/// stand-bys, restarts it (it leads at once and raft starts connecting to the dead ones),
/// then writes at once and on. Returns the running node.
async fn scenario(dir: &Path, raft_connect: RaftConnect) -> Node {
    let address = format!("{OWN}:{PORT}");
    let options = NodeOptions {
        network_latency: Duration::from_millis(20),
        raft_connect,
        ..NodeOptions::default()
    };
    let mut node = Node::new(BOOTSTRAP_ID, &address, dir, &options).expect("node created");
    node.start().expect("node started");
    write(&address, "CREATE TABLE t (a)").await;
    let identity = node.identity();
    node.stop().expect("node stopped");
    drop(node);

    let mut members = vec![NodeInfo {
        id: BOOTSTRAP_ID,
        address: address.clone(),
        role: NodeRole::Voter,
    }];
    for (index, dead) in DEAD.iter().enumerate() {
        members.push(NodeInfo {
            id: 100 + index as u64,
            address: format!("{dead}:{PORT}"),
            role: NodeRole::StandBy,
        });
    }
    node::recover(dir, &identity, &members).expect("configuration forced");
    let restarted = Instant::now();
    let mut node = Node::new(BOOTSTRAP_ID, &address, dir, &options).expect("node created");
    node.start().expect("node restarted");
    // The leader dials every stand-by at once (each dial sits in SYN-SENT) while this
    // write needs raft's disk work on the same libuv pool.
    write(&address, "INSERT INTO t VALUES (0)").await;
    println!(
        "blackhole: first write committed {} ms after the restart",
        restarted.elapsed().as_millis()
    );
    // Raft keeps redialling the dead ones: the writes go on.
    let (mut slowest, mut count) = (Duration::ZERO, 0);
    let more = Instant::now();
    while more.elapsed() < WRITE_PERIOD {
        count += 1;
        let started = Instant::now();
        write(&address, &format!("INSERT INTO t VALUES ({count})")).await;
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "blackhole: {count} more writes over {} ms, the slowest {} ms",
        more.elapsed().as_millis(),
        slowest.as_millis()
    );
    node
}

async fn write(address: &str, sql: &str) {
    let options = Options {
        connect_timeout: Duration::from_secs(2),
        request_timeout: WRITE_WAIT,
        retry_timeout: Duration::from_secs(10),
        ..Options::default()
    };
    let attempt = async {
        let mut client = Client::connect_leader(&[address], options).await?;
        client.exec("db", sql, &[]).await
    };
    let failure = match tokio::time::timeout(WRITE_WAIT, attempt).await {
        Ok(Ok(_)) => return,
        Ok(Err(error)) => format!("{sql}: {error}"),
        Err(_) => format!("{sql}: no answer within {WRITE_WAIT:?}: the leader is stalled"),
    };
    // Not a panic: unwinding would stop the node, which waits out the stuck connects
    // (minutes). The outer test reports the failed exit.
    eprintln!("{failure}");
    std::process::exit(1);
}

/// A network namespace with loopback, `OWN` on a veth whose peer (up, without addresses)
/// drops what it gets, and a permanent neighbour entry for each `DEAD` address so that no
/// ARP failure turns the silence into "no route to host". Deleted on drop.
struct Namespace {
    name: String,
}

impl Namespace {
    fn create(name: &str) -> Namespace {
        // A namespace left by a killed earlier run of this pid: start clean.
        let _ = Command::new("ip").args(["netns", "del", name]).status();
        run(&["ip", "netns", "add", name]);
        let namespace = Namespace {
            name: name.to_owned(),
        };
        let inside = |args: &[&str]| {
            let mut full = vec!["ip", "netns", "exec", name];
            full.extend_from_slice(args);
            run(&full);
        };
        inside(&["ip", "link", "set", "lo", "up"]);
        inside(&[
            "ip", "link", "add", "bh0", "type", "veth", "peer", "name", "bh1",
        ]);
        let own = format!("{OWN}/24");
        inside(&["ip", "addr", "add", &own, "dev", "bh0"]);
        inside(&["ip", "link", "set", "bh0", "up"]);
        inside(&["ip", "link", "set", "bh1", "up"]);
        for (index, dead) in DEAD.iter().enumerate() {
            let mac = format!("02:00:00:00:00:{:02x}", index + 2);
            inside(&[
                "ip",
                "neigh",
                "replace",
                dead,
                "lladdr",
                &mac,
                "dev",
                "bh0",
                "nud",
                "permanent",
            ]);
        }
        namespace
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(args: &[&str]) {
    let status = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|error| panic!("{args:?} cannot start: {error}"));
    assert!(status.success(), "{args:?} failed: {status}");
}

/// Ends the inner test: SIGTERM to `timeout`, which passes it on to the test process (a
/// SIGKILL would stop `timeout` alone).
struct TerminateOnDrop(Child);

impl Drop for TerminateOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}
