//! What mutual TLS costs: writes/s and p50/p99 of clusters of 1, 3, 5 and 7 of this crate's
//! nodes (`DQLITE_TLS_SIZES`, default `1,3,5,7`) in plaintext (libdqlite listens itself) and
//! with mutual TLS (forwarding listener, TLS on every raft and client connection), and at 3
//! nodes also in plaintext through the crate's forwarding listener (IPv6 loopback: the
//! proxy's own cost), driven by `dqlite::client` (kvwrite: 32-byte keys, 1024-byte values,
//! one writer). go-dqlite's `dqlite-benchmark` and `dqlite-demo` have no TLS flags, so the
//! comparison is ours against ours. At each size the clusters run side by side and are
//! measured in interleaved rounds (plain, [forwarded,] TLS, plain, ...), so that the load of
//! the shared machine falls on all alike; the medians of the rounds are compared.
//!
//! ```text
//! flock /tmp/net-tests.lock cargo bench -p dqlite --bench tls_cost
//! DQLITE_BENCH_SECONDS=3 DQLITE_BENCH_ROUNDS=5 flock /tmp/net-tests.lock cargo bench -p dqlite --bench tls_cost
//! ```
//!
//! Each node is this binary re-run as a node process (`DQLITE_TLS_BENCH_NODE`): a
//! `dqlite::app::App` with the crate's defaults (20 ms network latency, bounded raft
//! connect with `TCP_NODELAY`). Addresses: 127.13.210.1-7 (plain), [::1]:41211-41213
//! (forwarded), 127.13.211.1-7 (TLS). Asserts nothing about speed.

use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use dqlite::app::{App, AppConfig};
use dqlite::client::{Client, Options};
use dqlite::tls::Tls;
use dqlite::wire::Value;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

const KEY_SIZE: usize = 32;
const VALUE_SIZE: usize = 1024;
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS model (key TEXT, value TEXT, UNIQUE(key))";
const WRITE_SQL: &str = "INSERT OR REPLACE INTO model(key, value) VALUES(?, ?)";
/// Set when this binary runs as a node: `plain` or `tls`.
const NODE_MODE: &str = "DQLITE_TLS_BENCH_NODE";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Forwarded,
    Tls,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Plain, Kind::Forwarded, Kind::Tls];

    fn name(self) -> &'static str {
        match self {
            Kind::Plain => "plaintext (libdqlite listens)",
            Kind::Forwarded => "plaintext via forwarder (::1)",
            Kind::Tls => "mutual TLS via forwarder",
        }
    }

    fn addresses(self, size: u16) -> Vec<String> {
        match self {
            Kind::Plain => (1..=size).map(|h| format!("127.13.210.{h}:9001")).collect(),
            Kind::Forwarded => (41211..41211 + size)
                .map(|p| format!("[::1]:{p}"))
                .collect(),
            Kind::Tls => (1..=size).map(|h| format!("127.13.211.{h}:9001")).collect(),
        }
    }

    /// The kinds measured at `size` nodes (the forwarder's own cost only at 3: its ports).
    fn at(size: u16) -> Vec<Kind> {
        Kind::ALL
            .into_iter()
            .filter(|&kind| kind != Kind::Forwarded || size == 3)
            .collect()
    }
}

fn main() {
    if let Ok(mode) = std::env::var(NODE_MODE) {
        std::process::exit(node_process(&mode));
    }
    // `cargo bench` passes `--bench`; nothing else to parse.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    if let Err(error) = runtime.block_on(run()) {
        eprintln!("tls_cost: {error:#}");
        std::process::exit(1);
    }
}

/// The bench's CA, node certificates (for `size` TLS nodes) and client certificate, as PEM
/// files in `dir`.
fn write_certificates(dir: &Path, size: u16) -> Result<Tls> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "tls_cost CA");
    ca_params.distinguished_name = name;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    let issue = |ips: &[IpAddr]| -> Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["tls-cost".to_owned()])?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem() + &ca_cert.pem(), key.serialize_pem()))
    };
    for (index, address) in Kind::Tls.addresses(size).iter().enumerate() {
        let ip = address.parse::<std::net::SocketAddr>()?.ip();
        let (chain, key) = issue(&[ip])?;
        let node_dir = dir.join(format!("tls-n{}", index + 1));
        std::fs::create_dir_all(&node_dir)?;
        std::fs::write(node_dir.join("node.pem"), chain)?;
        std::fs::write(node_dir.join("node.key"), key)?;
    }
    let (chain, key) = issue(&[])?;
    Ok(Tls::from_pem(
        ca_cert.pem().as_bytes(),
        chain.as_bytes(),
        key.as_bytes(),
    )?)
}

async fn run() -> Result<()> {
    let seconds: u64 = env_number("DQLITE_BENCH_SECONDS", 3)?;
    let rounds: usize = env_number("DQLITE_BENCH_ROUNDS", 3)?;
    let sizes: Vec<u16> = std::env::var("DQLITE_TLS_SIZES")
        .unwrap_or_else(|_| "1,3,5,7".to_owned())
        .split(',')
        .map(|size| size.trim().parse().context("DQLITE_TLS_SIZES"))
        .collect::<Result<_>>()?;
    if sizes.iter().any(|size| !(1..=7).contains(size)) {
        bail!("DQLITE_TLS_SIZES: sizes from 1 to 7");
    }
    let temp = tempfile::tempdir().context("temp dir")?;
    let mut summaries = Vec::new();
    for size in sizes {
        let dir = temp.path().join(format!("size-{size}"));
        std::fs::create_dir_all(&dir)?;
        summaries.extend(measure_size(&dir, size, seconds, rounds).await?);
    }
    println!(
        "settings: our nodes 20 ms network latency, role review every 200 ms, bounded raft connect (500 ms, TCP_NODELAY); \
         TLS 1.3 (rustls, ring, ECDSA P-256 certificates), client certificates required"
    );
    for line in summaries {
        println!("{line}");
    }
    Ok(())
}

/// One size: its clusters side by side, `rounds` interleaved rounds; prints the table and
/// returns the summary lines.
async fn measure_size(dir: &Path, size: u16, seconds: u64, rounds: usize) -> Result<Vec<String>> {
    let client_tls = write_certificates(dir, size)?;
    let kinds = Kind::at(size);
    let mut clusters = Vec::new();
    for &kind in &kinds {
        clusters.push((kind, start_cluster(dir, kind, size).await?));
    }
    let mut results: Vec<(Kind, Vec<Measured>)> =
        kinds.iter().map(|&kind| (kind, Vec::new())).collect();
    for _ in 0..rounds {
        for (kind, measured) in &mut results {
            let tls = (*kind == Kind::Tls).then(|| client_tls.clone());
            measured.push(
                write_for(&kind.addresses(size), tls, Duration::from_secs(seconds))
                    .await
                    .with_context(|| kind.name())?,
            );
        }
    }
    drop(clusters);
    println!(
        "mutual TLS cost: {size} node(s), kvwrite (32-byte keys, 1024-byte values), dqlite::client, 1 writer, \
         {rounds} interleaved rounds of {seconds} s, loopback"
    );
    println!(
        "{:<32} {:>9} {:>8} {:>8} {:>7}   rounds (w/s)",
        "cluster", "w/s", "p50 ms", "p99 ms", "errors"
    );
    let mut medians = Vec::new();
    for (kind, measured) in &results {
        let median = |f: &dyn Fn(&Measured) -> f64| {
            let mut values: Vec<f64> = measured.iter().map(f).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let rate = median(&Measured::per_second);
        let p50 = median(&|m| m.percentile_ms(0.50));
        let p99 = median(&|m| m.percentile_ms(0.99));
        let errors: usize = measured.iter().map(|m| m.errors).sum();
        let each: Vec<String> = measured
            .iter()
            .map(|m| format!("{:.0}", m.per_second()))
            .collect();
        println!(
            "{:<32} {rate:>9.0} {p50:>8.2} {p99:>8.2} {errors:>7}   {}",
            kind.name(),
            each.join(" ")
        );
        for sample in measured.iter().flat_map(|m| &m.error_samples).take(2) {
            println!("    error: {sample}");
        }
        medians.push((*kind, rate, p50, p99));
    }
    let base = medians[0];
    println!("relative to plaintext (libdqlite listens):");
    let mut summaries = Vec::new();
    for (kind, rate, p50, p99) in &medians[1..] {
        println!(
            "{:<32} writes/s {:>6.1}%  p50 {:>6.2}x  p99 {:>6.2}x",
            kind.name(),
            (rate / base.1 - 1.0) * 100.0,
            p50 / base.2,
            p99 / base.3
        );
        if *kind == Kind::Tls {
            summaries.push(format!(
                "summary: TLS cost, writes/s at {size} node(s), mutual TLS vs plaintext (ours) | {rate:.0} | {:.0} | {:+.1}% (target > -15%)",
                base.1,
                (rate / base.1 - 1.0) * 100.0
            ));
            summaries.push(format!(
                "summary: TLS cost, p50/p99 ms at {size} node(s), mutual TLS vs plaintext (ours) | {p50:.2}/{p99:.2} | {:.2}/{:.2} | p99 {:.2}x",
                base.2,
                base.3,
                p99 / base.3
            ));
        }
    }
    Ok(summaries)
}

/// A node process, killed on drop.
struct NodeProcess(Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_cluster(dir: &Path, kind: Kind, size: u16) -> Result<Vec<NodeProcess>> {
    let addresses = kind.addresses(size);
    let mut nodes = Vec::new();
    for (index, address) in addresses.iter().enumerate() {
        let node_dir = match kind {
            Kind::Tls => dir.join(format!("tls-n{}", index + 1)),
            _ => dir.join(format!("{kind:?}-n{}", index + 1)),
        };
        std::fs::create_dir_all(&node_dir)?;
        let exe = std::env::current_exe().context("the benchmark knows its path")?;
        let log = std::fs::File::create(node_dir.join("log"))?;
        let mut child = Command::new(exe)
            .env(NODE_MODE, if kind == Kind::Tls { "tls" } else { "plain" })
            .arg(&node_dir)
            .arg(address)
            .args(if index == 0 { &[][..] } else { &addresses[..1] })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("start a node")?;
        let stdout = child.stdout.take().context("node stdout")?;
        let node = NodeProcess(child);
        let (send, receive) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        match receive.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.starts_with("ready ") => {}
            other => bail!(
                "{} node {address}: no ready line ({other:?}); see {}",
                kind.name(),
                node_dir.join("log").display()
            ),
        }
        nodes.push(node);
    }
    Ok(nodes)
}

/// This binary as a node: `<dir> <address> [peer]...`; with `tls`, `<dir>/node.pem`,
/// `<dir>/node.key` and `<dir>/../ca.pem`. Prints `ready <id>` once it is ready (`App::ready`),
/// then runs until killed.
fn node_process(mode: &str) -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, address, peers @ ..] = args.as_slice() else {
        eprintln!("node mode: <dir> <address> [peer]...");
        return 2;
    };
    let mut config = AppConfig::new(dir, address);
    config.peers = peers.to_vec();
    config.role_interval = Duration::from_millis(200);
    if mode == "tls" {
        let dir = Path::new(dir);
        let parent = dir.parent().unwrap_or(dir);
        match Tls::from_files(
            &parent.join("ca.pem"),
            &dir.join("node.pem"),
            &dir.join("node.key"),
        ) {
            Ok(tls) => config.node.tls = Some(tls),
            Err(error) => {
                eprintln!("node: {error}");
                return 1;
            }
        }
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
        Ok(_app) => 0,
        Err(error) => {
            eprintln!("node: {error}");
            1
        }
    }
}

#[derive(Default)]
struct Measured {
    writes: Vec<Duration>,
    errors: usize,
    error_samples: Vec<String>,
    elapsed: Duration,
}

impl Measured {
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

/// Writes for `duration` through one client; waits first until every node is a member and
/// the cluster has its voters (one for a lone node, else three: the role plan's target).
async fn write_for(addresses: &[String], tls: Option<Tls>, duration: Duration) -> Result<Measured> {
    let wanted = if addresses.len() < 3 { 1 } else { 3 };
    let options = Options {
        tls,
        ..Options::default()
    };
    let mut client = Client::connect_leader(addresses, options).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let members = client.cluster().await?;
        let voters = members
            .iter()
            .filter(|member| member.role == dqlite::NodeRole::Voter)
            .count();
        if voters == wanted && members.len() == addresses.len() {
            break;
        }
        if Instant::now() > deadline {
            bail!("no {wanted} voters within 60 s: {members:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
        .exec("tls-cost", SCHEMA, &[])
        .await
        .context("create the table")?;
    let mut random = Random::new();
    let mut measured = Measured::default();
    let started = Instant::now();
    while started.elapsed() < duration {
        let params = [
            Value::Text(random.text(KEY_SIZE)),
            Value::Text(random.text(VALUE_SIZE)),
        ];
        let write_started = Instant::now();
        match client.exec("tls-cost", WRITE_SQL, &params).await {
            Ok(_) => measured.writes.push(write_started.elapsed()),
            Err(error) => {
                measured.errors += 1;
                if measured.error_samples.len() < 2 {
                    measured.error_samples.push(error.to_string());
                }
            }
        }
    }
    measured.elapsed = started.elapsed();
    Ok(measured)
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match std::env::var(name) {
        Ok(text) => text.parse().with_context(|| format!("{name}={text:?}")),
        Err(_) => Ok(default),
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

    fn text(&mut self, len: usize) -> String {
        const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        (0..len)
            .map(|_| char::from(LETTERS[(self.next() % LETTERS.len() as u64) as usize]))
            .collect()
    }
}
