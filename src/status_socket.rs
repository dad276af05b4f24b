//! The charm's requests to the dbaccessor's status socket (`<data-dir>/...status.socket`),
//! through the contract's one client (`controller_contract::status::client`).

use std::path::Path;
use std::time::Duration;

use controller_contract::paths;
use controller_contract::status::{client, LogPosition, Probe, Request, Status};
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

/// One request on the status socket, one answer line back as `T` (or its `error`), through
/// the contract's client; errors as text for statuses and action results.
pub fn ask<T: DeserializeOwned>(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<T, String> {
    client::ask(socket, request, timeout).map_err(|e| e.to_string())
}
