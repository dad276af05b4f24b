//! The dbaccessor status socket: a unix socket speaking one JSON request line and one JSON
//! response line per connection. The charm's actions (`cluster-status`, `recover-cluster`)
//! and the simulator's `status` are its clients.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What a client asks, one JSON object on one line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    /// The daemon's view of the local node and the cluster.
    Status,
}

/// The daemon's answer to [`Request::Status`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The controller's agent id, as served on `GET /agent-id`.
    pub agent_id: String,
    /// The Dqlite node id, once the node has one.
    pub node_id: Option<u64>,
    /// The address the node is bound to (`ip:17666`), once it is started.
    pub bind_address: Option<String>,
    /// Where the daemon is in converging the local node.
    pub state: NodeState,
    /// Why the daemon is in that state, in words an operator can act on.
    pub reason: String,
    /// The cluster members as Dqlite reports them (empty when unknown).
    pub members: Vec<Member>,
    /// The leader's node id as Dqlite reports it.
    pub leader_id: Option<u64>,
    /// The last `controller.conf` the daemon read, if any.
    pub config: Option<ConfigSeen>,
}

/// The states the daemon moves the local node through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    /// No usable controller.conf, or no own address in it.
    Waiting,
    /// Starting a new one-node cluster.
    Bootstrapping,
    /// Starting a new node and asking the cluster to add it.
    Joining,
    /// Running as a member of the cluster.
    Member,
    /// Rewriting membership offline (re-bind or shrink to one) and restarting.
    Recovering,
    /// A start or join failed; the daemon retries with back-off.
    Failed,
}

/// One cluster member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub address: String,
    pub role: Role,
}

/// Dqlite node roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Voter,
    StandBy,
    Spare,
}

/// What the daemon last read from `controller.conf`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigSeen {
    /// Seconds since the Unix epoch when the file was read.
    pub read_at_unix: u64,
    /// The bind addresses it held, or the error that made it unusable.
    pub bind_addresses: Result<BTreeMap<String, IpAddr>, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_form() {
        let line = serde_json::to_string(&Request::Status).expect("serializes");
        assert_eq!(line, r#"{"request":"status"}"#);
        assert_eq!(
            serde_json::from_str::<Request>(&line).expect("parses"),
            Request::Status
        );
    }

    #[test]
    fn status_round_trips() {
        let status = Status {
            agent_id: "0".into(),
            node_id: Some(1),
            bind_address: Some("10.0.0.1:17666".into()),
            state: NodeState::Member,
            reason: "member of a 1-node cluster".into(),
            members: vec![Member {
                id: 1,
                address: "10.0.0.1:17666".into(),
                role: Role::Voter,
            }],
            leader_id: Some(1),
            config: Some(ConfigSeen {
                read_at_unix: 5,
                bind_addresses: Ok([("0".to_owned(), "10.0.0.1".parse().expect("ip"))].into()),
            }),
        };
        let text = serde_json::to_string(&status).expect("serializes");
        assert!(text.contains(r#""state":"member""#), "{text}");
        assert!(text.contains(r#""role":"voter""#), "{text}");
        assert_eq!(
            serde_json::from_str::<Status>(&text).expect("parses"),
            status
        );
    }
}
