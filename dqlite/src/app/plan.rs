//! How a node starts: bootstrap a new cluster, join an existing one, or restart from what
//! its data dir holds. Pure: the shell observes the data dir and the configuration, this
//! module decides.

use crate::node::{NodeIdentity, BOOTSTRAP_ID};

/// What the data dir holds before the node starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PersistedState {
    /// The identity in `info.yaml`, if any.
    pub identity: Option<NodeIdentity>,
    /// Whether raft's files are there (`metadata1` or `metadata2`): the node ran before.
    pub has_raft_data: bool,
    /// Whether a join was started and not confirmed (the `join` marker file, as go-dqlite
    /// names it): the node must make sure it is in the cluster before anything else.
    pub join_pending: bool,
}

/// What to do at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPlan {
    /// Start a new one-voter cluster with id [`BOOTSTRAP_ID`].
    Bootstrap,
    /// Join the cluster through these peers with a new id (the shell generates it and
    /// persists it with a join marker before it asks anyone).
    Join { peers: Vec<String> },
    /// Restart the member the data dir belongs to. With `join_pending`, first make sure
    /// the cluster knows it (ADD again if it does not), through `peers` or the persisted
    /// member list.
    Restart {
        identity: NodeIdentity,
        join_pending: bool,
    },
}

/// Why the node cannot start from what it was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "the data dir belongs to node {} at {persisted}, but the configured address is {configured}: \
         re-bind it offline (rebind) before starting",
        id
    )]
    AddressChanged {
        id: u64,
        persisted: String,
        configured: String,
    },
    #[error("the data dir holds a raft log but no node identity (info.yaml): cannot tell which node it is")]
    LogWithoutIdentity,
    #[error("the data dir belongs to the bootstrap node (id 1) yet a join is pending: it cannot join a cluster")]
    BootstrapNodeJoining,
}

/// Decides how to start. `peers` are the addresses of other members to join through; our
/// own address among them is ignored.
pub fn plan_startup(
    state: &PersistedState,
    address: &str,
    peers: &[String],
) -> Result<StartupPlan, PlanError> {
    let peers: Vec<String> = peers
        .iter()
        .filter(|p| p.as_str() != address)
        .cloned()
        .collect();
    match &state.identity {
        Some(identity) if identity.address != address => Err(PlanError::AddressChanged {
            id: identity.id,
            persisted: identity.address.clone(),
            configured: address.to_owned(),
        }),
        Some(identity) if identity.id == BOOTSTRAP_ID && state.join_pending => {
            Err(PlanError::BootstrapNodeJoining)
        }
        Some(identity) => Ok(StartupPlan::Restart {
            identity: identity.clone(),
            join_pending: state.join_pending,
        }),
        None if state.has_raft_data => Err(PlanError::LogWithoutIdentity),
        None if peers.is_empty() => Ok(StartupPlan::Bootstrap),
        None => Ok(StartupPlan::Join { peers }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(id: u64, address: &str) -> Option<NodeIdentity> {
        Some(NodeIdentity {
            id,
            address: address.to_owned(),
        })
    }

    fn check(
        state: PersistedState,
        address: &str,
        peers: &[&str],
        expected: Result<StartupPlan, PlanError>,
    ) {
        let peers: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            plan_startup(&state, address, &peers),
            expected,
            "{state:?} {address} {peers:?}"
        );
    }

    #[test]
    fn startup_plans() {
        let a = "10.0.0.1:9001";
        let b = "10.0.0.2:9001";
        let fresh = PersistedState::default();
        check(fresh.clone(), a, &[], Ok(StartupPlan::Bootstrap));
        // Our own address among the peers is not a peer.
        check(fresh.clone(), a, &[a], Ok(StartupPlan::Bootstrap));
        check(
            fresh.clone(),
            a,
            &[a, b],
            Ok(StartupPlan::Join {
                peers: vec![b.to_owned()],
            }),
        );
        // A restart ignores the peers: the data dir says who we are.
        let member = PersistedState {
            identity: identity(7, a),
            has_raft_data: true,
            join_pending: false,
        };
        check(
            member.clone(),
            a,
            &[b],
            Ok(StartupPlan::Restart {
                identity: NodeIdentity {
                    id: 7,
                    address: a.to_owned(),
                },
                join_pending: false,
            }),
        );
        // An identity without raft data yet (stopped before its first start) restarts too.
        let unstarted = PersistedState {
            has_raft_data: false,
            join_pending: true,
            ..member.clone()
        };
        check(
            unstarted,
            a,
            &[b],
            Ok(StartupPlan::Restart {
                identity: NodeIdentity {
                    id: 7,
                    address: a.to_owned(),
                },
                join_pending: true,
            }),
        );
        check(
            member,
            b,
            &[a],
            Err(PlanError::AddressChanged {
                id: 7,
                persisted: a.to_owned(),
                configured: b.to_owned(),
            }),
        );
        check(
            PersistedState {
                identity: None,
                has_raft_data: true,
                join_pending: false,
            },
            a,
            &[b],
            Err(PlanError::LogWithoutIdentity),
        );
        check(
            PersistedState {
                identity: identity(BOOTSTRAP_ID, a),
                has_raft_data: false,
                join_pending: true,
            },
            a,
            &[b],
            Err(PlanError::BootstrapNodeJoining),
        );
    }
}
