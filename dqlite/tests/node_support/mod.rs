//! Scenario helpers for the node tests: loopback addresses, the go-dqlite tools wrapped in
//! `timeout` and kill-on-drop guards, and a few raw wire-protocol requests (sent with std
//! sockets and read timeouts) so that these tests need no async client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The node tests' slice of the dqlite range (127.11.0.0/16): 127.11.100.0/24 and up, one
/// `/24` per test so that tests in one binary run in parallel.
pub fn address(subnet: u8, host: u8) -> String {
    format!("127.11.{subnet}.{host}:9001")
}

/// Runs the go-dqlite shell against `servers` (it retries forever: `timeout` bounds it).
pub fn shell(servers: &str, database: &str, command: &str) -> Output {
    Command::new("timeout")
        .args(["10", "dqlite", "-s", servers, database, command])
        .output()
        .expect("run the dqlite shell (apt-get install go-dqlite)")
}

/// Runs the shell and returns its stdout, panicking with its stderr when it fails.
pub fn shell_ok(servers: &str, database: &str, command: &str) -> String {
    let output = shell(servers, database, command);
    assert!(
        output.status.success(),
        "dqlite shell {command:?} on {servers}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Polls `probe` until it returns `Some` or `limit` passes; the limit only bounds a hang.
pub fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

pub use test_support::process::ChildGuard;

/// Starts a go-dqlite `dqlite-demo` node: database address `db`, HTTP API on port 8001 of
/// the same IP, data in `dir`, joining `join` when given.
pub fn dqlite_demo(db: &str, dir: &Path, join: Option<&str>) -> ChildGuard {
    let ip = db.split(':').next().expect("an ip:port address");
    let mut command = Command::new("dqlite-demo");
    command
        .args(["--db", db, "--api", &format!("{ip}:8001")])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(join) = join {
        command.args(["--join", join]);
    }
    let child = command
        .spawn()
        .expect("run dqlite-demo (apt-get install go-dqlite)");
    ChildGuard::new(&format!("dqlite-demo {db}"), child)
}

/// Wire message types used here (protocol version 1).
pub const REQUEST_ADD: u8 = 12;
pub const REQUEST_ASSIGN: u8 = 13;
pub const RESPONSE_FAILURE: u8 = 0;
pub const RESPONSE_EMPTY: u8 = 8;

/// One request/response exchange on a fresh connection, every read bounded by a timeout.
/// Returns the response type and body.
pub fn wire_request(address: &str, kind: u8, body: &[u8]) -> (u8, Vec<u8>) {
    assert!(body.len().is_multiple_of(8), "bodies are whole words");
    let mut stream = TcpStream::connect(address).expect("connect to the node");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    stream.write_all(&1u64.to_le_bytes()).expect("handshake");
    let words = u32::try_from(body.len() / 8).expect("a small body");
    let mut message = words.to_le_bytes().to_vec();
    message.extend_from_slice(&[kind, 0, 0, 0]);
    message.extend_from_slice(body);
    stream.write_all(&message).expect("send the request");
    let mut header = [0u8; 8];
    stream
        .read_exact(&mut header)
        .expect("read the response header");
    let words = u32::from_le_bytes(header[..4].try_into().expect("four bytes"));
    let mut response = vec![0u8; words as usize * 8];
    stream
        .read_exact(&mut response)
        .expect("read the response body");
    (header[4], response)
}

/// Encodes a wire text: UTF-8, NUL, zero padding to a whole word.
pub fn text(value: &str) -> Vec<u8> {
    let mut bytes = value.as_bytes().to_vec();
    bytes.push(0);
    while !bytes.len().is_multiple_of(8) {
        bytes.push(0);
    }
    bytes
}

/// Sends a membership request to the leader at `leader`, retrying while another
/// configuration change is in progress (FAILURE code 5), as any dqlite client must.
pub fn membership_change(leader: &str, kind: u8, body: &[u8]) {
    let outcome = wait_for(Duration::from_secs(20), || {
        let (response, bytes) = wire_request(leader, kind, body);
        match response {
            RESPONSE_EMPTY => Some(Ok(())),
            RESPONSE_FAILURE if bytes[..8] == 5u64.to_le_bytes() => None,
            _ => Some(Err(format!(
                "response {response}: {:?}",
                String::from_utf8_lossy(&bytes)
            ))),
        }
    });
    match outcome {
        Some(Ok(())) => {}
        Some(Err(error)) => panic!("membership request {kind} to {leader}: {error}"),
        None => panic!("membership request {kind} to {leader} stayed busy"),
    }
}

/// ADD `id` at `address` (it joins as a spare), then ASSIGN it `role_code`.
pub fn add_node(leader: &str, id: u64, address: &str, role_code: u64) {
    let mut add = id.to_le_bytes().to_vec();
    add.extend_from_slice(&text(address));
    membership_change(leader, REQUEST_ADD, &add);
    let mut assign = id.to_le_bytes().to_vec();
    assign.extend_from_slice(&role_code.to_le_bytes());
    membership_change(leader, REQUEST_ASSIGN, &assign);
}

/// Opens a node on an address a dropped node used, waiting out a short-lived child process
/// (a `dqlite` shell run by a parallel test) that forked in the instant between libdqlite's
/// bind and the crate marking the listener close-on-exec, and so still holds a copy of it.
/// A copy held for longer than `limit` is a real leak and fails the test.
pub fn reopen(
    id: u64,
    address: &str,
    dir: &Path,
    options: &dqlite::node::NodeOptions,
) -> dqlite::node::Node {
    use dqlite::node::{Node, NodeError};
    let mut last_error = None;
    let node = wait_for(Duration::from_secs(5), || {
        match Node::new(id, address, dir, options) {
            Ok(node) => Some(node),
            Err(error @ NodeError::AddressInUse { .. }) => {
                last_error = Some(error);
                None
            }
            Err(error) => panic!("reopen node {id} at {address}: {error}"),
        }
    });
    node.unwrap_or_else(|| panic!("reopen node {id} at {address}: {last_error:?}"))
}
