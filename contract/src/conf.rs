//! `controller.conf`: a YAML document whose top-level key `db-bind-addresses` maps each
//! controller's agent id to the bare IP its Dqlite node binds to. The charm owns that key;
//! every other key in the file belongs to the agent and survives a rewrite untouched.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_yaml_ng::{Mapping, Value};

/// The top-level key the charm owns.
pub const BIND_ADDRESSES_KEY: &str = "db-bind-addresses";

/// Agent id (`"0"`, `"1"`, ...) to that controller's Dqlite bind IP, sorted by agent id.
pub type BindAddresses = BTreeMap<String, IpAddr>;

/// Why a `controller.conf` could not be read as one.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfError {
    #[error("controller.conf is empty")]
    Empty,
    #[error("controller.conf is not valid YAML: {0}")]
    Yaml(String),
    #[error("controller.conf is not a YAML mapping at the top level")]
    NotAMapping,
    #[error("controller.conf key {BIND_ADDRESSES_KEY} is not a mapping of agent id to address")]
    BindAddressesNotAMapping,
    #[error("controller.conf key {BIND_ADDRESSES_KEY} has a key that is not an agent id: {0}")]
    BadAgentId(String),
    #[error("controller.conf gives agent {agent_id} the address {value:?}, which is not an IP")]
    BadAddress { agent_id: String, value: String },
}

/// A parsed `controller.conf`: the bind addresses plus every other key, kept in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ControllerConf {
    /// The whole document, `db-bind-addresses` included, so unknown keys round-trip.
    document: Mapping,
    /// The validated view of `db-bind-addresses` (empty when the key is absent).
    bind_addresses: BindAddresses,
    /// Whether the file carried `db-bind-addresses` at all (absent differs from empty).
    has_bind_addresses: bool,
}

impl ControllerConf {
    /// Parses the file's text. Every malformed part is an error; nothing is guessed.
    pub fn parse(text: &str) -> Result<Self, ConfError> {
        if text.trim().is_empty() {
            return Err(ConfError::Empty);
        }
        let value: Value =
            serde_yaml_ng::from_str(text).map_err(|e| ConfError::Yaml(e.to_string()))?;
        let document = match value {
            Value::Mapping(mapping) => mapping,
            Value::Null => return Err(ConfError::Empty),
            _ => return Err(ConfError::NotAMapping),
        };
        let (bind_addresses, has_bind_addresses) = match document.get(BIND_ADDRESSES_KEY) {
            None | Some(Value::Null) => (BindAddresses::new(), false),
            Some(Value::Mapping(map)) => (parse_bind_addresses(map)?, true),
            Some(_) => return Err(ConfError::BindAddressesNotAMapping),
        };
        Ok(Self {
            document,
            bind_addresses,
            has_bind_addresses,
        })
    }

    /// The map of agent id to bind IP (empty when the key is absent).
    pub fn bind_addresses(&self) -> &BindAddresses {
        &self.bind_addresses
    }

    /// Whether the file names `db-bind-addresses` at all.
    pub fn has_bind_addresses(&self) -> bool {
        self.has_bind_addresses
    }

    /// Replaces the bind addresses, keeping every other key where it was.
    pub fn set_bind_addresses(&mut self, addresses: BindAddresses) {
        let map: Mapping = addresses
            .iter()
            .map(|(id, ip)| (Value::String(id.clone()), Value::String(ip.to_string())))
            .collect();
        self.document.insert(
            Value::String(BIND_ADDRESSES_KEY.into()),
            Value::Mapping(map),
        );
        self.bind_addresses = addresses;
        self.has_bind_addresses = true;
    }

    /// Renders the document as YAML text.
    pub fn render(&self) -> String {
        // A Mapping of plain scalars always serializes; failure would be a serde_yaml_ng bug.
        serde_yaml_ng::to_string(&self.document).expect("a YAML mapping of scalars serializes")
    }
}

fn parse_bind_addresses(map: &Mapping) -> Result<BindAddresses, ConfError> {
    let mut addresses = BindAddresses::new();
    for (key, value) in map {
        let agent_id = match key {
            Value::String(s) if is_agent_id(s) => s.clone(),
            Value::Number(n) if n.as_u64().is_some() => n.to_string(),
            other => return Err(ConfError::BadAgentId(scalar_text(other))),
        };
        let text = match value {
            Value::String(s) => s.clone(),
            other => scalar_text(other),
        };
        let ip = text.parse::<IpAddr>().map_err(|_| ConfError::BadAddress {
            agent_id: agent_id.clone(),
            value: text,
        })?;
        addresses.insert(agent_id, ip);
    }
    Ok(addresses)
}

/// Controller agent ids are machine ids: decimal numbers.
pub fn is_agent_id(text: &str) -> bool {
    !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit())
}

fn scalar_text(value: &Value) -> String {
    serde_yaml_ng::to_string(value)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test ip")
    }

    #[test]
    fn parse_table() {
        let check = |text: &str, expected: Result<Vec<(&str, &str)>, ConfError>| {
            let got = ControllerConf::parse(text).map(|c| {
                c.bind_addresses()
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect::<Vec<_>>()
            });
            let expected = expected.map(|pairs| {
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), ip(v)))
                    .collect()
            });
            assert_eq!(got, expected, "{text:?}");
        };
        check(
            "db-bind-addresses:\n  '0': 10.0.0.1\n",
            Ok(vec![("0", "10.0.0.1")]),
        );
        check(
            "db-bind-addresses:\n  1: 10.0.0.2\n  0: fc00::1\n",
            Ok(vec![("0", "fc00::1"), ("1", "10.0.0.2")]),
        );
        check("other: 1\n", Ok(vec![]));
        check("db-bind-addresses: {}\n", Ok(vec![]));
        check("", Err(ConfError::Empty));
        check("  \n", Err(ConfError::Empty));
        check("~\n", Err(ConfError::Empty));
        check("- a\n", Err(ConfError::NotAMapping));
        check(
            "db-bind-addresses: [1]\n",
            Err(ConfError::BindAddressesNotAMapping),
        );
        check(
            "db-bind-addresses:\n  x: 10.0.0.1\n",
            Err(ConfError::BadAgentId("x".into())),
        );
        check(
            "db-bind-addresses:\n  '0': 10.0.0\n",
            Err(ConfError::BadAddress {
                agent_id: "0".into(),
                value: "10.0.0".into(),
            }),
        );
        check(
            "db-bind-addresses:\n  '0': 10.0.0.1:17666\n",
            Err(ConfError::BadAddress {
                agent_id: "0".into(),
                value: "10.0.0.1:17666".into(),
            }),
        );
        assert!(matches!(
            ControllerConf::parse("db-bind-addresses: {'0': [\n"),
            Err(ConfError::Yaml(_))
        ));
    }

    #[test]
    fn rewrite_keeps_other_keys_in_place() {
        let mut conf = ControllerConf::parse(
            "api-port: 17070\ndb-bind-addresses:\n  '0': 10.0.0.1\nzz-last: keep\n",
        )
        .expect("valid conf");
        let mut map = BindAddresses::new();
        map.insert("1".into(), ip("10.0.0.2"));
        map.insert("0".into(), ip("10.0.0.1"));
        conf.set_bind_addresses(map.clone());
        let text = conf.render();
        assert_eq!(
            text,
            "api-port: 17070\ndb-bind-addresses:\n  '0': 10.0.0.1\n  '1': 10.0.0.2\nzz-last: keep\n"
        );
        let again = ControllerConf::parse(&text).expect("rendered conf parses");
        assert_eq!(again.bind_addresses(), &map);
        assert_eq!(again, conf);
    }

    #[test]
    fn absent_and_empty_differ() {
        let absent = ControllerConf::parse("x: 1\n").expect("valid");
        assert!(!absent.has_bind_addresses());
        let empty = ControllerConf::parse("db-bind-addresses: {}\n").expect("valid");
        assert!(empty.has_bind_addresses());
    }
}
