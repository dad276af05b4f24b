//! Benchmark of `dqlite::client` against go-dqlite's `dqlite-benchmark` on one 3-node cluster
//! of this crate's nodes on loopback: same workload, same concurrency, one after the other.
//!
//! ```text
//! cargo bench -p dqlite --bench client
//! DQLITE_BENCH_SECONDS=20 DQLITE_BENCH_WORKERS=4 cargo bench -p dqlite --bench client
//! ```
//!
//! The cluster: three [`dqlite::node::Node`]s in this process (127.12.9.1-3), joined with the
//! client's ADD and ASSIGN, plus one stand-by at 127.12.9.4. The Go driver is itself a node:
//! during its run it is that stand-by (it joins and promotes itself, runs its workload and
//! exits); during ours a node of this crate is. Order: Rust for half the time, Go, Rust for
//! the other half, so that neither gets the emptier database to itself. Workload
//! (dqlite-benchmark's `kvreadwrite`): each worker inserts
//! `INSERT OR REPLACE INTO model(key, value)` rows with random keys, or (half of the time,
//! once it has keys) reads one of its own keys back with `SELECT value FROM model WHERE key =
//! ?`. Prints operations and successful writes per second, p50/p99 latency for both and
//! their ratio; asserts nothing about speed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use dqlite::client::{Client, Options};
use dqlite::node::{generate_node_id, Node, NodeOptions, BOOTSTRAP_ID};
use dqlite::wire::Value;
use dqlite::NodeRole;

const KEY_SIZE: usize = 32;
const VALUE_SIZE: usize = 128;
const NODE_IPS: [&str; 3] = ["127.12.9.1", "127.12.9.2", "127.12.9.3"];
/// The Go driver's node, then our stand-by in its place.
const STAND_BY: &str = "127.12.9.4:9001";
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS model (key TEXT, value TEXT, UNIQUE(key))";
const READ_SQL: &str = "SELECT value FROM model WHERE key = ?";
const WRITE_SQL: &str = "INSERT OR REPLACE INTO model(key, value) VALUES(?, ?)";

fn main() {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    if let Err(error) = runtime.block_on(run()) {
        eprintln!("client benchmark failed: {error:#}");
        std::process::exit(1);
    }
}

/// What one benchmark run measured.
#[derive(Default)]
struct Measured {
    writes: Vec<Duration>,
    reads: Vec<Duration>,
    errors: usize,
    /// A few distinct error messages, to print.
    error_samples: Vec<String>,
    elapsed: Duration,
}

impl Measured {
    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.error_samples.len() < 3 && !self.error_samples.contains(&message) {
            self.error_samples.push(message);
        }
    }
}

impl Measured {
    fn ops_per_second(&self) -> f64 {
        (self.writes.len() + self.reads.len()) as f64 / self.elapsed.as_secs_f64()
    }

    fn all(&self) -> Vec<Duration> {
        let mut all: Vec<Duration> = self.writes.iter().chain(&self.reads).copied().collect();
        all.sort();
        all
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn run() -> Result<()> {
    let seconds: u64 = env_number("DQLITE_BENCH_SECONDS", 10)?;
    // dqlite-benchmark's default concurrency. With more workers the writers contend for the
    // database's write lock (libdqlite 1.11 commits one write at a time): go-dqlite reports
    // "database is locked" as an error and moves on (so its successful operations are mostly
    // reads), while our writers take turns and every write succeeds. Compare writes/s, not
    // ops/s, at more than one worker.
    let workers: usize = env_number("DQLITE_BENCH_WORKERS", 1)?;
    let duration = Duration::from_secs(seconds);
    let dir = tempfile::tempdir().context("create a temp dir")?;

    if seconds < 2 {
        bail!("DQLITE_BENCH_SECONDS must be at least 2");
    }
    let (mut nodes, addresses) = start_cluster(dir.path()).await?;
    let result = compare(dir.path(), &addresses, &mut nodes, duration, workers).await;
    // Stopping a node blocks until its thread ends: off the runtime threads.
    tokio::task::spawn_blocking(move || drop(nodes))
        .await
        .context("stop the nodes")?;
    result
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

/// Starts three nodes of this crate: the first bootstraps, the others are added and made
/// voters through the client.
async fn start_cluster(dir: &Path) -> Result<(Vec<Node>, Vec<String>)> {
    let addresses: Vec<String> = NODE_IPS.iter().map(|ip| format!("{ip}:9001")).collect();
    let mut nodes = Vec::new();
    for (index, address) in addresses.iter().enumerate() {
        let id = if index == 0 {
            BOOTSTRAP_ID
        } else {
            generate_node_id(address)
        };
        nodes.push(start_node(dir, index + 1, id, address).await?);
    }
    let mut client = Client::connect_leader(&addresses[..1], Options::default())
        .await
        .context("find the bootstrapped leader")?;
    for node in &nodes[1..] {
        client
            .add(node.id(), node.address())
            .await
            .with_context(|| format!("add {}", node.address()))?;
        client
            .assign(node.id(), NodeRole::Voter)
            .await
            .with_context(|| format!("promote {}", node.address()))?;
    }
    Ok((nodes, addresses))
}

/// Creates and starts node `id` (blocking calls, off the runtime threads).
async fn start_node(dir: &Path, number: usize, id: u64, address: &str) -> Result<Node> {
    let data_dir = dir.join(format!("node{number}"));
    let address = address.to_owned();
    tokio::task::spawn_blocking(move || -> Result<Node> {
        let mut node = Node::new(id, &address, &data_dir, &NodeOptions::default())
            .with_context(|| format!("create node {id} at {address}"))?;
        node.start().with_context(|| format!("start node {id}"))?;
        Ok(node)
    })
    .await
    .context("start a node")?
}

/// Starts a node of ours at [`STAND_BY`] and makes it a stand-by.
async fn add_stand_by(client: &mut Client, dir: &Path, number: usize) -> Result<Node> {
    let node = start_node(dir, number, generate_node_id(STAND_BY), STAND_BY).await?;
    client
        .add(node.id(), STAND_BY)
        .await
        .context("add our stand-by")?;
    client
        .assign(node.id(), NodeRole::StandBy)
        .await
        .context("make our node a stand-by")?;
    Ok(node)
}

/// Removes the member at `address` from the configuration and returns the role it had.
async fn remove_member_at(client: &mut Client, address: &str) -> Result<NodeRole> {
    let members = client.cluster().await.context("list the cluster")?;
    let member = members
        .iter()
        .find(|n| n.address == address)
        .with_context(|| format!("no member at {address}"))?;
    client
        .remove(member.id)
        .await
        .with_context(|| format!("remove the member at {address}"))?;
    Ok(member.role)
}

/// Runs dqlite-benchmark as a driver node at [`STAND_BY`] that joins the cluster, and reads
/// its results.
async fn run_go(
    dir: &Path,
    addresses: &[String],
    duration: Duration,
    workers: usize,
) -> Result<Measured> {
    let go_dir = dir.join("go");
    let log_path = dir.join("go.log");
    let log = std::fs::File::create(&log_path).context("create go.log")?;
    let mut go = GoDriver(
        Command::new("dqlite-benchmark")
            .args(["--db", STAND_BY, "--driver", "--workload", "kvreadwrite"])
            .arg("--join")
            .arg(addresses.join(","))
            .arg("--cluster")
            .arg(addresses.join(","))
            .arg("--dir")
            .arg(&go_dir)
            .arg("--duration")
            .arg(duration.as_secs().to_string())
            .arg("--workers")
            .arg(workers.to_string())
            .arg("--key-size")
            .arg(KEY_SIZE.to_string())
            .arg("--value-size")
            .arg(VALUE_SIZE.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("clone go.log")?)
            .stderr(log)
            .spawn()
            .context("run dqlite-benchmark (apt-get install go-dqlite)")?,
    );
    let deadline = Instant::now() + duration + Duration::from_secs(120);
    loop {
        if let Some(status) = go.0.try_wait().context("wait for dqlite-benchmark")? {
            if !status.success() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("dqlite-benchmark failed ({status}): {log}");
            }
            break;
        }
        if Instant::now() > deadline {
            bail!("dqlite-benchmark did not finish in time");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    read_go_results(&go_dir.join(STAND_BY).join("results"), duration)
}

/// Kills the Go driver on drop, whatever happens.
struct GoDriver(Child);

impl Drop for GoDriver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn compare(
    dir: &Path,
    addresses: &[String],
    nodes: &mut Vec<Node>,
    duration: Duration,
    workers: usize,
) -> Result<()> {
    // Rust, Go, Rust (half the time each for Rust), so that neither client gets the
    // emptier or the fuller log and database to itself.
    let mut client = Client::connect_leader(addresses, Options::default()).await?;
    let stand_by = add_stand_by(&mut client, dir, 4).await?;
    let mut ours = run_ours(addresses, duration / 2, workers).await?;
    remove_member_at(&mut client, STAND_BY).await?;
    tokio::task::spawn_blocking(move || drop(stand_by))
        .await
        .context("stop our stand-by")?;

    let theirs = run_go(dir, addresses, duration, workers).await?;
    let go_role = remove_member_at(&mut client, STAND_BY).await?;

    nodes.push(add_stand_by(&mut client, dir, 5).await?);
    let second = run_ours(addresses, duration / 2, workers).await?;
    ours.writes.extend(second.writes);
    ours.reads.extend(second.reads);
    ours.errors += second.errors;
    ours.error_samples.extend(second.error_samples);
    ours.elapsed += second.elapsed;

    println!(
        "dqlite client benchmark: kvreadwrite (half inserts, half point reads; {KEY_SIZE}-byte \
         keys, {VALUE_SIZE}-byte values), {workers} workers, {} s per client",
        duration.as_secs()
    );
    println!(
        "cluster: 3 voters of this crate's Node (libdqlite, 20 ms latency) on {}, plus one \
         stand-by at {STAND_BY} (the Go driver's own node, a {go_role}, during its run; one of \
         ours during ours); Rust, Go, Rust (half the time each)",
        addresses.join(" ")
    );
    println!(
        "{:<22} {:>7} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>9} {:>9} {:>7}",
        "client (ms)",
        "ops/s",
        "writes/s",
        "p50",
        "p99",
        "mean",
        "write p50",
        "write p99",
        "read p50",
        "read p99",
        "errors"
    );
    for (name, m) in [
        ("rust dqlite::client", &ours),
        ("go dqlite-benchmark", &theirs),
    ] {
        let mut writes = m.writes.clone();
        writes.sort();
        let mut reads = m.reads.clone();
        reads.sort();
        let all = m.all();
        let mean =
            all.iter().sum::<Duration>() / u32::try_from(all.len().max(1)).unwrap_or(u32::MAX);
        println!(
            "{:<22} {:>7.0} {:>8.0} {:>8.3} {:>8.3} {:>8.3} {:>10.3} {:>10.3} {:>9.3} {:>9.3} {:>7}",
            name,
            m.ops_per_second(),
            m.writes.len() as f64 / m.elapsed.as_secs_f64(),
            ms(percentile(&all, 0.50)),
            ms(percentile(&all, 0.99)),
            ms(mean),
            ms(percentile(&writes, 0.50)),
            ms(percentile(&writes, 0.99)),
            ms(percentile(&reads, 0.50)),
            ms(percentile(&reads, 0.99)),
            m.errors
        );
        for sample in &m.error_samples {
            println!("    {name} error: {sample}");
        }
    }
    let throughput = ours.ops_per_second() / theirs.ops_per_second();
    let p99 = ms(percentile(&ours.all(), 0.99)) / ms(percentile(&theirs.all(), 0.99));
    println!(
        "ratio rust/go: throughput {throughput:.2}x (target >= 1.2x), p99 latency {p99:.2}x \
         (target <= 1.0x)"
    );
    // One line each for scripts/bench.sh's table.
    println!(
        "summary: client ops/s on our nodes, ours vs go-dqlite's client | {:.0} | {:.0} | {throughput:.2}x (target >= 1.2x)",
        ours.ops_per_second(),
        theirs.ops_per_second()
    );
    println!(
        "summary: client p99 ms on our nodes, ours vs go-dqlite's client | {:.2} | {:.2} | {p99:.2}x (target <= 1.0x)",
        ms(percentile(&ours.all(), 0.99)),
        ms(percentile(&theirs.all(), 0.99))
    );
    Ok(())
}

async fn run_ours(addresses: &[String], duration: Duration, workers: usize) -> Result<Measured> {
    let mut setup = Client::connect_leader(addresses, Options::default()).await?;
    setup
        .exec("rust-benchmark", SCHEMA, &[])
        .await
        .context("create the table")?;
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let client = Client::connect_leader(addresses, Options::default()).await?;
        tasks.spawn(work(client, worker as u64, deadline));
    }
    let mut total = Measured::default();
    while let Some(measured) = tasks.join_next().await {
        let measured = measured.context("a worker panicked")?;
        total.writes.extend(measured.writes);
        total.reads.extend(measured.reads);
        total.errors += measured.errors;
        for sample in measured.error_samples {
            if total.error_samples.len() < 3 && !total.error_samples.contains(&sample) {
                total.error_samples.push(sample);
            }
        }
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

/// One worker: dqlite-benchmark's kvreadwrite loop.
async fn work(mut client: Client, worker: u64, deadline: Instant) -> Measured {
    let mut random = Random::new(worker);
    let mut keys: Vec<String> = Vec::new();
    let mut measured = Measured::default();
    while Instant::now() < deadline {
        let read = random.below(2) == 0 && !keys.is_empty();
        let started = Instant::now();
        if read {
            let key = keys[random.below(keys.len() as u64) as usize].clone();
            match client
                .query("rust-benchmark", READ_SQL, &[Value::Text(key)])
                .await
            {
                Ok(rows) if rows.rows.len() == 1 => measured.reads.push(started.elapsed()),
                Ok(rows) => measured.error(format!("read {} rows, not 1", rows.rows.len())),
                Err(error) => measured.error(error.to_string()),
            }
        } else {
            let key = random.text(KEY_SIZE);
            let value = random.value(VALUE_SIZE);
            let params = [Value::Text(key.clone()), Value::Text(value)];
            match client.exec("rust-benchmark", WRITE_SQL, &params).await {
                Ok(_) => {
                    measured.writes.push(started.elapsed());
                    keys.push(key);
                }
                Err(error) => measured.error(error.to_string()),
            }
        }
    }
    measured
}

/// xorshift64*: enough randomness for keys, without a dependency.
struct Random(u64);

impl Random {
    fn new(worker: u64) -> Random {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Random((nanos ^ (worker + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn letter(&mut self) -> char {
        const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        char::from(LETTERS[self.below(LETTERS.len() as u64) as usize])
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

/// Reads dqlite-benchmark's result files: `<worker>-<exec|query>-<time>`, each with
/// `n_err <count>` and, after the `measurements` line, `<start ns> <milliseconds>` lines.
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
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let is_write = name.contains("-exec-");
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let mut in_measurements = false;
        let mut in_errors = false;
        for line in text.lines() {
            if let Some(count) = line.strip_prefix("n_err ") {
                measured.errors += count.trim().parse::<usize>().unwrap_or(0);
            } else if line.starts_with("measurements") {
                in_measurements = true;
            } else if line.starts_with("errors") {
                in_measurements = false;
                in_errors = true;
            } else if in_errors && !line.trim().is_empty() {
                // `<start ns> <message>`: the count came from `n_err`.
                let message = line.split_once(' ').map_or(line, |(_, m)| m).to_owned();
                if measured.error_samples.len() < 3 && !measured.error_samples.contains(&message) {
                    measured.error_samples.push(message);
                }
            } else if in_measurements {
                let Some(millis) = line.split_whitespace().nth(1) else {
                    continue;
                };
                let millis: f64 = millis
                    .parse()
                    .with_context(|| format!("a latency in {}: {line:?}", path.display()))?;
                let latency = Duration::from_secs_f64(millis / 1000.0);
                if is_write {
                    measured.writes.push(latency);
                } else {
                    measured.reads.push(latency);
                }
            }
        }
    }
    Ok(measured)
}
