//! The role decisions of the application layer: which members to promote or demote so the
//! cluster keeps its target numbers of voters and stand-bys. Pure: no IO, cannot fail.
//!
//! The leader observes the configuration and probes every member (online = it answered a
//! DESCRIBE in this round), then [`plan_roles`] says which ASSIGN requests to send, in
//! order. The rules, in the order they are applied:
//!
//! 1. While the online voters fall short of the target, an offline voter is replaced by
//!    an online stand-by or spare: the replacement is promoted first, then the offline
//!    voter is demoted, so the number of voters never drops and the number of online
//!    voters only grows.
//! 2. Offline voters that cannot be replaced are kept (they may come back) unless the
//!    voter count exceeds the target, or is even: demoting an offline voter never lowers
//!    the quorum's reach, because the majority of `n - 1` voters is never larger than the
//!    majority of `n`.
//! 3. Online voters are demoted only when every voter is online, never the leader, and
//!    only down to the target (or to the odd count below an even one): an online voter
//!    demoted while another voter is offline could leave the majority out of reach.
//! 4. Missing voters are promoted from online stand-bys first (they are caught up), then
//!    spares, keeping the voter count odd: two voters need both to be up, one does not.
//! 5. Stand-bys follow the same pattern with spares as the pool: offline stand-bys are
//!    replaced while the online ones fall short, the count is topped up to its target or
//!    trimmed back to it (offline ones first).
//!
//! A property test checks, over random clusters, that applied change by change a plan
//! never takes the quorum away, lowers the reach (online voters beyond the majority) only
//! by trimming while every voter is online, never touches the leader or promotes an
//! offline node, changes each node at most once, and leaves an odd number of voters.
//!
//! Among candidates, one in a failure domain that no voter (or stand-by) covers yet comes
//! first, then a stand-by before a spare, then the lower weight (the operator's preference,
//! set with WEIGHT), then the lower id, so the plan is deterministic. A member whose weight
//! is [`DRAINING_WEIGHT`] (it is stopping) is never a candidate.

use crate::{NodeInfo, NodeRole};

/// The weight a member sets on itself (WEIGHT) before it hands over and stops, so that no
/// leader promotes it in the moments it has left: a promotion waits for the member to catch
/// up, and one that is gone blocks every configuration change until libraft gives up on it.
/// libdqlite keeps weights in memory only, so a restarted member is a candidate again.
pub const DRAINING_WEIGHT: u64 = u64::MAX;

/// What the leader knows about one member when it plans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    /// The member as the configuration lists it.
    pub info: NodeInfo,
    /// Whether the member answered the leader's probe in this round.
    pub online: bool,
    /// The failure domain the member reported (0 when unknown): spreads voters apart.
    pub failure_domain: u64,
    /// The weight the member reported: lower is preferred for promotion.
    pub weight: u64,
}

impl MemberState {
    /// An online member in failure domain 0 with weight 0: what a probe-less caller knows.
    pub fn online(info: NodeInfo) -> Self {
        MemberState {
            info,
            online: true,
            failure_domain: 0,
            weight: 0,
        }
    }
}

/// How many voters and stand-bys the cluster aims for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleTargets {
    /// Target number of voters; an even number is treated as the odd number below it.
    pub voters: usize,
    /// Target number of stand-bys.
    pub standbys: usize,
}

impl Default for RoleTargets {
    fn default() -> Self {
        RoleTargets {
            voters: 3,
            standbys: 3,
        }
    }
}

/// One ASSIGN request the leader should send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleChange {
    /// The member to change.
    pub id: u64,
    /// Its address, for logs and errors.
    pub address: String,
    /// Its role now.
    pub from: NodeRole,
    /// The role to assign.
    pub to: NodeRole,
}

/// The changes that bring the cluster towards its targets, in the order they must be
/// applied. Applying a prefix of the list (a change failed, leadership moved) leaves the
/// cluster no worse off than before: the next round plans again from what it observes.
///
/// Nothing is planned when the leader is not a voter in `members` (a configuration in
/// flux: wait for the next round).
pub fn plan_roles(
    members: &[MemberState],
    leader_id: u64,
    targets: RoleTargets,
) -> Vec<RoleChange> {
    let leader_is_voter = members
        .iter()
        .any(|m| m.info.id == leader_id && m.info.role == NodeRole::Voter);
    if !leader_is_voter {
        return Vec::new();
    }
    // The leader answers for itself even if its own probe failed.
    let mut roster: Vec<Slot> = members
        .iter()
        .map(|m| Slot {
            state: m,
            online: m.online || m.info.id == leader_id,
            role: m.info.role,
        })
        .collect();
    let target_voters = largest_odd_at_most(targets.voters.max(1));
    let mut changes = Vec::new();

    plan_voters(
        &mut roster,
        leader_id,
        target_voters,
        targets.standbys,
        &mut changes,
    );
    plan_standbys(&mut roster, targets.standbys, &mut changes);
    changes
}

/// What a voter should hand over before it stops: the changes to apply after leadership
/// (if it held it) has moved to another voter.
///
/// A voter hands its vote to the best online stand-by or spare and then becomes a spare;
/// a stand-by hands its place to the best online spare and then becomes a spare.
///
/// A voter without a candidate still steps down when another voter is online: the
/// majority of the remaining voters is never larger than the majority with it, so its
/// leaving the vote never lowers the cluster's reach, and it must leave: a stopped voter
/// of two would take the quorum with it. (The leader's role loop then evens the count out,
/// and promotes the node again when it comes back.) A lone voter keeps its vote: there is
/// nobody to take it. A stand-by without a candidate stays: it holds no vote.
pub fn plan_handover(members: &[MemberState], own_id: u64) -> Vec<RoleChange> {
    let Some(own) = members.iter().find(|m| m.info.id == own_id) else {
        return Vec::new();
    };
    let pool: &[NodeRole] = match own.info.role {
        NodeRole::Voter => &[NodeRole::StandBy, NodeRole::Spare],
        NodeRole::StandBy => &[NodeRole::Spare],
        NodeRole::Spare => return Vec::new(),
    };
    let roster: Vec<Slot> = members
        .iter()
        .map(|m| Slot {
            state: m,
            online: m.online,
            role: m.info.role,
        })
        .collect();
    let covered = domains_with_role(&roster, own.info.role, Some(own_id));
    let candidate = best_candidate(&roster, pool, &covered, &[own_id]);
    match candidate {
        Some(index) => vec![
            change(&roster[index], own.info.role),
            RoleChange {
                id: own_id,
                address: own.info.address.clone(),
                from: own.info.role,
                to: NodeRole::Spare,
            },
        ],
        None => {
            let other_voter_online = roster.iter().any(|slot| {
                slot.state.info.id != own_id && slot.role == NodeRole::Voter && slot.online
            });
            if own.info.role == NodeRole::Voter && other_voter_online {
                vec![RoleChange {
                    id: own_id,
                    address: own.info.address.clone(),
                    from: NodeRole::Voter,
                    to: NodeRole::Spare,
                }]
            } else {
                Vec::new()
            }
        }
    }
}

/// Whether removing `id` from `members` would leave no voter: 1.11 accepts such a REMOVE
/// and the cluster is dead until an offline recovery.
pub fn removal_leaves_no_voter(members: &[NodeInfo], id: u64) -> bool {
    !members
        .iter()
        .any(|m| m.id != id && m.role == NodeRole::Voter)
}

/// A member during planning: its role as the planned changes have left it.
struct Slot<'a> {
    state: &'a MemberState,
    online: bool,
    role: NodeRole,
}

impl Slot<'_> {
    /// Whether the member can take a new role now: online, in one of the `pool` roles, and
    /// not on its way out.
    fn is_candidate(&self, pool: &[NodeRole]) -> bool {
        self.online && pool.contains(&self.role) && self.state.weight != DRAINING_WEIGHT
    }
}

fn plan_voters(
    roster: &mut [Slot],
    leader_id: u64,
    target: usize,
    standby_target: usize,
    changes: &mut Vec<RoleChange>,
) {
    // A demoted online voter stays warm as a stand-by when the online stand-bys fall short
    // (an offline stand-by then goes in `plan_standbys`).
    let demoted_role = |roster: &[Slot]| {
        if count(roster, |s| s.role == NodeRole::StandBy && s.online) < standby_target {
            NodeRole::StandBy
        } else {
            NodeRole::Spare
        }
    };
    // Rule 1: replace offline voters while online candidates remain and the online voters
    // fall short of the target (beyond it, rule 2 simply lets offline voters go). When
    // every offline voter and every candidate would be used up and the count would be
    // even, one swap fewer is made: rule 2 then lets that offline voter go, which gives the
    // same odd count without promoting a node only to demote it again.
    let offline_voters = indices(roster, |s| s.role == NodeRole::Voter && !s.online);
    let online_voters = count(roster, |s| s.role == NodeRole::Voter && s.online);
    let candidates = count(roster, |s| {
        s.is_candidate(&[NodeRole::StandBy, NodeRole::Spare])
    });
    let mut swaps = offline_voters
        .len()
        .min(candidates)
        .min(target.saturating_sub(online_voters));
    if swaps > 0
        && swaps == offline_voters.len()
        && swaps == candidates
        && (online_voters + swaps).is_multiple_of(2)
    {
        swaps -= 1;
    }
    for &offline in offline_voters.iter().take(swaps) {
        let covered =
            domains_with_role(roster, NodeRole::Voter, Some(roster[offline].state.info.id));
        let Some(replacement) =
            best_candidate(roster, &[NodeRole::StandBy, NodeRole::Spare], &covered, &[])
        else {
            break;
        };
        assign(roster, replacement, NodeRole::Voter, changes);
        assign(roster, offline, NodeRole::Spare, changes);
    }

    // Rule 2: trim offline voters beyond the target or down to an odd count.
    loop {
        let total = count(roster, |s| s.role == NodeRole::Voter);
        let Some(offline) = indices(roster, |s| s.role == NodeRole::Voter && !s.online).pop()
        else {
            break;
        };
        if total <= target && !total.is_multiple_of(2) {
            break;
        }
        assign(roster, offline, NodeRole::Spare, changes);
    }
    if count(roster, |s| s.role == NodeRole::Voter && !s.online) > 0 {
        // Rule 3's precondition: with a voter offline, no online voter may go, and
        // promoting one more would only make the count even or exceed the target.
        return;
    }

    // Rule 3: trim online voters beyond the target.
    let online_voters = count(roster, |s| s.role == NodeRole::Voter);
    for _ in target..online_voters {
        let Some(victim) = worst_voter(roster, leader_id) else {
            break;
        };
        let to = demoted_role(roster);
        assign(roster, victim, to, changes);
    }

    // Rule 4: promote towards the target, keeping the count odd.
    let voters = count(roster, |s| s.role == NodeRole::Voter);
    let pool = [NodeRole::StandBy, NodeRole::Spare];
    let available = count(roster, |s| s.is_candidate(&pool));
    let mut wanted = voters + available.min(target.saturating_sub(voters));
    if wanted.is_multiple_of(2) {
        wanted -= 1;
    }
    if wanted < voters {
        // An even count of online voters and no candidate to make it odd: one steps down.
        if let Some(victim) = worst_voter(roster, leader_id) {
            let to = demoted_role(roster);
            assign(roster, victim, to, changes);
        }
        return;
    }
    for _ in voters..wanted {
        let covered = domains_with_role(roster, NodeRole::Voter, None);
        let Some(candidate) = best_candidate(roster, &pool, &covered, &[]) else {
            break;
        };
        assign(roster, candidate, NodeRole::Voter, changes);
    }
}

fn plan_standbys(roster: &mut [Slot], target: usize, changes: &mut Vec<RoleChange>) {
    let pool = [NodeRole::Spare];
    // Offline stand-bys are replaced only while the online ones fall short of the target.
    for offline in indices(roster, |s| s.role == NodeRole::StandBy && !s.online) {
        if count(roster, |s| s.role == NodeRole::StandBy && s.online) >= target {
            break;
        }
        let covered = domains_with_role(
            roster,
            NodeRole::StandBy,
            Some(roster[offline].state.info.id),
        );
        let Some(replacement) = best_candidate(roster, &pool, &covered, &[]) else {
            break;
        };
        assign(roster, replacement, NodeRole::StandBy, changes);
        assign(roster, offline, NodeRole::Spare, changes);
    }
    while count(roster, |s| s.role == NodeRole::StandBy) > target {
        let offline = indices(roster, |s| s.role == NodeRole::StandBy && !s.online).pop();
        let victim = offline.or_else(|| {
            indices(roster, |s| s.role == NodeRole::StandBy)
                .into_iter()
                .max_by_key(|&i| demotion_key(roster, i, NodeRole::StandBy))
        });
        match victim {
            Some(index) => assign(roster, index, NodeRole::Spare, changes),
            None => break,
        }
    }
    while count(roster, |s| s.role == NodeRole::StandBy) < target {
        let covered = domains_with_role(roster, NodeRole::StandBy, None);
        let Some(candidate) = best_candidate(roster, &pool, &covered, &[]) else {
            break;
        };
        assign(roster, candidate, NodeRole::StandBy, changes);
    }
}

fn largest_odd_at_most(n: usize) -> usize {
    if n.is_multiple_of(2) {
        n - 1
    } else {
        n
    }
}

fn indices(roster: &[Slot], keep: impl Fn(&Slot) -> bool) -> Vec<usize> {
    let mut found: Vec<usize> = (0..roster.len()).filter(|&i| keep(&roster[i])).collect();
    found.sort_by_key(|&i| roster[i].state.info.id);
    found
}

fn count(roster: &[Slot], keep: impl Fn(&Slot) -> bool) -> usize {
    roster.iter().filter(|s| keep(s)).count()
}

/// The failure domains of the members holding `role`, leaving out `except`.
fn domains_with_role(roster: &[Slot], role: NodeRole, except: Option<u64>) -> Vec<u64> {
    roster
        .iter()
        .filter(|s| s.role == role && Some(s.state.info.id) != except)
        .map(|s| s.state.failure_domain)
        .collect()
}

/// The online member with one of the `pool` roles that best takes a new role: a failure
/// domain not in `covered` first (surviving the loss of a domain matters more than a
/// faster catch-up), then earlier pool roles (a stand-by is caught up already), then lower
/// weight, lower id.
fn best_candidate(
    roster: &[Slot],
    pool: &[NodeRole],
    covered: &[u64],
    except: &[u64],
) -> Option<usize> {
    (0..roster.len())
        .filter(|&i| roster[i].is_candidate(pool) && !except.contains(&roster[i].state.info.id))
        .min_by_key(|&i| {
            let slot = &roster[i];
            let rank = pool.iter().position(|r| *r == slot.role);
            (
                covered.contains(&slot.state.failure_domain),
                rank,
                slot.state.weight,
                slot.state.info.id,
            )
        })
}

/// The online voter to demote first: never the leader; one sharing its failure domain
/// with another voter, then the higher weight, then the higher id.
fn worst_voter(roster: &[Slot], leader_id: u64) -> Option<usize> {
    indices(roster, |s| {
        s.role == NodeRole::Voter && s.online && s.state.info.id != leader_id
    })
    .into_iter()
    .max_by_key(|&i| demotion_key(roster, i, NodeRole::Voter))
}

fn demotion_key(roster: &[Slot], index: usize, role: NodeRole) -> (bool, u64, u64) {
    let slot = &roster[index];
    let shared = roster.iter().enumerate().any(|(j, other)| {
        j != index && other.role == role && other.state.failure_domain == slot.state.failure_domain
    });
    (shared, slot.state.weight, slot.state.info.id)
}

fn change(slot: &Slot, to: NodeRole) -> RoleChange {
    RoleChange {
        id: slot.state.info.id,
        address: slot.state.info.address.clone(),
        from: slot.role,
        to,
    }
}

fn assign(roster: &mut [Slot], index: usize, to: NodeRole, changes: &mut Vec<RoleChange>) {
    changes.push(change(&roster[index], to));
    roster[index].role = to;
}

#[cfg(test)]
mod tests {
    use super::*;
    use NodeRole::{Spare, StandBy, Voter};

    /// A member: id, role, online; failure domain 0 and weight 0.
    fn m(id: u64, role: NodeRole, online: bool) -> MemberState {
        MemberState {
            info: NodeInfo {
                id,
                address: format!("10.0.0.{id}:9001"),
                role,
            },
            online,
            failure_domain: 0,
            weight: 0,
        }
    }

    /// A member with a failure domain and weight.
    fn md(id: u64, role: NodeRole, domain: u64, weight: u64) -> MemberState {
        MemberState {
            failure_domain: domain,
            weight,
            ..m(id, role, true)
        }
    }

    fn check(
        members: &[MemberState],
        leader: u64,
        targets: (usize, usize),
        expected: &[(u64, NodeRole)],
    ) {
        let targets = RoleTargets {
            voters: targets.0,
            standbys: targets.1,
        };
        let plan: Vec<(u64, NodeRole)> = plan_roles(members, leader, targets)
            .into_iter()
            .map(|c| (c.id, c.to))
            .collect();
        assert_eq!(
            plan, expected,
            "members {members:?} leader {leader} targets {targets:?}"
        );
    }

    #[test]
    fn role_plans() {
        let up = true;
        let down = false;
        // A lone node has nothing to do.
        check(&[m(1, Voter, up)], 1, (3, 3), &[]);
        // Two nodes: one voter (two voters would need both), the other a warm stand-by.
        check(
            &[m(1, Voter, up), m(2, Spare, up)],
            1,
            (3, 3),
            &[(2, StandBy)],
        );
        // The third node makes three voters: the stand-by first, then the spare.
        check(
            &[m(1, Voter, up), m(2, StandBy, up), m(3, Spare, up)],
            1,
            (3, 3),
            &[(2, Voter), (3, Voter)],
        );
        // Three voters, fourth and fifth node: stand-bys.
        check(
            &[
                m(1, Voter, up),
                m(2, Voter, up),
                m(3, Voter, up),
                m(4, Spare, up),
                m(5, Spare, up),
            ],
            1,
            (3, 3),
            &[(4, StandBy), (5, StandBy)],
        );
        // At target: nothing.
        check(
            &[
                m(1, Voter, up),
                m(2, Voter, up),
                m(3, Voter, up),
                m(4, StandBy, up),
            ],
            2,
            (3, 3),
            &[],
        );
        // An offline voter with a stand-by to replace it: promote first, then demote.
        check(
            &[
                m(1, Voter, up),
                m(2, Voter, up),
                m(3, Voter, down),
                m(4, StandBy, up),
            ],
            1,
            (3, 3),
            &[(4, Voter), (3, Spare)],
        );
        // A spare replaces an offline voter when no stand-by is online.
        check(
            &[
                m(1, Voter, up),
                m(2, Voter, up),
                m(3, Voter, down),
                m(4, StandBy, down),
                m(5, Spare, up),
            ],
            1,
            (3, 3),
            &[(5, Voter), (3, Spare)],
        );
        // An offline voter without replacement stays: demoting it gains nothing, and
        // demoting the online one would leave the majority out of reach.
        check(
            &[m(1, Voter, up), m(2, Voter, up), m(3, Voter, down)],
            1,
            (3, 3),
            &[],
        );
        // ... even when an offline spare is there.
        check(
            &[
                m(1, Voter, up),
                m(2, Voter, up),
                m(3, Voter, down),
                m(4, Spare, down),
            ],
            2,
            (3, 3),
            &[],
        );
        // Four voters with one offline: the offline one goes (odd count again).
        check(
            &[
                m(1, Voter, up),
                m(2, Voter, up),
                m(3, Voter, up),
                m(4, Voter, down),
            ],
            1,
            (5, 3),
            &[(4, Spare)],
        );
        // Five voters, target three: trim the offline ones first.
        check(
            &[
                m(1, Voter, up),
                m(2, Voter, up),
                m(3, Voter, up),
                m(4, Voter, down),
                m(5, Voter, down),
            ],
            1,
            (3, 0),
            &[(5, Spare), (4, Spare)],
        );
        // Five online voters, target three: the highest ids go, never the leader.
        check(
            &[
                m(1, Voter, up),
                m(2, Voter, up),
                m(3, Voter, up),
                m(4, Voter, up),
                m(5, Voter, up),
            ],
            5,
            (3, 3),
            &[(4, StandBy), (3, StandBy)],
        );
        // Two online voters, nobody to make it three: one steps down to stand-by.
        check(
            &[m(1, Voter, up), m(2, Voter, up)],
            2,
            (3, 3),
            &[(1, StandBy)],
        );
        // Four online voters, target five, no candidate: down to three.
        check(
            &[
                m(1, Voter, up),
                m(2, Voter, up),
                m(3, Voter, up),
                m(4, Voter, up),
            ],
            1,
            (5, 0),
            &[(4, Spare)],
        );
        // Five voters wanted, two candidates: 1 + 2 = 3 (odd), both promoted.
        check(
            &[m(1, Voter, up), m(2, Spare, up), m(3, Spare, up)],
            1,
            (5, 0),
            &[(2, Voter), (3, Voter)],
        );
        // Five wanted, three candidates: 1 + 3 = 4 is even, so only two are promoted.
        check(
            &[
                m(1, Voter, up),
                m(2, Spare, up),
                m(3, Spare, up),
                m(4, Spare, up),
            ],
            1,
            (5, 0),
            &[(2, Voter), (3, Voter)],
        );
        // An even target counts as the odd number below it.
        check(
            &[m(1, Voter, up), m(2, Spare, up), m(3, Spare, up)],
            1,
            (4, 0),
            &[(2, Voter), (3, Voter)],
        );
        // Stand-bys: an offline one is replaced by an online spare; extra ones trimmed.
        check(
            &[
                m(1, Voter, up),
                m(2, Voter, up),
                m(3, Voter, up),
                m(4, StandBy, down),
                m(5, Spare, up),
            ],
            1,
            (3, 1),
            &[(5, StandBy), (4, Spare)],
        );
        check(
            &[
                m(1, Voter, up),
                m(2, Voter, up),
                m(3, Voter, up),
                m(4, StandBy, up),
                m(5, StandBy, up),
            ],
            1,
            (3, 1),
            &[(5, Spare)],
        );
        // An offline stand-by beyond the target goes before an online one.
        check(
            &[
                m(1, Voter, up),
                m(2, Voter, up),
                m(3, Voter, up),
                m(4, StandBy, down),
                m(5, StandBy, up),
            ],
            1,
            (3, 1),
            &[(4, Spare)],
        );
        // The leader is not a voter in this configuration: wait.
        check(&[m(1, Spare, up), m(2, Voter, up)], 1, (3, 3), &[]);
        // A draining member (stopping) is never promoted.
        let draining = MemberState {
            weight: DRAINING_WEIGHT,
            ..m(2, Spare, up)
        };
        check(
            &[m(1, Voter, up), draining.clone(), m(3, Spare, up)],
            1,
            (3, 3),
            &[(3, StandBy)],
        );
        check(&[m(1, Voter, up), draining], 1, (3, 3), &[]);
        // The leader's own failed probe does not make it offline.
        check(
            &[m(1, Voter, down), m(2, Spare, up)],
            1,
            (3, 3),
            &[(2, StandBy)],
        );
    }

    #[test]
    fn failure_domains_and_weights_order_candidates() {
        // Domain 1 already has a voter: the candidate in domain 2 wins over the lighter one.
        check(
            &[
                md(1, Voter, 1, 0),
                md(2, Spare, 1, 0),
                md(3, Spare, 2, 5),
                md(4, Spare, 1, 0),
            ],
            1,
            (3, 0),
            &[(3, Voter), (2, Voter)],
        );
        // A spare in a new domain wins over a stand-by in a covered one.
        check(
            &[
                md(1, Voter, 1, 0),
                md(2, Voter, 2, 0),
                md(3, Voter, 1, 0),
                md(4, StandBy, 1, 0),
                md(5, Spare, 3, 0),
            ],
            1,
            (5, 0),
            &[(5, Voter), (4, Voter)],
        );
        // Same domain: the lower weight wins.
        check(
            &[md(1, Voter, 0, 0), md(2, Spare, 0, 9), md(3, Spare, 0, 1)],
            1,
            (3, 0),
            &[(3, Voter), (2, Voter)],
        );
        // Demotion takes a voter sharing its domain first.
        check(
            &[
                md(1, Voter, 1, 0),
                md(2, Voter, 2, 0),
                md(3, Voter, 1, 0),
                md(4, Voter, 3, 0),
                md(5, Voter, 4, 0),
            ],
            1,
            (3, 0),
            &[(3, Spare), (5, Spare)],
        );
    }

    fn check_handover(members: &[MemberState], own: u64, expected: &[(u64, NodeRole)]) {
        let plan: Vec<(u64, NodeRole)> = plan_handover(members, own)
            .into_iter()
            .map(|c| (c.id, c.to))
            .collect();
        assert_eq!(plan, expected, "members {members:?} own {own}");
    }

    #[test]
    fn handover_plans() {
        let up = true;
        let down = false;
        // A voter hands its vote to an online stand-by, then becomes a spare.
        check_handover(
            &[
                m(1, Voter, up),
                m(2, Voter, up),
                m(3, Voter, up),
                m(4, StandBy, up),
                m(5, Spare, up),
            ],
            1,
            &[(4, Voter), (1, Spare)],
        );
        // ... or to a spare when the stand-by is offline.
        check_handover(
            &[
                m(1, Voter, up),
                m(2, Voter, up),
                m(3, Voter, up),
                m(4, StandBy, down),
                m(5, Spare, up),
            ],
            1,
            &[(5, Voter), (1, Spare)],
        );
        // No candidate: step down all the same, the others keep the quorum.
        check_handover(
            &[m(1, Voter, up), m(2, Voter, up), m(3, Voter, up)],
            1,
            &[(1, Spare)],
        );
        // Two voters: the one stopping must step down, or it takes the quorum with it.
        check_handover(&[m(1, Voter, up), m(2, Voter, up)], 2, &[(2, Spare)]);
        // The other voter is offline: the step-down could not commit; nothing to do.
        check_handover(&[m(1, Voter, up), m(2, Voter, down)], 1, &[]);
        // A lone voter keeps its vote: nobody could take it.
        check_handover(&[m(1, Voter, up), m(2, Spare, down)], 1, &[]);
        // A stand-by without a spare to take its place stays.
        check_handover(&[m(1, Voter, up), m(2, StandBy, up)], 2, &[]);
        // A stand-by hands over to a spare only.
        check_handover(
            &[m(1, Voter, up), m(2, StandBy, up), m(3, Spare, up)],
            2,
            &[(3, StandBy), (2, Spare)],
        );
        // A spare, or a node not in the configuration, has nothing to hand over.
        check_handover(&[m(1, Voter, up), m(2, Spare, up)], 2, &[]);
        check_handover(&[m(1, Voter, up)], 7, &[]);
    }

    #[test]
    fn last_voter_removal_is_detected() {
        let infos = |ms: &[MemberState]| ms.iter().map(|m| m.info.clone()).collect::<Vec<_>>();
        let cases = [
            (infos(&[m(1, Voter, true)]), 1, true),
            (infos(&[m(1, Voter, true), m(2, Spare, true)]), 1, true),
            (infos(&[m(1, Voter, true), m(2, Spare, true)]), 2, false),
            (infos(&[m(1, Voter, true), m(2, Voter, true)]), 1, false),
            (infos(&[m(1, Voter, true)]), 9, false),
        ];
        for (members, id, expected) in cases {
            assert_eq!(
                removal_leaves_no_voter(&members, id),
                expected,
                "{members:?} remove {id}"
            );
        }
    }

    /// The majority of `voters` voters.
    fn quorum(voters: usize) -> usize {
        voters / 2 + 1
    }

    /// Online voters beyond the quorum: how many more voters may fail (negative: no quorum).
    fn reach(roles: &[(NodeRole, bool)]) -> i64 {
        let voters = roles.iter().filter(|(r, _)| *r == Voter).count();
        let online = roles.iter().filter(|(r, up)| *r == Voter && *up).count();
        online as i64 - quorum(voters) as i64
    }

    fn cluster() -> impl proptest::strategy::Strategy<Value = (Vec<MemberState>, usize, RoleTargets)>
    {
        use proptest::prelude::*;
        let member = (0..3u8, any::<bool>(), 0..3u64, 0..3u64);
        (
            proptest::collection::vec(member, 1..9),
            any::<prop::sample::Index>(),
            1..8usize,
            0..5usize,
        )
            .prop_map(|(specs, leader, voters, standbys)| {
                let mut members: Vec<MemberState> = specs
                    .iter()
                    .enumerate()
                    .map(|(i, (role, online, domain, weight))| {
                        let role = [Voter, StandBy, Spare][usize::from(*role)];
                        MemberState {
                            failure_domain: *domain,
                            weight: *weight,
                            ..m(i as u64 + 1, role, *online)
                        }
                    })
                    .collect();
                // The leader is an online voter, as the leader that plans always is.
                let leader = leader.index(members.len());
                members[leader].info.role = Voter;
                members[leader].online = true;
                (members, leader, RoleTargets { voters, standbys })
            })
    }

    proptest::proptest! {
        /// Applied change by change, a plan never takes the quorum away when there was
        /// one, lowers the reach only by demoting an online voter while every voter is
        /// online, never touches the leader, never promotes an offline node, changes each
        /// node at most once, and ends with an odd number of voters within the target.
        #[test]
        fn role_plans_never_lower_the_reach_unsafely((members, leader, targets) in cluster()) {
            let leader_id = members[leader].info.id;
            let plan = plan_roles(&members, leader_id, targets);
            let mut roles: Vec<(NodeRole, bool)> = members.iter().map(|m| (m.info.role, m.online)).collect();
            let mut changed = std::collections::HashSet::new();
            for change in &plan {
                let index = (change.id - 1) as usize;
                proptest::prop_assert!(change.id != leader_id, "the leader changed: {plan:?}");
                proptest::prop_assert!(changed.insert(change.id), "node {} changed twice: {plan:?}", change.id);
                proptest::prop_assert_eq!(change.from, roles[index].0, "stale from: {:?}", plan);
                let promotes = matches!((change.from, change.to), (Spare, StandBy | Voter) | (StandBy, Voter));
                proptest::prop_assert!(!promotes || roles[index].1, "offline node promoted: {plan:?}");
                let before = reach(&roles);
                let all_voters_online = roles.iter().all(|(r, up)| *r != Voter || *up);
                roles[index].0 = change.to;
                let after = reach(&roles);
                proptest::prop_assert!(before < 0 || after >= 0, "quorum lost by {change:?} in {plan:?}");
                if after < before {
                    proptest::prop_assert!(
                        change.from == Voter && roles[index].1 && all_voters_online,
                        "reach lowered by {change:?} in {plan:?}"
                    );
                }
            }
            let voters = roles.iter().filter(|(r, _)| *r == Voter).count();
            let target = if targets.voters % 2 == 0 { targets.voters - 1 } else { targets.voters };
            let initial = members.iter().filter(|m| m.info.role == Voter).count();
            proptest::prop_assert!(voters % 2 == 1, "{voters} voters after {plan:?}");
            proptest::prop_assert!(voters <= target.max(1) || voters <= initial, "{voters} voters after {plan:?}");
        }
    }
}
