//! What the service shows and watches: the status refreshed from the cluster, the health
//! verdict, the health tick's failure checks, and the "database available" view other
//! workers use.

use controller_contract::status::{Member, NodeState, Status};
use dqlite::{NodeInfo, NodeRole};
use tokio::time::Instant;

use crate::decide::Membership;
use crate::health;
use crate::Database;

use super::*;

impl<D: Driver> Service<D> {
    /// Updates the status from the cluster; on the leader, removes departed members.
    pub(super) async fn refresh_cluster(&mut self) {
        self.status.node_id = self.driver.node_id();
        self.status.bind_address = self.driver.running_address();
        if self.status.bind_address.is_none() {
            self.status.members.clear();
            self.status.leader_id = None;
            self.status.health = None;
            self.status.reason = self.reason.clone();
            return;
        }
        match self.driver.cluster().await {
            Some((members, leader)) => {
                let members_now: Vec<Member> = members.iter().map(to_member).collect();
                if !self.status.members.is_empty() && members_now != self.status.members {
                    // Kept until the next health check has chosen its pace (a departure
                    // check may be the refresh that sees it).
                    self.membership_changed = true;
                    // A join, a promotion, a member back after a restart: follow it at the
                    // settling pace, as after a map change.
                    self.settle_from_now();
                }
                self.status.members = members_now;
                self.status.leader_id = leader;
                self.note_mapped_members(&members);
            }
            None => {
                self.status.members.clear();
                self.status.leader_id = None;
            }
        }
        self.assess_health();
        self.status.reason = match (self.status.state, self.status.leader_id) {
            (NodeState::Member, None) => format!(
                "{}; no leader is visible: waiting for a quorum of voters",
                self.reason
            ),
            _ => self.reason.clone(),
        };
    }

    /// Remembers which members the map named while they were in the configuration (see
    /// [`super::departures::AbsenceMemory::mapped`]), and forgets those no longer members.
    fn note_mapped_members(&mut self, members: &[NodeInfo]) {
        let mapped = &mut self.absence.mapped;
        mapped.retain(|id| members.iter().any(|m| m.id == *id));
        let Some(map) = self
            .status
            .config
            .as_ref()
            .and_then(|c| c.bind_addresses.as_ref())
        else {
            return;
        };
        let addresses: Vec<String> = map
            .values()
            .map(|ip| self.config.dqlite_address(*ip))
            .collect();
        mapped.extend(
            members
                .iter()
                .filter(|m| addresses.contains(&m.address))
                .map(|m| m.id),
        );
    }

    /// The health verdict from the members, the leader, the progress reports and the map
    /// just read.
    pub(super) fn assess_health(&mut self) {
        let members: Vec<NodeInfo> = self.status.members.iter().map(from_member).collect();
        let reports = self.driver.progress();
        let map = self
            .status
            .config
            .as_ref()
            .and_then(|c| c.bind_addresses.clone());
        let health = health::assess(&health::Inputs {
            members: &members,
            leader: self.status.leader_id,
            reports: reports.as_ref(),
            map: map.as_ref(),
            port: self.config.dqlite_port,
        });
        let changed = self
            .status
            .health
            .as_ref()
            .is_none_or(|h| h.verdict != health.verdict);
        if changed {
            log::info!("health: {}", health.summary);
        }
        self.status.health = Some(health);
    }

    /// Refreshes the status; returns a failure when the node has seen no leader for a
    /// whole quorum timeout, or when a leader's configuration no longer lists it.
    pub(super) async fn check_health(&mut self) -> Option<String> {
        if self.driver.running_address().is_none() {
            self.leaderless_since = None;
            return None;
        }
        self.refresh_cluster().await;
        if let (Some(leader), Some(own)) = (self.status.leader_id, self.status.node_id) {
            let members: Vec<NodeInfo> = self.status.members.iter().map(from_member).collect();
            if self.status.state == NodeState::Member
                && classify_membership(own, &members, leader) != Membership::Included
            {
                return Some(format!(
                    "leader node {leader}'s configuration does not list this node ({own})"
                ));
            }
        }
        if self.status.leader_id.is_some() {
            self.leaderless_since = None;
            if self.status.leader_id == self.status.node_id {
                self.remove_departed().await;
            }
            return None;
        }
        let since = *self.leaderless_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.timings.quorum_timeout {
            self.leaderless_since = None;
            return Some(format!("no leader for {} ms", since.elapsed().as_millis()));
        }
        None
    }
}

/// Whether `members`, as leader `leader` reported them, include node `own`.
pub(crate) fn classify_membership(own: u64, members: &[NodeInfo], leader: u64) -> Membership {
    if members.iter().any(|m| m.id == own) {
        Membership::Included
    } else if leader == own || members.is_empty() {
        // A leader always lists itself; an empty list is no answer.
        Membership::Unknown
    } else {
        Membership::Excluded { leader }
    }
}

pub(super) fn from_member(member: &Member) -> NodeInfo {
    NodeInfo {
        id: member.id,
        address: member.address.clone(),
        role: match member.role {
            Role::Voter => NodeRole::Voter,
            Role::StandBy => NodeRole::StandBy,
            Role::Spare => NodeRole::Spare,
        },
    }
}

pub(super) fn to_member(info: &NodeInfo) -> Member {
    Member {
        id: info.id,
        address: info.address.clone(),
        role: match info.role {
            NodeRole::Voter => Role::Voter,
            NodeRole::StandBy => Role::StandBy,
            NodeRole::Spare => Role::Spare,
        },
    }
}

/// What "database available" says for a status: set only for a member with an address,
/// carrying the members' addresses (its own first, then the others in id order).
pub(crate) fn availability(status: &Status, tls: Option<&dqlite::tls::Tls>) -> Option<Database> {
    let (node_id, own) = match (status.state, status.node_id, &status.bind_address) {
        (NodeState::Member, Some(node_id), Some(own)) => (node_id, own.clone()),
        _ => return None,
    };
    let mut members = vec![own.clone()];
    members.extend(
        status
            .members
            .iter()
            .map(|member| member.address.clone())
            .filter(|address| *address != own),
    );
    Some(Database {
        node_id,
        own_address: own,
        members,
        tls: tls.cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_is_excluded_only_by_another_leaders_answer() {
        let node = |id: u64| NodeInfo {
            id,
            address: format!("127.21.0.{id}:17666"),
            role: NodeRole::Voter,
        };
        assert_eq!(
            classify_membership(1, &[node(1), node(2)], 2),
            Membership::Included
        );
        assert_eq!(
            classify_membership(1, &[node(2), node(3)], 2),
            Membership::Excluded { leader: 2 }
        );
        assert_eq!(classify_membership(1, &[], 2), Membership::Unknown);
        assert_eq!(classify_membership(1, &[node(2)], 1), Membership::Unknown);
    }
}
