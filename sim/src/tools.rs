//! The hook tools, answered from the model: the same arguments, JSON (one line, sorted keys),
//! `ERROR <msg>` texts and exit codes (1 runtime, 2 usage) as Juju's. Relation writes are only
//! buffered in the running hook's context; the runner commits them when the hook exits 0.
//!
//! Output formats as Juju's `cmd` package writes them: `json` (one line), `yaml`, and the
//! default `smart` (strings bare, booleans `True`/`False`, nothing for null, lists and maps
//! as YAML). Flags may come before or after positionals; boolean flags take Go's
//! `--flag=value` forms (`--application=False`); `relation-set --file -` reads YAML (JSON
//! is YAML) from the tool's standard input, which the `juju-hook-tool` process hands in.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::model::{HookContext, LogLine, PendingWrite, State, Status, ToolCall};

/// Every tool name the emulator answers to (the runner links each into the tools dir).
pub const TOOL_NAMES: &[&str] = &[
    "action-fail",
    "action-get",
    "action-log",
    "action-set",
    "application-version-set",
    "close-port",
    "config-get",
    "credential-get",
    "goal-state",
    "is-leader",
    "juju-log",
    "juju-reboot",
    "leader-get",
    "leader-set",
    "network-get",
    "open-port",
    "opened-ports",
    "relation-get",
    "relation-ids",
    "relation-list",
    "relation-model-get",
    "relation-set",
    "resource-get",
    "secret-add",
    "secret-get",
    "secret-grant",
    "secret-ids",
    "secret-info-get",
    "secret-remove",
    "secret-revoke",
    "secret-set",
    "status-get",
    "status-set",
    "storage-add",
    "storage-get",
    "storage-list",
    "unit-get",
];

/// Whether `tool` reads its standard input for these arguments (`--file -`): the tool
/// process then hands it in as [`Caller::stdin`].
pub fn reads_stdin(tool: &str, args: &[String]) -> bool {
    matches!(tool, "relation-set" | "leader-set")
        && args
            .iter()
            .zip(args.iter().skip(1).map(Some).chain([None]))
            .any(|(arg, next)| {
                arg == "--file=-" || (arg == "--file" && next.map(String::as_str) == Some("-"))
            })
}

/// Whether `tool` only reads the model: its process then runs under the store's shared lock
/// and never rewrites the state ([`crate::store::Store::read_only`]), so that the many
/// reads of concurrent hooks run side by side. Its call is still logged.
pub fn is_read_only(tool: &str) -> bool {
    matches!(
        tool,
        "network-get"
            | "relation-ids"
            | "relation-list"
            | "relation-get"
            | "is-leader"
            | "config-get"
            | "status-get"
            | "action-get"
            | "leader-get"
            | "goal-state"
            | "opened-ports"
            | "storage-list"
            | "storage-get"
            | "unit-get"
            | "relation-model-get"
            | "credential-get"
            | "resource-get"
    )
}

/// What a tool process prints and exits with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    /// Standard output.
    pub stdout: String,
    /// Standard error (`ERROR <msg>\n` on failure).
    pub stderr: String,
    /// 0 success, 1 runtime error, 2 usage error.
    pub code: i32,
}

/// How a tool call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// Bad arguments: exit 2.
    Usage(String),
    /// The call cannot be done: exit 1.
    Runtime(String),
}

type Outcome = Result<String, Failure>;

/// The environment a tool process sees that decides what it acts on.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// `JUJU_CONTEXT_ID`.
    pub context_id: Option<String>,
    /// `JUJU_UNIT_NAME`, used when the context is unknown.
    pub unit_name: Option<String>,
    /// The tool's standard input, when it reads it ([`reads_stdin`]).
    pub stdin: Option<String>,
}

/// Runs `tool` with `args` against the model, recording the call, and returns what the
/// process prints and its exit code.
pub fn run_tool(state: &mut State, caller: &Caller, tool: &str, args: &[String]) -> ToolOutput {
    let outcome = dispatch(state, caller, tool, args);
    let (stdout, stderr, code) = match outcome {
        Ok(stdout) => (stdout, String::new(), 0),
        Err(Failure::Runtime(message)) => (String::new(), format!("ERROR {message}\n"), 1),
        Err(Failure::Usage(message)) => (String::new(), format!("ERROR {message}\n"), 2),
    };
    state.calls.push(ToolCall {
        context_id: caller.context_id.clone().unwrap_or_default(),
        tool: tool.to_owned(),
        args: args.to_vec(),
        exit_code: code,
    });
    ToolOutput {
        stdout,
        stderr,
        code,
    }
}

fn dispatch(state: &mut State, caller: &Caller, tool: &str, args: &[String]) -> Outcome {
    let context_id = caller.context_id.clone().unwrap_or_default();
    let context = state.running.get(&context_id).cloned();
    let unit = match (&context, &caller.unit_name) {
        (Some(context), _) => context.unit.clone(),
        (None, Some(unit)) if !unit.is_empty() => unit.clone(),
        _ => {
            return Err(Failure::Runtime(format!(
                "no hook context running for JUJU_CONTEXT_ID {context_id:?}"
            )))
        }
    };
    let mut call = Call {
        state,
        context,
        context_id,
        unit,
        stdin: caller.stdin.clone(),
    };
    match tool {
        "network-get" => call.network_get(args),
        "relation-ids" => call.relation_ids(args),
        "relation-list" => call.relation_list(args),
        "relation-get" => call.relation_get(args),
        "relation-set" => call.relation_set(args),
        "is-leader" => call.is_leader(args),
        "config-get" => call.config_get(args),
        "status-set" => call.status_set(args),
        "status-get" => call.status_get(args),
        "juju-log" => call.juju_log(args),
        "action-get" => call.action_get(args),
        "action-set" => call.action_set(args),
        "action-fail" => call.action_fail(args),
        "action-log" => call.action_log(args),
        "application-version-set" => call.application_version_set(args),
        "leader-get" => call.leader_get(args),
        "leader-set" => call.leader_set(args),
        "goal-state" => call.goal_state(args),
        "open-port" => call.port(args, true),
        "close-port" => call.port(args, false),
        "opened-ports" => call.opened_ports(args),
        "storage-list" => call.storage_list(args),
        "storage-get" => call.storage_get(args),
        "storage-add" => call.storage_add(args),
        "unit-get" => call.unit_get(args),
        "relation-model-get" => call.relation_model_get(args),
        "juju-reboot" => call.juju_reboot(args),
        "credential-get" => Err(Failure::Runtime(
            "cannot access cloud credentials: only a trusted application can".into(),
        )),
        "resource-get" => {
            let parsed = parse(args, &[], &[])?;
            let name = parsed
                .positional
                .first()
                .ok_or_else(|| Failure::Usage("missing required resource name".into()))?;
            Err(Failure::Runtime(format!(
                "could not download resource: resource#{}/{name} not found",
                call.app()
            )))
        }
        tool if tool.starts_with("secret-") => call.secret(tool, args),
        other => Err(Failure::Usage(format!("unrecognized command: {other}"))),
    }
}

/// Parsed tool arguments (Juju's flag parser allows flags between positionals).
#[derive(Debug, Default)]
struct Parsed {
    /// Flags seen, with their value (`None` for boolean flags).
    flags: BTreeMap<String, Option<String>>,
    /// Positional arguments, in order.
    positional: Vec<String>,
}

impl Parsed {
    fn has(&self, flag: &str) -> bool {
        self.flags.contains_key(flag)
    }

    fn value(&self, flag: &str) -> Option<&str> {
        self.flags.get(flag).and_then(|v| v.as_deref())
    }
}

/// Parses `args`: `with_value` flags take a value (`-r 0`, `-r=0`, `--format json`); the
/// `boolean` flags stand alone or take Go's boolean forms (`--app=False`, `--app=1`). Flag
/// names are given without dashes; flags may come anywhere before a `--`.
fn parse(args: &[String], with_value: &[&str], boolean: &[&str]) -> Result<Parsed, Failure> {
    let mut parsed = Parsed::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            parsed.positional.extend(iter.by_ref().cloned());
            break;
        }
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            parsed.positional.push(arg.clone());
            continue;
        };
        if flag.is_empty() {
            // A lone `-` is a positional argument (relation-get's "every key").
            parsed.positional.push(arg.clone());
            continue;
        }
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (flag, None),
        };
        if with_value.contains(&name) {
            let value = match inline {
                Some(value) => value,
                None => iter
                    .next()
                    .cloned()
                    .ok_or_else(|| Failure::Usage(format!("flag needs an argument: {arg}")))?,
            };
            parsed.flags.insert(name.to_owned(), Some(value));
        } else if boolean.contains(&name) {
            let on = match &inline {
                None => true,
                Some(value) => crate::charm::parse_go_bool(value).ok_or_else(|| {
                    Failure::Usage(format!(
                        "invalid boolean value {value:?} for -{}{name}: parse error",
                        if name.len() > 1 { "-" } else { "" }
                    ))
                })?,
            };
            if on {
                parsed.flags.insert(name.to_owned(), None);
            } else {
                parsed.flags.remove(name);
            }
        } else {
            return Err(Failure::Usage(format!(
                "flag provided but not defined: {arg}"
            )));
        }
    }
    if let Some(format) = parsed.value("format") {
        if !matches!(format, "json" | "yaml" | "smart") {
            return Err(Failure::Usage(format!(
                "invalid value {format:?} for option --format: unknown format {format:?}"
            )));
        }
    }
    Ok(parsed)
}

fn no_extra(parsed: &Parsed, max: usize) -> Result<(), Failure> {
    match parsed.positional.get(max) {
        Some(extra) => Err(Failure::Usage(format!("unrecognized args: [\"{extra}\"]"))),
        None => Ok(()),
    }
}

/// How a tool prints its answer (`--format`, `smart` by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Yaml,
    Smart,
}

impl Parsed {
    fn format(&self) -> Format {
        match self.value("format") {
            Some("json") => Format::Json,
            Some("yaml") => Format::Yaml,
            _ => Format::Smart,
        }
    }
}

/// Prints a value as Juju does in `format`: JSON on one line (keys sorted); YAML; smart
/// (strings bare, booleans `True`/`False`, nothing for null, numbers plain, lists and maps
/// as YAML).
fn render_as(value: &Value, format: Format) -> String {
    let yaml = |value: &Value| serde_yaml_ng::to_string(value).unwrap_or_default();
    match (format, value) {
        // serde_json's Map is a BTreeMap here, so keys come out sorted.
        (Format::Json, other) => format!("{other}\n"),
        (Format::Yaml, other) => yaml(other),
        (Format::Smart, Value::Null) => String::new(),
        (Format::Smart, Value::String(text)) => format!("{text}\n"),
        (Format::Smart, Value::Bool(b)) => format!("{}\n", if *b { "True" } else { "False" }),
        (Format::Smart, Value::Number(n)) => format!("{n}\n"),
        (Format::Smart, other) => yaml(other),
    }
}

/// [`render_as`] with the parsed `--format`.
fn render(value: &Value, parsed: &Parsed) -> String {
    render_as(value, parsed.format())
}

/// Reads relation or leader settings from YAML (`--file`): a map whose values are strings
/// (other scalars are taken as their text, as Juju's YAML reader does); null deletes.
fn settings_from_yaml(text: &str, origin: &str) -> Result<Vec<(String, String)>, Failure> {
    let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)
        .map_err(|e| Failure::Runtime(format!("cannot parse {origin}: {e}")))?;
    let map = match document {
        serde_yaml_ng::Value::Null => return Ok(Vec::new()),
        serde_yaml_ng::Value::Mapping(map) => map,
        _ => {
            return Err(Failure::Runtime(format!(
                "cannot parse {origin}: expected a map of settings"
            )))
        }
    };
    let mut settings = Vec::new();
    for (key, value) in map {
        let key = match key {
            serde_yaml_ng::Value::String(key) => key,
            other => serde_yaml_ng::to_string(&other)
                .unwrap_or_default()
                .trim()
                .to_owned(),
        };
        let value = match value {
            serde_yaml_ng::Value::Null => String::new(),
            serde_yaml_ng::Value::String(text) => text,
            serde_yaml_ng::Value::Bool(b) => b.to_string(),
            serde_yaml_ng::Value::Number(n) => n.to_string(),
            _ => {
                return Err(Failure::Runtime(format!(
                    "cannot parse {origin}: value of key {key:?} is not a string"
                )))
            }
        };
        settings.push((key, value));
    }
    Ok(settings)
}

/// One tool call in progress.
struct Call<'a> {
    state: &'a mut State,
    /// The running hook's context, when the context id is known.
    context: Option<HookContext>,
    context_id: String,
    /// The unit the call acts for.
    unit: String,
    /// The tool's standard input, when it reads it.
    stdin: Option<String>,
}

impl Call<'_> {
    fn app(&self) -> String {
        State::app_of(&self.unit).to_owned()
    }

    fn context_mut(&mut self) -> Result<&mut HookContext, Failure> {
        self.state
            .running
            .get_mut(&self.context_id)
            .ok_or_else(|| Failure::Runtime("no hook context running".into()))
    }

    /// The relation named by `-r`, or the hook's own relation.
    fn relation(&self, parsed: &Parsed) -> Result<String, Failure> {
        match parsed.value("r").or(parsed.value("relation")) {
            Some(text) => self.state.resolve_relation(text).ok_or_else(|| {
                Failure::Usage(format!(
                    "invalid value {text:?} for option -r: relation not found"
                ))
            }),
            None => self
                .context
                .as_ref()
                .and_then(|c| c.relation_id.clone())
                .ok_or_else(|| Failure::Usage("no relation id specified".into())),
        }
    }

    fn network_get(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(
            args,
            &["r", "relation", "format", "o", "output"],
            &[
                "bind-address",
                "ingress-address",
                "egress-subnets",
                "primary-address",
            ],
        )?;
        let binding = parsed
            .positional
            .first()
            .ok_or_else(|| Failure::Usage("no arguments specified".into()))?;
        no_extra(&parsed, 1)?;
        if parsed.has("r") || parsed.has("relation") {
            self.relation(&parsed)?;
        }
        let unit = self.state.units.get(&self.unit);
        if let Some(raw) = unit.and_then(|u| u.network_raw.get(binding)) {
            return Ok(raw.clone());
        }
        let info = unit.and_then(|u| u.network.get(binding)).ok_or_else(|| {
            Failure::Runtime(format!("no network config found for binding {binding:?}"))
        })?;
        let first_bind = || {
            info.pointer("/bind-addresses/0/addresses/0/value")
                .cloned()
                .unwrap_or(Value::Null)
        };
        let mut picked = serde_json::Map::new();
        for flag in [
            "bind-address",
            "ingress-address",
            "egress-subnets",
            "primary-address",
        ] {
            if !parsed.has(flag) {
                continue;
            }
            let value = match flag {
                "ingress-address" => info
                    .pointer("/ingress-addresses/0")
                    .cloned()
                    .unwrap_or(Value::Null),
                "egress-subnets" => info
                    .get("egress-subnets")
                    .cloned()
                    .unwrap_or(Value::Array(Vec::new())),
                _ => first_bind(),
            };
            picked.insert(flag.to_owned(), value);
        }
        let value = match picked.len() {
            0 => info.clone(),
            1 => picked
                .into_iter()
                .next()
                .map(|(_, v)| v)
                .unwrap_or_default(),
            _ => Value::Object(picked),
        };
        Ok(render(&value, &parsed))
    }

    fn relation_ids(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &["format", "o", "output"], &[])?;
        no_extra(&parsed, 1)?;
        let endpoint = match parsed.positional.first() {
            Some(endpoint) => endpoint.clone(),
            None => self
                .context
                .as_ref()
                .and_then(|c| c.relation_id.as_ref())
                .and_then(|id| self.state.relations.get(id))
                .map(|r| r.endpoint.clone())
                .ok_or_else(|| Failure::Usage("no endpoint name specified".into()))?,
        };
        // BTreeMap keys are already sorted as strings, which is Juju's order.
        let ids: Vec<Value> = self
            .state
            .relations
            .iter()
            .filter(|(_, r)| r.endpoint == endpoint)
            .map(|(id, _)| Value::String(id.clone()))
            .collect();
        Ok(render(&Value::Array(ids), &parsed))
    }

    fn relation_list(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &["r", "relation", "format", "o", "output"], &["app"])?;
        no_extra(&parsed, 0)?;
        let relation_id = self.relation(&parsed)?;
        let departing = self
            .context
            .as_ref()
            .filter(|c| c.relation_id.as_deref() == Some(relation_id.as_str()))
            .and_then(|c| c.departing_unit.clone());
        let relation = &self.state.relations[&relation_id];
        if parsed.has("app") {
            return Ok(render(&Value::String(self.app()), &parsed));
        }
        let units: Vec<Value> = relation
            .units
            .iter()
            .filter(|u| **u != self.unit && Some(*u) != departing.as_ref())
            .map(|u| Value::String(u.clone()))
            .collect();
        Ok(render(&Value::Array(units), &parsed))
    }

    fn relation_get(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &["r", "relation", "format", "o", "output"], &["app"])?;
        no_extra(&parsed, 2)?;
        let relation_id = self.relation(&parsed)?;
        let key = parsed
            .positional
            .first()
            .filter(|k| k.as_str() != "-" && !k.is_empty())
            .cloned();
        let target = match parsed.positional.get(1) {
            Some(target) => target.clone(),
            None => self
                .context
                .as_ref()
                .and_then(|c| c.remote_unit.clone())
                .filter(|u| !u.is_empty())
                .ok_or_else(|| Failure::Usage("no unit or application specified".into()))?,
        };
        let app = parsed.has("app");
        let owner = if app {
            State::app_of(&target).to_owned()
        } else {
            target.clone()
        };
        let bag = self
            .state
            .bag_view(self.context.as_ref(), &relation_id, &owner, app)
            .ok_or_else(|| {
                Failure::Runtime(format!(
                    "cannot read settings for unit {target:?} in relation {relation_id:?}: \
                     unit {target:?}: settings not found"
                ))
            })?;
        let value = match key {
            Some(key) => bag
                .get(&key)
                .map_or(Value::Null, |v| Value::String(v.clone())),
            None => json!(bag),
        };
        Ok(render(&value, &parsed))
    }

    fn relation_set(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &["r", "relation", "file", "format"], &["app"])?;
        let relation_id = self.relation(&parsed)?;
        let app = parsed.has("app");
        if app && !crate::leadership::is_leader(self.state, &self.unit) {
            return Err(Failure::Runtime("cannot write relation settings".into()));
        }
        let mut settings = self.settings_file(&parsed)?;
        for pair in &parsed.positional {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| Failure::Usage(format!("expected \"key=value\", got {pair:?}")))?;
            if key.is_empty() {
                return Err(Failure::Usage(format!(
                    "expected \"key=value\", got {pair:?}"
                )));
            }
            settings.push((key.to_owned(), value.to_owned()));
        }
        let owner = if app { self.app() } else { self.unit.clone() };
        let context = self.context_mut()?;
        for (key, value) in settings {
            context.pending.push(PendingWrite {
                relation_id: relation_id.clone(),
                owner: owner.clone(),
                app,
                key,
                value,
            });
        }
        Ok(String::new())
    }

    fn is_leader(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &["format", "o", "output"], &[])?;
        no_extra(&parsed, 0)?;
        Ok(render(
            &Value::Bool(crate::leadership::is_leader(self.state, &self.unit)),
            &parsed,
        ))
    }

    fn config_get(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &["format", "o", "output"], &["all", "a"])?;
        no_extra(&parsed, 1)?;
        let config = self
            .state
            .applications
            .get(&self.app())
            .map(|a| a.config.clone())
            .unwrap_or_default();
        let value = match parsed.positional.first() {
            Some(key) => config.get(key).cloned().unwrap_or(Value::Null),
            None => json!(config),
        };
        Ok(render(&value, &parsed))
    }

    fn status_set(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &[], &["application"])?;
        no_extra(&parsed, 2)?;
        let status = parsed
            .positional
            .first()
            .ok_or_else(|| Failure::Usage("invalid args, require <status> [message]".into()))?;
        if !matches!(
            status.as_str(),
            "maintenance" | "blocked" | "waiting" | "active"
        ) {
            return Err(Failure::Usage(format!(
                "invalid status {status:?}, expected one of [maintenance blocked waiting active]"
            )));
        }
        let status = Status {
            status: status.clone(),
            message: parsed.positional.get(1).cloned().unwrap_or_default(),
        };
        if parsed.has("application") {
            if !crate::leadership::is_leader(self.state, &self.unit) {
                return Err(Failure::Runtime(
                    "setting application status: this unit is not the leader".into(),
                ));
            }
            let app = self.app();
            self.state.applications.entry(app).or_default().status = Some(status);
        } else {
            self.state
                .units
                .entry(self.unit.clone())
                .or_default()
                .status = Some(status);
        }
        Ok(String::new())
    }

    fn status_get(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(
            args,
            &["format", "o", "output"],
            &["application", "include-data"],
        )?;
        no_extra(&parsed, 1)?;
        let include_data = parsed.has("include-data");
        let details = |status: Option<&Status>| {
            let (status, message) =
                status.map_or(("unknown", ""), |s| (s.status.as_str(), s.message.as_str()));
            let mut map = serde_json::Map::new();
            map.insert("status".into(), Value::from(status));
            map.insert("message".into(), Value::from(message));
            if include_data {
                map.insert("status-data".into(), json!({}));
            }
            Value::Object(map)
        };
        let value = if parsed.has("application") {
            if !crate::leadership::is_leader(self.state, &self.unit) {
                return Err(Failure::Runtime(
                    "finding application status: this unit is not the leader".into(),
                ));
            }
            let app = self.app();
            let mut application = details(
                self.state
                    .applications
                    .get(&app)
                    .and_then(|a| a.status.as_ref()),
            );
            let units: serde_json::Map<String, Value> = self
                .state
                .units
                .iter()
                .filter(|(name, _)| State::app_of(name) == app)
                .map(|(name, unit)| (name.clone(), details(unit.status.as_ref())))
                .collect();
            if let Value::Object(map) = &mut application {
                map.insert("units".into(), Value::Object(units));
            }
            json!({ "application-status": application })
        } else {
            let unit = details(
                self.state
                    .units
                    .get(&self.unit)
                    .and_then(|u| u.status.as_ref()),
            );
            match parsed.positional.first() {
                Some(key) => unit.get(key).cloned().unwrap_or(Value::Null),
                // Without --include-data, only the status value.
                None if !include_data => unit["status"].clone(),
                None => unit,
            }
        };
        Ok(render(&value, &parsed))
    }

    fn juju_log(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &["l", "log-level", "format"], &["debug"])?;
        let level = parsed
            .value("l")
            .or(parsed.value("log-level"))
            .unwrap_or(if parsed.has("debug") { "DEBUG" } else { "INFO" })
            .to_uppercase();
        if !matches!(
            level.as_str(),
            "TRACE" | "DEBUG" | "INFO" | "WARNING" | "ERROR" | "CRITICAL"
        ) {
            return Err(Failure::Usage(format!("invalid log level {level:?}")));
        }
        if parsed.positional.is_empty() {
            return Err(Failure::Usage("no message specified".into()));
        }
        self.state.juju_log.push(LogLine {
            unit: self.unit.clone(),
            level,
            message: parsed.positional.join(" "),
            time_ms: now_ms(),
        });
        Ok(String::new())
    }

    fn running_action(&mut self) -> Result<&mut crate::model::RunningAction, Failure> {
        self.context_mut()?
            .action
            .as_mut()
            .ok_or_else(|| Failure::Runtime("not running an action".into()))
    }

    fn action_get(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &["format", "o", "output"], &[])?;
        no_extra(&parsed, 1)?;
        let params = json!(self.running_action()?.params.clone());
        let value = match parsed.positional.first() {
            Some(key) => key
                .split('.')
                .try_fold(&params, |v, part| v.get(part))
                .cloned()
                .unwrap_or(Value::Null),
            None => params,
        };
        Ok(render(&value, &parsed))
    }

    fn action_set(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &[], &[])?;
        if parsed.positional.is_empty() {
            return Err(Failure::Usage("no key=value pairs specified".into()));
        }
        let mut pairs = Vec::new();
        for pair in &parsed.positional {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                Failure::Usage(format!(
                    "argument {pair:?} must be of the form key...=value"
                ))
            })?;
            let parts: Vec<&str> = key.split('.').collect();
            for part in &parts {
                let valid = !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && part.as_bytes()[0].is_ascii_alphanumeric()
                    && !part.ends_with('-');
                if !valid {
                    return Err(Failure::Usage(format!(
                        "key {part:?} must start and end with lowercase alphanumeric, \
                         and contain only lowercase alphanumeric and hyphens"
                    )));
                }
            }
            if matches!(
                parts[0],
                "stdout" | "stderr" | "stdout-encoding" | "stderr-encoding"
            ) {
                return Err(Failure::Usage(format!(
                    "cannot set reserved action key {:?}",
                    parts[0]
                )));
            }
            pairs.push((
                parts.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                value,
            ));
        }
        let action = self.running_action()?;
        for (path, value) in pairs {
            set_nested(&mut action.results, &path, value);
        }
        Ok(String::new())
    }

    fn action_fail(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &[], &[])?;
        no_extra(&parsed, 1)?;
        let message = parsed.positional.first().cloned().unwrap_or_else(|| {
            "action failed without reason given, check action for errors".into()
        });
        self.running_action()?.failed = Some(message);
        Ok(String::new())
    }

    fn action_log(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &[], &[])?;
        if parsed.positional.is_empty() {
            return Err(Failure::Usage("no message specified".into()));
        }
        let line = parsed.positional.join(" ");
        self.running_action()?.log.push(line);
        Ok(String::new())
    }

    /// Settings from `--file PATH` or `--file -` (the tool's standard input), as YAML.
    fn settings_file(&self, parsed: &Parsed) -> Result<Vec<(String, String)>, Failure> {
        let Some(file) = parsed.value("file") else {
            return Ok(Vec::new());
        };
        let text = if file == "-" {
            self.stdin
                .clone()
                .ok_or_else(|| Failure::Runtime("cannot read standard input".into()))?
        } else {
            std::fs::read_to_string(file)
                .map_err(|e| Failure::Runtime(format!("open {file}: {e}")))?
        };
        let origin = if file == "-" { "standard input" } else { file };
        settings_from_yaml(&text, origin)
    }

    fn leader_get(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &["format", "o", "output"], &[])?;
        no_extra(&parsed, 1)?;
        let mut settings = self
            .state
            .leader_settings
            .get(&self.app())
            .cloned()
            .unwrap_or_default();
        if let Some(context) = &self.context {
            for (key, value) in &context.leader_writes {
                if value.is_empty() {
                    settings.remove(key);
                } else {
                    settings.insert(key.clone(), value.clone());
                }
            }
        }
        let value = match parsed.positional.first().filter(|k| k.as_str() != "-") {
            Some(key) => settings
                .get(key)
                .map_or(Value::Null, |v| Value::String(v.clone())),
            None => json!(settings),
        };
        Ok(render(&value, &parsed))
    }

    fn leader_set(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &["file"], &[])?;
        let mut settings = self.settings_file(&parsed)?;
        for pair in &parsed.positional {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| Failure::Usage(format!("expected \"key=value\", got {pair:?}")))?;
            settings.push((key.to_owned(), value.to_owned()));
        }
        if !crate::leadership::is_leader(self.state, &self.unit) {
            return Err(Failure::Runtime(
                "cannot write leadership settings: cannot write settings: not the leader".into(),
            ));
        }
        self.context_mut()?.leader_writes.extend(settings);
        Ok(String::new())
    }

    fn goal_state(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &["format", "o", "output"], &[])?;
        no_extra(&parsed, 0)?;
        let app = self.app();
        let goal = |unit: &str| {
            let status = if self.state.units.contains_key(unit) {
                "active"
            } else {
                "dying"
            };
            json!({"status": status, "since": Value::Null})
        };
        let units: serde_json::Map<String, Value> = self
            .state
            .units
            .keys()
            .filter(|name| State::app_of(name) == app)
            .map(|name| (name.clone(), goal(name)))
            .collect();
        let mut relations = serde_json::Map::new();
        for relation in self.state.relations_of(&self.unit) {
            let Some(data) = self.state.relations.get(&relation) else {
                continue;
            };
            let mut members = serde_json::Map::new();
            for member in data.units.iter().filter(|u| **u != self.unit) {
                members.insert(
                    member.clone(),
                    json!({"status": "joined", "since": Value::Null}),
                );
            }
            relations.insert(data.endpoint.clone(), Value::Object(members));
        }
        let value = json!({"units": units, "relations": relations});
        Ok(render_as(
            &value,
            if parsed.value("format").is_none() {
                Format::Yaml
            } else {
                parsed.format()
            },
        ))
    }

    /// `open-port` and `close-port`: `80`, `80/tcp`, `1000-2000/udp`, `icmp`; applied
    /// when the hook succeeds.
    fn port(&mut self, args: &[String], open: bool) -> Outcome {
        let parsed = parse(args, &["endpoints", "format"], &[])?;
        no_extra(&parsed, 1)?;
        let text = parsed.positional.first().ok_or_else(|| {
            Failure::Usage("invalid arguments, expected \"<port>[/<protocol>] or <from>-<to>[/<protocol>] or icmp\"".into())
        })?;
        let port = normalize_port(text)
            .ok_or_else(|| Failure::Usage(format!("invalid port range {text:?}")))?;
        self.context_mut()?.port_changes.push((port, open));
        Ok(String::new())
    }

    fn opened_ports(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &["format", "o", "output"], &["endpoints"])?;
        no_extra(&parsed, 0)?;
        let mut ports = self
            .state
            .units
            .get(&self.unit)
            .map(|u| u.opened_ports.clone())
            .unwrap_or_default();
        if let Some(context) = &self.context {
            for (port, open) in &context.port_changes {
                if *open {
                    ports.insert(port.clone());
                } else {
                    ports.remove(port);
                }
            }
        }
        let list: Vec<Value> = ports.into_iter().map(Value::String).collect();
        if parsed.format() == Format::Smart {
            // One port range a line, as Juju prints them.
            return Ok(list
                .iter()
                .filter_map(Value::as_str)
                .map(|p| format!("{p}\n"))
                .collect());
        }
        Ok(render(&Value::Array(list), &parsed))
    }

    fn storage_list(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &["format", "o", "output"], &[])?;
        no_extra(&parsed, 1)?;
        // The simulator's charms have no storage attached.
        Ok(render(&Value::Array(Vec::new()), &parsed))
    }

    fn storage_get(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &["format", "o", "output", "s"], &[])?;
        no_extra(&parsed, 1)?;
        match parsed.value("s") {
            Some(id) => Err(Failure::Runtime(format!("storage {id:?} not found"))),
            None => Err(Failure::Usage("no storage instance specified".into())),
        }
    }

    fn storage_add(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &[], &[])?;
        let name = parsed
            .positional
            .first()
            .ok_or_else(|| Failure::Usage("storage add requires a storage directive".into()))?;
        let name = name.split('=').next().unwrap_or_default();
        Err(Failure::Runtime(format!(
            "adding storage to unit {}: charm storage {name:?} not found",
            self.unit
        )))
    }

    fn unit_get(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &["format", "o", "output"], &[])?;
        no_extra(&parsed, 1)?;
        let key = parsed
            .positional
            .first()
            .ok_or_else(|| Failure::Usage("no setting specified".into()))?;
        if !matches!(key.as_str(), "private-address" | "public-address") {
            return Err(Failure::Usage(format!("unknown setting {key:?}")));
        }
        let address = self
            .state
            .units
            .get(&self.unit)
            .and_then(|u| {
                u.network
                    .get(crate::charm::JUJU_INFO)
                    .or_else(|| u.network.values().next())
            })
            .and_then(|n| n.pointer("/ingress-addresses/0").cloned())
            .ok_or_else(|| Failure::Runtime(format!("{key} not found")))?;
        Ok(render(&address, &parsed))
    }

    fn relation_model_get(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &["format", "o", "output", "r", "relation"], &[])?;
        no_extra(&parsed, 0)?;
        self.relation(&parsed)?;
        // Every relation of the simulator is within the model.
        Ok(render(&json!({"uuid": self.state.model_uuid}), &parsed))
    }

    fn juju_reboot(&mut self, args: &[String]) -> Outcome {
        parse(args, &[], &["now"])?;
        Err(Failure::Runtime(
            "juju-reboot is not supported: the simulator's machines do not reboot".into(),
        ))
    }

    /// The `secret-*` tools: the simulator has no secret backend. Asking for a secret
    /// answers as Juju does for one that does not exist; `secret-ids` lists none; adding or
    /// granting one is refused.
    fn secret(&mut self, tool: &str, args: &[String]) -> Outcome {
        let parsed = parse(
            args,
            &[
                "format",
                "o",
                "output",
                "label",
                "description",
                "expire",
                "rotate",
                "owner",
                "relation",
                "r",
                "unit",
                "app",
                "revision",
                "file",
            ],
            &["refresh", "peek"],
        )?;
        match tool {
            "secret-ids" => Ok(render(&Value::Array(Vec::new()), &parsed)),
            "secret-add" => Err(Failure::Runtime(
                "cannot create secret: secrets are not supported by juju-sim (no secret backend)"
                    .into(),
            )),
            _ => {
                let id = parsed
                    .positional
                    .first()
                    .cloned()
                    .or_else(|| parsed.value("label").map(str::to_owned))
                    .ok_or_else(|| Failure::Usage("missing secret URI or label".into()))?;
                Err(Failure::Runtime(format!("secret {id:?} not found")))
            }
        }
    }

    fn application_version_set(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &[], &[])?;
        no_extra(&parsed, 1)?;
        let version = parsed
            .positional
            .first()
            .ok_or_else(|| Failure::Usage("no version specified".into()))?;
        self.state
            .units
            .entry(self.unit.clone())
            .or_default()
            .workload_version = Some(version.clone());
        Ok(String::new())
    }
}

/// `80` -> `80/tcp`, `1000-2000/udp`, `icmp`; `None` when not a port range.
fn normalize_port(text: &str) -> Option<String> {
    if text == "icmp" {
        return Some(text.to_owned());
    }
    let (range, protocol) = text.split_once('/').unwrap_or((text, "tcp"));
    let protocol = protocol.to_ascii_lowercase();
    if !matches!(protocol.as_str(), "tcp" | "udp") {
        return None;
    }
    let (from, to) = range.split_once('-').unwrap_or((range, range));
    let from: u16 = from.parse().ok().filter(|p| *p > 0)?;
    let to: u16 = to.parse().ok().filter(|p| *p >= from)?;
    Some(if from == to {
        format!("{from}/{protocol}")
    } else {
        format!("{from}-{to}/{protocol}")
    })
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// Sets `a.b.c = value` in a nested map of action results, replacing any non-object found
/// on the way (Juju's behaviour).
fn set_nested(results: &mut BTreeMap<String, Value>, path: &[String], value: &str) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let Some((first, rest)) = parents.split_first() else {
        results.insert(last.clone(), Value::String(value.to_owned()));
        return;
    };
    let mut current = results
        .entry(first.clone())
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    for part in rest {
        if !current.is_object() {
            *current = Value::Object(serde_json::Map::new());
        }
        current = current
            .as_object_mut()
            .expect("made an object above")
            .entry(part.clone())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
    if !current.is_object() {
        *current = Value::Object(serde_json::Map::new());
    }
    current
        .as_object_mut()
        .expect("made an object above")
        .insert(last.clone(), Value::String(value.to_owned()));
}
