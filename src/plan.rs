//! The decision every handled hook makes: from what the hook observed, which relation keys to
//! write, which bind-address map to put in controller.conf, and which status to show. Every
//! hook converges to the same state, so a missed event is repaired by the next one.
//!
//! **Membership changes only on positive knowledge.** An entry leaves the published map and
//! controller.conf only when its controller's unit has left the relation (it is no longer in
//! `relation-list`). Anything the hook could not tell (an invalid option, an unusable or
//! ambiguous own address, a peer bag that is empty, half written or invalid) keeps the last
//! known entry: the leader starts from the map already in the app bag, so a new leader also
//! continues its predecessor's map. To know which entry a departed unit owned, the leader
//! records unit -> agent id in the app bag under [`AGENT_IDS_KEY`]; an entry no record names
//! (a map published by an older charm) goes only once every unit in the relation has a known
//! agent id and none of them is that entry's.
//!
//! **Architecture Invariant:** no IO and no failure: `plan` is a total function of its input.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use controller_contract::conf::{
    is_agent_id, is_canonical_agent_id, BindAddresses, ControllerConf,
};

use crate::address::{self, Choice, NetworkError, Scope};
use crate::config::ConfigError;
use crate::status::{Level, Status, StatusKind};

/// Unit bag key: this unit's Dqlite bind IP.
pub const BIND_ADDRESS_KEY: &str = "db-bind-address";
/// Unit bag key: this unit's controller agent id.
pub const AGENT_ID_KEY: &str = "agent-id";
/// App bag key: the leader's JSON map of agent id to bind IP.
pub const BIND_ADDRESSES_KEY: &str = "db-bind-addresses";
/// The unit-bag key each unit publishes its node's last log position under (`term/index`),
/// which `recover-cluster` compares.
pub const LOG_POSITION_KEY: &str = "db-log-position";
/// App bag key: the leader's JSON record of unit name to agent id, so that the entry of a
/// unit that left the relation can be told apart from one whose bag is momentarily unusable.
pub const AGENT_IDS_KEY: &str = "db-agent-ids";

/// A relation bag.
pub type Bag = BTreeMap<String, String>;

/// What the hook saw, as plain values.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// This unit's name.
    pub unit: String,
    /// Whether this unit leads (`is-leader`).
    pub is_leader: bool,
    /// Whether this hook is `install`, which never writes controller.conf: the agent may not
    /// have written its own keys yet, and the relation has told this unit nothing.
    pub install: bool,
    /// The validated options, or the bad one.
    pub config: Result<(), ConfigError>,
    /// The address choice, or why the binding's addresses could not be read.
    /// `None` when the options are invalid (the choice depends on them).
    pub choice: Option<Result<Choice, NetworkError>>,
    /// The agent id from the reload socket, or why it is unknown (a waiting message).
    /// `None` when the options are invalid (the socket path depends on them).
    pub agent_id: Option<Result<String, String>>,
    /// The peer relation, when there is one and it is not being broken.
    pub relation: Option<PeerView>,
    /// What this hook does to the relation.
    pub membership: Membership,
    /// controller.conf, read when the agent id is known.
    pub conf: Option<ConfView>,
    /// The charm's own dbaccessor service (`run-dbaccessor`), when the options are valid.
    pub service: Option<ServiceView>,
    /// The local node's log position (`term/index`), read only when this hook publishes it
    /// ([`wants_log_position`]) and the dbaccessor answered.
    pub log_position: Option<String>,
}

/// controller.conf as it is on disk.
#[derive(Debug, Clone, PartialEq)]
pub enum OnDisk {
    /// No file (or an empty one, which holds nothing to keep).
    Missing,
    /// A valid file.
    Parsed(ControllerConf),
    /// A file the agent could not read either (torn, not text, not a regular file, too
    /// big), with why: left untouched for the operator.
    Unreadable(String),
}

/// The `run-dbaccessor` systemd service as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    /// What the option asks for.
    pub wanted: bool,
    /// The unit file installed now (`None`: there is none).
    pub installed: Option<String>,
    /// When wanted: the unit file this controller should have, or why it cannot have one
    /// (systemd not running, the binary missing, ...).
    pub rendered: Option<Result<String, String>>,
}

/// What to do to the `run-dbaccessor` service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceChange {
    /// Write this unit file, reload systemd, enable and restart the service.
    Install(String),
    /// Disable and stop the service, remove its unit file.
    Remove,
}

/// This unit's part in the peer relation during this hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// A member (every hook except the two below).
    Member,
    /// This unit is leaving: `-departed` with itself as the departing unit.
    Departing,
    /// The relation is being removed (`-broken`).
    Broken,
}

/// The peer relation's bags as this hook sees them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerView {
    /// The relation id (`db-cluster:0`).
    pub id: String,
    /// This unit's bag.
    pub own: Bag,
    /// The application bag.
    pub app: Bag,
    /// The other units' bags, by unit name: exactly the units `relation-list` names (a
    /// departed unit, and during `-departed` the departing one, is not listed).
    pub peers: BTreeMap<String, Bag>,
}

/// controller.conf: where it is and what is in it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfView {
    /// The path, for messages.
    pub path: String,
    /// The content.
    pub on_disk: OnDisk,
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Keys to set in this unit's bag (an empty value deletes), only those that change.
    pub unit_writes: Bag,
    /// Keys to set in the application bag (leader only), only those that change.
    pub app_writes: Bag,
    /// The controller.conf to write, when its bind addresses change.
    pub conf: Option<ControllerConf>,
    /// The status to show.
    pub status: Status,
    /// Lines for `juju-log`.
    pub log: Vec<(Level, String)>,
    /// The change to the `run-dbaccessor` service, if any.
    pub service: Option<ServiceChange>,
}

/// Decides the hook's writes and status.
pub fn plan(observed: &Observed) -> Plan {
    let mut plan = plan_membership(observed);
    if let Some(view) = &observed.service {
        let (change, status) = plan_service(view);
        plan.service = change;
        if let Some(status) = status {
            plan.status = status;
        }
    }
    publish_log_position(observed, &mut plan);
    plan
}

/// The `run-dbaccessor` service's change and, when the option cannot be honoured, the
/// status that replaces the hook's.
pub fn plan_service(view: &ServiceView) -> (Option<ServiceChange>, Option<Status>) {
    match (&view.installed, &view.rendered) {
        (Some(_), _) if !view.wanted => (Some(ServiceChange::Remove), None),
        (_, _) if !view.wanted => (None, None),
        (_, Some(Err(why))) => (None, Some(service_blocked(why))),
        (installed, Some(Ok(unit))) if installed.as_ref() != Some(unit) => {
            (Some(ServiceChange::Install(unit.clone())), None)
        }
        _ => (None, None),
    }
}

/// The status for a `run-dbaccessor` option that cannot be honoured.
pub fn service_blocked(why: &str) -> Status {
    Status::new(StatusKind::Blocked, format!("run-dbaccessor: {why}"))
}

/// Whether a hook publishes the node's log position (`db-log-position`), so that
/// `recover-cluster` on another unit can compare logs after this machine is gone.
///
/// Publishing it from every hook would never settle: every write to the database moves the
/// position, and every publication fires `relation-changed` on each peer, whose hook would
/// publish its own moved position in turn. So only `update-status` publishes while a leader
/// is known (every 5 minutes; the peers' hooks it fires do not publish back), and any hook
/// publishes while no leader is known: without a leader the log cannot grow, the positions
/// stand still and the exchange settles, which is exactly when `recover-cluster` needs them.
pub fn wants_log_position(update_status: bool, leader_known: bool) -> bool {
    !leader_known || update_status
}

/// Adds the observed log position to this unit's bag when it differs from the published
/// one. A dbaccessor that did not answer changes nothing.
fn publish_log_position(observed: &Observed, plan: &mut Plan) {
    let (Some(relation), Some(position)) = (&observed.relation, &observed.log_position) else {
        return;
    };
    if observed.membership != Membership::Member {
        return;
    }
    if relation.own.get(LOG_POSITION_KEY) != Some(position) {
        plan.unit_writes
            .insert(LOG_POSITION_KEY.to_owned(), position.clone());
    }
}

/// A leader that is leaving (its own `-departed`: positive knowledge of its own departure)
/// publishes the map without itself, so that the remaining controllers drop it now, from
/// this hook, rather than once a new leader has been elected and has run its own hooks (in
/// Juju, a removed leader's lease is revoked only after its hooks ran). Nothing else
/// changes: a map it cannot read, or one that would be left empty, is not touched, and a
/// non-leader leaves the map to the leader.
fn depart_as_leader(observed: &Observed, plan: &mut Plan) {
    let (true, Some(relation), Some(Ok(id))) =
        (observed.is_leader, &observed.relation, &observed.agent_id)
    else {
        return;
    };
    let Some(Ok(mut map)) = relation.app.get(BIND_ADDRESSES_KEY).map(|t| parse_map(t)) else {
        return;
    };
    if map.remove(id).is_none() || map.is_empty() {
        return;
    }
    plan.app_writes
        .insert(BIND_ADDRESSES_KEY.to_owned(), render_map(&map));
    plan.log.push((
        Level::Info,
        format!(
            "leaving as the leader: published {BIND_ADDRESSES_KEY} without controller {id}, \
             so that the others drop it now rather than after a new leader is elected"
        ),
    ));
}

/// Decides the relation writes, controller.conf and the status from the membership.
fn plan_membership(observed: &Observed) -> Plan {
    let mut plan = Plan {
        unit_writes: Bag::new(),
        app_writes: Bag::new(),
        service: None,
        conf: None,
        status: Status::new(StatusKind::Active, ""),
        log: Vec::new(),
    };
    match observed.membership {
        Membership::Departing => {
            plan.status = Status::new(
                StatusKind::Maintenance,
                "leaving the db-cluster relation; the remaining controllers drop this one",
            );
            depart_as_leader(observed, &mut plan);
            return plan;
        }
        Membership::Broken => {
            plan.status = Status::new(
                StatusKind::Maintenance,
                "the db-cluster relation is gone; this controller is being removed",
            );
            return plan;
        }
        Membership::Member => {}
    }

    // This unit's address: a unique one is published, anything else removes a stale one.
    let address = match &observed.choice {
        Some(Ok(choice)) => choice.address(),
        _ => None,
    };
    let agent_id = match &observed.agent_id {
        Some(Ok(id)) => Some(id.clone()),
        _ => None,
    };
    let Some(relation) = &observed.relation else {
        plan.status = blocking_status(observed).unwrap_or_else(|| {
            Status::new(
                StatusKind::Waiting,
                "waiting for the db-cluster peer relation",
            )
        });
        return plan;
    };
    let mut own = relation.own.clone();
    let mut set_own = |key: &str, value: String, plan: &mut Plan| {
        if own.get(key).map(String::as_str).unwrap_or_default() != value {
            plan.unit_writes.insert(key.to_owned(), value.clone());
            if value.is_empty() {
                own.remove(key);
            } else {
                own.insert(key.to_owned(), value);
            }
        }
    };
    set_own(
        BIND_ADDRESS_KEY,
        address.map(|a| a.to_string()).unwrap_or_default(),
        &mut plan,
    );
    if let Some(id) = &agent_id {
        set_own(AGENT_ID_KEY, id.clone(), &mut plan);
    }
    if let Some(old) = relation
        .own
        .get(BIND_ADDRESS_KEY)
        .filter(|_| address.is_none())
    {
        plan.log.push((
            Level::Info,
            format!("removed the stale {BIND_ADDRESS_KEY} {old} from this unit's bag"),
        ));
    }

    let members = Members::new(observed, relation, &own);

    // The map every controller must agree on: the leader continues the published one.
    let map: Result<BindAddresses, String> = if observed.is_leader {
        let map = lead(observed, relation, &members, &mut plan.log);
        let text = render_map(&map);
        if relation.app.get(BIND_ADDRESSES_KEY) != Some(&text) {
            plan.app_writes.insert(BIND_ADDRESSES_KEY.to_owned(), text);
        }
        let record = members.record();
        let record_text = (!record.is_empty()).then(|| render_record(&record));
        if relation.app.get(AGENT_IDS_KEY) != record_text.as_ref() {
            plan.app_writes
                .insert(AGENT_IDS_KEY.to_owned(), record_text.unwrap_or_default());
        }
        Ok(map)
    } else {
        match relation.app.get(BIND_ADDRESSES_KEY) {
            None => Err("waiting for the leader to publish db-bind-addresses".to_owned()),
            Some(text) => parse_map(text).map_err(|e| {
                format!(
                    "waiting for the leader to rewrite db-bind-addresses, which is not valid ({e})"
                )
            }),
        }
    };

    // controller.conf: the published map plus every entry of the file whose unit has not
    // left, written only when it changes, never empty and never by install.
    let mut conf_problem = None;
    if let (Ok(map), Some(conf), false) = (&map, &observed.conf, observed.install) {
        let current = match &conf.on_disk {
            OnDisk::Missing => Some(ControllerConf::default()),
            OnDisk::Parsed(current) => Some(current.clone()),
            OnDisk::Unreadable(_) => None,
        };
        if let Some(current) = current {
            let target = conf_map(map, current.bind_addresses(), &members, &mut plan.log);
            if !target.is_empty()
                && (!current.has_bind_addresses() || current.bind_addresses() != &target)
            {
                let mut next = current;
                let text = render_map(&target);
                match next.set_bind_addresses(target) {
                    Ok(()) => {
                        plan.log.push((
                            Level::Info,
                            format!("writing {} with db-bind-addresses {text}", conf.path),
                        ));
                        plan.conf = Some(next);
                    }
                    Err(error) => {
                        conf_problem = Some(Status::new(
                            StatusKind::Blocked,
                            format!("cannot update {}: {error}", conf.path),
                        ));
                    }
                }
            }
        }
    }

    plan.status = if let Some(status) = blocking_status(observed).or(conf_problem) {
        status
    } else if let Some(Err(reason)) = &observed.agent_id {
        Status::new(StatusKind::Waiting, reason.clone())
    } else if let Err(reason) = &map {
        Status::new(StatusKind::Waiting, reason.clone())
    } else {
        let map = map.as_ref().expect("the error case is handled above");
        let id = agent_id.unwrap_or_default();
        let address = address.map(|a| a.to_string()).unwrap_or_default();
        match map.get(&id) {
            Some(published) if published.to_string() == address => Status::new(
                StatusKind::Active,
                format!(
                    "db bind address {address} ({} controller{})",
                    map.len(),
                    if map.len() == 1 { "" } else { "s" }
                ),
            ),
            _ => Status::new(
                StatusKind::Waiting,
                format!(
                    "waiting for the leader to publish db bind address {address} for controller {id}"
                ),
            ),
        }
    };
    plan
}

/// Every unit in the relation (this one and the listed ones) with its agent id when known,
/// and the leader's record: what tells a departed controller from one merely unknown.
struct Members<'a> {
    /// Unit name -> its agent id: from its bag when canonical (this unit: the reload
    /// socket's answer first), else from the leader's record, else unknown.
    ids: BTreeMap<&'a str, Option<String>>,
    /// The leader's record (unit -> agent id) as published.
    record: BTreeMap<String, String>,
}

impl<'a> Members<'a> {
    fn new(observed: &'a Observed, relation: &'a PeerView, own: &Bag) -> Self {
        let record = parse_record(relation.app.get(AGENT_IDS_KEY));
        let from_bag = |bag: &Bag| {
            bag.get(AGENT_ID_KEY)
                .filter(|id| is_canonical_agent_id(id))
                .cloned()
        };
        let from_record = |unit: &str| record.get(unit).cloned();
        let mut ids = BTreeMap::new();
        let own_id = match &observed.agent_id {
            Some(Ok(id)) if is_canonical_agent_id(id) => Some(id.clone()),
            _ => from_bag(own).or_else(|| from_record(&observed.unit)),
        };
        ids.insert(observed.unit.as_str(), own_id);
        for (unit, bag) in &relation.peers {
            // A unit's agent id never changes (it is its machine's): when the bag and the
            // record disagree, the record stands and the bag's claim is refused (see `lead`).
            ids.insert(unit.as_str(), from_record(unit).or_else(|| from_bag(bag)));
        }
        // A unit the record does not name, claiming an agent id recorded for another unit
        // still in the relation, is not believed (and not recorded): its id is unknown.
        let disputed: Vec<&str> = ids
            .iter()
            .filter(|(unit, id)| {
                **unit != observed.unit
                    && !record.contains_key(**unit)
                    && id.as_ref().is_some_and(|id| {
                        record.iter().any(|(owner, recorded)| {
                            recorded == id && ids.contains_key(owner.as_str())
                        })
                    })
            })
            .map(|(unit, _)| *unit)
            .collect();
        for unit in disputed {
            ids.insert(unit, None);
        }
        Self { ids, record }
    }

    /// Why the controller `id` has left, when this hook knows it has: a unit in the
    /// relation is not it, and either the record names a unit that is no longer listed as
    /// its unit, or every unit in the relation has a known agent id.
    fn departed(&self, id: &str) -> Option<String> {
        if self.ids.values().any(|known| known.as_deref() == Some(id)) {
            return None;
        }
        if let Some((unit, _)) = self
            .record
            .iter()
            .find(|(unit, recorded)| *recorded == id && !self.ids.contains_key(unit.as_str()))
        {
            return Some(format!("its unit {unit} left the relation"));
        }
        self.ids
            .values()
            .all(Option::is_some)
            .then(|| "no unit in the relation is that controller".to_owned())
    }

    /// The record to publish: every unit in the relation whose agent id is known.
    fn record(&self) -> BTreeMap<String, String> {
        self.ids
            .iter()
            .filter_map(|(unit, id)| id.clone().map(|id| ((*unit).to_owned(), id)))
            .collect()
    }
}

/// The leader's map: the published one, less the controllers that left, with every valid
/// claim from the units' bags (this unit's own pending writes included). An invalid claim
/// (an agent id that is not canonical, an address that is not an IP or never a node's, an
/// agent id or an IP another unit has) is left out with a warning and never replaces the
/// entry already there.
fn lead(
    observed: &Observed,
    relation: &PeerView,
    members: &Members,
    log: &mut Vec<(Level, String)>,
) -> BindAddresses {
    // Without a usable published map (a lost or corrupted app bag), this controller's
    // controller.conf holds the last map it knew: start from that instead of nothing.
    let prior = match parse_map_lenient(relation.app.get(BIND_ADDRESSES_KEY), log) {
        Some(prior) => prior,
        None => match &observed.conf {
            Some(ConfView {
                on_disk: OnDisk::Parsed(conf),
                ..
            }) => conf.bind_addresses().clone(),
            _ => BindAddresses::new(),
        },
    };
    let mut map = prior.clone();
    for id in prior.keys() {
        if let Some(why) = members.departed(id) {
            log.push((
                Level::Info,
                format!("removing controller {id} from {BIND_ADDRESSES_KEY}: {why}"),
            ));
            map.remove(id);
        }
    }

    // Every claim: (unit, agent id, address). This unit claims only what it knows now.
    let mut claims: Vec<(&str, String, IpAddr)> = Vec::new();
    let own_claim = match (&observed.agent_id, &observed.choice) {
        (Some(Ok(id)), Some(Ok(choice))) => choice.address().map(|ip| (id.clone(), ip)),
        _ => None,
    };
    let mut claimed = BTreeSet::new();
    if let Some((id, ip)) = own_claim {
        if is_canonical_agent_id(&id) {
            claimed.insert(id.clone());
            claims.push((observed.unit.as_str(), id, ip));
        }
    }
    for (unit, bag) in &relation.peers {
        let (Some(id), Some(text)) = (bag.get(AGENT_ID_KEY), bag.get(BIND_ADDRESS_KEY)) else {
            // Half written or cleared: whatever is published for it stays.
            continue;
        };
        let ignore = |why: String| (Level::Warning, format!("ignoring {unit:?}: {why}"));
        if !is_canonical_agent_id(id) {
            log.push(ignore(format!("agent-id {id:?} is not a decimal agent id")));
            continue;
        }
        let Ok(ip) = text.parse::<IpAddr>() else {
            log.push(ignore(format!(
                "{BIND_ADDRESS_KEY} {text:?} is not an IP address"
            )));
            continue;
        };
        // An IPv4-mapped IPv6 address is its IPv4 address, as this unit's own choice is:
        // two spellings of one IP must collide below, not become two controllers.
        let ip = ip.to_canonical();
        if let Some(scope) = never_valid(ip) {
            log.push(ignore(format!(
                "{BIND_ADDRESS_KEY} {ip} is {scope}, never a node's address"
            )));
            continue;
        }
        if let Some(recorded) = members.record.get(unit).filter(|recorded| *recorded != id) {
            log.push(ignore(format!(
                "agent-id {id} differs from the agent id {recorded} recorded for it"
            )));
            continue;
        }
        if let Some((owner, _)) = members.record.iter().find(|(owner, recorded)| {
            *recorded == id && *owner != unit && members.ids.contains_key(owner.as_str())
        }) {
            log.push(ignore(format!(
                "agent id {id} is recorded for {owner:?}, which is still in the relation"
            )));
            continue;
        }
        if !claimed.insert(id.clone()) {
            log.push(ignore(format!(
                "agent id {id} is already claimed by another unit"
            )));
            continue;
        }
        claims.push((unit.as_str(), id.clone(), ip));
    }

    // Two controllers on one IP: a claim that would make it so is left out, until no new
    // claim collides (each round drops one at least, so this ends).
    loop {
        let mut holders: BTreeMap<IpAddr, Vec<&str>> = BTreeMap::new();
        let mut desired = map.clone();
        desired.extend(claims.iter().map(|(_, id, ip)| (id.clone(), *ip)));
        for (id, ip) in &desired {
            holders.entry(*ip).or_default().push(id);
        }
        let colliding: Vec<usize> = claims
            .iter()
            .enumerate()
            .filter(|(_, (_, id, ip))| map.get(id) != Some(ip) && holders[ip].len() > 1)
            .map(|(index, _)| index)
            .collect();
        if colliding.is_empty() {
            break;
        }
        for index in colliding.into_iter().rev() {
            let (unit, id, ip) = claims.remove(index);
            let others: Vec<&str> = holders[&ip]
                .iter()
                .copied()
                .filter(|other| *other != id)
                .collect();
            log.push((
                Level::Warning,
                format!(
                    "ignoring {unit:?}: {BIND_ADDRESS_KEY} {ip} of controller {id} is also \
                     controller {}'s",
                    others.join(", ")
                ),
            ));
        }
    }
    // A new cluster starts from one node: a dbaccessor without data bootstraps only from a
    // map that names itself alone and otherwise waits to join, so a first map naming several
    // new controllers would leave each of them waiting for the others. While the map names
    // no one, one claim (this controller's when it has one) comes alone; while it names
    // this controller alone and its controller.conf does not yet (install never writes it),
    // no other claim is added. The rest follow in the leader's next hook.
    let own_id = members.ids.get(observed.unit.as_str()).cloned().flatten();
    let conf_names_self = match (&observed.conf, &own_id) {
        (
            Some(ConfView {
                on_disk: OnDisk::Parsed(conf),
                ..
            }),
            Some(id),
        ) => conf.bind_addresses().contains_key(id),
        _ => false,
    };
    let only_self = !map.is_empty() && map.keys().all(|id| Some(id) == own_id.as_ref());
    let held = if map.is_empty() && claims.len() > 1 {
        claims.split_off(1)
    } else if only_self && !conf_names_self {
        let (own, others): (Vec<_>, Vec<_>) = claims
            .into_iter()
            .partition(|(_, id, _)| Some(id) == own_id.as_ref());
        claims = own;
        others
    } else {
        Vec::new()
    };
    if !held.is_empty() {
        let ids: Vec<&str> = held.iter().map(|(_, id, _)| id.as_str()).collect();
        log.push((
            Level::Info,
            format!(
                "holding back controller {} until the first node of the cluster has its map",
                ids.join(", ")
            ),
        ));
    }
    map.extend(claims.into_iter().map(|(_, id, ip)| (id, ip)));
    map
}

/// The map for controller.conf: the published one, plus every entry of the file the
/// published map lacks whose controller has not left (the leader's map is authoritative
/// only for the departures it knows).
fn conf_map(
    published: &BindAddresses,
    on_disk: &BindAddresses,
    members: &Members,
    log: &mut Vec<(Level, String)>,
) -> BindAddresses {
    let mut target = published.clone();
    for (id, ip) in on_disk {
        if target.contains_key(id) {
            continue;
        }
        match members.departed(id) {
            Some(why) => log.push((
                Level::Info,
                format!("removing controller {id} from controller.conf: {why}"),
            )),
            None => {
                log.push((
                    Level::Info,
                    format!(
                        "keeping controller {id} ({ip}) in controller.conf: the published map \
                         lacks it but its unit has not left"
                    ),
                ));
                target.insert(id.clone(), *ip);
            }
        }
    }
    target
}

/// The scope of an address that can never be a node's (loopback, link-local, multicast,
/// broadcast, unspecified).
fn never_valid(ip: IpAddr) -> Option<Scope> {
    let scope = address::scope(ip);
    matches!(
        scope,
        Scope::LocalMachine | Scope::LinkLocal | Scope::NotUnicast
    )
    .then_some(scope)
}

/// The statuses the operator must act on, most fundamental first.
fn blocking_status(observed: &Observed) -> Option<Status> {
    if let Err(error) = &observed.config {
        return Some(Status::new(
            StatusKind::Blocked,
            format!("invalid config: {error}"),
        ));
    }
    match &observed.choice {
        Some(Err(error)) => {
            return Some(Status::new(
                StatusKind::Blocked,
                format!("cannot read the db-cluster binding's addresses: {error}"),
            ))
        }
        Some(Ok(Choice::Ambiguous { candidates, .. })) => {
            let list: Vec<String> = candidates.iter().map(IpAddr::to_string).collect();
            return Some(Status::new(
                StatusKind::Blocked,
                format!(
                    "multiple possible db bind addresses ({}); bind the db-cluster endpoint to a \
                     space or set bind-cidr",
                    list.join(", ")
                ),
            ));
        }
        Some(Ok(Choice::None { dropped })) => {
            let seen = if dropped.is_empty() {
                "the binding has no addresses".to_owned()
            } else {
                let list: Vec<String> = dropped.iter().map(ToString::to_string).collect();
                format!("dropped {}", list.join(", "))
            };
            return Some(Status::new(
                StatusKind::Blocked,
                format!("no usable db bind address on the db-cluster binding ({seen})"),
            ));
        }
        _ => {}
    }
    if let Some(ConfView {
        path,
        on_disk: OnDisk::Unreadable(error),
    }) = &observed.conf
    {
        return Some(Status::new(
            StatusKind::Blocked,
            format!("{path} is unreadable ({error}); move it aside and the next hook rewrites it"),
        ));
    }
    None
}

/// The app bag value: a JSON object with sorted keys.
pub fn render_map(map: &BindAddresses) -> String {
    let strings: BTreeMap<&str, String> = map
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_string()))
        .collect();
    serde_json::to_string(&strings).expect("a map of strings serializes")
}

/// The record's app bag value: a JSON object of unit name to agent id, sorted.
fn render_record(record: &BTreeMap<String, String>) -> String {
    serde_json::to_string(record).expect("a map of strings serializes")
}

/// Parses the app bag value, refusing anything that is not agent id -> IP.
pub fn parse_map(text: &str) -> Result<BindAddresses, String> {
    let raw: BTreeMap<String, String> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    raw.into_iter()
        .map(|(id, address)| {
            if !is_agent_id(&id) {
                return Err(format!("{id:?} is not an agent id"));
            }
            let ip = address
                .parse::<IpAddr>()
                .map_err(|_| format!("{address:?} is not an IP address"))?;
            Ok((id, ip))
        })
        .collect()
}

/// The published map as the leader continues it: every valid entry, each invalid one left
/// out with a warning; `None` when there is none or it is not a JSON object at all.
fn parse_map_lenient(
    text: Option<&String>,
    log: &mut Vec<(Level, String)>,
) -> Option<BindAddresses> {
    let raw: BTreeMap<String, serde_json::Value> = match serde_json::from_str(text?) {
        Ok(raw) => raw,
        Err(error) => {
            log.push((
                Level::Warning,
                format!(
                    "the published {BIND_ADDRESSES_KEY} is not a JSON object ({error}); \
                     continuing from controller.conf's map and the units' bags"
                ),
            ));
            return None;
        }
    };
    let mut map = BindAddresses::new();
    for (id, value) in raw {
        match value.as_str().map(str::parse::<IpAddr>) {
            Some(Ok(ip)) if is_agent_id(&id) => {
                map.insert(id, ip);
            }
            _ => log.push((
                Level::Warning,
                format!("dropping the invalid published entry {id:?}: {value}"),
            )),
        }
    }
    Some(map)
}

/// The peer bags a hook must read: every listed unit's for the leader (its claims make the
/// map), and for a non-leader only those of units the leader's record does not name. A
/// non-leader never takes a claim from a bag; it uses a bag only for the agent id of a unit
/// the record lacks (see `Members::new`), so skipping the others changes nothing in its
/// plan (a property test checks this) and saves a `relation-get` per peer.
pub fn peer_bags_to_read(is_leader: bool, app: &Bag, listed: &[String]) -> BTreeSet<String> {
    let record = parse_record(app.get(AGENT_IDS_KEY));
    listed
        .iter()
        .filter(|unit| is_leader || !record.contains_key(unit.as_str()))
        .cloned()
        .collect()
}

/// The leader's record as published: entries with a canonical agent id (others are
/// ignored, as if the record did not name that unit).
fn parse_record(text: Option<&String>) -> BTreeMap<String, String> {
    let Some(raw) = text
        .and_then(|text| serde_json::from_str::<BTreeMap<String, serde_json::Value>>(text).ok())
    else {
        return BTreeMap::new();
    };
    raw.into_iter()
        .filter_map(|(unit, id)| {
            let id = id.as_str()?.to_owned();
            is_canonical_agent_id(&id).then_some((unit, id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Dropped;
    use proptest::prelude::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test ip")
    }

    fn bag(pairs: &[(&str, &str)]) -> Bag {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn conf(text: &str) -> Option<ConfView> {
        let on_disk = if text.is_empty() {
            OnDisk::Missing
        } else {
            match ControllerConf::parse(text) {
                Ok(conf) => OnDisk::Parsed(conf),
                Err(e) => OnDisk::Unreadable(e.to_string()),
            }
        };
        Some(ConfView {
            path: "/var/lib/juju/agents/controller-0/controller.conf".into(),
            on_disk,
        })
    }

    #[test]
    fn log_position_publication_table() {
        // (update-status, leader known, publishes)
        // With a leader the log moves: only the 5-minute update-status publishes. Without a
        // leader the log stands still: every hook keeps the value current.
        for (update_status, leader_known, publishes) in [
            (true, true, true),
            (false, true, false),
            (true, false, true),
            (false, false, true),
        ] {
            assert_eq!(
                wants_log_position(update_status, leader_known),
                publishes,
                "update-status {update_status}, leader known {leader_known}"
            );
        }
        // The position read is published when it differs, by members only.
        let position = |observed: Observed| plan(&observed).unit_writes;
        let published = position(with(|o| o.log_position = Some("3/41".into())));
        assert_eq!(
            published.get(LOG_POSITION_KEY).map(String::as_str),
            Some("3/41")
        );
        let same = position(with(|o| {
            o.log_position = Some("3/41".into());
            if let Some(relation) = o.relation.as_mut() {
                relation.own.insert(LOG_POSITION_KEY.into(), "3/41".into());
            }
        }));
        assert!(!same.contains_key(LOG_POSITION_KEY), "{same:?}");
        let departing = position(with(|o| {
            o.log_position = Some("3/41".into());
            o.membership = Membership::Departing;
        }));
        assert!(!departing.contains_key(LOG_POSITION_KEY), "{departing:?}");
        assert!(!position(base()).contains_key(LOG_POSITION_KEY));
    }

    /// A leaving leader publishes the map without itself; a leaving non-leader, a map it
    /// cannot read, a map without it and a map it would empty are left alone.
    #[test]
    fn a_departing_leader_publishes_the_map_without_itself() {
        let three = r#"{"0": "10.0.0.5", "1": "10.0.0.6", "2": "10.0.0.7"}"#;
        let leaving = |is_leader: bool, published: Option<&str>| {
            plan(&with(|o| {
                o.membership = Membership::Departing;
                o.is_leader = is_leader;
                if let (Some(relation), Some(text)) = (o.relation.as_mut(), published) {
                    relation.app.insert(BIND_ADDRESSES_KEY.into(), text.into());
                }
            }))
        };
        let got = leaving(true, Some(three));
        let published = got
            .app_writes
            .get(BIND_ADDRESSES_KEY)
            .map(|text| parse_map(text).expect("a valid map"));
        let expected = parse_map(r#"{"1": "10.0.0.6", "2": "10.0.0.7"}"#).expect("valid");
        assert_eq!(published, Some(expected), "{got:?}");
        assert!(got.unit_writes.is_empty() && got.conf.is_none(), "{got:?}");
        assert_eq!(got.status.kind, StatusKind::Maintenance);
        for (is_leader, published) in [
            (false, Some(three)),
            (true, None),
            (true, Some("{not a map")),
            (true, Some(r#"{"1": "10.0.0.6"}"#)),
            (true, Some(r#"{"0": "10.0.0.5"}"#)),
        ] {
            let got = leaving(is_leader, published);
            assert!(
                got.app_writes.is_empty(),
                "leader {is_leader}, published {published:?}: {got:?}"
            );
        }
    }

    #[test]
    fn service_plan_table() {
        let unit = "[Service]\nExecStart=/charm/bin/dbaccessor\n";
        let view = |wanted: bool, installed: Option<&str>, rendered: Option<Result<&str, &str>>| {
            ServiceView {
                wanted,
                installed: installed.map(str::to_owned),
                rendered: rendered.map(|r| r.map(str::to_owned).map_err(str::to_owned)),
            }
        };
        let install = Some(ServiceChange::Install(unit.to_owned()));
        let cases = [
            // Off and absent: nothing. Off and installed: removed.
            (view(false, None, None), None, None),
            (
                view(false, Some(unit), None),
                Some(ServiceChange::Remove),
                None,
            ),
            // On: installed when absent or different, left alone when the same.
            (view(true, None, Some(Ok(unit))), install.clone(), None),
            (view(true, Some("old"), Some(Ok(unit))), install, None),
            (view(true, Some(unit), Some(Ok(unit))), None, None),
            // On but impossible: blocked, saying why, and nothing touched.
            (
                view(true, Some(unit), Some(Err("systemd is not running"))),
                None,
                Some(service_blocked("systemd is not running")),
            ),
        ];
        for (view, change, status) in cases {
            assert_eq!(plan_service(&view), (change, status.clone()), "{view:?}");
        }
        // The blocked status replaces the hook's; a change rides along with the hook's own.
        let blocked = plan(&with(|o| {
            o.service = Some(view(true, None, Some(Err("no binary"))));
        }));
        assert_eq!(blocked.status, service_blocked("no binary"));
        assert_eq!(blocked.status.kind, StatusKind::Blocked);
        let installing = plan(&with(|o| {
            o.service = Some(view(true, None, Some(Ok(unit))))
        }));
        assert_eq!(
            installing.service,
            Some(ServiceChange::Install(unit.into()))
        );
        assert_eq!(installing.status, plan(&base()).status);
    }

    /// A leader with a unique address, agent id 0, no peers, nothing published yet.
    fn base() -> Observed {
        Observed {
            unit: "controller/0".into(),
            is_leader: true,
            install: false,
            config: Ok(()),
            choice: Some(Ok(Choice::Unique {
                address: ip("10.0.0.5"),
                dropped: vec![],
            })),
            agent_id: Some(Ok("0".into())),
            relation: Some(PeerView {
                id: "db-cluster:0".into(),
                ..PeerView::default()
            }),
            membership: Membership::Member,
            conf: conf(""),
            service: None,
            log_position: None,
        }
    }

    fn with(change: impl FnOnce(&mut Observed)) -> Observed {
        let mut observed = base();
        change(&mut observed);
        observed
    }

    /// The compact expectation: unit writes, app writes, the map written to controller.conf
    /// (None: no write), the status.
    struct Want<'a> {
        unit: &'a [(&'a str, &'a str)],
        app: &'a [(&'a str, &'a str)],
        conf: Option<&'a str>,
        status: (StatusKind, &'a str),
    }

    fn check(observed: Observed, want: Want) {
        let got = plan(&observed);
        assert_eq!(
            got.unit_writes,
            bag(want.unit),
            "unit writes for {observed:#?}"
        );
        assert_eq!(
            got.app_writes,
            bag(want.app),
            "app writes for {observed:#?}"
        );
        assert_eq!(
            got.conf.as_ref().map(|c| render_map(c.bind_addresses())),
            want.conf.map(str::to_owned),
            "conf for {observed:#?}"
        );
        assert_eq!(got.status.kind, want.status.0, "{:?}", got.status);
        assert_eq!(got.status.message, want.status.1);
    }

    const PEER1: &[(&str, &str)] = &[("agent-id", "1"), ("db-bind-address", "10.0.0.6")];
    const PEER2: &[(&str, &str)] = &[("agent-id", "2"), ("db-bind-address", "10.0.0.7")];
    const THREE: &str = r#"{"0":"10.0.0.5","1":"10.0.0.6","2":"10.0.0.7"}"#;
    const TWO: &str = r#"{"0":"10.0.0.5","1":"10.0.0.6"}"#;
    const RECORD3: &str = r#"{"controller/0":"0","controller/1":"1","controller/2":"2"}"#;
    const RECORD2: &str = r#"{"controller/0":"0","controller/1":"1"}"#;
    const CONF3: &str = "db-bind-addresses:\n  '0': 10.0.0.5\n  '1': 10.0.0.6\n  '2': 10.0.0.7\n";

    #[test]
    fn leader_table() {
        // First hook of a lone leader: publish, aggregate itself, record itself, write the conf.
        check(
            base(),
            Want {
                unit: &[("agent-id", "0"), ("db-bind-address", "10.0.0.5")],
                app: &[
                    ("db-agent-ids", r#"{"controller/0":"0"}"#),
                    ("db-bind-addresses", r#"{"0":"10.0.0.5"}"#),
                ],
                conf: Some(r#"{"0":"10.0.0.5"}"#),
                status: (
                    StatusKind::Active,
                    "db bind address 10.0.0.5 (1 controller)",
                ),
            },
        );
        // The first map of a cluster names the leader alone (its node bootstraps) ...
        check(
            with(|o| {
                let relation = o.relation.as_mut().expect("relation");
                relation.peers.insert("controller/1".into(), bag(PEER1));
                relation.peers.insert("controller/2".into(), bag(PEER2));
            }),
            Want {
                unit: &[("agent-id", "0"), ("db-bind-address", "10.0.0.5")],
                app: &[
                    ("db-agent-ids", RECORD3),
                    ("db-bind-addresses", r#"{"0":"10.0.0.5"}"#),
                ],
                conf: Some(r#"{"0":"10.0.0.5"}"#),
                status: (
                    StatusKind::Active,
                    "db bind address 10.0.0.5 (1 controller)",
                ),
            },
        );
        // ... and holds back the others until the leader's controller.conf names it
        // (install published the map but never writes controller.conf) ...
        check(
            with(|o| {
                let relation = o.relation.as_mut().expect("relation");
                relation
                    .app
                    .insert(BIND_ADDRESSES_KEY.into(), r#"{"0":"10.0.0.5"}"#.into());
                relation.peers.insert("controller/1".into(), bag(PEER1));
                relation.peers.insert("controller/2".into(), bag(PEER2));
            }),
            Want {
                unit: &[("agent-id", "0"), ("db-bind-address", "10.0.0.5")],
                app: &[("db-agent-ids", RECORD3)],
                conf: Some(r#"{"0":"10.0.0.5"}"#),
                status: (
                    StatusKind::Active,
                    "db bind address 10.0.0.5 (1 controller)",
                ),
            },
        );
        // ... then, the first node's map written, the map holds all three, sorted.
        check(
            with(|o| {
                o.conf = conf("db-bind-addresses:\n  '0': 10.0.0.5\n");
                let relation = o.relation.as_mut().expect("relation");
                relation
                    .app
                    .insert(BIND_ADDRESSES_KEY.into(), r#"{"0":"10.0.0.5"}"#.into());
                relation.peers.insert("controller/1".into(), bag(PEER1));
                relation.peers.insert("controller/2".into(), bag(PEER2));
            }),
            Want {
                unit: &[("agent-id", "0"), ("db-bind-address", "10.0.0.5")],
                app: &[("db-agent-ids", RECORD3), ("db-bind-addresses", THREE)],
                conf: Some(THREE),
                status: (
                    StatusKind::Active,
                    "db bind address 10.0.0.5 (3 controllers)",
                ),
            },
        );
        // Converged: nothing to write, so no reload either.
        check(
            converged(|_| {}),
            Want {
                unit: &[],
                app: &[],
                conf: None,
                status: (
                    StatusKind::Active,
                    "db bind address 10.0.0.5 (3 controllers)",
                ),
            },
        );
        // A departed peer is no longer listed and the record names its unit: its entry goes.
        check(
            converged(|o| {
                o.relation
                    .as_mut()
                    .expect("relation")
                    .peers
                    .remove("controller/2");
            }),
            Want {
                unit: &[],
                app: &[("db-agent-ids", RECORD2), ("db-bind-addresses", TWO)],
                conf: Some(TWO),
                status: (
                    StatusKind::Active,
                    "db bind address 10.0.0.5 (2 controllers)",
                ),
            },
        );
        // A map from a charm without the record: every unit in the relation has a known
        // agent id and none is 2, so controller 2's unit has left.
        check(
            converged(|o| {
                let relation = o.relation.as_mut().expect("relation");
                relation.peers.remove("controller/2");
                relation.app.remove("db-agent-ids");
            }),
            Want {
                unit: &[],
                app: &[("db-agent-ids", RECORD2), ("db-bind-addresses", TWO)],
                conf: Some(TWO),
                status: (
                    StatusKind::Active,
                    "db bind address 10.0.0.5 (2 controllers)",
                ),
            },
        );
        // Peers with invalid or half-written bags are left out of a new map.
        check(
            with(|o| {
                let relation = o.relation.as_mut().expect("relation");
                relation.app.insert(BIND_ADDRESSES_KEY.into(), "{}".into());
                relation.peers.insert(
                    "controller/1".into(),
                    bag(&[("agent-id", "x"), ("db-bind-address", "10.0.0.6")]),
                );
                relation.peers.insert(
                    "controller/2".into(),
                    bag(&[("db-bind-address", "10.0.0.7")]),
                );
                relation.peers.insert(
                    "controller/3".into(),
                    bag(&[("agent-id", "0"), ("db-bind-address", "10.0.0.8")]),
                );
            }),
            Want {
                unit: &[("agent-id", "0"), ("db-bind-address", "10.0.0.5")],
                app: &[
                    ("db-agent-ids", r#"{"controller/0":"0","controller/3":"0"}"#),
                    ("db-bind-addresses", r#"{"0":"10.0.0.5"}"#),
                ],
                conf: Some(r#"{"0":"10.0.0.5"}"#),
                status: (
                    StatusKind::Active,
                    "db bind address 10.0.0.5 (1 controller)",
                ),
            },
        );
    }

    /// Three converged controllers as the leader controller/0 sees them, then `change`.
    fn converged(change: impl FnOnce(&mut Observed)) -> Observed {
        with(|o| {
            let relation = o.relation.as_mut().expect("relation");
            relation.own = bag(&[("agent-id", "0"), ("db-bind-address", "10.0.0.5")]);
            relation.app = bag(&[("db-bind-addresses", THREE), ("db-agent-ids", RECORD3)]);
            relation.peers.insert("controller/1".into(), bag(PEER1));
            relation.peers.insert("controller/2".into(), bag(PEER2));
            o.conf = conf(CONF3);
            change(o);
        })
    }

    fn peer_bag(o: &mut Observed, unit: &str, pairs: &[(&str, &str)]) {
        o.relation
            .as_mut()
            .expect("relation")
            .peers
            .insert(unit.into(), bag(pairs));
    }

    /// Unknown is not gone: whatever the leader could not tell, the published map and
    /// controller.conf keep every entry. Each case: the change, the status kind, and the
    /// warning expected in the log (empty: none needed).
    #[test]
    fn unknown_is_not_gone_table() {
        type Change = Box<dyn Fn(&mut Observed)>;
        let cases: Vec<(&str, Change, StatusKind, &str)> = vec![
            (
                "own address ambiguous",
                Box::new(|o| {
                    o.choice = Some(Ok(Choice::Ambiguous {
                        candidates: vec![ip("10.0.0.5"), ip("192.168.1.5")],
                        dropped: vec![],
                    }))
                }),
                StatusKind::Blocked,
                "",
            ),
            (
                "bind-cidr matches nothing",
                Box::new(|o| o.choice = Some(Ok(Choice::None { dropped: vec![] }))),
                StatusKind::Blocked,
                "",
            ),
            (
                "network-get output malformed",
                Box::new(|o| {
                    o.choice = Some(Err(NetworkError::Malformed("eof".into())));
                }),
                StatusKind::Blocked,
                "",
            ),
            (
                "invalid option",
                Box::new(|o| {
                    o.config = Err(ConfigError::BadFamily {
                        value: "yes".into(),
                    });
                    o.choice = None;
                    o.agent_id = None;
                    o.conf = None;
                }),
                StatusKind::Blocked,
                "",
            ),
            (
                "own agent id unknown",
                Box::new(|o| {
                    o.agent_id = Some(Err("waiting for the socket".into()));
                    o.conf = None;
                }),
                StatusKind::Waiting,
                "",
            ),
            (
                "peer bag empty",
                Box::new(|o| peer_bag(o, "controller/1", &[])),
                StatusKind::Active,
                "",
            ),
            (
                "peer bag without an address",
                Box::new(|o| peer_bag(o, "controller/1", &[("agent-id", "1")])),
                StatusKind::Active,
                "",
            ),
            (
                "peer address not an IP",
                Box::new(|o| {
                    peer_bag(
                        o,
                        "controller/1",
                        &[("agent-id", "1"), ("db-bind-address", "10.0.0")],
                    )
                }),
                StatusKind::Active,
                "is not an IP address",
            ),
            (
                "peer address loopback",
                Box::new(|o| {
                    peer_bag(
                        o,
                        "controller/1",
                        &[("agent-id", "1"), ("db-bind-address", "127.0.0.1")],
                    )
                }),
                StatusKind::Active,
                "is loopback, never a node's address",
            ),
            (
                "peer address link-local",
                Box::new(|o| {
                    peer_bag(
                        o,
                        "controller/1",
                        &[("agent-id", "1"), ("db-bind-address", "fe80::1")],
                    )
                }),
                StatusKind::Active,
                "is link-local, never a node's address",
            ),
            (
                "peer address unspecified",
                Box::new(|o| {
                    peer_bag(
                        o,
                        "controller/1",
                        &[("agent-id", "1"), ("db-bind-address", "0.0.0.0")],
                    )
                }),
                StatusKind::Active,
                "never a node's address",
            ),
            (
                "peer address multicast",
                Box::new(|o| {
                    peer_bag(
                        o,
                        "controller/1",
                        &[("agent-id", "1"), ("db-bind-address", "ff02::1")],
                    )
                }),
                StatusKind::Active,
                "never a node's address",
            ),
            (
                "peer takes another controller's IP",
                Box::new(|o| {
                    peer_bag(
                        o,
                        "controller/1",
                        &[("agent-id", "1"), ("db-bind-address", "10.0.0.7")],
                    )
                }),
                StatusKind::Active,
                "10.0.0.7 of controller 1 is also controller 2's",
            ),
            (
                "peer takes another controller's IP, IPv4-mapped",
                Box::new(|o| {
                    peer_bag(
                        o,
                        "controller/1",
                        &[("agent-id", "1"), ("db-bind-address", "::ffff:10.0.0.7")],
                    )
                }),
                StatusKind::Active,
                "10.0.0.7 of controller 1 is also controller 2's",
            ),
            (
                "peer agent id not canonical",
                Box::new(|o| {
                    peer_bag(
                        o,
                        "controller/1",
                        &[("agent-id", "01"), ("db-bind-address", "10.0.0.9")],
                    )
                }),
                StatusKind::Active,
                "agent-id \"01\" is not a decimal agent id",
            ),
            (
                "peer claims another controller's agent id",
                Box::new(|o| {
                    peer_bag(
                        o,
                        "controller/1",
                        &[("agent-id", "2"), ("db-bind-address", "10.0.0.9")],
                    )
                }),
                StatusKind::Active,
                "agent-id 2 differs from the agent id 1 recorded for it",
            ),
            (
                "a new unit claims a recorded controller's agent id",
                Box::new(|o| {
                    peer_bag(
                        o,
                        "controller/3",
                        &[("agent-id", "2"), ("db-bind-address", "10.0.0.9")],
                    )
                }),
                StatusKind::Active,
                "agent id 2 is recorded for \"controller/2\", which is still in the relation",
            ),
            (
                "no record and one peer's agent id unknown",
                Box::new(|o| {
                    o.relation
                        .as_mut()
                        .expect("relation")
                        .app
                        .remove("db-agent-ids");
                    peer_bag(o, "controller/1", &[]);
                }),
                StatusKind::Active,
                "",
            ),
            (
                "the published map is not JSON",
                Box::new(|o| {
                    o.relation
                        .as_mut()
                        .expect("relation")
                        .app
                        .insert("db-bind-addresses".into(), "{".into());
                }),
                StatusKind::Active,
                "is not a JSON object",
            ),
        ];
        for (name, change, kind, warning) in cases {
            let observed = converged(|o| change(o));
            let got = plan(&observed);
            let published = got
                .app_writes
                .get(BIND_ADDRESSES_KEY)
                .map_or(THREE, String::as_str);
            // (A published map that is not JSON is continued from controller.conf's.)
            assert_eq!(published, THREE, "{name}: {:?}", got.app_writes);
            // The record never loses a unit still in the relation (without a published record
            // it holds the units whose agent id is known).
            assert!(
                name.starts_with("no record")
                    || got
                        .app_writes
                        .get(AGENT_IDS_KEY)
                        .is_none_or(|r| r == RECORD3),
                "{name}: {:?}",
                got.app_writes
            );
            assert_eq!(got.conf, None, "{name}: controller.conf keeps its map");
            assert_eq!(got.status.kind, kind, "{name}: {:?}", got.status);
            if !warning.is_empty() {
                assert!(
                    got.log
                        .iter()
                        .any(|(level, line)| *level == Level::Warning && line.contains(warning)),
                    "{name}: no warning {warning:?} in {:?}",
                    got.log
                );
            }
        }
    }

    #[test]
    fn departures_and_new_leaders_table() {
        // A new leader (controller/1) continues its predecessor's map: controller/0 left
        // (the record names it), controller/2's bag is empty for now and stays.
        let new_leader = converged(|o| {
            o.unit = "controller/1".into();
            o.agent_id = Some(Ok("1".into()));
            o.choice = Some(Ok(Choice::Unique {
                address: ip("10.0.0.6"),
                dropped: vec![],
            }));
            let relation = o.relation.as_mut().expect("relation");
            relation.own = bag(PEER1);
            relation.peers.clear();
            relation.peers.insert("controller/2".into(), Bag::new());
            o.conf = conf(CONF3);
        });
        let one_two = r#"{"1":"10.0.0.6","2":"10.0.0.7"}"#;
        check(
            new_leader.clone(),
            Want {
                unit: &[],
                app: &[
                    ("db-agent-ids", r#"{"controller/1":"1","controller/2":"2"}"#),
                    ("db-bind-addresses", one_two),
                ],
                conf: Some(one_two),
                status: (
                    StatusKind::Active,
                    "db bind address 10.0.0.6 (2 controllers)",
                ),
            },
        );
        // The same without the record: controller/2's agent id is unknown, so the leader
        // cannot tell that 0 left and keeps it.
        let mut unsure = new_leader.clone();
        unsure
            .relation
            .as_mut()
            .expect("relation")
            .app
            .remove("db-agent-ids");
        let got = plan(&unsure);
        assert_eq!(got.app_writes.get(BIND_ADDRESSES_KEY), None, "{got:?}");
        assert_eq!(got.conf, None);
        // A peer that moved to a free address is updated.
        check(
            converged(|o| {
                peer_bag(
                    o,
                    "controller/2",
                    &[("agent-id", "2"), ("db-bind-address", "10.0.0.9")],
                )
            }),
            Want {
                unit: &[],
                app: &[(
                    "db-bind-addresses",
                    r#"{"0":"10.0.0.5","1":"10.0.0.6","2":"10.0.0.9"}"#,
                )],
                conf: Some(r#"{"0":"10.0.0.5","1":"10.0.0.6","2":"10.0.0.9"}"#),
                status: (
                    StatusKind::Active,
                    "db bind address 10.0.0.5 (3 controllers)",
                ),
            },
        );
        // Two peers swapping addresses do not collide with each other.
        check(
            converged(|o| {
                peer_bag(
                    o,
                    "controller/1",
                    &[("agent-id", "1"), ("db-bind-address", "10.0.0.7")],
                );
                peer_bag(
                    o,
                    "controller/2",
                    &[("agent-id", "2"), ("db-bind-address", "10.0.0.6")],
                );
            }),
            Want {
                unit: &[],
                app: &[(
                    "db-bind-addresses",
                    r#"{"0":"10.0.0.5","1":"10.0.0.7","2":"10.0.0.6"}"#,
                )],
                conf: Some(r#"{"0":"10.0.0.5","1":"10.0.0.7","2":"10.0.0.6"}"#),
                status: (
                    StatusKind::Active,
                    "db bind address 10.0.0.5 (3 controllers)",
                ),
            },
        );
        // Two new controllers on one IP: both are left out until one moves.
        let got = plan(&with(|o| {
            o.relation
                .as_mut()
                .expect("relation")
                .app
                .insert(BIND_ADDRESSES_KEY.into(), r#"{"0":"10.0.0.5"}"#.into());
            peer_bag(
                o,
                "controller/1",
                &[("agent-id", "1"), ("db-bind-address", "10.0.0.9")],
            );
            peer_bag(
                o,
                "controller/2",
                &[("agent-id", "2"), ("db-bind-address", "10.0.0.9")],
            );
        }));
        assert_eq!(
            got.app_writes.get(BIND_ADDRESSES_KEY),
            None,
            "the published map stays {{\"0\":\"10.0.0.5\"}}"
        );
        assert_eq!(
            got.log.iter().filter(|(l, _)| *l == Level::Warning).count(),
            2,
            "{:?}",
            got.log
        );
        // A first map while this leader cannot claim: one peer alone (its node bootstraps).
        let got = plan(&with(|o| {
            o.agent_id = Some(Err("waiting for the socket".into()));
            o.conf = None;
            peer_bag(o, "controller/1", PEER1);
            peer_bag(o, "controller/2", PEER2);
        }));
        assert_eq!(
            got.app_writes.get(BIND_ADDRESSES_KEY).map(String::as_str),
            Some(r#"{"1":"10.0.0.6"}"#)
        );
        // The app bag lost its map: the leader continues from its controller.conf's.
        let got = plan(&converged(|o| {
            o.relation
                .as_mut()
                .expect("relation")
                .app
                .remove(BIND_ADDRESSES_KEY);
            peer_bag(o, "controller/2", &[]);
        }));
        assert_eq!(
            got.app_writes.get(BIND_ADDRESSES_KEY).map(String::as_str),
            Some(THREE)
        );
        // install never writes controller.conf, even with a map to write.
        let got = plan(&with(|o| o.install = true));
        assert_eq!(got.conf, None);
        assert!(got.app_writes.contains_key(BIND_ADDRESSES_KEY));
    }

    #[test]
    fn non_leader_conf_table() {
        // controller/1 follows; the leader's map lacks controller 2.
        let follower = |change: &dyn Fn(&mut Observed)| {
            converged(|o| {
                o.unit = "controller/1".into();
                o.is_leader = false;
                o.agent_id = Some(Ok("1".into()));
                o.choice = Some(Ok(Choice::Unique {
                    address: ip("10.0.0.6"),
                    dropped: vec![],
                }));
                let relation = o.relation.as_mut().expect("relation");
                relation.own = bag(PEER1);
                relation.peers.clear();
                relation.peers.insert(
                    "controller/0".into(),
                    bag(&[("agent-id", "0"), ("db-bind-address", "10.0.0.5")]),
                );
                relation.peers.insert("controller/2".into(), bag(PEER2));
                relation.app = bag(&[("db-bind-addresses", TWO), ("db-agent-ids", RECORD2)]);
                change(o);
            })
        };
        // controller/2 is still listed: the leader does not know it yet; the conf keeps it.
        let got = plan(&follower(&|_| {}));
        assert_eq!(got.conf, None, "{:?}", got.log);
        // controller/2 has left (not listed, every listed agent id known): removed.
        let got = plan(&follower(&|o| {
            o.relation
                .as_mut()
                .expect("relation")
                .peers
                .remove("controller/2");
        }));
        assert_eq!(
            got.conf.map(|c| render_map(c.bind_addresses())).as_deref(),
            Some(TWO)
        );
        // Not listed, but the leader's agent id is unknown to this unit: kept.
        let got = plan(&follower(&|o| {
            let relation = o.relation.as_mut().expect("relation");
            relation.peers.remove("controller/2");
            relation.peers.insert("controller/0".into(), Bag::new());
            relation.app.remove("db-agent-ids");
        }));
        assert_eq!(got.conf, None, "{:?}", got.log);
        // The leader's map moves an address: copied.
        let got = plan(&follower(&|o| {
            o.relation.as_mut().expect("relation").app.insert(
                "db-bind-addresses".into(),
                r#"{"0":"10.0.0.9","1":"10.0.0.6","2":"10.0.0.7"}"#.into(),
            );
        }));
        assert_eq!(
            got.conf.map(|c| render_map(c.bind_addresses())).as_deref(),
            Some(r#"{"0":"10.0.0.9","1":"10.0.0.6","2":"10.0.0.7"}"#)
        );
        // An invalid map from the leader leaves controller.conf as it is.
        let got = plan(&follower(&|o| {
            o.relation
                .as_mut()
                .expect("relation")
                .app
                .insert("db-bind-addresses".into(), "{".into());
        }));
        assert_eq!(got.conf, None);
        assert_eq!(got.status.kind, StatusKind::Waiting);
    }

    #[test]
    fn non_leader_table() {
        let peer = || {
            with(|o| {
                o.unit = "controller/1".into();
                o.is_leader = false;
                o.agent_id = Some(Ok("1".into()));
                o.choice = Some(Ok(Choice::Unique {
                    address: ip("10.0.0.6"),
                    dropped: vec![],
                }));
            })
        };
        // Nothing published yet: publish own bag, wait for the leader, write no conf.
        check(
            peer(),
            Want {
                unit: &[("agent-id", "1"), ("db-bind-address", "10.0.0.6")],
                app: &[],
                conf: None,
                status: (
                    StatusKind::Waiting,
                    "waiting for the leader to publish db-bind-addresses",
                ),
            },
        );
        // The leader's map without this unit yet: copy it, say what it waits for.
        let mut observed = peer();
        observed.relation.as_mut().expect("relation").app =
            bag(&[("db-bind-addresses", r#"{"0":"10.0.0.5"}"#)]);
        check(
            observed,
            Want {
                unit: &[("agent-id", "1"), ("db-bind-address", "10.0.0.6")],
                app: &[],
                conf: Some(r#"{"0":"10.0.0.5"}"#),
                status: (
                    StatusKind::Waiting,
                    "waiting for the leader to publish db bind address 10.0.0.6 for controller 1",
                ),
            },
        );
        // The full map: copy it, active.
        let mut observed = peer();
        {
            let relation = observed.relation.as_mut().expect("relation");
            relation.app = bag(&[("db-bind-addresses", THREE)]);
            relation.own = bag(PEER1);
        }
        check(
            observed,
            Want {
                unit: &[],
                app: &[],
                conf: Some(THREE),
                status: (
                    StatusKind::Active,
                    "db bind address 10.0.0.6 (3 controllers)",
                ),
            },
        );
        // A malformed map from the leader is never copied.
        let mut observed = peer();
        observed.relation.as_mut().expect("relation").app =
            bag(&[("db-bind-addresses", r#"{"0":"10.0.0"}"#)]);
        let got = plan(&observed);
        assert_eq!(got.conf, None);
        assert_eq!(got.status.kind, StatusKind::Waiting);
        assert!(
            got.status.message.contains("not valid"),
            "{}",
            got.status.message
        );
    }

    #[test]
    fn address_problems_remove_the_stale_address_and_keep_the_entry() {
        let published = |o: &mut Observed| {
            o.relation.as_mut().expect("relation").own =
                bag(&[("agent-id", "0"), ("db-bind-address", "10.0.0.5")]);
            o.relation.as_mut().expect("relation").app = bag(&[
                ("db-bind-addresses", r#"{"0":"10.0.0.5"}"#),
                ("db-agent-ids", r#"{"controller/0":"0"}"#),
            ]);
            o.conf = conf("db-bind-addresses:\n  '0': 10.0.0.5\n");
        };
        check(
            with(|o| {
                published(o);
                o.choice = Some(Ok(Choice::Ambiguous {
                    candidates: vec![ip("10.0.0.5"), ip("192.168.1.5")],
                    dropped: vec![],
                }));
            }),
            Want {
                unit: &[("db-bind-address", "")],
                app: &[],
                conf: None,
                status: (
                    StatusKind::Blocked,
                    "multiple possible db bind addresses (10.0.0.5, 192.168.1.5); bind the \
                     db-cluster endpoint to a space or set bind-cidr",
                ),
            },
        );
        check(
            with(|o| {
                published(o);
                o.choice = Some(Ok(Choice::None {
                    dropped: vec![Dropped {
                        address: "127.0.0.1".into(),
                        reason: crate::address::DropReason::NeverValid(Scope::LocalMachine),
                    }],
                }));
            }),
            Want {
                unit: &[("db-bind-address", "")],
                app: &[],
                conf: None,
                status: (
                    StatusKind::Blocked,
                    "no usable db bind address on the db-cluster binding (dropped 127.0.0.1 (loopback))",
                ),
            },
        );
        check(
            with(|o| {
                published(o);
                o.choice = Some(Err(NetworkError::TooManyAddresses { count: 2000 }));
            }),
            Want {
                unit: &[("db-bind-address", "")],
                app: &[],
                conf: None,
                status: (
                    StatusKind::Blocked,
                    "cannot read the db-cluster binding's addresses: network-get listed 2000 \
                     addresses, more than the 1024 accepted",
                ),
            },
        );
        check(
            with(|o| {
                published(o);
                o.config = Err(ConfigError::BadFamily {
                    value: "ipv5".into(),
                });
                o.choice = None;
                o.agent_id = None;
                o.conf = None;
            }),
            Want {
                unit: &[("db-bind-address", "")],
                app: &[],
                conf: None,
                status: (
                    StatusKind::Blocked,
                    "invalid config: address-family \"ipv5\" is not one of auto, ipv4, ipv6",
                ),
            },
        );
    }

    #[test]
    fn agent_and_conf_problems_table() {
        // The reload socket is not there: publish the address, write nothing else, wait.
        check(
            with(|o| {
                o.agent_id = Some(Err(
                    "waiting for the reload socket /s (not there yet)".into()
                ));
                o.conf = None;
            }),
            Want {
                unit: &[("db-bind-address", "10.0.0.5")],
                app: &[("db-bind-addresses", "{}")],
                conf: None,
                status: (
                    StatusKind::Waiting,
                    "waiting for the reload socket /s (not there yet)",
                ),
            },
        );
        // A torn controller.conf is left for the operator.
        check(
            with(|o| o.conf = conf("db-bind-addresses: {'0': [")),
            Want {
                unit: &[("agent-id", "0"), ("db-bind-address", "10.0.0.5")],
                app: &[
                    ("db-agent-ids", r#"{"controller/0":"0"}"#),
                    ("db-bind-addresses", r#"{"0":"10.0.0.5"}"#),
                ],
                conf: None,
                status: (
                    StatusKind::Blocked,
                    "/var/lib/juju/agents/controller-0/controller.conf is unreadable \
                     (controller.conf is not valid YAML: did not find expected node content at \
                     line 2 column 1, while parsing a flow node); move it aside and the next hook \
                     rewrites it",
                ),
            },
        );
        // Other keys survive; only the map changes.
        let got = plan(&with(|o| o.conf = conf("api-port: 17070\n")));
        assert_eq!(
            got.conf.expect("a write").render(),
            "api-port: 17070\ndb-bind-addresses:\n  '0': 10.0.0.5\n"
        );
        // No relation yet.
        check(
            with(|o| o.relation = None),
            Want {
                unit: &[],
                app: &[],
                conf: None,
                status: (
                    StatusKind::Waiting,
                    "waiting for the db-cluster peer relation",
                ),
            },
        );
    }

    #[test]
    fn leaving_units_write_nothing() {
        for (membership, message) in [
            (
                Membership::Departing,
                "leaving the db-cluster relation; the remaining controllers drop this one",
            ),
            (
                Membership::Broken,
                "the db-cluster relation is gone; this controller is being removed",
            ),
        ] {
            check(
                with(|o| o.membership = membership),
                Want {
                    unit: &[],
                    app: &[],
                    conf: None,
                    status: (StatusKind::Maintenance, message),
                },
            );
        }
    }

    #[test]
    fn map_round_trip() {
        let map: BindAddresses = [
            ("1".to_owned(), ip("fc00::1")),
            ("0".to_owned(), ip("10.0.0.5")),
        ]
        .into();
        let text = render_map(&map);
        assert_eq!(text, r#"{"0":"10.0.0.5","1":"fc00::1"}"#);
        assert_eq!(parse_map(&text), Ok(map));
        assert!(parse_map(r#"{"a":"10.0.0.5"}"#).is_err());
        assert!(parse_map("[").is_err());
    }

    /// The property test's world: units `controller/0..n` with agent id `i` and address
    /// 10.0.0.(5+i); this unit is `me`; `listed[i]` says whether unit i is in the relation
    /// (this unit always is); everything else is drawn at random.
    #[derive(Debug, Clone)]
    struct World {
        observed: Observed,
        /// Agent ids whose unit has departed: the only entries allowed to go.
        departed: BTreeSet<String>,
        /// The agent ids the record names for departed units (those must go).
        recorded_departed: BTreeSet<String>,
    }

    fn truth_ip(i: usize) -> String {
        format!("10.0.0.{}", 5 + i)
    }

    /// A peer's (or this unit's previous) bag: empty, half written, truthful, moved to a
    /// fresh address, or invalid in one of the ways a bag can be.
    fn arb_bag(i: usize) -> impl Strategy<Value = Bag> {
        let id = i.to_string();
        let address = truth_ip(i);
        prop_oneof![
            Just(Bag::new()),
            Just(bag(&[("agent-id", &id)])),
            Just(bag(&[("db-bind-address", &address)])),
            Just(bag(&[("agent-id", &id), ("db-bind-address", &address)])),
            Just(bag(&[
                ("agent-id", &id),
                ("db-bind-address", &format!("10.1.0.{i}"))
            ])),
            Just(bag(&[
                ("agent-id", &format!("0{id}")),
                ("db-bind-address", &address)
            ])),
            prop::sample::select(vec![
                "x",
                "127.0.0.1",
                "fe80::1",
                "0.0.0.0",
                "ff02::1",
                "10.0.0.5",
                "10.0.0.6",
                ""
            ])
            .prop_map(move |bad| bag(&[("agent-id", &i.to_string()), ("db-bind-address", bad)])),
        ]
    }

    fn arb_choice() -> impl Strategy<Value = Option<Result<Choice, NetworkError>>> {
        prop_oneof![
            Just(Some(Ok(Choice::Ambiguous {
                candidates: vec![ip("10.0.0.50"), ip("192.168.0.50")],
                dropped: vec![],
            }))),
            Just(Some(Ok(Choice::None { dropped: vec![] }))),
            Just(Some(Err(NetworkError::Malformed("eof".into())))),
            Just(Some(Err(NetworkError::TooManyAddresses { count: 2000 }))),
            Just(None),
        ]
    }

    fn arb_world() -> impl Strategy<Value = World> {
        (1usize..6)
            .prop_flat_map(|n| {
                (
                    Just(n),
                    0..n,
                    prop::collection::vec(any::<bool>(), n),
                    prop::collection::vec(arb_bag(0), n),
                    any::<bool>(),
                    any::<bool>(),
                    prop::collection::vec(any::<bool>(), n),
                    prop::collection::vec(any::<bool>(), n),
                    prop::collection::vec(any::<bool>(), n),
                    (
                        0usize..4,
                        arb_choice(),
                        any::<bool>(),
                        any::<bool>(),
                        0usize..3,
                    ),
                )
            })
            .prop_flat_map(
                |(n, me, listed, _, leader, install, in_map, in_record, in_conf, own)| {
                    let bags: Vec<_> = (0..n).map(arb_bag).collect();
                    (
                        Just((
                            n, me, listed, leader, install, in_map, in_record, in_conf, own,
                        )),
                        bags,
                    )
                },
            )
            .prop_map(
                |((n, me, listed, leader, install, in_map, in_record, in_conf, own), bags)| {
                    let (own_kind, other_choice, socket_up, config_ok, prior_kind) = own;
                    let name = |i: usize| format!("controller/{i}");
                    let member = |i: usize| i == me || listed[i];
                    let departed: BTreeSet<String> = (0..n)
                        .filter(|i| !member(*i))
                        .map(|i| i.to_string())
                        .collect();
                    // The published map (maybe from an older charm, without a record, or
                    // not valid), the record (true where present) and controller.conf.
                    let map: BTreeMap<String, String> = (0..n)
                        .filter(|i| in_map[*i])
                        .map(|i| (i.to_string(), truth_ip(i)))
                        .collect();
                    let record: BTreeMap<String, String> = (0..n)
                        .filter(|i| in_record[*i])
                        .map(|i| (name(i), i.to_string()))
                        .collect();
                    let recorded_departed = (0..n)
                        .filter(|i| in_record[*i] && !member(*i))
                        .map(|i| i.to_string())
                        .collect();
                    let mut app = Bag::new();
                    match prior_kind {
                        0 => {}
                        1 => {
                            app.insert(
                                BIND_ADDRESSES_KEY.into(),
                                serde_json::to_string(&map).expect("json"),
                            );
                        }
                        _ => {
                            app.insert(
                                BIND_ADDRESSES_KEY.into(),
                                serde_json::to_string(&map).expect("json"),
                            );
                            app.insert(
                                AGENT_IDS_KEY.into(),
                                serde_json::to_string(&record).expect("json"),
                            );
                        }
                    }
                    let conf_text: String = (0..n)
                        .filter(|i| in_conf[*i])
                        .map(|i| format!("  '{i}': {}\n", truth_ip(i)))
                        .collect();
                    let conf_text = if conf_text.is_empty() {
                        "agent: x\n".to_owned()
                    } else {
                        format!("agent: x\ndb-bind-addresses:\n{conf_text}")
                    };
                    let peers = (0..n)
                        .filter(|i| *i != me && listed[*i])
                        .map(|i| (name(i), bags[i].clone()))
                        .collect();
                    let choice = match own_kind {
                        0 | 1 => Some(Ok(Choice::Unique {
                            address: ip(&truth_ip(me)),
                            dropped: vec![],
                        })),
                        _ => other_choice,
                    };
                    let mut observed = Observed {
                        unit: name(me),
                        is_leader: leader,
                        install,
                        config: Ok(()),
                        choice,
                        agent_id: Some(if socket_up {
                            Ok(me.to_string())
                        } else {
                            Err("waiting for the socket".into())
                        }),
                        relation: Some(PeerView {
                            id: "db-cluster:0".into(),
                            own: bags[me].clone(),
                            app,
                            peers,
                        }),
                        membership: Membership::Member,
                        conf: conf(&conf_text),
                        service: None,
                        log_position: None,
                    };
                    if !config_ok {
                        observed.config = Err(ConfigError::BadFamily {
                            value: "yes".into(),
                        });
                        observed.choice = None;
                        observed.agent_id = None;
                        observed.conf = None;
                    }
                    if !socket_up {
                        observed.conf = None;
                    }
                    World {
                        observed,
                        departed,
                        recorded_departed,
                    }
                },
            )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5000))]

        /// A non-leader's plan is the same whether or not it read the bags that
        /// `peer_bags_to_read` leaves out, so skipping those `relation-get` calls is safe.
        #[test]
        fn skipped_peer_bags_never_change_the_plan(world in arb_world()) {
            let mut observed = world.observed.clone();
            let relation = observed.relation.as_mut().expect("relation");
            let listed: Vec<String> = relation.peers.keys().cloned().collect();
            let to_read = peer_bags_to_read(observed.is_leader, &relation.app, &listed);
            if observed.is_leader {
                proptest::prop_assert_eq!(to_read.len(), listed.len());
            }
            for (unit, bag) in relation.peers.iter_mut() {
                if !to_read.contains(unit) {
                    bag.clear();
                }
            }
            proptest::prop_assert_eq!(plan(&observed), plan(&world.observed));
        }

        /// Whatever the hook saw, the published map and controller.conf lose no entry except
        /// one whose unit departed; and a departed unit the record names is removed.
        #[test]
        fn no_entry_is_lost_except_for_a_departed_unit(world in arb_world()) {
            let observed = &world.observed;
            let relation = observed.relation.as_ref().expect("relation");
            let got = plan(observed);
            if observed.is_leader {
                let before = relation
                    .app
                    .get(BIND_ADDRESSES_KEY)
                    .map(|text| parse_map(text).expect("the generated map is valid"))
                    .unwrap_or_default();
                let after = match got.app_writes.get(BIND_ADDRESSES_KEY) {
                    Some(text) => parse_map(text).expect("the leader publishes a valid map"),
                    None => before.clone(),
                };
                for id in before.keys() {
                    proptest::prop_assert!(
                        after.contains_key(id) || world.departed.contains(id),
                        "published entry {} lost: {:?}", id, got.log
                    );
                }
                if relation.app.contains_key(AGENT_IDS_KEY) {
                    for id in &world.recorded_departed {
                        proptest::prop_assert!(
                            !after.contains_key(id),
                            "departed controller {} kept: {:?}", id, got.log
                        );
                    }
                }
                // Every published address is one a node can bind, held by one controller.
                let ips: BTreeSet<IpAddr> = after.values().copied().collect();
                proptest::prop_assert_eq!(ips.len(), after.len());
                proptest::prop_assert!(after.values().all(|ip| never_valid(*ip).is_none()));
            }
            if let Some(ConfView { on_disk: OnDisk::Parsed(current), .. }) = &observed.conf {
                if let Some(next) = &got.conf {
                    proptest::prop_assert!(!observed.install, "install wrote controller.conf");
                    for id in current.bind_addresses().keys() {
                        proptest::prop_assert!(
                            next.bind_addresses().contains_key(id) || world.departed.contains(id),
                            "controller.conf entry {} lost: {:?}", id, got.log
                        );
                    }
                    // Only the map changed.
                    proptest::prop_assert!(next.render().starts_with("agent: x\n"));
                }
            }
        }
    }
}
