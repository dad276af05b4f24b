//! The model the hook tools read and write: units, leadership, relation bags, network info,
//! config, statuses, actions and the logs a hook leaves. It is plain serde data, stored as one
//! JSON file ([`crate::store`]) that every hook-tool process and the runner share.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A relation bag: Juju's relation settings are strings only.
pub type Bag = BTreeMap<String, String>;

/// The whole model, as stored in the state file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// `JUJU_MODEL_NAME`.
    pub model_name: String,
    /// `JUJU_MODEL_UUID`.
    pub model_uuid: String,
    /// `JUJU_VERSION` the runner reports to the charm.
    pub juju_version: String,
    /// `JUJU_API_ADDRESSES` (space separated when set).
    pub api_addresses: Vec<String>,
    /// The model's `juju-http-proxy`, `juju-https-proxy`, `juju-ftp-proxy` and
    /// `juju-no-proxy`, handed to hooks as `JUJU_CHARM_HTTP_PROXY`, ... (empty: unset).
    pub charm_proxy: BTreeMap<String, String>,
    /// Every unit by name (`controller/0`).
    pub units: BTreeMap<String, Unit>,
    /// Every application by name, holding its config and application status.
    pub applications: BTreeMap<String, Application>,
    /// The leader unit of each application, by application name.
    pub leaders: BTreeMap<String, String>,
    /// Each application's leader settings (`leader-set`, `leader-get`).
    pub leader_settings: BTreeMap<String, Bag>,
    /// Every relation by id (`db-cluster:0`).
    pub relations: BTreeMap<String, Relation>,
    /// The hooks running now, by `JUJU_CONTEXT_ID`: what the tools of that hook act on.
    pub running: BTreeMap<String, HookContext>,
    /// Every `juju-log` line, in order (never rolled back, as in Juju).
    pub juju_log: Vec<LogLine>,
    /// Every hook-tool invocation, in order: what a test or a benchmark can replay or check.
    /// Kept apart from the state file, in the store's append-only calls log
    /// ([`crate::store::Store`]): [`Store::load`](crate::store::Store::load) fills it in, and
    /// the calls a tool records here are appended to the log, so that a tool that changes
    /// nothing need not rewrite the state.
    #[serde(skip)]
    pub calls: Vec<ToolCall>,
    /// Every finished action, in order.
    pub actions: Vec<ActionRecord>,
    /// Every hook or action the runner ran, in order, with its outcome.
    pub history: Vec<HookRecord>,
    /// The next relation id number and the next action id (Juju hands both out in sequence).
    pub next_id: u64,
}

/// One unit of an application.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Unit {
    /// The machine it runs on (`JUJU_MACHINE_ID`).
    pub machine: String,
    /// Where its charm lives: `<data-dir>/agents/unit-<app>-<n>/charm`.
    pub charm_dir: PathBuf,
    /// Its machine's data dir: when set, its hooks run in a mount namespace in which that
    /// dir is `/var/lib/juju` (and see their charm dir below it); when empty, they run in
    /// the caller's (hand-built models, tests).
    pub data_dir: Option<PathBuf>,
    /// `JUJU_AVAILABILITY_ZONE` (empty: the cloud has none).
    pub availability_zone: String,
    /// What `network-get <binding>` prints, per binding, as JSON. A binding missing here
    /// makes `network-get` fail as Juju does for an unknown binding.
    pub network: BTreeMap<String, Value>,
    /// Raw text `network-get <binding>` prints instead of JSON: lets tests feed the charm
    /// malformed or oversized tool output.
    pub network_raw: BTreeMap<String, String>,
    /// The last `status-set` of the unit.
    pub status: Option<Status>,
    /// The last `application-version-set` of the unit.
    pub workload_version: Option<String>,
    /// The ports `open-port` opened (`80/tcp`, `1000-2000/udp`, `icmp`), committed when the
    /// hook succeeds.
    pub opened_ports: BTreeSet<String>,
}

/// One application.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Application {
    /// The charm config as `config-get` prints it (every option, defaults included).
    pub config: BTreeMap<String, Value>,
    /// The last `status-set --application`.
    pub status: Option<Status>,
}

/// A workload status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// `maintenance`, `blocked`, `waiting` or `active`.
    pub status: String,
    /// The operator-facing message.
    pub message: String,
}

/// One relation: its endpoint, the units in it and their bags.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Relation {
    /// The endpoint name (`db-cluster`); a peer relation has one endpoint for every unit.
    pub endpoint: String,
    /// The application whose peer relation this is (empty: any unit's, for hand-built
    /// models).
    pub app: String,
    /// The units that have joined, whose bags `relation-list` shows.
    pub units: BTreeSet<String>,
    /// Each unit's bag.
    pub unit_bags: BTreeMap<String, Bag>,
    /// Each application's bag.
    pub app_bags: BTreeMap<String, Bag>,
}

/// What the tools of one running hook act on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HookContext {
    /// The unit running the hook.
    pub unit: String,
    /// `hooks/<name>` or `actions/<name>`.
    pub dispatch_path: String,
    /// The relation of a relation hook (`db-cluster:0`).
    pub relation_id: Option<String>,
    /// `JUJU_REMOTE_UNIT` of a relation hook.
    pub remote_unit: Option<String>,
    /// `JUJU_DEPARTING_UNIT` of a `-departed` hook.
    pub departing_unit: Option<String>,
    /// `relation-set` writes, applied only when the hook exits 0.
    pub pending: Vec<PendingWrite>,
    /// The running action, when this is an action.
    pub action: Option<RunningAction>,
    /// `open-port` (true) and `close-port` (false) calls, applied when the hook exits 0.
    pub port_changes: Vec<(String, bool)>,
    /// `leader-set` writes, applied when the hook exits 0.
    pub leader_writes: Vec<(String, String)>,
}

/// One buffered `relation-set` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingWrite {
    /// The relation id written to.
    pub relation_id: String,
    /// Whose bag: a unit name, or an application name when `app` is set.
    pub owner: String,
    /// Whether this is the application bag.
    pub app: bool,
    /// The key.
    pub key: String,
    /// The value; empty deletes the key.
    pub value: String,
}

/// An action while it runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunningAction {
    /// The action name.
    pub name: String,
    /// The action id (`JUJU_ACTION_UUID`).
    pub id: String,
    /// What `action-get` prints.
    pub params: BTreeMap<String, Value>,
    /// What `action-set` collected (nested by dotted keys).
    pub results: BTreeMap<String, Value>,
    /// The message of `action-fail`, once called.
    pub failed: Option<String>,
    /// `action-log` lines.
    pub log: Vec<String>,
}

/// A finished action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// The unit that ran it.
    pub unit: String,
    /// The action as it ended.
    pub action: RunningAction,
    /// `completed` or `failed`.
    pub outcome: String,
}

/// One `juju-log` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The unit that logged it.
    pub unit: String,
    /// `DEBUG`, `INFO`, `WARNING`, `ERROR`.
    pub level: String,
    /// The message.
    pub message: String,
    /// When, in milliseconds since the epoch (0: unknown).
    #[serde(default)]
    pub time_ms: u64,
}

/// One hook-tool invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// `JUJU_CONTEXT_ID` of the hook that called it (empty outside a hook).
    pub context_id: String,
    /// The tool name (`relation-get`).
    pub tool: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its exit code.
    pub exit_code: i32,
}

/// One hook or action the runner ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRecord {
    /// The unit.
    pub unit: String,
    /// `hooks/<name>` or `actions/<name>`.
    pub dispatch_path: String,
    /// The exit code (`None` when killed by a signal).
    pub exit_code: Option<i32>,
    /// Whether the buffered relation writes were committed.
    pub committed: bool,
    /// `JUJU_REMOTE_UNIT` of a relation hook (none for the others).
    #[serde(default)]
    pub remote_unit: Option<String>,
    /// When its process started and ended (wall clock, so that the runs of different units
    /// can be compared; zero in a history written before they were kept).
    #[serde(default)]
    pub span: Span,
}

/// When a hook ran, in milliseconds since the epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// Just before its process was started.
    pub started_ms: u64,
    /// Just after its process was reaped.
    pub ended_ms: u64,
}

impl Span {
    /// Whether the two runs were under way at the same time.
    pub fn overlaps(&self, other: &Span) -> bool {
        self.started_ms < other.ended_ms && other.started_ms < self.ended_ms
    }
}

impl State {
    /// The application of a unit name (`controller/0` -> `controller`).
    pub fn app_of(unit: &str) -> &str {
        unit.split_once('/').map_or(unit, |(app, _)| app)
    }

    /// Whether `unit` leads its application.
    pub fn is_leader(&self, unit: &str) -> bool {
        self.leaders.get(Self::app_of(unit)).map(String::as_str) == Some(unit)
    }

    /// Resolves `-r` (`N` or `endpoint:N`) to a relation id present in the model.
    pub fn resolve_relation(&self, text: &str) -> Option<String> {
        if self.relations.contains_key(text) {
            return Some(text.to_owned());
        }
        let number = text.rsplit_once(':').map_or(text, |(_, n)| n);
        let number: u64 = number.parse().ok()?;
        self.relations
            .keys()
            .find(|id| id.rsplit_once(':').and_then(|(_, n)| n.parse::<u64>().ok()) == Some(number))
            .filter(|id| !text.contains(':') || id.as_str() == text)
            .cloned()
    }

    /// Adds a relation for `endpoint` and returns its id (`endpoint:N`).
    pub fn add_relation(&mut self, endpoint: &str) -> String {
        let id = format!("{endpoint}:{}", self.next_id);
        self.next_id += 1;
        self.relations.insert(
            id.clone(),
            Relation {
                endpoint: endpoint.to_owned(),
                ..Relation::default()
            },
        );
        id
    }

    /// Adds a peer relation of `app` for `endpoint` and returns its id (`endpoint:N`).
    pub fn add_peer_relation(&mut self, app: &str, endpoint: &str) -> String {
        let id = self.add_relation(endpoint);
        if let Some(relation) = self.relations.get_mut(&id) {
            relation.app = app.to_owned();
        }
        id
    }

    /// The relations `unit` takes part in (its application's, or any of a hand-built model).
    pub fn relations_of(&self, unit: &str) -> Vec<String> {
        let app = Self::app_of(unit);
        self.relations
            .iter()
            .filter(|(_, r)| r.app.is_empty() || r.app == app)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Makes `unit` a member of `relation_id` at once: its bag ([`Self::create_bag`]) and
    /// its place in scope ([`Self::enter_scope`]).
    pub fn join_relation(&mut self, relation_id: &str, unit: &str) {
        self.create_bag(relation_id, unit);
        self.enter_scope(relation_id, unit);
    }

    /// Puts `unit` in `relation_id`'s scope: the other units see it in `relation-list`.
    pub fn enter_scope(&mut self, relation_id: &str, unit: &str) {
        if let Some(relation) = self.relations.get_mut(relation_id) {
            relation.units.insert(unit.to_owned());
        }
    }

    /// Gives `unit` its bag in `relation_id` (from `-relation-created` on it may read and
    /// write it) with the keys Juju itself writes (`private-address`, `ingress-address`,
    /// `egress-subnets`) from its network info.
    pub fn create_bag(&mut self, relation_id: &str, unit: &str) {
        let network = self
            .units
            .get(unit)
            .and_then(|u| {
                self.relations
                    .get(relation_id)
                    .and_then(|r| u.network.get(&r.endpoint))
            })
            .cloned();
        let Some(relation) = self.relations.get_mut(relation_id) else {
            return;
        };
        let bag = relation.unit_bags.entry(unit.to_owned()).or_default();
        let ingress = network
            .as_ref()
            .and_then(|n| n.get("ingress-addresses"))
            .and_then(|a| a.get(0))
            .and_then(Value::as_str);
        if let Some(address) = ingress {
            bag.insert("private-address".into(), address.to_owned());
            bag.insert("ingress-address".into(), address.to_owned());
        }
        let egress = network
            .as_ref()
            .and_then(|n| n.get("egress-subnets"))
            .and_then(Value::as_array)
            .map(|subnets| {
                subnets
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            });
        if let Some(egress) = egress.filter(|e| !e.is_empty()) {
            bag.insert("egress-subnets".into(), egress);
        }
    }

    /// Removes `unit` from `relation_id` (it departed); its bag goes with it.
    pub fn leave_relation(&mut self, relation_id: &str, unit: &str) {
        if let Some(relation) = self.relations.get_mut(relation_id) {
            relation.units.remove(unit);
            relation.unit_bags.remove(unit);
        }
    }

    /// A unit's bag as its own hook sees it: committed values plus this hook's pending writes.
    pub fn bag_view(
        &self,
        context: Option<&HookContext>,
        relation_id: &str,
        owner: &str,
        app: bool,
    ) -> Option<Bag> {
        let relation = self.relations.get(relation_id)?;
        let committed = if app {
            relation.app_bags.get(owner).cloned().unwrap_or_default()
        } else {
            relation.unit_bags.get(owner).cloned()?
        };
        let mut bag = committed;
        if let Some(context) = context {
            for write in context
                .pending
                .iter()
                .filter(|w| w.relation_id == relation_id && w.owner == owner && w.app == app)
            {
                apply_write(&mut bag, &write.key, &write.value);
            }
        }
        Some(bag)
    }

    /// Applies a finished hook's buffered writes to the relation bags.
    pub fn commit(&mut self, pending: &[PendingWrite]) {
        for write in pending {
            let Some(relation) = self.relations.get_mut(&write.relation_id) else {
                continue;
            };
            let bag = if write.app {
                relation.app_bags.entry(write.owner.clone()).or_default()
            } else {
                relation.unit_bags.entry(write.owner.clone()).or_default()
            };
            apply_write(bag, &write.key, &write.value);
        }
    }
}

/// Sets a key, or deletes it for an empty value (Juju's relation-set rule).
fn apply_write(bag: &mut Bag, key: &str, value: &str) {
    if value.is_empty() {
        bag.remove(key);
    } else {
        bag.insert(key.to_owned(), value.to_owned());
    }
}

/// Builds the `network-get` JSON Juju prints for a binding, for model builders and tests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkInfo {
    /// The binding's interfaces and their addresses.
    #[serde(
        rename = "bind-addresses",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub bind_addresses: Vec<Interface>,
    /// The subnets egress traffic comes from.
    #[serde(
        rename = "egress-subnets",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub egress_subnets: Vec<String>,
    /// The addresses other units reach this one at.
    #[serde(
        rename = "ingress-addresses",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ingress_addresses: Vec<String>,
}

/// One interface of a binding.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    #[serde(rename = "mac-address")]
    pub mac_address: String,
    #[serde(rename = "interface-name")]
    pub interface_name: String,
    /// Omitted by Juju when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<InterfaceAddress>,
}

/// One address of an interface.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InterfaceAddress {
    pub hostname: String,
    pub value: String,
    pub cidr: String,
}

impl NetworkInfo {
    /// A binding with one interface per `(name, [cidr-with-host])`: `("eth0", ["10.0.0.5/24"])`.
    /// The ingress addresses are the interfaces' addresses, in order.
    pub fn from_interfaces(interfaces: &[(&str, &[&str])]) -> Self {
        let mut info = NetworkInfo::default();
        for (index, (name, addresses)) in interfaces.iter().enumerate() {
            let mut interface = Interface {
                mac_address: format!("00:16:3e:00:00:{index:02x}"),
                interface_name: (*name).to_owned(),
                addresses: Vec::new(),
            };
            for host_cidr in *addresses {
                let (value, prefix) = host_cidr.split_once('/').unwrap_or((host_cidr, "32"));
                interface.addresses.push(InterfaceAddress {
                    hostname: String::new(),
                    value: value.to_owned(),
                    cidr: format!("{value}/{prefix}"),
                });
                info.ingress_addresses.push(value.to_owned());
                info.egress_subnets.push(format!("{value}/{prefix}"));
            }
            info.bind_addresses.push(interface);
        }
        info
    }

    /// The JSON value `network-get` prints.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("network info of plain strings serializes")
    }
}
