//! Scenarios with nodes in other processes: kill -9 of the leader while writes go on, and
//! interoperation with go-dqlite (`dqlite-demo` nodes, the `dqlite` shell).

mod app_support;

use std::process::Command;
use std::time::{Duration, Instant};

use app_support::{
    address, all_rows, insert_rows, run_with_timeout, spawn_node, start, wait_for, wait_for_roles,
};
use dqlite::wire::Value;
use dqlite::NodeRole::{StandBy, Voter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_continue_after_kill_9_of_the_leader() {
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("a temp dir"))
        .collect();
    let a: Vec<String> = (1..=3).map(|host| address(20, host)).collect();
    // The bootstrapping node, which leads, runs in a child process so that it can be killed.
    let (mut leader_process, leader_id) = spawn_node(dirs[0].path(), &a[0], &[]);
    assert_eq!(leader_id, 1);
    let second = start(dirs[1].path(), &a[1], &a[..1]).await;
    let third = start(dirs[2].path(), &a[2], &a[..1]).await;
    wait_for_roles(&second, &[(&a[0], Voter), (&a[1], Voter), (&a[2], Voter)]).await;
    let mut client = second.client().await.expect("a client");
    if second.leader().await.expect("a leader").map(|l| l.id) != Some(leader_id) {
        client
            .transfer(leader_id)
            .await
            .expect("leadership moves to the child");
    }
    insert_rows(&mut client, 0..10).await;

    leader_process.kill();
    let killed = Instant::now();
    // A write in flight when the leader dies fails with an ambiguous error (the connection
    // drops: did it commit?); the client does not resend it by itself, so the application
    // does, with an idempotent statement, until a new leader accepts it.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let write = client
            .exec(
                "test",
                "INSERT OR REPLACE INTO t (n) VALUES (?)",
                &[Value::Integer(10)],
            )
            .await;
        match write {
            Ok(_) => break,
            Err(error) if attempts < 5 => println!("write {attempts} after the kill: {error}"),
            Err(error) => panic!("no write succeeded after the kill: {error:?}"),
        }
    }
    println!(
        "first write after kill -9 of the leader: {:?}",
        killed.elapsed()
    );
    let new_leader = second
        .leader()
        .await
        .expect("a leader")
        .expect("a leader is known");
    assert_ne!(new_leader.id, leader_id, "another node leads");
    insert_rows(&mut client, 11..20).await;
    assert_eq!(all_rows(&mut client).await, (0..20).collect::<Vec<_>>());

    third.stop().await.expect("the node stops");
    second
        .stop_without_handover()
        .await
        .expect("the node stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_dqlite_shell_lists_and_queries_our_cluster_from_its_member_list() {
    let dirs = app_support::temp_dirs(3);
    let a: Vec<String> = (1..=3).map(|host| address(21, host)).collect();
    let (first, second, third) = app_support::start_three_voters(&dirs, &a).await;
    let mut client = first.client().await.expect("a client");
    insert_rows(&mut client, 40..43).await;

    // The shell finds the cluster through a member's `cluster.yaml`, go-dqlite's own format.
    let store = dirs[1].path().join(dqlite::app::store::CLUSTER_FILE);
    wait_for(
        "the member list to hold every member",
        Duration::from_secs(10),
        || async {
            let members = dqlite::app::store::load(dirs[1].path()).map_err(|e| e.to_string())?;
            if members.len() == 3 {
                Ok(())
            } else {
                Err(format!("{members:?}"))
            }
        },
    )
    .await;
    let servers = a.join(",");
    let cluster = tokio::task::spawn_blocking(move || {
        let store = format!("file://{}", store.display());
        run_with_timeout(20, "dqlite", &["-s", &store, "test", ".cluster"])
    })
    .await
    .expect("the shell ran");
    for (app, address) in [(&first, &a[0]), (&second, &a[1]), (&third, &a[2])] {
        let line = cluster
            .lines()
            .find(|line| line.contains(address.as_str()))
            .unwrap_or_else(|| panic!("{address} missing from .cluster:\n{cluster}"));
        // The shell prints ids in hexadecimal.
        assert!(line.starts_with(&format!("{:x}|", app.id())), "{line}");
        assert!(line.to_lowercase().contains("voter"), "{line}");
    }
    let rows = tokio::task::spawn_blocking(move || {
        run_with_timeout(
            20,
            "dqlite",
            &["-s", &servers, "test", "SELECT n FROM t ORDER BY n"],
        )
    })
    .await
    .expect("the shell ran");
    let numbers: Vec<&str> = rows
        .split_whitespace()
        .filter(|w| w.parse::<i64>().is_ok())
        .collect();
    assert_eq!(numbers, ["40", "41", "42"], "the shell's rows:\n{rows}");

    for app in [third, second, first] {
        app.stop().await.expect("the node stops");
    }
}

/// A `dqlite-demo` process, killed when dropped; its data dir is `dir/<db address>`.
fn spawn_demo(
    dir: &std::path::Path,
    api: &str,
    db: &str,
    join: &[String],
) -> app_support::ChildGuard {
    let mut command = Command::new("dqlite-demo");
    command
        .args(["--api", api, "--db", db])
        .arg("--dir")
        .arg(dir);
    if !join.is_empty() {
        command.args(["--join", &join.join(",")]);
    }
    app_support::ChildGuard::spawn(&format!("dqlite-demo {db}"), &mut command)
}

/// The demo's HTTP API: `PUT /key` with the value as body, `GET /key`.
async fn demo_request(api: &str, method: &str, key: &str, value: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(api)
            .await
            .map_err(|e| e.to_string())?;
        let request = format!(
            "{method} /{key} HTTP/1.0\r\nHost: demo\r\nContent-Length: {}\r\n\r\n{value}",
            value.len()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        let body = response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_owned();
        if body.starts_with("Error") || body.is_empty() {
            Err(format!("demo answered {response:?}"))
        } else {
            Ok(body)
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| "timed out".to_owned())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dqlite_demo_node_joins_our_cluster() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let demo_dir = tempfile::tempdir().expect("a temp dir");
    let ours = address(22, 1);
    let demo_db = address(22, 2);
    let demo_api = format!("127.11.{}.2:8001", 128 + 22);
    let first = start(dir.path(), &ours, &[]).await;
    let _demo = spawn_demo(
        demo_dir.path(),
        &demo_api,
        &demo_db,
        std::slice::from_ref(&ours),
    );

    // Our leader's role loop makes the demo node a stand-by.
    wait_for_roles(&first, &[(&ours, Voter), (&demo_db, StandBy)]).await;
    // A write through the demo's API lands in our cluster.
    wait_for(
        "the demo's API to accept a write",
        Duration::from_secs(20),
        || demo_request(&demo_api, "PUT", "colour", "green"),
    )
    .await;
    let mut client = first.client().await.expect("a client");
    let rows = client
        .query(
            "demo",
            "SELECT value FROM model WHERE key = ?",
            &["colour".into()],
        )
        .await
        .expect("the query runs");
    assert_eq!(rows.rows, vec![vec![Value::Text("green".to_owned())]]);
    first.stop().await.expect("the node stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_node_joins_a_dqlite_demo_cluster() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let demo_dir = tempfile::tempdir().expect("a temp dir");
    let demo_db = address(23, 1);
    let demo_api = format!("127.11.{}.1:8001", 128 + 23);
    let ours = address(23, 2);
    let _demo = spawn_demo(demo_dir.path(), &demo_api, &demo_db, &[]);
    wait_for("the demo to serve", Duration::from_secs(20), || {
        demo_request(&demo_api, "PUT", "k", "v")
    })
    .await;

    let node = start(dir.path(), &ours, std::slice::from_ref(&demo_db)).await;
    let members = node.cluster().await.expect("the members");
    assert!(
        members
            .iter()
            .any(|m| m.address == demo_db && m.role == Voter),
        "{members:?}"
    );
    assert!(members.iter().any(|m| m.id == node.id()), "{members:?}");
    let mut client = node.client().await.expect("a client");
    let rows = client
        .query(
            "demo",
            "SELECT value FROM model WHERE key = ?",
            &["k".into()],
        )
        .await
        .expect("the query runs");
    assert_eq!(rows.rows, vec![vec![Value::Text("v".to_owned())]]);
    // Our write is visible through the demo.
    client
        .exec(
            "demo",
            "INSERT OR REPLACE INTO model (key, value) VALUES (?, ?)",
            &["ours".into(), "yes".into()],
        )
        .await
        .expect("the write goes through the demo leader");
    assert_eq!(
        demo_request(&demo_api, "GET", "ours", "").await,
        Ok("yes".to_owned())
    );
    node.stop().await.expect("the node stops");
}
