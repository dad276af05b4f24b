//! Test support: real `dbaccessor` processes, each a controller with its own loopback
//! address (127.21.N.M) and data dir, and the charm's side of the contract played by the
//! test (write controller.conf atomically, POST /reload, read the status socket).

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use controller_contract::status::{NodeState, Status};
use dqlite::client::{Client, Options};

/// Raft timing for the tests: fast fail-over, still stable on 2 busy cores.
pub const LATENCY_MS: &str = "20";
/// How long a leader is looked for before the quorum counts as lost.
pub const QUORUM_TIMEOUT_MS: &str = "1500";

/// One controller machine: a data dir, a loopback address and (while running) a daemon.
pub struct Controller {
    pub agent_id: String,
    pub ip: String,
    /// Holds the data dir; removed when the controller is dropped.
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `--quorum-timeout-ms` (default `QUORUM_TIMEOUT_MS`).
    pub quorum_timeout_ms: String,
    /// The network namespace the daemon runs in (`ip netns exec`, which execs the daemon,
    /// so the child is the daemon itself); `None`: this process's.
    pub namespace: Option<String>,
}

impl Controller {
    /// A controller that is not started yet.
    pub fn new(agent_id: &str, ip: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("dbaccessor-{ip}-"))
            .tempdir()
            .expect("tempdir");
        Self {
            agent_id: agent_id.into(),
            ip: ip.into(),
            dir,
            child: None,
            quorum_timeout_ms: QUORUM_TIMEOUT_MS.into(),
            namespace: None,
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn address(&self) -> String {
        format!("{}:17666", self.ip)
    }

    pub fn conf_path(&self) -> PathBuf {
        controller_contract::paths::controller_conf(self.data_dir(), &self.agent_id)
    }

    pub fn reload_socket(&self) -> PathBuf {
        self.data_dir().join("configchange.socket")
    }

    pub fn status_socket(&self) -> PathBuf {
        self.data_dir().join("dbaccessor-status.socket")
    }

    pub fn log_path(&self) -> PathBuf {
        self.data_dir().join("dbaccessor.log")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the daemon and waits until its reload socket answers.
    pub async fn start(&mut self) {
        assert!(
            self.child.is_none(),
            "controller {} already runs",
            self.agent_id
        );
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open log");
        let mut command = match &self.namespace {
            Some(namespace) => {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", namespace])
                    .arg(env!("CARGO_BIN_EXE_dbaccessor"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_dbaccessor")),
        };
        let child = command
            .args(["--agent-id", &self.agent_id])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--network-latency-ms", LATENCY_MS])
            .args(["--quorum-timeout-ms", &self.quorum_timeout_ms])
            .args(["--log-level", "info"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn dbaccessor");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Ok((200, id))) = tokio::time::timeout(
                Duration::from_secs(2),
                test_support::reload::request(
                    &self.reload_socket(),
                    hyper::Method::GET,
                    "/agent-id",
                ),
            )
            .await
            {
                assert_eq!(id, self.agent_id);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "controller {} did not serve its reload socket:\n{}",
                self.agent_id,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes controller.conf atomically (temp file + rename), as the charm does.
    pub fn write_conf(&self, text: &str) {
        let path = self.conf_path();
        let dir = path.parent().expect("conf has a parent");
        fs::create_dir_all(dir).expect("create conf dir");
        let tmp = dir.join(".controller.conf.tmp");
        fs::write(&tmp, text).expect("write temp conf");
        fs::rename(&tmp, &path).expect("rename conf");
    }

    /// Writes the map `db-bind-addresses` (agent id -> ip) and keeps an unrelated key.
    pub fn write_map(&self, map: &[(&str, &str)]) {
        let mut text = String::from("api-port: 17070\ndb-bind-addresses:\n");
        for (id, ip) in map {
            text.push_str(&format!("  '{id}': {ip}\n"));
        }
        self.write_conf(&text);
    }

    /// POST /reload: the daemon must answer 204.
    pub async fn reload(&self) {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            test_support::reload::request(&self.reload_socket(), hyper::Method::POST, "/reload"),
        )
        .await
        .expect("reload answered within 5 s")
        .expect("reload request");
        assert_eq!(answer.0, 204, "POST /reload answered {answer:?}");
    }

    /// Writes the map and asks for a reload.
    pub async fn set_map(&self, map: &[(&str, &str)]) {
        self.write_map(map);
        self.reload().await;
    }

    pub async fn status(&self) -> Status {
        test_support::status::status(&self.status_socket(), Duration::from_secs(15))
            .await
            .unwrap_or_else(|e| panic!("status of {}: {e}\n{}", self.agent_id, self.log()))
    }

    /// Polls the status until `ready` holds; panics with the log after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&Status) -> bool,
    ) -> Status {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status().await;
            if ready(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "controller {}: not {what} within {timeout:?}; status {status:#?}\nlog:\n{}",
                self.agent_id,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the node is a member that sees `voters` voters and a leader.
    pub async fn wait_voters(&self, voters: usize) -> Status {
        self.wait_for(
            &format!("a member with {voters} voters"),
            Duration::from_secs(30),
            |s| {
                s.state == NodeState::Member
                    && s.leader_id.is_some()
                    && s.members
                        .iter()
                        .filter(|m| m.role == controller_contract::status::Role::Voter)
                        .count()
                        == voters
            },
        )
        .await
    }

    /// Whether the daemon process is still alive.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// kill -9, as a crash or a pulled plug.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(exit) = child.try_wait().expect("try_wait") {
                return exit.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "controller {} ignored SIGTERM:\n{}",
                    self.agent_id,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A client of the cluster through the given addresses.
pub async fn client(addresses: &[String]) -> Client {
    let options = Options {
        retry_timeout: Duration::from_secs(15),
        ..Options::default()
    };
    Client::connect_leader(addresses, options)
        .await
        .expect("a leader among the addresses")
}

/// Creates the test table and inserts rows `from..to`.
pub async fn insert_rows(addresses: &[String], from: i64, to: i64) {
    test_support::rows::insert(&mut client(addresses).await, from..to).await;
}

/// Every `n` in the test table, in order.
pub async fn read_rows(addresses: &[String]) -> Vec<i64> {
    test_support::rows::read(&mut client(addresses).await).await
}

/// The go-dqlite shell's `.cluster` output for the cluster at `address`.
pub fn shell_cluster(address: &str) -> String {
    let output = Command::new("timeout")
        .args(["10", "dqlite", "-s", address, "test", ".cluster"])
        .output()
        .expect("run the go-dqlite shell");
    assert!(
        output.status.success(),
        "dqlite shell failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub mod netns;
pub mod partition;
pub mod shrink;
