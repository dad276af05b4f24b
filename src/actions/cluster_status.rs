//! `cluster-status`: this unit's address, controller.conf, the dbaccessor's state, the
//! Dqlite members with their reachability, a health verdict, and the leases from the
//! agent's lease-status file.

use std::path::Path;

use controller_contract::files::{self, Contents};
use controller_contract::paths;
use controller_contract::status::Probe;

use super::{Outcome, Results};
use crate::address::{self, Choice};

use crate::event::HookEnv;
use crate::hook::{self, HookError};
use crate::memo::Memo;
use crate::plan::{self, OnDisk, BIND_ADDRESSES_KEY};
use crate::status_socket;
use crate::tools::HookTools;

pub(super) fn run(tools: &HookTools, env: &HookEnv) -> Result<Outcome, HookError> {
    let world = hook::observe(tools, env, None, &Memo::new())?;
    let observed = &world.observed;
    let mut results = Results::new();
    results.insert("unit".into(), observed.unit.clone());
    results.insert("juju-leader".into(), observed.is_leader.to_string());
    let agent_id = match &observed.agent_id {
        Some(Ok(id)) => id.clone(),
        Some(Err(reason)) => format!("unknown: {reason}"),
        None => "unknown: invalid config".into(),
    };
    results.insert("agent-id".into(), agent_id);
    let (address, how) = match &observed.choice {
        Some(Ok(Choice::Unique { address, dropped })) => (
            address.to_string(),
            format!(
                "the only {} address of the db-cluster binding left after dropping {}",
                address::scope(*address),
                if dropped.is_empty() {
                    "nothing".to_owned()
                } else {
                    dropped
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                }
            ),
        ),
        Some(Ok(Choice::Ambiguous { candidates, .. })) => (
            "none".into(),
            format!(
                "ambiguous: {} are equally good; run bind-candidates for the fix",
                candidates
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Some(Ok(Choice::None { .. })) => (
            "none".into(),
            "no usable address on the db-cluster binding; run bind-candidates".into(),
        ),
        Some(Err(error)) => ("none".into(), error.to_string()),
        None => ("none".into(), "invalid config".into()),
    };
    results.insert("bind-address.address".into(), address);
    results.insert("bind-address.how".into(), how);
    let published = observed
        .relation
        .as_ref()
        .and_then(|r| r.app.get(BIND_ADDRESSES_KEY).cloned());
    results.insert(
        "published-addresses".into(),
        published.clone().unwrap_or_else(|| "none".into()),
    );
    let on_disk = match observed.conf.as_ref().map(|c| &c.on_disk) {
        Some(OnDisk::Parsed(conf)) => plan::render_map(conf.bind_addresses()),
        Some(OnDisk::Missing) => "missing".into(),
        Some(OnDisk::Unreadable(error)) => format!("unreadable: {error}"),
        None => "unknown (no agent id)".into(),
    };
    if let Some(conf) = &observed.conf {
        results.insert("controller-conf.path".into(), conf.path.clone());
    }
    results.insert(
        // Top level: the simulator's tests and scripts read it there.
        "in-sync".into(),
        (published.as_deref() == Some(on_disk.as_str())).to_string(),
    );
    results.insert("controller-conf.map".into(), on_disk);
    let peers = observed
        .relation
        .as_ref()
        .map(|r| r.peers.keys().cloned().collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    results.insert("peers".into(), peers);

    let Some(paths) = &world.paths else {
        return Ok((
            results,
            Some("invalid config: cannot find the dbaccessor".into()),
        ));
    };
    results.extend(read_leases(&paths.data_dir));
    let probe = match status_socket::probe(&paths.data_dir) {
        Ok(probe) => probe,
        Err(error) => {
            results.insert("dbaccessor.state".into(), "unavailable".into());
            return Ok((
                results,
                Some(format!("the dbaccessor does not answer: {error}")),
            ));
        }
    };
    results.extend(describe_probe(&probe));
    Ok((results, None))
}

/// The leases part of `cluster-status`, from the agent's `lease-status.json` (the charm
/// cannot reach the database): a missing or unreadable file is said, not an action failure.
fn read_leases(data_dir: &Path) -> Results {
    let path = paths::lease_status(data_dir);
    let error = |message: String| Results::from([("leases.error".into(), message)]);
    let name = path.display().to_string();
    let bytes = match files::read_capped(&path, controller_contract::lease::MAX_BYTES, &name) {
        Ok(Contents::Bytes(bytes)) => bytes,
        Ok(Contents::Refused(why)) => return error(why),
        Ok(Contents::Missing) => {
            return error(format!(
                "cannot read {name} (is the controller agent running?): it does not exist"
            ))
        }
        Err(e) => {
            return error(format!(
                "cannot read {name} (is the controller agent running?): {e}"
            ))
        }
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    match serde_json::from_slice(&bytes) {
        Ok(status) => describe_leases(&status, now_ms),
        Err(e) => error(format!("{name} is malformed: {e}")),
    }
}

/// A lease's results key: its type, then its name unless it is the controller's own; only
/// lower-case letters, digits and dashes (what Juju accepts in result keys).
fn lease_slug(entry: &controller_contract::lease::LeaseEntry) -> String {
    let raw = if entry.name == "controller" {
        entry.kind.clone()
    } else {
        format!("{}-{}", entry.kind, entry.name)
    };
    raw.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The lease results: who holds each lease, its token and expiry as the agent last read
/// them, how old that read is (`now_ms`: this machine's clock), and whether this
/// controller runs the singular workers.
pub fn describe_leases(status: &controller_contract::lease::LeaseStatus, now_ms: i64) -> Results {
    let mut results = Results::new();
    let age = (now_ms - status.written_unix_ms).max(0);
    results.insert(
        "leases.seen-by".into(),
        format!("{} ({:.1} s ago)", status.holder, age as f64 / 1000.0),
    );
    results.insert(
        "leases.singular-workers-here".into(),
        status
            .running_singular_workers
            .clone()
            .unwrap_or_else(|| "no".into()),
    );
    for entry in &status.leases {
        let key = format!("leases.{}", lease_slug(entry));
        let remaining = entry.remaining_ms(status.read_at_ms);
        let expires = if entry.pinned {
            "pinned".to_owned()
        } else if remaining > 0 {
            format!("in {:.1} s at the read", remaining as f64 / 1000.0)
        } else {
            format!(
                "expired {:.1} s before the read",
                -remaining as f64 / 1000.0
            )
        };
        results.insert(format!("{key}.holder"), entry.holder.clone());
        results.insert(
            format!("{key}.token"),
            format!("{}@{}", entry.holder, entry.start_ms),
        );
        results.insert(format!("{key}.expires"), expires);
    }
    results
}

/// The dbaccessor's part of `cluster-status`: its state, the members with their
/// reachability, the leader and the health verdict.
pub fn describe_probe(probe: &Probe) -> Results {
    let status = &probe.status;
    let mut results = Results::new();
    results.insert("dbaccessor.state".into(), status.state.as_str().into());
    results.insert("dbaccessor.reason".into(), status.reason.clone());
    results.insert(
        "dbaccessor.node-id".into(),
        status
            .node_id
            .map_or_else(|| "none".into(), |id| id.to_string()),
    );
    results.insert(
        "dbaccessor.node-address".into(),
        status
            .bind_address
            .clone()
            .unwrap_or_else(|| "none (not running)".into()),
    );
    results.insert(
        "dbaccessor.log-position".into(),
        match (&probe.log_position, &probe.log_position_error) {
            (Some(position), _) => position.to_string(),
            (None, Some(error)) => format!("unknown: {error}"),
            (None, None) => "unknown".into(),
        },
    );
    if let Some(last) = status.decisions.last() {
        // What the daemon last decided, and what woke it: the first thing to read when
        // the cluster is not what the map says.
        results.insert(
            "dbaccessor.last-decision".into(),
            format!("[{}] {}: {}", last.trigger, last.action, last.reason),
        );
    }
    if let Some(config) = &status.config {
        results.insert(
            "dbaccessor.map-read".into(),
            match (&config.bind_addresses, &config.error) {
                (Some(map), _) => plan::render_map(map),
                (None, Some(error)) => format!("unusable: {error}"),
                (None, None) => "unusable".into(),
            },
        );
    }
    let reachable = |id: u64| {
        probe
            .reachable
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.reachable)
    };
    for member in &status.members {
        let key = |field: &str| format!("members.{}.{field}", member.id);
        results.insert(key("address"), member.address.clone());
        results.insert(key("role"), member.role.as_str().into());
        results.insert(
            key("reachable"),
            reachable(member.id).map_or_else(|| "unknown".into(), |r| r.to_string()),
        );
    }
    results.insert(
        "leader".into(),
        match status.leader_id {
            Some(id) => match status.members.iter().find(|m| m.id == id) {
                Some(member) => format!("{id} at {}", member.address),
                None => id.to_string(),
            },
            None => "none".into(),
        },
    );
    if let Some(health) = &status.health {
        for member in &health.members {
            let key = |field: &str| format!("members.{}.{field}", member.id);
            results.insert(key("connected"), member.connected.to_string());
            results.insert(key("caught-up"), member.caught_up.to_string());
            if let Some(behind) = member.behind {
                results.insert(key("behind"), behind.to_string());
            }
        }
        results.insert("health-verdict".into(), health.verdict.as_str().into());
    }
    results.insert("health".into(), health_line(probe));
    results
}

/// The one-line health verdict: the dbaccessor's own (voters connected and caught up, mapped
/// controllers missing from the configuration), or why there is none.
pub fn health_line(probe: &Probe) -> String {
    match &probe.status.health {
        Some(health) => health.summary.clone(),
        None => format!(
            "unknown: the dbaccessor has no verdict (its node is {})",
            probe.status.state.as_str()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_results_table() {
        use controller_contract::lease::{LeaseEntry, LeaseStatus};
        let entry =
            |kind: &str, name: &str, holder: &str, expiry_ms: i64, pinned: bool| LeaseEntry {
                kind: kind.into(),
                model: "controller".into(),
                name: name.into(),
                holder: holder.into(),
                start_ms: 1000,
                expiry_ms,
                pinned,
            };
        let status = LeaseStatus {
            holder: "controller-0".into(),
            running_singular_workers: None,
            leases: vec![
                entry(
                    "singular-controller",
                    "controller",
                    "controller-1",
                    61_000,
                    false,
                ),
                entry("application-leadership", "Ctl_App", "unit-2", 5_000, false),
                entry("test", "x", "h", 0, true),
            ],
            read_at_ms: 10_000,
            written_unix_ms: 2_000_000,
        };
        let results = describe_leases(&status, 2_001_500);
        let expected: Results = [
            ("leases.seen-by", "controller-0 (1.5 s ago)"),
            ("leases.singular-workers-here", "no"),
            ("leases.singular-controller.holder", "controller-1"),
            ("leases.singular-controller.token", "controller-1@1000"),
            (
                "leases.singular-controller.expires",
                "in 51.0 s at the read",
            ),
            ("leases.application-leadership-ctl-app.holder", "unit-2"),
            ("leases.application-leadership-ctl-app.token", "unit-2@1000"),
            (
                "leases.application-leadership-ctl-app.expires",
                "expired 5.0 s before the read",
            ),
            ("leases.test-x.holder", "h"),
            ("leases.test-x.token", "h@1000"),
            ("leases.test-x.expires", "pinned"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(results, expected);
        // The holder's own view names the grant it runs under.
        let mut holding = status.clone();
        holding.running_singular_workers = Some("controller-0@1000".into());
        assert_eq!(
            describe_leases(&holding, 0)["leases.singular-workers-here"],
            "controller-0@1000"
        );
    }

    #[test]
    fn the_last_decision_is_shown_when_there_is_one() {
        let mut probe: Probe = serde_json::from_value(serde_json::json!({
            "status": {
                "agent_id": "0", "node_id": 1, "bind_address": "10.0.0.1:17666",
                "state": "member", "reason": "", "members": [], "leader_id": 1,
                "config": null
            }
        }))
        .expect("a probe from an older daemon, without decisions");
        assert!(!describe_probe(&probe).contains_key("dbaccessor.last-decision"));
        for (trigger, action) in [("start-up", "restart"), ("POST /reload", "keep")] {
            probe
                .status
                .decisions
                .push(controller_contract::status::Decided {
                    trigger: trigger.into(),
                    action: action.into(),
                    reason: format!("{action} because"),
                    at_unix_ms: 1,
                });
        }
        assert_eq!(
            describe_probe(&probe)["dbaccessor.last-decision"],
            "[POST /reload] keep: keep because"
        );
    }

    #[test]
    fn a_missing_lease_file_is_reported_not_failed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let results = read_leases(dir.path());
        assert!(
            results["leases.error"].contains("cannot read"),
            "{results:?}"
        );
        std::fs::write(paths::lease_status(dir.path()), "{").expect("write");
        assert!(read_leases(dir.path())["leases.error"].contains("malformed"));
        // Something else in its place is refused, not waited on or read.
        std::fs::remove_file(paths::lease_status(dir.path())).expect("remove");
        std::fs::create_dir(paths::lease_status(dir.path())).expect("a dir in its place");
        assert!(
            read_leases(dir.path())["leases.error"].ends_with("is a directory, not a regular file")
        );
    }
}
