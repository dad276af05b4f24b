//! The charm's client of the dbaccessor's status socket (`<data-dir>/...status.socket`):
//! one JSON request per connection, one answer line back.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use controller_contract::paths;
use controller_contract::status::{ErrorAnswer, LogPosition, Probe, Request, Status};
use serde::de::DeserializeOwned;

/// How long a status or probe request may take (a probe waits up to 1 s per member, in
/// parallel).
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a hook waits for the log position it publishes.
const HOOK_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The dbaccessor's full probe: its status, each member's reachability and the local log
/// position (up to [`STATUS_TIMEOUT`]).
pub fn probe(data_dir: &Path) -> Result<Probe, String> {
    ask::<Probe>(
        &paths::status_socket(data_dir),
        &Request::Probe {
            log_position_only: false,
        },
        STATUS_TIMEOUT,
    )
}

/// Whether the local dbaccessor knows a leader (`None` when it does not answer). A cheap
/// `status` request: hooks ask this first and read the log only when they publish it.
pub fn local_leader_known(data_dir: &Path) -> Option<bool> {
    ask::<Status>(
        &paths::status_socket(data_dir),
        &Request::Status,
        HOOK_PROBE_TIMEOUT,
    )
    .ok()
    .map(|status| status.leader_id.is_some())
}

/// The local node's last log position, if the dbaccessor answers. Reading it walks the raft
/// files, so hooks ask only when they publish it.
pub fn local_log_position(data_dir: &Path) -> Option<LogPosition> {
    ask::<Probe>(
        &paths::status_socket(data_dir),
        &Request::Probe {
            log_position_only: true,
        },
        HOOK_PROBE_TIMEOUT,
    )
    .ok()?
    .log_position
}

/// One request on the status socket, one answer line back as `T` (or its `error`).
pub fn ask<T: DeserializeOwned>(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<T, String> {
    let exchange = || -> std::io::Result<String> {
        let mut stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut line = serde_json::to_string(request).expect("a request serializes");
        line.push('\n');
        stream.write_all(line.as_bytes())?;
        let mut answer = String::new();
        BufReader::new(stream)
            .take(1024 * 1024)
            .read_line(&mut answer)?;
        Ok(answer)
    };
    let answer = exchange().map_err(|e| format!("status socket {}: {e}", socket.display()))?;
    if let Ok(ErrorAnswer { error }) = serde_json::from_str::<ErrorAnswer>(&answer) {
        return Err(error);
    }
    serde_json::from_str(&answer).map_err(|e| {
        format!(
            "status socket {}: unexpected answer {:?}: {e}",
            socket.display(),
            answer.trim()
        )
    })
}
