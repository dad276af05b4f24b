//! The application's IO: joining, the background loop (member list refresh and the
//! leader's role reviews), hand-over and removal. Each observes the cluster through the
//! leader, asks a pure decision in `roles`, and applies it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use controller_backoff::Backoff;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{ops, roles, store, AppError, MemberState, RoleChange, Shared};
use crate::{NodeInfo, NodeRole};

/// The pauses between join attempts: from 25 ms, doubling up to 1 s (a busy configuration
/// change lasts milliseconds).
const JOIN_BACKOFF: Backoff = Backoff::new(Duration::from_millis(25), Duration::from_secs(1));

/// Makes sure the cluster knows this node: ADD it as a spare unless it is already a member
/// (a restart after an interrupted join), retrying with back-off on any failure (another
/// change in progress, no leader yet). Returns once the node is in the configuration;
/// the caller bounds the time.
pub(super) async fn join(shared: &Shared) -> Result<(), AppError> {
    let mut backoff = JOIN_BACKOFF;
    loop {
        match join_once(shared).await {
            Ok(()) => return Ok(()),
            Err(error) => {
                let pause = backoff.next_delay();
                log::info!(
                    "node {}: join attempt failed, retrying in {pause:?}: {}",
                    shared.id,
                    crate::error_chain(&error)
                );
                tokio::time::sleep(pause).await;
            }
        }
    }
}

async fn join_once(shared: &Shared) -> Result<(), AppError> {
    let mut client = shared.leader().await?;
    let members = ops::cluster(&mut client).await?;
    if !members.iter().any(|m| m.id == shared.id) {
        ops::add(&mut client, shared.id, &shared.address).await?;
    }
    let members = ops::cluster(&mut client).await?;
    remember_members(shared, &members).await?;
    shared.keep_leader(client);
    if members.iter().any(|m| m.id == shared.id) {
        Ok(())
    } else {
        Err(AppError::NotMember { id: shared.id })
    }
}

/// How many rounds in a row a follower may keep quiet (see [`background`]) before it
/// refreshes the member list from the leader again: at the dbaccessor's 200 ms interval,
/// once a second.
pub(super) const QUIET_ROUNDS: u32 = 4;

/// The background task: every `role_interval` (or when kicked) find the leader, refresh the
/// member list, mark the node ready once it is a member, and on the leader review the
/// roles. The first round runs at once and reviews the roles from any node, so that a node
/// that just joined gets promoted without waiting for the leader's next round.
///
/// A ready follower keeps most rounds quiet: it asks only its own node which leader it
/// follows, and while that is the leader of its last full round it leaves the leader alone
/// for up to [`QUIET_ROUNDS`] rounds. Every follower asking the leader for the leader and the
/// member list five times a second is traffic on the one event loop that carries every
/// write. A change of leader (this node's included) is still seen within one interval.
pub(super) async fn background(
    shared: std::sync::Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
) {
    let mut first = true;
    // The leader of the last full round, when it was another node, and the quiet rounds
    // since.
    let mut followed: Option<u64> = None;
    let mut quiet = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let may_keep_quiet = !first && *ready.borrow() && quiet < QUIET_ROUNDS;
        let keep_quiet = async {
            match followed {
                Some(leader) if may_keep_quiet => follows(&shared, leader).await,
                _ => false,
            }
        };
        tokio::select! {
            changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { return },
            result = async {
                if keep_quiet.await {
                    return None;
                }
                shared.full_rounds.fetch_add(1, Ordering::Relaxed);
                Some(round(&shared, &ready, first).await)
            } => match result {
                None => {
                    quiet += 1;
                    shared.quiet_rounds.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(leader)) => {
                    followed = (leader != shared.id).then_some(leader);
                    quiet = 0;
                }
                Some(Err(error)) => {
                    followed = None;
                    log::debug!(
                        "node {}: background round failed: {}",
                        shared.id,
                        crate::error_chain(&error)
                    );
                }
            }
        }
        first = false;
        tokio::select! {
            changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { return },
            () = tokio::time::sleep(shared.role_interval) => {}
            () = shared.kick.notified() => first = true,
        }
    }
}

/// Whether this node's own raft still names `leader` as the leader it follows.
async fn follows(shared: &Shared, leader: u64) -> bool {
    let kept = shared.take_peer(&shared.address);
    let (named, connection) = ops::named_leader(&shared.address, &shared.dial, kept).await;
    if let Some(connection) = connection {
        shared.keep_peer(connection);
    }
    named == Some(leader)
}

/// One full round; returns the leader's id.
async fn round(
    shared: &Shared,
    ready: &watch::Sender<bool>,
    review_anyway: bool,
) -> Result<u64, AppError> {
    let mut client = shared.leader().await?;
    let leader_id = client.id;
    let leader = Some(leader_id);
    let members = ops::cluster(&mut client).await?;
    remember_members(shared, &members).await?;
    if members.iter().any(|m| m.id == shared.id) {
        ready.send_replace(true);
    }
    if leader == Some(shared.id) || review_anyway {
        if let Some(leader) = leader {
            review(shared, &mut client, leader, &members).await;
        }
    }
    shared.keep_leader(client);
    if leader != Some(shared.id) {
        // Failed probes count in a row while this node leads; start afresh next time.
        shared
            .probe_memory
            .lock()
            .expect("the probe memory lock is never poisoned: no panic holds it")
            .clear();
    }
    Ok(leader_id)
}

/// One role review, applied through the leader: only when this node leads.
pub(super) async fn adjust_roles(shared: &Shared) -> Result<Vec<RoleChange>, AppError> {
    let mut client = shared.leader().await?;
    let leader = Some(client.id);
    if leader != Some(shared.id) {
        return Ok(Vec::new());
    }
    let members = ops::cluster(&mut client).await?;
    remember_members(shared, &members).await?;
    let applied = review(shared, &mut client, shared.id, &members).await;
    shared.keep_leader(client);
    Ok(applied)
}

/// Probes the members, plans, and applies the plan in order, stopping at the first change
/// that fails (the next round plans again from what it then observes). Returns the
/// changes applied.
async fn review(
    shared: &Shared,
    client: &mut ops::Leader,
    leader: u64,
    members: &[NodeInfo],
) -> Vec<RoleChange> {
    let probed = probe(shared, members).await;
    let states = {
        let mut memory = shared
            .probe_memory
            .lock()
            .expect("the probe memory lock is never poisoned: no panic holds it");
        debounce(probed, &mut memory)
    };
    let plan = roles::plan_roles(&states, leader, shared.targets);
    let mut applied = Vec::with_capacity(plan.len());
    for change in plan {
        match apply_checked(shared, client, &change).await {
            Ok(true) => {
                log::info!(
                    "node {}: node {} ({}) is now a {} (was a {})",
                    shared.id,
                    change.id,
                    change.address,
                    change.to,
                    change.from
                );
                applied.push(change);
            }
            Ok(false) => {
                log::debug!("node {}: the plan went stale at {change:?}", shared.id);
                break;
            }
            Err(error) => {
                log::warn!(
                    "node {}: cannot change node {} ({}) from {} to {}: {}",
                    shared.id,
                    change.id,
                    change.address,
                    change.from,
                    change.to,
                    crate::error_chain(&error)
                );
                break;
            }
        }
    }
    applied
}

/// Applies one planned change if it still fits what the cluster is now: the member still
/// has the role the plan saw and, for a promotion, still answers and is not draining.
/// `Ok(false)` when it no longer fits (plans are made from a snapshot; other nodes act
/// meanwhile). A promotion of a member that is gone would block every configuration
/// change until libraft gives up waiting for it to catch up.
async fn apply_checked(
    shared: &Shared,
    client: &mut ops::Leader,
    change: &RoleChange,
) -> Result<bool, AppError> {
    let deadline = tokio::time::Instant::now() + ops::BUSY_RETRY;
    let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(250));
    loop {
        let members = ops::cluster(client).await?;
        if members.iter().find(|m| m.id == change.id).map(|m| m.role) != Some(change.from) {
            return Ok(false);
        }
        if rank(change.to) > rank(change.from) {
            let kept = shared.take_peer(&change.address);
            let (answer, connection) = ops::describe(&change.address, &shared.dial, kept).await;
            if let Some(connection) = connection {
                shared.keep_peer(connection);
            }
            match answer {
                Ok((_, weight)) if weight != roles::DRAINING_WEIGHT => {}
                _ => return Ok(false),
            }
        }
        match ops::assign(client, change.id, change.to).await {
            // Another change is under way: wait, then check this one again before resending.
            Err(AppError::Cluster { source, .. })
                if source.is_busy() && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            result => return result.map(|()| true),
        }
    }
}

/// Orders roles by what they take part in: a promotion goes up.
fn rank(role: NodeRole) -> u8 {
    match role {
        NodeRole::Spare => 0,
        NodeRole::StandBy => 1,
        NodeRole::Voter => 2,
    }
}

/// Asks every member for its failure domain and weight, all at once, through the
/// connections the last probe kept; a member that does not answer within the request timeout
/// (or cannot be connected to within [`ops::PEER_CONNECT_TIMEOUT`], or stays silent on a
/// kept connection for [`ops::KEPT_REQUEST_TIMEOUT`]) is offline.
async fn probe(shared: &Shared, members: &[NodeInfo]) -> Vec<MemberState> {
    let addresses: Vec<&str> = members.iter().map(|m| m.address.as_str()).collect();
    let kept = shared.take_peers(&addresses);
    let mut probes = JoinSet::new();
    for ((index, member), kept) in members.iter().enumerate().zip(kept) {
        let address = member.address.clone();
        let dial = shared.dial.clone();
        probes.spawn(async move { (index, ops::describe(&address, &dial, kept).await) });
    }
    let mut states: Vec<MemberState> = members
        .iter()
        .map(|info| MemberState {
            info: info.clone(),
            online: false,
            failure_domain: 0,
            weight: 0,
        })
        .collect();
    while let Some(joined) = probes.join_next().await {
        let Ok((index, (answer, connection))) = joined else {
            continue;
        };
        if let Some(connection) = connection {
            shared.keep_peer(connection);
        }
        if let Ok((failure_domain, weight)) = answer {
            let state = &mut states[index];
            state.online = true;
            state.failure_domain = failure_domain;
            state.weight = weight;
        }
    }
    states
}

/// A voter is taken for offline only after this many consecutive failed probes, so that
/// one slow answer under load does not make the leader replace a healthy voter. (A
/// stand-by or spare whose probe failed is never promoted: it might really be gone, and the
/// leader would wait for it to catch up.)
pub(super) const OFFLINE_AFTER: u32 = 2;

/// What the leader remembers of a member between rounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ProbeMemory {
    /// Probes failed in a row.
    failures: u32,
    /// The failure domain and weight from the last answered probe.
    failure_domain: u64,
    weight: u64,
}

/// Judges this round's probes against the previous rounds': a voter whose probe failed
/// fewer than [`OFFLINE_AFTER`] times in a row still counts as online (with its last known
/// failure domain and weight). Forgets members that left. Pure.
fn debounce(probed: Vec<MemberState>, memory: &mut HashMap<u64, ProbeMemory>) -> Vec<MemberState> {
    memory.retain(|id, _| probed.iter().any(|m| m.info.id == *id));
    probed
        .into_iter()
        .map(|mut state| {
            let remembered = memory.entry(state.info.id).or_default();
            if state.online {
                *remembered = ProbeMemory {
                    failures: 0,
                    failure_domain: state.failure_domain,
                    weight: state.weight,
                };
            } else {
                remembered.failures = remembered.failures.saturating_add(1);
                if state.info.role == NodeRole::Voter && remembered.failures < OFFLINE_AFTER {
                    state.online = true;
                    state.failure_domain = remembered.failure_domain;
                    state.weight = remembered.weight;
                }
            }
            state
        })
        .collect()
}

/// Marks this node as draining (see [`roles::DRAINING_WEIGHT`]) so that no leader promotes
/// it while it stops.
pub(super) async fn mark_draining(shared: &Shared) -> Result<(), AppError> {
    ops::set_weight(&shared.address, roles::DRAINING_WEIGHT, &shared.dial)
        .await
        .map_err(|source| AppError::Cluster {
            operation: "mark the node as draining".to_owned(),
            source,
        })
}

/// Hands leadership and this node's role over (see `App::handover`).
pub(super) async fn handover(shared: &Shared) -> Result<(), AppError> {
    let mut client = shared.leader().await?;
    let members = ops::cluster(&mut client).await?;
    let Some(own) = members.iter().find(|m| m.id == shared.id) else {
        return Ok(());
    };
    let leader = Some(client.id);
    if own.role == NodeRole::Spare && leader != Some(shared.id) {
        return Ok(());
    }
    let mut states = probe(shared, &members).await;
    if leader == Some(shared.id) {
        let other_voter_online = states
            .iter()
            .any(|s| s.info.id != shared.id && s.info.role == NodeRole::Voter && s.online);
        if !other_voter_online {
            // A lone voter first makes its best candidate a voter, so that it has somebody
            // to hand leadership to.
            let Some(promotion) = roles::plan_handover(&states, shared.id).into_iter().next()
            else {
                return Ok(());
            };
            if !apply_checked(shared, &mut client, &promotion).await? {
                return Err(AppError::Handover {
                    reason: format!("node {} cannot take the vote any more", promotion.id),
                });
            }
            log::info!(
                "node {}: made node {} a voter to hand over to",
                shared.id,
                promotion.id
            );
            let members = ops::cluster(&mut client).await?;
            states = probe(shared, &members).await;
        }
        client = transfer_away(shared, &mut client, &states).await?;
        let members = ops::cluster(&mut client).await?;
        states = probe(shared, &members).await;
    }
    for change in roles::plan_handover(&states, shared.id) {
        if !apply_checked(shared, &mut client, &change).await? {
            return Err(AppError::Handover {
                reason: format!("the cluster changed meanwhile ({change:?} no longer fits)"),
            });
        }
        log::info!(
            "node {}: handed over: node {} is now a {}",
            shared.id,
            change.id,
            change.to
        );
    }
    Ok(())
}

/// Removes node `id` (see `App::remove`).
pub(super) async fn remove(shared: &Shared, id: u64) -> Result<(), AppError> {
    let mut client = shared.leader().await?;
    let members = ops::cluster(&mut client).await?;
    if !members.iter().any(|m| m.id == id) {
        return Err(AppError::NotMember { id });
    }
    if roles::removal_leaves_no_voter(&members, id) {
        return Err(AppError::LastVoter { id });
    }
    if client.id == id {
        let states = probe(shared, &members).await;
        client = transfer_away_from(shared, &mut client, &states, id).await?;
    }
    if let Err(error) = ops::remove(&mut client, id).await {
        // Leadership may have moved mid-request: the removal may have happened anyway.
        client = shared.leader().await?;
        let members = ops::cluster(&mut client).await?;
        if members.iter().any(|m| m.id == id) {
            return Err(error);
        }
    }
    let members = ops::cluster(&mut client).await?;
    remember_members(shared, &members).await?;
    shared.keep_leader(client);
    shared.kick.notify_one();
    Ok(())
}

async fn transfer_away(
    shared: &Shared,
    client: &mut ops::Leader,
    states: &[MemberState],
) -> Result<ops::Leader, AppError> {
    transfer_away_from(shared, client, states, shared.id).await
}

/// Moves leadership from `from` (the leader `client` is connected to) to the best other
/// online voter, and returns a client connected to the new leader.
async fn transfer_away_from(
    shared: &Shared,
    client: &mut ops::Leader,
    states: &[MemberState],
    from: u64,
) -> Result<ops::Leader, AppError> {
    let target = states
        .iter()
        .filter(|s| s.info.id != from && s.info.role == NodeRole::Voter && s.online)
        .min_by_key(|s| (s.weight, s.info.id))
        .ok_or(AppError::NoTransferTarget)?;
    ops::transfer(client, target.info.id).await?;
    // The new leader takes over within an election's time; look until someone else leads.
    let deadline = tokio::time::Instant::now() + shared.request_timeout * 2;
    loop {
        if let Ok(candidate) = shared.leader().await {
            if candidate.id != from {
                return Ok(candidate);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(AppError::NoLeader {
                addresses: shared.seed_addresses(),
                last_error: format!("leadership did not move from node {from} after TRANSFER"),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Keeps the members as seeds for leader discovery and persists them when they changed.
async fn remember_members(shared: &Shared, members: &[NodeInfo]) -> Result<(), AppError> {
    if members.is_empty() {
        return Ok(());
    }
    shared.set_seeds(members);
    let persisted = || {
        shared
            .persisted
            .lock()
            .expect("the persisted list lock is never poisoned: no panic holds it")
    };
    if persisted().as_deref() == Some(members) {
        return Ok(());
    }
    let data_dir = shared.data_dir.clone();
    let list = members.to_vec();
    super::blocking(move || {
        if store::load(&data_dir)? != list {
            store::save(&data_dir, &list)?;
        }
        Ok::<(), AppError>(())
    })
    .await??;
    *persisted() = Some(members.to_vec());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use NodeRole::{Spare, StandBy, Voter};

    fn state(id: u64, role: NodeRole, online: bool, failure_domain: u64) -> MemberState {
        MemberState {
            info: NodeInfo {
                id,
                address: format!("10.0.0.{id}:9001"),
                role,
            },
            online,
            failure_domain,
            weight: 0,
        }
    }

    #[test]
    fn a_voter_is_offline_after_consecutive_failed_probes_only() {
        fn check(
            memory: &mut HashMap<u64, ProbeMemory>,
            round: Vec<MemberState>,
            expected: &[(u64, bool, u64)],
        ) {
            let judged: Vec<(u64, bool, u64)> = debounce(round, memory)
                .iter()
                .map(|s| (s.info.id, s.online, s.failure_domain))
                .collect();
            assert_eq!(judged, expected);
        }
        let mut memory = HashMap::new();
        // Everyone answers: domains remembered.
        check(
            &mut memory,
            vec![
                state(1, Voter, true, 7),
                state(2, Voter, true, 8),
                state(3, StandBy, true, 9),
            ],
            &[(1, true, 7), (2, true, 8), (3, true, 9)],
        );
        // One failed probe: the voter still counts (with its domain); the stand-by does not.
        check(
            &mut memory,
            vec![
                state(1, Voter, true, 7),
                state(2, Voter, false, 0),
                state(3, StandBy, false, 0),
            ],
            &[(1, true, 7), (2, true, 8), (3, false, 0)],
        );
        // The second failure in a row: offline.
        check(
            &mut memory,
            vec![
                state(1, Voter, true, 7),
                state(2, Voter, false, 0),
                state(3, StandBy, false, 0),
            ],
            &[(1, true, 7), (2, false, 0), (3, false, 0)],
        );
        // An answer resets the count; a member that left is forgotten.
        check(
            &mut memory,
            vec![state(1, Voter, true, 7), state(2, Voter, true, 8)],
            &[(1, true, 7), (2, true, 8)],
        );
        assert!(!memory.contains_key(&3));
        check(
            &mut memory,
            vec![
                state(1, Voter, true, 7),
                state(2, Voter, false, 0),
                state(4, Spare, false, 0),
            ],
            &[(1, true, 7), (2, true, 8), (4, false, 0)],
        );
        // A voter never seen before that fails its first probe gets the benefit of the doubt.
        check(
            &mut memory,
            vec![state(5, Voter, false, 0)],
            &[(5, true, 0)],
        );
    }
}
