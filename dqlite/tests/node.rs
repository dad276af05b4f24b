//! The node against real libdqlite and the go-dqlite tools: lifecycle, the data-dir lock,
//! the persisted identity, bind errors, clusters with the go-dqlite shell and dqlite-demo,
//! offline recovery and the log position of a real data dir.

mod node_support;

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dqlite::node::{
    generate_node_id, log_position, recover, LogPosition, Node, NodeError, NodeIdentity,
    NodeOptions, SnapshotParams, BOOTSTRAP_ID, IDENTITY_FILE,
};
use dqlite::{NodeInfo, NodeRole};
use node_support::{add_node, address, dqlite_demo, reopen, shell, shell_ok, wait_for};

fn options() -> NodeOptions {
    NodeOptions::default()
}

/// Starts a one-voter cluster (id 1) and waits until it answers the go-dqlite shell.
fn bootstrap(address: &str, dir: &Path) -> Node {
    let mut node = Node::new(BOOTSTRAP_ID, address, dir, &options()).expect("create node 1");
    node.start().expect("start node 1");
    wait_for(Duration::from_secs(10), || {
        shell(address, "test", ".leader")
            .status
            .success()
            .then_some(())
    })
    .expect("node 1 becomes leader");
    node
}

#[test]
fn node_creates_its_dir_binds_starts_stops_and_drops() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("a/b/data");
    let address = address(100, 1);
    let mut node = Node::new(BOOTSTRAP_ID, &address, &dir, &options()).expect("create");
    assert_eq!(
        (node.id(), node.address(), node.data_dir()),
        (BOOTSTRAP_ID, address.as_str(), dir.as_path())
    );
    let mode = fs::metadata(&dir).expect("data dir").permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert_eq!(
        fs::read_to_string(dir.join(IDENTITY_FILE)).expect("identity"),
        format!("ID: 1\nAddress: {address}\nRole: 0\n")
    );
    assert!(!node.is_running());
    assert_eq!(
        format!("{node:?}"),
        format!("Node {{ id: 1, address: {address:?}, data_dir: {dir:?}, running: false, .. }}")
    );
    node.start().expect("start");
    node.start().expect("a second start does nothing");
    assert!(node.is_running());
    node.stop().expect("stop");
    assert!(!node.is_running());
    node.stop().expect("a second stop does nothing");
    let error = node.start().expect_err("restart of a stopped node");
    assert!(matches!(error, NodeError::Restart { id: 1 }), "{error}");
    drop(node);

    // Drop of a running node stops it, destroys it and unlocks the dir.
    let mut node = reopen(BOOTSTRAP_ID, &address, &dir, &options());
    node.start().expect("start again");
    drop(node);
    let node = reopen(BOOTSTRAP_ID, &address, &dir, &options());
    drop(node);
}

#[test]
fn a_second_opener_in_this_process_is_refused() {
    let temp = tempfile::tempdir().expect("temp dir");
    let node = Node::new(BOOTSTRAP_ID, &address(101, 1), temp.path(), &options()).expect("create");
    let error = Node::new(BOOTSTRAP_ID, &address(101, 2), temp.path(), &options())
        .expect_err("second opener refused");
    assert!(
        matches!(&error, NodeError::DataDirLocked { data_dir } if data_dir == temp.path()),
        "{error}"
    );
    assert!(error
        .to_string()
        .contains(&temp.path().display().to_string()));
    let identity = NodeIdentity {
        id: BOOTSTRAP_ID,
        address: address(101, 1),
    };
    let voter = NodeInfo {
        id: BOOTSTRAP_ID,
        address: address(101, 1),
        role: NodeRole::Voter,
    };
    let error = recover(temp.path(), &identity, &[voter]).expect_err("recover on a live dir");
    assert!(matches!(error, NodeError::DataDirLocked { .. }), "{error}");
    drop(node);
}

/// The environment variable that turns the next test into the child of the previous one.
const CHILD_DIR: &str = "DQLITE_NODE_TEST_CHILD_DIR";

#[test]
fn a_second_opener_in_another_process_is_refused() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        // The child: try to open the parent's dir and report what happened.
        let outcome = Node::new(BOOTSTRAP_ID, &address(102, 2), Path::new(&dir), &options());
        match outcome {
            Err(NodeError::DataDirLocked { .. }) => println!("child: locked"),
            Err(error) => println!("child: error {error}"),
            Ok(_) => println!("child: opened"),
        }
        return;
    }
    let temp = tempfile::tempdir().expect("temp dir");
    let run_child = || {
        let output = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "a_second_opener_in_another_process_is_refused",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, temp.path())
            .output()
            .expect("run the child");
        assert!(output.status.success(), "{output:?}");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        stdout
            .split("child: ")
            .nth(1)
            .and_then(|rest| rest.lines().next())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no child outcome in {stdout}"))
    };
    let node = Node::new(BOOTSTRAP_ID, &address(102, 2), temp.path(), &options()).expect("create");
    assert_eq!(run_child(), "locked");
    drop(node);
    assert_eq!(run_child(), "opened");
}

#[test]
fn a_dir_of_another_node_is_refused() {
    let temp = tempfile::tempdir().expect("temp dir");
    let first = address(103, 1);
    drop(Node::new(7, &first, temp.path(), &options()).expect("create node 7"));
    let check = |id: u64, address: &str| {
        let error = Node::new(id, address, temp.path(), &options()).expect_err("mismatch refused");
        let NodeError::IdentityMismatch {
            persisted, given, ..
        } = &error
        else {
            panic!("unexpected error {error}");
        };
        assert_eq!(
            (persisted.id, persisted.address.as_str()),
            (7, first.as_str())
        );
        assert_eq!((given.id, given.address.as_str()), (id, address));
        assert!(error.to_string().contains("belongs to node 7"), "{error}");
    };
    check(8, &first);
    check(7, &address(103, 2));
    drop(reopen(7, &first, temp.path(), &options()));
}

#[test]
fn unbindable_addresses_are_refused_before_any_file_is_made() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("data");
    // IPv6 binds (through the forwarding listener), but not without brackets or with a zone.
    for unbindable in ["::1", "[fe80::1%1]:9001"] {
        let error = Node::new(2, unbindable, &dir, &options()).expect_err(unbindable);
        assert!(matches!(error, NodeError::InvalidAddress { .. }), "{error}");
    }
    let error = Node::new(2, "localhost:9001", &dir, &options()).expect_err("host name refused");
    assert!(matches!(error, NodeError::InvalidAddress { .. }), "{error}");
    let error = Node::new(0, &address(104, 1), &dir, &options()).expect_err("id 0 refused");
    assert!(matches!(error, NodeError::ZeroId), "{error}");
    assert!(!dir.exists());
}

#[test]
fn a_port_in_use_is_a_typed_error() {
    let temp = tempfile::tempdir().expect("temp dir");
    let address = address(105, 1);
    let listener = TcpListener::bind(&address).expect("hold the port");
    let error = Node::new(BOOTSTRAP_ID, &address, temp.path(), &options()).expect_err("bind fails");
    assert!(
        matches!(&error, NodeError::AddressInUse { address: in_use, .. } if *in_use == address),
        "{error:?}"
    );
    drop(listener);
    // The failed node released the dir: the same node can bind now.
    drop(reopen(BOOTSTRAP_ID, &address, temp.path(), &options()));
}

#[test]
fn a_child_process_does_not_keep_the_address_bound() {
    // libdqlite 1.11 opens its listener without O_CLOEXEC; the node marks it close-on-exec,
    // so a long-lived child spawned while the node lives holds no copy of it.
    let temp = tempfile::tempdir().expect("temp dir");
    for address in [
        address(113, 1),
        format!("@dqlite-node-test-child-{}", std::process::id()),
    ] {
        let dir = temp.path().join(address.replace([':', '@'], "_"));
        let mut node = Node::new(BOOTSTRAP_ID, &address, &dir, &options()).expect("create");
        node.start().expect("start");
        let sleep = Command::new("sleep").arg("30").spawn().expect("run sleep");
        let _child = node_support::ChildGuard::new("sleep", sleep);
        drop(node);
        // The `sleep` child lives 30 s: had it inherited the listener, this would fail.
        drop(reopen(BOOTSTRAP_ID, &address, &dir, &options()));
    }
}

#[test]
fn an_abstract_socket_node_starts() {
    let temp = tempfile::tempdir().expect("temp dir");
    let name = format!("@dqlite-node-test-{}", std::process::id());
    let mut node = Node::new(BOOTSTRAP_ID, &name, temp.path(), &options()).expect("create");
    node.start().expect("start");
    node.stop().expect("stop");
}

#[test]
fn a_one_node_cluster_answers_the_go_shell() {
    let temp = tempfile::tempdir().expect("temp dir");
    let address = address(106, 1);
    let node = bootstrap(&address, temp.path());
    shell_ok(&address, "test", "create table t (n integer)");
    shell_ok(&address, "test", "insert into t values (41), (1)");
    let sum = shell_ok(&address, "test", "select sum(n) from t");
    assert!(sum.contains("42"), "{sum}");
    let cluster = shell_ok(&address, "test", ".cluster");
    assert!(
        cluster.contains(&format!("{:x}", BOOTSTRAP_ID))
            && cluster.contains(&address)
            && cluster.contains("voter"),
        "{cluster}"
    );
    drop(node);
}

#[test]
fn three_of_our_nodes_form_a_cluster_the_go_shell_lists() {
    let temp = tempfile::tempdir().expect("temp dir");
    let addresses = [address(107, 1), address(107, 2), address(107, 3)];
    let mut nodes = vec![bootstrap(&addresses[0], &temp.path().join("n1"))];
    for (number, address) in addresses.iter().enumerate().skip(1) {
        let id = generate_node_id(address);
        let dir = temp.path().join(format!("n{}", number + 1));
        let mut node = Node::new(id, address, &dir, &options()).expect("create a joiner");
        node.start().expect("start a joiner");
        add_node(&addresses[0], id, address, NodeRole::Voter.code());
        nodes.push(node);
    }
    let all = addresses.join(",");
    let cluster = shell_ok(&all, "test", ".cluster");
    for address in &addresses {
        assert!(cluster.contains(address.as_str()), "{cluster}");
    }
    assert_eq!(cluster.matches("voter").count(), 3, "{cluster}");
    shell_ok(&all, "test", "create table t (n integer)");
    shell_ok(&all, "test", "insert into t values (3)");
    // Every member serves the (leader-forwarded) query.
    for address in &addresses {
        let rows = shell_ok(address, "test", "select n from t");
        assert!(rows.contains('3'), "{rows}");
    }
    drop(nodes);
}

#[test]
fn a_dqlite_demo_node_joins_ours() {
    let temp = tempfile::tempdir().expect("temp dir");
    let ours = address(108, 1);
    let demo = address(108, 2);
    let node = bootstrap(&ours, &temp.path().join("ours"));
    let _demo = dqlite_demo(&demo, &temp.path().join("demo"), Some(&ours));
    let cluster = wait_for(Duration::from_secs(20), || {
        let output = shell(&ours, "test", ".cluster");
        let cluster = String::from_utf8_lossy(&output.stdout).into_owned();
        cluster.contains(&demo).then_some(cluster)
    })
    .expect("the demo node joins");
    assert!(cluster.contains(&ours), "{cluster}");
    drop(node);
}

#[test]
fn our_node_joins_a_dqlite_demo_cluster() {
    let temp = tempfile::tempdir().expect("temp dir");
    let demo = address(109, 1);
    let ours = address(109, 2);
    let _demo = dqlite_demo(&demo, &temp.path().join("demo"), None);
    wait_for(Duration::from_secs(20), || {
        shell(&demo, "demo", ".leader")
            .status
            .success()
            .then_some(())
    })
    .expect("the demo node bootstraps");
    let id = generate_node_id(&ours);
    let mut node = Node::new(id, &ours, &temp.path().join("ours"), &options()).expect("create");
    node.start().expect("start");
    add_node(&demo, id, &ours, NodeRole::Voter.code());
    let cluster = shell_ok(&demo, "demo", ".cluster");
    assert!(
        cluster.contains(&format!("{id:x}")) && cluster.contains(&ours),
        "{cluster}"
    );
    assert_eq!(cluster.matches("voter").count(), 2, "{cluster}");
    drop(node);
}

/// Writes `rows` rows (0..rows) into table `t` through the shell, one insert each.
fn write_rows(servers: &str, rows: std::ops::Range<u32>) {
    for row in rows {
        shell_ok(servers, "test", &format!("insert into t values ({row})"));
    }
}

fn count_rows(servers: &str) -> String {
    shell_ok(servers, "test", "select count(*) from t")
}

#[test]
fn the_log_position_grows_with_writes() {
    let temp = tempfile::tempdir().expect("temp dir");
    let address = address(110, 1);
    assert_eq!(
        log_position(temp.path()).expect("empty dir"),
        LogPosition::default()
    );
    let mut node = bootstrap(&address, temp.path());
    shell_ok(&address, "test", "create table t (n integer)");
    write_rows(&address, 0..5);
    let error = log_position(temp.path()).expect_err("a running node's log is moving");
    assert!(matches!(error, NodeError::DataDirLocked { .. }), "{error}");
    node.stop().expect("stop");
    let error = log_position(temp.path()).expect_err("the lock is held until drop");
    assert!(matches!(error, NodeError::DataDirLocked { .. }), "{error}");
    drop(node);
    let first = log_position(temp.path()).expect("position after 5 writes");
    // Bootstrap configuration, a barrier, the table and five rows: at least 7 entries.
    assert!(first.index >= 7 && first.term >= 1, "{first:?}");

    let mut node = reopen(BOOTSTRAP_ID, &address, temp.path(), &options());
    node.start().expect("restart");
    wait_for(Duration::from_secs(10), || {
        shell(&address, "test", "insert into t values (5)")
            .status
            .success()
            .then_some(())
    })
    .expect("write after restart");
    write_rows(&address, 6..10);
    drop(node);
    let second = log_position(temp.path()).expect("position after 10 writes");
    assert!(
        second.index >= first.index + 5 && second > first,
        "{first:?} {second:?}"
    );
}

#[test]
fn recovery_of_a_node_that_never_joined_is_refused() {
    let temp = tempfile::tempdir().expect("temp dir");
    let address = address(114, 1);
    let id = generate_node_id(&address);
    let identity = NodeIdentity {
        id,
        address: address.clone(),
    };
    let alone = [NodeInfo {
        id,
        address: address.clone(),
        role: NodeRole::Voter,
    }];
    let check = |dir: &Path| {
        let error = recover(dir, &identity, &alone).expect_err("nothing to recover");
        assert!(matches!(error, NodeError::EmptyLog { .. }), "{error}");
    };
    let empty = temp.path().join("empty");
    fs::create_dir(&empty).expect("empty dir");
    check(&empty);
    // A joiner that started but was never added: raft metadata, no entries.
    let joiner = temp.path().join("joiner");
    let mut node = Node::new(id, &address, &joiner, &options()).expect("create");
    node.start().expect("start");
    drop(node);
    assert_eq!(
        log_position(&joiner).expect("position"),
        LogPosition::default()
    );
    check(&joiner);
    let missing = temp.path().join("missing");
    let error = recover(&missing, &identity, &alone).expect_err("no dir");
    assert!(matches!(error, NodeError::OpenLock { .. }), "{error}");
}

#[test]
fn options_reach_the_node_and_snapshots_count_in_the_log_position() {
    let temp = tempfile::tempdir().expect("temp dir");
    let address = address(115, 1);
    let options = NodeOptions {
        failure_domain: Some(7),
        snapshot: Some(SnapshotParams {
            threshold: 8,
            trailing: 8,
        }),
        ..NodeOptions::default()
    };
    let invalid = NodeOptions {
        snapshot: Some(SnapshotParams {
            threshold: 8,
            trailing: 4,
        }),
        ..NodeOptions::default()
    };
    let error = Node::new(BOOTSTRAP_ID, &address, temp.path(), &invalid)
        .expect_err("trailing below the threshold");
    assert!(
        matches!(error, NodeError::InvalidSnapshotParams { .. }),
        "{error}"
    );
    // Keeping libdqlite's raft timers still checks the latency the app layer sizes by.
    let unchecked = NodeOptions {
        libdqlite_timers: true,
        network_latency: Duration::ZERO,
        ..NodeOptions::default()
    };
    let error = Node::new(BOOTSTRAP_ID, &address, temp.path(), &unchecked)
        .expect_err("a zero latency with libdqlite's timers");
    assert!(
        matches!(error, NodeError::InvalidNetworkLatency { .. }),
        "{error}"
    );
    let mut node = Node::new(BOOTSTRAP_ID, &address, temp.path(), &options).expect("create");
    node.start().expect("start");
    wait_for(Duration::from_secs(10), || {
        shell(&address, "test", "create table t (n integer)")
            .status
            .success()
            .then_some(())
    })
    .expect("node 1 serves");
    let describe = shell_ok(&address, "test", &format!(".describe {address}"));
    // The shell prints `address|failure domain|weight`.
    assert!(
        describe.trim().starts_with(&format!("{address}|7|")),
        "{describe}"
    );
    write_rows(&address, 0..30);
    node.stop().expect("stop");
    drop(node);

    let names: Vec<String> = fs::read_dir(temp.path())
        .expect("list the dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert!(
        names
            .iter()
            .any(|name| name.starts_with("snapshot-") && name.ends_with(".meta")),
        "{names:?}"
    );
    let position = log_position(temp.path()).expect("position with snapshots");
    assert!(position.index >= 32, "{position:?}");

    let mut node = reopen(BOOTSTRAP_ID, &address, temp.path(), &options);
    node.start().expect("restart");
    let count = wait_for(Duration::from_secs(10), || {
        let output = shell(&address, "test", "select count(*) from t");
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    })
    .expect("the restarted node serves queries");
    assert!(count.contains("30"), "{count}");
}

/// The environment variable that makes the next test's binary run a node until killed.
const KILLED_DIR: &str = "DQLITE_NODE_TEST_KILLED_DIR";

#[test]
fn the_log_position_of_a_killed_node_is_where_libraft_resumes() {
    let address = address(112, 1);
    if let Ok(dir) = std::env::var(KILLED_DIR) {
        // The child: write through a node, say so, and wait to be killed with its open
        // segments on disk (a clean stop would close them).
        let node = bootstrap(&address, Path::new(&dir));
        shell_ok(&address, "test", "create table t (n integer)");
        write_rows(&address, 0..5);
        println!("\nchild: ready");
        std::io::Write::flush(&mut std::io::stdout()).expect("flush stdout");
        std::thread::sleep(Duration::from_secs(60));
        drop(node);
        return;
    }
    let temp = tempfile::tempdir().expect("temp dir");
    let mut child = node_support::ChildGuard::new(
        "the killed node's test process",
        Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "the_log_position_of_a_killed_node_is_where_libraft_resumes",
                "--nocapture",
            ])
            .env(KILLED_DIR, temp.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run the child"),
    );
    let stdout = child.child.stdout.take().expect("piped stdout");
    let (ready, readiness) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("child: ready") {
                let _ = ready.send(());
            }
        }
    });
    readiness
        .recv_timeout(Duration::from_secs(30))
        .expect("the child wrote its rows");
    drop(child); // SIGKILL, then reaped.

    let open_segments = fs::read_dir(temp.path())
        .expect("list the dir")
        .filter(|entry| {
            let name = entry.as_ref().expect("entry").file_name();
            name.to_string_lossy().starts_with("open-")
        })
        .count();
    assert!(open_segments > 0, "the killed node left open segments");
    let position = log_position(temp.path()).expect("position of the killed node");
    assert!(position.index >= 7 && position.term >= 1, "{position:?}");

    // libraft closes the open segments when it loads them, naming the last entry it kept:
    // that must be the position read above. The rows are all there.
    let mut node = reopen(BOOTSTRAP_ID, &address, temp.path(), &options());
    node.start().expect("restart");
    let count = wait_for(Duration::from_secs(10), || {
        let output = shell(&address, "test", "select count(*) from t");
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    })
    .expect("the restarted node serves queries");
    assert!(count.contains('5'), "{count}");
    drop(node);
    let suffix = format!("-{:016}", position.index);
    let closed_at_position = fs::read_dir(temp.path())
        .expect("list the dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .any(|name| name.ends_with(&suffix) && !name.starts_with("snapshot"));
    assert!(closed_at_position, "no closed segment ends at {position:?}");
}

#[test]
fn offline_recovery_to_the_most_up_to_date_member_keeps_every_row_and_rebinds() {
    let temp = tempfile::tempdir().expect("temp dir");
    let addresses = [address(111, 1), address(111, 2), address(111, 3)];
    let dirs: Vec<_> = (1..=3).map(|n| temp.path().join(format!("n{n}"))).collect();
    let mut nodes = vec![bootstrap(&addresses[0], &dirs[0])];
    let mut identities = vec![NodeIdentity {
        id: BOOTSTRAP_ID,
        address: addresses[0].clone(),
    }];
    for number in 1..3 {
        let id = generate_node_id(&addresses[number]);
        let mut node =
            Node::new(id, &addresses[number], &dirs[number], &options()).expect("create");
        node.start().expect("start");
        add_node(
            &addresses[0],
            id,
            &addresses[number],
            NodeRole::Voter.code(),
        );
        nodes.push(node);
        identities.push(NodeIdentity {
            id,
            address: addresses[number].clone(),
        });
    }
    let all = addresses.join(",");
    shell_ok(&all, "test", "create table t (n integer)");
    write_rows(&all, 0..20);
    for node in &mut nodes {
        node.stop().expect("stop");
    }
    drop(nodes);

    // Every member holds the committed entries; pick the greatest position as the app would.
    let positions: Vec<LogPosition> = dirs
        .iter()
        .map(|dir| log_position(dir).expect("log position"))
        .collect();
    let best = (0..3)
        .max_by_key(|&number| positions[number])
        .expect("three members");
    assert!(positions[best].index >= 22, "{positions:?}");

    // Shrink to that member alone, moved to a new address (a re-bind).
    let moved = address(111, 9);
    let alone = [NodeInfo {
        id: identities[best].id,
        address: moved.clone(),
        role: NodeRole::Voter,
    }];
    recover(&dirs[best], &identities[best], &alone).expect("recover");
    assert_eq!(
        NodeIdentity::load(&dirs[best]).expect("identity"),
        Some(NodeIdentity {
            id: identities[best].id,
            address: moved.clone()
        })
    );
    let recovered = log_position(&dirs[best]).expect("position after recovery");
    assert!(recovered > positions[best], "{recovered:?}");

    let mut node = Node::new(identities[best].id, &moved, &dirs[best], &options())
        .expect("reopen at the new address");
    node.start().expect("start alone");
    let count = wait_for(Duration::from_secs(10), || {
        let output = shell(&moved, "test", "select count(*) from t");
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    })
    .expect("the recovered node serves queries");
    assert!(count.contains("20"), "{count}");
    write_rows(&moved, 20..21);
    assert!(count_rows(&moved).contains("21"));
    let cluster = shell_ok(&moved, "test", ".cluster");
    assert_eq!(
        cluster
            .lines()
            .filter(|line| !line.trim().is_empty())
            .count(),
        1,
        "{cluster}"
    );
    drop(node);
}
