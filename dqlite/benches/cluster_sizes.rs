//! Write throughput and latency of clusters of 1, 3, 5 and 7 nodes on loopback, measured with
//! go-dqlite's `dqlite-benchmark` (kvwrite, 1 worker) against three kinds of cluster in one
//! interleaved run: this crate's nodes with the bounded raft connect (`TCP_NODELAY`), this
//! crate's nodes with libdqlite 1.11's own connect (`RaftConnect::Libdqlite`, the "before"),
//! and go-dqlite `dqlite-demo` nodes, the anchor. Our `dqlite::client` runs the same
//! workload against each cluster too.
//!
//! ```text
//! flock /tmp/net-tests.lock cargo bench -p dqlite --bench cluster_sizes
//! DQLITE_BENCH_SECONDS=5 DQLITE_BENCH_SIZES=3,5 flock /tmp/net-tests.lock cargo bench -p dqlite --bench cluster_sizes
//! DQLITE_BENCH_ROUNDS=5 DQLITE_BENCH_SIZES=5 flock /tmp/net-tests.lock cargo bench -p dqlite --bench cluster_sizes
//! DQLITE_BENCH_KINDS=ours DQLITE_BENCH_ROUNDS=9 DQLITE_BENCH_SECONDS=6 DQLITE_BENCH_SIZES=5 flock /tmp/net-tests.lock cargo bench -p dqlite --bench cluster_sizes
//! ```
//!
//! `DQLITE_BENCH_KINDS` picks the kinds of cluster beside the anchor (`ours`,
//! `demo-timers`, `libdqlite-connect`; all by default): fewer kinds leave time for more
//! rounds, which a ratio within a few percent of 1.0 needs.
//!
//! With `DQLITE_BENCH_ROUNDS` above 1 every kind runs once per round, each round starting
//! with the next kind, and the ratios are paired round by round and reported as a median
//! with their range: one pass on two shared cores moves by a fifth from run to run.
//!
//! How dqlite-benchmark reaches an existing cluster (go-dqlite 1.11.5,
//! `cmd/dqlite-benchmark`): it is always a go-dqlite `app` node itself; `--join` makes it
//! join the cluster, `--cluster` lists the nodes it waits for before it starts, and
//! `--driver` makes it run the workload through its app's database driver, which sends
//! every statement to the leader. So during the Go run the cluster has one more member:
//! a spare at first, which go-dqlite's app promotes to stand-by when stand-bys are missing;
//! otherwise (beside one node, or with 7 members) this benchmark makes it a stand-by, since a
//! spare gets no log and the driver would wait for a configuration it never sees. Its role
//! is printed. Our client runs first, against the cluster without the driver, and is no
//! member.
//!
//! Each of our nodes is this benchmark binary re-run as a node process (`DQLITE_BENCH_NODE`):
//! a `dqlite::app::App` with the crate's defaults (20 ms network latency: 30 ms heartbeat,
//! 300 ms election timeout; 3 voters, 3 stand-bys). `dqlite-demo` nodes run go-dqlite's app
//! defaults (no latency set: libdqlite's 3 s election timeout; 3 voters, 3 stand-bys; Go's
//! dialer as raft connect function, which sets `TCP_NODELAY`). Each kind of cluster gets
//! its own `/24` in 127.13.0.0/16. Asserts nothing about speed.
//!
//! Measured on the 2-core build machine (loopback, other builds running),
//! `DQLITE_BENCH_SECONDS=3 flock /tmp/net-tests.lock cargo bench -p dqlite --bench cluster_sizes`:
//! see docs/benchmarks.md for the printed table.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use dqlite::app::{App, AppConfig};
use dqlite::client::{Client, Options};
use dqlite::node::RaftConnect;
use dqlite::wire::Value;
use dqlite::{NodeInfo, NodeRole};

const KEY_SIZE: usize = 32;
const VALUE_SIZE: usize = 1024;
const PORT: u16 = 9001;
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS model (key TEXT, value TEXT, UNIQUE(key))";
const WRITE_SQL: &str = "INSERT OR REPLACE INTO model(key, value) VALUES(?, ?)";
/// Set (to `bounded`, `demo-settings` or `libdqlite`) when this binary runs as one of our nodes.
const NODE_MODE: &str = "DQLITE_BENCH_NODE";

/// The three kinds of cluster, in the order each size runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ours,
    /// Ours with libdqlite's own raft timers (3 s election timeout, 500 ms heartbeat), as
    /// dqlite-demo runs, and the App's default role review (1 s): the same raft settings, so
    /// that a difference is the code's, not the timers'.
    OursDemoSettings,
    OursLibdqliteConnect,
    GoDemo,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::Ours,
        Kind::GoDemo,
        Kind::OursDemoSettings,
        Kind::OursLibdqliteConnect,
    ];

    /// The word `DQLITE_BENCH_KINDS` names this kind by.
    fn key(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::OursDemoSettings => "demo-timers",
            Kind::OursLibdqliteConnect => "libdqlite-connect",
            Kind::GoDemo => "dqlite-demo",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Ours => "ours (bounded connect)",
            Kind::OursDemoSettings => "ours (dqlite-demo's timers)",
            Kind::OursLibdqliteConnect => "ours (libdqlite connect)",
            Kind::GoDemo => "go-dqlite dqlite-demo",
        }
    }

    /// The third octet of this kind's addresses for a cluster of `size`.
    fn subnet(self, size: usize) -> usize {
        let base = match self {
            Kind::Ours => 10,
            Kind::OursDemoSettings => 40,
            Kind::OursLibdqliteConnect => 20,
            Kind::GoDemo => 30,
        };
        base + size
    }
}

fn main() {
    if let Ok(mode) = std::env::var(NODE_MODE) {
        std::process::exit(node_process(&mode));
    }
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    if let Err(error) = runtime.block_on(run()) {
        eprintln!("cluster size benchmark failed: {error:#}");
        std::process::exit(1);
    }
}

/// What one workload run measured.
#[derive(Default)]
struct Measured {
    writes: Vec<Duration>,
    errors: usize,
    error_samples: Vec<String>,
    elapsed: Duration,
}

impl Measured {
    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.error_samples.len() < 2 && !self.error_samples.contains(&message) {
            self.error_samples.push(message);
        }
    }

    fn per_second(&self) -> f64 {
        self.writes.len() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        let mut sorted = self.writes.clone();
        sorted.sort();
        if sorted.is_empty() {
            return f64::NAN;
        }
        let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1].as_secs_f64() * 1000.0
    }
}

/// One row of the table: a cluster of one kind and size, measured both ways.
struct Row {
    size: usize,
    kind: Kind,
    /// Which of the `DQLITE_BENCH_ROUNDS` rounds (from 0).
    round: usize,
    go: Measured,
    ours: Measured,
    /// Voters and stand-bys before the Go driver joined, and the driver's role meanwhile.
    roles: String,
    /// CPU the cluster's node processes used during the dqlite-benchmark run (not the
    /// driver's own): on two shared cores, what a write costs the nodes decides throughput.
    nodes_cpu: Option<Duration>,
}

impl Row {
    /// The nodes' CPU milliseconds per write of the dqlite-benchmark run.
    fn cpu_ms_per_write(&self) -> f64 {
        match self.nodes_cpu {
            Some(cpu) if !self.go.writes.is_empty() => {
                cpu.as_secs_f64() * 1000.0 / self.go.writes.len() as f64
            }
            _ => f64::NAN,
        }
    }
}

async fn run() -> Result<()> {
    let seconds: u64 = env_number("DQLITE_BENCH_SECONDS", 3)?;
    if seconds < 1 {
        bail!("DQLITE_BENCH_SECONDS must be at least 1");
    }
    let sizes: Vec<usize> = match std::env::var("DQLITE_BENCH_SIZES") {
        Ok(text) => text
            .split(',')
            .map(|size| size.trim().parse().context("DQLITE_BENCH_SIZES"))
            .collect::<Result<_>>()?,
        Err(_) => vec![1, 3, 5, 7],
    };
    let rounds: usize = env_number("DQLITE_BENCH_ROUNDS", 1)?;
    if rounds < 1 {
        bail!("DQLITE_BENCH_ROUNDS must be at least 1");
    }
    // The anchor always runs: every ratio is against it.
    let kinds: Vec<Kind> = match std::env::var("DQLITE_BENCH_KINDS") {
        Ok(text) => {
            let named: Vec<&str> = text.split(',').map(str::trim).collect();
            if let Some(unknown) = named
                .iter()
                .find(|name| !Kind::ALL.iter().any(|kind| kind.key() == **name))
            {
                bail!(
                    "DQLITE_BENCH_KINDS: unknown kind {unknown:?} (known: {})",
                    Kind::ALL.map(Kind::key).join(", ")
                );
            }
            Kind::ALL
                .into_iter()
                .filter(|kind| *kind == Kind::GoDemo || named.contains(&kind.key()))
                .collect()
        }
        Err(_) => Kind::ALL.to_vec(),
    };
    let duration = Duration::from_secs(seconds);
    let dir = tempfile::tempdir().context("create a temp dir")?;
    let mut rows = Vec::new();
    for &size in &sizes {
        for round in 0..rounds {
            // Each round starts with another kind, so that no kind always runs first (or
            // right after the same neighbour) and a drift of the machine is shared out.
            let mut order = kinds.clone();
            order.rotate_left(round % kinds.len());
            for kind in order {
                let started = Instant::now();
                let cluster_dir = dir.path().join(format!("{round}-{}", kind.subnet(size)));
                // A cluster that fails is a row saying why; the others still run.
                let mut row = match measure(&cluster_dir, kind, size, duration).await {
                    Ok(row) => row,
                    Err(error) => Row {
                        size,
                        kind,
                        round,
                        go: Measured::default(),
                        ours: Measured::default(),
                        roles: format!("FAILED: {error:#}"),
                        nodes_cpu: None,
                    },
                };
                row.round = round;
                // The next cluster starts on a clean disk: no earlier cluster's files left
                // for the kernel to write back meanwhile.
                let _ = std::fs::remove_dir_all(&cluster_dir);
                eprintln!(
                    "{:>2} x {:<26} round {} done in {:.1} s",
                    size,
                    kind.name(),
                    round + 1,
                    started.elapsed().as_secs_f64()
                );
                rows.push(row);
            }
        }
    }
    print_table(&rows, seconds);
    Ok(())
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match std::env::var(name) {
        Ok(text) => text.parse().with_context(|| format!("{name}={text}")),
        Err(_) => Ok(default),
    }
}

/// Starts a cluster of `kind` and `size`, runs our client then dqlite-benchmark against
/// it, and stops it.
async fn measure(cluster_dir: &Path, kind: Kind, size: usize, duration: Duration) -> Result<Row> {
    let subnet = kind.subnet(size);
    let addresses: Vec<String> = (1..=size)
        .map(|host| format!("127.13.{subnet}.{host}:{PORT}"))
        .collect();
    let mut nodes = Vec::new();
    for (index, address) in addresses.iter().enumerate() {
        let node_dir = cluster_dir.join(format!("n{}", index + 1));
        std::fs::create_dir_all(&node_dir).context("create a node dir")?;
        let peers = if index == 0 { &[][..] } else { &addresses[..1] };
        nodes.push(spawn_node(kind, &node_dir, address, peers)?);
        if index == 0 {
            // Joiners need a leader to join through.
            wait_members(&addresses[..1], 1, Duration::from_secs(30)).await?;
        }
    }
    for node in &mut nodes {
        node.wait_ready(kind)?;
    }
    let members = wait_members(&addresses, size, Duration::from_secs(60)).await?;
    let roles = role_summary(&members);

    let ours = run_ours(&addresses, duration).await?;
    let driver = format!("127.13.{subnet}.100:{PORT}");
    let go_dir = cluster_dir.join("go");
    // A driver left a spare gets no log and so never sees the configuration it waits for
    // (its local CLUSTER answer stays empty, and it waits until its --cluster-timeout):
    // go-dqlite's app promotes itself only while voters or stand-bys are missing in a
    // cluster of at least 3, so not beside one lone node nor with 7 members (3 voters,
    // 3 stand-bys, a spare). The benchmark makes it a stand-by then, and notes its role.
    let role_keeper = {
        let addresses = addresses.clone();
        let driver = driver.clone();
        tokio::spawn(async move {
            let mut roles = Vec::new();
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let Ok(mut client) = Client::connect_leader(&addresses, Options::default()).await
                else {
                    continue;
                };
                let Ok(members) = client.cluster().await else {
                    continue;
                };
                let Some(member) = members.iter().find(|member| member.address == driver) else {
                    continue;
                };
                if member.role == NodeRole::Spare {
                    if client.assign(member.id, NodeRole::StandBy).await.is_ok() {
                        roles.push("spare, made stand-by");
                    }
                } else if roles.is_empty() {
                    roles.push(if member.role == NodeRole::Voter {
                        "voter"
                    } else {
                        "stand-by"
                    });
                }
                if !roles.is_empty() {
                    return roles.join(", ");
                }
            }
        })
    };
    let cpu_before = nodes_cpu(&nodes);
    let go = run_go(&go_dir, &driver, &addresses, &addresses, duration).await?;
    let nodes_cpu = match (cpu_before, nodes_cpu(&nodes)) {
        (Some(before), Some(after)) => after.checked_sub(before),
        _ => None,
    };
    role_keeper.abort();
    let driver_role = match role_keeper.await {
        Ok(role) => role,
        Err(_) => "never seen".to_owned(),
    };
    drop(nodes);
    Ok(Row {
        size,
        kind,
        round: 0,
        go,
        ours,
        roles: format!("{roles}; driver {driver_role}"),
        nodes_cpu,
    })
}

/// The CPU time the node processes have used so far, summed; `None` when one cannot be read
/// (it died: the row's errors then say more).
fn nodes_cpu(nodes: &[NodeProcess]) -> Option<Duration> {
    nodes
        .iter()
        .map(|node| test_support::process::cpu_time(node.child.id()).ok())
        .sum()
}

/// "3v 2s 0p": voters, stand-bys, spares.
fn role_summary(members: &[NodeInfo]) -> String {
    let count = |role| members.iter().filter(|member| member.role == role).count();
    format!(
        "{}v {}s {}p",
        count(NodeRole::Voter),
        count(NodeRole::StandBy),
        count(NodeRole::Spare)
    )
}

/// Waits until the cluster lists `size` members and its roles have settled (as many
/// voters as the apps' target of 3 allows, the rest stand-bys up to 3).
async fn wait_members(addresses: &[String], size: usize, limit: Duration) -> Result<Vec<NodeInfo>> {
    let voters = if size >= 3 { 3 } else { 1 };
    let standbys = (size - voters).min(3);
    let deadline = Instant::now() + limit;
    loop {
        let options = Options {
            retry_timeout: Duration::from_secs(2),
            ..Options::default()
        };
        let last = match Client::connect_leader(addresses, options).await {
            Ok(mut client) => match client.cluster().await {
                Ok(members) => {
                    let count = |role| members.iter().filter(|m| m.role == role).count();
                    if members.len() == size
                        && count(NodeRole::Voter) == voters
                        && count(NodeRole::StandBy) == standbys
                    {
                        return Ok(members);
                    }
                    role_summary(&members)
                }
                Err(error) => error.to_string(),
            },
            Err(error) => error.to_string(),
        };
        if Instant::now() > deadline {
            bail!("the cluster did not settle within {limit:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node process (ours or dqlite-demo), killed on drop.
struct NodeProcess {
    child: Child,
    /// Our nodes' standard output lines (`ready <id>`).
    lines: Option<mpsc::Receiver<String>>,
}

impl NodeProcess {
    /// Waits for our node's `ready` line; dqlite-demo prints none (the membership says).
    fn wait_ready(&mut self, kind: Kind) -> Result<()> {
        let Some(lines) = &self.lines else {
            return Ok(());
        };
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.starts_with("ready ") => Ok(()),
            Ok(line) => bail!("{}: unexpected line {line:?}", kind.name()),
            Err(_) => bail!("{}: no ready line within 30 s", kind.name()),
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_node(kind: Kind, dir: &Path, address: &str, peers: &[String]) -> Result<NodeProcess> {
    let log = std::fs::File::create(dir.join("log")).context("create a node log")?;
    let mut command = match kind {
        Kind::GoDemo => {
            let ip = address.split(':').next().unwrap_or_default();
            let mut command = Command::new("dqlite-demo");
            command
                .args(["--db", address, "--api", &format!("{ip}:8001")])
                .arg("--dir")
                .arg(dir);
            for peer in peers {
                command.args(["--join", peer]);
            }
            command.stdout(log.try_clone().context("clone the log")?);
            command
        }
        Kind::Ours | Kind::OursDemoSettings | Kind::OursLibdqliteConnect => {
            let exe = std::env::current_exe().context("the benchmark knows its path")?;
            let mut command = Command::new(exe);
            let mode = match kind {
                Kind::OursDemoSettings => "demo-settings",
                Kind::OursLibdqliteConnect => "libdqlite",
                _ => "bounded",
            };
            command
                .env(NODE_MODE, mode)
                .arg(dir)
                .arg(address)
                .args(peers)
                .stdout(Stdio::piped());
            command
        }
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("start a {} node (apt-get install go-dqlite)", kind.name()))?;
    let lines = child.stdout.take().map(|stdout| {
        let (send, receive) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        receive
    });
    Ok(NodeProcess { child, lines })
}

/// This binary as one of our nodes: `<dir> <address> [peer]...`. Prints `ready <id>`, then
/// runs until killed (or its standard input closes).
fn node_process(mode: &str) -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, address, peers @ ..] = args.as_slice() else {
        eprintln!("node mode: <dir> <address> [peer]...");
        return 2;
    };
    let mut config = AppConfig::new(dir, address);
    config.peers = peers.to_vec();
    config.role_interval = Duration::from_millis(200);
    match mode {
        "libdqlite" => config.node.raft_connect = RaftConnect::Libdqlite,
        "demo-settings" => {
            config.node.libdqlite_timers = true;
            // The App's default review period (go-dqlite's app: 30 s, plus a review on
            // every join, which a short period stands in for here).
            config.role_interval = AppConfig::new(dir, address).role_interval;
        }
        _ => {}
    }
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

/// Our client: dqlite-benchmark's kvwrite loop (one worker), for `duration`.
async fn run_ours(addresses: &[String], duration: Duration) -> Result<Measured> {
    let mut client = Client::connect_leader(addresses, Options::default()).await?;
    client
        .exec("rust-benchmark", SCHEMA, &[])
        .await
        .context("create the table")?;
    let mut random = Random::new();
    let mut measured = Measured::default();
    let started = Instant::now();
    while started.elapsed() < duration {
        let params = [
            Value::Text(random.text(KEY_SIZE)),
            Value::Text(random.value(VALUE_SIZE)),
        ];
        let write_started = Instant::now();
        match client.exec("rust-benchmark", WRITE_SQL, &params).await {
            Ok(_) => measured.writes.push(write_started.elapsed()),
            Err(error) => measured.error(error.to_string()),
        }
    }
    measured.elapsed = started.elapsed();
    Ok(measured)
}

/// dqlite-benchmark as a driver node at `driver` joining the cluster through `join` (none:
/// it bootstraps its own) and waiting for `cluster`; reads its results.
async fn run_go(
    dir: &Path,
    driver: &str,
    cluster: &[String],
    join: &[String],
    duration: Duration,
) -> Result<Measured> {
    std::fs::create_dir_all(dir).context("create the driver's dir")?;
    let log_path = dir.join("log");
    let log = std::fs::File::create(&log_path).context("create the driver's log")?;
    let mut command = Command::new("dqlite-benchmark");
    if !join.is_empty() {
        command.args(["--join", &join.join(",")]);
    }
    let mut go = NodeProcess {
        child: command
            .args(["--db", driver, "--driver", "--workload", "kvwrite"])
            .args(["--cluster", &cluster.join(",")])
            .arg("--dir")
            .arg(dir)
            .args(["--duration", &duration.as_secs().to_string()])
            .args(["--workers", "1"])
            .args(["--key-size", &KEY_SIZE.to_string()])
            .args(["--value-size", &VALUE_SIZE.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("clone the driver's log")?)
            .stderr(log)
            .spawn()
            .context("run dqlite-benchmark (apt-get install go-dqlite)")?,
        lines: None,
    };
    let deadline = Instant::now() + duration + Duration::from_secs(30);
    loop {
        if let Some(status) = go.child.try_wait().context("wait for dqlite-benchmark")? {
            if !status.success() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("dqlite-benchmark failed ({status}): {log}");
            }
            break;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            bail!(
                "dqlite-benchmark did not finish in time; its log ends: {:?}",
                tail.into_iter().rev().collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    read_go_results(&dir.join(driver).join("results"), duration)
}

/// Reads dqlite-benchmark's result files (`<worker>-exec-<time>`: `n_err <count>`, then
/// after `measurements` one `<start ns> <milliseconds>` line per write).
fn read_go_results(dir: &Path, duration: Duration) -> Result<Measured> {
    let mut measured = Measured {
        elapsed: duration,
        ..Measured::default()
    };
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("list {}", dir.display()))?;
    if entries.is_empty() {
        bail!("dqlite-benchmark wrote no results in {}", dir.display());
    }
    for path in entries {
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let mut section = "";
        for line in text.lines() {
            if let Some(count) = line.strip_prefix("n_err ") {
                measured.errors += count.trim().parse::<usize>().unwrap_or(0);
            } else if line.starts_with("measurements") || line.starts_with("errors") {
                section = if line.starts_with("errors") {
                    "errors"
                } else {
                    "measurements"
                };
            } else if section == "errors" && !line.trim().is_empty() {
                let message = line.split_once(' ').map_or(line, |(_, m)| m).to_owned();
                if measured.error_samples.len() < 2 && !measured.error_samples.contains(&message) {
                    measured.error_samples.push(message);
                }
            } else if section == "measurements" {
                let Some(millis) = line.split_whitespace().nth(1) else {
                    continue;
                };
                let millis: f64 = millis
                    .parse()
                    .with_context(|| format!("a latency in {}: {line:?}", path.display()))?;
                measured
                    .writes
                    .push(Duration::from_secs_f64(millis / 1000.0));
            }
        }
    }
    Ok(measured)
}

fn print_table(rows: &[Row], seconds: u64) {
    println!(
        "dqlite cluster sizes: kvwrite ({KEY_SIZE}-byte keys, {VALUE_SIZE}-byte values), \
         1 worker, {seconds} s per client and cluster, loopback"
    );
    println!(
        "{:>4} {:>5} {:<26} {:>9} {:>8} {:>8} {:>6} {:>8} | {:>9} {:>8} {:>8} {:>6} | roles (before the driver joined; its role)",
        "size", "round", "cluster", "bench w/s", "p50 ms", "p99 ms", "errors", "cpu ms/w", "ours w/s", "p50 ms", "p99 ms", "errors"
    );
    for row in rows {
        println!(
            "{:>4} {:>5} {:<26} {:>9.0} {:>8.2} {:>8.2} {:>6} {:>8.2} | {:>9.0} {:>8.2} {:>8.2} {:>6} | {}",
            row.size,
            row.round + 1,
            row.kind.name(),
            row.go.per_second(),
            row.go.percentile_ms(0.50),
            row.go.percentile_ms(0.99),
            row.go.errors,
            row.cpu_ms_per_write(),
            row.ours.per_second(),
            row.ours.percentile_ms(0.50),
            row.ours.percentile_ms(0.99),
            row.ours.errors,
            row.roles
        );
        for sample in row.go.error_samples.iter().chain(&row.ours.error_samples) {
            println!("       error: {sample}");
        }
    }
    println!(
        "ratios to the anchor (go-dqlite dqlite-demo cluster, same size and round, \
         dqlite-benchmark); median over the rounds [lowest-highest]:"
    );
    println!(
        "{:>4} {:<26} {:>20} {:>20} {:>20} {:>20}",
        "size", "cluster", "writes/s", "p99", "cpu/write", "our client w/s"
    );
    let mut sizes: Vec<usize> = rows.iter().map(|row| row.size).collect();
    sizes.dedup();
    for &size in &sizes {
        for kind in Kind::ALL.into_iter().filter(|&kind| kind != Kind::GoDemo) {
            let ratios = Ratios::of(rows, size, kind);
            if ratios.writes.is_empty() {
                continue;
            }
            println!(
                "{:>4} {:<26} {:>20} {:>20} {:>20} {:>20}",
                size,
                kind.name(),
                spread(&ratios.writes),
                spread(&ratios.p99),
                spread(&ratios.cpu),
                spread(&ratios.our_client),
            );
            // The lines scripts/bench.sh gathers: our nodes against dqlite-demo's, both
            // driven by dqlite-benchmark.
            let ours = match kind {
                Kind::Ours => "our nodes",
                Kind::OursDemoSettings => "our nodes at dqlite-demo's timers",
                _ => continue,
            };
            let rounds = ratios.writes.len();
            println!(
                "summary: kvwrite writes/s, {size} node(s), {ours} vs dqlite-demo (dqlite-benchmark, median of {rounds} round(s)) | {:.0} | {:.0} | {:.2}x (target >= 1.0x)",
                median(&ratios.our_writes),
                median(&ratios.anchor_writes),
                median(&ratios.writes),
            );
            println!(
                "summary: kvwrite p99 ms, {size} node(s), {ours} vs dqlite-demo (dqlite-benchmark, median of {rounds} round(s)) | {:.2} | {:.2} | p99 {:.2}x (target <= 1.0x)",
                median(&ratios.our_p99),
                median(&ratios.anchor_p99),
                median(&ratios.p99),
            );
            if rounds > 1 {
                let our_p99 = ratios.our_pooled.percentile_ms(0.99);
                let anchor_p99 = ratios.anchor_pooled.percentile_ms(0.99);
                println!(
                    "summary: kvwrite p99 ms, {size} node(s), {ours} vs dqlite-demo (dqlite-benchmark, every write of {rounds} rounds pooled) | {our_p99:.2} | {anchor_p99:.2} | p99 {:.2}x (target <= 1.0x)",
                    our_p99 / anchor_p99,
                );
            }
        }
    }
    println!(
        "settings that differ: our nodes 20 ms network latency (300 ms election timeout, 30 ms \
         heartbeat), role review every 200 ms (\"ours (dqlite-demo's timers)\": libdqlite's \
         default timers, as dqlite-demo, and a 1 s role review); dqlite-demo libdqlite's default latency (3 s election timeout), \
         go-dqlite's Go dialer as raft connect (TCP_NODELAY, 5 s timeout, connects serialized \
         by a lock). dqlite-benchmark is a member during its run; our client is not. \
         cpu/write: the nodes' own CPU (user and system, every node process, not the driver) \
         per write of the dqlite-benchmark run."
    );
}

/// One kind's figures against the anchor's, paired round by round (a round runs every kind
/// back to back, so pairing cancels most of the machine's drift between rounds).
#[derive(Default)]
struct Ratios {
    writes: Vec<f64>,
    p99: Vec<f64>,
    cpu: Vec<f64>,
    our_client: Vec<f64>,
    our_writes: Vec<f64>,
    anchor_writes: Vec<f64>,
    our_p99: Vec<f64>,
    anchor_p99: Vec<f64>,
    /// Every write of the paired rounds, pooled: a p99 over all of them is steadier than
    /// any one round's (a 4 s round's p99 is its tenth-slowest write).
    our_pooled: Measured,
    anchor_pooled: Measured,
}

impl Ratios {
    fn of(rows: &[Row], size: usize, kind: Kind) -> Ratios {
        let mut ratios = Ratios::default();
        for row in rows
            .iter()
            .filter(|row| row.size == size && row.kind == kind)
        {
            let Some(anchor) = rows.iter().find(|other| {
                other.kind == Kind::GoDemo && other.size == size && other.round == row.round
            }) else {
                continue;
            };
            if row.go.writes.is_empty() || anchor.go.writes.is_empty() {
                continue;
            }
            ratios
                .writes
                .push(row.go.per_second() / anchor.go.per_second());
            ratios
                .p99
                .push(row.go.percentile_ms(0.99) / anchor.go.percentile_ms(0.99));
            ratios
                .cpu
                .push(row.cpu_ms_per_write() / anchor.cpu_ms_per_write());
            ratios
                .our_client
                .push(row.ours.per_second() / anchor.go.per_second());
            ratios.our_writes.push(row.go.per_second());
            ratios.anchor_writes.push(anchor.go.per_second());
            ratios.our_p99.push(row.go.percentile_ms(0.99));
            ratios.anchor_p99.push(anchor.go.percentile_ms(0.99));
            ratios.our_pooled.writes.extend(&row.go.writes);
            ratios.anchor_pooled.writes.extend(&anchor.go.writes);
        }
        ratios
    }
}

/// The median of `values` (NaN for none, the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// "0.94x [0.82-1.01]": the median ratio and its range over the rounds.
fn spread(ratios: &[f64]) -> String {
    let finite: Vec<f64> = ratios.iter().copied().filter(|v| !v.is_nan()).collect();
    let low = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let high = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match finite.len() {
        0 => "-".to_owned(),
        1 => format!("{:.2}x", finite[0]),
        _ => format!("{:.2}x [{low:.2}-{high:.2}]", median(&finite)),
    }
}

/// xorshift64*: enough randomness for keys, without a dependency.
struct Random(u64);

impl Random {
    fn new() -> Random {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Random(nanos | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn letter(&mut self) -> char {
        const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        char::from(LETTERS[(self.next() % LETTERS.len() as u64) as usize])
    }

    fn text(&mut self, len: usize) -> String {
        (0..len).map(|_| self.letter()).collect()
    }

    /// Like dqlite-benchmark's values: half one repeated letter, half random letters.
    fn value(&mut self, len: usize) -> String {
        let repeated = self.letter().to_string().repeat(len / 2);
        repeated + &self.text(len / 2)
    }
}
