//! The simulated cloud around the hook-tool model: spaces and subnets, machines with their
//! NICs and namespaces, the controller application's bindings, and each unit's hook queue.
//! Plain serde data plus the pure decisions made from it (addresses, `network-get` answers,
//! `enable-ha` validation, the hooks Juju fires for each change). No IO here.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Interface, InterfaceAddress, NetworkInfo};
use crate::runner::Invocation;

/// The controller application (the built-in charm, on controller machines).
pub const APP: &str = "controller";
/// The peer endpoint whose binding decides the Dqlite address.
pub const PEER_ENDPOINT: &str = "db-cluster";
/// The most controllers Juju allows.
pub const MAX_CONTROLLERS: usize = 7;
/// The first host number handed out in a subnet (the cloud namespace's bridge is `.1`).
const FIRST_HOST: u32 = 10;
/// The client namespace's host number in the default space (below any machine's).
const CLIENT_HOST: u32 = 2;

/// The simulator's own part of the model, stored as `world.json` beside the hook-tool state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct World {
    /// Six hex digits that prefix every namespace of this model (`jsim-<prefix>-m0`).
    pub prefix: String,
    /// The space new machines and the default binding use.
    pub default_space: String,
    /// Every space by name.
    pub spaces: BTreeMap<String, Space>,
    /// Every live machine by id.
    pub machines: BTreeMap<u32, Machine>,
    /// The next machine id (Juju never reuses one).
    pub next_machine: u32,
    /// Every unit's hook queue and error state, by unit name.
    pub units: BTreeMap<String, UnitQueue>,
    /// Every application by name: its charm, endpoints and bindings.
    pub apps: BTreeMap<String, AppSpec>,
    /// How often each unit runs `update-status`, in seconds (Juju's model config
    /// `update-status-hook-interval`, 5 minutes by default); 0 never.
    pub update_status_interval_s: u64,
    /// Raft's expected round trip handed to every dbaccessor (`--network-latency-ms`).
    pub network_latency_ms: u64,
    /// How long a dbaccessor looks for a quorum (`--quorum-timeout-ms`).
    pub quorum_timeout_ms: u64,
    /// The cloud's fence per machine: the newest lease token a provisioner's request about
    /// it carried; an older one is refused (see `controller_contract::cloud`).
    pub cloud_fences: BTreeMap<u32, controller_contract::cloud::CloudFence>,
    /// Fault injection: the cloud answers a start this long after it started the instance.
    pub cloud_start_reply_delay_ms: u64,
    /// Fault injection: controller machines whose agent runs with its wall clock this many
    /// milliseconds off (libfaketime; the monotonic clock stays true).
    pub clock_skew_ms: BTreeMap<u32, i64>,
}

/// One application: where its charm comes from, its endpoints and their bindings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppSpec {
    /// The charm dir each unit gets a copy of; `None` for the built-in controller charm,
    /// whose program is the `dispatch` binary (and whose units live on controller machines).
    pub charm_dir: Option<PathBuf>,
    /// Every endpoint of the charm (`juju-info` included): what `network-get` answers for.
    pub endpoints: Vec<String>,
    /// Explicit endpoint bindings (`db-cluster` -> space); the `""` key binds every endpoint
    /// without its own entry, as in a bundle. An endpoint with neither is unbound.
    pub bindings: BTreeMap<String, String>,
    /// The next unit number (Juju never reuses one).
    pub next_unit: u32,
}

impl AppSpec {
    /// Whether this is the controller application (the built-in charm).
    pub fn is_controller(&self) -> bool {
        self.charm_dir.is_none()
    }
}

/// One space: a name for one subnet of the simulated cloud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Space {
    /// The subnet's network address (IPv4, or IPv6 for an IPv6-only space).
    pub network: IpAddr,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// The bridge in the cloud namespace that is this subnet (`br0`, `br1`, ...).
    pub bridge: String,
}

impl Space {
    /// The subnet in CIDR form (`10.131.0.0/24`).
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network, self.prefix)
    }

    /// The bridge's own address in the cloud namespace (host 1).
    pub fn gateway(&self) -> IpAddr {
        self.host(1)
    }

    /// The client namespace's address in this space (host 2).
    pub fn client_address(&self) -> IpAddr {
        self.host(u128::from(CLIENT_HOST))
    }

    /// Host `n` of the subnet (no bound check: callers stay below [`Space::size`]).
    fn host(&self, n: u128) -> IpAddr {
        from_number(self.network, to_number(self.network) + n)
    }

    /// How many addresses the subnet has (an IPv6 subnet larger than 2^64 counts as 2^64:
    /// no model gets near either).
    fn size(&self) -> u128 {
        let bits = u32::from(address_bits(self.network) - self.prefix).min(64);
        1u128 << bits
    }

    /// The subnet as a range of numbers, for overlap checks.
    fn range(&self) -> (u128, u128) {
        let start = to_number(self.network);
        (start, start + self.size() - 1)
    }
}

/// One simulated machine: a network namespace with NICs, running a machine agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Machine {
    /// Its NICs, `eth0` first.
    pub nics: Vec<Nic>,
    /// The machine agent's (supervisor's) pid while it runs.
    pub agent_pid: Option<u32>,
    /// A workload machine (`add-machine`): its agent runs the API caller only, no
    /// controller, no unit.
    pub workload: bool,
}

/// One NIC: an interface in the machine's namespace on one space's bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// The interface name in the machine (`eth0`).
    pub name: String,
    /// The space its subnet belongs to.
    pub space: String,
    /// Its address.
    pub address: IpAddr,
    /// Its MAC address, as `network-get` prints it.
    pub mac: String,
}

/// A unit's pending hooks and error state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UnitQueue {
    /// The machine it runs on.
    pub machine: u32,
    /// Hooks waiting to run, in order (a running hook is taken off; a failed one is put
    /// back at the head and retried).
    pub queue: VecDeque<QueuedHook>,
    /// `hook failed: "<name>"` while the head hook keeps failing.
    pub error: Option<String>,
    /// Failures of the head hook in a row (sets the retry back-off).
    pub failures: u32,
    /// The unit is leaving: once its queue is empty it and its machine are removed.
    pub dying: bool,
    /// The unit has entered the scope of its relations (after its `start`, as Juju's uniter
    /// does): the others see it in `relation-list` and ran `-relation-joined` for it.
    pub in_scope: bool,
    /// When it last ran `update-status` (seconds since the epoch); 0 never.
    pub last_update_status: u64,
}

/// One hook waiting in a unit's queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedHook {
    /// The hook name (`config-changed`, `db-cluster-relation-changed`).
    pub name: String,
    /// The relation of a relation hook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation: Option<String>,
    /// `JUJU_REMOTE_UNIT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_unit: Option<String>,
    /// `JUJU_DEPARTING_UNIT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub departing_unit: Option<String>,
}

impl QueuedHook {
    /// A hook without a relation.
    pub fn plain(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            relation: None,
            remote_unit: None,
            departing_unit: None,
        }
    }

    /// `<endpoint>-relation-<kind>` on `relation` with `remote` as the remote unit.
    pub fn relation(kind: &str, relation: &str, remote: Option<&str>) -> Self {
        let endpoint = relation.rsplit_once(':').map_or(relation, |(e, _)| e);
        Self {
            name: format!("{endpoint}-relation-{kind}"),
            relation: Some(relation.to_owned()),
            remote_unit: remote.map(str::to_owned),
            departing_unit: None,
        }
    }

    /// `-departed` of `departing`, as seen by a unit whose remote is `remote`.
    pub fn departed(relation: &str, remote: &str, departing: &str) -> Self {
        Self {
            departing_unit: Some(departing.to_owned()),
            ..Self::relation("departed", relation, Some(remote))
        }
    }

    /// The runner's invocation for this hook.
    pub fn invocation(&self) -> Invocation {
        match &self.relation {
            None => Invocation::hook(&self.name),
            Some(relation) => {
                let kind = self
                    .name
                    .rsplit_once("-relation-")
                    .map_or(self.name.as_str(), |(_, kind)| kind);
                if let Some(departing) = &self.departing_unit {
                    let remote = self.remote_unit.as_deref().unwrap_or(departing);
                    Invocation::departed(relation, remote, departing)
                } else {
                    Invocation::relation(kind, relation, self.remote_unit.as_deref())
                }
            }
        }
    }

    /// How progress lines name it: `db-cluster-relation-changed(controller/1)`.
    pub fn label(&self) -> String {
        match &self.remote_unit {
            Some(remote) => format!("{}({remote})", self.name),
            None => self.name.clone(),
        }
    }
}

/// Why a world change is refused, in Juju's words where Juju has them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorldError {
    #[error("number of controllers must be odd and non-negative")]
    EvenCount,
    #[error("controller count is too large (allowed {MAX_CONTROLLERS})")]
    TooMany,
    #[error(
        "failed to enable HA with {requested} controllers: cannot remove controllers with \
         enable-ha, use remove-machine and chose the controller(s) to remove"
    )]
    Shrink { requested: usize },
    #[error("space {0:?} not found")]
    UnknownSpace(String),
    #[error("space {0:?} is given twice")]
    RepeatedSpace(String),
    #[error("space {0:?} already exists")]
    SpaceExists(String),
    #[error("{0:?} is not a valid IPv4 subnet (want a.b.c.d/n with n between 8 and 30)")]
    BadSubnet(String),
    #[error("subnet {cidr} overlaps space {space:?}")]
    Overlap { cidr: String, space: String },
    #[error("machine {0} not found")]
    UnknownMachine(String),
    #[error("machine {0} already exists")]
    MachineExists(u32),
    #[error("no free address left in space {0:?}")]
    SpaceFull(String),
}

/// How many controllers `enable-ha -n requested` leads to, given `current` (Juju's rules:
/// `0` means "at least 3, and odd"; even and smaller counts are refused).
pub fn enable_ha_target(current: usize, requested: usize) -> Result<usize, WorldError> {
    if requested != 0 && requested % 2 != 1 {
        return Err(WorldError::EvenCount);
    }
    if requested > MAX_CONTROLLERS {
        return Err(WorldError::TooMany);
    }
    let target = if requested == 0 {
        let odd = current + (current + 1) % 2;
        odd.max(3)
    } else {
        requested
    };
    if target < current {
        return Err(WorldError::Shrink { requested: target });
    }
    Ok(target)
}

/// Parses `a.b.c.d/n` (n from 8 to 30) or an IPv6 `prefix/n` (n from 64 to 120, say a
/// ULA `fd00:1::/64`) into the subnet's network address and prefix.
pub fn parse_subnet(cidr: &str) -> Result<(IpAddr, u8), WorldError> {
    let bad = || WorldError::BadSubnet(cidr.to_owned());
    let (address, prefix) = cidr.split_once('/').ok_or_else(bad)?;
    let address: IpAddr = address.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let allowed = match address {
        IpAddr::V4(_) => 8..=30,
        IpAddr::V6(_) => 64..=120,
    };
    if !allowed.contains(&prefix) {
        return Err(bad());
    }
    let host_bits = u32::from(address_bits(address) - prefix);
    let mask = !((1u128 << host_bits) - 1);
    Ok((from_number(address, to_number(address) & mask), prefix))
}

/// The one-address subnet of `address` (`/32`, `/128`), as Juju prints egress subnets.
fn host_cidr(address: IpAddr) -> String {
    format!("{address}/{}", address_bits(address))
}

/// 32 or 128.
fn address_bits(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn to_number(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address numbered `number` in the family of `like` (IPv4 numbers are cut to 32 bits).
fn from_number(like: IpAddr, number: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(number as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(number)),
    }
}

impl World {
    /// A world with one space, the default.
    pub fn new(prefix: &str, default_space: &str, cidr: &str) -> Result<Self, WorldError> {
        let mut world = World {
            prefix: prefix.to_owned(),
            default_space: default_space.to_owned(),
            network_latency_ms: 20,
            quorum_timeout_ms: 3000,
            update_status_interval_s: 300,
            ..World::default()
        };
        world.add_space(default_space, cidr)?;
        Ok(world)
    }

    /// The cloud namespace of this model: every space's bridge lives there.
    pub fn net_namespace(&self) -> String {
        format!("jsim-{}-net", self.prefix)
    }

    /// The client's namespace: where `juju-sim`'s API client runs, with one NIC in the
    /// default space (a client-facing network, like a user's laptop on the cloud's LAN).
    pub fn client_namespace(&self) -> String {
        format!("jsim-{}-client", self.prefix)
    }

    /// Machine `id`'s namespace.
    pub fn machine_namespace(&self, id: u32) -> String {
        format!("jsim-{}-m{id}", self.prefix)
    }

    /// Adds a space for `cidr` (which must not overlap another space's subnet).
    pub fn add_space(&mut self, name: &str, cidr: &str) -> Result<&Space, WorldError> {
        if self.spaces.contains_key(name) {
            return Err(WorldError::SpaceExists(name.to_owned()));
        }
        let (network, prefix) = parse_subnet(cidr)?;
        let candidate = Space {
            network,
            prefix,
            bridge: format!("br{}", self.spaces.len()),
        };
        for (other_name, other) in &self.spaces {
            let (a0, a1) = candidate.range();
            let (b0, b1) = other.range();
            let same_family = network.is_ipv4() == other.network.is_ipv4();
            if same_family && a0 <= b1 && b0 <= a1 {
                return Err(WorldError::Overlap {
                    cidr: candidate.cidr(),
                    space: other_name.clone(),
                });
            }
        }
        Ok(self.spaces.entry(name.to_owned()).or_insert(candidate))
    }

    /// The lowest free address of `space` at or above host 10 + machine id, so a machine's
    /// first address is easy to read (machine 3 -> `.13`).
    pub fn free_address(&self, space: &str, machine: u32) -> Result<IpAddr, WorldError> {
        let subnet = self
            .spaces
            .get(space)
            .ok_or_else(|| WorldError::UnknownSpace(space.to_owned()))?;
        let used: Vec<IpAddr> = self
            .machines
            .values()
            .flat_map(|m| m.nics.iter())
            .filter(|nic| nic.space == space)
            .map(|nic| nic.address)
            .collect();
        let last_host = subnet.size().saturating_sub(2);
        let start = u128::from(FIRST_HOST + machine);
        let first = u128::from(FIRST_HOST);
        (start..=last_host)
            .chain(first..start.min(last_host + 1))
            .map(|host| subnet.host(host))
            .find(|address| !used.contains(address))
            .ok_or_else(|| WorldError::SpaceFull(space.to_owned()))
    }

    /// Adds a NIC on `space` to machine `id` and returns it.
    pub fn add_nic(&mut self, id: u32, space: &str) -> Result<Nic, WorldError> {
        let address = self.free_address(space, id)?;
        let machine = self
            .machines
            .get_mut(&id)
            .ok_or_else(|| WorldError::UnknownMachine(id.to_string()))?;
        let index = machine.nics.len();
        // The MAC ends with the address's last three bytes (unique within a space).
        let bytes = to_number(address).to_be_bytes();
        let nic = Nic {
            name: format!("eth{index}"),
            space: space.to_owned(),
            address,
            mac: format!(
                "00:16:3e:{:02x}:{:02x}:{:02x}",
                bytes[13], bytes[14], bytes[15]
            ),
        };
        machine.nics.push(nic.clone());
        Ok(nic)
    }

    /// Adds a machine with one NIC per space (every space's subnet reaches every machine, as
    /// on a MAAS whose machines sit on every VLAN) and returns its id.
    pub fn add_machine(&mut self) -> Result<u32, WorldError> {
        let id = self.next_machine;
        self.next_machine += 1;
        self.machines.insert(id, Machine::default());
        let mut spaces: Vec<String> = self.spaces.keys().cloned().collect();
        // The default space's NIC is eth0.
        spaces.sort_by_key(|s| s != &self.default_space);
        for space in spaces {
            if let Err(error) = self.add_nic(id, &space) {
                self.machines.remove(&id);
                return Err(error);
            }
        }
        Ok(id)
    }

    /// Adds a workload machine with one NIC per space of `spaces` (the default space when
    /// empty), in that order, and returns its id. An unknown space or a repeated one is
    /// refused before anything changes.
    pub fn add_workload_machine(&mut self, spaces: &[String]) -> Result<u32, WorldError> {
        let id = self.next_machine;
        self.add_workload_machine_as(id, spaces)
    }

    /// Checks `spaces` for a workload machine (the default space when empty): each known,
    /// none repeated. Returns the spaces it gets.
    pub fn workload_spaces(&self, spaces: &[String]) -> Result<Vec<String>, WorldError> {
        let spaces: Vec<String> = if spaces.is_empty() {
            vec![self.default_space.clone()]
        } else {
            spaces.to_vec()
        };
        for (i, space) in spaces.iter().enumerate() {
            if !self.spaces.contains_key(space) {
                return Err(WorldError::UnknownSpace(space.clone()));
            }
            if spaces[..i].contains(space) {
                return Err(WorldError::RepeatedSpace(space.clone()));
            }
        }
        Ok(spaces)
    }

    /// Reserves `count` machine ids for machines requested from the controller (the
    /// provisioner starts them later, under those ids).
    pub fn reserve_machine_ids(&mut self, count: usize) -> Vec<u32> {
        let ids: Vec<u32> = (0..count)
            .map(|i| self.next_machine + u32::try_from(i).unwrap_or(u32::MAX))
            .collect();
        self.next_machine += u32::try_from(count).unwrap_or(u32::MAX);
        ids
    }

    /// Adds workload machine `id` (a reserved id, or the next) with one NIC per space of
    /// `spaces` (see [`Self::workload_spaces`]).
    pub fn add_workload_machine_as(
        &mut self,
        id: u32,
        spaces: &[String],
    ) -> Result<u32, WorldError> {
        if self.machines.contains_key(&id) {
            return Err(WorldError::MachineExists(id));
        }
        let spaces = self.workload_spaces(spaces)?;
        self.machines.insert(
            id,
            Machine {
                workload: true,
                ..Machine::default()
            },
        );
        for space in &spaces {
            if let Err(error) = self.add_nic(id, space) {
                self.machines.remove(&id);
                return Err(error);
            }
        }
        self.next_machine = self.next_machine.max(id + 1);
        Ok(id)
    }

    /// The ids of the controller machines (every machine but the workload ones).
    pub fn controller_machines(&self) -> Vec<u32> {
        self.machines
            .iter()
            .filter(|(_, machine)| !machine.workload)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The ids of the workload machines.
    pub fn workload_machines(&self) -> Vec<u32> {
        self.machines
            .iter()
            .filter(|(_, machine)| machine.workload)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The space `app`'s `endpoint` is bound to, or `None` when it is unbound.
    pub fn binding(&self, app: &str, endpoint: &str) -> Option<&str> {
        let bindings = &self.apps.get(app)?.bindings;
        bindings
            .get(endpoint)
            .or_else(|| bindings.get(""))
            .map(String::as_str)
            .filter(|space| !space.is_empty())
    }

    /// What `network-get <endpoint>` answers for a unit of `app` on machine `id`: every NIC
    /// when the endpoint is unbound, only the bound space's NICs when it is bound. Juju's
    /// shape: the subnet CIDR per address, `/32` egress subnets, lists omitted when empty.
    pub fn network_info(&self, id: u32, app: &str, endpoint: &str) -> NetworkInfo {
        let mut info = NetworkInfo::default();
        let Some(machine) = self.machines.get(&id) else {
            return info;
        };
        let bound = self.binding(app, endpoint);
        for nic in &machine.nics {
            if bound.is_some_and(|space| space != nic.space) {
                continue;
            }
            let cidr = self
                .spaces
                .get(&nic.space)
                .map_or_else(|| host_cidr(nic.address), Space::cidr);
            info.bind_addresses.push(Interface {
                mac_address: nic.mac.clone(),
                interface_name: nic.name.clone(),
                addresses: vec![InterfaceAddress {
                    hostname: String::new(),
                    value: nic.address.to_string(),
                    cidr,
                }],
            });
            info.ingress_addresses.push(nic.address.to_string());
            info.egress_subnets.push(host_cidr(nic.address));
        }
        info
    }

    /// `network-get` answers for every endpoint of `app` on machine `id`.
    pub fn unit_network(&self, id: u32, app: &str) -> BTreeMap<String, Value> {
        let endpoints = self
            .apps
            .get(app)
            .map(|spec| spec.endpoints.clone())
            .unwrap_or_default();
        endpoints
            .into_iter()
            .map(|endpoint| {
                let info = self.network_info(id, app, &endpoint).to_value();
                (endpoint, info)
            })
            .collect()
    }

    /// The units of `app` not leaving, in unit-number order.
    pub fn app_units(&self, app: &str) -> Vec<String> {
        self.live_units()
            .into_iter()
            .filter(|unit| crate::model::State::app_of(unit) == app)
            .collect()
    }

    /// The units not leaving, in unit-number order.
    pub fn live_units(&self) -> Vec<String> {
        let mut units: Vec<String> = self
            .units
            .iter()
            .filter(|(_, u)| !u.dying)
            .map(|(name, _)| name.clone())
            .collect();
        units.sort_by_key(|name| unit_number(name));
        units
    }

    /// The unit on machine `id`, if any.
    pub fn unit_on(&self, id: u32) -> Option<&str> {
        self.units
            .iter()
            .find(|(_, u)| u.machine == id)
            .map(|(name, _)| name.as_str())
    }

    /// Appends `hook` to `unit`'s queue unless the very same hook is already waiting there
    /// (Juju coalesces repeated changes: the hook sees the latest state when it runs).
    pub fn enqueue(&mut self, unit: &str, hook: QueuedHook) {
        if let Some(queue) = self.units.get_mut(unit) {
            if !queue.queue.contains(&hook) {
                queue.queue.push_back(hook);
            }
        }
    }
}

/// The unit number of `controller/12` (12); unparsable names sort last.
pub fn unit_number(unit: &str) -> u32 {
    unit.rsplit_once('/')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(u32::MAX)
}

/// The hooks a new unit runs before it enters relation scope (section 1b, and Juju's uniter):
/// install, `-relation-created` for each of its relations, leader-elected or
/// leader-settings-changed, config-changed, start. The `-joined` hooks come once it has
/// started ([`scope_hooks`]).
pub fn new_unit_hooks(relations: &[String], leader: bool) -> Vec<QueuedHook> {
    let mut hooks = vec![QueuedHook::plain("install")];
    for relation in relations {
        hooks.push(QueuedHook::relation("created", relation, None));
    }
    hooks.push(QueuedHook::plain(if leader {
        "leader-elected"
    } else {
        "leader-settings-changed"
    }));
    hooks.push(QueuedHook::plain("config-changed"));
    hooks.push(QueuedHook::plain("start"));
    hooks
}

/// What a unit runs for `other` when either of them enters the relation's scope: joined,
/// then changed, with `other` as the remote unit.
pub fn peer_joined_hooks(relation: &str, other: &str) -> Vec<QueuedHook> {
    vec![
        QueuedHook::relation("joined", relation, Some(other)),
        QueuedHook::relation("changed", relation, Some(other)),
    ]
}

/// What a leaving unit runs: for each of its relations `-departed` for each remaining unit
/// in scope and `-broken`; then `stop`, `remove`.
pub fn leaving_hooks(relations: &[(String, Vec<String>)], leaver: &str) -> Vec<QueuedHook> {
    let mut hooks = Vec::new();
    for (relation, remaining) in relations {
        hooks.extend(
            remaining
                .iter()
                .map(|other| QueuedHook::departed(relation, other, leaver)),
        );
        hooks.push(QueuedHook::relation("broken", relation, None));
    }
    hooks.push(QueuedHook::plain("stop"));
    hooks.push(QueuedHook::plain("remove"));
    hooks
}

/// The new leader when `leader` (if any) is gone: the lowest-numbered live unit.
pub fn elect_leader(live_units: &[String]) -> Option<String> {
    live_units.iter().min_by_key(|u| unit_number(u)).cloned()
}

/// How many voters the dbaccessors' role layer keeps for `members` nodes (3 at most, odd).
pub fn expected_voters(members: usize) -> usize {
    match members {
        0 => 0,
        1 | 2 => 1,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_has_host_2_of_the_default_space_which_no_machine_gets() {
        let mut world = World::new("abc123", "alpha", "10.131.0.0/28").expect("world");
        assert_eq!(world.client_namespace(), "jsim-abc123-client");
        let alpha = world.spaces["alpha"].clone();
        assert_eq!(alpha.client_address(), IpAddr::from([10, 131, 0, 2]));
        // A /28 holds hosts 10 to 14 for machines: every one handed out, then none.
        let mut given = Vec::new();
        while let Ok(id) = world.add_machine() {
            given.push(world.machines[&id].nics[0].address);
        }
        assert_eq!(given.len(), 5, "{given:?}");
        assert!(!given.contains(&alpha.client_address()), "{given:?}");
        assert!(!given.contains(&alpha.gateway()), "{given:?}");
    }

    #[test]
    fn workload_machines_get_nics_in_the_spaces_asked_for() {
        let mut world = World::new("abc123", "alpha", "10.131.0.0/24").expect("world");
        world.add_space("beta", "10.132.0.0/24").expect("beta");
        let controller = world.add_machine().expect("controller");
        let plain = world.add_workload_machine(&[]).expect("default space");
        let both = world
            .add_workload_machine(&["beta".into(), "alpha".into()])
            .expect("two spaces");
        let spaces = |id: u32| -> Vec<String> {
            world.machines[&id]
                .nics
                .iter()
                .map(|n| n.space.clone())
                .collect()
        };
        assert_eq!(spaces(plain), ["alpha"]);
        assert_eq!(spaces(both), ["beta", "alpha"]);
        assert_eq!(world.controller_machines(), [controller]);
        assert_eq!(world.workload_machines(), [plain, both]);
        let next = world.next_machine;
        assert_eq!(
            world
                .add_workload_machine(&["gamma".into()])
                .map_err(|e| e.to_string()),
            Err("space \"gamma\" not found".into())
        );
        assert!(world
            .add_workload_machine(&["beta".into(), "beta".into()])
            .is_err());
        assert_eq!(world.next_machine, next, "a refused machine takes no id");
        assert_eq!(world.machines.len(), 3);
    }

    #[test]
    fn enable_ha_target_table() {
        let check = |current: usize, requested: usize, expected: Result<usize, &str>| {
            let got = enable_ha_target(current, requested).map_err(|e| e.to_string());
            assert_eq!(
                got,
                expected.map_err(str::to_owned),
                "{current} -n {requested}"
            );
        };
        check(1, 0, Ok(3));
        check(1, 3, Ok(3));
        check(3, 0, Ok(3));
        check(3, 5, Ok(5));
        check(4, 0, Ok(5));
        check(5, 7, Ok(7));
        check(
            1,
            2,
            Err("number of controllers must be odd and non-negative"),
        );
        check(
            3,
            4,
            Err("number of controllers must be odd and non-negative"),
        );
        check(7, 9, Err("controller count is too large (allowed 7)"));
        check(
            5,
            3,
            Err(
                "failed to enable HA with 3 controllers: cannot remove controllers with \
                 enable-ha, use remove-machine and chose the controller(s) to remove",
            ),
        );
    }

    #[test]
    fn subnet_table() {
        let check = |cidr: &str, expected: Option<(&str, u8)>| {
            let got = parse_subnet(cidr).ok().map(|(a, p)| (a.to_string(), p));
            assert_eq!(got, expected.map(|(a, p)| (a.to_owned(), p)), "{cidr}");
        };
        check("10.131.0.0/24", Some(("10.131.0.0", 24)));
        check("10.131.0.7/24", Some(("10.131.0.0", 24)));
        check("10.0.0.0/8", Some(("10.0.0.0", 8)));
        check("10.0.0.0/31", None);
        check("10.0.0.0", None);
        check("fd00:1::/64", Some(("fd00:1::", 64)));
        check("fd00:1::7/64", Some(("fd00:1::", 64)));
        check("fd00::/48", None);
        check("10.0.0.0/x", None);
    }

    fn world() -> World {
        let mut world = World::new("abc123", "alpha", "10.131.0.0/24").expect("valid space");
        world
            .add_space("internal", "10.132.0.0/24")
            .expect("valid space");
        world
    }

    #[test]
    fn spaces_must_not_overlap() {
        let mut world = world();
        assert_eq!(
            world.add_space("other", "10.131.0.128/25").map(|_| ()),
            Err(WorldError::Overlap {
                cidr: "10.131.0.128/25".into(),
                space: "alpha".into()
            })
        );
        assert_eq!(
            world.add_space("alpha", "10.140.0.0/24").map(|_| ()),
            Err(WorldError::SpaceExists("alpha".into()))
        );
        assert_eq!(
            world.add_space("wide", "10.0.0.0/8").map(|_| ()),
            Err(WorldError::Overlap {
                cidr: "10.0.0.0/8".into(),
                space: "alpha".into()
            })
        );
        let bridge = world
            .add_space("third", "192.168.5.0/24")
            .map(|s| s.bridge.clone());
        assert_eq!(bridge, Ok("br2".into()));
    }

    #[test]
    fn machines_get_one_nic_per_space_default_first() {
        let mut world = world();
        let id = world.add_machine().expect("room");
        let nics: Vec<(String, String, String)> = world.machines[&id]
            .nics
            .iter()
            .map(|n| (n.name.clone(), n.space.clone(), n.address.to_string()))
            .collect();
        assert_eq!(
            nics,
            vec![
                ("eth0".into(), "alpha".into(), "10.131.0.10".into()),
                ("eth1".into(), "internal".into(), "10.132.0.10".into()),
            ]
        );
        let second = world.add_machine().expect("room");
        assert_eq!(
            world.machines[&second].nics[0].address.to_string(),
            "10.131.0.11"
        );
        // A second NIC in the same space takes the next free host.
        let extra = world.add_nic(second, "alpha").expect("room");
        assert_eq!(
            (extra.name.as_str(), extra.address.to_string()),
            ("eth2", "10.131.0.12".into())
        );
        assert_eq!(
            world.add_nic(9, "alpha"),
            Err(WorldError::UnknownMachine("9".into()))
        );
        assert_eq!(
            world.add_nic(second, "nowhere"),
            Err(WorldError::UnknownSpace("nowhere".into()))
        );
    }

    #[test]
    fn network_info_follows_the_binding() {
        let mut world = world();
        let id = world.add_machine().expect("room");
        world.apps.insert(
            APP.into(),
            AppSpec {
                endpoints: vec![PEER_ENDPOINT.into(), "juju-info".into()],
                ..AppSpec::default()
            },
        );
        let addresses =
            |world: &World| world.network_info(id, APP, PEER_ENDPOINT).ingress_addresses;
        assert_eq!(addresses(&world), vec!["10.131.0.10", "10.132.0.10"]);
        fn bindings(world: &mut World) -> &mut BTreeMap<String, String> {
            &mut world.apps.get_mut(APP).expect("app").bindings
        }
        bindings(&mut world).insert("".into(), "alpha".into());
        assert_eq!(addresses(&world), vec!["10.131.0.10"]);
        bindings(&mut world).insert(PEER_ENDPOINT.into(), "internal".into());
        assert_eq!(addresses(&world), vec!["10.132.0.10"]);
        // Every endpoint has an answer; one without its own binding follows the default.
        let network = world.unit_network(id, APP);
        assert_eq!(
            network.keys().collect::<Vec<_>>(),
            vec!["db-cluster", "juju-info"]
        );
        assert_eq!(
            network["juju-info"]["ingress-addresses"],
            serde_json::json!(["10.131.0.10"])
        );
        let json = world
            .network_info(id, APP, PEER_ENDPOINT)
            .to_value()
            .to_string();
        assert_eq!(
            json,
            r#"{"bind-addresses":[{"addresses":[{"cidr":"10.132.0.0/24","hostname":"","value":"10.132.0.10"}],"interface-name":"eth1","mac-address":"00:16:3e:84:00:0a"}],"egress-subnets":["10.132.0.10/32"],"ingress-addresses":["10.132.0.10"]}"#
        );
        // A space with no NIC on the machine: Juju omits every list.
        bindings(&mut world).insert(PEER_ENDPOINT.into(), "empty".into());
        assert_eq!(
            world
                .network_info(id, APP, PEER_ENDPOINT)
                .to_value()
                .to_string(),
            "{}"
        );
    }

    #[test]
    fn hook_sequences() {
        let names =
            |hooks: Vec<QueuedHook>| hooks.iter().map(QueuedHook::label).collect::<Vec<_>>();
        assert_eq!(
            names(new_unit_hooks(
                &["db-cluster:0".into(), "extra:1".into()],
                false
            )),
            vec![
                "install",
                "db-cluster-relation-created",
                "extra-relation-created",
                "leader-settings-changed",
                "config-changed",
                "start",
            ]
        );
        assert_eq!(
            names(peer_joined_hooks("db-cluster:0", "controller/0")),
            vec![
                "db-cluster-relation-joined(controller/0)",
                "db-cluster-relation-changed(controller/0)",
            ]
        );
        assert_eq!(
            names(leaving_hooks(
                &[("db-cluster:0".into(), vec!["controller/0".into()])],
                "controller/2",
            )),
            vec![
                "db-cluster-relation-departed(controller/0)",
                "db-cluster-relation-broken",
                "stop",
                "remove",
            ]
        );
        let departed = QueuedHook::departed("db-cluster:0", "controller/2", "controller/2");
        assert_eq!(
            departed.invocation(),
            Invocation::departed("db-cluster:0", "controller/2", "controller/2")
        );
    }

    #[test]
    fn enqueue_coalesces_waiting_duplicates() {
        let mut world = world();
        world
            .units
            .insert("controller/0".into(), UnitQueue::default());
        let changed = QueuedHook::relation("changed", "db-cluster:0", Some("controller/1"));
        world.enqueue("controller/0", changed.clone());
        world.enqueue("controller/0", QueuedHook::plain("config-changed"));
        world.enqueue("controller/0", changed.clone());
        world.enqueue("controller/0", QueuedHook::plain("config-changed"));
        assert_eq!(world.units["controller/0"].queue.len(), 2);
    }

    #[test]
    fn leaders_and_voters() {
        assert_eq!(
            elect_leader(&["controller/10".into(), "controller/2".into()]),
            Some("controller/2".into())
        );
        assert_eq!(elect_leader(&[]), None);
        let check = |members: usize, voters: usize| assert_eq!(expected_voters(members), voters);
        check(1, 1);
        check(2, 1);
        check(3, 3);
        check(7, 3);
    }
}
