//! Writes through the leader-following `Client` while leadership keeps moving: three of our
//! own nodes in this process, writers inserting fresh keys (one plain `INSERT` per call, and
//! one writer sending two `INSERT`s in one SQL text) while another handle transfers
//! leadership round the voters. Afterwards every write the client reported as done is in the
//! table, none failed on the key constraint (which would mean a committed statement was sent
//! again), and every write reported as certainly not run is absent.

mod client_support;

use std::collections::HashMap;
use std::time::Duration;

use client_support::{wait_for_voters, AppNode};
use dqlite::client::{Client, Error, Options};
use dqlite::wire::Value;
use dqlite::NodeRole;
use tokio::time::Instant;

const DB: &str = "elections";

/// How long the writers run while leadership moves.
const LOAD: Duration = Duration::from_secs(6);
/// Pause between two leadership transfers.
const TRANSFER_EVERY: Duration = Duration::from_millis(200);

/// What the client said about one write.
#[derive(Debug)]
enum Reported {
    Done,
    /// The client says the statement may or may not have been committed.
    Unknown(String),
    /// Any other error: the statement certainly did not run.
    NotRun(String),
}

fn reported(result: Result<dqlite::client::ExecResult, Error>) -> Reported {
    match result {
        Ok(_) => Reported::Done,
        Err(error) if error.outcome_unknown() => Reported::Unknown(format!("{error:#?}")),
        Err(error) => Reported::NotRun(format!("{error:#?}")),
    }
}

fn options() -> Options {
    Options {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        retry_timeout: Duration::from_secs(10),
        ..Options::default()
    }
}

/// Three voters, each our `node` example in its own process at 127.12.200.1-3 with short
/// raft timers (election timeout 150 ms) so that each transfer settles quickly.
async fn three_voters(dir: &std::path::Path) -> (Vec<AppNode>, Vec<String>) {
    let addresses: Vec<String> = (1..=3).map(|h| format!("127.12.200.{h}:9001")).collect();
    let mut nodes = Vec::new();
    for (i, address) in addresses.iter().enumerate() {
        let peers = if i == 0 { &[][..] } else { &addresses[..1] };
        nodes.push(AppNode::start(
            &dir.join(format!("n{i}")),
            address,
            peers,
            10,
        ));
    }
    wait_for_voters(&addresses[0], 3, Duration::from_secs(20)).await;
    (nodes, addresses)
}

/// One writer: inserts fresh keys until `until`; returns each key with what the client said.
async fn writer(
    addresses: Vec<String>,
    name: &'static str,
    two_per_text: bool,
    until: Instant,
) -> (Vec<(Vec<String>, Reported)>, Client) {
    let mut client = Client::connect_leader(&addresses, options())
        .await
        .expect("writer finds the leader");
    let mut outcomes = Vec::new();
    let mut i = 0u64;
    while Instant::now() < until {
        i += 1;
        let result = if two_per_text {
            let (a, b) = (format!("{name}-{i}-a"), format!("{name}-{i}-b"));
            // Literal keys: parameters bind only to the first statement of a text.
            let sql =
                format!("INSERT INTO kv (k) VALUES ('{a}'); INSERT INTO kv (k) VALUES ('{b}')");
            (vec![a, b], client.exec(DB, &sql, &[]).await)
        } else {
            let key = format!("{name}-{i}");
            let result = client
                .exec(DB, "INSERT INTO kv (k) VALUES (?)", &[key.clone().into()])
                .await;
            (vec![key], result)
        };
        outcomes.push((result.0, reported(result.1)));
    }
    (outcomes, client)
}

/// Hands leadership to the next voter every [`TRANSFER_EVERY`] until `until`, restarting any
/// node that crashed; returns the nodes, how many transfers succeeded and how many restarts
/// were needed.
async fn mover(
    mut nodes: Vec<AppNode>,
    addresses: Vec<String>,
    until: Instant,
) -> (Vec<AppNode>, usize, usize) {
    let mut client = Client::connect_leader(&addresses, options())
        .await
        .expect("mover finds the leader");
    let (mut transfers, mut restarts) = (0, 0);
    while Instant::now() < until {
        tokio::time::sleep(TRANSFER_EVERY).await;
        for node in nodes.iter_mut() {
            if node.has_exited() {
                node.restart();
                restarts += 1;
            }
        }
        let (Ok(leader), Ok(members)) = (client.leader().await, client.cluster().await) else {
            continue;
        };
        // The next voter by id after the leader, round the circle.
        let mut voters: Vec<u64> = members
            .iter()
            .filter(|m| m.role == NodeRole::Voter)
            .map(|m| m.id)
            .collect();
        voters.sort_unstable();
        let Some(target) = voters
            .iter()
            .find(|id| **id > leader.id)
            .or(voters.first())
            .filter(|id| **id != leader.id)
        else {
            continue;
        };
        if client.transfer(*target).await.is_ok() {
            transfers += 1;
        }
    }
    (nodes, transfers, restarts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_write_is_applied_twice_while_leadership_moves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (nodes, addresses) = three_voters(dir.path()).await;
    let mut setup = Client::connect_leader(&addresses, options())
        .await
        .expect("leader");
    setup
        .exec(DB, "CREATE TABLE kv (k TEXT PRIMARY KEY)", &[])
        .await
        .expect("create table");

    let until = Instant::now() + LOAD;
    let writers: Vec<_> = [
        ("one", false),
        ("two", false),
        ("three", false),
        ("pair", true),
    ]
    .into_iter()
    .map(|(name, pair)| tokio::spawn(writer(addresses.clone(), name, pair, until)))
    .collect();
    let (_nodes, transfers, restarts) = tokio::spawn(mover(nodes, addresses.clone(), until))
        .await
        .expect("mover task");

    let mut outcomes = Vec::new();
    let mut clients = Vec::new();
    for writer in writers {
        let (mut written, client) = writer.await.expect("writer task");
        outcomes.append(&mut written);
        clients.push(client);
    }

    let rows = setup
        .query(DB, "SELECT k, count(*) FROM kv GROUP BY k", &[])
        .await
        .expect("read back");
    let stored: HashMap<String, i64> = rows
        .rows
        .into_iter()
        .map(|row| match row.as_slice() {
            [Value::Text(k), Value::Integer(n)] => (k.clone(), *n),
            other => panic!("unexpected row {other:?}"),
        })
        .collect();

    let (mut done, mut unknown, mut not_run, mut partial, mut committed) = (0, 0, 0, 0, 0);
    let mut wrong = Vec::new();
    for (keys, outcome) in &outcomes {
        let present: Vec<bool> = keys.iter().map(|k| stored.contains_key(k)).collect();
        let fine = match outcome {
            Reported::Done => {
                done += 1;
                present.iter().all(|p| *p)
            }
            Reported::Unknown(message) => {
                unknown += 1;
                // Committed in spite of the error: what sending it again would have doubled.
                committed += usize::from(present.iter().all(|p| *p));
                // Part of a two-statement text committed: why such a failure is ambiguous.
                partial += usize::from(present.iter().any(|p| *p) && !present.iter().all(|p| *p));
                !message.contains("UNIQUE")
            }
            Reported::NotRun(message) => {
                not_run += 1;
                !message.contains("UNIQUE") && present.iter().all(|p| !*p)
            }
        };
        if !fine {
            wrong.push(format!("{keys:?} present {present:?}: {outcome:?}"));
        }
    }
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for (_, outcome) in &outcomes {
        let text = match outcome {
            Reported::Done => continue,
            Reported::Unknown(m) | Reported::NotRun(m) => m,
        };
        let kind: String = text.lines().filter(|l| !l.contains("address")).collect();
        *kinds.entry(kind).or_default() += 1;
    }
    eprintln!("errors by kind: {kinds:#?}");
    eprintln!(
        "{transfers} transfers, {restarts} node restarts; {} writes: {done} done, {unknown} outcome unknown, \
         {not_run} not run; of the unknown, {committed} committed whole and {partial} in part",
        outcomes.len()
    );
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(stored.values().all(|n| *n == 1), "the key is unique");
    // The mover really moved leadership, and writes got through between the moves.
    assert!(transfers > 0, "no transfer succeeded");
    assert!(done > 0, "no write succeeded");

    // Every handle still works once leadership stays put.
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .exec(
                DB,
                "INSERT INTO kv (k) VALUES (?)",
                &[format!("after-{i}").into()],
            )
            .await
            .expect("the handle recovers");
    }
}
