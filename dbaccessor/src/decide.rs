//! The pure core: from what the service observed (the map, the data dir, the running node,
//! the quorum probe) to the one action that moves the local node towards the map. No IO.
//!
//! Safety rules encoded here, each tested in the table below:
//! - a missing, unreadable or incomplete map never starts, stops or changes a node;
//! - a member of a multi-node cluster is never re-bound to another address;
//! - shrinking to one happens only when the map holds exactly one entry, that entry is this
//!   controller at the address the node already has, the cluster names other voters, and a
//!   bounded search found no leader.

use controller_contract::conf::BindAddresses;
use controller_contract::ip_port;
use controller_contract::status::NodeState;
use dqlite::{NodeInfo, NodeRole};

/// What `controller.conf` gave.
#[derive(Debug, Clone, PartialEq)]
pub enum MapRead {
    /// The file does not exist (yet).
    Missing,
    /// The file exists but cannot be read or parsed; the text says why.
    Unusable(String),
    /// The parsed `db-bind-addresses` (possibly empty).
    Map(BindAddresses),
}

/// What the local Dqlite data dir holds.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalData {
    /// Nothing: this node never started.
    Empty,
    /// A node identity and its last known cluster membership.
    Member {
        /// The persisted node id.
        node_id: u64,
        /// The persisted bind address (`ip:port`).
        address: String,
        /// The membership as persisted (the running node refreshes it every role interval).
        members: Vec<NodeInfo>,
    },
    /// Something is there but cannot be read; it is never touched.
    Unreadable(String),
}

/// Whether a leader could be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quorum {
    /// Not asked in this round.
    Unknown,
    /// A leader answered.
    Reachable,
    /// No leader within the probe's bound.
    Unreachable,
}

/// Whether the running node is in the cluster's configuration, as a leader reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// Not known: the node is stopped, or no leader answered in time.
    Unknown,
    /// The leader lists this node.
    Included,
    /// Another node leads and its configuration lacks this node: the node was removed
    /// (while it was down, or behind this daemon's back). Positive knowledge only: a silent
    /// cluster is [`Membership::Unknown`], never this.
    Excluded {
        /// The leader that said so.
        leader: u64,
    },
}

/// Everything [`decide`] looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// This controller's key in the map.
    pub agent_id: String,
    /// The Dqlite port of every controller.
    pub port: u16,
    /// The map as just read.
    pub map: MapRead,
    /// Whether this host can bind the IP the map gives this controller (false without one).
    pub own_ip_on_host: bool,
    /// The data dir's content.
    pub data: LocalData,
    /// The address the node runs at in this process, if it runs.
    pub running: Option<String>,
    /// The last quorum probe of this round.
    pub quorum: Quorum,
    /// Whether the running node is in the leader's configuration.
    pub membership: Membership,
}

/// The one step the service takes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Leave the node stopped until the map changes.
    Wait,
    /// Leave the running node as it is.
    Keep,
    /// Leave the node stopped: a condition only an operator (or a new map) can fix.
    Fail,
    /// Start a new one-node cluster at `address`.
    Bootstrap { address: String },
    /// Start a new node at `address` and have it added through `peers`.
    Join { address: String, peers: Vec<String> },
    /// Start the existing member at `address`; `peers` help it find the leader.
    Restart { address: String, peers: Vec<String> },
    /// Stop the node if it runs, rewrite its one-member configuration from `from` to `to`.
    Rebind { from: String, to: String },
    /// Look for a leader for a bounded time, then decide again.
    ProbeQuorum,
    /// Stop the node if it runs and rewrite membership to the local node alone.
    ShrinkToOne { address: String },
    /// The running node is outside the configuration: stop it, move its data dir aside and
    /// join again as a new member through `peers` (the next round decides the join).
    SetAside { address: String, peers: Vec<String> },
    /// The running node is outside the configuration and cannot rejoin (the map names no
    /// peer, or not this controller): leave it running, and say so.
    Outside,
}

/// An action and the reason for it, in words for the log and the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub reason: String,
}

impl Decision {
    fn new(action: Action, reason: impl Into<String>) -> Self {
        Self {
            action,
            reason: reason.into(),
        }
    }

    /// The state the status reports while (or after) taking this decision.
    pub fn state(&self) -> NodeState {
        match self.action {
            Action::Wait => NodeState::Waiting,
            Action::Keep => NodeState::Member,
            Action::Fail => NodeState::Failed,
            Action::Bootstrap { .. } => NodeState::Bootstrapping,
            Action::Join { .. } => NodeState::Joining,
            Action::Restart { .. } | Action::ProbeQuorum => NodeState::Member,
            Action::Rebind { .. } | Action::ShrinkToOne { .. } => NodeState::Recovering,
            Action::SetAside { .. } => NodeState::Joining,
            Action::Outside => NodeState::Removed,
        }
    }
}

/// Decides the next step. Pure: the same observation always gives the same decision.
///
/// A running node that a leader reports outside the configuration never reports
/// `member`: it rejoins as a new member when the map names it and a peer to join through,
/// and is [`Action::Outside`] otherwise.
pub fn decide(observed: &Observed) -> Decision {
    let decision = decide_for_map(observed);
    match (observed.membership, &decision.action) {
        (Membership::Excluded { leader }, Action::Keep) => Decision::new(
            Action::Outside,
            format!(
                "leader node {leader}'s configuration does not list this node; it cannot \
                 rejoin: {}",
                decision.reason
            ),
        ),
        _ => decision,
    }
}

fn decide_for_map(observed: &Observed) -> Decision {
    let running = observed.running.as_deref();
    let map = match &observed.map {
        MapRead::Missing => return hold(running, "controller.conf does not exist yet"),
        MapRead::Unusable(why) => {
            return hold(running, format!("controller.conf is unusable: {why}"))
        }
        MapRead::Map(map) => map,
    };
    let Some(&own_ip) = map.get(&observed.agent_id) else {
        let named: Vec<&str> = map.keys().map(String::as_str).collect();
        return hold(
            running,
            format!(
                "controller.conf has no db-bind-addresses entry for agent {} (entries: {})",
                observed.agent_id,
                if named.is_empty() {
                    "none".to_owned()
                } else {
                    named.join(", ")
                }
            ),
        );
    };
    if !observed.own_ip_on_host {
        return hold(
            running,
            format!(
                "controller.conf gives this controller {own_ip}, which no interface of this host has"
            ),
        );
    }
    let address = ip_port(own_ip, observed.port);
    let peers: Vec<String> = map
        .iter()
        .filter(|(id, _)| **id != observed.agent_id)
        .map(|(_, ip)| ip_port(*ip, observed.port))
        .collect();

    match &observed.data {
        LocalData::Unreadable(why) => {
            let reason = format!("the dqlite data dir cannot be read, so it is left alone: {why}");
            match running {
                Some(at) => Decision::new(Action::Keep, format!("running at {at}; {reason}")),
                None => Decision::new(Action::Fail, reason),
            }
        }
        LocalData::Empty if peers.is_empty() => Decision::new(
            Action::Bootstrap {
                address: address.clone(),
            },
            format!("no local data and the map names only this controller: bootstrap at {address}"),
        ),
        LocalData::Empty => Decision::new(
            Action::Join {
                address: address.clone(),
                peers: peers.clone(),
            },
            format!(
                "no local data and the map names peers: join at {address} through {}",
                peers.join(", ")
            ),
        ),
        LocalData::Member {
            node_id,
            address: persisted,
            members,
        } => {
            let others: Vec<&NodeInfo> = members.iter().filter(|m| m.id != *node_id).collect();
            if *persisted != address {
                return if others.is_empty() {
                    Decision::new(
                        Action::Rebind {
                            from: persisted.clone(),
                            to: address.clone(),
                        },
                        format!(
                            "this node is alone in its cluster at {persisted} and the map says \
                             {address}: re-bind offline and restart"
                        ),
                    )
                } else {
                    hold(
                        running,
                        format!(
                            "this node is {persisted} in a {}-member cluster but the map says \
                             {address}: a member of a multi-node cluster is never re-bound",
                            members.len()
                        ),
                    )
                };
            }
            if let (Some(_), Membership::Excluded { leader }) = (running, observed.membership) {
                if peers.is_empty() {
                    // Never shrink to one or bootstrap here: the cluster lives on without
                    // this node, and a cluster of its own would split the brain.
                    return Decision::new(
                        Action::Outside,
                        format!(
                            "leader node {leader}'s configuration does not list node {node_id} \
                             and the map names no peer to rejoin through, so it cannot rejoin \
                             (it is never made a cluster of its own)"
                        ),
                    );
                } else {
                    return Decision::new(
                        Action::SetAside {
                            address: address.clone(),
                            peers: peers.clone(),
                        },
                        format!(
                            "leader node {leader}'s configuration does not list node {node_id}: \
                             it was removed; set its data dir aside and join again as a new \
                             member through {}",
                            peers.join(", ")
                        ),
                    );
                }
            }
            let other_voters = others.iter().filter(|m| m.role == NodeRole::Voter).count();
            let map_is_only_me = map.len() == 1;
            if map_is_only_me && other_voters > 0 {
                match (observed.quorum, running) {
                    (Quorum::Unreachable, _) => {
                        return Decision::new(
                            Action::ShrinkToOne {
                                address: address.clone(),
                            },
                            format!(
                                "the map names only this controller, no leader could be reached \
                                 and the cluster names {other_voters} other voter(s): recover \
                                 membership to this node alone"
                            ),
                        )
                    }
                    (Quorum::Unknown, Some(_)) => {
                        return Decision::new(
                            Action::ProbeQuorum,
                            format!(
                                "the map names only this controller while the cluster names \
                                 {other_voters} other voter(s): look for a leader before deciding"
                            ),
                        )
                    }
                    (Quorum::Unknown, None) | (Quorum::Reachable, _) => {}
                }
            }
            match running {
                Some(_) if observed.quorum == Quorum::Reachable && map_is_only_me => Decision::new(
                    Action::Keep,
                    format!(
                        "member at {address}; the map names only this controller but a \
                             leader answers, so the cluster is kept as it is"
                    ),
                ),
                Some(_) => Decision::new(Action::Keep, format!("member at {address}")),
                None => Decision::new(
                    Action::Restart {
                        address: address.clone(),
                        peers,
                    },
                    format!("existing member: restart at {address} from its persisted state"),
                ),
            }
        }
    }
}

/// A map problem: a running node keeps running, a stopped one stays stopped.
fn hold(running: Option<&str>, reason: impl Into<String>) -> Decision {
    let reason = reason.into();
    match running {
        Some(at) => Decision::new(
            Action::Keep,
            format!("running at {at}, left as it is: {reason}"),
        ),
        None => Decision::new(Action::Wait, format!("waiting: {reason}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "127.21.0.1:17666";
    const PEER1: &str = "127.21.0.2:17666";
    const PEER2: &str = "127.21.0.3:17666";

    fn map(entries: &[(&str, &str)]) -> MapRead {
        MapRead::Map(
            entries
                .iter()
                .map(|(id, ip)| ((*id).to_owned(), ip.parse().expect("test ip")))
                .collect(),
        )
    }

    fn member(id: u64, address: &str, role: NodeRole) -> NodeInfo {
        NodeInfo {
            id,
            address: address.into(),
            role,
        }
    }

    fn alone() -> LocalData {
        LocalData::Member {
            node_id: 1,
            address: ME.into(),
            members: vec![member(1, ME, NodeRole::Voter)],
        }
    }

    fn in_three() -> LocalData {
        LocalData::Member {
            node_id: 1,
            address: ME.into(),
            members: vec![
                member(1, ME, NodeRole::Voter),
                member(2, PEER1, NodeRole::Voter),
                member(3, PEER2, NodeRole::Voter),
            ],
        }
    }

    fn observed(map: MapRead, data: LocalData, running: bool, quorum: Quorum) -> Observed {
        Observed {
            agent_id: "0".into(),
            port: 17666,
            map,
            own_ip_on_host: true,
            data,
            running: running.then(|| ME.to_owned()),
            quorum,
            membership: if running {
                Membership::Included
            } else {
                Membership::Unknown
            },
        }
    }

    /// Checks the action and that the reason mentions `why`.
    fn check(input: Observed, expected: Action, why: &str) {
        let decision = decide(&input);
        assert_eq!(decision.action, expected, "{input:?}\n-> {decision:?}");
        assert!(
            decision.reason.contains(why),
            "reason {:?} should mention {why:?}",
            decision.reason
        );
    }

    #[test]
    fn map_problems_wait_or_keep() {
        use Quorum::Unknown;
        let three = [
            ("0", "127.21.0.1"),
            ("1", "127.21.0.2"),
            ("2", "127.21.0.3"),
        ];
        check(
            observed(MapRead::Missing, LocalData::Empty, false, Unknown),
            Action::Wait,
            "does not exist",
        );
        check(
            observed(MapRead::Missing, in_three(), true, Unknown),
            Action::Keep,
            "does not exist",
        );
        check(
            observed(MapRead::Missing, in_three(), false, Unknown),
            Action::Wait,
            "does not exist",
        );
        check(
            observed(
                MapRead::Unusable("not YAML".into()),
                LocalData::Empty,
                false,
                Unknown,
            ),
            Action::Wait,
            "unusable: not YAML",
        );
        check(
            observed(
                MapRead::Unusable("permission denied".into()),
                in_three(),
                true,
                Unknown,
            ),
            Action::Keep,
            "permission denied",
        );
        check(
            observed(map(&[]), LocalData::Empty, false, Unknown),
            Action::Wait,
            "no db-bind-addresses entry for agent 0 (entries: none)",
        );
        check(
            observed(map(&three[1..]), in_three(), true, Unknown),
            Action::Keep,
            "entries: 1, 2",
        );
        check(
            observed(map(&[("0", "fc00::1")]), LocalData::Empty, false, Unknown),
            Action::Bootstrap {
                address: "[fc00::1]:17666".into(),
            },
            "bootstrap at [fc00::1]:17666",
        );
        let mut not_here = observed(map(&three), LocalData::Empty, false, Unknown);
        not_here.own_ip_on_host = false;
        check(not_here.clone(), Action::Wait, "no interface of this host");
        not_here.data = in_three();
        not_here.running = Some(ME.into());
        check(not_here, Action::Keep, "no interface of this host");
    }

    #[test]
    fn start_paths() {
        use Quorum::Unknown;
        check(
            observed(
                map(&[("0", "127.21.0.1")]),
                LocalData::Empty,
                false,
                Unknown,
            ),
            Action::Bootstrap { address: ME.into() },
            "bootstrap",
        );
        check(
            observed(
                map(&[
                    ("0", "127.21.0.1"),
                    ("1", "127.21.0.2"),
                    ("2", "127.21.0.3"),
                ]),
                LocalData::Empty,
                false,
                Unknown,
            ),
            Action::Join {
                address: ME.into(),
                peers: vec![PEER1.into(), PEER2.into()],
            },
            "join",
        );
        check(
            observed(
                map(&[("0", "127.21.0.1"), ("1", "127.21.0.2")]),
                in_three(),
                false,
                Unknown,
            ),
            Action::Restart {
                address: ME.into(),
                peers: vec![PEER1.into()],
            },
            "restart",
        );
        check(
            observed(map(&[("0", "127.21.0.1")]), alone(), false, Unknown),
            Action::Restart {
                address: ME.into(),
                peers: vec![],
            },
            "restart",
        );
        check(
            observed(
                map(&[("0", "127.21.0.1"), ("1", "127.21.0.2")]),
                in_three(),
                true,
                Unknown,
            ),
            Action::Keep,
            "member at",
        );
        check(
            observed(
                map(&[("0", "127.21.0.1"), ("1", "127.21.0.2")]),
                LocalData::Unreadable("bad info.yaml".into()),
                false,
                Unknown,
            ),
            Action::Fail,
            "bad info.yaml",
        );
        let mut ipv6_peer = observed(
            map(&[("0", "127.21.0.1"), ("1", "fc00::2")]),
            LocalData::Empty,
            false,
            Unknown,
        );
        ipv6_peer.port = 17000;
        check(
            ipv6_peer,
            Action::Join {
                address: "127.21.0.1:17000".into(),
                peers: vec!["[fc00::2]:17000".into()],
            },
            "[fc00::2]:17000",
        );
        // An IPv6 own address joins (or bootstraps) like any other: the node listens
        // through its forwarding listener.
        let mut ipv6_own = observed(
            map(&[("0", "fd00::10"), ("1", "fd00::11")]),
            LocalData::Empty,
            false,
            Unknown,
        );
        ipv6_own.port = 17666;
        check(
            ipv6_own,
            Action::Join {
                address: "[fd00::10]:17666".into(),
                peers: vec!["[fd00::11]:17666".into()],
            },
            "[fd00::11]:17666",
        );
    }

    #[test]
    fn rebind_only_a_lone_member() {
        use Quorum::Unknown;
        let loopback = LocalData::Member {
            node_id: 1,
            address: "127.0.0.1:17666".into(),
            members: vec![member(1, "127.0.0.1:17666", NodeRole::Voter)],
        };
        let grown = map(&[("0", "127.21.0.1"), ("1", "127.21.0.2")]);
        let rebind = Action::Rebind {
            from: "127.0.0.1:17666".into(),
            to: ME.into(),
        };
        check(
            observed(grown.clone(), loopback.clone(), false, Unknown),
            rebind.clone(),
            "re-bind",
        );
        let mut running = observed(grown.clone(), loopback, false, Unknown);
        running.running = Some("127.0.0.1:17666".into());
        check(running, rebind, "re-bind");
        let moved = LocalData::Member {
            node_id: 1,
            address: "127.21.9.9:17666".into(),
            members: vec![
                member(1, "127.21.9.9:17666", NodeRole::Voter),
                member(2, PEER1, NodeRole::Voter),
            ],
        };
        check(
            observed(grown.clone(), moved.clone(), false, Unknown),
            Action::Wait,
            "never re-bound",
        );
        let mut running = observed(grown, moved, false, Unknown);
        running.running = Some("127.21.9.9:17666".into());
        check(running, Action::Keep, "never re-bound");
    }

    #[test]
    fn shrink_to_one_only_alone_and_without_quorum() {
        use Quorum::{Reachable, Unknown, Unreachable};
        let only_me = map(&[("0", "127.21.0.1")]);
        let two = map(&[("0", "127.21.0.1"), ("1", "127.21.0.2")]);
        let shrink = Action::ShrinkToOne { address: ME.into() };
        // The map names only this node: probe first, shrink only without a leader.
        check(
            observed(only_me.clone(), in_three(), true, Unknown),
            Action::ProbeQuorum,
            "look for a leader",
        );
        check(
            observed(only_me.clone(), in_three(), true, Unreachable),
            shrink.clone(),
            "no leader could be reached",
        );
        check(
            observed(only_me.clone(), in_three(), true, Reachable),
            Action::Keep,
            "a leader answers",
        );
        // Stopped: restart first; the probe follows once it runs.
        check(
            observed(only_me.clone(), in_three(), false, Unknown),
            Action::Restart {
                address: ME.into(),
                peers: vec![],
            },
            "restart",
        );
        check(
            observed(only_me.clone(), in_three(), false, Unreachable),
            shrink,
            "recover membership",
        );
        // A map with more than one entry never shrinks, even without a leader.
        check(
            observed(two.clone(), in_three(), true, Unreachable),
            Action::Keep,
            "member at",
        );
        check(
            observed(two, in_three(), false, Unreachable),
            Action::Restart {
                address: ME.into(),
                peers: vec![PEER1.into()],
            },
            "restart",
        );
        // A map naming only another controller, an empty map, or no map: never.
        for map_read in [
            map(&[("1", "127.21.0.2")]),
            map(&[]),
            MapRead::Missing,
            MapRead::Unusable("truncated".into()),
        ] {
            check(
                observed(map_read, in_three(), true, Unreachable),
                Action::Keep,
                "left as it is",
            );
        }
        // The only other members are not voters: this node is the quorum, nothing to recover.
        let with_spare = LocalData::Member {
            node_id: 1,
            address: ME.into(),
            members: vec![
                member(1, ME, NodeRole::Voter),
                member(2, PEER1, NodeRole::Spare),
                member(3, PEER2, NodeRole::StandBy),
            ],
        };
        check(
            observed(only_me.clone(), with_spare, true, Unreachable),
            Action::Keep,
            "member at",
        );
        // Already alone: nothing to shrink.
        check(
            observed(only_me, alone(), true, Unreachable),
            Action::Keep,
            "member at",
        );
    }

    #[test]
    fn a_removed_node_rejoins_only_on_positive_knowledge() {
        use Quorum::Unknown;
        let three = [
            ("0", "127.21.0.1"),
            ("1", "127.21.0.2"),
            ("2", "127.21.0.3"),
        ];
        let with = |map: MapRead, running: bool, membership: Membership| Observed {
            membership,
            ..observed(map, in_three(), running, Unknown)
        };
        let excluded = Membership::Excluded { leader: 2 };
        // Named by the map, peers to join through: set aside and rejoin.
        check(
            with(map(&three), true, excluded),
            Action::SetAside {
                address: ME.into(),
                peers: vec![PEER1.into(), PEER2.into()],
            },
            "leader node 2's configuration does not list node 1",
        );
        // A silent cluster is not an exclusion.
        check(
            with(map(&three), true, Membership::Unknown),
            Action::Keep,
            "member at",
        );
        check(
            with(map(&three), true, Membership::Included),
            Action::Keep,
            "member at",
        );
        // The map names only this controller: no peer to join through; never bootstrap a
        // second cluster. Reported, not `member`.
        check(
            with(map(&three[..1]), true, excluded),
            Action::Outside,
            "cannot rejoin",
        );
        // The map no longer names this controller (it is leaving): left running, reported.
        check(
            with(map(&three[1..]), true, excluded),
            Action::Outside,
            "no db-bind-addresses entry for agent 0",
        );
        // An unusable map changes nothing either.
        check(
            with(MapRead::Unusable("torn".into()), true, excluded),
            Action::Outside,
            "torn",
        );
    }

    #[test]
    fn states_follow_actions() {
        let check = |action: Action, expected: NodeState| {
            assert_eq!(
                Decision::new(action.clone(), "").state(),
                expected,
                "{action:?}"
            );
        };
        check(Action::Wait, NodeState::Waiting);
        check(Action::Keep, NodeState::Member);
        check(Action::Fail, NodeState::Failed);
        check(Action::Outside, NodeState::Removed);
        check(
            Action::SetAside {
                address: ME.into(),
                peers: vec![PEER1.into()],
            },
            NodeState::Joining,
        );
        check(
            Action::Bootstrap { address: ME.into() },
            NodeState::Bootstrapping,
        );
        check(
            Action::Join {
                address: ME.into(),
                peers: vec![],
            },
            NodeState::Joining,
        );
        check(
            Action::ShrinkToOne { address: ME.into() },
            NodeState::Recovering,
        );
        check(
            Action::Rebind {
                from: ME.into(),
                to: PEER1.into(),
            },
            NodeState::Recovering,
        );
    }
}
