//! The health verdict: how many voter failures the cluster survives now. Pure.
//!
//! A voter counts towards fault tolerance only when it is **connected** (its dbaccessor
//! reported its log position through the leader within [`STALE_AFTER`]) and **caught up**
//! (that position is within a window of the leader's own report). Right after a partition
//! heals, the returning voter holds a vote but not the entries written without it: were the
//! leader to fail then, the cluster could stall until it catches up, so the verdict says
//! `catching-up` and counts no spare failure for it. The reports come from
//! [`crate::progress`]; the verdict also names every controller that `controller.conf`
//! names but the Dqlite configuration lacks (`degraded`), so a lost member is never hidden
//! behind a healthy quorum.

use std::collections::BTreeMap;
use std::time::Duration;

use controller_contract::conf::BindAddresses;
use controller_contract::status::{
    Health, LogPosition, MemberProgress, MissingController, Role, Verdict,
};
use dqlite::{NodeInfo, NodeRole};

/// A member whose last report is older than this is not connected: reports are sent every
/// health interval (1 s), so three missed reports in a row.
pub const STALE_AFTER: Duration = Duration::from_millis(3_500);

/// Entries a caught-up voter may trail the leader's report by when the log is quiet: the
/// reports themselves and a few writes in flight.
pub const BASE_WINDOW: u64 = 8;

/// How many seconds of the leader's current write rate are added to the window, so that a
/// busy log (thousands of entries a second) does not read as "behind".
pub const RATE_WINDOW_SECS: f64 = 3.0;

/// One member's last report, as read from the database.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    /// The member's last log position when it reported.
    pub position: LogPosition,
    /// How old the report is, by the database's clock, when it was read.
    pub age: Duration,
    /// Entries per second the member's log grew between its last two reports.
    pub rate: f64,
}

/// What the verdict is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs<'a> {
    /// The configuration as the leader reported it (empty when unknown).
    pub members: &'a [NodeInfo],
    /// The leader's node id, when one is known.
    pub leader: Option<u64>,
    /// The members' reports by node id; `None` when they could not be read.
    pub reports: Option<&'a BTreeMap<u64, Report>>,
    /// The map this daemon last read (agent id -> IP), when it was usable.
    pub map: Option<&'a BindAddresses>,
    /// The Dqlite port, to match the map's IPs with the members' addresses.
    pub port: u16,
}

/// Assesses the cluster. Total: every input gives a verdict and a summary.
pub fn assess(inputs: &Inputs) -> Health {
    let voters: Vec<&NodeInfo> = inputs
        .members
        .iter()
        .filter(|m| m.role == NodeRole::Voter)
        .collect();
    let needed = voters.len() / 2 + 1;
    let missing = missing_controllers(inputs);
    let empty = BTreeMap::new();
    let reports = inputs.reports.unwrap_or(&empty);
    let leader_report = inputs.leader.and_then(|id| reports.get(&id));
    let members: Vec<MemberProgress> = inputs
        .members
        .iter()
        .map(|member| progress(member, inputs.leader, reports, leader_report))
        .collect();
    let voter_progress: Vec<&MemberProgress> =
        members.iter().filter(|m| m.role == Role::Voter).collect();
    let connected = voter_progress.iter().filter(|m| m.connected).count();
    let ready = voter_progress.iter().filter(|m| m.caught_up).count();
    let survives = ready.saturating_sub(needed);
    let health = |verdict: Verdict, summary: String| Health {
        verdict,
        summary,
        voters: voters.len(),
        ready_voters: ready,
        needed,
        survives,
        members: members.clone(),
        missing: missing.clone(),
    };

    if voters.is_empty() {
        return health(
            Verdict::Unknown,
            "unknown: no members known (the node is not running or not yet a member)".into(),
        );
    }
    let counts = format!(
        "{ready} of {} voters connected and caught up, {needed} needed",
        voters.len()
    );
    let Some(leader) = inputs.leader else {
        return health(
            Verdict::QuorumLost,
            format!(
                "quorum lost: no leader is visible ({counts}); an election may be under way; \
                 if voters are gone for good run recover-cluster on the most up-to-date member"
            ),
        );
    };
    if inputs.reports.is_none() || leader_report.is_none() {
        return health(
            Verdict::Unknown,
            format!(
                "unknown: leader node {leader} answers but the members' progress reports \
                 cannot be read yet; fault tolerance is not known"
            ),
        );
    }
    if connected < needed {
        return health(
            Verdict::QuorumLost,
            format!(
                "quorum at risk: only {connected} of {} voters reported recently, {needed} \
                 needed ({counts})",
                voters.len()
            ),
        );
    }
    let mut problems = Vec::new();
    for controller in &missing {
        problems.push(format!(
            "controller {} ({}) is named by controller.conf but is not in the Dqlite \
             configuration",
            controller.agent_id, controller.address
        ));
    }
    for voter in &voter_progress {
        if !voter.connected {
            problems.push(match voter.last_report_ms {
                Some(ms) => format!(
                    "voter {} has not reported for {:.1} s (not connected)",
                    voter.id,
                    ms as f64 / 1000.0
                ),
                None => format!("voter {} has not reported (not connected)", voter.id),
            });
        }
    }
    let lagging: Vec<String> = voter_progress
        .iter()
        .filter(|m| m.connected && !m.caught_up)
        .map(|m| match m.behind {
            Some(behind) => format!("voter {} is {behind} entries behind the leader", m.id),
            None => format!("voter {} has not caught up with the leader", m.id),
        })
        .collect();
    let survives_text = match survives {
        0 => "survives no further voter failure".to_owned(),
        1 => "survives 1 more voter failure".to_owned(),
        n => format!("survives {n} more voter failures"),
    };
    if !problems.is_empty() {
        problems.extend(lagging);
        return health(
            Verdict::Degraded,
            format!(
                "degraded: {}; {counts}; {survives_text}",
                problems.join("; ")
            ),
        );
    }
    if !lagging.is_empty() {
        return health(
            Verdict::CatchingUp,
            format!(
                "catching up: {}; {counts}; {survives_text} until it has caught up",
                lagging.join("; ")
            ),
        );
    }
    health(
        Verdict::Healthy,
        format!("healthy: {counts}; {survives_text}"),
    )
}

/// One member's progress against the leader's report.
fn progress(
    member: &NodeInfo,
    leader: Option<u64>,
    reports: &BTreeMap<u64, Report>,
    leader_report: Option<&Report>,
) -> MemberProgress {
    let report = reports.get(&member.id);
    let is_leader = leader == Some(member.id);
    // The leader answered the cluster request that listed these members: it is connected
    // and, holding every committed entry, caught up by definition.
    let connected = is_leader || report.is_some_and(|r| r.age <= STALE_AFTER);
    let behind = match (report, leader_report) {
        (Some(own), Some(lead)) => Some(lead.position.index.saturating_sub(own.position.index)),
        _ => None,
    };
    let caught_up = is_leader
        || (connected
            && match (behind, leader_report) {
                (Some(behind), Some(lead)) => behind <= window(lead.rate),
                _ => false,
            });
    MemberProgress {
        id: member.id,
        role: match member.role {
            NodeRole::Voter => Role::Voter,
            NodeRole::StandBy => Role::StandBy,
            NodeRole::Spare => Role::Spare,
        },
        connected,
        caught_up,
        log_position: report.map(|r| r.position),
        behind,
        last_report_ms: report.map(|r| u64::try_from(r.age.as_millis()).unwrap_or(u64::MAX)),
    }
}

/// How many entries a caught-up member may trail the leader by at `rate` entries a second.
pub fn window(rate: f64) -> u64 {
    let rate = if rate.is_finite() { rate.max(0.0) } else { 0.0 };
    // Saturating float-to-int conversion: an absurd rate only widens the window.
    BASE_WINDOW + (rate * RATE_WINDOW_SECS) as u64
}

/// The map's controllers whose address no member has.
fn missing_controllers(inputs: &Inputs) -> Vec<MissingController> {
    let Some(map) = inputs.map else {
        return vec![];
    };
    if inputs.members.is_empty() {
        return vec![];
    }
    map.iter()
        .filter_map(|(agent_id, ip)| {
            let address = controller_contract::ip_port(*ip, inputs.port);
            (!inputs.members.iter().any(|m| m.address == address)).then(|| MissingController {
                agent_id: agent_id.clone(),
                address,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voter(id: u64) -> NodeInfo {
        NodeInfo {
            id,
            address: format!("10.0.0.{id}:17666"),
            role: NodeRole::Voter,
        }
    }

    fn report(index: u64, age_ms: u64) -> Report {
        Report {
            position: LogPosition { term: 2, index },
            age: Duration::from_millis(age_ms),
            rate: 3.0,
        }
    }

    fn map(ids: &[u64]) -> BindAddresses {
        ids.iter()
            .map(|id| (id.to_string(), format!("10.0.0.{id}").parse().expect("ip")))
            .collect()
    }

    /// Checks the verdict, the survivable failures and a phrase of the summary.
    fn check(
        members: &[NodeInfo],
        leader: Option<u64>,
        reports: Option<&[(u64, Report)]>,
        mapped: &[u64],
        expected: (Verdict, usize, &str),
    ) {
        let reports: Option<BTreeMap<u64, Report>> = reports.map(|r| r.iter().copied().collect());
        let map = map(mapped);
        let health = assess(&Inputs {
            members,
            leader,
            reports: reports.as_ref(),
            map: Some(&map),
            port: 17666,
        });
        assert_eq!(
            (health.verdict, health.survives),
            (expected.0, expected.1),
            "{}",
            health.summary
        );
        assert!(
            health.summary.contains(expected.2),
            "{:?} lacks {:?}",
            health.summary,
            expected.2
        );
    }

    #[test]
    fn verdict_table() {
        let three = [voter(1), voter(2), voter(3)];
        let all_fresh = [
            (1, report(100, 200)),
            (2, report(99, 500)),
            (3, report(97, 900)),
        ];
        check(
            &three,
            Some(1),
            Some(&all_fresh),
            &[1, 2, 3],
            (
                Verdict::Healthy,
                1,
                "healthy: 3 of 3 voters connected and caught up, 2 needed; survives 1 more",
            ),
        );
        // A follower back from a partition: connected, far behind: no spare failure.
        check(
            &three,
            Some(1),
            Some(&[
                (1, report(500, 200)),
                (2, report(499, 300)),
                (3, report(120, 100)),
            ]),
            &[1, 2, 3],
            (
                Verdict::CatchingUp,
                0,
                "voter 3 is 380 entries behind the leader",
            ),
        );
        // A follower that stopped reporting: not connected.
        check(
            &three,
            Some(1),
            Some(&[
                (1, report(500, 200)),
                (2, report(499, 300)),
                (3, report(480, 12_000)),
            ]),
            &[1, 2, 3],
            (Verdict::Degraded, 0, "voter 3 has not reported for 12.0 s"),
        );
        // A follower that never reported.
        check(
            &three,
            Some(1),
            Some(&[(1, report(500, 200)), (2, report(499, 300))]),
            &[1, 2, 3],
            (
                Verdict::Degraded,
                0,
                "voter 3 has not reported (not connected)",
            ),
        );
        // The map names a controller the configuration lacks: degraded, named.
        check(
            &three,
            Some(1),
            Some(&all_fresh),
            &[1, 2, 3, 4],
            (
                Verdict::Degraded,
                1,
                "controller 4 (10.0.0.4:17666) is named by controller.conf but is not in the Dqlite configuration",
            ),
        );
        // No leader.
        check(
            &three,
            None,
            Some(&all_fresh),
            &[1, 2, 3],
            (Verdict::QuorumLost, 0, "no leader is visible"),
        );
        // Only the leader reports: the quorum is at risk.
        check(
            &three,
            Some(1),
            Some(&[(1, report(500, 200))]),
            &[1, 2, 3],
            (
                Verdict::QuorumLost,
                0,
                "only 1 of 3 voters reported recently",
            ),
        );
        // Reports unreadable, or the leader's own missing: unknown, never healthy.
        check(
            &three,
            Some(1),
            None,
            &[1, 2, 3],
            (Verdict::Unknown, 0, "cannot be read yet"),
        );
        check(
            &three,
            Some(1),
            Some(&[(2, report(99, 500)), (3, report(97, 900))]),
            &[1, 2, 3],
            (Verdict::Unknown, 0, "fault tolerance is not known"),
        );
        check(
            &[],
            None,
            None,
            &[1],
            (Verdict::Unknown, 0, "no members known"),
        );
        // A single voter is healthy but survives nothing.
        check(
            &[voter(1)],
            Some(1),
            Some(&[(1, report(5, 100))]),
            &[1],
            (Verdict::Healthy, 0, "survives no further voter failure"),
        );
        // Stand-bys and spares do not count.
        let mut with_spare = three.to_vec();
        with_spare.push(NodeInfo {
            id: 4,
            address: "10.0.0.4:17666".into(),
            role: NodeRole::Spare,
        });
        check(
            &with_spare,
            Some(1),
            Some(&all_fresh),
            &[1, 2, 3, 4],
            (Verdict::Healthy, 1, "3 of 3 voters"),
        );
        // Five voters, one behind, one gone.
        let five: Vec<NodeInfo> = (1..=5).map(voter).collect();
        check(
            &five,
            Some(2),
            Some(&[
                (1, report(1000, 100)),
                (2, report(1000, 100)),
                (3, report(999, 100)),
                (4, report(10, 100)),
                (5, report(990, 60_000)),
            ]),
            &[1, 2, 3, 4, 5],
            (Verdict::Degraded, 0, "voter 5 has not reported for 60.0 s (not connected); voter 4 is 990 entries behind"),
        );
    }

    #[test]
    fn the_window_grows_with_the_write_rate() {
        assert_eq!(window(0.0), BASE_WINDOW);
        assert_eq!(window(f64::NAN), BASE_WINDOW);
        assert_eq!(window(-5.0), BASE_WINDOW);
        assert_eq!(window(1000.0), BASE_WINDOW + 3000);
        // A busy leader: 2000 entries behind at 1000 entries/s is caught up.
        let three = [voter(1), voter(2), voter(3)];
        let busy = |index, age_ms| Report {
            position: LogPosition { term: 2, index },
            age: Duration::from_millis(age_ms),
            rate: 1000.0,
        };
        check(
            &three,
            Some(1),
            Some(&[
                (1, busy(50_000, 100)),
                (2, busy(48_000, 100)),
                (3, busy(49_900, 100)),
            ]),
            &[1, 2, 3],
            (Verdict::Healthy, 1, "healthy"),
        );
    }
}
