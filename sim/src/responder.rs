//! A stand-in for the controller agent's reload socket (`<data-dir>/configchange.socket`):
//! answers `GET /agent-id` with the agent id and `POST /reload` with 204, and records every
//! request, so tests and the demo can run the charm without a dbaccessor.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The largest request head the responder reads.
const MAX_REQUEST: usize = 16 * 1024;

/// One request the responder answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// `/agent-id`, `/reload`, ...
    pub path: String,
}

/// A reload-socket server on its own thread; stops and removes its socket when dropped.
#[derive(Debug)]
pub struct Responder {
    /// The socket path.
    path: PathBuf,
    /// Every request answered, in order.
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    /// Tells the accept loop to end.
    stop: Arc<AtomicBool>,
    /// The accept loop, joined on drop.
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    /// Listens on `path` (replacing a stale socket file) and answers as agent `agent_id`.
    pub fn start(path: &Path, agent_id: &str) -> io::Result<Self> {
        let listener = bind(path)?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let requests = Arc::clone(&requests);
            let stop = Arc::clone(&stop);
            let agent_id = agent_id.to_owned();
            std::thread::spawn(move || {
                serve(&listener, &agent_id, &stop, |request| {
                    requests
                        .lock()
                        .expect("no thread panics holding the request log")
                        .push(request);
                });
            })
        };
        Ok(Self {
            path: path.to_owned(),
            requests,
            stop,
            thread: Some(thread),
        })
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .expect("no thread panics holding the request log")
            .clone()
    }

    /// How many `POST /reload` requests were answered.
    pub fn reloads(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == controller_contract::reload::RELOAD_PATH)
            .count()
    }

    /// Forgets the requests recorded so far.
    pub fn clear(&self) {
        self.requests
            .lock()
            .expect("no thread panics holding the request log")
            .clear();
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the loop sees the flag. Should the socket file be gone
        // already (its dir removed first), the thread cannot be woken: it is left detached
        // rather than joined forever, and ends with the process.
        if UnixStream::connect(&self.path).is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `path`, removing a socket file left by an earlier run.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

/// Answers connections one at a time until `stop` is set (checked after each connection, so
/// a stopper sets it and then connects once), reporting each request.
pub fn serve(
    listener: &UnixListener,
    agent_id: &str,
    stop: &AtomicBool,
    mut report: impl FnMut(RecordedRequest),
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(mut stream) = stream else { continue };
        if let Some(request) = answer(&mut stream, agent_id) {
            report(request);
        }
    }
}

/// Reads one request and answers it; `None` when the client sent no parsable request.
fn answer(stream: &mut UnixStream, agent_id: &str) -> Option<RecordedRequest> {
    let timeout = Some(Duration::from_secs(2));
    stream.set_read_timeout(timeout).ok()?;
    stream.set_write_timeout(timeout).ok()?;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 1024];
    let (method, path) = loop {
        let read = stream.read(&mut chunk).ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buffer) {
            Ok(httparse::Status::Complete(_)) => {
                break (
                    request.method.unwrap_or_default().to_owned(),
                    request.path.unwrap_or_default().to_owned(),
                );
            }
            Ok(httparse::Status::Partial) if buffer.len() < MAX_REQUEST => continue,
            _ => {
                let _ = stream.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return None;
            }
        }
    };
    let response = match (method.as_str(), path.as_str()) {
        ("GET", controller_contract::reload::AGENT_ID_PATH) => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{agent_id}",
            agent_id.len()
        ),
        ("POST", controller_contract::reload::RELOAD_PATH) => {
            "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_owned()
        }
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
    };
    let _ = stream.write_all(response.as_bytes());
    Some(RecordedRequest { method, path })
}
