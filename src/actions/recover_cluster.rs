//! `recover-cluster`: the operator's way out after losing quorum for good (never run by a
//! hook): the most up-to-date surviving node is found from the published log positions,
//! and with `confirm=true` the cluster is rebuilt around it.

use std::collections::BTreeMap;
use std::time::Duration;

use controller_contract::paths;
use controller_contract::status::{LogPosition, Probe, Recovered, Request, Role};

use super::cluster_status::health_line;
use super::{flag, Outcome, Results};
use crate::event::HookEnv;
use crate::hook::{self, HookError};
use crate::memo::Memo;
use crate::plan::LOG_POSITION_KEY;
use crate::status_socket::{self, ask};
use crate::tools::HookTools;

/// How long a recovery may take: stop, rewrite, restart and the first convergence round.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(90);

pub(super) fn run(tools: &HookTools, env: &HookEnv) -> Result<Outcome, HookError> {
    let params = tools.action_get()?;
    let (confirm, force) = match (flag(&params, "confirm"), flag(&params, "force")) {
        (Ok(confirm), Ok(force)) => (confirm, force),
        (Err(error), _) | (_, Err(error)) => return Ok((Results::new(), Some(error))),
    };
    let world = hook::observe(tools, env, None, &Memo::new())?;
    let Some(paths) = &world.paths else {
        return Ok((
            Results::new(),
            Some("invalid config: cannot find the dbaccessor".into()),
        ));
    };
    let socket = paths::status_socket(&paths.data_dir);
    let probe = match status_socket::probe(&paths.data_dir) {
        Ok(probe) => probe,
        Err(error) => {
            return Ok((
                Results::new(),
                Some(format!("the dbaccessor does not answer: {error}")),
            ))
        }
    };
    let peers: BTreeMap<String, Option<String>> = world
        .observed
        .relation
        .as_ref()
        .map(|relation| {
            relation
                .peers
                .iter()
                .map(|(unit, bag)| (unit.clone(), bag.get(LOG_POSITION_KEY).cloned()))
                .collect()
        })
        .unwrap_or_default();
    let plan = plan_recovery(&world.observed.unit, &probe, &peers, confirm, force);
    if let Some(refusal) = plan.refusal {
        return Ok((plan.results, Some(refusal)));
    }
    let mut results = plan.results;
    let request = Request::Recover {
        force,
        best_peer: plan.best_peer,
    };
    match ask::<Recovered>(&socket, &request, RECOVER_TIMEOUT) {
        Ok(recovered) => {
            results.extend(describe_recovered(&recovered));
            Ok((results, None))
        }
        Err(error) => Ok((
            results,
            Some(format!("the dbaccessor did not recover: {error}")),
        )),
    }
}

/// What `recover-cluster` decided before asking the dbaccessor.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryPlan {
    /// The positions compared and the verdicts, already as results.
    pub results: Results,
    /// Why the action refuses, if it does.
    pub refusal: Option<String>,
    /// The greatest position another member published (the dbaccessor checks it again
    /// against its own log read with the node stopped).
    pub best_peer: Option<LogPosition>,
}

/// Compares this member's log with every peer's published one and decides whether to go
/// on. Pure. A peer that published nothing (its machine is gone) is listed as unknown: its
/// log cannot be compared, which is why the operator must confirm.
pub fn plan_recovery(
    unit: &str,
    probe: &Probe,
    peers: &BTreeMap<String, Option<String>>,
    confirm: bool,
    force: bool,
) -> RecoveryPlan {
    let mut results = Results::new();
    let key = |unit: &str| format!("log-positions.{}", unit.replace('/', "-"));
    let own = probe.log_position;
    results.insert(
        key(unit),
        match (own, &probe.log_position_error) {
            (Some(position), _) => format!("{position} (this unit)"),
            (None, error) => format!(
                "unknown (this unit): {}",
                error.as_deref().unwrap_or("not reported")
            ),
        },
    );
    let mut best: Option<(LogPosition, &str)> = own.map(|p| (p, unit));
    let mut best_peer: Option<LogPosition> = None;
    for (peer, published) in peers {
        let parsed = published.as_deref().map(str::parse::<LogPosition>);
        let text = match &parsed {
            Some(Ok(position)) => position.to_string(),
            Some(Err(error)) => format!("unknown: {error}"),
            None => "unknown: not published (machine gone or its hooks not run)".into(),
        };
        results.insert(key(peer), text);
        if let Some(Ok(position)) = parsed {
            best_peer = best_peer.max(Some(position));
            if best.is_none_or(|(b, _)| position > b) {
                best = Some((position, peer));
            }
        }
    }
    let most = match best {
        Some((position, _)) if Some(position) == own => format!("{unit} ({position})"),
        Some((position, holder)) => format!("{holder} ({position})"),
        None => "unknown".into(),
    };
    results.insert("most-up-to-date".into(), most);

    let status = &probe.status;
    let voters: Vec<u64> = status
        .members
        .iter()
        .filter(|m| m.role == Role::Voter)
        .map(|m| m.id)
        .collect();
    let online = probe
        .reachable
        .iter()
        .filter(|r| r.reachable && voters.contains(&r.id))
        .count();
    let quorum = status.leader_id.is_some() && online > voters.len() / 2;
    results.insert("health".into(), health_line(probe));

    let refusal = if !confirm {
        Some(
            "recover-cluster rewrites the Dqlite cluster to this controller alone and drops \
             every other member; run it only when the others are gone for good, with \
             confirm=true"
                .to_owned(),
        )
    } else if quorum && !force {
        Some(format!(
            "the cluster has a quorum ({online} of {} voters online, leader {}): recovery is \
             for a quorum lost for good; pass force=true to recover anyway",
            voters.len(),
            status
                .leader_id
                .map_or_else(String::new, |id| id.to_string())
        ))
    } else if own.is_none() && !force {
        Some(format!(
            "this unit's log position is unknown ({}): cannot tell whether it is the most \
             up-to-date member; pass force=true to recover anyway",
            probe
                .log_position_error
                .as_deref()
                .unwrap_or("not reported")
        ))
    } else {
        match (own, best) {
            (Some(own), Some((position, holder))) if position > own && !force => Some(format!(
                "this unit's log ({own}) is behind {holder}'s ({position}): run recover-cluster \
                 on {holder}, or pass force=true to lose the entries after {own}"
            )),
            _ => None,
        }
    };
    RecoveryPlan {
        results,
        refusal,
        best_peer,
    }
}

/// The action results for a finished recovery.
pub fn describe_recovered(recovered: &Recovered) -> Results {
    let mut results = Results::new();
    results.insert("recovered.node-id".into(), recovered.node_id.to_string());
    results.insert("recovered.address".into(), recovered.address.clone());
    results.insert(
        "recovered.log-position".into(),
        recovered.log_position.to_string(),
    );
    let before: Vec<String> = recovered
        .members_before
        .iter()
        .map(|m| format!("{} {} {}", m.id, m.address, m.role.as_str()))
        .collect();
    results.insert("recovered.members-before".into(), before.join(", "));
    for (n, step) in recovered.steps.iter().enumerate() {
        results.insert(format!("recovered.steps.{n}"), step.clone());
    }
    results.insert(
        "recovered.state".into(),
        recovered.status.state.as_str().into(),
    );
    results.insert("recovered.reason".into(), recovered.status.reason.clone());
    results.insert(
        "next".into(),
        "remove the lost controllers (juju remove-machine), or wipe the dqlite dir of any \
         that comes back before its dbaccessor starts, so that it joins this cluster anew"
            .into(),
    );
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use controller_contract::status::{Member, NodeState, Reachability, Status};

    fn probe(own: Option<(u64, u64)>, leader: Option<u64>, reachable: &[bool]) -> Probe {
        let members: Vec<Member> = (1..=3)
            .map(|id| Member {
                id,
                address: format!("10.0.0.{id}:17666"),
                role: Role::Voter,
            })
            .collect();
        Probe {
            reachable: members
                .iter()
                .zip(reachable)
                .map(|(m, r)| Reachability {
                    id: m.id,
                    address: m.address.clone(),
                    reachable: *r,
                })
                .collect(),
            status: Status {
                agent_id: "0".into(),
                node_id: Some(1),
                bind_address: Some("10.0.0.1:17666".into()),
                state: NodeState::Member,
                reason: String::new(),
                members,
                leader_id: leader,
                config: None,
                health: None,
                decisions: Vec::new(),
            },
            log_position: own.map(|(term, index)| LogPosition { term, index }),
            log_position_error: None,
        }
    }

    #[test]
    fn plan_recovery_table() {
        let lost = [true, false, false];
        let check = |probe: Probe,
                     peers: &[(&str, Option<&str>)],
                     confirm: bool,
                     force: bool,
                     expected: Option<&str>| {
            let peers: BTreeMap<String, Option<String>> = peers
                .iter()
                .map(|(u, p)| ((*u).to_owned(), p.map(str::to_owned)))
                .collect();
            let plan = plan_recovery("controller/0", &probe, &peers, confirm, force);
            match (&plan.refusal, expected) {
                (None, None) => {}
                (Some(refusal), Some(start)) => {
                    assert!(refusal.starts_with(start), "{refusal:?} vs {start:?}")
                }
                (got, want) => panic!("refusal {got:?}, expected {want:?}"),
            }
        };
        let peers = [("controller/1", Some("1/9")), ("controller/2", None)];
        check(
            probe(Some((1, 12)), None, &lost),
            &peers,
            false,
            false,
            Some("recover-cluster rewrites"),
        );
        check(probe(Some((1, 12)), None, &lost), &peers, true, false, None);
        check(
            probe(Some((1, 5)), None, &lost),
            &peers,
            true,
            false,
            Some("this unit's log (1/5) is behind controller/1's (1/9)"),
        );
        check(probe(Some((1, 5)), None, &lost), &peers, true, true, None);
        // A later term wins over a longer log.
        check(probe(Some((2, 3)), None, &lost), &peers, true, false, None);
        check(
            probe(Some((1, 12)), Some(1), &[true, true, false]),
            &peers,
            true,
            false,
            Some("the cluster has a quorum"),
        );
        check(
            probe(None, None, &lost),
            &peers,
            true,
            false,
            Some("this unit's log position is unknown"),
        );
        check(
            probe(Some((1, 12)), None, &lost),
            &[("controller/1", Some("garbage"))],
            true,
            false,
            None,
        );

        let plan = plan_recovery(
            "controller/0",
            &probe(Some((1, 5)), None, &lost),
            &[
                ("controller/1".to_owned(), Some("1/9".to_owned())),
                ("controller/2".to_owned(), None),
            ]
            .into(),
            true,
            false,
        );
        assert_eq!(plan.best_peer, Some(LogPosition { term: 1, index: 9 }));
        assert_eq!(
            plan.results["log-positions.controller-0"],
            "1/5 (this unit)"
        );
        assert_eq!(plan.results["log-positions.controller-1"], "1/9");
        assert_eq!(
            plan.results["log-positions.controller-2"],
            "unknown: not published (machine gone or its hooks not run)"
        );
        assert_eq!(plan.results["most-up-to-date"], "controller/1 (1/9)");
    }
}
