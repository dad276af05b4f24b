//! The closed set of events the service loop reacts to, and where they come from.

use controller_contract::status::{LogPosition, Recovered, Status};
use tokio::sync::oneshot;

/// Everything that can make the service loop act. Nothing else wakes it but its own
/// back-off and health timers.
#[derive(Debug)]
pub enum Event {
    /// `controller.conf` may have changed: re-read it and converge.
    ConfigChanged(Trigger),
    /// The running node stopped answering or lost its leader.
    NodeFailed(String),
    /// A status-socket client wants the current status.
    StatusQuery(oneshot::Sender<Status>),
    /// A status-socket client wants the status and the local log position (the socket
    /// task probes the members itself, outside the loop).
    ProbeQuery(oneshot::Sender<(Status, Result<LogPosition, String>)>),
    /// The `recover-cluster` action: stop the node, rewrite membership to it alone,
    /// restart it. Refused when `best_peer` is ahead of the local log, unless `force`.
    Recover {
        force: bool,
        best_peer: Option<LogPosition>,
        reply: oneshot::Sender<Result<Recovered, String>>,
    },
    /// SIGTERM or SIGINT: hand over, stop the node and return.
    Shutdown,
}

/// What told the service that `controller.conf` may have changed (logged with the decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The daemon started.
    Startup,
    /// `POST /reload` on the reload socket.
    Reload,
    /// The file watch saw the file written or replaced.
    FileWatch,
    /// The back-off after a failed attempt ended.
    Retry,
    /// The health check found the node without a leader for a whole quorum timeout.
    NodeFailed,
    /// The operator's `recover-cluster` action.
    Recover,
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Trigger::Startup => "start-up",
            Trigger::Reload => "POST /reload",
            Trigger::FileWatch => "file watch",
            Trigger::Retry => "retry",
            Trigger::NodeFailed => "node failed",
            Trigger::Recover => "recover-cluster",
        })
    }
}
