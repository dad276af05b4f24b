//! What agents keep to reach the controllers: the API addresses they may dial (chosen from
//! the controllers' `servers` and the `juju-mgmt-space` setting), `agent.conf` in Juju's
//! shape with its `apiaddresses` replaced, and the small connection-status file a machine
//! agent writes.
//!
//! **Architecture Invariant:** no IO; the agent reads and writes the files, this module
//! only decides and renders.

use std::net::{IpAddr, SocketAddr};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::api::HostPort;
use crate::scope::{scope, Scope};

/// The controller config key restricting the addresses agents get to one space.
pub const MGMT_SPACE_KEY: &str = "juju-mgmt-space";

/// The key of `agent.conf` that holds the API addresses.
pub const API_ADDRESSES_KEY: &str = "apiaddresses";

/// The agent-usable addresses chosen for agents, and why some were not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// `ip:port` (IPv6 bracketed), each once, cloud-local before fan before public, and
    /// within a tier in the order of `servers`.
    pub addresses: Vec<String>,
    /// Set when `juju-mgmt-space` named a space none of the usable addresses is in: then
    /// every usable address is listed, as Juju does.
    pub warning: Option<String>,
}

/// The tier an address is tried in: cloud-local first, then fan, then public; `None` for
/// what agents must not dial (machine-local, link-local, not unicast).
pub fn agent_tier(ip: IpAddr) -> Option<Scope> {
    let scope = scope(ip);
    scope.usable_by_agents().then_some(scope)
}

/// Chooses the addresses agents may dial from a login's `servers` (per controller) and
/// `juju-mgmt-space` (empty: unset). An address is judged by its IP (its stated scope is
/// not trusted); one that is not an IP is left out.
pub fn select_for_agents(servers: &[Vec<HostPort>], mgmt_space: &str) -> Selection {
    let usable: Vec<(Scope, &HostPort, SocketAddr)> = servers
        .iter()
        .flatten()
        .filter_map(|host| {
            let address = host.socket_address()?;
            Some((agent_tier(address.ip())?, host, address))
        })
        .collect();
    let in_space: Vec<&(Scope, &HostPort, SocketAddr)> = usable
        .iter()
        .filter(|(_, host, _)| mgmt_space.is_empty() || host.space_name == mgmt_space)
        .collect();
    let (chosen, warning) = if in_space.is_empty() && !mgmt_space.is_empty() && !usable.is_empty() {
        (
            usable.iter().collect::<Vec<_>>(),
            Some(format!(
                "no controller address is in the {MGMT_SPACE_KEY} space {mgmt_space:?}: using all {} usable addresses",
                usable.len()
            )),
        )
    } else {
        (in_space, None)
    };
    let mut ordered: Vec<(Scope, String)> = Vec::new();
    for (tier, _, address) in chosen {
        let text = address.to_string();
        if !ordered.iter().any(|(_, seen)| seen == &text) {
            ordered.push((*tier, text));
        }
    }
    // Stable: the order of `servers` holds within a tier.
    ordered.sort_by_key(|(tier, _)| *tier);
    Selection {
        addresses: ordered.into_iter().map(|(_, text)| text).collect(),
        warning,
    }
}

/// The space of `ip` from `(space, cidr)` rows: the first containing subnet's; empty when
/// none does (or a row's CIDR does not parse).
pub fn space_of(ip: IpAddr, spaces: &[(String, String)]) -> String {
    let ip = ip.to_canonical();
    spaces
        .iter()
        .find(|(_, cidr)| {
            cidr.parse::<IpNetwork>()
                .is_ok_and(|network| network.contains(ip))
        })
        .map(|(name, _)| name.clone())
        .unwrap_or_default()
}

/// A version for an address list, the same on every controller for the same content (so an
/// agent that reconnects elsewhere does not see a change that is not one): FNV-1a over the
/// JSON of `servers` and the management space.
pub fn addresses_version(servers: &[Vec<HostPort>], mgmt_space: &str) -> u64 {
    let json = serde_json::to_vec(&(servers, mgmt_space)).expect("plain data serializes");
    json.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Why an `agent.conf` could not be read or updated.
#[derive(Debug, thiserror::Error)]
pub enum AgentConfError {
    #[error("agent.conf is not YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("agent.conf is not a mapping")]
    NotAMapping,
    #[error("agent.conf has no {0:?}")]
    Missing(&'static str),
    #[error("agent.conf's {0:?} is not {1}")]
    Malformed(&'static str, &'static str),
}

/// What an agent reads from its `agent.conf` (Juju's keys; every other key is kept by
/// [`with_api_addresses`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConf {
    /// `machine-3`, `controller-0`: who the agent logs in as.
    pub tag: String,
    /// The agent's password (`apipassword`); empty for a controller's own file.
    pub api_password: String,
    /// The controller CA in PEM (`cacert`).
    pub ca_cert: String,
    /// `ip:port` of the controllers, as last written.
    pub api_addresses: Vec<String>,
}

/// Parses `agent.conf`; `tag`, `cacert` and `apipassword` must be strings, `apiaddresses`
/// a list of strings (missing: empty).
pub fn parse_agent_conf(text: &str) -> Result<AgentConf, AgentConfError> {
    let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)?;
    let map = document.as_mapping().ok_or(AgentConfError::NotAMapping)?;
    let string = |key: &'static str| -> Result<String, AgentConfError> {
        match map.get(key) {
            None => Err(AgentConfError::Missing(key)),
            Some(value) => value
                .as_str()
                .map(str::to_owned)
                .ok_or(AgentConfError::Malformed(key, "a string")),
        }
    };
    let api_addresses = match map.get(API_ADDRESSES_KEY) {
        None | Some(serde_yaml_ng::Value::Null) => Vec::new(),
        Some(serde_yaml_ng::Value::Sequence(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or(AgentConfError::Malformed(
                        API_ADDRESSES_KEY,
                        "a list of strings",
                    ))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(AgentConfError::Malformed(
                API_ADDRESSES_KEY,
                "a list of strings",
            ))
        }
    };
    Ok(AgentConf {
        tag: string("tag")?,
        api_password: string("apipassword").or_else(|e| match e {
            AgentConfError::Missing(_) => Ok(String::new()),
            other => Err(other),
        })?,
        ca_cert: string("cacert")?,
        api_addresses,
    })
}

/// `text` (an `agent.conf`, or empty for a new one) with `apiaddresses` set to `addresses`
/// and every other key kept with its value. Refuses an empty list: an agent never loses
/// every way to its controllers.
pub fn with_api_addresses(text: &str, addresses: &[String]) -> Result<String, AgentConfError> {
    if addresses.is_empty() {
        return Err(AgentConfError::Malformed(
            API_ADDRESSES_KEY,
            "a non-empty list",
        ));
    }
    let mut document: serde_yaml_ng::Value = if text.trim().is_empty() {
        serde_yaml_ng::Value::Mapping(Default::default())
    } else {
        serde_yaml_ng::from_str(text)?
    };
    let map = document
        .as_mapping_mut()
        .ok_or(AgentConfError::NotAMapping)?;
    map.insert(
        API_ADDRESSES_KEY.into(),
        serde_yaml_ng::Value::Sequence(addresses.iter().map(|a| a.as_str().into()).collect()),
    );
    Ok(serde_yaml_ng::to_string(&document)?)
}

/// The connection-status file a machine agent writes (`<agent dir>/api-connection.json`):
/// which controller its API caller is logged in to, for `juju-sim status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiConnection {
    /// The agent's tag.
    pub tag: String,
    /// `connected`, or `dialing` while it has no connection.
    pub state: String,
    /// The address logged in to (empty while dialing).
    pub endpoint: String,
    /// The first address this connection's shuffled dial order tried.
    #[serde(rename = "first-dial")]
    pub first_dial: String,
    /// How many connections this agent process has made.
    pub connections: u64,
    /// Milliseconds since the Unix epoch of the last change of state.
    #[serde(rename = "since-ms")]
    pub since_ms: u64,
    /// Why the last connection ended or the last dial failed (empty if none did).
    #[serde(rename = "last-error")]
    pub last_error: String,
}

/// `<agent dir>/api-connection.json`'s file name.
pub const API_CONNECTION_NAME: &str = "api-connection.json";

#[cfg(test)]
mod tests {
    use super::*;

    fn host(value: &str, space: &str) -> HostPort {
        let ip: IpAddr = value.parse().expect("test ip");
        HostPort {
            value: value.into(),
            kind: if ip.is_ipv4() { "ipv4" } else { "ipv6" }.into(),
            scope: scope(ip).juju_name().into(),
            space_name: space.into(),
            port: 17070,
        }
    }

    #[test]
    fn selection_table() {
        let check = |servers: Vec<Vec<HostPort>>, space: &str, want: &[&str], warns: bool| {
            let got = select_for_agents(&servers, space);
            assert_eq!(got.addresses, want, "{servers:?} {space:?}");
            assert_eq!(got.warning.is_some(), warns, "{got:?}");
        };
        // Loopback and link-local are never an agent's; each address once.
        check(
            vec![
                vec![host("127.0.0.1", ""), host("10.0.0.1", "alpha")],
                vec![host("169.254.3.3", ""), host("10.0.0.2", "alpha")],
                vec![host("10.0.0.2", "alpha"), host("fe80::1", "")],
            ],
            "",
            &["10.0.0.1:17070", "10.0.0.2:17070"],
            false,
        );
        // Cloud-local before fan before public, server order within a tier.
        check(
            vec![
                vec![host("8.8.8.8", ""), host("10.0.0.1", "")],
                vec![host("240.0.0.2", ""), host("fd00::2", "")],
            ],
            "",
            &[
                "10.0.0.1:17070",
                "[fd00::2]:17070",
                "240.0.0.2:17070",
                "8.8.8.8:17070",
            ],
            false,
        );
        // The management space keeps only its addresses.
        let two_spaces = vec![
            vec![host("10.0.0.1", "alpha"), host("10.1.0.1", "beta")],
            vec![host("10.0.0.2", "alpha"), host("10.1.0.2", "beta")],
        ];
        check(
            two_spaces.clone(),
            "beta",
            &["10.1.0.1:17070", "10.1.0.2:17070"],
            false,
        );
        check(
            two_spaces.clone(),
            "",
            &[
                "10.0.0.1:17070",
                "10.1.0.1:17070",
                "10.0.0.2:17070",
                "10.1.0.2:17070",
            ],
            false,
        );
        // A space with no usable address leaves all of them, with a warning.
        check(
            two_spaces,
            "gamma",
            &[
                "10.0.0.1:17070",
                "10.1.0.1:17070",
                "10.0.0.2:17070",
                "10.1.0.2:17070",
            ],
            true,
        );
        // Only a loopback in the space: it does not count.
        check(
            vec![vec![host("127.0.0.1", "beta"), host("10.0.0.1", "alpha")]],
            "beta",
            &["10.0.0.1:17070"],
            true,
        );
        // Nothing usable: empty, and no claim about the space.
        check(vec![vec![host("127.0.0.1", "")]], "beta", &[], false);
        check(vec![], "", &[], false);
        // A value that is no IP is left out.
        let mut odd = host("10.0.0.9", "");
        odd.value = "example.com".into();
        check(vec![vec![odd]], "", &[], false);
    }

    #[test]
    fn space_of_table() {
        let spaces = vec![
            ("alpha".to_owned(), "10.131.0.0/24".to_owned()),
            ("junk".to_owned(), "not a cidr".to_owned()),
            ("beta".to_owned(), "fd00:131::/64".to_owned()),
        ];
        let check = |ip: &str, want: &str| {
            assert_eq!(
                space_of(ip.parse().expect("test ip"), &spaces),
                want,
                "{ip}"
            );
        };
        check("10.131.0.12", "alpha");
        check("fd00:131::5", "beta");
        check("::ffff:10.131.0.7", "alpha");
        check("10.132.0.1", "");
        check("127.0.0.1", "");
    }

    #[test]
    fn versions_follow_content_only() {
        let a = vec![vec![host("10.0.0.1", "alpha")]];
        let b = vec![vec![host("10.0.0.2", "alpha")]];
        assert_eq!(addresses_version(&a, ""), addresses_version(&a.clone(), ""));
        assert_ne!(addresses_version(&a, ""), addresses_version(&b, ""));
        assert_ne!(addresses_version(&a, ""), addresses_version(&a, "alpha"));
    }

    #[test]
    fn agent_conf_keeps_other_keys_and_never_empties() {
        let text = "tag: machine-3\ncontroller: controller-abc\nmodel: model-def\napipassword: secret\ncacert: |\n  -----BEGIN CERTIFICATE-----\n  x\n  -----END CERTIFICATE-----\napiaddresses:\n- 10.0.0.1:17070\nupgradedToVersion: 4.0.0\n";
        let conf = parse_agent_conf(text).expect("parses");
        assert_eq!(conf.tag, "machine-3");
        assert_eq!(conf.api_password, "secret");
        assert_eq!(conf.api_addresses, ["10.0.0.1:17070"]);
        let new = vec!["10.0.0.2:17070".to_owned(), "10.0.0.3:17070".to_owned()];
        let rewritten = with_api_addresses(text, &new).expect("rewrites");
        let again = parse_agent_conf(&rewritten).expect("parses again");
        assert_eq!(again.api_addresses, new);
        let before: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(text).expect("yaml");
        let after: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(&rewritten).expect("yaml");
        for (key, value) in &before {
            if key.as_str() != Some(API_ADDRESSES_KEY) {
                assert_eq!(after.get(key), Some(value), "{key:?}");
            }
        }
        assert!(with_api_addresses(text, &[]).is_err());
        assert!(with_api_addresses("- a list\n", &new).is_err());
        // A new file holds just the list.
        let fresh = with_api_addresses("", &new).expect("a new file");
        assert!(fresh.contains("apiaddresses"));
    }

    #[test]
    fn malformed_agent_confs_are_named() {
        let check = |text: &str, want: &str| {
            let got = parse_agent_conf(text)
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert_eq!(got, Err(want.to_owned()), "{text}");
        };
        check("- x\n", "agent.conf is not a mapping");
        check("cacert: x\n", "agent.conf has no \"tag\"");
        check(
            "tag: machine-1\ncacert: x\napiaddresses: 3\n",
            "agent.conf's \"apiaddresses\" is not a list of strings",
        );
        check(
            "tag: [1]\ncacert: x\n",
            "agent.conf's \"tag\" is not a string",
        );
    }
}
