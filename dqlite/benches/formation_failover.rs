//! Formation and fail-over of three-node clusters on loopback, ours against go-dqlite's own
//! stack (`dqlite-demo`), in one interleaved run: every round starts one cluster of each
//! kind in turn (the order rotates from round to round), so that the load of the shared
//! machine falls on all alike. The kinds:
//!
//! - (a) go-dqlite `dqlite-demo` nodes at their defaults, the anchor. go-dqlite's app sets no
//!   network latency unless told, so libdqlite 1.11 keeps the raft timers `dqlite_node_create`
//!   sets (src/server.c: `raft_set_election_timeout(3000)`, `raft_set_heartbeat_timeout(500)`).
//! - (b) our `dqlite::app::App` nodes at the same timers: `NodeOptions::libdqlite_timers`
//!   leaves them as libdqlite sets them (no latency gives both: libdqlite derives a 15x
//!   election timeout and a 1.5x heartbeat from one value). The app layer sizes its own
//!   waits by a 200 ms latency (15x of it is the 3000 ms election timeout).
//! - (c) our `App` nodes at our production setting, `DEFAULT_NETWORK_LATENCY` (20 ms: 30 ms
//!   heartbeat, 300 ms election timeout). What (c) gains over (a) comes from that setting,
//!   not from faster code; the printed table and `summary:` lines say so.
//!
//! raft 0.15 ticks every heartbeat and checks the election timer on the tick, so fail-over
//! comes in heartbeat steps; formation was measured to scale with the heartbeat too (the
//! promotions' catch-up: 2.0 s at 500 ms, 1.2 s at 300 ms, 0.2 s at 30 ms). So both measures
//! depend on the timers, and (b) has to match both of them.
//!
//! Each round and kind:
//! - formation: from spawning the first node (it bootstraps) until the cluster's CLUSTER
//!   answer (asked of node 1, the leader throughout) lists 3 voters. Nodes 2 and 3 are
//!   spawned together, joining through node 1, as soon as node 1 answers LEADER with itself
//!   (the bootstrap phase, printed apart). Both apps promote by themselves: go-dqlite's
//!   joiner assigns itself (and another node) voter once it sees 3 members; ours reviews the
//!   roles from the joiner right after its join.
//! - fail-over: the nodes agree on the leader, a table is created, 1 s passes; then SIGKILL
//!   of the leader's process, and the two survivors are asked LEADER every 5 ms until one
//!   names itself; then a write (INSERT) is retried every 5 ms on it until one succeeds
//!   (printed as "to a write").
//!
//! ```text
//! flock /tmp/net-tests.lock cargo bench -p dqlite --bench formation_failover
//! DQLITE_BENCH_ROUNDS=2 flock /tmp/net-tests.lock cargo bench -p dqlite --bench formation_failover
//! ```
//!
//! Our nodes are this binary re-run as node processes (`DQLITE_FAILOVER_BENCH_NODE`:
//! `libdqlite-timers` or the latency in ms); the role review runs every 200 ms in (b) and
//! (c), dbaccessor's value at 20 ms (go-dqlite's app reviews every 30 s, but formation waits
//! for that review in neither). Addresses: 127.14.0.0/16 (a cluster per kind and round:
//! third octet 0-63 for (a), 64-127 for (b), 128-191 for (c), plus the round). Asserts
//! nothing about speed.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dqlite::app::{App, AppConfig};
use dqlite::client::{Connection, Options};
use dqlite::node::DEFAULT_NETWORK_LATENCY;
use dqlite::wire::Value;
use dqlite::NodeRole;
use test_support::process::ChildGuard;

/// Set when this binary runs as one of our nodes: [`LIBDQLITE_TIMERS`] or the network
/// latency in milliseconds.
const NODE_MODE: &str = "DQLITE_FAILOVER_BENCH_NODE";
const LIBDQLITE_TIMERS: &str = "libdqlite-timers";
const PORT: u16 = 9001;
/// How often the cluster is asked while a phase is timed.
const POLL: Duration = Duration::from_millis(5);
/// libdqlite 1.11's election timeout and heartbeat when no latency is set (src/server.c).
const LIBDQLITE_ELECTION_TIMEOUT: Duration = Duration::from_millis(3000);
const LIBDQLITE_HEARTBEAT: Duration = Duration::from_millis(500);
/// What our app layer sizes its waits by at libdqlite's timers: 15x of it is libdqlite's
/// default election timeout.
const EQUAL_TIMERS_LATENCY: Duration = Duration::from_millis(200);
/// Our nodes' role review (dbaccessor's at the default latency).
const ROLE_INTERVAL: Duration = Duration::from_millis(200);
/// After formation and the table, before the kill: joins, promotions and the first
/// role reviews are over.
const SETTLE: Duration = Duration::from_secs(1);
/// Bounds of one phase; a cluster that misses one fails its round and the run goes on.
const PHASE_LIMIT: Duration = Duration::from_secs(60);
const DATABASE: &str = "failover";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    GoDemo,
    OursEqualTimers,
    OursProduction,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::GoDemo, Kind::OursEqualTimers, Kind::OursProduction];

    fn name(self) -> &'static str {
        match self {
            Kind::GoDemo => "(a) go-dqlite dqlite-demo, defaults",
            Kind::OursEqualTimers => "(b) ours, dqlite-demo's timers",
            Kind::OursProduction => "(c) ours, production setting",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Kind::GoDemo => "demo",
            Kind::OursEqualTimers => "ours-equal",
            Kind::OursProduction => "ours-production",
        }
    }

    /// Our nodes' [`NODE_MODE`]; `None` for dqlite-demo.
    fn node_mode(self) -> Option<String> {
        match self {
            Kind::GoDemo => None,
            Kind::OursEqualTimers => Some(LIBDQLITE_TIMERS.to_owned()),
            Kind::OursProduction => Some(DEFAULT_NETWORK_LATENCY.as_millis().to_string()),
        }
    }

    /// (election timeout, heartbeat) as libdqlite sets them.
    fn timers(self) -> (Duration, Duration) {
        match self {
            Kind::GoDemo | Kind::OursEqualTimers => {
                (LIBDQLITE_ELECTION_TIMEOUT, LIBDQLITE_HEARTBEAT)
            }
            Kind::OursProduction => (
                DEFAULT_NETWORK_LATENCY * 15,
                DEFAULT_NETWORK_LATENCY * 3 / 2,
            ),
        }
    }

    fn how(self) -> &'static str {
        match self {
            Kind::GoDemo => "libdqlite's defaults: go-dqlite sets no latency",
            Kind::OursEqualTimers => "libdqlite's defaults: NodeOptions::libdqlite_timers",
            Kind::OursProduction => "network latency 20 ms, DEFAULT_NETWORK_LATENCY",
        }
    }

    fn addresses(self, round: usize) -> Vec<String> {
        let base = match self {
            Kind::GoDemo => 0,
            Kind::OursEqualTimers => 64,
            Kind::OursProduction => 128,
        };
        (1..=3)
            .map(|host| format!("127.14.{}.{host}:{PORT}", base + round))
            .collect()
    }
}

/// One round of one kind.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Spawn of node 1 until it answers LEADER with itself.
    bootstrap: Duration,
    /// Spawn of node 1 until the cluster lists 3 voters.
    formation: Duration,
    /// SIGKILL of the leader until a survivor names itself leader.
    failover: Duration,
    /// SIGKILL of the leader until a write succeeded on the new leader.
    to_write: Duration,
}

fn main() {
    if let Ok(latency) = std::env::var(NODE_MODE) {
        std::process::exit(node_process(&latency));
    }
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    if let Err(error) = runtime.block_on(run()) {
        eprintln!("formation and fail-over benchmark failed: {error:#}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let rounds: usize = match std::env::var("DQLITE_BENCH_ROUNDS") {
        Ok(text) => text
            .parse()
            .with_context(|| format!("DQLITE_BENCH_ROUNDS={text}"))?,
        Err(_) => 5,
    };
    if !(1..=63).contains(&rounds) {
        bail!("DQLITE_BENCH_ROUNDS must be from 1 to 63 (one /24 per round and kind)");
    }
    let dir = tempfile::tempdir().context("create a temp dir")?;
    println!("formation and fail-over of 3-node clusters on loopback, {rounds} interleaved rounds");
    for kind in Kind::ALL {
        let (election, heartbeat) = kind.timers();
        println!(
            "  {:<42} election timeout {} ms, heartbeat {} ms ({})",
            kind.name(),
            election.as_millis(),
            heartbeat.as_millis(),
            kind.how()
        );
    }
    let mut samples: Vec<(Kind, Sample)> = Vec::new();
    for round in 0..rounds {
        // Rotate the order so that no kind always runs first (or right after another).
        for offset in 0..Kind::ALL.len() {
            let kind = Kind::ALL[(round + offset) % Kind::ALL.len()];
            let cluster_dir = dir.path().join(format!("{}-{round}", kind.slug()));
            match measure(&cluster_dir, kind, round).await {
                Ok(sample) => {
                    println!(
                        "round {} {:<42} bootstrap {:>6.0} ms, formation {:>6.0} ms, \
                         fail-over {:>6.0} ms, to a write {:>6.0} ms",
                        round + 1,
                        kind.name(),
                        millis(sample.bootstrap),
                        millis(sample.formation),
                        millis(sample.failover),
                        millis(sample.to_write)
                    );
                    samples.push((kind, sample));
                }
                Err(error) => println!("round {} {}: FAILED: {error:#}", round + 1, kind.name()),
            }
        }
    }
    print_report(&samples);
    Ok(())
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Starts a cluster of `kind`, times its formation and the fail-over after SIGKILL of its
/// leader, and stops every process (on every path: the guards kill on drop).
async fn measure(dir: &Path, kind: Kind, round: usize) -> Result<Sample> {
    let addresses = kind.addresses(round);
    let mut nodes: Vec<ChildGuard> = Vec::new();

    let started = Instant::now();
    nodes.push(spawn_node(kind, &dir.join("n1"), &addresses[0], None)?);
    wait_self_leader(&addresses[..1], None, &mut nodes)
        .await
        .context("bootstrap")?;
    let bootstrap = started.elapsed();
    for (index, address) in addresses.iter().enumerate().skip(1) {
        let node_dir = dir.join(format!("n{}", index + 1));
        nodes.push(spawn_node(kind, &node_dir, address, Some(&addresses[0]))?);
    }
    wait_voters(&addresses[0], &mut nodes)
        .await
        .context("formation")?;
    let formation = started.elapsed();

    let (leader_id, leader_address) = settle(&addresses, &mut nodes)
        .await
        .context("settle before the kill")?;
    let index = addresses
        .iter()
        .position(|address| *address == leader_address)
        .with_context(|| format!("the leader {leader_address} is none of {addresses:?}"))?;
    let survivors: Vec<String> = addresses
        .iter()
        .filter(|address| **address != leader_address)
        .cloned()
        .collect();

    // Out of the list the survivors are checked in; its guard kills it.
    let mut leader = nodes.remove(index);
    let killed = Instant::now();
    leader.kill();
    let (_, new_leader) = wait_self_leader(&survivors, Some(leader_id), &mut nodes)
        .await
        .context("fail-over")?;
    let failover = killed.elapsed();
    write_until_accepted(&new_leader, &mut nodes)
        .await
        .context("the first write after the fail-over")?;
    let to_write = killed.elapsed();
    drop(nodes);
    Ok(Sample {
        bootstrap,
        formation,
        failover,
        to_write,
    })
}

/// Short bounds: a dead or busy node must not stall a poll.
fn poll_options() -> Options {
    Options {
        connect_timeout: Duration::from_millis(200),
        request_timeout: Duration::from_millis(500),
        ..Options::default()
    }
}

/// Fails when a node process ended by itself (a bind error, a crash): no use waiting.
fn check_alive(nodes: &mut [ChildGuard]) -> Result<()> {
    for node in nodes.iter_mut() {
        if node.has_exited() {
            bail!("{} exited", node.name);
        }
    }
    Ok(())
}

/// Asks `candidates` LEADER every [`POLL`] until one names itself (and is not `dead`);
/// returns its id and address.
async fn wait_self_leader(
    candidates: &[String],
    dead: Option<u64>,
    nodes: &mut [ChildGuard],
) -> Result<(u64, String)> {
    let options = poll_options();
    let mut connections: Vec<Option<Connection>> = candidates.iter().map(|_| None).collect();
    let deadline = Instant::now() + PHASE_LIMIT;
    let mut last = String::from("no answer yet");
    loop {
        for (candidate, slot) in candidates.iter().zip(connections.iter_mut()) {
            if slot.is_none() {
                match Connection::connect(candidate, &options).await {
                    Ok(connection) => *slot = Some(connection),
                    Err(error) => {
                        last = format!("{candidate}: {error}");
                        continue;
                    }
                }
            }
            let Some(connection) = slot.as_mut() else {
                continue;
            };
            match connection.leader().await {
                Ok(Some(leader)) if leader.address == *candidate && Some(leader.id) != dead => {
                    return Ok((leader.id, leader.address));
                }
                Ok(other) => last = format!("{candidate} names {other:?}"),
                Err(error) => {
                    last = format!("{candidate}: {error}");
                    *slot = None;
                }
            }
        }
        check_alive(nodes)?;
        if Instant::now() > deadline {
            bail!("no leader among {candidates:?} within {PHASE_LIMIT:?}: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Asks `address` (node 1, the leader while the cluster forms) CLUSTER every [`POLL`]
/// until 3 voters are listed.
async fn wait_voters(address: &str, nodes: &mut [ChildGuard]) -> Result<()> {
    let options = poll_options();
    let mut connection: Option<Connection> = None;
    let deadline = Instant::now() + PHASE_LIMIT;
    let mut last = String::from("no answer yet");
    loop {
        if connection.is_none() {
            match Connection::connect(address, &options).await {
                Ok(opened) => connection = Some(opened),
                Err(error) => last = error.to_string(),
            }
        }
        if let Some(open) = connection.as_mut() {
            match open.cluster().await {
                Ok(members) => {
                    let voters = members
                        .iter()
                        .filter(|member| member.role == NodeRole::Voter)
                        .count();
                    if voters == 3 {
                        return Ok(());
                    }
                    last = format!("{} members, {voters} voters", members.len());
                }
                Err(error) => {
                    last = error.to_string();
                    connection = None;
                }
            }
        }
        check_alive(nodes)?;
        if Instant::now() > deadline {
            bail!("{address} did not list 3 voters within {PHASE_LIMIT:?}: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until all three nodes name the same leader and it lists 3 voters, creates the
/// table the first write after the fail-over goes to, and lets [`SETTLE`] pass. Returns the
/// leader's id and address.
async fn settle(addresses: &[String], nodes: &mut [ChildGuard]) -> Result<(u64, String)> {
    let options = poll_options();
    let deadline = Instant::now() + PHASE_LIMIT;
    let leader = loop {
        let mut named = Vec::new();
        for address in addresses {
            if let Ok(mut connection) = Connection::connect(address, &options).await {
                if let Ok(Some(leader)) = connection.leader().await {
                    named.push((leader.id, leader.address));
                }
            }
        }
        if named.len() == addresses.len() && named.iter().all(|leader| *leader == named[0]) {
            break named.swap_remove(0);
        }
        check_alive(nodes)?;
        if Instant::now() > deadline {
            bail!("the nodes did not agree on a leader within {PHASE_LIMIT:?}: {named:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut connection = Connection::connect(&leader.1, &options).await?;
    let db = connection.open(DATABASE).await?;
    connection
        .exec(
            db,
            "CREATE TABLE IF NOT EXISTS failover (n INTEGER PRIMARY KEY, at TEXT)",
            &[],
        )
        .await
        .context("create the table")?;
    tokio::time::sleep(SETTLE).await;
    check_alive(nodes)?;
    Ok(leader)
}

/// Retries an INSERT on `address` every [`POLL`] until the node accepts one.
async fn write_until_accepted(address: &str, nodes: &mut [ChildGuard]) -> Result<()> {
    let options = poll_options();
    let deadline = Instant::now() + PHASE_LIMIT;
    let mut connection: Option<(Connection, u32)> = None;
    let mut last = String::from("no attempt yet");
    loop {
        if connection.is_none() {
            match Connection::connect(address, &options).await {
                Ok(mut opened) => match opened.open(DATABASE).await {
                    Ok(db) => connection = Some((opened, db)),
                    Err(error) => last = format!("open: {error}"),
                },
                Err(error) => last = format!("connect: {error}"),
            }
        }
        if let Some((open, db)) = connection.as_mut() {
            let params = [Value::Text("after the fail-over".to_owned())];
            match open
                .exec(*db, "INSERT INTO failover (at) VALUES (?)", &params)
                .await
            {
                Ok(_) => return Ok(()),
                Err(error) => {
                    last = format!("exec: {error}");
                    connection = None;
                }
            }
        }
        check_alive(nodes)?;
        if Instant::now() > deadline {
            bail!("{address} accepted no write within {PHASE_LIMIT:?}: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Starts one node of `kind` in `dir` at `address`, joining through `join` (none: it
/// bootstraps). Its output goes to `dir/log`.
fn spawn_node(kind: Kind, dir: &Path, address: &str, join: Option<&str>) -> Result<ChildGuard> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let log = File::create(dir.join("log")).context("create a node log")?;
    let mut command = match kind.node_mode() {
        None => {
            let ip = address.split(':').next().unwrap_or_default();
            let mut command = Command::new("dqlite-demo");
            command
                .args(["--db", address, "--api", &format!("{ip}:8001")])
                .arg("--dir")
                .arg(dir);
            if let Some(join) = join {
                command.args(["--join", join]);
            }
            command
        }
        Some(mode) => {
            let exe = std::env::current_exe().context("the benchmark knows its path")?;
            let mut command = Command::new(exe);
            command
                .env(NODE_MODE, mode)
                .arg(dir)
                .arg(address)
                .args(join);
            command
        }
    };
    let child = command
        // Our nodes stop when their standard input closes: the pipe lives as long as the
        // guard, so they also end with this benchmark.
        .stdin(Stdio::piped())
        .stdout(log.try_clone().context("clone the node log")?)
        .stderr(log)
        .spawn()
        .with_context(|| {
            format!(
                "start {} at {address} (apt-get install go-dqlite)",
                kind.name()
            )
        })?;
    Ok(ChildGuard::new(
        &format!("{} {address}", kind.slug()),
        child,
    ))
}

/// This binary as one of our nodes: `<dir> <address> [peer]`, [`LIBDQLITE_TIMERS`] or the
/// network latency in ms in [`NODE_MODE`]. Prints `ready <id>` once a member, then runs
/// until its standard input closes or it is killed.
fn node_process(mode: &str) -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, address, peers @ ..] = args.as_slice() else {
        eprintln!("node mode: <dir> <address> [peer]...");
        return 2;
    };
    let mut config = AppConfig::new(dir, address);
    if mode == LIBDQLITE_TIMERS {
        config.node.libdqlite_timers = true;
        config.node.network_latency = EQUAL_TIMERS_LATENCY;
    } else {
        match mode.parse::<u64>() {
            Ok(millis) => config.node.network_latency = Duration::from_millis(millis),
            Err(error) => {
                eprintln!("node mode: {NODE_MODE}={mode}: {error}");
                return 2;
            }
        }
    }
    config.peers = peers.to_vec();
    config.role_interval = ROLE_INTERVAL;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("node: {error}");
            return 1;
        }
    };
    let outcome = runtime.block_on(async {
        let app = App::start(config).await?;
        app.ready(Duration::from_secs(30)).await?;
        println!("ready {}", app.id());
        let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
        Ok::<_, dqlite::app::AppError>(app)
    });
    match outcome {
        // Killed before this in the benchmark; no hand-over needed.
        Ok(_app) => 0,
        Err(error) => {
            eprintln!("node: {error}");
            1
        }
    }
}

/// Median, min and max in ms of one measure over the rounds.
#[derive(Debug, Clone, Copy)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

fn stats(values: &[Duration]) -> Option<Stats> {
    let mut sorted: Vec<f64> = values.iter().map(|value| millis(*value)).collect();
    sorted.sort_by(f64::total_cmp);
    let (first, last) = (sorted.first()?, sorted.last()?);
    let middle = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    };
    Some(Stats {
        median,
        min: *first,
        max: *last,
    })
}

/// One measure of a sample: its name and how to read it.
type Measure = (&'static str, fn(&Sample) -> Duration);

const MEASURES: [Measure; 4] = [
    ("bootstrap (spawn -> node 1 leads)", |s| s.bootstrap),
    ("formation (spawn -> 3 voters)", |s| s.formation),
    ("fail-over (SIGKILL -> new leader)", |s| s.failover),
    ("fail-over to a write", |s| s.to_write),
];

fn measure_stats(samples: &[(Kind, Sample)], kind: Kind, index: usize) -> Option<Stats> {
    let pick = MEASURES[index].1;
    let values: Vec<Duration> = samples
        .iter()
        .filter(|(of, _)| *of == kind)
        .map(|(_, sample)| pick(sample))
        .collect();
    stats(&values)
}

fn print_report(samples: &[(Kind, Sample)]) {
    for kind in Kind::ALL {
        let (election, heartbeat) = kind.timers();
        let rounds = samples.iter().filter(|(of, _)| *of == kind).count();
        println!(
            "{} (election timeout {} ms, heartbeat {} ms), {rounds} round(s):",
            kind.name(),
            election.as_millis(),
            heartbeat.as_millis()
        );
        println!(
            "  {:<36} {:>9} {:>9} {:>9}",
            "measure", "median ms", "min ms", "max ms"
        );
        for (index, (name, _)) in MEASURES.iter().enumerate() {
            match measure_stats(samples, kind, index) {
                Some(s) => println!(
                    "  {name:<36} {:>9.0} {:>9.0} {:>9.0}",
                    s.median, s.min, s.max
                ),
                None => println!("  {name:<36} {:>9} {:>9} {:>9}", "-", "-", "-"),
            }
        }
    }
    println!("ratios of the medians to (a) go-dqlite dqlite-demo:");
    println!(
        "  {:<42} {:>10} {:>10} {:>10} {:>10}",
        "cluster", "bootstrap", "formation", "fail-over", "to write"
    );
    for kind in [Kind::OursEqualTimers, Kind::OursProduction] {
        let ratios: Vec<String> = (0..MEASURES.len())
            .map(|index| {
                ratio(
                    measure_stats(samples, kind, index),
                    measure_stats(samples, Kind::GoDemo, index),
                )
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"))
            })
            .collect();
        println!(
            "  {:<42} {:>10} {:>10} {:>10} {:>10}",
            kind.name(),
            ratios[0],
            ratios[1],
            ratios[2],
            ratios[3]
        );
    }
    println!(
        "settings that differ: (c)'s shorter times come from a setting, not from faster code: \
         its 20 ms network latency gives a 300 ms election timeout and a 30 ms heartbeat \
         where dqlite-demo keeps libdqlite's 3000 ms and 500 ms (raft checks the election \
         timer on its heartbeat tick, and formation's promotions shorten with the heartbeat \
         too). (b) runs our code at dqlite-demo's raft \
         timers (3000 ms, 500 ms). Between (b) and (a) these still differ: roles by our app \
         layer (a review every 200 ms; the joiner's own first review promotes) against \
         go-dqlite's app (the joiner promotes itself and another node once it sees 3 \
         members; a review every 30 s); raft's outgoing connections by our bounded connect \
         (non-blocking, TCP_NODELAY) against go-dqlite's Go dialer; our node processes are \
         this Rust binary, dqlite-demo's a Go program (process start counts in formation)."
    );
    let lines = [
        (
            1,
            Kind::OursEqualTimers,
            "formation of 3 nodes (spawn -> 3 voters), ours at dqlite-demo's raft timers vs dqlite-demo",
            "same timers",
        ),
        (
            2,
            Kind::OursEqualTimers,
            "fail-over after kill -9 of the leader (-> new leader), ours at dqlite-demo's raft timers vs dqlite-demo",
            "same timers",
        ),
        (
            1,
            Kind::OursProduction,
            "formation of 3 nodes (spawn -> 3 voters), ours at 20 ms latency vs dqlite-demo",
            "setting, not speed",
        ),
        (
            2,
            Kind::OursProduction,
            "fail-over after kill -9 of the leader (-> new leader), ours at 20 ms latency (300 ms election timeout) vs dqlite-demo (3000 ms)",
            "setting, not speed; target < 1 s",
        ),
    ];
    for (index, kind, measure, note) in lines {
        let ours = measure_stats(samples, kind, index);
        let anchor = measure_stats(samples, Kind::GoDemo, index);
        let show = |stats: Option<Stats>| {
            stats.map_or_else(|| "-".to_owned(), |s| format!("{:.0} ms", s.median))
        };
        let ratio = ratio(ours, anchor).map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"));
        println!(
            "summary: {measure} | {} | {} | {ratio} ({note})",
            show(ours),
            show(anchor)
        );
    }
}

fn ratio(ours: Option<Stats>, anchor: Option<Stats>) -> Option<f64> {
    Some(ours?.median / anchor?.median)
}
