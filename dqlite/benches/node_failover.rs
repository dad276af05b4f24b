//! Fail-over and join times of our nodes at the default network latency, printed as numbers
//! (a benchmark, not a test: timings are measured, never asserted).
//!
//! Each round starts a fresh 3-voter cluster of [`dqlite::node::Node`]s, one per process
//! (this binary re-executed as `node <id> <address> <dir>`), so that the leader can be
//! killed with SIGKILL. It then times:
//! - join: ADD of a fourth node as a spare and ASSIGN to stand-by (the latter returns once
//!   the node has caught up), sent to the leader over the wire protocol;
//! - fail-over: from SIGKILL of the leader until a survivor names itself leader.
//!
//! Run: `cargo bench -p dqlite --bench node_failover` (loopback 127.11.120.0/22).

#[allow(dead_code)] // The tests' helpers; this benchmark uses the wire requests only.
#[path = "../tests/node_support/mod.rs"]
mod node_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use dqlite::node::{generate_node_id, Node, NodeOptions, BOOTSTRAP_ID, DEFAULT_NETWORK_LATENCY};
use dqlite::NodeRole;
use node_support::{membership_change, text, ChildGuard, REQUEST_ADD, REQUEST_ASSIGN};

const ROUNDS: u8 = 5;

type Result<T> = std::result::Result<T, String>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("node") {
        return run_node(&args[2..]);
    }
    let temp = tempfile::tempdir().map_err(|error| format!("temp dir: {error}"))?;
    println!(
        "our nodes, 3 voters on loopback, network latency {} ms",
        DEFAULT_NETWORK_LATENCY.as_millis()
    );
    let mut joins = Vec::new();
    let mut failovers = Vec::new();
    for round in 0..ROUNDS {
        let (join, failover) = run_round(round, &temp.path().join(format!("round{round}")))?;
        println!(
            "round {}: join of a 4th node {:.1} ms, fail-over after kill -9 of the leader {:.0} ms",
            round + 1,
            millis(join),
            millis(failover)
        );
        joins.push(join);
        failovers.push(failover);
    }
    joins.sort();
    failovers.sort();
    println!(
        "join (ADD + ASSIGN stand-by): median {:.1} ms, max {:.1} ms (target < 200 ms)",
        millis(joins[joins.len() / 2]),
        millis(joins[joins.len() - 1])
    );
    println!(
        "fail-over (SIGKILL -> a survivor is leader): median {:.0} ms, max {:.0} ms (target < 1000 ms)",
        millis(failovers[failovers.len() / 2]),
        millis(failovers[failovers.len() - 1])
    );
    Ok(())
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// One round: a fresh cluster, a timed join, a timed fail-over.
fn run_round(round: u8, dir: &Path) -> Result<(Duration, Duration)> {
    let addresses: Vec<String> = (1..=4)
        .map(|host| format!("127.11.{}.{host}:9001", 120 + round))
        .collect();
    let ids: Vec<u64> = addresses
        .iter()
        .enumerate()
        .map(|(number, address)| {
            if number == 0 {
                BOOTSTRAP_ID
            } else {
                generate_node_id(address)
            }
        })
        .collect();
    let mut nodes = Vec::new();
    for number in 0..4 {
        nodes.push(spawn_node(
            ids[number],
            &addresses[number],
            &dir.join(format!("n{}", number + 1)),
        )?);
    }
    wait_for_leader(&addresses[..1], &[])?;
    for number in 1..3 {
        add(
            &addresses[0],
            ids[number],
            &addresses[number],
            NodeRole::Voter,
        )?;
    }

    let started = Instant::now();
    add(&addresses[0], ids[3], &addresses[3], NodeRole::StandBy)?;
    let join = started.elapsed();

    // Kill the leader (node 1, the only one that ever led) and time the election.
    drop(nodes.remove(0));
    let killed = Instant::now();
    wait_for_leader(&addresses[1..3], &[ids[0]])?;
    let failover = killed.elapsed();
    Ok((join, failover))
}

/// ADD as a spare, then ASSIGN `role`, both to the leader, retrying while busy.
fn add(leader: &str, id: u64, address: &str, role: NodeRole) -> Result<()> {
    let mut body = id.to_le_bytes().to_vec();
    body.extend_from_slice(&text(address));
    membership_change(leader, REQUEST_ADD, &body);
    let mut body = id.to_le_bytes().to_vec();
    body.extend_from_slice(&role.code().to_le_bytes());
    membership_change(leader, REQUEST_ASSIGN, &body);
    Ok(())
}

/// Polls `candidates` until one names itself leader (and is not one of `dead`).
fn wait_for_leader(candidates: &[String], dead: &[u64]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        for candidate in candidates {
            if let Some((id, address)) = ask_leader(candidate) {
                if address == *candidate && !dead.contains(&id) {
                    return Ok(());
                }
            }
        }
        thread::sleep(Duration::from_millis(5));
    }
    Err(format!("no leader among {candidates:?} within 10 s"))
}

/// LEADER request: the id and address the node believes lead, `None` when unreachable
/// or unknown. Short timeouts: a dead or busy node must not stall the measurement.
fn ask_leader(address: &str) -> Option<(u64, String)> {
    let socket = address.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&socket, Duration::from_millis(100)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .ok()?;
    let mut request = 1u64.to_le_bytes().to_vec(); // protocol version
    request.extend_from_slice(&1u32.to_le_bytes()); // one word of body
    request.extend_from_slice(&[0, 0, 0, 0]); // LEADER, revision 0
    request.extend_from_slice(&0u64.to_le_bytes());
    stream.write_all(&request).ok()?;
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).ok()?;
    let words = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let mut body = vec![0u8; words * 8];
    stream.read_exact(&mut body).ok()?;
    if header[4] != 1 || body.len() < 16 {
        return None;
    }
    let id = u64::from_le_bytes(body[..8].try_into().ok()?);
    let text = &body[8..];
    let end = text.iter().position(|&byte| byte == 0)?;
    let leader = String::from_utf8(text[..end].to_vec()).ok()?;
    (id != 0).then_some((id, leader))
}

/// Starts this binary as a node process and waits until its node runs.
fn spawn_node(id: u64, address: &str, dir: &Path) -> Result<ChildGuard> {
    let exe = std::env::current_exe().map_err(|error| format!("this binary: {error}"))?;
    let mut child = Command::new(exe)
        .arg("node")
        .arg(id.to_string())
        .arg(address)
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| format!("spawn node {address}: {error}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let guard = ChildGuard::new(&format!("node {address}"), child);
    let (ready, readiness) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|line| line.ok()) {
            let _ = ready.send(line);
        }
    });
    match readiness.recv_timeout(Duration::from_secs(10)) {
        Ok(line) if line == "ready" => Ok(guard),
        Ok(line) => Err(format!("node {address}: {line}")),
        Err(_) => Err(format!("node {address} did not start within 10 s")),
    }
}

/// The child: run one node until stdin closes (the parent ended) or SIGKILL.
fn run_node(args: &[String]) -> Result<()> {
    let [id, address, dir] = args else {
        return Err(format!("usage: node <id> <address> <dir>, got {args:?}"));
    };
    let id: u64 = id.parse().map_err(|error| format!("id {id}: {error}"))?;
    let started =
        Node::new(id, address, Path::new(dir), &NodeOptions::default()).and_then(|mut node| {
            node.start()?;
            Ok(node)
        });
    let node = match started {
        Ok(node) => node,
        Err(error) => {
            println!("error: {error}");
            return Err(error.to_string());
        }
    };
    println!("ready");
    std::io::stdout()
        .flush()
        .map_err(|error| format!("stdout: {error}"))?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(node);
    Ok(())
}
