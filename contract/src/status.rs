//! The dbaccessor status socket: a unix socket speaking one JSON request line and one JSON
//! response line per connection. The charm's actions (`cluster-status`, `recover-cluster`),
//! its hooks (the published log position) and the simulator's `status` are its clients.
//!
//! Every answer is one of: [`Status`] (for `status`), [`Probe`] (for `probe`),
//! [`Recovered`] (for `recover`), or [`ErrorAnswer`] (`{"error":"..."}`) for any request.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub mod client;

/// What a client asks, one JSON object on one line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    /// The daemon's view of the local node and the cluster.
    Status,
    /// The status plus a live reachability probe of every member and the local node's last
    /// log position (what `cluster-status` shows and what every unit publishes).
    Probe {
        /// Skip the reachability checks (a hook publishing its log position needs only that,
        /// and should not wait on unreachable members).
        #[serde(default)]
        log_position_only: bool,
    },
    /// The operator's way out after losing quorum for good: stop the local node, rewrite
    /// membership to it alone and restart it. Only ever sent by the `recover-cluster` action.
    Recover {
        /// Recover even when `best_peer` is ahead of the local log (loses its extra entries).
        #[serde(default)]
        force: bool,
        /// The greatest log position another member published; the daemon refuses (unless
        /// `force`) when its own log, read once the node is stopped, is behind it.
        #[serde(default)]
        best_peer: Option<LogPosition>,
    },
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
    /// How many voter failures the cluster survives now, as this daemon last assessed it
    /// (`None` while the node is not running).
    #[serde(default)]
    pub health: Option<Health>,
    /// The daemon's most recent convergence decisions, oldest first (at most
    /// [`DECISIONS_KEPT`]): what it was woken by, what it decided and why. A retry that
    /// decides what the one before it decided is not added again.
    #[serde(default)]
    pub decisions: Vec<Decided>,
}

/// How many decisions [`Status::decisions`] keeps.
pub const DECISIONS_KEPT: usize = 16;

/// One convergence decision of the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decided {
    /// What started the round: `start-up`, `POST /reload`, `file watch`, `node failed`,
    /// `retry`, `recover-cluster`.
    pub trigger: String,
    /// The action: `wait`, `keep`, `fail`, `bootstrap`, `join`, `restart`, `re-bind`,
    /// `probe quorum`, `shrink to one`, `set aside and rejoin`, `outside the configuration`.
    pub action: String,
    /// Why, in the words the status gives.
    pub reason: String,
    /// When, by the daemon's wall clock (milliseconds since the Unix epoch).
    pub at_unix_ms: u64,
}

/// The cluster's health as one daemon sees it. A voter counts towards fault tolerance only
/// when it is connected (it reported its log position through the leader recently) and
/// caught up (that position is within a small window of the leader's): a voter that just
/// came back from a partition holds a vote but could not take over without losing writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// The overall verdict.
    pub verdict: Verdict,
    /// One line for an operator: the verdict, the counts and what is wrong.
    pub summary: String,
    /// Voters in the configuration.
    pub voters: usize,
    /// Voters that are connected and caught up (the leader included).
    pub ready_voters: usize,
    /// Voters a quorum needs.
    pub needed: usize,
    /// Further voter failures the cluster survives now.
    pub survives: usize,
    /// Every member's progress, as the members reported it.
    #[serde(default)]
    pub members: Vec<MemberProgress>,
    /// Controllers that `controller.conf` names but the Dqlite configuration lacks.
    #[serde(default)]
    pub missing: Vec<MissingController>,
}

/// The health verdicts, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// A leader, every voter connected and caught up, every mapped controller a member.
    Healthy,
    /// A leader and every voter connected, but some voter is still catching up.
    CatchingUp,
    /// A leader, but a voter is not connected or a mapped controller is not a member.
    Degraded,
    /// No leader, or fewer than a quorum of voters connected.
    QuorumLost,
    /// Nothing is known yet (the node is not a member, or no progress was reported).
    Unknown,
}

impl Verdict {
    /// The wire name (`healthy`, `catching-up`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::CatchingUp => "catching-up",
            Verdict::Degraded => "degraded",
            Verdict::QuorumLost => "quorum-lost",
            Verdict::Unknown => "unknown",
        }
    }
}

/// One member's last progress report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberProgress {
    pub id: u64,
    pub role: Role,
    /// The member reported through the leader recently.
    pub connected: bool,
    /// Its log is within the catch-up window of the leader's.
    pub caught_up: bool,
    /// Its last reported log position.
    #[serde(default)]
    pub log_position: Option<LogPosition>,
    /// How many entries it was behind the leader's last report.
    #[serde(default)]
    pub behind: Option<u64>,
    /// How long ago (database clock) it last reported, in milliseconds.
    #[serde(default)]
    pub last_report_ms: Option<u64>,
}

/// A controller the map names that is not in the Dqlite configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingController {
    pub agent_id: String,
    pub address: String,
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
    /// Running, but the leader's configuration does not list this node and it cannot
    /// rejoin (the map names no peer, or not this controller).
    Removed,
}

impl NodeState {
    /// The wire name (`member`, `joining`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Waiting => "waiting",
            NodeState::Bootstrapping => "bootstrapping",
            NodeState::Joining => "joining",
            NodeState::Member => "member",
            NodeState::Recovering => "recovering",
            NodeState::Failed => "failed",
            NodeState::Removed => "removed",
        }
    }
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

impl Role {
    /// The wire name (`voter`, `stand-by`, `spare`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Voter => "voter",
            Role::StandBy => "stand-by",
            Role::Spare => "spare",
        }
    }
}

/// What the daemon last read from `controller.conf`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigSeen {
    /// Seconds since the Unix epoch when the file was read.
    pub read_at_unix: u64,
    /// The bind addresses it held (`None` when the file was missing or unusable).
    #[serde(default)]
    pub bind_addresses: Option<BTreeMap<String, IpAddr>>,
    /// Why the file was missing or unusable.
    #[serde(default)]
    pub error: Option<String>,
}

/// Where a node's raft log ends: the term and index of its last entry, ordered term first
/// (raft's election rule). Written `term/index` in relation bags and action results.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct LogPosition {
    pub term: u64,
    pub index: u64,
}

impl fmt::Display for LogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.term, self.index)
    }
}

/// A `term/index` text that is not a log position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a log position (term/index)")]
pub struct BadLogPosition(pub String);

impl FromStr for LogPosition {
    type Err = BadLogPosition;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadLogPosition(text.to_owned());
        let (term, index) = text.split_once('/').ok_or_else(bad)?;
        Ok(LogPosition {
            term: term.parse().map_err(|_| bad())?,
            index: index.parse().map_err(|_| bad())?,
        })
    }
}

/// The daemon's answer to [`Request::Probe`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// The status at the time of the probe.
    pub status: Status,
    /// Every member of `status.members`, probed now (connect and a LEADER request).
    #[serde(default)]
    pub reachable: Vec<Reachability>,
    /// The local node's last log position (read from its raft files).
    #[serde(default)]
    pub log_position: Option<LogPosition>,
    /// Why the log position could not be read.
    #[serde(default)]
    pub log_position_error: Option<String>,
}

/// Whether one member answered the probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reachability {
    pub id: u64,
    pub address: String,
    pub reachable: bool,
}

/// The daemon's answer to a successful [`Request::Recover`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovered {
    /// The local node's id.
    pub node_id: u64,
    /// The local node's address.
    pub address: String,
    /// The local log position the recovery started from (read with the node stopped).
    pub log_position: LogPosition,
    /// Membership before the rewrite.
    pub members_before: Vec<Member>,
    /// What the daemon did, in order.
    pub steps: Vec<String>,
    /// The status after the node restarted.
    pub status: Status,
}

/// The answer to a request the daemon could not serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_status() -> Status {
        Status {
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
                bind_addresses: Some([("0".to_owned(), "10.0.0.1".parse().expect("ip"))].into()),
                error: None,
            }),
            health: None,
            decisions: Vec::new(),
        }
    }

    #[test]
    fn request_wire_forms() {
        let check = |request: Request, line: &str| {
            assert_eq!(
                serde_json::to_string(&request).expect("serializes"),
                line,
                "{request:?}"
            );
            assert_eq!(
                serde_json::from_str::<Request>(line).expect("parses"),
                request,
                "{line}"
            );
        };
        check(Request::Status, r#"{"request":"status"}"#);
        check(
            Request::Probe {
                log_position_only: true,
            },
            r#"{"request":"probe","log_position_only":true}"#,
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"request":"probe"}"#).expect("parses"),
            Request::Probe {
                log_position_only: false
            }
        );
        check(
            Request::Recover {
                force: true,
                best_peer: Some(LogPosition { term: 2, index: 9 }),
            },
            r#"{"request":"recover","force":true,"best_peer":{"term":2,"index":9}}"#,
        );
        // The optional fields may be left out.
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"request":"recover"}"#).expect("parses"),
            Request::Recover {
                force: false,
                best_peer: None
            }
        );
    }

    #[test]
    fn status_round_trips() {
        let status = sample_status();
        let text = serde_json::to_string(&status).expect("serializes");
        assert!(text.contains(r#""state":"member""#), "{text}");
        assert!(text.contains(r#""role":"voter""#), "{text}");
        assert!(
            text.contains(r#""bind_addresses":{"0":"10.0.0.1"},"error":null"#),
            "{text}"
        );
        assert_eq!(
            serde_json::from_str::<Status>(&text).expect("parses"),
            status
        );
    }

    #[test]
    fn config_seen_without_the_new_fields_parses() {
        let seen: ConfigSeen =
            serde_json::from_str(r#"{"read_at_unix":3}"#).expect("old form parses");
        assert_eq!(seen.bind_addresses, None);
        assert_eq!(seen.error, None);
    }

    #[test]
    fn probe_without_optional_fields_parses() {
        let text = format!(
            r#"{{"status":{}}}"#,
            serde_json::to_string(&sample_status()).expect("serializes")
        );
        let probe: Probe = serde_json::from_str(&text).expect("parses");
        assert!(probe.reachable.is_empty());
        assert_eq!(probe.log_position, None);
    }

    #[test]
    fn log_position_text_table() {
        let check = |text: &str, expected: Option<(u64, u64)>| {
            let parsed = text.parse::<LogPosition>().ok();
            assert_eq!(
                parsed,
                expected.map(|(term, index)| LogPosition { term, index }),
                "{text}"
            );
            if let Some(position) = parsed {
                assert_eq!(position.to_string(), text);
            }
        };
        check("2/17", Some((2, 17)));
        check("0/0", Some((0, 0)));
        check("2-17", None);
        check("2/", None);
        check("/17", None);
        check("a/1", None);
        check("1/2/3", None);
        check("", None);
    }

    #[test]
    fn log_positions_order_term_first() {
        let p = |term, index| LogPosition { term, index };
        assert!(p(3, 1) > p(2, 100));
        assert!(p(2, 5) > p(2, 4));
    }
}
