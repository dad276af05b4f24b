//! The status socket: per connection, one JSON request line in and one JSON line out
//! ([`controller_contract::status`]). The answers come from the service loop; a probe's
//! reachability checks run here, in the connection's task, so the loop never waits on them.

use std::time::Duration;

use controller_contract::status::{LogPosition, Probe, Reachability, Request, Status};
use dqlite::client::{Connection, Options};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::event::Event;

/// A client that sends nothing is dropped after this long.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A request line longer than this is not a status request.
const MAX_REQUEST: u64 = 4096;
/// How long one member's reachability check (connect and LEADER) may take.
const REACH_TIMEOUT: Duration = Duration::from_millis(500);

/// Serves status requests until `stop` turns true.
pub async fn serve(
    listener: UnixListener,
    events: mpsc::Sender<Event>,
    stop: watch::Receiver<bool>,
    tls: Option<dqlite::tls::Tls>,
) {
    let handle = move |stream: UnixStream| {
        let events = events.clone();
        let tls = tls.clone();
        async move {
            if let Err(e) = answer(stream, events, tls).await {
                log::debug!("status socket: {e}");
            }
        }
    };
    crate::unix::serve_connections(
        "status socket",
        listener,
        crate::unix::MAX_CONNECTIONS,
        stop,
        handle,
    )
    .await;
}

async fn answer(
    stream: UnixStream,
    events: mpsc::Sender<Event>,
    tls: Option<dqlite::tls::Tls>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
    let reply = match tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => error_line("no request line within 5 s"),
        Ok(Err(e)) => error_line(&format!("cannot read the request: {e}")),
        Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim()) {
            Err(e) => error_line(&format!("not a status request: {e}")),
            Ok(Request::Status) => {
                let (reply_tx, reply_rx) = oneshot::channel();
                ask(&events, Event::StatusQuery(reply_tx), reply_rx, |status| {
                    json_line(&status)
                })
                .await
            }
            Ok(Request::Probe { log_position_only }) => {
                let (reply_tx, reply_rx) = oneshot::channel();
                match send(&events, Event::ProbeQuery(reply_tx), reply_rx).await {
                    Ok((status, position)) => {
                        json_line(&probe(status, position, !log_position_only, tls).await)
                    }
                    Err(error) => error_line(error),
                }
            }
            Ok(Request::Recover { force, best_peer }) => {
                let (reply_tx, reply_rx) = oneshot::channel();
                let event = Event::Recover {
                    force,
                    best_peer,
                    reply: reply_tx,
                };
                match send(&events, event, reply_rx).await {
                    Ok(Ok(recovered)) => json_line(&recovered),
                    Ok(Err(refused)) => error_line(&refused),
                    Err(error) => error_line(error),
                }
            }
        },
    };
    write.write_all(reply.as_bytes()).await?;
    write.shutdown().await
}

/// Sends `event` to the loop and waits for its answer.
async fn send<T>(
    events: &mpsc::Sender<Event>,
    event: Event,
    reply: oneshot::Receiver<T>,
) -> Result<T, &'static str> {
    if events.send(event).await.is_err() {
        return Err("the daemon is shutting down");
    }
    reply.await.map_err(|_| "the daemon is shutting down")
}

async fn ask<T>(
    events: &mpsc::Sender<Event>,
    event: Event,
    reply: oneshot::Receiver<T>,
    render: impl FnOnce(T) -> String,
) -> String {
    match send(events, event, reply).await {
        Ok(answer) => render(answer),
        Err(error) => error_line(error),
    }
}

/// Checks every member at once and adds the log position to the status.
async fn probe(
    status: Status,
    position: Result<LogPosition, String>,
    reach: bool,
    tls: Option<dqlite::tls::Tls>,
) -> Probe {
    let mut checks = tokio::task::JoinSet::new();
    for member in status.members.iter().filter(|_| reach) {
        let (id, address) = (member.id, member.address.clone());
        let tls = tls.clone();
        checks.spawn(async move {
            let reachable = reachable(&address, tls).await;
            Reachability {
                id,
                address,
                reachable,
            }
        });
    }
    let mut reachable = checks.join_all().await;
    reachable.sort_by_key(|r| r.id);
    let (log_position, log_position_error) = match position {
        Ok(position) => (Some(position), None),
        Err(error) => (None, Some(error)),
    };
    Probe {
        status,
        reachable,
        log_position,
        log_position_error,
    }
}

/// Whether a node answers a LEADER request at `address` within [`REACH_TIMEOUT`].
async fn reachable(address: &str, tls: Option<dqlite::tls::Tls>) -> bool {
    let options = Options {
        connect_timeout: REACH_TIMEOUT,
        request_timeout: REACH_TIMEOUT,
        tls,
        ..Options::default()
    };
    let check = async {
        let mut connection = Connection::connect(address, &options).await.ok()?;
        connection.leader().await.ok()
    };
    matches!(
        tokio::time::timeout(REACH_TIMEOUT * 2, check).await,
        Ok(Some(_))
    )
}

fn json_line(answer: &impl Serialize) -> String {
    // The answers hold strings, numbers and maps with string keys: serializing cannot fail.
    let mut line = serde_json::to_string(answer).expect("an answer serializes to JSON");
    line.push('\n');
    line
}

fn error_line(message: &str) -> String {
    let mut line = serde_json::json!({ "error": message }).to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use controller_contract::status::NodeState;

    fn sample() -> Status {
        Status {
            agent_id: "3".into(),
            node_id: None,
            bind_address: None,
            state: NodeState::Waiting,
            reason: "no controller.conf yet".into(),
            members: vec![],
            leader_id: None,
            config: None,
            health: None,
            decisions: Vec::new(),
        }
    }

    async fn raw_exchange(path: &std::path::Path, request: &str) -> String {
        let mut stream = UnixStream::connect(path).await.expect("connect");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write request");
        stream.shutdown().await.expect("half close");
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(5),
            BufReader::new(stream).read_line(&mut line),
        )
        .await
        .expect("answer within 5 s")
        .expect("read answer");
        line
    }

    #[tokio::test]
    async fn answers_status_and_rejects_other_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("status.socket");
        let listener = crate::unix::bind_private(&path).expect("bind");
        let (events_tx, mut events_rx) = mpsc::channel(8);
        let (_stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(serve(listener, events_tx, stop_rx, None));
        // Play the service loop: answer every query with the sample status.
        tokio::spawn(async move {
            while let Some(event) = events_rx.recv().await {
                match event {
                    Event::StatusQuery(reply) => {
                        let _ = reply.send(sample());
                    }
                    Event::ProbeQuery(reply) => {
                        let position = LogPosition { term: 2, index: 7 };
                        let _ = reply.send((sample(), Ok(position)));
                    }
                    Event::Recover { force, reply, .. } => {
                        let _ = reply.send(Err(format!("refused (force {force})")));
                    }
                    _ => {}
                }
            }
        });

        let status = test_support::status::status(&path, Duration::from_secs(5))
            .await
            .expect("status");
        assert_eq!(status, sample());

        let check = |request: &'static str, expected: &'static str| {
            let path = path.clone();
            async move {
                let line = raw_exchange(&path, request).await;
                assert!(line.contains(expected), "{request:?} -> {line:?}");
            }
        };
        check("{\"request\":\"status\"}\n", "\"state\":\"waiting\"").await;
        check(
            "{\"request\":\"other\"}\n",
            "\"error\":\"not a status request",
        )
        .await;
        check("garbage\n", "\"error\":\"not a status request").await;
        check(
            "{\"request\":\"probe\"}\n",
            "\"reachable\":[],\"log_position\":{\"term\":2,\"index\":7}",
        )
        .await;
        check(
            "{\"request\":\"recover\",\"force\":true}\n",
            "{\"error\":\"refused (force true)\"}",
        )
        .await;
        check("", "\"error\":\"not a status request").await;
    }
}
