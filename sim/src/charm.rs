//! A charm as the simulator deploys it: its endpoints (`metadata.yaml`, or `charmcraft.yaml`
//! for a charm that keeps its metadata there), its config options with their types and
//! defaults (`config.yaml`), and its actions with their parameters (`actions.yaml`). Juju's
//! rules for config values (types `string`, `int`, `float`, `boolean`, `secret`; unknown keys
//! refused) and action parameters (defaults from the schema, unknown actions refused) are
//! decided here. Only [`Charm::load`] reads files.
//!
//! The controller charm of this repository is [`Charm::builtin`]: its three files are
//! compiled in, and its program is the `dispatch` binary rather than a charm dir.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use serde_yaml_ng::Value as Yaml;

/// The controller charm's metadata, compiled in so it never drifts from the charm.
const BUILTIN_METADATA: &str = include_str!("../../metadata.yaml");
/// The controller charm's options.
const BUILTIN_CONFIG: &str = include_str!("../../config.yaml");
/// The controller charm's actions.
const BUILTIN_ACTIONS: &str = include_str!("../../actions.yaml");

/// The endpoint every machine charm has without declaring it (`provides: juju-info`).
pub const JUJU_INFO: &str = "juju-info";

/// Why a charm cannot be read or a value is refused, in Juju's words where Juju has them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CharmError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: no metadata.yaml (or charmcraft.yaml with a name) in the charm dir")]
    NoMetadata { path: PathBuf },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("unknown option {0:?}")]
    UnknownOption(String),
    #[error("option {name:?} expected {kind}, got {got}")]
    BadValue {
        name: String,
        kind: String,
        got: String,
    },
    #[error("action {action:?} not defined on unit {unit:?}")]
    UnknownAction { action: String, unit: String },
    #[error("application {app:?} has no endpoint {endpoint:?}")]
    UnknownEndpoint { app: String, endpoint: String },
}

/// The role of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Peer,
    Requires,
    Provides,
    /// An `extra-bindings` entry: bindable, never related.
    Extra,
}

/// One config option.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigOption {
    /// `string`, `int`, `float`, `boolean` or `secret`.
    pub kind: String,
    /// The default; `None` when the option has none (then `config-get` omits it).
    pub default: Option<Value>,
}

/// One action.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ActionSpec {
    /// Each parameter's default, where its schema has one.
    pub defaults: BTreeMap<String, Value>,
}

/// A charm's metadata, options and actions.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Charm {
    /// The charm name (the application's name unless told otherwise).
    pub name: String,
    /// Every endpoint by name with its role (`juju-info` included).
    pub endpoints: BTreeMap<String, Role>,
    /// Every option by name.
    pub options: BTreeMap<String, ConfigOption>,
    /// Every action by name.
    pub actions: BTreeMap<String, ActionSpec>,
}

fn invalid(file: &str, message: impl Into<String>) -> CharmError {
    CharmError::Invalid {
        file: file.to_owned(),
        message: message.into(),
    }
}

fn parse_yaml(file: &str, text: &str) -> Result<Yaml, CharmError> {
    serde_yaml_ng::from_str(text).map_err(|e| invalid(file, e.to_string()))
}

fn to_json(value: &Yaml) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

impl Charm {
    /// The controller charm of this repository.
    pub fn builtin() -> Self {
        Self::parse(
            BUILTIN_METADATA,
            Some(BUILTIN_CONFIG),
            Some(BUILTIN_ACTIONS),
        )
        .expect("the repository's charm files are valid (checked by a unit test)")
    }

    /// Reads the charm in `dir`: `metadata.yaml` (else `charmcraft.yaml`, which may hold the
    /// metadata, `config:` and `actions:` itself), `config.yaml`, `actions.yaml`.
    pub fn load(dir: &Path) -> Result<Self, CharmError> {
        let read = |name: &str| -> Result<Option<String>, CharmError> {
            match std::fs::read_to_string(dir.join(name)) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(CharmError::Read {
                    path: dir.join(name),
                    message: e.to_string(),
                }),
            }
        };
        let metadata = read("metadata.yaml")?;
        let charmcraft = read("charmcraft.yaml")?;
        let mut config = read("config.yaml")?;
        let mut actions = read("actions.yaml")?;
        let metadata = match (metadata, &charmcraft) {
            (Some(metadata), _) => metadata,
            (None, Some(charmcraft)) => {
                let document = parse_yaml("charmcraft.yaml", charmcraft)?;
                if document.get("name").is_none() {
                    return Err(CharmError::NoMetadata {
                        path: dir.to_owned(),
                    });
                }
                // charmcraft.yaml's `config:` and `actions:` are the files' contents.
                let section = |key: &str| {
                    document
                        .get(key)
                        .map(|v| serde_yaml_ng::to_string(v).unwrap_or_default())
                };
                config = config.or_else(|| section("config"));
                actions = actions.or_else(|| section("actions"));
                charmcraft.clone()
            }
            (None, None) => {
                return Err(CharmError::NoMetadata {
                    path: dir.to_owned(),
                })
            }
        };
        Self::parse(&metadata, config.as_deref(), actions.as_deref())
    }

    /// Builds a charm from the texts of its files.
    pub fn parse(
        metadata: &str,
        config: Option<&str>,
        actions: Option<&str>,
    ) -> Result<Self, CharmError> {
        let document = parse_yaml("metadata.yaml", metadata)?;
        let name = document
            .get("name")
            .and_then(Yaml::as_str)
            .ok_or_else(|| invalid("metadata.yaml", "no name"))?
            .to_owned();
        let mut endpoints = BTreeMap::new();
        endpoints.insert(JUJU_INFO.to_owned(), Role::Provides);
        for (key, role) in [
            ("peers", Role::Peer),
            ("requires", Role::Requires),
            ("provides", Role::Provides),
            ("extra-bindings", Role::Extra),
        ] {
            let Some(section) = document.get(key) else {
                continue;
            };
            let Some(map) = section.as_mapping() else {
                if section.is_null() {
                    continue;
                }
                return Err(invalid("metadata.yaml", format!("{key} is not a mapping")));
            };
            for endpoint in map.keys() {
                let endpoint = endpoint.as_str().ok_or_else(|| {
                    invalid("metadata.yaml", format!("a {key} name is not a string"))
                })?;
                if endpoints.insert(endpoint.to_owned(), role).is_some() && endpoint != JUJU_INFO {
                    return Err(invalid(
                        "metadata.yaml",
                        format!("endpoint {endpoint:?} is declared twice"),
                    ));
                }
            }
        }
        let mut options = BTreeMap::new();
        if let Some(config) = config {
            let document = parse_yaml("config.yaml", config)?;
            if let Some(map) = document.get("options").and_then(Yaml::as_mapping) {
                for (key, option) in map {
                    let key = key
                        .as_str()
                        .ok_or_else(|| invalid("config.yaml", "an option name is not a string"))?;
                    let kind = option
                        .get("type")
                        .and_then(Yaml::as_str)
                        .unwrap_or("string")
                        .to_owned();
                    if !matches!(
                        kind.as_str(),
                        "string" | "int" | "float" | "boolean" | "secret"
                    ) {
                        return Err(invalid(
                            "config.yaml",
                            format!("option {key:?} has unknown type {kind:?}"),
                        ));
                    }
                    let default = option.get("default").filter(|d| !d.is_null()).map(to_json);
                    let option = ConfigOption { kind, default };
                    if let Some(default) = &option.default {
                        option
                            .coerce(key, default)
                            .map_err(|e| invalid("config.yaml", e.to_string()))?;
                    }
                    options.insert(key.to_owned(), option);
                }
            }
        }
        let mut action_specs = BTreeMap::new();
        if let Some(actions) = actions {
            let document = parse_yaml("actions.yaml", actions)?;
            if let Some(map) = document.as_mapping() {
                for (name, spec) in map {
                    let name = name
                        .as_str()
                        .ok_or_else(|| invalid("actions.yaml", "an action name is not a string"))?;
                    let mut defaults = BTreeMap::new();
                    if let Some(params) = spec.get("params").and_then(Yaml::as_mapping) {
                        for (param, schema) in params {
                            if let (Some(param), Some(default)) =
                                (param.as_str(), schema.get("default"))
                            {
                                defaults.insert(param.to_owned(), to_json(default));
                            }
                        }
                    }
                    action_specs.insert(name.to_owned(), ActionSpec { defaults });
                }
            }
        }
        Ok(Self {
            name,
            endpoints,
            options,
            actions: action_specs,
        })
    }

    /// The peer endpoints (each gets one relation when the application is deployed).
    pub fn peers(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .filter(|(_, role)| **role == Role::Peer)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The options with a default, as `config-get` prints them.
    pub fn defaults(&self) -> BTreeMap<String, Value> {
        self.options
            .iter()
            .filter_map(|(name, option)| option.default.clone().map(|d| (name.clone(), d)))
            .collect()
    }

    /// Checks one setting as `juju config` does: the option must exist and the value must
    /// be of its type. A string is parsed as the option's type (`juju config app n=3`); a
    /// typed value (from a bundle) is checked. Returns the value as stored.
    pub fn check_setting(&self, key: &str, value: &Value) -> Result<Value, CharmError> {
        let option = self
            .options
            .get(key)
            .ok_or_else(|| CharmError::UnknownOption(key.to_owned()))?;
        option.coerce(key, value)
    }

    /// An action's parameters: the schema's defaults overlaid with the given ones. An action
    /// the charm does not define is refused as Juju refuses it.
    pub fn action_params(
        &self,
        unit: &str,
        action: &str,
        given: serde_json::Map<String, Value>,
    ) -> Result<serde_json::Map<String, Value>, CharmError> {
        let spec = self
            .actions
            .get(action)
            .ok_or_else(|| CharmError::UnknownAction {
                action: action.to_owned(),
                unit: unit.to_owned(),
            })?;
        let mut params: serde_json::Map<String, Value> = spec
            .defaults
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        params.extend(given);
        Ok(params)
    }

    /// Refuses an endpoint the charm does not have (`""`, the default binding, is always
    /// there).
    pub fn check_endpoint(&self, app: &str, endpoint: &str) -> Result<(), CharmError> {
        if endpoint.is_empty() || self.endpoints.contains_key(endpoint) {
            Ok(())
        } else {
            Err(CharmError::UnknownEndpoint {
                app: app.to_owned(),
                endpoint: endpoint.to_owned(),
            })
        }
    }
}

impl ConfigOption {
    /// The value as this option stores it, or Juju's refusal.
    fn coerce(&self, name: &str, value: &Value) -> Result<Value, CharmError> {
        let bad = |got: String| CharmError::BadValue {
            name: name.to_owned(),
            kind: self.kind.clone(),
            got,
        };
        match (self.kind.as_str(), value) {
            ("string" | "secret", Value::String(_)) => Ok(value.clone()),
            // A YAML scalar given for a string option is its text (`juju config app x=3`).
            ("string" | "secret", Value::Number(n)) => Ok(Value::String(n.to_string())),
            ("string" | "secret", Value::Bool(b)) => Ok(Value::String(b.to_string())),
            ("int", Value::Number(n)) if n.is_i64() => Ok(value.clone()),
            ("int", Value::String(text)) => text
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| bad(format!("{text:?}"))),
            ("float", Value::Number(n)) => Ok(Value::from(n.as_f64().unwrap_or_default())),
            ("float", Value::String(text)) => text
                .trim()
                .parse::<f64>()
                .map(Value::from)
                .map_err(|_| bad(format!("{text:?}"))),
            ("boolean", Value::Bool(_)) => Ok(value.clone()),
            ("boolean", Value::String(text)) => parse_go_bool(text)
                .map(Value::Bool)
                .ok_or_else(|| bad(format!("{text:?}"))),
            (_, other) => Err(bad(other.to_string())),
        }
    }
}

/// Go's `strconv.ParseBool`: what Juju accepts for a boolean (`--app=False`, `x=t`).
pub fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_charm_is_the_repository_charm() {
        let charm = Charm::builtin();
        assert_eq!(charm.name, "controller");
        assert_eq!(charm.peers(), ["db-cluster"]);
        assert_eq!(charm.endpoints.get(JUJU_INFO), Some(&Role::Provides));
        assert_eq!(
            charm.defaults().get("address-family"),
            Some(&Value::from("auto"))
        );
        assert!(charm.actions.contains_key("cluster-status"));
        assert_eq!(
            charm.actions["recover-cluster"].defaults.get("confirm"),
            Some(&Value::Bool(false))
        );
    }

    const METADATA: &str = "name: tiny\npeers:\n  replicas:\n    interface: tiny_peers\n\
        requires:\n  db:\n    interface: pgsql\nprovides:\n  website:\n    interface: http\n\
        extra-bindings:\n  admin:\n";
    const CONFIG: &str = "options:\n  greeting:\n    type: string\n    default: hello\n\
        \x20 port:\n    type: int\n    default: 8080\n  ratio:\n    type: float\n\
        \x20 debug:\n    type: boolean\n    default: false\n";
    const ACTIONS: &str =
        "greet:\n  params:\n    name:\n      type: string\n      default: world\n\
        \x20   loud:\n      type: boolean\n";

    fn tiny() -> Charm {
        Charm::parse(METADATA, Some(CONFIG), Some(ACTIONS)).expect("valid charm")
    }

    #[test]
    fn metadata_gives_every_endpoint_its_role() {
        let charm = tiny();
        let roles: Vec<(&str, Role)> = charm
            .endpoints
            .iter()
            .map(|(name, role)| (name.as_str(), *role))
            .collect();
        assert_eq!(
            roles,
            vec![
                ("admin", Role::Extra),
                ("db", Role::Requires),
                ("juju-info", Role::Provides),
                ("replicas", Role::Peer),
                ("website", Role::Provides),
            ]
        );
        assert_eq!(charm.peers(), ["replicas"]);
        // `ratio` has no default: config-get leaves it out.
        assert_eq!(
            charm.defaults(),
            BTreeMap::from([
                ("debug".to_owned(), Value::Bool(false)),
                ("greeting".to_owned(), Value::from("hello")),
                ("port".to_owned(), Value::from(8080)),
            ])
        );
        assert_eq!(
            charm
                .check_endpoint("tiny", "nope")
                .map_err(|e| e.to_string()),
            Err("application \"tiny\" has no endpoint \"nope\"".into())
        );
        assert_eq!(charm.check_endpoint("tiny", ""), Ok(()));
    }

    #[test]
    fn config_setting_table() {
        let charm = tiny();
        let check = |key: &str, value: Value, expected: Result<Value, &str>| {
            let got = charm.check_setting(key, &value).map_err(|e| e.to_string());
            assert_eq!(got, expected.map_err(str::to_owned), "{key}={value}");
        };
        check("greeting", Value::from("hi"), Ok(Value::from("hi")));
        check("greeting", Value::from(3), Ok(Value::from("3")));
        check("port", Value::from("9000"), Ok(Value::from(9000)));
        check("port", Value::from(9000), Ok(Value::from(9000)));
        check(
            "port",
            Value::from("ninety"),
            Err("option \"port\" expected int, got \"ninety\""),
        );
        check(
            "port",
            Value::from(1.5),
            Err("option \"port\" expected int, got 1.5"),
        );
        check("ratio", Value::from("0.5"), Ok(Value::from(0.5)));
        check("debug", Value::from("True"), Ok(Value::Bool(true)));
        check("debug", Value::from(true), Ok(Value::Bool(true)));
        check(
            "debug",
            Value::from("yes"),
            Err("option \"debug\" expected boolean, got \"yes\""),
        );
        check(
            "colour",
            Value::from("red"),
            Err("unknown option \"colour\""),
        );
    }

    #[test]
    fn action_params_take_the_schema_defaults() {
        let charm = tiny();
        let given: serde_json::Map<String, Value> = [("loud".to_owned(), Value::Bool(true))]
            .into_iter()
            .collect();
        let params = charm
            .action_params("tiny/0", "greet", given)
            .expect("defined");
        assert_eq!(
            Value::Object(params),
            serde_json::json!({"loud": true, "name": "world"})
        );
        assert_eq!(
            charm
                .action_params("tiny/0", "wave", serde_json::Map::new())
                .map_err(|e| e.to_string()),
            Err("action \"wave\" not defined on unit \"tiny/0\"".into())
        );
    }

    #[test]
    fn bad_charms_are_refused_with_the_file_named() {
        let check = |metadata: &str, config: Option<&str>, expected: &str| {
            let got = Charm::parse(metadata, config, None).map_err(|e| e.to_string());
            assert_eq!(got, Err(expected.to_owned()), "{metadata}");
        };
        check("summary: x\n", None, "metadata.yaml: no name");
        check(
            "name: x\npeers:\n  a: {}\nrequires:\n  a: {}\n",
            None,
            "metadata.yaml: endpoint \"a\" is declared twice",
        );
        check(
            "name: x\n",
            Some("options:\n  n:\n    type: integer\n"),
            "config.yaml: option \"n\" has unknown type \"integer\"",
        );
        check(
            "name: x\n",
            Some("options:\n  n:\n    type: int\n    default: many\n"),
            "config.yaml: option \"n\" expected int, got \"many\"",
        );
    }

    #[test]
    fn a_charmcraft_yaml_can_hold_everything() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("charmcraft.yaml"),
            "type: charm\nname: crafted\npeers:\n  mates:\n    interface: m\n\
             config:\n  options:\n    colour:\n      type: string\n      default: blue\n\
             actions:\n  paint:\n    params:\n      coats:\n        type: integer\n        default: 2\n",
        )
        .expect("write");
        let charm = Charm::load(dir.path()).expect("loads");
        assert_eq!(charm.name, "crafted");
        assert_eq!(charm.peers(), ["mates"]);
        assert_eq!(charm.defaults()["colour"], Value::from("blue"));
        assert_eq!(charm.actions["paint"].defaults["coats"], Value::from(2));
        let empty = tempfile::tempdir().expect("temp dir");
        assert!(matches!(
            Charm::load(empty.path()),
            Err(CharmError::NoMetadata { .. })
        ));
    }
}
