//! What the CLI prints: the model's status (units, machines, addresses, the Dqlite members and
//! roles from the dbaccessors' status sockets) as a table or JSON, and an action's result as
//! `juju run` prints it (YAML, or JSON with `--format json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use controller_contract::status::{Member, Role};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent;
use crate::cluster;
use crate::model::{ActionRecord, State};
use crate::simulation::{machine_data_dir, SimError, Simulation};
use crate::world::{APP, PEER_ENDPOINT};

/// The model's status, as `status --format json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The namespace prefix of the model.
    pub model: String,
    /// `db-cluster`'s binding (`""`: unbound).
    pub binding: String,
    /// The published map (`db-bind-addresses`) as the leader wrote it.
    pub map: BTreeMap<String, String>,
    pub units: Vec<UnitReport>,
    pub machines: Vec<MachineReport>,
    /// The workload machines and their agents' API connections.
    #[serde(default)]
    pub workload: Vec<WorkloadReport>,
    /// Workload machines the controller database has that are not started (requested,
    /// being provisioned, dying), for the compute provisioner.
    #[serde(default)]
    pub requested: Vec<RequestedMachine>,
    /// The Dqlite members as the leader's dbaccessor (or the first that answers) reports them.
    pub dqlite: Vec<MemberReport>,
    /// The Dqlite leader's node id.
    pub dqlite_leader: Option<u64>,
    /// The leader's dbaccessor's health verdict (voters connected and caught up).
    pub health: Option<String>,
    /// The controller as its API tells it, when the client is logged in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiReport>,
    /// The lease rows of the controller database (who runs the singular workers), read
    /// through the go-dqlite shell; empty when they could not be read.
    #[serde(default)]
    pub leases: Vec<LeaseReport>,
    /// Why the leases could not be read, if they could not.
    #[serde(default)]
    pub leases_error: Option<String>,
}

/// The API half of `status`: what a logged-in client read through the API, or why it could
/// not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiReport {
    /// The address that answered.
    #[serde(default)]
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<controller_contract::api::StatusResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One lease, as the controller database holds it, with the database's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseReport {
    /// `singular-controller`, ...
    pub kind: String,
    pub model: String,
    pub name: String,
    /// `controller-<id>`.
    pub holder: String,
    /// The grant's start (milliseconds since the epoch, database clock): with the holder,
    /// the token its fenced writes carry.
    pub start_ms: i64,
    pub expiry_ms: i64,
    pub pinned: bool,
    /// Milliseconds until the expiry by the database's clock at the read (negative: expired).
    pub remaining_ms: i64,
}

impl LeaseReport {
    /// Whether the grant holds (unexpired or pinned).
    pub fn held(&self) -> bool {
        self.pinned || self.remaining_ms > 0
    }
}

/// A `machine` row of the controller database that is not `started`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestedMachine {
    pub id: u32,
    /// `pending`, `provisioning` or `dying`.
    pub status: String,
    /// The token of the grant that last moved it (empty: none yet).
    pub provisioned_by: String,
}

const REQUESTED_SQL: &str =
    "SELECT id, status, provisioned_by FROM machine WHERE status != 'started' ORDER BY id";

/// Parses the go-dqlite shell's rows of the requested machines.
pub fn parse_requested(output: &str) -> Result<Vec<RequestedMachine>, String> {
    output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(
            |line| match line.split('|').collect::<Vec<&str>>().as_slice() {
                [id, status, by] => Ok(RequestedMachine {
                    id: id
                        .trim()
                        .parse()
                        .map_err(|_| format!("machine row {line:?}: {id:?} is not an id"))?,
                    status: (*status).to_owned(),
                    provisioned_by: (*by).to_owned(),
                }),
                _ => Err(format!("machine row {line:?} does not have 3 columns")),
            },
        )
        .collect()
}

/// The leases query: the database's now is the agent's `agent::lease::NOW_MS` expression.
const LEASES_SQL: &str = "SELECT type, model, name, holder, start_ms, expiry_ms, pinned, \
     expiry_ms - CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) \
     FROM lease ORDER BY type, model, name";

/// Parses the go-dqlite shell's rows of [`LEASES_SQL`] (`|`-separated columns).
pub fn parse_leases(output: &str) -> Result<Vec<LeaseReport>, String> {
    output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let columns: Vec<&str> = line.split('|').collect();
            let number = |i: usize| -> Result<i64, String> {
                columns[i]
                    .trim()
                    .parse()
                    .map_err(|_| format!("lease row {line:?}: column {i} is not a number"))
            };
            if columns.len() != 8 {
                return Err(format!("lease row {line:?} does not have 8 columns"));
            }
            Ok(LeaseReport {
                kind: columns[0].to_owned(),
                model: columns[1].to_owned(),
                name: columns[2].to_owned(),
                holder: columns[3].to_owned(),
                start_ms: number(4)?,
                expiry_ms: number(5)?,
                pinned: number(6)? != 0,
                remaining_ms: number(7)?,
            })
        })
        .collect()
}

/// The lease rows, through the go-dqlite shell in the cloud namespace.
pub fn leases(sim: &Simulation, servers: &[String]) -> Result<Vec<LeaseReport>, String> {
    let output = sim
        .shell(servers, "controller", LEASES_SQL, false)
        .map_err(|e| e.to_string())?;
    parse_leases(&output)
}

/// The requested machines, through the go-dqlite shell in the cloud namespace.
pub fn requested(sim: &Simulation, servers: &[String]) -> Result<Vec<RequestedMachine>, String> {
    let output = sim
        .shell(servers, "controller", REQUESTED_SQL, false)
        .map_err(|e| e.to_string())?;
    parse_requested(&output)
}

/// One unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitReport {
    pub name: String,
    pub machine: u32,
    pub leader: bool,
    /// `active`, `blocked`, ..., or `error` while a hook keeps failing.
    pub workload: String,
    pub message: String,
    /// `idle` or `executing` (hooks queued).
    pub agent: String,
}

/// One machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineReport {
    pub id: u32,
    pub namespace: String,
    /// `address(space)` per NIC.
    pub addresses: Vec<String>,
    pub agent_pid: Option<u32>,
    pub dbaccessor_pid: Option<u32>,
    /// The dbaccessor's state (`member`, `joining`, ...) or why it did not answer.
    pub dbaccessor: String,
    pub node_id: Option<u64>,
    /// How many addresses the controller's own `agent.conf` lists (its address updater's
    /// work); `None` before it wrote one.
    #[serde(default)]
    pub api_addresses: Option<usize>,
}

/// One workload machine and its agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadReport {
    pub id: u32,
    pub namespace: String,
    /// `address(space)` per NIC.
    pub addresses: Vec<String>,
    pub agent_pid: Option<u32>,
    /// The `jujud-controller --machine-agent` process.
    pub jujud_pid: Option<u32>,
    /// The API caller's status file as it last wrote it (`None` before it wrote one).
    pub connection: Option<controller_contract::agentaddr::ApiConnection>,
    /// The controller (machine id) whose address the caller is logged in to.
    pub controller: Option<u32>,
    /// `apiaddresses` of its `agent.conf`.
    pub api_addresses: Vec<String>,
    /// Why `agent.conf` could not be read, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_conf_error: Option<String>,
}

/// The workload machine `id`'s report.
fn workload_report(sim: &Simulation, id: u32, machine: &crate::world::Machine) -> WorkloadReport {
    let dir = crate::simulation::machine_agent_dir(&sim.dir, id);
    let connection: Option<controller_contract::agentaddr::ApiConnection> =
        std::fs::read(dir.join(controller_contract::agentaddr::API_CONNECTION_NAME))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let controller = connection.as_ref().and_then(|c| {
        let ip = c.endpoint.parse::<std::net::SocketAddr>().ok()?.ip();
        sim.world
            .machines
            .iter()
            .find(|(_, m)| !m.workload && m.nics.iter().any(|nic| nic.address == ip))
            .map(|(id, _)| *id)
    });
    let (api_addresses, agent_conf_error) = match std::fs::read_to_string(dir.join("agent.conf")) {
        Ok(text) => match controller_contract::agentaddr::parse_agent_conf(&text) {
            Ok(conf) => (conf.api_addresses, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        },
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    WorkloadReport {
        id,
        namespace: sim.world.machine_namespace(id),
        addresses: machine
            .nics
            .iter()
            .map(|nic| format!("{}({})", nic.address, nic.space))
            .collect(),
        agent_pid: machine.agent_pid.filter(|pid| agent::alive(*pid)),
        jujud_pid: agent::dbaccessor_pid(&sim.dir, id),
        connection,
        controller,
        api_addresses,
        agent_conf_error,
    }
}

/// How many addresses a controller's own `agent.conf` lists.
fn controller_api_addresses(sim: &Simulation, id: u32) -> Option<usize> {
    let text =
        std::fs::read_to_string(crate::simulation::controller_dir(&sim.dir, id).join("agent.conf"))
            .ok()?;
    let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).ok()?;
    Some(document.get("apiaddresses")?.as_sequence()?.len())
}

/// One Dqlite member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReport {
    pub id: u64,
    pub address: String,
    pub role: String,
    /// The controller agent whose dbaccessor runs that node, when known.
    pub agent: Option<String>,
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Voter => "voter",
        Role::StandBy => "stand-by",
        Role::Spare => "spare",
    }
}

/// Gathers the status.
pub fn status(sim: &Simulation) -> Result<StatusReport, SimError> {
    let state = sim.store().load()?;
    let map: BTreeMap<String, String> = state
        .relations
        .values()
        .filter_map(|r| r.app_bags.get(APP))
        .filter_map(|bag| bag.get("db-bind-addresses"))
        .filter_map(|json| serde_json::from_str(json).ok())
        .next()
        .unwrap_or_default();
    let mut units = Vec::new();
    for name in sim.world.units.keys() {
        let queue = &sim.world.units[name];
        let status = state.units.get(name).and_then(|u| u.status.clone());
        let (workload, message) = match (&queue.error, status) {
            (Some(error), _) => ("error".to_owned(), error.clone()),
            (None, Some(status)) => (status.status, status.message),
            (None, None) => ("unknown".to_owned(), String::new()),
        };
        units.push(UnitReport {
            name: name.clone(),
            machine: queue.machine,
            leader: crate::leadership::is_leader(&state, name),
            workload,
            message,
            agent: if queue.dying {
                "dying".into()
            } else if queue.queue.is_empty() {
                "idle".into()
            } else {
                "executing".into()
            },
        });
    }
    units.sort_by_key(|u| crate::world::unit_number(&u.name));
    let mut machines = Vec::new();
    let mut members: Vec<Member> = Vec::new();
    let mut leader = None;
    let mut health = None;
    let mut node_agents = BTreeMap::new();
    let mut workload = Vec::new();
    for (id, machine) in &sim.world.machines {
        if machine.workload {
            workload.push(workload_report(sim, *id, machine));
            continue;
        }
        let socket = controller_contract::paths::status_socket(&machine_data_dir(&sim.dir, *id));
        let answer = cluster::query_status(&socket);
        let (dbaccessor, node_id) = match &answer {
            Ok(status) => {
                if let Some(node) = status.node_id {
                    node_agents.insert(node, id.to_string());
                }
                // The leader's own view of the members is the authoritative one.
                if members.is_empty()
                    || status.leader_id.is_some() && status.leader_id == status.node_id
                {
                    members.clone_from(&status.members);
                    leader = status.leader_id.or(leader);
                    health = status.health.as_ref().map(|h| h.summary.clone());
                }
                (
                    format!("{}: {}", status.state.as_str(), status.reason),
                    status.node_id,
                )
            }
            Err(error) => (format!("no answer ({error})"), None),
        };
        machines.push(MachineReport {
            id: *id,
            namespace: sim.world.machine_namespace(*id),
            addresses: machine
                .nics
                .iter()
                .map(|nic| format!("{}({})", nic.address, nic.space))
                .collect(),
            agent_pid: machine.agent_pid.filter(|pid| agent::alive(*pid)),
            dbaccessor_pid: agent::dbaccessor_pid(&sim.dir, *id),
            dbaccessor,
            node_id,
            api_addresses: controller_api_addresses(sim, *id),
        });
    }
    let dqlite = members
        .iter()
        .map(|m| MemberReport {
            id: m.id,
            address: m.address.clone(),
            role: role_name(m.role).to_owned(),
            agent: node_agents.get(&m.id).cloned(),
        })
        .collect();
    let servers: Vec<String> = members.iter().map(|m| m.address.clone()).collect();
    let (leases, leases_error) = if servers.is_empty() {
        (Vec::new(), Some("no Dqlite members known".to_owned()))
    } else {
        match leases(sim, &servers) {
            Ok(leases) => (leases, None),
            Err(error) => (Vec::new(), Some(error)),
        }
    };
    // Only with leases read (the same database): a status without them says why already.
    let requested = if leases_error.is_none() {
        requested(sim, &servers).unwrap_or_default()
    } else {
        Vec::new()
    };
    Ok(StatusReport {
        model: sim.world.prefix.clone(),
        binding: sim
            .world
            .binding(APP, PEER_ENDPOINT)
            .unwrap_or_default()
            .to_owned(),
        map,
        units,
        machines,
        workload,
        requested,
        dqlite,
        dqlite_leader: leader,
        health,
        api: None,
        leases,
        leases_error,
    })
}

/// `debug-log`: the hooks' lines (the engine's debug log) and the charms' `juju-log` lines in
/// time order, as Juju prints them (`unit-tiny-0: 12:00:01.250 INFO ...`), then each machine
/// agent's log. `include` keeps only the entities named (`tiny/0`, `unit-tiny-0`,
/// `machine-2`); empty keeps all.
pub fn debug_log(
    model_dir: &std::path::Path,
    world: &crate::world::World,
    state: &State,
    include: &[String],
) -> String {
    let wanted: Vec<String> = include
        .iter()
        .map(|name| {
            if name.contains('/') {
                format!("unit-{}", name.replace('/', "-"))
            } else {
                name.clone()
            }
        })
        .collect();
    let keep = |entity: &str| wanted.is_empty() || wanted.iter().any(|w| w == entity);
    let mut entries: Vec<(u64, String, String)> = Vec::new();
    let log = std::fs::read_to_string(model_dir.join(crate::engine::DEBUG_LOG)).unwrap_or_default();
    for line in log.lines() {
        let mut parts = line.splitn(3, ' ');
        let (Some(time), Some(entity), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        entries.push((
            time.parse().unwrap_or(0),
            entity.to_owned(),
            rest.to_owned(),
        ));
    }
    for line in &state.juju_log {
        entries.push((
            line.time_ms,
            format!("unit-{}", line.unit.replace('/', "-")),
            format!(
                "{} unit.{}.juju-log {}",
                line.level, line.unit, line.message
            ),
        ));
    }
    // A stable sort: a hook's lines keep their order.
    entries.sort_by_key(|(time, _, _)| *time);
    let mut out = String::new();
    for (time, entity, rest) in entries.iter().filter(|(_, e, _)| keep(e)) {
        let _ = writeln!(out, "{entity}: {} {rest}", clock(*time));
    }
    for id in world.machines.keys() {
        let entity = format!("machine-{id}");
        if !keep(&entity) {
            continue;
        }
        let log = std::fs::read_to_string(agent::agent_log(model_dir, *id)).unwrap_or_default();
        for line in log.lines() {
            let _ = writeln!(out, "{entity}: {line}");
        }
    }
    out
}

/// `HH:MM:SS.mmm` (UTC) of a time in milliseconds since the epoch.
fn clock(time_ms: u64) -> String {
    let day_ms = time_ms % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000
    )
}

/// The status as a table, in the spirit of `juju status`.
pub fn render_status(report: &StatusReport) -> String {
    let mut out = String::new();
    let binding = if report.binding.is_empty() {
        "(unbound)"
    } else {
        &report.binding
    };
    let _ = writeln!(out, "Model       Namespaces       db-cluster binding");
    let _ = writeln!(out, "controller  jsim-{}-*   {binding}", report.model);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<15} {:<9} {:<9} {:<8} Message",
        "Unit", "Workload", "Agent", "Machine"
    );
    for unit in &report.units {
        let name = format!("{}{}", unit.name, if unit.leader { "*" } else { "" });
        let _ = writeln!(
            out,
            "{name:<15} {:<9} {:<9} {:<8} {}",
            unit.workload, unit.agent, unit.machine, unit.message
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<8} {:<36} {:<20} dbaccessor",
        "Machine", "Addresses", "Node"
    );
    for machine in &report.machines {
        let node = machine.node_id.map_or("-".to_owned(), |n| n.to_string());
        let pid = machine
            .dbaccessor_pid
            .map_or("not running".to_owned(), |p| format!("pid {p}"));
        let _ = writeln!(
            out,
            "{:<8} {:<36} {node:<20} {} ({pid})",
            machine.id,
            machine.addresses.join(" "),
            machine.dbaccessor
        );
    }
    if !report.workload.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<8} {:<36} {:<12} {:<28} API addresses",
            "Machine", "Addresses", "Agent", "Connected to"
        );
        for machine in &report.workload {
            let agent = machine
                .jujud_pid
                .map_or("not running".to_owned(), |p| format!("pid {p}"));
            let connected = match (&machine.connection, machine.controller) {
                (Some(c), Some(id)) if c.state == "connected" => {
                    format!("controller {id} ({})", c.endpoint)
                }
                (Some(c), _) if c.state == "connected" => c.endpoint.clone(),
                (Some(c), _) => c.state.clone(),
                (None, _) => "-".to_owned(),
            };
            let held = match &machine.agent_conf_error {
                Some(error) => format!("agent.conf: {error}"),
                None => machine.api_addresses.len().to_string(),
            };
            let _ = writeln!(
                out,
                "{:<8} {:<36} {agent:<12} {connected:<28} {held}",
                machine.id,
                machine.addresses.join(" "),
            );
        }
    }
    let _ = writeln!(out);
    let map = if report.map.is_empty() {
        "(none published)".to_owned()
    } else {
        report
            .map
            .iter()
            .map(|(agent, ip)| format!("{agent}={ip}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(out, "db-bind-addresses: {map}");
    let leader = report
        .dqlite_leader
        .map_or("unknown".to_owned(), |l| l.to_string());
    let _ = writeln!(out, "Dqlite members (leader node {leader}):");
    if let Some(health) = &report.health {
        let _ = writeln!(out, "  health: {health}");
    }
    let _ = writeln!(
        out,
        "  {:<20} {:<21} {:<9} Agent",
        "Address", "Node", "Role"
    );
    for member in &report.dqlite {
        let star = if Some(member.id) == report.dqlite_leader {
            "*"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {:<20} {:<21} {:<9} {}",
            member.address,
            format!("{}{star}", member.id),
            member.role,
            member.agent.clone().unwrap_or_else(|| "?".into())
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Leases (database clock):");
    if let Some(error) = &report.leases_error {
        let _ = writeln!(out, "  cannot read them: {error}");
    }
    let _ = writeln!(
        out,
        "  {:<44} {:<16} {:<14} Expires",
        "Lease", "Holder", "Token start"
    );
    for lease in &report.leases {
        let expires = if lease.pinned {
            "pinned".to_owned()
        } else if lease.remaining_ms > 0 {
            format!("in {:.1} s", lease.remaining_ms as f64 / 1000.0)
        } else {
            format!("expired {:.1} s ago", -lease.remaining_ms as f64 / 1000.0)
        };
        let _ = writeln!(
            out,
            "  {:<44} {:<16} {:<14} {expires}",
            format!("{}/{}/{}", lease.kind, lease.model, lease.name),
            lease.holder,
            lease.start_ms
        );
    }
    if !report.requested.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Machines requested (the compute provisioner's):");
        let _ = writeln!(out, "  {:<8} {:<13} Last moved by", "Machine", "Status");
        for machine in &report.requested {
            let _ = writeln!(
                out,
                "  {:<8} {:<13} {}",
                machine.id,
                machine.status,
                if machine.provisioned_by.is_empty() {
                    "-"
                } else {
                    &machine.provisioned_by
                }
            );
        }
    }
    if let Some(api) = &report.api {
        let _ = writeln!(out);
        match (&api.status, &api.error) {
            (Some(status), _) => {
                let _ = writeln!(
                    out,
                    "Controller {} (through the API at {}, answered by controller {}, schema {}):",
                    status.controller_uuid, api.endpoint, status.answered_by, status.schema_version
                );
                let _ = writeln!(
                    out,
                    "  {:<11} {:<21} {:<21} API addresses",
                    "Controller", "Node", "Dqlite"
                );
                for node in &status.controllers {
                    let _ = writeln!(
                        out,
                        "  {:<11} {:<21} {:<21} {}",
                        node.controller_id,
                        node.dqlite_node_id,
                        node.bind_address,
                        node.api_addresses.join(" ")
                    );
                }
                let config: Vec<String> = status
                    .controller_config
                    .iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect();
                let _ = writeln!(out, "  controller config: {}", config.join(" "));
            }
            (None, error) => {
                let _ = writeln!(
                    out,
                    "Controller (through the API): {}",
                    error.as_deref().unwrap_or("no answer")
                );
            }
        }
    }
    out
}

/// The action's results as `juju run` prints them: YAML of the results (keys sorted), or with
/// `json` Juju's JSON document keyed by unit.
pub fn render_action(record: &ActionRecord, json: bool) -> String {
    let results: BTreeMap<String, Value> = record.action.results.clone();
    if json {
        let mut results_with_code = results.clone();
        results_with_code.insert("return-code".into(), Value::from(0));
        let mut task = serde_json::Map::new();
        task.insert("id".into(), Value::from(record.action.id.clone()));
        if let Some(message) = &record.action.failed {
            task.insert("message".into(), Value::from(message.clone()));
        }
        if !record.action.log.is_empty() {
            task.insert("log".into(), Value::from(record.action.log.clone()));
        }
        task.insert(
            "results".into(),
            serde_json::to_value(results_with_code).expect("plain data serializes"),
        );
        task.insert("status".into(), Value::from(record.outcome.clone()));
        task.insert("unit".into(), Value::from(record.unit.clone()));
        let document: BTreeMap<String, Value> = [(record.unit.clone(), Value::Object(task))].into();
        let mut text = serde_json::to_string(&document).expect("plain data serializes");
        text.push('\n');
        text
    } else if results.is_empty() {
        String::new()
    } else {
        serde_yaml_ng::to_string(&results).expect("plain data serializes")
    }
}

/// The last action record of `unit` in `state`.
pub fn last_action<'a>(state: &'a State, unit: &str) -> Option<&'a ActionRecord> {
    state
        .actions
        .iter()
        .rev()
        .find(|record| record.unit == unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RunningAction;

    fn record(results: &[(&str, &str)], failed: Option<&str>) -> ActionRecord {
        ActionRecord {
            unit: "controller/0".into(),
            action: RunningAction {
                name: "cluster-status".into(),
                id: "7".into(),
                results: results
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
                    .collect(),
                failed: failed.map(str::to_owned),
                ..RunningAction::default()
            },
            outcome: if failed.is_some() {
                "failed"
            } else {
                "completed"
            }
            .into(),
        }
    }

    #[test]
    fn lease_rows_table() {
        let parsed = parse_leases(
            "singular-controller|controller|controller|controller-1|1700000000000|1700000060000|0|41234\n\n",
        )
        .expect("one row");
        assert_eq!(
            parsed,
            vec![LeaseReport {
                kind: "singular-controller".into(),
                model: "controller".into(),
                name: "controller".into(),
                holder: "controller-1".into(),
                start_ms: 1_700_000_000_000,
                expiry_ms: 1_700_000_060_000,
                pinned: false,
                remaining_ms: 41_234,
            }]
        );
        assert!(parsed[0].held());
        assert_eq!(
            parse_requested("3|pending|\n4|provisioning|controller-1@5\n").expect("rows"),
            vec![
                RequestedMachine {
                    id: 3,
                    status: "pending".into(),
                    provisioned_by: String::new()
                },
                RequestedMachine {
                    id: 4,
                    status: "provisioning".into(),
                    provisioned_by: "controller-1@5".into()
                },
            ]
        );
        assert!(parse_requested("x|pending|").is_err());
        assert!(parse_requested("3|pending").is_err());
        let expired = parse_leases("t|m|n|h|1|2|0|-5").expect("row");
        assert!(!expired[0].held());
        let pinned = parse_leases("t|m|n|h|1|2|1|-5").expect("row");
        assert!(pinned[0].held());
        assert_eq!(parse_leases("").expect("no rows"), vec![]);
        assert!(parse_leases("t|m|n|h|1|2|0").is_err());
        assert!(parse_leases("t|m|n|h|x|2|0|3").is_err());
    }

    #[test]
    fn action_output_table() {
        let check = |record: ActionRecord, json: bool, expected: &str| {
            assert_eq!(render_action(&record, json), expected);
        };
        check(
            record(&[("unit", "controller/0"), ("agent-id", "0")], None),
            false,
            "agent-id: '0'\nunit: controller/0\n",
        );
        check(
            record(&[("agent-id", "0")], None),
            true,
            "{\"controller/0\":{\"id\":\"7\",\"results\":{\"agent-id\":\"0\",\"return-code\":0},\"status\":\"completed\",\"unit\":\"controller/0\"}}\n",
        );
        check(
            record(&[], Some("no address")),
            true,
            "{\"controller/0\":{\"id\":\"7\",\"message\":\"no address\",\"results\":{\"return-code\":0},\"status\":\"failed\",\"unit\":\"controller/0\"}}\n",
        );
        check(record(&[], None), false, "");
    }
}
