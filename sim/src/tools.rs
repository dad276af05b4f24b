//! The hook tools, answered from the model: the same arguments, JSON (one line, sorted keys),
//! `ERROR <msg>` texts and exit codes (1 runtime, 2 usage) as Juju's. Relation writes are only
//! buffered in the running hook's context; the runner commits them when the hook exits 0.
//!
//! Without `--format json` a tool prints Juju's "smart" form where it matters to a shell
//! (strings bare); every structured value is JSON either way.

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
    "config-get",
    "is-leader",
    "juju-log",
    "network-get",
    "relation-get",
    "relation-ids",
    "relation-list",
    "relation-set",
    "status-get",
    "status-set",
];

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

    fn json(&self) -> bool {
        self.value("format") == Some("json")
    }
}

/// Parses `args`: `with_value` flags take a value (`-r 0`, `-r=0`, `--format json`); every
/// other known flag is boolean. Flag names are given without dashes.
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
        } else if boolean.contains(&name) && inline.is_none() {
            parsed.flags.insert(name.to_owned(), None);
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

/// Prints a value as Juju does: JSON on one line (keys sorted); smart form prints strings bare.
fn render(value: &Value, json: bool) -> String {
    match value {
        Value::String(text) if !json => format!("{text}\n"),
        Value::Bool(b) if !json => format!("{}\n", if *b { "True" } else { "False" }),
        // serde_json's Map is a BTreeMap here, so keys come out sorted.
        other => format!("{other}\n"),
    }
}

/// One tool call in progress.
struct Call<'a> {
    state: &'a mut State,
    /// The running hook's context, when the context id is known.
    context: Option<HookContext>,
    context_id: String,
    /// The unit the call acts for.
    unit: String,
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
        Ok(render(&value, parsed.json()))
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
        Ok(render(&Value::Array(ids), parsed.json()))
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
            return Ok(render(&Value::String(self.app()), parsed.json()));
        }
        let units: Vec<Value> = relation
            .units
            .iter()
            .filter(|u| **u != self.unit && Some(*u) != departing.as_ref())
            .map(|u| Value::String(u.clone()))
            .collect();
        Ok(render(&Value::Array(units), parsed.json()))
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
        Ok(render(&value, parsed.json()))
    }

    fn relation_set(&mut self, args: &[String]) -> Outcome {
        let parsed = parse(args, &["r", "relation", "file", "format"], &["app"])?;
        let relation_id = self.relation(&parsed)?;
        let app = parsed.has("app");
        if app && !self.state.is_leader(&self.unit) {
            return Err(Failure::Runtime("cannot write relation settings".into()));
        }
        let mut settings: Vec<(String, String)> = Vec::new();
        if let Some(file) = parsed.value("file") {
            let text = if file == "-" {
                return Err(Failure::Usage("--file - (stdin) is not emulated".into()));
            } else {
                std::fs::read_to_string(file)
                    .map_err(|e| Failure::Runtime(format!("cannot read {file}: {e}")))?
            };
            let map: BTreeMap<String, String> = serde_json::from_str(&text).map_err(|e| {
                Failure::Runtime(format!("cannot parse {file} as a map of strings: {e}"))
            })?;
            settings.extend(map);
        }
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
            &Value::Bool(self.state.is_leader(&self.unit)),
            parsed.json(),
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
        Ok(render(&value, parsed.json()))
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
            if !self.state.is_leader(&self.unit) {
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
        no_extra(&parsed, 0)?;
        let status = if parsed.has("application") {
            self.state
                .applications
                .get(&self.app())
                .and_then(|a| a.status.clone())
        } else {
            self.state
                .units
                .get(&self.unit)
                .and_then(|u| u.status.clone())
        };
        let status = status.unwrap_or(Status {
            status: "unknown".into(),
            message: String::new(),
        });
        let value = json!({"status": status.status, "message": status.message});
        Ok(render(&value, parsed.json()))
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
        let json = parsed.json();
        let params = json!(self.running_action()?.params.clone());
        let value = match parsed.positional.first() {
            Some(key) => key
                .split('.')
                .try_fold(&params, |v, part| v.get(part))
                .cloned()
                .unwrap_or(Value::Null),
            None => params,
        };
        Ok(render(&value, json))
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
