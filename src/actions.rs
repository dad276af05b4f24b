//! The actions: `bind-candidates` (the address choice: every address with its scope and
//! why it was kept or dropped, and the command that fixes an ambiguity), `cluster-status`
//! (this unit's address, controller.conf, the dbaccessor's state, the Dqlite members with
//! their reachability, a health verdict and the leases from the agent's lease-status file) and `recover-cluster` (the operator's way out
//! after losing quorum for good: never run by a hook).
//!
//! Results go through `action-set` as dotted keys (`members.1.address=...`), so
//! `juju run controller/0 cluster-status` prints nested YAML. Whatever the operator must fix
//! (bad input, a dbaccessor that does not answer, a refused recovery) ends in `action-fail`
//! with the reason, after the results gathered so far; the process still exits 0.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use controller_contract::paths;
use controller_contract::status::{
    ErrorAnswer, LogPosition, Probe, Recovered, Request, Role, Status,
};
use ipnetwork::IpNetwork;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::address::{self, Choice};
use crate::conffile::OnDisk;
use crate::event::{HookEnv, PEER_ENDPOINT};
use crate::hook::{self, HookError};
use crate::memo::Memo;
use crate::plan::{self, BIND_ADDRESSES_KEY};
use crate::tools::HookTools;

/// The unit-bag key each unit publishes its node's last log position under (`term/index`).
pub const LOG_POSITION_KEY: &str = "db-log-position";

/// How long a status or probe request may take (a probe waits up to 1 s per member, in
/// parallel).
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a hook waits for the log position it publishes.
const HOOK_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a recovery may take: stop, rewrite, restart and the first convergence round.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(90);

/// Action results: dotted keys to values.
pub type Results = BTreeMap<String, String>;

/// Runs action `name`. Failures the operator can act on end in `action-fail` and exit 0.
pub fn run(tools: &HookTools, env: &HookEnv, name: &str) -> Result<(), HookError> {
    let (results, failure) = match name {
        "bind-candidates" => bind_candidates(tools, env)?,
        "cluster-status" => cluster_status(tools, env)?,
        "recover-cluster" => recover_cluster(tools, env)?,
        other => (Results::new(), Some(format!("unknown action {other:?}"))),
    };
    if !results.is_empty() {
        tools.action_set(&results)?;
    }
    if let Some(message) = failure {
        tools.action_fail(&message)?;
    }
    Ok(())
}

/// What an action reports, and why it failed if it did.
type Outcome = (Results, Option<String>);

fn bind_candidates(tools: &HookTools, env: &HookEnv) -> Result<Outcome, HookError> {
    let (config, choice, _) = hook::observe_address(tools, env, &Memo::new())?;
    let choice = match (config, choice) {
        (Err(error), _) => return Ok((Results::new(), Some(format!("invalid config: {error}")))),
        (_, Some(Err(error))) => return Ok((Results::new(), Some(error.to_string()))),
        (_, Some(Ok(choice))) => choice,
        // observe_address always chooses when the config is valid.
        (Ok(_), None) => return Ok((Results::new(), Some("no address choice was made".into()))),
    };
    // The subnets only serve the suggested fix: a second read is cheap and keeps the
    // address module's parser unchanged.
    let subnets = tools
        .network_get(PEER_ENDPOINT)
        .map(|text| subnets_of(&text))
        .unwrap_or_default();
    Ok((describe_choice(&choice, &subnets, &application(env)), None))
}

/// The application's name, from the unit's.
fn application(env: &HookEnv) -> String {
    env.unit
        .split_once('/')
        .map_or(env.unit.as_str(), |(app, _)| app)
        .to_owned()
}

/// Address -> its interface's subnet (`cidr`), from `network-get` output.
pub fn subnets_of(network_get: &str) -> BTreeMap<String, String> {
    let mut subnets = BTreeMap::new();
    let Ok(info) = serde_json::from_str::<Value>(network_get) else {
        return subnets;
    };
    let interfaces = info.get("bind-addresses").and_then(Value::as_array);
    for interface in interfaces.into_iter().flatten() {
        let addresses = interface.get("addresses").and_then(Value::as_array);
        for address in addresses.into_iter().flatten() {
            let value = address
                .get("value")
                .or_else(|| address.get("address"))
                .and_then(Value::as_str);
            let cidr = address.get("cidr").and_then(Value::as_str);
            // Juju prints the subnet; normalise `10.0.0.5/24` to `10.0.0.0/24` all the same.
            let subnet = cidr
                .and_then(|c| c.parse::<IpNetwork>().ok())
                .and_then(|n| IpNetwork::new(n.network(), n.prefix()).ok());
            if let (Some(value), Some(subnet)) = (value, subnet) {
                subnets.insert(value.to_owned(), subnet.to_string());
            }
        }
    }
    subnets
}

/// The action results for an address choice: the verdict, every address with its scope and
/// reason, and the commands that fix an ambiguity or an empty choice.
pub fn describe_choice(
    choice: &Choice,
    subnets: &BTreeMap<String, String>,
    application: &str,
) -> Results {
    let mut results = Results::new();
    let (result, candidates) = match choice {
        Choice::Unique { address, .. } => ("unique", vec![*address]),
        Choice::Ambiguous { candidates, .. } => ("ambiguous", candidates.clone()),
        Choice::None { .. } => ("none", vec![]),
    };
    results.insert("result".into(), result.into());
    if let Some(address) = choice.address() {
        results.insert("address".into(), address.to_string());
    }
    let listed: Vec<String> = candidates.iter().map(ToString::to_string).collect();
    results.insert("candidates".into(), listed.join(" "));
    let dropped: Vec<String> = choice.dropped().iter().map(ToString::to_string).collect();
    results.insert("dropped".into(), dropped.join("; "));

    let mut entries: Vec<(String, String, &str, String)> = vec![];
    for ip in &candidates {
        let reason = match choice {
            Choice::Unique { .. } => "the only candidate in the best tier",
            _ => "a candidate in the best tier, as good as the others",
        };
        entries.push((
            ip.to_string(),
            address::scope(*ip).to_string(),
            "kept",
            reason.into(),
        ));
    }
    for dropped in choice.dropped() {
        let scope = dropped.address.parse::<IpAddr>().map_or_else(
            |_| "none (not an IP)".to_owned(),
            |ip| address::scope(ip).to_string(),
        );
        entries.push((
            dropped.address.clone(),
            scope,
            "dropped",
            dropped.reason.to_string(),
        ));
    }
    for (n, (address, scope, verdict, reason)) in entries.into_iter().enumerate() {
        let key = |field: &str| format!("addresses.{n}.{field}");
        if let Some(subnet) = subnets.get(&address) {
            results.insert(key("subnet"), subnet.clone());
        }
        results.insert(key("address"), address);
        results.insert(key("scope"), scope);
        results.insert(key("verdict"), verdict.into());
        results.insert(key("reason"), reason);
    }

    let subnet_of = |ip: &IpAddr| subnets.get(&ip.to_string()).cloned();
    let fix = match choice {
        Choice::Unique { .. } => "nothing to fix".to_owned(),
        Choice::Ambiguous { candidates, .. } => {
            let example = candidates
                .iter()
                .find_map(subnet_of)
                .unwrap_or_else(|| "<cidr of the network to use>".into());
            format!(
                "juju bind {application} db-cluster=<space of the network to use> \
                 (or, without spaces: juju config {application} bind-cidr={example})"
            )
        }
        Choice::None { .. } => format!(
            "juju bind {application} db-cluster=<a space this machine has a cloud-local address \
             in>, and check bind-cidr and address-family (juju config {application})"
        ),
    };
    results.insert("fix".into(), fix);
    results
}

fn cluster_status(tools: &HookTools, env: &HookEnv) -> Result<Outcome, HookError> {
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
    let socket = paths::status_socket(&paths.data_dir);
    let probe = match ask::<Probe>(
        &socket,
        &Request::Probe {
            log_position_only: false,
        },
        STATUS_TIMEOUT,
    ) {
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
    let read = std::fs::File::open(&path).and_then(|file| {
        let mut bytes = Vec::new();
        file.take(controller_contract::lease::MAX_BYTES + 1)
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    });
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    match read {
        Ok(bytes) if bytes.len() as u64 > controller_contract::lease::MAX_BYTES => {
            Results::from([(
                "leases.error".into(),
                format!("{} is too large", path.display()),
            )])
        }
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(status) => describe_leases(&status, now_ms),
            Err(e) => Results::from([(
                "leases.error".into(),
                format!("{} is malformed: {e}", path.display()),
            )]),
        },
        Err(e) => Results::from([(
            "leases.error".into(),
            format!(
                "cannot read {} (is the controller agent running?): {e}",
                path.display()
            ),
        )]),
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

fn recover_cluster(tools: &HookTools, env: &HookEnv) -> Result<Outcome, HookError> {
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
    let probe = match ask::<Probe>(
        &socket,
        &Request::Probe {
            log_position_only: false,
        },
        STATUS_TIMEOUT,
    ) {
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

/// A boolean action parameter (absent: false).
fn flag(params: &Map<String, Value>, name: &str) -> Result<bool, String> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(value)) => Ok(*value),
        Some(other) => Err(format!("{name} must be true or false, not {other}")),
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

/// Whether the local dbaccessor knows a leader (`None` when it does not answer). A cheap
/// `status` request: hooks ask this first and read the log only when they publish it.
pub fn local_leader_known(data_dir: &Path) -> Option<bool> {
    ask::<Status>(
        &paths::status_socket(data_dir),
        &Request::Status,
        HOOK_PROBE_TIMEOUT,
    )
    .ok()
    .map(|status| status.leader_id.is_some())
}

/// The local node's last log position, if the dbaccessor answers. Reading it walks the raft
/// files, so hooks ask only when they publish it.
pub fn local_log_position(data_dir: &Path) -> Option<LogPosition> {
    ask::<Probe>(
        &paths::status_socket(data_dir),
        &Request::Probe {
            log_position_only: true,
        },
        HOOK_PROBE_TIMEOUT,
    )
    .ok()?
    .log_position
}

/// One request on the status socket, one answer line back as `T` (or its `error`).
fn ask<T: DeserializeOwned>(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<T, String> {
    let exchange = || -> std::io::Result<String> {
        let mut stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut line = serde_json::to_string(request).expect("a request serializes");
        line.push('\n');
        stream.write_all(line.as_bytes())?;
        let mut answer = String::new();
        BufReader::new(stream)
            .take(1024 * 1024)
            .read_line(&mut answer)?;
        Ok(answer)
    };
    let answer = exchange().map_err(|e| format!("status socket {}: {e}", socket.display()))?;
    if let Ok(ErrorAnswer { error }) = serde_json::from_str::<ErrorAnswer>(&answer) {
        return Err(error);
    }
    serde_json::from_str(&answer).map_err(|e| {
        format!(
            "status socket {}: unexpected answer {:?}: {e}",
            socket.display(),
            answer.trim()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use controller_contract::status::{Member, NodeState, Reachability, Status};

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
    fn a_missing_lease_file_is_reported_not_failed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let results = read_leases(dir.path());
        assert!(
            results["leases.error"].contains("cannot read"),
            "{results:?}"
        );
        std::fs::write(paths::lease_status(dir.path()), "{").expect("write");
        assert!(read_leases(dir.path())["leases.error"].contains("malformed"));
    }

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

    #[test]
    fn subnets_of_reads_cidrs() {
        let text = r#"{"bind-addresses":[{"interface-name":"eth0","addresses":[{"value":"10.0.0.5","cidr":"10.0.0.0/24"},{"address":"10.1.0.5","cidr":"10.1.0.5/24"},{"value":"10.2.0.5"}]}]}"#;
        let subnets = subnets_of(text);
        assert_eq!(subnets.len(), 2);
        assert_eq!(subnets["10.0.0.5"], "10.0.0.0/24");
        assert_eq!(subnets["10.1.0.5"], "10.1.0.0/24");
        assert!(subnets_of("not json").is_empty());
    }
}
