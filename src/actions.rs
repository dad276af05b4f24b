//! The actions: `bind-candidates` (the address choice with every candidate and every dropped
//! address) and `cluster-status` (what this charm knows: its address, the published map,
//! controller.conf, and the dbaccessor's own view when its status socket answers).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use controller_contract::paths;
use controller_contract::status::{Request, Status as DaemonStatus};

use crate::address::Choice;
use crate::conffile::OnDisk;
use crate::event::HookEnv;
use crate::hook::{self, HookError};
use crate::plan::{self, BIND_ADDRESSES_KEY};
use crate::tools::HookTools;

/// Runs action `name`. Failures the operator can act on end in `action-fail` and exit 0.
pub fn run(tools: &HookTools, env: &HookEnv, name: &str) -> Result<(), HookError> {
    match name {
        "bind-candidates" => bind_candidates(tools, env),
        "cluster-status" => cluster_status(tools, env),
        other => Ok(tools.action_fail(&format!("unknown action {other:?}"))?),
    }
}

fn bind_candidates(tools: &HookTools, env: &HookEnv) -> Result<(), HookError> {
    let (config, choice) = hook::observe_address(tools, env)?;
    let choice = match (config, choice) {
        (Err(error), _) => return Ok(tools.action_fail(&format!("invalid config: {error}"))?),
        (_, Some(Err(error))) => return Ok(tools.action_fail(&error.to_string())?),
        (_, Some(Ok(choice))) => choice,
        // observe_address always chooses when the config is valid.
        (Ok(_), None) => return Ok(tools.action_fail("no address choice was made")?),
    };
    tools.action_set(&describe_choice(&choice))?;
    Ok(())
}

/// The action results for an address choice.
pub fn describe_choice(choice: &Choice) -> BTreeMap<String, String> {
    let mut results = BTreeMap::new();
    let (result, candidates) = match choice {
        Choice::Unique { address, .. } => ("unique", vec![*address]),
        Choice::Ambiguous { candidates, .. } => ("ambiguous", candidates.clone()),
        Choice::None { .. } => ("none", vec![]),
    };
    results.insert("result".into(), result.into());
    if let Some(address) = choice.address() {
        results.insert("address".into(), address.to_string());
    }
    let candidates: Vec<String> = candidates.iter().map(ToString::to_string).collect();
    results.insert("candidates".into(), candidates.join(" "));
    let dropped: Vec<String> = choice.dropped().iter().map(ToString::to_string).collect();
    results.insert("dropped".into(), dropped.join("; "));
    results
}

fn cluster_status(tools: &HookTools, env: &HookEnv) -> Result<(), HookError> {
    let world = hook::observe(tools, env, None)?;
    let observed = &world.observed;
    let mut results = BTreeMap::new();
    results.insert("unit".into(), observed.unit.clone());
    results.insert("leader".into(), observed.is_leader.to_string());
    let agent_id = match &observed.agent_id {
        Some(Ok(id)) => id.clone(),
        Some(Err(reason)) => format!("unknown: {reason}"),
        None => "unknown: invalid config".into(),
    };
    results.insert("agent-id".into(), agent_id);
    let address = match &observed.choice {
        Some(Ok(Choice::Unique { address, .. })) => address.to_string(),
        Some(Ok(choice)) => format!("none ({})", describe_choice(choice)["result"]),
        Some(Err(error)) => format!("none ({error})"),
        None => "none (invalid config)".into(),
    };
    results.insert("db-bind-address".into(), address);
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
    results.insert(
        "in-sync".into(),
        (published.as_deref() == Some(on_disk.as_str())).to_string(),
    );
    results.insert("controller-conf".into(), on_disk);
    let peers = observed
        .relation
        .as_ref()
        .map(|r| r.peers.keys().cloned().collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    results.insert("peers".into(), peers);
    let daemon = match &world.paths {
        Some(paths) => daemon_status(&paths::status_socket(&paths.data_dir)),
        None => "unknown (invalid config)".into(),
    };
    results.insert("dbaccessor".into(), daemon);
    tools.action_set(&results)?;
    Ok(())
}

/// The dbaccessor's one-line summary from its status socket, or why there is none.
fn daemon_status(socket: &Path) -> String {
    let ask = || -> std::io::Result<DaemonStatus> {
        let mut stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        stream.set_write_timeout(Some(Duration::from_secs(3)))?;
        let mut line = serde_json::to_string(&Request::Status).expect("the request serializes");
        line.push('\n');
        stream.write_all(line.as_bytes())?;
        let mut answer = String::new();
        BufReader::new(stream)
            .take(1024 * 1024)
            .read_line(&mut answer)?;
        serde_json::from_str(&answer)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    };
    match ask() {
        Ok(status) => format!(
            "{:?}: {} ({} members, leader {})",
            status.state,
            status.reason,
            status.members.len(),
            status
                .leader_id
                .map_or_else(|| "unknown".to_owned(), |id| id.to_string())
        ),
        Err(error) => format!("not available from {}: {error}", socket.display()),
    }
}
