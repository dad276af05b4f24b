//! Shared pieces of the client tests: `dqlite-demo` peers that are killed on drop, and fake
//! nodes on a tokio listener that answer with whatever bytes a test wants.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::future::Future;
use std::pin::Pin;
use std::process::{Command, Stdio};

use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::process::ChildGuard;

use dqlite::client::{Connection, Options};
use dqlite::wire::{Header, Request, Response, HEADER_SIZE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Options with short timeouts so that a failing test fails quickly.
pub fn quick_options() -> Options {
    Options {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        // An election at dqlite-demo's default latency takes about 5.5 s.
        retry_timeout: Duration::from_secs(20),
        ..Options::default()
    }
}

/// A `dqlite-demo` process: a go-dqlite application node speaking the wire protocol on
/// `db_address`. Killed (SIGKILL) and reaped on drop.
pub struct DemoNode {
    guard: ChildGuard,
    pub db_address: String,
}

impl DemoNode {
    /// Starts a node on `ip` (port 9001 for the database, 8001 for the demo's HTTP API),
    /// joining `join` when it is not empty. Its data lives under `dir`.
    pub fn start(dir: &std::path::Path, ip: &str, join: &[&str]) -> DemoNode {
        let db_address = format!("{ip}:9001");
        let mut command = Command::new("dqlite-demo");
        command
            .arg("--api")
            .arg(format!("{ip}:8001"))
            .arg("--db")
            .arg(&db_address)
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if !join.is_empty() {
            command.arg("--join").arg(join.join(","));
        }
        let child = command
            .spawn()
            .expect("dqlite-demo runs (apt-get install go-dqlite)");
        DemoNode {
            guard: ChildGuard::new(&format!("dqlite-demo {db_address}"), child),
            db_address,
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.guard.kill();
    }
}

/// Polls `address` until its configuration lists `voters` voters, or panics after `limit`.
pub async fn wait_for_voters(address: &str, voters: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        match Connection::connect(address, &quick_options()).await {
            Ok(mut connection) => match connection.cluster().await {
                Ok(nodes) => {
                    let count = nodes
                        .iter()
                        .filter(|n| n.role == dqlite::NodeRole::Voter)
                        .count();
                    if count >= voters {
                        return;
                    }
                    last = format!("{nodes:?}");
                }
                Err(error) => last = error.to_string(),
            },
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{address} did not reach {voters} voters within {limit:?}; last: {last}");
}

/// What a fake node does with one request.
pub enum Reply {
    /// Send these bytes (one or more frames, or garbage) and keep serving.
    Bytes(Vec<u8>),
    /// Send these bytes, then close the connection.
    BytesThenClose(Vec<u8>),
    /// Send nothing and keep the connection open.
    Silence,
}

impl Reply {
    /// A well-formed response.
    pub fn response(response: Response) -> Reply {
        let mut bytes = Vec::new();
        response.encode(&mut bytes).expect("test responses encode");
        Reply::Bytes(bytes)
    }
}

type Handler = dyn Fn(Request) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync;

/// A fake node: accepts connections on a loopback listener, checks the handshake, decodes each
/// request and answers with its handler's reply. Its tasks stop on drop.
pub struct FakeNode {
    pub address: String,
    accept: JoinHandle<()>,
}

impl FakeNode {
    pub async fn start<F, Fut>(ip: &str, handler: F) -> FakeNode
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        FakeNode::start_with(ip, |_| handler).await
    }

    /// Like `start`, with the handler made from the node's own address (so that it can name
    /// itself as the leader).
    pub async fn start_with<M, F, Fut>(ip: &str, make: M) -> FakeNode
    where
        M: FnOnce(String) -> F,
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let listener = TcpListener::bind(format!("{ip}:0"))
            .await
            .expect("bind loopback");
        let address = listener.local_addr().expect("bound").to_string();
        let handler = make(address.clone());
        let handler: Arc<Handler> = Arc::new(move |request| Box::pin(handler(request)));
        let accept = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(serve(stream, handler.clone()));
            }
        });
        FakeNode { address, accept }
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.accept.abort();
    }
}

async fn serve(mut stream: TcpStream, handler: Arc<Handler>) {
    let mut handshake = [0u8; 8];
    if stream.read_exact(&mut handshake).await.is_err() || u64::from_le_bytes(handshake) != 1 {
        return;
    }
    loop {
        let mut header = [0u8; HEADER_SIZE];
        if stream.read_exact(&mut header).await.is_err() {
            return;
        }
        let header = Header::decode(header);
        let mut body = vec![0u8; header.body_len() as usize];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let request = Request::decode(&header, &body).expect("the client sends valid requests");
        match handler(request).await {
            Reply::Bytes(bytes) => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Reply::BytesThenClose(bytes) => {
                let _ = stream.write_all(&bytes).await;
                return;
            }
            Reply::Silence => std::future::pending::<()>().await,
        }
    }
}

/// One of our application nodes (the `node` example) as a child process, so that a crash of
/// libdqlite inside it cannot take the test down. Killed (SIGKILL) and reaped on drop.
pub struct AppNode {
    guard: ChildGuard,
    pub address: String,
    dir: std::path::PathBuf,
    peers: Vec<String>,
    latency_ms: u64,
}

impl AppNode {
    /// Starts a node at `address` joining `peers` (none: it bootstraps) and waits up to 30 s
    /// for its `ready` line.
    pub fn start(
        dir: &std::path::Path,
        address: &str,
        peers: &[String],
        latency_ms: u64,
    ) -> AppNode {
        let mut node = AppNode {
            guard: spawn_app_node(dir, address, peers, latency_ms),
            address: address.to_owned(),
            dir: dir.to_owned(),
            peers: peers.to_vec(),
            latency_ms,
        };
        node.guard.wait_for_line("ready ", Duration::from_secs(30));
        node
    }

    /// Whether the process has exited (for example crashed).
    pub fn has_exited(&mut self) -> bool {
        self.guard.has_exited()
    }

    /// Starts the process again on the same data directory, without waiting for it.
    pub fn restart(&mut self) {
        self.kill();
        self.guard = spawn_app_node(&self.dir, &self.address, &self.peers, self.latency_ms);
    }

    /// SIGKILL, as `kill -9` does.
    pub fn kill(&mut self) {
        self.guard.kill();
    }
}

fn spawn_app_node(
    dir: &std::path::Path,
    address: &str,
    peers: &[String],
    latency_ms: u64,
) -> ChildGuard {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dqlite-node"));
    command
        .arg("--data-dir")
        .arg(dir)
        .args(["--address", address])
        .args(["--latency-ms", &latency_ms.to_string()]);
    for peer in peers {
        command.args(["--peer", peer]);
    }
    // Standard input closing stops the node: the guard keeps it open (piped) for the
    // node's life.
    ChildGuard::spawn_with_stderr(&format!("node {address}"), &mut command, Stdio::null())
}
