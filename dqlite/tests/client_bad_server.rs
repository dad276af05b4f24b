//! The client against fake nodes: malformed, truncated, oversized and missing answers give
//! typed errors without panics or hangs; leader discovery trusts only a node that names
//! itself; busy and not-leader answers are retried; a write that may have been committed
//! ("leadership lost", a connection dropped mid-request, any failure of a multi-statement
//! text but "not leader") is never sent again and comes back as an unknown outcome.

mod client_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client_support::{FakeNode, Reply};
use dqlite::client::{Client, Connection, Error, Options};
use dqlite::wire::{failure_code, DecodeError, Header, Request, Response, RowsBatch, Value};
use dqlite::{NodeInfo, NodeRole};

/// Short timeouts: every "no answer" case below waits for one of them.
fn options() -> Options {
    Options {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(300),
        retry_timeout: Duration::from_secs(2),
        max_message_size: 1 << 20,
        ..Options::default()
    }
}

/// A frame with the given header fields and raw body bytes.
fn frame(kind: u8, words: u32, body: &[u8]) -> Vec<u8> {
    let mut bytes = Header {
        words,
        kind,
        revision: 0,
    }
    .encode()
    .to_vec();
    bytes.extend_from_slice(body);
    bytes
}

/// Sends one query to a node that answers every request with `reply` and returns the error.
async fn query_error(ip: &str, reply: fn() -> Reply) -> Error {
    let node = FakeNode::start(ip, move |_| async move { reply() }).await;
    let mut connection = Connection::connect(&node.address, &options())
        .await
        .expect("connects");
    // The outer limit only turns a hang (which the client's own timeouts must prevent) into a
    // failure; it is far above every timeout in `options()`.
    tokio::time::timeout(
        Duration::from_secs(60),
        connection.query(0, "SELECT 1", &[]),
    )
    .await
    .expect("the client's timeouts end the call")
    .expect_err("the fake node answers badly")
}

#[tokio::test]
async fn unknown_message_type_is_a_decode_error() {
    let error = query_error("127.12.1.1", || Reply::Bytes(frame(42, 1, &[0; 8]))).await;
    assert!(
        matches!(
            error,
            Error::Decode {
                source: DecodeError::UnknownMessageType { kind: 42 },
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn truncated_body_then_close_is_a_receive_error() {
    let error = query_error("127.12.1.2", || Reply::BytesThenClose(frame(7, 3, &[0; 8]))).await;
    assert!(
        matches!(&error, Error::Receive { source, .. } if source.kind() == std::io::ErrorKind::UnexpectedEof),
        "{error:?}"
    );
}

#[tokio::test]
async fn truncated_body_left_open_times_out() {
    let error = query_error("127.12.1.3", || Reply::Bytes(frame(7, 3, &[0; 8]))).await;
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
}

#[tokio::test]
async fn silent_node_times_out() {
    let error = query_error("127.12.1.4", || Reply::Silence).await;
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
}

#[tokio::test]
async fn huge_column_count_is_refused_before_allocating() {
    let error = query_error("127.12.1.5", || {
        let mut body = u64::MAX.to_le_bytes().to_vec();
        body.extend_from_slice(&[0xff; 8]);
        Reply::Bytes(frame(7, 2, &body))
    })
    .await;
    assert!(
        matches!(
            error,
            Error::Decode {
                source: DecodeError::CountTooLarge { what: "column", .. },
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn huge_body_length_is_refused_before_reading() {
    let error = query_error("127.12.1.6", || Reply::Bytes(frame(7, u32::MAX, &[]))).await;
    assert!(
        matches!(
            error,
            Error::MessageTooLarge {
                bytes: 34_359_738_360,
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn unknown_value_type_is_a_decode_error() {
    let error = query_error("127.12.1.7", || {
        // One column "a", one row of type 7 (no such type), then the done marker.
        let mut body = 1u64.to_le_bytes().to_vec();
        body.extend_from_slice(b"a\0\0\0\0\0\0\0");
        body.extend_from_slice(&[7, 0, 0, 0, 0, 0, 0, 0]);
        body.extend_from_slice(&[0; 8]);
        body.extend_from_slice(&[0xff; 8]);
        Reply::Bytes(frame(7, 5, &body))
    })
    .await;
    assert!(
        matches!(
            error,
            Error::Decode {
                source: DecodeError::UnknownValueType { code: 7 },
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn wrong_response_type_is_unexpected_and_breaks_the_connection() {
    let node = FakeNode::start("127.12.1.8", |_| async { Reply::response(Response::Empty) }).await;
    let mut connection = Connection::connect(&node.address, &options())
        .await
        .expect("connects");
    let error = connection
        .cluster()
        .await
        .expect_err("EMPTY is not SERVERS");
    assert!(
        matches!(
            error,
            Error::UnexpectedResponse {
                kind: 8,
                request: "cluster",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!connection.is_usable());
    let error = connection.cluster().await.expect_err("broken");
    assert!(matches!(error, Error::Broken { .. }), "{error:?}");
}

#[tokio::test]
async fn failure_keeps_the_connection_usable() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let node = FakeNode::start("127.12.1.9", move |_| {
        let call = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if call == 0 {
                Reply::response(Response::Failure {
                    code: failure_code::SQL_ERROR,
                    message: "no such table: t".into(),
                })
            } else {
                Reply::response(Response::Result {
                    last_insert_id: 3,
                    rows_affected: 1,
                })
            }
        }
    })
    .await;
    let mut connection = Connection::connect(&node.address, &options())
        .await
        .expect("connects");
    let error = connection
        .exec(0, "INSERT INTO t VALUES (1)", &[])
        .await
        .expect_err("fails");
    assert_eq!(error.failure_code(), Some(failure_code::SQL_ERROR));
    assert!(connection.is_usable());
    let result = connection
        .exec(0, "INSERT INTO t VALUES (1)", &[])
        .await
        .expect("succeeds");
    assert_eq!(result.last_insert_id, 3);
}

#[tokio::test]
async fn abandoned_request_breaks_the_connection() {
    let node = FakeNode::start("127.12.1.10", |_| async { Reply::Silence }).await;
    let mut connection = Connection::connect(&node.address, &options())
        .await
        .expect("connects");
    let abandoned = tokio::time::timeout(Duration::from_millis(50), connection.cluster()).await;
    assert!(abandoned.is_err(), "the silent node cannot have answered");
    let error = connection.cluster().await.expect_err("broken");
    assert!(matches!(error, Error::Broken { .. }), "{error:?}");
}

#[tokio::test]
async fn query_gathers_every_batch() {
    let node = FakeNode::start("127.12.1.11", |_| async {
        let mut bytes = Vec::new();
        for (first, more) in [(0, true), (2, true), (4, false)] {
            let batch = RowsBatch {
                columns: vec!["n".into()],
                rows: vec![vec![Value::Integer(first)], vec![Value::Integer(first + 1)]],
                more,
            };
            Response::Rows(batch).encode(&mut bytes).expect("encodes");
        }
        Reply::Bytes(bytes)
    })
    .await;
    let mut connection = Connection::connect(&node.address, &options())
        .await
        .expect("connects");
    let rows = connection.query(0, "SELECT n", &[]).await.expect("queries");
    assert_eq!(rows.columns, vec!["n".to_owned()]);
    let numbers: Vec<i64> = rows.rows.iter().filter_map(|r| r[0].as_i64()).collect();
    assert_eq!(numbers, vec![0, 1, 2, 3, 4, 5]);
    assert!(connection.is_usable());
}

/// Whom a fake node names when asked for the leader.
#[derive(Clone)]
enum Names {
    Itself,
    Other(String),
    Nobody,
}

/// A fake node that answers LEADER as `names` says, OPEN with database 0, EXEC with a result,
/// ADD with `busy_adds` BUSY failures before success, and anything else with an empty
/// configuration.
async fn fake_member(ip: &str, names: Names, busy_adds: usize) -> (FakeNode, Arc<AtomicUsize>) {
    let adds = Arc::new(AtomicUsize::new(0));
    let counter = adds.clone();
    let node = FakeNode::start_with(ip, move |own| {
        move |request| {
            let leader = match &names {
                Names::Itself => own.clone(),
                Names::Other(address) => address.clone(),
                Names::Nobody => String::new(),
            };
            let reply = match request {
                Request::Leader => Response::Server {
                    id: 7,
                    address: leader,
                },
                Request::Open { .. } => Response::Db { id: 0 },
                Request::ExecSql { .. } => Response::Result {
                    last_insert_id: 1,
                    rows_affected: 1,
                },
                Request::Add { .. } if counter.fetch_add(1, Ordering::SeqCst) < busy_adds => {
                    Response::Failure {
                        code: failure_code::BUSY,
                        message: "a configuration change is already in progress".into(),
                    }
                }
                Request::Add { .. } => Response::Empty,
                _ => Response::Servers(vec![NodeInfo {
                    id: 7,
                    address: "x".into(),
                    role: NodeRole::Voter,
                }]),
            };
            async move { Reply::response(reply) }
        }
    })
    .await;
    (node, adds)
}

#[tokio::test]
async fn a_leader_is_trusted_only_when_it_names_itself() {
    // B names C; C names D (nothing listens there); A knows no leader. Nobody names itself.
    let (c, _) = fake_member("127.12.1.13", Names::Other("127.12.1.14:1".into()), 0).await;
    let (b, _) = fake_member("127.12.1.12", Names::Other(c.address.clone()), 0).await;
    let (a, _) = fake_member("127.12.1.15", Names::Nobody, 0).await;
    let result = Client::connect_leader(&[&a.address, &b.address, &c.address], options()).await;
    let error = result.expect_err("no node names itself");
    assert!(matches!(error, Error::NoLeader { .. }), "{error:?}");
}

#[tokio::test]
async fn discovery_follows_a_redirect_to_a_self_named_leader() {
    let (leader, _) = fake_member("127.12.1.16", Names::Itself, 0).await;
    let (follower, _) = fake_member("127.12.1.17", Names::Other(leader.address.clone()), 0).await;
    let mut client = Client::connect_leader(&[&follower.address], options())
        .await
        .expect("finds the leader through the follower");
    assert_eq!(client.leader_address(), Some(leader.address.as_str()));
    let confirmed = client.leader().await.expect("leader");
    assert_eq!(confirmed.id, 7);
}

#[tokio::test]
async fn busy_is_retried_with_backoff() {
    let (node, adds) = fake_member("127.12.1.18", Names::Itself, 2).await;
    let mut client = Client::connect_leader(&[&node.address], options())
        .await
        .expect("finds the leader");
    client
        .add(2, "127.12.1.99:9001")
        .await
        .expect("added after two busy answers");
    assert_eq!(adds.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn client_futures_can_be_spawned() {
    let (node, _) = fake_member("127.12.1.19", Names::Itself, 0).await;
    let mut client = Client::connect_leader(&[&node.address], options())
        .await
        .expect("finds the leader");
    let task = tokio::spawn(async move { client.exec("db", "INSERT 1", &[]).await });
    let result = task.await.expect("task ran").expect("exec");
    assert_eq!(result.rows_affected, 1);
}

#[tokio::test]
async fn not_leader_is_followed_to_the_new_leader() {
    let (b, _) = fake_member("127.12.1.21", Names::Itself, 0).await;
    let deposed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let b_address = b.address.clone();
    let a = FakeNode::start_with("127.12.1.20", {
        let deposed = deposed.clone();
        move |own| {
            move |request| {
                let reply = match request {
                    Request::Leader if deposed.load(Ordering::SeqCst) => Response::Server {
                        id: 7,
                        address: b_address.clone(),
                    },
                    Request::Leader => Response::Server {
                        id: 1,
                        address: own.clone(),
                    },
                    Request::Open { .. } => Response::Db { id: 0 },
                    _ => {
                        // Leadership moved to B just before this statement arrived.
                        deposed.store(true, Ordering::SeqCst);
                        Response::Failure {
                            code: failure_code::NOT_LEADER,
                            message: "not leader".into(),
                        }
                    }
                };
                async move { Reply::response(reply) }
            }
        }
    })
    .await;
    let mut client = Client::connect_leader(&[&a.address, &b.address], options())
        .await
        .expect("finds A");
    assert_eq!(client.leader_address(), Some(a.address.as_str()));
    let result = client.exec("db", "INSERT 1", &[]).await.expect("runs on B");
    assert_eq!(result.rows_affected, 1);
    assert_eq!(client.leader_address(), Some(b.address.as_str()));
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    let listener = tokio::net::TcpListener::bind("127.12.1.22:0")
        .await
        .expect("binds");
    let address = listener.local_addr().expect("bound").to_string();
    drop(listener);
    let error = Connection::connect(&address, &options())
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(&error, Error::Connect { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused),
        "{error:?}"
    );
}

/// What a scripted leader answers to one EXEC_SQL.
#[derive(Clone, Copy)]
enum ExecAnswer {
    Fail(u64, &'static str),
    /// Close the connection without answering (the node died mid-request).
    Close,
}

/// A leader that answers successive EXEC_SQL requests from `script` and then with a result;
/// runs `sql` through a [`Client`] and returns the outcome with the number of EXEC_SQL and
/// OPEN requests the leader received.
async fn exec_scripted(
    ip: &str,
    script: &[ExecAnswer],
    sql: &str,
) -> (Result<dqlite::client::ExecResult, Error>, usize, usize) {
    let execs = Arc::new(AtomicUsize::new(0));
    let opens = Arc::new(AtomicUsize::new(0));
    let script = script.to_vec();
    let node = FakeNode::start_with(ip, {
        let (execs, opens) = (execs.clone(), opens.clone());
        move |own| {
            move |request| {
                let reply = match request {
                    Request::Leader => Reply::response(Response::Server {
                        id: 1,
                        address: own.clone(),
                    }),
                    Request::Open { .. } => {
                        opens.fetch_add(1, Ordering::SeqCst);
                        Reply::response(Response::Db { id: 0 })
                    }
                    Request::ExecSql { .. } => {
                        match script.get(execs.fetch_add(1, Ordering::SeqCst)) {
                            Some(ExecAnswer::Fail(code, message)) => {
                                Reply::response(Response::Failure {
                                    code: *code,
                                    message: (*message).into(),
                                })
                            }
                            Some(ExecAnswer::Close) => Reply::BytesThenClose(Vec::new()),
                            None => Reply::response(Response::Result {
                                last_insert_id: 1,
                                rows_affected: 1,
                            }),
                        }
                    }
                    _ => Reply::response(Response::Empty),
                };
                async move { reply }
            }
        }
    })
    .await;
    let mut client = Client::connect_leader(&[&node.address], options())
        .await
        .expect("finds the leader");
    let result = client.exec("db", sql, &[]).await;
    (
        result,
        execs.load(Ordering::SeqCst),
        opens.load(Ordering::SeqCst),
    )
}

/// What the client should make of a script: done (after this many EXEC_SQLs and OPENs), an
/// unknown outcome after one EXEC_SQL, or the node's own failure after one.
#[derive(Debug, PartialEq)]
enum Expected {
    Done { execs: usize, opens: usize },
    Unknown,
    Failure(u64),
}

async fn check_exec(ip: &str, script: &[ExecAnswer], sql: &str, expected: Expected) {
    let (result, execs, opens) = exec_scripted(ip, script, sql).await;
    let seen = match &result {
        Ok(_) => Expected::Done { execs, opens },
        Err(error) if error.outcome_unknown() => {
            assert_eq!(
                execs, 1,
                "an unknown outcome is never sent again: {error:?}"
            );
            Expected::Unknown
        }
        Err(error) => {
            assert_eq!(execs, 1, "{error:?}");
            Expected::Failure(error.failure_code().unwrap_or(0))
        }
    };
    assert_eq!(
        seen,
        expected,
        "{sql:?} after {} scripted answers: {result:?}",
        script.len()
    );
}

#[tokio::test]
async fn a_write_is_sent_again_only_when_it_certainly_did_not_run() {
    use ExecAnswer::{Close, Fail};
    const ONE: &str = "INSERT INTO kv VALUES (1)";
    const TWO: &str = "INSERT INTO kv VALUES (1); INSERT INTO kv VALUES (2)";
    let busy = Fail(failure_code::BUSY, "database is locked");
    let not_leader = Fail(failure_code::NOT_LEADER, "not leader");
    let raw_not_leader = Fail(7, "not an error");
    let no_database = Fail(12, "no database opened");
    let lost = Fail(failure_code::LEADERSHIP_LOST, "disk I/O error");
    let unique = Fail(2067, "UNIQUE constraint failed: kv.k");
    let done = |execs, opens| Expected::Done { execs, opens };

    check_exec("127.12.1.30", &[busy, busy], ONE, done(3, 1)).await;
    check_exec("127.12.1.31", &[not_leader], ONE, done(2, 2)).await;
    check_exec("127.12.1.32", &[raw_not_leader], ONE, done(2, 2)).await;
    check_exec("127.12.1.33", &[no_database], ONE, done(2, 2)).await;
    check_exec("127.12.1.34", &[lost], ONE, Expected::Unknown).await;
    check_exec("127.12.1.35", &[Close], ONE, Expected::Unknown).await;
    check_exec("127.12.1.36", &[unique], ONE, Expected::Failure(2067)).await;
    // Several statements: only "not leader", sent before the first ran, is retried.
    check_exec("127.12.1.37", &[not_leader], TWO, done(2, 2)).await;
    check_exec("127.12.1.38", &[busy], TWO, Expected::Unknown).await;
    check_exec("127.12.1.39", &[raw_not_leader], TWO, Expected::Unknown).await;
    check_exec("127.12.1.40", &[unique], TWO, Expected::Unknown).await;
    check_exec("127.12.1.41", &[lost], TWO, Expected::Unknown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_of_one_process_take_turns_at_the_leader() {
    // A leader that takes a while over each EXEC_SQL and records how many overlap.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let node = FakeNode::start_with("127.12.1.42", {
        let (in_flight, most) = (in_flight.clone(), most.clone());
        move |own| {
            move |request| {
                let (in_flight, most, own) = (in_flight.clone(), most.clone(), own.clone());
                async move {
                    Reply::response(match request {
                        Request::Leader => Response::Server {
                            id: 1,
                            address: own,
                        },
                        Request::Open { .. } => Response::Db { id: 0 },
                        _ => {
                            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            Response::Result {
                                last_insert_id: 1,
                                rows_affected: 1,
                            }
                        }
                    })
                }
            }
        }
    })
    .await;
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let mut client = Client::connect_leader(&[&node.address], options())
            .await
            .expect("finds the leader");
        writers.spawn(async move {
            for _ in 0..5 {
                client.exec("db", "INSERT 1", &[]).await.expect("exec");
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("writer task");
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "writes overlapped at the leader"
    );
}

/// Discovery asks every address at once: a node that accepts connections and never answers
/// (a hung or black-holed machine) costs nothing while another names itself the leader, rather
/// than one whole request timeout per silent address in front of it.
#[tokio::test]
async fn a_silent_node_does_not_delay_discovery() {
    let silent = FakeNode::start("127.12.1.77", |_| async { Reply::Silence }).await;
    let (leader, _) = fake_member("127.12.1.78", Names::Itself, 0).await;
    let patient = Options {
        connect_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(10),
        ..options()
    };
    let began = std::time::Instant::now();
    let client = Client::connect_leader(&[&silent.address, &leader.address], patient)
        .await
        .expect("finds the leader beside the silent node");
    assert_eq!(client.leader_address(), Some(leader.address.as_str()));
    // Asked in turn, the silent node would have held discovery for its 10 s request timeout.
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "discovery took {:?}",
        began.elapsed()
    );
}
