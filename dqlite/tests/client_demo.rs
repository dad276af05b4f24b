//! The client against real go-dqlite peers (`dqlite-demo` processes): SQL with every value
//! type, a result large enough to arrive in several ROWS batches, cluster listing, DESCRIBE,
//! WEIGHT and DUMP, "not leader" from a follower, ADD and REMOVE of a spare, TRANSFER of
//! leadership, and writes that continue through the leader-finding handle after the leader is
//! killed with SIGKILL.

mod client_support;

use std::time::{Duration, Instant};

use client_support::{quick_options, wait_for_voters, DemoNode};
use dqlite::client::{Client, Connection};
use dqlite::wire::{failure_code, Header, Request, Response, Value, HEADER_SIZE};
use dqlite::NodeRole;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DB: &str = "client-test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_sql_every_type_and_metadata() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = DemoNode::start(dir.path(), "127.12.2.1", &[]);
    wait_for_voters(&node.db_address, 1, Duration::from_secs(20)).await;
    let mut client = Client::connect_leader(&[&node.db_address], quick_options())
        .await
        .expect("the only node leads");
    assert_eq!(client.leader_address(), Some(node.db_address.as_str()));

    client
        .exec(
            DB,
            "CREATE TABLE every (i INTEGER, f REAL, t TEXT, b BLOB, n TEXT, u DATETIME, \
             d DATETIME, ok BOOLEAN)",
            &[],
        )
        .await
        .expect("create table");
    let values = vec![
        Value::Integer(-5),
        Value::Float(2.5),
        Value::Text("héllo, wörld".into()),
        Value::Blob(vec![0, 1, 2, 255]),
        Value::Null,
        Value::UnixTime(1_700_000_000),
        Value::Iso8601("2024-01-02 03:04:05".into()),
        Value::Boolean(true),
    ];
    let result = client
        .exec(
            DB,
            "INSERT INTO every VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            &values,
        )
        .await
        .expect("insert every type");
    assert_eq!(result.rows_affected, 1);
    assert_eq!(result.last_insert_id, 1);
    let rows = client
        .query(DB, "SELECT i, f, t, b, n, u, d, ok FROM every", &[])
        .await
        .expect("select");
    assert_eq!(rows.columns, ["i", "f", "t", "b", "n", "u", "d", "ok"]);
    // Date/time and boolean columns come back with their own type codes.
    assert_eq!(rows.rows, vec![values]);
    // A NULL date/time reads as NULL; libdqlite 1.11 sends a NULL boolean as false.
    client
        .exec(DB, "INSERT INTO every (i) VALUES (2)", &[])
        .await
        .expect("insert nulls");
    let nulls = client
        .query(DB, "SELECT u, d, ok FROM every WHERE i = 2", &[])
        .await
        .expect("select nulls");
    assert_eq!(
        nulls.rows,
        vec![vec![Value::Null, Value::Null, Value::Boolean(false)]]
    );

    // A SQL error is a typed failure and leaves the handle usable.
    let error = client
        .exec(DB, "INSERT INTO missing VALUES (1)", &[])
        .await
        .expect_err("no such table");
    assert_eq!(error.failure_code(), Some(failure_code::SQL_ERROR));
    let one = client
        .query(DB, "SELECT 1", &[])
        .await
        .expect("still usable");
    assert_eq!(one.rows, vec![vec![Value::Integer(1)]]);

    // Enough rows to exceed one ROWS message.
    client
        .exec(DB, "CREATE TABLE big (n INTEGER, pad TEXT)", &[])
        .await
        .expect("create big");
    client
        .exec(
            DB,
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000) \
             INSERT INTO big SELECT x, hex(randomblob(40)) FROM c",
            &[],
        )
        .await
        .expect("fill big");
    let big = client
        .query(DB, "SELECT n, pad FROM big ORDER BY n", &[])
        .await
        .expect("select big");
    assert_eq!(big.rows.len(), 3000);
    let numbers: Vec<i64> = big.rows.iter().filter_map(|r| r[0].as_i64()).collect();
    assert_eq!(numbers, (1..=3000).collect::<Vec<_>>());
    let batches = count_batches(&node.db_address, "SELECT n, pad FROM big").await;
    assert!(batches > 1, "3000 rows came in {batches} batch(es)");

    let nodes = client.cluster().await.expect("cluster");
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].address, node.db_address);
    assert_eq!(nodes[0].role, NodeRole::Voter);
    let leader = client.leader().await.expect("leader");
    assert_eq!(leader.id, nodes[0].id);

    let mut connection = Connection::connect(&node.db_address, &quick_options())
        .await
        .expect("connect");
    connection.weight(7).await.expect("weight");
    let metadata = connection.describe().await.expect("describe");
    assert_eq!(metadata.weight, 7);
    let files = connection.dump(DB).await.expect("dump");
    assert!(
        files.iter().any(|f| f.name == DB && !f.data.is_empty()),
        "dump: {:?}",
        files
            .iter()
            .map(|f| (&f.name, f.data.len()))
            .collect::<Vec<_>>()
    );
}

/// Runs `sql` over a raw socket with the wire codec alone and counts the ROWS messages.
async fn count_batches(address: &str, sql: &str) -> usize {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let mut out = 1u64.to_le_bytes().to_vec();
    Request::Open {
        name: DB.into(),
        flags: 0,
        vfs: String::new(),
    }
    .encode(&mut out)
    .expect("encode");
    stream.write_all(&out).await.expect("send open");
    let Response::Db { id } = read_response(&mut stream).await else {
        panic!("OPEN is answered by DB")
    };
    out.clear();
    Request::QuerySql {
        db: id,
        sql: sql.into(),
        params: vec![],
    }
    .encode(&mut out)
    .expect("encode");
    stream.write_all(&out).await.expect("send query");
    let mut batches = 0;
    loop {
        let response = read_response(&mut stream).await;
        let Response::Rows(batch) = response else {
            panic!("QUERY_SQL is answered by ROWS, not {response:?}")
        };
        batches += 1;
        if !batch.more {
            return batches;
        }
    }
}

async fn read_response(stream: &mut tokio::net::TcpStream) -> Response {
    let read = async {
        let mut header = [0u8; HEADER_SIZE];
        stream.read_exact(&mut header).await.expect("header");
        let header = Header::decode(header);
        let mut body = vec![0; header.body_len() as usize];
        stream.read_exact(&mut body).await.expect("body");
        Response::decode(&header, &body).expect("a well-formed response")
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the node answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_redirect_and_survive_the_leaders_death() {
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    let first = DemoNode::start(dirs[0].path(), "127.12.3.1", &[]);
    wait_for_voters(&first.db_address, 1, Duration::from_secs(20)).await;
    let first_address = first.db_address.clone();
    let join = [first_address.as_str()];
    let mut nodes = [
        first,
        DemoNode::start(dirs[1].path(), "127.12.3.2", &join),
        DemoNode::start(dirs[2].path(), "127.12.3.3", &join),
    ];
    wait_for_voters(&nodes[0].db_address, 3, Duration::from_secs(30)).await;
    let addresses: Vec<String> = nodes.iter().rev().map(|n| n.db_address.clone()).collect();

    let mut client = Client::connect_leader(&addresses, quick_options())
        .await
        .expect("finds the leader");
    let leader_address = client.leader_address().expect("connected").to_owned();
    let mut listed: Vec<String> = client
        .cluster()
        .await
        .expect("cluster")
        .into_iter()
        .map(|n| {
            assert_eq!(n.role, NodeRole::Voter, "{n:?}");
            n.address
        })
        .collect();
    listed.sort();
    let mut expected = addresses.clone();
    expected.sort();
    assert_eq!(listed, expected);

    // A follower refuses writes with "not leader" and names the leader.
    let follower = addresses
        .iter()
        .find(|a| **a != leader_address)
        .expect("two followers");
    let mut direct = Connection::connect(follower, &quick_options())
        .await
        .expect("connect to a follower");
    let named = direct.leader().await.expect("leader").expect("known");
    assert_eq!(named.address, leader_address);
    let db = direct.open(DB).await.expect("open on a follower");
    let error = direct
        .exec(db, "CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT)", &[])
        .await
        .expect_err("a follower does not write");
    assert!(error.is_not_leader(), "{error:?}");
    assert_eq!(error.failure_code(), Some(failure_code::NOT_LEADER));

    client
        .exec(DB, "CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT)", &[])
        .await
        .expect("create through the leader");
    for k in 0..10i64 {
        client
            .exec(
                DB,
                "INSERT INTO kv VALUES (?, ?)",
                &[k.into(), "before".into()],
            )
            .await
            .expect("insert before the kill");
    }

    // Membership through the handle: a spare at an address nothing listens on is never
    // replicated to, so adding and removing it is harmless.
    client
        .add(0x5eed, "127.12.3.99:9001")
        .await
        .expect("add a spare");
    let spare = client
        .cluster()
        .await
        .expect("cluster")
        .into_iter()
        .find(|n| n.id == 0x5eed)
        .expect("the spare is listed");
    assert_eq!(spare.role, NodeRole::Spare);
    client.remove(0x5eed).await.expect("remove the spare");
    assert_eq!(client.cluster().await.expect("cluster").len(), 3);

    // Hand leadership to another voter; the handle follows it.
    let target = client
        .cluster()
        .await
        .expect("cluster")
        .into_iter()
        .find(|n| n.address != leader_address)
        .expect("another voter");
    client.transfer(target.id).await.expect("transfer");
    let leader = client.leader().await.expect("the new leader");
    assert_eq!(leader.id, target.id);
    assert_eq!(client.leader_address(), Some(target.address.as_str()));
    let leader_address = target.address;

    let leader_node = nodes
        .iter_mut()
        .find(|n| n.db_address == leader_address)
        .expect("the leader is one of ours");
    leader_node.kill();
    let killed = Instant::now();
    // Give the runtime a moment to see the connection close, as an application's idle time
    // between requests would.
    tokio::time::sleep(Duration::from_millis(50)).await;

    for k in 10..20i64 {
        client
            .exec(
                DB,
                "INSERT INTO kv VALUES (?, ?)",
                &[k.into(), "after".into()],
            )
            .await
            .expect("writes continue on the new leader");
        if k == 10 {
            eprintln!(
                "first write after SIGKILL of the leader took {:?}",
                killed.elapsed()
            );
        }
    }
    let new_leader = client.leader_address().expect("connected").to_owned();
    assert_ne!(new_leader, leader_address);
    let count = client
        .query(DB, "SELECT count(*) FROM kv", &[])
        .await
        .expect("count");
    assert_eq!(count.rows, vec![vec![Value::Integer(20)]]);
}
