//! The charm's options (config.yaml), validated from `config-get` output, and the paths they
//! resolve to. Every bad value is named in the error so the blocked status can say it.
//!
//! **Architecture Invariant:** no IO.

use std::path::{Path, PathBuf};

use controller_contract::paths;
use ipnetwork::IpNetwork;
use serde_json::{Map, Value};

use crate::address::{AddressFamily, Preferences};

/// Option names, as in config.yaml.
pub const DATA_DIR: &str = "data-dir";
pub const RELOAD_SOCKET: &str = "reload-socket";
pub const BIND_CIDR: &str = "bind-cidr";
pub const ADDRESS_FAMILY: &str = "address-family";
pub const RUN_DBACCESSOR: &str = "run-dbaccessor";

/// A bad option value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{option} must be a string, not {value}")]
    NotAString { option: &'static str, value: String },
    #[error("{option} {value:?} is not an absolute path")]
    NotAbsolute { option: &'static str, value: String },
    #[error("{BIND_CIDR} {value:?} is not a CIDR such as 10.0.0.0/24 ({reason})")]
    BadCidr { value: String, reason: String },
    #[error("{ADDRESS_FAMILY} {value:?} is not one of auto, ipv4, ipv6")]
    BadFamily { value: String },
    #[error("{option} must be true or false, not {value}")]
    NotABool { option: &'static str, value: String },
    #[error(
        "{DATA_DIR} is empty and the charm dir {charm_dir} is not <data-dir>/agents/unit-*/charm; \
         set {DATA_DIR}"
    )]
    NoDataDir { charm_dir: String },
}

/// The validated options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CharmConfig {
    /// `data-dir`, when set.
    pub data_dir: Option<PathBuf>,
    /// `reload-socket`, when set.
    pub reload_socket: Option<PathBuf>,
    /// `bind-cidr` and `address-family`.
    pub preferences: Preferences,
    /// `run-dbaccessor`: the charm installs and runs its own dbaccessor as a systemd service.
    pub run_dbaccessor: bool,
}

/// Where the charm reads and writes, once the options are resolved against the charm dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The agent data dir (`/var/lib/juju` on a machine).
    pub data_dir: PathBuf,
    /// The reload socket.
    pub reload_socket: PathBuf,
}

impl CharmConfig {
    /// Validates `config-get --format json` output. Unset options take their defaults.
    pub fn parse(options: &Map<String, Value>) -> Result<Self, ConfigError> {
        let data_dir = path_option(options, DATA_DIR)?;
        let reload_socket = path_option(options, RELOAD_SOCKET)?;
        let cidr = match string_option(options, BIND_CIDR)? {
            None => None,
            Some(text) => Some(parse_cidr(&text)?),
        };
        let family = match string_option(options, ADDRESS_FAMILY)?.as_deref() {
            None | Some("auto") => AddressFamily::Auto,
            Some("ipv4") => AddressFamily::Ipv4,
            Some("ipv6") => AddressFamily::Ipv6,
            Some(other) => {
                return Err(ConfigError::BadFamily {
                    value: other.to_owned(),
                })
            }
        };
        let run_dbaccessor = match options.get(RUN_DBACCESSOR) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(value)) => *value,
            Some(other) => {
                return Err(ConfigError::NotABool {
                    option: RUN_DBACCESSOR,
                    value: other.to_string(),
                })
            }
        };
        Ok(Self {
            data_dir,
            reload_socket,
            preferences: Preferences { cidr, family },
            run_dbaccessor,
        })
    }

    /// Resolves the data dir (derived from the charm dir when unset) and the reload socket.
    pub fn paths(&self, charm_dir: &Path) -> Result<Paths, ConfigError> {
        let data_dir = match &self.data_dir {
            Some(dir) => dir.clone(),
            None => {
                paths::data_dir_from_charm_dir(charm_dir).ok_or_else(|| ConfigError::NoDataDir {
                    charm_dir: charm_dir.display().to_string(),
                })?
            }
        };
        let reload_socket = self
            .reload_socket
            .clone()
            .unwrap_or_else(|| paths::reload_socket(&data_dir));
        Ok(Paths {
            data_dir,
            reload_socket,
        })
    }
}

/// A string option; unset, null and empty all mean "use the default".
fn string_option(
    options: &Map<String, Value>,
    option: &'static str,
) -> Result<Option<String>, ConfigError> {
    match options.get(option) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.trim().to_owned())),
        Some(other) => Err(ConfigError::NotAString {
            option,
            value: other.to_string(),
        }),
    }
}

fn path_option(
    options: &Map<String, Value>,
    option: &'static str,
) -> Result<Option<PathBuf>, ConfigError> {
    match string_option(options, option)? {
        None => Ok(None),
        Some(text) if Path::new(&text).is_absolute() => Ok(Some(PathBuf::from(text))),
        Some(text) => Err(ConfigError::NotAbsolute {
            option,
            value: text,
        }),
    }
}

fn parse_cidr(text: &str) -> Result<IpNetwork, ConfigError> {
    let bad = |reason: String| ConfigError::BadCidr {
        value: text.to_owned(),
        reason,
    };
    if !text.contains('/') {
        return Err(bad("no prefix length".into()));
    }
    let network: IpNetwork = text
        .parse()
        .map_err(|e: ipnetwork::IpNetworkError| bad(e.to_string()))?;
    // Normalise 10.1.2.3/8 to 10.0.0.0/8 so messages show the network the operator meant.
    IpNetwork::new(network.network(), network.prefix()).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_table() {
        let check = |options: Value, expected: Result<CharmConfig, ConfigError>| {
            let map = options
                .as_object()
                .expect("test options are an object")
                .clone();
            assert_eq!(CharmConfig::parse(&map), expected, "{options}");
        };
        let cidr = |text: &str| Some(text.parse::<IpNetwork>().expect("test cidr"));
        check(json!({}), Ok(CharmConfig::default()));
        check(
            json!({"data-dir": "", "reload-socket": "", "bind-cidr": "", "address-family": "auto"}),
            Ok(CharmConfig::default()),
        );
        check(
            json!({"data-dir": "/srv/juju", "reload-socket": "/run/x.socket", "bind-cidr": "10.1.2.3/16", "address-family": "ipv6"}),
            Ok(CharmConfig {
                data_dir: Some("/srv/juju".into()),
                reload_socket: Some("/run/x.socket".into()),
                preferences: Preferences {
                    cidr: cidr("10.1.0.0/16"),
                    family: AddressFamily::Ipv6,
                },
                run_dbaccessor: false,
            }),
        );
        check(
            json!({"bind-cidr": "fd00::/8"}),
            Ok(CharmConfig {
                preferences: Preferences {
                    cidr: cidr("fd00::/8"),
                    family: AddressFamily::Auto,
                },
                ..CharmConfig::default()
            }),
        );
        check(
            json!({"data-dir": "relative/dir"}),
            Err(ConfigError::NotAbsolute {
                option: DATA_DIR,
                value: "relative/dir".into(),
            }),
        );
        check(
            json!({"reload-socket": 5}),
            Err(ConfigError::NotAString {
                option: RELOAD_SOCKET,
                value: "5".into(),
            }),
        );
        check(
            json!({"run-dbaccessor": true}),
            Ok(CharmConfig {
                run_dbaccessor: true,
                ..CharmConfig::default()
            }),
        );
        check(
            json!({"run-dbaccessor": "yes"}),
            Err(ConfigError::NotABool {
                option: RUN_DBACCESSOR,
                value: "\"yes\"".into(),
            }),
        );
        check(
            json!({"address-family": "ipv5"}),
            Err(ConfigError::BadFamily {
                value: "ipv5".into(),
            }),
        );
        check(
            json!({"bind-cidr": "10.0.0.1"}),
            Err(ConfigError::BadCidr {
                value: "10.0.0.1".into(),
                reason: "no prefix length".into(),
            }),
        );
        let map = json!({"bind-cidr": "10.0.0.0/33"})
            .as_object()
            .expect("object")
            .clone();
        let error = CharmConfig::parse(&map).expect_err("prefix 33 is invalid");
        assert!(
            error
                .to_string()
                .starts_with("bind-cidr \"10.0.0.0/33\" is not a CIDR"),
            "{error}"
        );
    }

    #[test]
    fn paths_table() {
        let check =
            |config: CharmConfig, charm_dir: &str, expected: Result<(&str, &str), ConfigError>| {
                let expected = expected.map(|(data_dir, socket)| Paths {
                    data_dir: data_dir.into(),
                    reload_socket: socket.into(),
                });
                assert_eq!(config.paths(Path::new(charm_dir)), expected, "{charm_dir}");
            };
        check(
            CharmConfig::default(),
            "/var/lib/juju/agents/unit-controller-0/charm",
            Ok(("/var/lib/juju", "/var/lib/juju/configchange.socket")),
        );
        check(
            CharmConfig::default(),
            "/tmp/m1/agents/unit-controller-1/charm",
            Ok(("/tmp/m1", "/tmp/m1/configchange.socket")),
        );
        check(
            CharmConfig {
                data_dir: Some("/srv/juju".into()),
                ..CharmConfig::default()
            },
            "/anywhere",
            Ok(("/srv/juju", "/srv/juju/configchange.socket")),
        );
        check(
            CharmConfig {
                reload_socket: Some("/run/r.socket".into()),
                ..CharmConfig::default()
            },
            "/var/lib/juju/agents/unit-controller-0/charm",
            Ok(("/var/lib/juju", "/run/r.socket")),
        );
        check(
            CharmConfig::default(),
            "/opt/charm",
            Err(ConfigError::NoDataDir {
                charm_dir: "/opt/charm".into(),
            }),
        );
    }
}
