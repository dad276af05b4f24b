//! The decision every handled hook makes: from what the hook observed, which relation keys to
//! write, which bind-address map to put in controller.conf, and which status to show. Every
//! hook converges to the same state, so a missed event is repaired by the next one.
//!
//! **Architecture Invariant:** no IO and no failure: `plan` is a total function of its input.

use std::collections::BTreeMap;
use std::net::IpAddr;

use controller_contract::conf::{is_agent_id, BindAddresses, ControllerConf};

use crate::address::{Choice, NetworkError};
use crate::conffile::OnDisk;
use crate::config::ConfigError;
use crate::tools::{Level, Status, StatusKind};

/// Unit bag key: this unit's Dqlite bind IP.
pub const BIND_ADDRESS_KEY: &str = "db-bind-address";
/// Unit bag key: this unit's controller agent id.
pub const AGENT_ID_KEY: &str = "agent-id";
/// App bag key: the leader's JSON map of agent id to bind IP.
pub const BIND_ADDRESSES_KEY: &str = "db-bind-addresses";

/// A relation bag.
pub type Bag = BTreeMap<String, String>;

/// What the hook saw, as plain values.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// This unit's name.
    pub unit: String,
    /// Whether this unit leads (`is-leader`).
    pub is_leader: bool,
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
    /// The other units' bags, by unit name (departed units are not listed).
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
}

/// Decides the hook's writes and status.
pub fn plan(observed: &Observed) -> Plan {
    let mut plan = Plan {
        unit_writes: Bag::new(),
        app_writes: Bag::new(),
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

    // The map every controller must agree on: the leader builds it from every bag.
    let map: Result<BindAddresses, String> = if observed.is_leader {
        let mut bags: Vec<(&str, &Bag)> = vec![(observed.unit.as_str(), &own)];
        bags.extend(
            relation
                .peers
                .iter()
                .map(|(unit, bag)| (unit.as_str(), bag)),
        );
        let (map, log) = aggregate(&bags);
        plan.log.extend(log);
        let text = render_map(&map);
        if relation.app.get(BIND_ADDRESSES_KEY) != Some(&text) {
            plan.app_writes.insert(BIND_ADDRESSES_KEY.to_owned(), text);
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

    // controller.conf: written only with a non-empty map and only when it changes.
    if let (Ok(map), Some(conf)) = (&map, &observed.conf) {
        let current = match &conf.on_disk {
            OnDisk::Missing => Some(ControllerConf::default()),
            OnDisk::Parsed(current) => Some(current.clone()),
            OnDisk::Unreadable(_) => None,
        };
        if let Some(current) = current.filter(|_| !map.is_empty()) {
            if !current.has_bind_addresses() || current.bind_addresses() != map {
                let mut next = current;
                next.set_bind_addresses(map.clone());
                plan.log.push((
                    Level::Info,
                    format!(
                        "writing {} with db-bind-addresses {}",
                        conf.path,
                        render_map(map)
                    ),
                ));
                plan.conf = Some(next);
            }
        }
    }

    plan.status = if let Some(status) = blocking_status(observed) {
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

/// The leader's map from every unit's bag: units without a valid agent id and address are
/// left out (logged), and an agent id claimed twice keeps the first unit's entry.
fn aggregate(bags: &[(&str, &Bag)]) -> (BindAddresses, Vec<(Level, String)>) {
    let mut map = BindAddresses::new();
    let mut log = Vec::new();
    for (unit, bag) in bags {
        let (Some(id), Some(address)) = (bag.get(AGENT_ID_KEY), bag.get(BIND_ADDRESS_KEY)) else {
            continue;
        };
        let Some(ip) = is_agent_id(id)
            .then(|| address.parse::<IpAddr>().ok())
            .flatten()
        else {
            log.push((
                Level::Warning,
                format!("ignoring {unit}: agent-id {id:?} with db-bind-address {address:?} is not valid"),
            ));
            continue;
        };
        if map.contains_key(id) {
            log.push((
                Level::Warning,
                format!("ignoring {unit}: agent id {id} is already claimed by another unit"),
            ));
            continue;
        }
        map.insert(id.clone(), ip);
    }
    (map, log)
}

/// The app bag value: a JSON object with sorted keys.
pub fn render_map(map: &BindAddresses) -> String {
    let strings: BTreeMap<&str, String> = map
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_string()))
        .collect();
    serde_json::to_string(&strings).expect("a map of strings serializes")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Dropped;

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

    /// A leader with a unique address, agent id 0, no peers, nothing published yet.
    fn base() -> Observed {
        Observed {
            unit: "controller/0".into(),
            is_leader: true,
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

    #[test]
    fn leader_table() {
        // First hook of a lone leader: publish, aggregate itself, write the conf.
        check(
            base(),
            Want {
                unit: &[("agent-id", "0"), ("db-bind-address", "10.0.0.5")],
                app: &[("db-bind-addresses", r#"{"0":"10.0.0.5"}"#)],
                conf: Some(r#"{"0":"10.0.0.5"}"#),
                status: (
                    StatusKind::Active,
                    "db bind address 10.0.0.5 (1 controller)",
                ),
            },
        );
        // Two peers: the map holds all three, sorted.
        check(
            with(|o| {
                let relation = o.relation.as_mut().expect("relation");
                relation.peers.insert("controller/1".into(), bag(PEER1));
                relation.peers.insert("controller/2".into(), bag(PEER2));
            }),
            Want {
                unit: &[("agent-id", "0"), ("db-bind-address", "10.0.0.5")],
                app: &[("db-bind-addresses", THREE)],
                conf: Some(THREE),
                status: (
                    StatusKind::Active,
                    "db bind address 10.0.0.5 (3 controllers)",
                ),
            },
        );
        // Converged: nothing to write, so no reload either.
        check(
            with(|o| {
                let relation = o.relation.as_mut().expect("relation");
                relation.own = bag(&[("agent-id", "0"), ("db-bind-address", "10.0.0.5")]);
                relation.app = bag(&[("db-bind-addresses", THREE)]);
                relation.peers.insert("controller/1".into(), bag(PEER1));
                relation.peers.insert("controller/2".into(), bag(PEER2));
                o.conf =
                    conf("db-bind-addresses:\n  '0': 10.0.0.5\n  '1': 10.0.0.6\n  '2': 10.0.0.7\n");
            }),
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
        // A departed peer is no longer listed: its entry goes away.
        check(
            with(|o| {
                let relation = o.relation.as_mut().expect("relation");
                relation.own = bag(&[("agent-id", "0"), ("db-bind-address", "10.0.0.5")]);
                relation.app = bag(&[("db-bind-addresses", THREE)]);
                relation.peers.insert("controller/1".into(), bag(PEER1));
                o.conf =
                    conf("db-bind-addresses:\n  '0': 10.0.0.5\n  '1': 10.0.0.6\n  '2': 10.0.0.7\n");
            }),
            Want {
                unit: &[],
                app: &[("db-bind-addresses", r#"{"0":"10.0.0.5","1":"10.0.0.6"}"#)],
                conf: Some(r#"{"0":"10.0.0.5","1":"10.0.0.6"}"#),
                status: (
                    StatusKind::Active,
                    "db bind address 10.0.0.5 (2 controllers)",
                ),
            },
        );
        // Peers with invalid or half-written bags are left out.
        check(
            with(|o| {
                let relation = o.relation.as_mut().expect("relation");
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
                app: &[("db-bind-addresses", r#"{"0":"10.0.0.5"}"#)],
                conf: Some(r#"{"0":"10.0.0.5"}"#),
                status: (
                    StatusKind::Active,
                    "db bind address 10.0.0.5 (1 controller)",
                ),
            },
        );
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
    fn address_problems_remove_the_stale_address() {
        let published = |o: &mut Observed| {
            o.relation.as_mut().expect("relation").own =
                bag(&[("agent-id", "0"), ("db-bind-address", "10.0.0.5")]);
            o.relation.as_mut().expect("relation").app =
                bag(&[("db-bind-addresses", r#"{"0":"10.0.0.5"}"#)]);
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
                app: &[("db-bind-addresses", "{}")],
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
                        reason: crate::address::DropReason::NeverValid(crate::address::Scope::LocalMachine),
                    }],
                }));
            }),
            Want {
                unit: &[("db-bind-address", "")],
                app: &[("db-bind-addresses", "{}")],
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
                o.choice = Some(Err(NetworkError::Malformed("expected value at line 1 column 1".into())));
            }),
            Want {
                unit: &[("db-bind-address", "")],
                app: &[("db-bind-addresses", "{}")],
                conf: None,
                status: (
                    StatusKind::Blocked,
                    "cannot read the db-cluster binding's addresses: network-get printed malformed \
                     JSON: expected value at line 1 column 1",
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
                app: &[("db-bind-addresses", "{}")],
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
                app: &[("db-bind-addresses", r#"{"0":"10.0.0.5"}"#)],
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
}
