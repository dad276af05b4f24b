//! The Dqlite cluster as the CLI sees it: each dbaccessor's status socket (a unix socket
//! file, reachable from the root namespace), the convergence check made from those answers,
//! and SQL through the go-dqlite `dqlite` shell run inside the model's cloud namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use controller_contract::status::{client, Health, Member, NodeState, Request, Role, Verdict};
use serde::{Deserialize, Serialize};

use crate::world::expected_voters;

/// How long one status query may take (a busy daemon still answers within this).
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one `dqlite` shell run may take: the shell retries forever on its own.
pub const SHELL_TIMEOUT_SECS: u64 = 15;

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Status(#[from] client::ClientError),
    #[error("cannot run the dqlite shell: {0}")]
    ShellSpawn(std::io::Error),
    #[error("the dqlite shell failed ({status}): {stderr}")]
    Shell { status: String, stderr: String },
    #[error("no dqlite member is known: the cluster has not formed")]
    NoMembers,
}

/// The part of the dbaccessor's status answer (`contract::status::Status`) the simulator
/// reads. Its own type, so that fields the daemon adds or reshapes (the map it last read,
/// probes) never make the simulator's reads fail: unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The controller's agent id.
    pub agent_id: String,
    /// The Dqlite node id, once the node has one.
    #[serde(default)]
    pub node_id: Option<u64>,
    /// Where the daemon is in converging the local node.
    pub state: NodeState,
    /// Why it is in that state.
    #[serde(default)]
    pub reason: String,
    /// The members as Dqlite reports them.
    #[serde(default)]
    pub members: Vec<Member>,
    /// The leader's node id.
    #[serde(default)]
    pub leader_id: Option<u64>,
    /// The daemon's health verdict (voters connected and caught up).
    #[serde(default)]
    pub health: Option<Health>,
}

/// Asks the dbaccessor behind `socket` for its status.
pub fn query_status(socket: &Path) -> Result<Status, ClusterError> {
    Ok(client::ask(socket, &Request::Status, STATUS_TIMEOUT)?)
}

/// What the convergence check compares: the published map and each mapped agent's status.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    /// The leader unit's `db-bind-addresses` (agent id -> IP); empty when unpublished.
    pub map: BTreeMap<String, IpAddr>,
    /// Each agent id's status answer, or why there is none.
    pub statuses: BTreeMap<String, Result<Status, String>>,
}

/// Whether the cluster matches the map: every mapped agent is a member, they agree on one
/// leader, the leader's members are exactly the mapped addresses and the voter count is what
/// the role layer aims for. An empty map (every unit blocked, or none published) asks
/// nothing of the dbaccessors. Returns what is still missing otherwise.
pub fn converged(view: &ClusterView) -> Result<(), String> {
    if view.map.is_empty() {
        return Ok(());
    }
    let mut leaders = BTreeSet::new();
    for agent in view.map.keys() {
        match view.statuses.get(agent) {
            Some(Ok(status)) if status.state == NodeState::Member => {
                leaders.insert(status.leader_id);
            }
            Some(Ok(status)) => {
                return Err(format!(
                    "dbaccessor {agent} is {:?}: {}",
                    status.state, status.reason
                ))
            }
            Some(Err(error)) => return Err(format!("dbaccessor {agent}: {error}")),
            None => return Err(format!("dbaccessor {agent} is not running")),
        }
    }
    let leader = match leaders.into_iter().collect::<Vec<_>>().as_slice() {
        [Some(leader)] => *leader,
        [None] => return Err("no leader yet".into()),
        _ => return Err("the dbaccessors disagree on the leader".into()),
    };
    let leader_status = view
        .statuses
        .values()
        .filter_map(|s| s.as_ref().ok())
        .find(|s| s.node_id == Some(leader))
        .ok_or_else(|| format!("leader {leader} is not a mapped dbaccessor"))?;
    let members: BTreeSet<String> = leader_status
        .members
        .iter()
        .map(|m| m.address.clone())
        .collect();
    let wanted: BTreeSet<String> = view
        .map
        .values()
        .map(|ip| controller_contract::dqlite_address(*ip))
        .collect();
    if members != wanted {
        return Err(format!(
            "members {} instead of {}",
            members.into_iter().collect::<Vec<_>>().join(" "),
            wanted.into_iter().collect::<Vec<_>>().join(" ")
        ));
    }
    let voters = leader_status
        .members
        .iter()
        .filter(|m| m.role == Role::Voter)
        .count();
    let want_voters = expected_voters(wanted.len());
    if voters != want_voters {
        return Err(format!("{voters} voters of {want_voters}"));
    }
    // Settled means able to survive what the voter count promises: every voter connected
    // and caught up, as the leader's dbaccessor judges it.
    match &leader_status.health {
        Some(health) if health.verdict == Verdict::Healthy => Ok(()),
        Some(health) => Err(health.summary.clone()),
        None => Err("the leader's dbaccessor has no health verdict yet".into()),
    }
}

/// Runs the go-dqlite shell in the cloud namespace against `servers` (`ip:port`) on
/// database `database`, returning its standard output. With `certificate` (a chain file and
/// its key, of the controller CA), the shell speaks TLS (`--cert`, `--key`).
pub fn shell(
    net_namespace: &str,
    servers: &[String],
    certificate: Option<&(PathBuf, PathBuf)>,
    database: &str,
    command: &str,
    json: bool,
) -> Result<String, ClusterError> {
    if servers.is_empty() {
        return Err(ClusterError::NoMembers);
    }
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", net_namespace, "timeout"])
        .arg(SHELL_TIMEOUT_SECS.to_string())
        .args(["dqlite", "-s", &servers.join(",")]);
    if let Some((cert, key)) = certificate {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    if json {
        cmd.args(["-f", "json"]);
    }
    let output = cmd
        .arg(database)
        .arg(command)
        .output()
        .map_err(ClusterError::ShellSpawn)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(ClusterError::Shell {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member_status(
        agent: &str,
        id: u64,
        leader: Option<u64>,
        members: &[(u64, &str, Role)],
    ) -> Status {
        Status {
            agent_id: agent.into(),
            node_id: Some(id),
            state: NodeState::Member,
            reason: String::new(),
            members: members
                .iter()
                .map(|(id, address, role)| Member {
                    id: *id,
                    address: (*address).into(),
                    role: *role,
                })
                .collect(),
            leader_id: leader,
            health: Some(Health {
                verdict: Verdict::Healthy,
                summary: "healthy".into(),
                voters: 0,
                ready_voters: 0,
                needed: 0,
                survives: 0,
                members: vec![],
                missing: vec![],
            }),
        }
    }

    #[test]
    fn converged_table() {
        let check = |view: ClusterView, expected: Result<(), &str>| {
            assert_eq!(converged(&view), expected.map_err(str::to_owned));
        };
        let map = |entries: &[(&str, &str)]| -> BTreeMap<String, IpAddr> {
            entries
                .iter()
                .map(|(a, ip)| ((*a).to_owned(), ip.parse().expect("ip")))
                .collect()
        };
        let three = [
            (1, "10.0.0.10:17666", Role::Voter),
            (2, "10.0.0.11:17666", Role::Voter),
            (3, "10.0.0.12:17666", Role::Voter),
        ];
        let full = |members: &[(u64, &str, Role)]| ClusterView {
            map: map(&[("0", "10.0.0.10"), ("1", "10.0.0.11"), ("2", "10.0.0.12")]),
            statuses: [
                ("0".to_owned(), Ok(member_status("0", 1, Some(1), members))),
                ("1".to_owned(), Ok(member_status("1", 2, Some(1), members))),
                ("2".to_owned(), Ok(member_status("2", 3, Some(1), members))),
            ]
            .into(),
        };
        check(full(&three), Ok(()));
        check(
            ClusterView {
                map: BTreeMap::new(),
                statuses: BTreeMap::new(),
            },
            Ok(()),
        );
        let mut two_voters = three;
        two_voters[2].2 = Role::StandBy;
        check(full(&two_voters), Err("2 voters of 3"));
        check(
            full(&three[..2]),
            Err("members 10.0.0.10:17666 10.0.0.11:17666 instead of 10.0.0.10:17666 10.0.0.11:17666 10.0.0.12:17666"),
        );
        let mut missing = full(&three);
        missing.statuses.remove("2");
        check(missing, Err("dbaccessor 2 is not running"));
        let mut split = full(&three);
        split
            .statuses
            .insert("2".into(), Ok(member_status("2", 3, Some(3), &three)));
        check(split, Err("the dbaccessors disagree on the leader"));
        let mut joining = full(&three);
        if let Some(Ok(status)) = joining.statuses.get_mut("1") {
            status.state = NodeState::Joining;
            status.reason = "joining through 10.0.0.10".into();
        }
        check(
            joining,
            Err("dbaccessor 1 is Joining: joining through 10.0.0.10"),
        );
        // A voter still catching up after a partition: not settled, and the leader's
        // verdict says why.
        let mut catching_up = full(&three);
        if let Some(Ok(status)) = catching_up.statuses.get_mut("0") {
            let health = status.health.as_mut().expect("a verdict");
            health.verdict = Verdict::CatchingUp;
            health.summary = "catching up: voter 3 is 40 entries behind the leader".into();
        }
        check(
            catching_up,
            Err("catching up: voter 3 is 40 entries behind the leader"),
        );
        let mut no_verdict = full(&three);
        if let Some(Ok(status)) = no_verdict.statuses.get_mut("0") {
            status.health = None;
        }
        check(
            no_verdict,
            Err("the leader's dbaccessor has no health verdict yet"),
        );
    }
}
