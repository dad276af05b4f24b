//! Departed members: after a map change (the departure watch) and on the health tick, the
//! leader removes members that the map no longer names and that do not answer, on positive
//! knowledge only ("unknown is not gone": several voters missing at once are kept).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dqlite::{NodeInfo, NodeRole};
use tokio::time::Instant;

use crate::decide::MapRead;

use super::*;

impl<D: Driver> Service<D> {
    /// One check of the departure watch: the cluster as it now is and, on the leader, the
    /// removal of departed members. The watch ends when its time is up, or when the leader
    /// finds no member absent (or only absent voters it keeps).
    pub(super) async fn check_departures(&mut self) {
        let Some((until, _)) = self.departure_watch else {
            return;
        };
        let now = Instant::now();
        if now >= until || self.driver.running_address().is_none() {
            self.departure_watch = None;
            return;
        }
        self.refresh_cluster().await;
        let leads = self.status.leader_id.is_some() && self.status.leader_id == self.status.node_id;
        if leads && !self.remove_departed().await {
            self.departure_watch = None;
            return;
        }
        self.departure_watch = Some((
            until,
            next_departure_check(&self.absence.silent_since, self.last_probe, Instant::now()),
        ));
    }

    /// On the leader: removes members absent from a usable map that handed over (stopping
    /// spares) at once, and those unreachable for a whole quorum timeout (spares and
    /// stand-bys: see [`SPARE_GRACE`]). Returns
    /// whether a member the map lacks is still in the configuration (not one of the
    /// absent voters it keeps).
    pub(super) async fn remove_departed(&mut self) -> bool {
        let (MapRead::Map(map), _) = read_map(&self.config.controller_conf) else {
            self.absence = AbsenceMemory::default();
            return false;
        };
        if !map.contains_key(&self.config.agent_id) {
            self.absence = AbsenceMemory::default();
            return false;
        }
        let wanted: Vec<String> = map
            .values()
            .map(|ip| self.config.dqlite_address(*ip))
            .collect();
        // Absence counts from when the probe was sent: a probe of a black-holed address takes
        // its whole bound, which is time the member was already silent.
        let now = Instant::now();
        self.last_probe = Some(now);
        let absent = self.driver.departed(&wanted).await;
        let due = due_for_removal(&mut self.absence, &absent, now, self.timings.quorum_timeout);
        let members: Vec<NodeInfo> = self.status.members.iter().map(from_member).collect();
        let own = self.status.node_id.unwrap_or_default();
        let (due, kept) = removable(&members, own, &wanted, due);
        let kept_ids: BTreeSet<u64> = kept.iter().map(|m| m.id).collect();
        for member in kept.iter().filter(|m| !self.kept_absent.contains(&m.id)) {
            log::warn!(
                "keeping voter {} at {}: it is absent from the map and unreachable, but the map \
                 drops several voters at once, which a departure never does (departing \
                 controllers hand their vote over first); unknown is not gone",
                member.id,
                member.address
            );
        }
        self.kept_absent = kept_ids;
        let removing = !due.is_empty();
        let handed_over = &self.absence.seen_stopping;
        let mapped = &self.absence.mapped;
        for member in due {
            let waited = self
                .absence
                .silent_since
                .get(&member.id)
                .map_or(0, |since| now.duration_since(*since).as_millis());
            match self.driver.remove(member.id).await {
                Ok(()) => log::info!(
                    "removed departed member {} at {} ({}): absent from the map and {}",
                    member.id,
                    member.address,
                    member.role,
                    if handed_over.contains(&member.id) {
                        "handed over (it said it was stopping)".to_owned()
                    } else if member.role != NodeRole::Voter && mapped.contains(&member.id) {
                        "handed over (the map named it before, it holds no vote and it \
                         does not answer)"
                            .to_owned()
                    } else {
                        format!("unreachable (for {waited} ms)")
                    }
                ),
                Err(e) => log::warn!(
                    "cannot remove departed member {} at {}: {}",
                    member.id,
                    member.address,
                    dqlite::error_chain(&e)
                ),
            }
        }
        if removing {
            // The status shows the configuration as it now is, not a second later.
            self.refresh_cluster().await;
        }
        // Still waited for: any member the map lacks, answering or not (a departing
        // controller answers until it has handed over and stopped), except kept voters.
        members.iter().any(|m| {
            m.id != own && !wanted.contains(&m.address) && !self.kept_absent.contains(&m.id)
        })
    }
}

/// Splits the members due for removal into those that may go and the voters that stay.
/// A voter is removed for its absence only when it is the one voter the map dropped: a
/// map that drops several voters at once is more likely wrong than several controllers
/// gone at once without handing over (a departing controller's dbaccessor hands its vote
/// over and leaves as a spare). Stand-bys and spares hold no vote and may always go.
pub(crate) fn removable(
    members: &[NodeInfo],
    own_id: u64,
    wanted: &[String],
    due: Vec<NodeInfo>,
) -> (Vec<NodeInfo>, Vec<NodeInfo>) {
    let absent_voters = members
        .iter()
        .filter(|m| m.id != own_id && m.role == NodeRole::Voter && !wanted.contains(&m.address))
        .count();
    if absent_voters <= 1 {
        return (due, vec![]);
    }
    due.into_iter().partition(|m| m.role != NodeRole::Voter)
}

/// Spares and stand-bys absent from the map go once they failed two checks at least this far
/// apart: a departing controller hands its vote over and leaves as a spare (or stays a
/// stand-by when no spare can take that role), neither of which holds a vote, so it needs
/// no quorum-timeout grace; but one silent probe (a joiner the leader's map does not name
/// yet, on a loaded machine) is not enough to call it gone.
pub(crate) const SPARE_GRACE: Duration = Duration::from_millis(300);

/// How often the membership is checked for a while after a map change (see
/// `Service::check_departures`): often enough that a departed controller leaves the
/// configuration within a few hundred milliseconds of its hand-over.
pub(crate) const DEPARTURE_CHECK_EVERY: Duration = Duration::from_millis(150);

/// When the departure watch checks next: [`DEPARTURE_CHECK_EVERY`] after the last check,
/// or sooner when the probe sent at `probed_at` found a member silent for the first time:
/// its second probe goes as soon as [`SPARE_GRACE`] has passed since the first was sent,
/// not a check period after the first one's answer (a black-holed probe takes its whole
/// bound).
pub(crate) fn next_departure_check(
    absent_since: &BTreeMap<u64, Instant>,
    probed_at: Option<Instant>,
    now: Instant,
) -> Instant {
    let regular = now + DEPARTURE_CHECK_EVERY;
    absent_since
        .values()
        .filter(|since| Some(**since) == probed_at)
        .map(|since| (*since + SPARE_GRACE).max(now))
        .filter(|at| *at < regular)
        .min()
        .unwrap_or(regular)
}

/// A member the map lacks that a probe found going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Absent {
    pub(crate) member: NodeInfo,
    /// It answered as stopping (draining weight): a departing controller's dbaccessor, which
    /// hands its role over and then stops. `false`: it did not answer.
    pub(crate) stopping: bool,
}

/// Which absent members may be removed now, tracking since when each has been silent and
/// which were seen stopping. The map dropped every one of them; on top of that:
/// - a spare or stand-by that says it is stopping, or that was seen stopping and is now
///   silent, has departed and handed over (positive knowledge): it goes at once;
/// - so does a silent spare or stand-by that the map named before ([`AbsenceMemory::mapped`]):
///   a controller that the map dropped and that no longer holds a vote has handed over,
///   even when it stopped before this node could see it stopping;
/// - a voter that says it is stopping is still handing over: it stays;
/// - a silent voter goes after `grace`, a silent spare or stand-by never seen stopping nor
///   mapped (a joiner the map does not name yet, as far as this node knows) after
///   [`SPARE_GRACE`] (one that was only cut off and is removed finds itself outside the
///   configuration and rejoins).
///
/// Members no longer absent are forgotten.
pub(crate) fn due_for_removal(
    memory: &mut AbsenceMemory,
    absent: &[Absent],
    now: Instant,
    grace: Duration,
) -> Vec<NodeInfo> {
    memory
        .silent_since
        .retain(|id, _| absent.iter().any(|a| a.member.id == *id && !a.stopping));
    memory
        .seen_stopping
        .retain(|id| absent.iter().any(|a| a.member.id == *id));
    absent
        .iter()
        .filter(|absent| {
            let member = &absent.member;
            let holds_vote = member.role == NodeRole::Voter;
            if absent.stopping {
                memory.seen_stopping.insert(member.id);
                return !holds_vote;
            }
            let since = *memory.silent_since.entry(member.id).or_insert(now);
            let waited = now.duration_since(since);
            let handed_over =
                memory.seen_stopping.contains(&member.id) || memory.mapped.contains(&member.id);
            (!holds_vote && handed_over)
                || waited >= grace
                || (!holds_vote && waited >= SPARE_GRACE)
        })
        .map(|absent| absent.member.clone())
        .collect()
}

/// What the leader remembers of absent members between departure checks.
#[derive(Debug, Default)]
pub(crate) struct AbsenceMemory {
    /// Since when each silent member has been silent (from when the probe was sent).
    pub(crate) silent_since: BTreeMap<u64, Instant>,
    /// Members that answered as stopping.
    pub(crate) seen_stopping: BTreeSet<u64>,
    /// Members this node saw in the configuration while the map named their address:
    /// controllers it knew, unlike a joiner that the map does not name yet. Once the map
    /// drops one (the charm's positive knowledge of its departure), it holds no vote (it
    /// handed its vote over) and it does not answer, it has gone: no second probe is
    /// needed to tell it from a joiner. Kept up to date on every refresh of the cluster,
    /// on every node, so that a node that has just become leader knows them too.
    pub(crate) mapped: BTreeSet<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_policy_table() {
        let node = |id: u64, role: NodeRole| NodeInfo {
            id,
            address: format!("127.21.0.{id}:17666"),
            role,
        };
        let check =
            |members: &[NodeInfo], wanted: &[u64], due: &[u64], expected: (&[u64], &[u64])| {
                let wanted: Vec<String> = wanted
                    .iter()
                    .map(|id| format!("127.21.0.{id}:17666"))
                    .collect();
                let due: Vec<NodeInfo> = members
                    .iter()
                    .filter(|m| due.contains(&m.id))
                    .cloned()
                    .collect();
                let (go, stay) = removable(members, 1, &wanted, due);
                let ids = |v: Vec<NodeInfo>| v.iter().map(|m| m.id).collect::<Vec<_>>();
                assert_eq!(
                    (ids(go), ids(stay)),
                    (expected.0.to_vec(), expected.1.to_vec()),
                    "{members:?} wanted {wanted:?}"
                );
            };
        use NodeRole::{Spare, StandBy, Voter};
        let three = [node(1, Voter), node(2, Voter), node(3, Voter)];
        // One voter dropped by the map: it may go.
        check(&three, &[1, 2], &[3], (&[3], &[]));
        // Two voters dropped at once: both stay, even when both are due.
        check(&three, &[1], &[2, 3], (&[], &[2, 3]));
        check(&three, &[1], &[3], (&[], &[3]));
        // Spares and stand-bys always may go; voters stay while several are dropped.
        let mixed = [
            node(1, Voter),
            node(2, Voter),
            node(3, Voter),
            node(4, Spare),
            node(5, StandBy),
        ];
        check(&mixed, &[1], &[2, 4, 5], (&[4, 5], &[2]));
        check(&mixed, &[1, 2, 3], &[4, 5], (&[4, 5], &[]));
        // A departed controller that handed over (a spare) plus one voter dropped: the voter may go.
        check(&mixed, &[1, 2, 4, 5], &[3], (&[3], &[]));
    }

    #[test]
    fn removal_waits_out_the_grace_period() {
        let grace = Duration::from_secs(2);
        let t0 = Instant::now();
        let node = |id: u64| NodeInfo {
            id,
            address: format!("127.21.0.{id}:17666"),
            role: NodeRole::Voter,
        };
        let mut since = AbsenceMemory::default();
        let check = |since: &mut AbsenceMemory, absent: &[u64], at_ms: u64, due: &[u64]| {
            let absent: Vec<Absent> = absent.iter().map(|id| silent(node(*id))).collect();
            let got: Vec<u64> =
                due_for_removal(since, &absent, t0 + Duration::from_millis(at_ms), grace)
                    .iter()
                    .map(|m| m.id)
                    .collect();
            assert_eq!(got, due, "absent {absent:?} at {at_ms} ms");
        };
        check(&mut since, &[2, 3], 0, &[]);
        check(&mut since, &[2, 3], 1_000, &[]);
        // 3 came back: its clock restarts when it goes again.
        check(&mut since, &[2], 1_500, &[]);
        check(&mut since, &[2, 3], 2_000, &[2]);
        check(&mut since, &[2, 3], 3_900, &[2]);
        check(&mut since, &[2, 3], 4_000, &[2, 3]);
        check(&mut since, &[], 5_000, &[]);
        assert!(since.silent_since.is_empty());
        // A spare (a departed controller that handed its vote over) or a stand-by (one that
        // had no spare to hand its role to) is due at its second failed check, not at the
        // first silence; a voter waits out the quorum timeout.
        let spare = NodeInfo {
            role: NodeRole::Spare,
            ..node(4)
        };
        let stand_by = NodeInfo {
            role: NodeRole::StandBy,
            ..node(5)
        };
        let mut due_at = |ms: u64| {
            due_for_removal(
                &mut since,
                &[
                    silent(spare.clone()),
                    silent(stand_by.clone()),
                    silent(node(2)),
                ],
                t0 + Duration::from_millis(ms),
                grace,
            )
            .iter()
            .map(|m| m.id)
            .collect::<Vec<_>>()
        };
        assert_eq!(due_at(6_000), Vec::<u64>::new());
        assert_eq!(due_at(6_000 + 150), Vec::<u64>::new());
        let at = 6_000 + SPARE_GRACE.as_millis() as u64;
        assert_eq!(due_at(at - 1), Vec::<u64>::new());
        assert_eq!(due_at(at), [4, 5]);
    }

    #[test]
    fn a_departed_member_that_handed_over_goes_at_once() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(2);
        let member = |id: u64, role: NodeRole| NodeInfo {
            id,
            address: format!("127.21.0.{id}:17666"),
            role,
        };
        let stopping = |member: NodeInfo| Absent {
            member,
            stopping: true,
        };
        let due_at = |memory: &mut AbsenceMemory, ms: u64, absent: &[Absent]| -> Vec<u64> {
            due_for_removal(memory, absent, t0 + Duration::from_millis(ms), grace)
                .iter()
                .map(|m| m.id)
                .collect()
        };
        let mut memory = AbsenceMemory::default();
        // A voter that says it is stopping is still handing over: it stays, and its
        // answer starts no silence clock.
        assert_eq!(
            due_at(&mut memory, 0, &[stopping(member(2, NodeRole::Voter))]),
            [0u64; 0]
        );
        // Once a spare (handed over) it goes at the first check, beside a silent voter
        // that still waits out the grace.
        assert_eq!(
            due_at(
                &mut memory,
                100,
                &[
                    stopping(member(2, NodeRole::Spare)),
                    silent(member(3, NodeRole::Voter))
                ]
            ),
            [2]
        );
        // Seen stopping, then silent (it stopped before the next check): at once too.
        let mut memory = AbsenceMemory::default();
        assert_eq!(
            due_at(&mut memory, 0, &[stopping(member(4, NodeRole::Voter))]),
            [0u64; 0]
        );
        assert_eq!(
            due_at(&mut memory, 150, &[silent(member(4, NodeRole::Spare))]),
            [4]
        );
        // A silent spare never seen stopping waits for its second failed check.
        assert_eq!(
            due_at(&mut memory, 300, &[silent(member(5, NodeRole::Spare))]),
            [0u64; 0]
        );
        // A silent spare that the map named before (a controller that handed over and
        // stopped before any check saw it stopping) goes at its first silence; a voter
        // the map named before still waits out the grace.
        let mut known = AbsenceMemory::default();
        known.mapped.extend([7, 8]);
        let due = due_at(
            &mut known,
            0,
            &[
                silent(member(7, NodeRole::Spare)),
                silent(member(8, NodeRole::Voter)),
                silent(member(9, NodeRole::StandBy)),
            ],
        );
        assert_eq!(due, [7]);
        // A member that answers normally again is forgotten: seen stopping no longer counts.
        assert_eq!(
            due_at(&mut memory, 400, &[stopping(member(6, NodeRole::Voter))]),
            [0u64; 0]
        );
        assert_eq!(due_at(&mut memory, 500, &[]), [0u64; 0]);
        assert_eq!(
            due_at(&mut memory, 600, &[silent(member(6, NodeRole::Spare))]),
            [0u64; 0]
        );
    }

    fn silent(member: NodeInfo) -> Absent {
        Absent {
            member,
            stopping: false,
        }
    }

    #[test]
    fn next_departure_check_table() {
        let t0 = Instant::now();
        let ms = |n: u64| Duration::from_millis(n);
        let grace = SPARE_GRACE.as_millis() as u64;
        let every = DEPARTURE_CHECK_EVERY.as_millis() as u64;
        // (absent since, in ms from t0; the last probe sent; now; the next check), in ms
        // from t0
        let cases: [(&[u64], u64, u64, u64); 6] = [
            // Nothing silent: the regular period.
            (&[], 0, 0, every),
            // Found silent by a probe sent at 0 that took 300 ms (black-holed): its second
            // probe goes at once, the grace having passed while the first was waited for.
            (&[0], 0, grace, grace),
            // Found silent by a quick (refused) probe: the regular period while the grace
            // ends later, then the grace's end when it comes first.
            (&[0], 0, 10, 10 + every),
            (&[0], 0, grace - every / 2, grace),
            // Silent since before the last probe (a voter waiting out the quorum timeout,
            // already probed twice): the regular period, never a busy loop.
            (&[0], 4_700, 5_000, 5_000 + every),
            (&[0, 4_700], 4_700, 4_710, 4_710 + every),
        ];
        for (since, probed_at, now, next) in cases {
            let absent_since: BTreeMap<u64, Instant> = since
                .iter()
                .enumerate()
                .map(|(id, at)| (id as u64, t0 + ms(*at)))
                .collect();
            assert_eq!(
                next_departure_check(&absent_since, Some(t0 + ms(probed_at)), t0 + ms(now)),
                t0 + ms(next),
                "since {since:?}, now {now}"
            );
        }
    }
}
