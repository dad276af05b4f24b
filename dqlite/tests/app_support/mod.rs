//! Helpers for the application-layer scenarios: addresses in this suite's loopback range,
//! test configurations, waiting for a condition, child processes that die with the test.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use dqlite::app::{App, AppConfig};
use dqlite::client::Client;
use dqlite::wire::Value;
use dqlite::NodeRole;
pub use test_support::process::ChildGuard;
pub use test_support::rows::{integers, read as all_rows};

/// The address of node `host` in scenario `scenario`: 127.11.(128 + scenario).host:9001,
/// inside the application tests' half (127.11.128.0/17) of the dqlite tests' range, one /24
/// per scenario so that scenarios run in parallel.
pub fn address(scenario: u8, host: u8) -> String {
    assert!(
        scenario < 128,
        "scenario numbers stay inside 127.11.128.0/17"
    );
    format!("127.11.{}.{host}:9001", 128 + u16::from(scenario))
}

/// Held by each in-process scenario for its whole run, so that this binary's scenarios run
/// one at a time. libdqlite 1.11 registers each node's SQLite VFS process-wide under a name
/// made from the node id, and every scenario bootstraps a node 1: two scenarios at once in
/// one process can open each other's databases (seen once: a restarted cluster's node
/// answered "no such table" for a table its own cluster had). Production runs one node per
/// process; the agent's tests guard their in-process clusters the same way.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static SCENARIO: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SCENARIO.lock().await
}

/// A configuration with short timers, so that scenarios stay quick.
pub fn config(dir: &Path, address: &str, peers: &[String]) -> AppConfig {
    let mut config = AppConfig::new(dir, address);
    config.peers = peers.to_vec();
    config.role_interval = Duration::from_millis(100);
    config.join_timeout = Duration::from_secs(15);
    // The default: other builds and tests share the 2 cores, and a request that times out
    // mid-scenario only makes the scenario wait longer.
    config.request_timeout = Duration::from_secs(2);
    config
}

/// Prints the application layer's log to stderr (with the time since the first call) when
/// `DQLITE_APP_LOG` is set, to see what a slow or failing scenario waited for.
pub fn init_logging() {
    struct Stderr(std::time::Instant);
    impl log::Log for Stderr {
        fn enabled(&self, metadata: &log::Metadata) -> bool {
            metadata.target().starts_with("dqlite")
        }
        fn log(&self, record: &log::Record) {
            if self.enabled(record.metadata()) {
                let at = self.0.elapsed().as_secs_f64();
                eprintln!(
                    "{at:8.3} {} {}: {}",
                    record.level(),
                    record.target(),
                    record.args()
                );
            }
        }
        fn flush(&self) {}
    }
    static INIT: std::sync::Once = std::sync::Once::new();
    if std::env::var_os("DQLITE_APP_LOG").is_some() {
        INIT.call_once(|| {
            let logger = Box::leak(Box::new(Stderr(std::time::Instant::now())));
            if log::set_logger(logger).is_ok() {
                log::set_max_level(log::LevelFilter::Debug);
            }
        });
    }
}

/// Starts a node and waits until it is ready.
pub async fn start(dir: &Path, address: &str, peers: &[String]) -> App {
    init_logging();
    let app = App::start(config(dir, address, peers))
        .await
        .expect("the node starts");
    app.ready(Duration::from_secs(15))
        .await
        .expect("the node becomes ready");
    app
}

/// `count` temp dirs, one per node.
pub fn temp_dirs(count: usize) -> Vec<tempfile::TempDir> {
    (0..count)
        .map(|_| tempfile::tempdir().expect("a temp dir"))
        .collect()
}

/// Starts three nodes at `a[..3]` in `dirs[..3]` (the second and third join through the
/// first) and waits until all three are voters.
pub async fn start_three_voters(dirs: &[tempfile::TempDir], a: &[String]) -> (App, App, App) {
    let first = start(dirs[0].path(), &a[0], &[]).await;
    let second = start(dirs[1].path(), &a[1], &a[..1]).await;
    let third = start(dirs[2].path(), &a[2], &a[..1]).await;
    wait_for_roles(
        &first,
        &[
            (&a[0], NodeRole::Voter),
            (&a[1], NodeRole::Voter),
            (&a[2], NodeRole::Voter),
        ],
    )
    .await;
    (first, second, third)
}

/// Polls `probe` every 50 ms until it returns `Some`, failing the test after `limit`
/// with `what` and the last value seen.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("{what}: not reached within {limit:?}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The roles of the cluster's members by address, as `app`'s leader reports them.
pub async fn roles(app: &App) -> Result<BTreeMap<String, NodeRole>, String> {
    let members = app.cluster().await.map_err(|e| format!("{e:#}"))?;
    Ok(members.into_iter().map(|m| (m.address, m.role)).collect())
}

/// Waits until the cluster's roles are exactly `expected`.
pub async fn wait_for_roles(app: &App, expected: &[(&str, NodeRole)]) {
    let expected: BTreeMap<String, NodeRole> =
        expected.iter().map(|(a, r)| (a.to_string(), *r)).collect();
    wait_for("the expected roles", Duration::from_secs(15), || async {
        let roles = roles(app).await?;
        if roles == expected {
            Ok(())
        } else {
            Err(format!("{roles:?}, expected {expected:?}"))
        }
    })
    .await
}

/// Creates the test table and inserts rows `range`. A row is written with `INSERT OR
/// REPLACE`: under CPU load an election can happen mid-write, and the client may then send
/// again a write whose first attempt had committed (seen on 2 cores: "UNIQUE constraint
/// failed"); these scenarios check that no committed row is lost, not exactly-once writes.
pub async fn insert_rows(client: &mut Client, range: std::ops::Range<i64>) {
    test_support::rows::create_table(client).await;
    for n in range {
        client
            .exec(
                "test",
                "INSERT OR REPLACE INTO t (n) VALUES (?)",
                &[Value::Integer(n)],
            )
            .await
            .unwrap_or_else(|e| panic!("row {n} is not inserted: {e:?}"));
    }
}

/// Waits (at most 10 s) until the test table holds exactly `expected`: a leader elected at
/// a restart answers queries once it has applied the log it replays, and until then a
/// query may find no table at all.
pub async fn wait_for_rows(client: &mut Client, expected: &[i64]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = client
            .query("test", "SELECT n FROM t ORDER BY n", &[])
            .await;
        let last = match rows.map(|rows| integers(&rows)) {
            Ok(rows) if rows == expected => return,
            other => format!("{other:?}"),
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "rows never became {expected:?}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `dqlite-node` binary, built by cargo with the tests.
pub const NODE: &str = env!("CARGO_BIN_EXE_dqlite-node");

/// Starts `dqlite-node` for `address` and waits (at most 30 s) for its `ready <id>`
/// line; returns the process and the node id.
pub fn spawn_node(dir: &Path, address: &str, peers: &[String]) -> (ChildGuard, u64) {
    let mut command = Command::new(NODE);
    command
        .arg("--data-dir")
        .arg(dir)
        .args(["--address", address]);
    for peer in peers {
        command.args(["--peer", peer]);
    }
    let mut guard = ChildGuard::spawn(&format!("node {address}"), &mut command);
    let line = guard.wait_for_line("ready ", Duration::from_secs(30));
    let id = line
        .parse()
        .unwrap_or_else(|_| panic!("unexpected ready line from the node: {line:?}"));
    (guard, id)
}

/// Runs a command under `timeout` (the go-dqlite tools retry forever) and returns its
/// standard output; fails the test with its stderr when it fails.
pub fn run_with_timeout(seconds: u32, program: &str, args: &[&str]) -> String {
    let output = Command::new("timeout")
        .arg(seconds.to_string())
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The closed TCP connections (in TIME_WAIT, which lasts a minute) with one end at one of
/// `addresses` (IPv4 `ip:port`), from the kernel's table, as (local, remote) pairs.
pub fn closed_connections(addresses: &[String]) -> std::collections::BTreeSet<(String, String)> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp is readable");
    // Columns: sl, local, remote, state; addresses as hex: the IPv4 address as the kernel
    // holds it (network order) printed as a native integer, then the port.
    let decode = |hex: &str| -> Option<String> {
        let (ip, port) = hex.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?;
        let port = u16::from_str_radix(port, 16).ok()?;
        let ip = std::net::Ipv4Addr::from(ip.to_ne_bytes());
        Some(format!("{ip}:{port}"))
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut columns = line.split_whitespace().skip(1);
            let local = decode(columns.next()?)?;
            let remote = decode(columns.next()?)?;
            (columns.next()? == "06").then_some((local, remote))
        })
        .filter(|(local, remote)| addresses.contains(local) || addresses.contains(remote))
        .collect()
}
