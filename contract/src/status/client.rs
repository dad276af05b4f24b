//! The status socket's one client: synchronous (std only), so that the charm's hooks and
//! actions, the simulator and the tests (through `spawn_blocking`) all speak the protocol
//! alike. One request line per connection, one answer line back.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{ErrorAnswer, Request};

/// The longest answer line read: a status of hundreds of members fits many times over.
const MAX_ANSWER: u64 = 1024 * 1024;

/// Why a request got no answer of the type asked for.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, writing or reading failed (a timeout included).
    #[error("status socket {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The daemon answered `{"error": ...}`: it refused the request, and says why.
    #[error("{0}")]
    Refused(String),
    /// The answer line is not the type asked for.
    #[error("status socket {path}: unexpected answer {line:?}: {source}")]
    Parse {
        path: String,
        line: String,
        source: serde_json::Error,
    },
}

/// Sends `request` on the socket at `socket` and reads the answer as `T` (or the daemon's
/// `error`); `timeout` bounds each of the connection's writes and reads.
pub fn ask<T: DeserializeOwned>(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<T, ClientError> {
    let exchange = || -> std::io::Result<String> {
        let mut stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut line = serde_json::to_string(request).expect("a request serializes");
        line.push('\n');
        stream.write_all(line.as_bytes())?;
        let mut answer = String::new();
        BufReader::new(stream)
            .take(MAX_ANSWER)
            .read_line(&mut answer)?;
        Ok(answer)
    };
    let path = || socket.display().to_string();
    let answer = exchange().map_err(|source| ClientError::Io {
        path: path(),
        source,
    })?;
    if let Ok(ErrorAnswer { error }) = serde_json::from_str::<ErrorAnswer>(&answer) {
        return Err(ClientError::Refused(error));
    }
    serde_json::from_str(&answer).map_err(|source| ClientError::Parse {
        path: path(),
        line: answer.trim().to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;
    use crate::status::{NodeState, Status};

    /// Serves one connection on a fresh socket: reads the request line, answers `answer`
    /// (or nothing, closing at once, when it is `None`); returns the client's result and the
    /// request line the server read.
    fn exchange(answer: Option<&str>) -> (Result<Status, ClientError>, String) {
        let dir = tempfile_dir();
        let path = dir.join("status.socket");
        let listener = UnixListener::bind(&path).expect("bind");
        let answer = answer.map(str::to_owned);
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream);
            let mut request = String::new();
            reader.read_line(&mut request).expect("read the request");
            if let Some(answer) = answer {
                let mut stream = reader.into_inner();
                stream.write_all(answer.as_bytes()).expect("answer");
            }
            request
        });
        let result = ask::<Status>(&path, &Request::Status, Duration::from_secs(5));
        let request = server.join().expect("the server thread");
        std::fs::remove_dir_all(&dir).expect("remove the socket dir");
        (result, request)
    }

    /// A directory of this test's own under the system temp dir (the contract crate has no
    /// tempfile dependency).
    fn tempfile_dir() -> std::path::PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "status-client-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("create a socket dir");
        dir
    }

    #[test]
    fn a_status_answer_parses() {
        let status = Status {
            agent_id: "0".into(),
            node_id: Some(1),
            bind_address: Some("10.0.0.1:17666".into()),
            state: NodeState::Member,
            reason: "ok".into(),
            members: vec![],
            leader_id: Some(1),
            config: None,
            health: None,
            decisions: Vec::new(),
        };
        let answer = serde_json::to_string(&status).expect("a status serializes");
        let (result, request) = exchange(Some(&format!("{answer}\n")));
        assert_eq!(request, "{\"request\":\"status\"}\n");
        assert_eq!(result.expect("a status"), status);
    }

    #[test]
    fn an_error_answer_is_a_refusal_with_the_daemons_words() {
        let (result, _) = exchange(Some("{\"error\":\"recovery refused: behind\"}\n"));
        match result {
            Err(ClientError::Refused(why)) => assert_eq!(why, "recovery refused: behind"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn other_answers_and_silence_are_errors_naming_the_socket() {
        let (result, _) = exchange(Some("{\"what\":1}\n"));
        let error = result.expect_err("not a status").to_string();
        assert!(
            error.starts_with("status socket ")
                && error.contains(r#"unexpected answer "{\"what\":1}""#),
            "{error}"
        );
        let (result, _) = exchange(None);
        assert!(
            matches!(result, Err(ClientError::Parse { ref line, .. }) if line.is_empty()),
            "{result:?}"
        );
        let missing = ask::<Status>(
            Path::new("/nonexistent/status.socket"),
            &Request::Status,
            Duration::from_secs(1),
        );
        assert!(
            matches!(&missing, Err(ClientError::Io { path, .. }) if path == "/nonexistent/status.socket"),
            "{missing:?}"
        );
    }
}
