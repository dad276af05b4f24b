//! The raft transport of this crate's nodes: the bounded connect function
//! (`node::raft_connect`) gives libdqlite connected, blocking, close-on-exec sockets with
//! `TCP_NODELAY` and a 2 s `TCP_USER_TIMEOUT`, gives up on an address that drops SYNs within its timeout, and a cluster
//! of nodes using it forms, replicates and fails over, with `TCP_NODELAY` on every raft
//! socket in both directions. Loopback 127.11.124.0/24 to 127.11.126.0/24; the black-hole
//! test makes a network namespace of its own (needs root and `ip`).
#![forbid(unsafe_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use dqlite::client::{Client, Options};
use dqlite::node::{
    generate_node_id, raft_connect, ConnectError, Node, NodeOptions, RaftConnect, BOOTSTRAP_ID,
};
use dqlite::NodeRole;

/// `O_NONBLOCK` and `O_CLOEXEC` in the octal `flags:` line of `/proc/self/fdinfo/<fd>`.
const O_NONBLOCK: u32 = 0o4000;
const O_CLOEXEC: u32 = 0o2_000_000;

/// The file status flags of one of this process's descriptors.
fn fd_flags(fd: i32) -> u32 {
    let info = fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).expect("read fdinfo");
    let flags = info
        .lines()
        .find_map(|line| line.strip_prefix("flags:"))
        .expect("fdinfo has a flags line");
    u32::from_str_radix(flags.trim(), 8).expect("octal flags")
}

/// `TCP_NODELAY` of descriptor `fd` of this process, read through a duplicate of it
/// (`pidfd_getfd`), so that sockets libdqlite owns can be inspected without borrowing them.
fn nodelay_of(fd: i32) -> bool {
    let me = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )
    .expect("pidfd_open on this process");
    let copy = rustix::process::pidfd_getfd(&me, fd, rustix::process::PidfdGetfdFlags::empty())
        .expect("pidfd_getfd on this process");
    rustix::net::sockopt::tcp_nodelay(&copy).expect("read TCP_NODELAY")
}

#[test]
fn the_connect_function_hands_back_a_blocking_close_on_exec_socket_with_nodelay_and_a_user_timeout()
{
    let listener = TcpListener::bind("127.11.124.1:0").expect("bind a listener");
    let address = listener.local_addr().expect("its address").to_string();

    let socket: OwnedFd =
        raft_connect(&address, Duration::from_secs(1)).expect("connect to our listener");
    let flags = fd_flags(socket.as_raw_fd());
    assert_eq!(
        flags & O_NONBLOCK,
        0,
        "blocking, as libdqlite writes its handshake"
    );
    assert_ne!(flags & O_CLOEXEC, 0, "close-on-exec");
    assert_eq!(
        rustix::net::sockopt::tcp_user_timeout(&socket).expect("read TCP_USER_TIMEOUT"),
        2000,
        "a connection whose peer stops acknowledging ends after RAFT_USER_TIMEOUT"
    );
    assert_eq!(dqlite::node::RAFT_USER_TIMEOUT, Duration::from_secs(2));
    let mut stream = TcpStream::from(socket);
    assert!(
        stream.nodelay().expect("read TCP_NODELAY"),
        "TCP_NODELAY set"
    );
    // The option is not the socket's default: a plain connect has Nagle on.
    let plain = TcpStream::connect(&address).expect("a plain connect");
    assert!(!plain.nodelay().expect("read TCP_NODELAY"));
    assert_eq!(
        rustix::net::sockopt::tcp_user_timeout(&plain).expect("read TCP_USER_TIMEOUT"),
        0,
        "the kernel's default: retransmissions go on for minutes"
    );

    // The connection is the one the listener accepts, and nothing was written on it yet
    // (libdqlite writes the handshake itself).
    let (mut accepted, _) = listener.accept().expect("accept ours");
    stream.write_all(b"handshak").expect("write");
    let mut received = [0u8; 8];
    accepted.read_exact(&mut received).expect("read");
    assert_eq!(&received, b"handshak");
}

#[test]
fn a_refused_or_unreadable_address_is_no_connection() {
    // Nothing listens on this port of a loopback address of this test's own.
    let started = Instant::now();
    let error =
        raft_connect("127.11.124.2:9", Duration::from_secs(5)).expect_err("nothing listens there");
    assert!(
        matches!(&error, ConnectError::Connect { source, .. }
            if source.kind() == std::io::ErrorKind::ConnectionRefused),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once"
    );
    for address in ["::1", "@dqlite", "localhost:9001", "127.0.0.1:x"] {
        let error = raft_connect(address, Duration::from_secs(1)).expect_err(address);
        assert!(matches!(error, ConnectError::Address { .. }), "{error:?}");
    }
}

/// Set in the child that runs the black-hole scenario inside the test's namespace.
const BLACKHOLE_INNER: &str = "DQLITE_TRANSPORT_BLACKHOLE_INNER";
/// Inside the namespace: our address, and a neighbour whose SYNs vanish (a permanent ARP
/// entry on a veth whose peer has no address, so nothing answers and nothing refuses).
const NAMESPACE_OWN: &str = "10.224.0.1";
const NAMESPACE_DEAD: &str = "10.224.0.2";
const BLACKHOLE_TIMEOUT: Duration = Duration::from_millis(300);

#[test]
fn a_connect_to_an_address_that_drops_syns_gives_up_within_its_timeout() {
    if std::env::var_os(BLACKHOLE_INNER).is_some() {
        let started = Instant::now();
        let error = raft_connect(&format!("{NAMESPACE_DEAD}:9001"), BLACKHOLE_TIMEOUT)
            .expect_err("nothing answers a black-holed address");
        let took = started.elapsed();
        println!("black-holed connect gave up after {took:?}: {error}");
        assert!(
            matches!(error, ConnectError::Timeout { .. }),
            "a timeout, not a refusal or an unreachable host: {error:?}"
        );
        assert!(
            took >= BLACKHOLE_TIMEOUT,
            "not before the timeout: {took:?}"
        );
        assert!(
            took < BLACKHOLE_TIMEOUT + Duration::from_millis(200),
            "soon after the timeout (the kernel alone waits minutes): {took:?}"
        );
        return;
    }
    let namespace = Namespace::create(&format!("dqlite-tr-{}", std::process::id()));
    let output = Command::new("ip")
        .args(["netns", "exec", &namespace.name, "timeout", "60"])
        .arg(std::env::current_exe().expect("the test binary knows its path"))
        .args([
            "a_connect_to_an_address_that_drops_syns_gives_up_within_its_timeout",
            "--exact",
            "--nocapture",
        ])
        .env(BLACKHOLE_INNER, "1")
        .output()
        .expect("ip netns exec runs");
    assert!(
        output.status.success(),
        "the inner test failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    print!("{}", String::from_utf8_lossy(&output.stdout));
}

/// A network namespace with `NAMESPACE_OWN` on a veth whose peer drops everything, and a
/// permanent neighbour entry for `NAMESPACE_DEAD`. Deleted on drop.
struct Namespace {
    name: String,
}

impl Namespace {
    fn create(name: &str) -> Namespace {
        // Left by a killed earlier run with this pid: start clean.
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(std::process::Stdio::null())
            .status();
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
        inside(&[
            "ip",
            "addr",
            "add",
            &format!("{NAMESPACE_OWN}/24"),
            "dev",
            "bh0",
        ]);
        inside(&["ip", "link", "set", "bh0", "up"]);
        inside(&["ip", "link", "set", "bh1", "up"]);
        inside(&[
            "ip",
            "neigh",
            "replace",
            NAMESPACE_DEAD,
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            "bh0",
            "nud",
            "permanent",
        ]);
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

/// One established TCP connection of `/proc/net/tcp`: local and remote `ip:port`, inode.
struct TcpEntry {
    local: String,
    remote: String,
    inode: u64,
}

/// The established IPv4 connections on this host (the test's network namespace).
fn established() -> Vec<TcpEntry> {
    let table = fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let endpoint = |hex: &str| {
        let (ip, port) = hex.split_once(':').expect("ip:port");
        let ip = u32::from_str_radix(ip, 16).expect("hex ip");
        let port = u16::from_str_radix(port, 16).expect("hex port");
        // The kernel prints the address in host order of its network-order bytes.
        let [a, b, c, d] = ip.to_le_bytes();
        format!("{a}.{b}.{c}.{d}:{port}")
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(3) == Some(&"01")).then(|| TcpEntry {
                local: endpoint(fields[1]),
                remote: endpoint(fields[2]),
                inode: fields[9].parse().expect("an inode"),
            })
        })
        .collect()
}

/// This process's descriptor of socket `inode`, if it holds one.
fn fd_of_socket(inode: u64) -> Option<i32> {
    let wanted = format!("socket:[{inode}]");
    fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .flatten()
        .find_map(|entry| {
            let link = fs::read_link(entry.path()).ok()?;
            (link.to_str()? == wanted).then(|| entry.file_name().to_str()?.parse().ok())?
        })
}

#[test]
fn three_nodes_with_the_bounded_connect_form_replicate_and_fail_over() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let temp = tempfile::tempdir().expect("temp dir");
    let addresses: Vec<String> = (1..=3)
        .map(|host| format!("127.11.125.{host}:9001"))
        .collect();
    let options = NodeOptions {
        raft_connect: RaftConnect::Bounded {
            timeout: Duration::from_millis(500),
        },
        ..NodeOptions::default()
    };
    let mut nodes: Vec<Option<Node>> = Vec::new();
    for (index, address) in addresses.iter().enumerate() {
        let id = if index == 0 {
            BOOTSTRAP_ID
        } else {
            generate_node_id(address)
        };
        let dir = temp.path().join(format!("n{}", index + 1));
        let mut node = Node::new(id, address, &dir, &options).expect("create a node");
        node.start().expect("start a node");
        nodes.push(Some(node));
    }
    let client_options = Options {
        retry_timeout: Duration::from_secs(20),
        ..Options::default()
    };
    runtime.block_on(async {
        let mut client = Client::connect_leader(&addresses[..1], client_options.clone())
            .await
            .expect("the bootstrapped node leads");
        for node in nodes[1..].iter().flatten() {
            client.add(node.id(), node.address()).await.expect("add");
            client
                .assign(node.id(), NodeRole::Voter)
                .await
                .expect("promote to voter");
        }
        client
            .exec("test", "CREATE TABLE t (n INTEGER)", &[])
            .await
            .expect("create a table");
        client
            .exec("test", "INSERT INTO t VALUES (1)", &[])
            .await
            .expect("first write");
    });

    // Every raft connection between the nodes, in this process, both ends: the outgoing
    // end was made by the connect function (close-on-exec: libdqlite's own socket() is not),
    // the accepted end inherited TCP_NODELAY from the listener. The client that set the
    // cluster up is gone, so its connections are no longer established.
    let raft_sockets: Vec<(TcpEntry, i32)> = established()
        .into_iter()
        .filter(|entry| addresses.contains(&entry.local) || addresses.contains(&entry.remote))
        .filter_map(|entry| fd_of_socket(entry.inode).map(|fd| (entry, fd)))
        .collect();
    let outgoing: Vec<&(TcpEntry, i32)> = raft_sockets
        .iter()
        .filter(|(entry, _)| addresses.contains(&entry.remote))
        .collect();
    let accepted = raft_sockets.len() - outgoing.len();
    assert!(
        outgoing.len() >= 2 && accepted >= 2,
        "the leader and its followers are connected both ways: {} outgoing, {accepted} accepted",
        outgoing.len()
    );
    for (entry, fd) in &raft_sockets {
        assert!(
            nodelay_of(*fd),
            "TCP_NODELAY on {} -> {} (fd {fd})",
            entry.local,
            entry.remote
        );
    }
    for (entry, fd) in &outgoing {
        assert_ne!(
            fd_flags(*fd) & O_CLOEXEC,
            0,
            "{} -> {} was opened by the crate's connect function",
            entry.local,
            entry.remote
        );
    }

    // Fail-over: stop the leader; the other two elect one of themselves, which has the
    // replicated row and takes a new write.
    let leader = runtime
        .block_on(async {
            let mut client = Client::connect_leader(&addresses, client_options.clone()).await?;
            client.leader().await
        })
        .expect("a leader");
    let leader_index = addresses
        .iter()
        .position(|address| *address == leader.address)
        .expect("the leader is one of ours");
    let stopped = Instant::now();
    drop(nodes[leader_index].take());
    let survivors: Vec<String> = addresses
        .iter()
        .filter(|address| **address != leader.address)
        .cloned()
        .collect();
    let rows = runtime.block_on(async {
        let mut client = Client::connect_leader(&survivors, client_options.clone())
            .await
            .expect("a new leader among the survivors");
        client
            .exec("test", "INSERT INTO t VALUES (2)", &[])
            .await
            .expect("a write after the fail-over");
        client
            .query("test", "SELECT n FROM t ORDER BY n", &[])
            .await
            .expect("read back")
    });
    println!("fail-over to a new leader took {:?}", stopped.elapsed());
    assert_eq!(rows.rows.len(), 2, "{rows:?}");
    drop(nodes);
}
