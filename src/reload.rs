//! The client of the controller agent's reload socket: `GET /agent-id` and `POST /reload`,
//! minimal HTTP/1.1 over a unix socket with read and write timeouts, responses parsed by
//! `httparse`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use controller_contract::conf::is_agent_id;
use controller_contract::reload::{AGENT_ID_PATH, RELOAD_PATH};

/// How long one read or write on the socket may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// The largest response read.
const MAX_RESPONSE: usize = 64 * 1024;

/// Why the reload socket did not answer as the contract says.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the reload socket {path} is not there yet")]
    Absent { path: PathBuf },
    #[error("nothing listens on the reload socket {path} yet")]
    Refused { path: PathBuf },
    #[error("cannot talk to the reload socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the reload socket {path} answered malformed HTTP: {detail}")]
    Malformed { path: PathBuf, detail: String },
    #[error("the reload socket {path} answered {method} {route} with status {status}")]
    Status {
        path: PathBuf,
        method: &'static str,
        route: &'static str,
        status: u16,
    },
    #[error(
        "the reload socket {path} gave {body:?} as the agent id, which is not a controller id"
    )]
    BadAgentId { path: PathBuf, body: String },
}

impl ReloadError {
    /// Whether the agent is simply not up yet (the socket is missing or nobody listens).
    pub fn is_not_up(&self) -> bool {
        matches!(
            self,
            ReloadError::Absent { .. } | ReloadError::Refused { .. }
        )
    }
}

/// `GET /agent-id`: the controller id of this machine's agent.
pub fn agent_id(socket: &Path) -> Result<String, ReloadError> {
    let (status, body) = request(socket, "GET", AGENT_ID_PATH)?;
    if status != 200 {
        return Err(ReloadError::Status {
            path: socket.to_owned(),
            method: "GET",
            route: AGENT_ID_PATH,
            status,
        });
    }
    let body = String::from_utf8_lossy(&body).trim().to_owned();
    if !is_agent_id(&body) {
        return Err(ReloadError::BadAgentId {
            path: socket.to_owned(),
            body: body.chars().take(64).collect(),
        });
    }
    Ok(body)
}

/// `POST /reload`: asks the agent to re-read controller.conf.
pub fn reload(socket: &Path) -> Result<(), ReloadError> {
    let (status, _) = request(socket, "POST", RELOAD_PATH)?;
    if !(200..300).contains(&status) {
        return Err(ReloadError::Status {
            path: socket.to_owned(),
            method: "POST",
            route: RELOAD_PATH,
            status,
        });
    }
    Ok(())
}

/// Sends one request and returns the status code and body.
fn request(
    socket: &Path,
    method: &'static str,
    route: &'static str,
) -> Result<(u16, Vec<u8>), ReloadError> {
    let io = |source: std::io::Error| ReloadError::Io {
        path: socket.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ReloadError::Absent {
            path: socket.to_owned(),
        },
        std::io::ErrorKind::ConnectionRefused => ReloadError::Refused {
            path: socket.to_owned(),
        },
        _ => io(source),
    })?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let head = format!(
        "{method} {route} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).map_err(io)?;

    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut eof = false;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let parsed = response
            .parse(&buffer)
            .map_err(|e| ReloadError::Malformed {
                path: socket.to_owned(),
                detail: e.to_string(),
            })?;
        if let httparse::Status::Complete(head_len) = parsed {
            let status = response.code.unwrap_or_default();
            let length = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| {
                    std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .ok_or_else(|| ReloadError::Malformed {
                            path: socket.to_owned(),
                            detail: "bad content-length".into(),
                        })
                })
                .transpose()?;
            // 204 and 304 have no body; otherwise the length says, or the close does.
            let body_done = match length {
                _ if status == 204 || status == 304 => Some(0),
                Some(length) if buffer.len() >= head_len + length => Some(length),
                None if eof => Some(buffer.len() - head_len),
                _ => None,
            };
            if let Some(length) = body_done {
                return Ok((status, buffer[head_len..head_len + length].to_vec()));
            }
        }
        if eof {
            return Err(ReloadError::Malformed {
                path: socket.to_owned(),
                detail: "connection closed before the response ended".into(),
            });
        }
        if buffer.len() > MAX_RESPONSE {
            return Err(ReloadError::Malformed {
                path: socket.to_owned(),
                detail: format!("response longer than {MAX_RESPONSE} bytes"),
            });
        }
        let read = stream.read(&mut chunk).map_err(io)?;
        if read == 0 {
            eof = true;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// Serves one canned response and returns the request it read.
    fn serve_once(
        response: &'static [u8],
    ) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<String>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.socket");
        let listener = UnixListener::bind(&path).expect("bind");
        let thread = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut chunk).expect("read");
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&chunk[..n]);
            }
            stream.write_all(response).expect("write");
            String::from_utf8_lossy(&request).into_owned()
        });
        (dir, path, thread)
    }

    #[test]
    fn agent_id_table() {
        let check = |response: &'static [u8], expected: Result<&str, &str>| {
            let (_dir, path, thread) = serve_once(response);
            let got = agent_id(&path).map_err(|e| e.to_string());
            let request = thread.join().expect("server thread");
            assert!(
                request.starts_with("GET /agent-id HTTP/1.1\r\n"),
                "{request}"
            );
            match (got, expected) {
                (Ok(id), Ok(want)) => assert_eq!(id, want),
                (Err(error), Err(want)) => assert!(error.contains(want), "{error} lacks {want}"),
                (got, want) => panic!("got {got:?}, want {want:?}"),
            }
        };
        check(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n0", Ok("0"));
        check(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n12\n",
            Ok("12"),
        );
        check(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n7", Ok("7"));
        check(
            b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
            Err("with status 500"),
        );
        check(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            Err("not a controller id"),
        );
        check(b"garbage\r\n\r\n", Err("malformed HTTP"));
        check(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n1",
            Err("closed before the response ended"),
        );
    }

    #[test]
    fn reload_accepts_204() {
        let (_dir, path, thread) = serve_once(b"HTTP/1.1 204 No Content\r\n\r\n");
        reload(&path).expect("204 is success");
        let request = thread.join().expect("server thread");
        assert!(
            request.starts_with("POST /reload HTTP/1.1\r\n"),
            "{request}"
        );
    }

    #[test]
    fn absent_and_refused_are_not_up() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.socket");
        let error = agent_id(&missing).expect_err("no socket");
        assert!(matches!(error, ReloadError::Absent { .. }), "{error}");
        assert!(error.is_not_up());
        // A socket file whose listener is gone refuses connections.
        let stale = dir.path().join("stale.socket");
        drop(UnixListener::bind(&stale).expect("bind"));
        let error = agent_id(&stale).expect_err("nobody listens");
        assert!(matches!(error, ReloadError::Refused { .. }), "{error}");
        assert!(error.is_not_up());
    }
}
