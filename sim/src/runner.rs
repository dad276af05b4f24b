//! Runs one hook or action of one unit the way a Juju unit agent does: a tools dir whose
//! entries all lead to `juju-hook-tool`, an environment built from scratch (only `PATH`, tools
//! dir first, plus Juju's variables), the charm's `dispatch` (or `hooks/<name>`) run in the
//! charm dir, and the hook's buffered relation writes committed only when it exits 0.
//!
//! The tools find the model through `JUJU_AGENT_SOCKET_ADDRESS`: a real agent puts the path
//! of the socket its tools talk to there, the emulator puts the path of the state file, so the
//! charm sees exactly Juju's set of variables and nothing added.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use serde_json::Value;

use crate::model::{ActionRecord, HookContext, HookRecord, RunningAction, Span, State};
use crate::store::{Store, StoreError};
use crate::tools::TOOL_NAMES;

/// The name of the emulator binary (and of the tool dir entries' target).
pub const HOOK_TOOL_BINARY: &str = "juju-hook-tool";

/// Why a hook could not be run (the hook failing is an [`Outcome`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot make the hook-tool dir {path}: {source}")]
    ToolsDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unit {0} is not in the model")]
    UnknownUnit(String),
    #[error("relation {0} is not in the model")]
    UnknownRelation(String),
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
}

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// A hook, with its relation when it is a relation hook.
    Hook {
        name: String,
        relation: Option<RelationEvent>,
    },
    /// An action with its parameters.
    Action {
        name: String,
        params: serde_json::Map<String, Value>,
    },
}

/// The relation part of a relation hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationEvent {
    /// `JUJU_RELATION_ID` (`db-cluster:0`).
    pub id: String,
    /// `JUJU_REMOTE_UNIT` (none for -created, -broken and app-bag -changed).
    pub remote_unit: Option<String>,
    /// `JUJU_DEPARTING_UNIT` (-departed only).
    pub departing_unit: Option<String>,
}

impl Invocation {
    /// A hook without a relation (`install`, `config-changed`, ...).
    pub fn hook(name: &str) -> Self {
        Invocation::Hook {
            name: name.to_owned(),
            relation: None,
        }
    }

    /// A relation hook on `id`, named `<endpoint>-relation-<kind>`.
    pub fn relation(kind: &str, id: &str, remote_unit: Option<&str>) -> Self {
        let endpoint = id.rsplit_once(':').map_or(id, |(endpoint, _)| endpoint);
        Invocation::Hook {
            name: format!("{endpoint}-relation-{kind}"),
            relation: Some(RelationEvent {
                id: id.to_owned(),
                remote_unit: remote_unit.map(str::to_owned),
                departing_unit: None,
            }),
        }
    }

    /// `<endpoint>-relation-departed` for `departing` (as seen by `remote`).
    pub fn departed(id: &str, remote_unit: &str, departing_unit: &str) -> Self {
        let mut invocation = Self::relation("departed", id, Some(remote_unit));
        if let Invocation::Hook {
            relation: Some(relation),
            ..
        } = &mut invocation
        {
            relation.departing_unit = Some(departing_unit.to_owned());
        }
        invocation
    }

    /// An action with JSON object parameters.
    pub fn action(name: &str, params: Value) -> Self {
        Invocation::Action {
            name: name.to_owned(),
            params: match params {
                Value::Object(map) => map,
                _ => serde_json::Map::new(),
            },
        }
    }

    /// `hooks/<name>` or `actions/<name>`.
    pub fn dispatch_path(&self) -> String {
        match self {
            Invocation::Hook { name, .. } => format!("hooks/{name}"),
            Invocation::Action { name, .. } => format!("actions/{name}"),
        }
    }
}

/// A hook ready to start: the command with its exact environment, and what `finish` needs.
#[derive(Debug)]
pub struct Prepared {
    /// The charm's program, with the environment, working dir and arguments set.
    pub command: Command,
    /// The machine data dir the program must see as `/var/lib/juju` (a unit of a simulated
    /// machine): [`run_command`] spawns it from a thread in such a mount namespace. The
    /// command's program and working dir are paths in that view.
    pub mounts: Option<PathBuf>,
    /// `JUJU_CONTEXT_ID` of this run.
    pub context_id: String,
    /// The unit.
    pub unit: String,
    /// `hooks/<name>` or `actions/<name>`.
    pub dispatch_path: String,
    /// When it was prepared (milliseconds since the epoch): the start of its run for
    /// [`Runner::finish`], which has no better one.
    pub prepared_ms: u64,
}

/// How a hook or action ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code (`None` when killed by a signal, or when skipped).
    pub exit_code: Option<i32>,
    /// Whether Juju would skip it (no dispatch and no `hooks/<name>`).
    pub skipped: bool,
    /// Whether the buffered relation writes were committed.
    pub committed: bool,
    /// The charm's standard output (Juju logs it at DEBUG).
    pub stdout: String,
    /// The charm's standard error (Juju logs it at WARNING).
    pub stderr: String,
}

impl Outcome {
    /// Whether the hook exited 0 (or was skipped, which Juju treats as success).
    pub fn success(&self) -> bool {
        self.skipped || self.exit_code == Some(0)
    }
}

/// Runs hooks against one model file.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The model.
    store: Store,
    /// The dir of tool links put first on the hooks' `PATH`.
    tools_dir: PathBuf,
    /// The `PATH` the agent itself runs with, appended after the tools dir.
    base_path: OsString,
}

impl Runner {
    /// A runner for the model in `store`, making `tools_dir` with one link per hook tool to
    /// `hook_tool` (the `juju-hook-tool` binary).
    pub fn new(store: Store, hook_tool: &Path, tools_dir: &Path) -> Result<Self, RunError> {
        let tools_error = |source| RunError::ToolsDir {
            path: tools_dir.to_owned(),
            source,
        };
        fs::create_dir_all(tools_dir).map_err(tools_error)?;
        for name in TOOL_NAMES {
            let link = tools_dir.join(name);
            match fs::remove_file(&link) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(tools_error(e)),
            }
            std::os::unix::fs::symlink(hook_tool, &link).map_err(tools_error)?;
        }
        let base_path = std::env::var_os("PATH").unwrap_or_else(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        Ok(Self {
            store,
            tools_dir: tools_dir.to_owned(),
            base_path,
        })
    }

    /// The model.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The tools dir.
    pub fn tools_dir(&self) -> &Path {
        &self.tools_dir
    }

    /// Runs `invocation` for `unit` to the end and commits or discards its writes.
    pub fn run(&self, unit: &str, invocation: &Invocation) -> Result<Outcome, RunError> {
        let Some(mut prepared) = self.prepare(unit, invocation)? else {
            return Ok(Outcome {
                exit_code: None,
                skipped: true,
                committed: false,
                stdout: String::new(),
                stderr: String::new(),
            });
        };
        let program = PathBuf::from(prepared.command.get_program());
        let mounts = prepared.mounts.clone();
        let output = run_command(prepared.command.stdin(Stdio::null()), mounts.as_deref())
            .map_err(|source| RunError::Spawn { program, source });
        let output = match output {
            Ok(output) => output,
            Err(e) => {
                self.abandon(&prepared)?;
                return Err(e);
            }
        };
        self.finish(
            &prepared,
            output.status,
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Registers the hook's context in the model and builds its command, or returns `None`
    /// when Juju would skip the hook (no `dispatch` and no `hooks/<name>`). A missing action
    /// is not skipped: its command fails to start, as Juju fails it.
    pub fn prepare(
        &self,
        unit: &str,
        invocation: &Invocation,
    ) -> Result<Option<Prepared>, RunError> {
        // One locked pass over the model: the checks, the context and the command's
        // environment all come from the state the context is registered in.
        self.store
            .update(|state| self.prepare_in(state, unit, invocation))?
    }

    fn prepare_in(
        &self,
        state: &mut State,
        unit: &str,
        invocation: &Invocation,
    ) -> Result<Option<Prepared>, RunError> {
        let unit_state = state
            .units
            .get(unit)
            .cloned()
            .ok_or_else(|| RunError::UnknownUnit(unit.to_owned()))?;
        let charm_dir = unit_state.charm_dir.clone();
        let dispatch_path = invocation.dispatch_path();
        let dispatch = charm_dir.join("dispatch");
        let program = if dispatch.exists() {
            dispatch
        } else {
            let direct = charm_dir.join(&dispatch_path);
            if !direct.exists() && matches!(invocation, Invocation::Hook { .. }) {
                return Ok(None);
            }
            direct
        };
        if let Invocation::Hook {
            relation: Some(relation),
            ..
        } = invocation
        {
            if !state.relations.contains_key(&relation.id) {
                return Err(RunError::UnknownRelation(relation.id.clone()));
            }
        }

        let app = State::app_of(unit).to_owned();
        let context_id = {
            state.next_id += 1;
            let context_id = format!(
                "{unit}-{}-{}",
                dispatch_path.rsplit('/').next().unwrap_or_default(),
                state.next_id
            );
            let mut context = HookContext {
                unit: unit.to_owned(),
                dispatch_path: dispatch_path.clone(),
                ..HookContext::default()
            };
            match invocation {
                Invocation::Hook {
                    relation: Some(relation),
                    ..
                } => {
                    context.relation_id = Some(relation.id.clone());
                    context.remote_unit = relation.remote_unit.clone();
                    context.departing_unit = relation.departing_unit.clone();
                }
                Invocation::Hook { relation: None, .. } => {}
                Invocation::Action { name, params } => {
                    context.action = Some(RunningAction {
                        name: name.clone(),
                        id: state.next_id.to_string(),
                        params: params.clone().into_iter().collect(),
                        ..RunningAction::default()
                    });
                }
            }
            state.running.insert(context_id.clone(), context);
            context_id
        };

        // On a simulated machine the hook runs in the machine's mount namespace and sees its
        // charm dir below `/var/lib/juju`, as on a Juju machine.
        let (mut command, seen_charm_dir, mounts) = match unit_state
            .data_dir
            .as_ref()
            .and_then(|data_dir| Some((data_dir, charm_dir.strip_prefix(data_dir).ok()?)))
        {
            Some((data_dir, below)) => {
                let seen = Path::new(crate::mounts::JUJU_DATA_DIR).join(below);
                let seen_program = seen.join(program.strip_prefix(&charm_dir).unwrap_or(&program));
                let mut command = Command::new(seen_program);
                command.current_dir(&seen);
                (command, seen, Some(data_dir.clone()))
            }
            None => {
                let mut command = Command::new(&program);
                command.current_dir(&charm_dir);
                (command, charm_dir.clone(), None)
            }
        };
        command.env_clear();
        let mut path = OsString::from(self.tools_dir.as_os_str());
        path.push(":");
        path.push(&self.base_path);
        let state_path =
            std::path::absolute(self.store.path()).unwrap_or_else(|_| self.store.path().to_owned());
        command
            .env("PATH", path)
            .env("JUJU_DISPATCH_PATH", &dispatch_path)
            .env("JUJU_UNIT_NAME", unit)
            .env("JUJU_CHARM_DIR", &seen_charm_dir)
            .env("CHARM_DIR", &seen_charm_dir)
            .env("JUJU_CONTEXT_ID", &context_id)
            .env("JUJU_MODEL_NAME", or(&state.model_name, "controller"))
            .env(
                "JUJU_MODEL_UUID",
                or(&state.model_uuid, "deadbeef-0bad-400d-8000-4b1d0d06f00d"),
            )
            .env("JUJU_MACHINE_ID", &unit_state.machine)
            .env("JUJU_API_ADDRESSES", state.api_addresses.join(" "))
            .env("JUJU_VERSION", or(&state.juju_version, "4.0.0"))
            .env("JUJU_AGENT_SOCKET_ADDRESS", state_path)
            .env("JUJU_AGENT_SOCKET_NETWORK", "unix")
            // A principal unit's own name is not repeated here: only a subordinate's
            // principal is named.
            .env("JUJU_PRINCIPAL_UNIT", "")
            .env("JUJU_AVAILABILITY_ZONE", &unit_state.availability_zone)
            // Only Kubernetes models have a cloud API version.
            .env("CLOUD_API_VERSION", "")
            .env("LANG", "C.UTF-8")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("APT_LISTCHANGES_FRONTEND", "none");
        for (variable, key) in [
            ("JUJU_CHARM_HTTP_PROXY", "juju-http-proxy"),
            ("JUJU_CHARM_HTTPS_PROXY", "juju-https-proxy"),
            ("JUJU_CHARM_FTP_PROXY", "juju-ftp-proxy"),
            ("JUJU_CHARM_NO_PROXY", "juju-no-proxy"),
        ] {
            // Juju exports them even when empty.
            command.env(
                variable,
                state.charm_proxy.get(key).map_or("", String::as_str),
            );
        }
        match invocation {
            Invocation::Hook { name, relation } => {
                command.env("JUJU_HOOK_NAME", name);
                if let Some(relation) = relation {
                    let endpoint = &state.relations[&relation.id].endpoint;
                    command
                        .env("JUJU_RELATION", endpoint)
                        .env("JUJU_RELATION_ID", &relation.id)
                        .env(
                            "JUJU_REMOTE_UNIT",
                            relation.remote_unit.as_deref().unwrap_or_default(),
                        )
                        // Every relation of this model is a peer relation.
                        .env("JUJU_REMOTE_APP", &app);
                    if let Some(departing) = &relation.departing_unit {
                        command.env("JUJU_DEPARTING_UNIT", departing);
                    }
                }
            }
            Invocation::Action { name, .. } => {
                let id = context_id.rsplit('-').next().unwrap_or_default().to_owned();
                command
                    .env("JUJU_HOOK_NAME", "")
                    .env("JUJU_ACTION_NAME", name)
                    .env("JUJU_ACTION_UUID", &id)
                    .env("JUJU_ACTION_TAG", format!("action-{id}"));
            }
        }
        Ok(Some(Prepared {
            command,
            mounts,
            context_id,
            unit: unit.to_owned(),
            dispatch_path,
            prepared_ms: crate::tools::now_ms(),
        }))
    }

    /// Ends a prepared hook: commits its relation writes when it exited 0, discards them
    /// otherwise, and records the run (and the action's results) in the model. The run is
    /// taken to have lasted from [`Prepared::prepared_ms`] until now.
    pub fn finish(
        &self,
        prepared: &Prepared,
        status: ExitStatus,
        stdout: String,
        stderr: String,
    ) -> Result<Outcome, RunError> {
        let exit_code = status.code();
        let span = Span {
            started_ms: prepared.prepared_ms,
            ended_ms: crate::tools::now_ms(),
        };
        let committed = self
            .store
            .update(|state| Self::commit(state, prepared, exit_code, span))?;
        Ok(Outcome {
            exit_code,
            skipped: false,
            committed,
            stdout,
            stderr,
        })
    }

    /// What [`Self::finish`] does to the model, for a caller that holds the state already (the
    /// engine, which reads the bags before and after in the same locked update): removes the
    /// hook's context, commits its buffered writes when `exit_code` is 0, records an action's
    /// outcome and appends the run to the history. Returns whether the writes were committed.
    pub fn commit(
        state: &mut State,
        prepared: &Prepared,
        exit_code: Option<i32>,
        span: Span,
    ) -> bool {
        let success = exit_code == Some(0);
        let context = state
            .running
            .remove(&prepared.context_id)
            .unwrap_or_default();
        if success {
            state.commit(&context.pending);
            if let Some(unit) = state.units.get_mut(&prepared.unit) {
                for (port, open) in &context.port_changes {
                    if *open {
                        unit.opened_ports.insert(port.clone());
                    } else {
                        unit.opened_ports.remove(port);
                    }
                }
            }
            if !context.leader_writes.is_empty() {
                let app = State::app_of(&prepared.unit).to_owned();
                let settings = state.leader_settings.entry(app).or_default();
                for (key, value) in &context.leader_writes {
                    if value.is_empty() {
                        settings.remove(key);
                    } else {
                        settings.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        if let Some(action) = context.action {
            let outcome = if success && action.failed.is_none() {
                "completed"
            } else {
                "failed"
            };
            state.actions.push(ActionRecord {
                unit: prepared.unit.clone(),
                action,
                outcome: outcome.into(),
            });
        }
        state.history.push(HookRecord {
            unit: prepared.unit.clone(),
            dispatch_path: prepared.dispatch_path.clone(),
            exit_code,
            committed: success,
            remote_unit: context.remote_unit,
            span,
        });
        success
    }

    /// Forgets a prepared hook that never ran.
    fn abandon(&self, prepared: &Prepared) -> Result<(), RunError> {
        self.store.update(|state| {
            state.running.remove(&prepared.context_id);
        })?;
        Ok(())
    }
}

fn or<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() {
        default
    } else {
        value
    }
}

/// Finds the `juju-hook-tool` binary: `$JUJU_HOOK_TOOL`, else beside the running executable or
/// one dir up (a test or bench binary runs from `target/<profile>/deps`).
pub fn locate_hook_tool() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("JUJU_HOOK_TOOL") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let mut dir = exe.parent();
    for _ in 0..2 {
        let Some(current) = dir else { break };
        let candidate = current.join(HOOK_TOOL_BINARY);
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = current.parent();
    }
    Err(format!(
        "{HOOK_TOOL_BINARY} not found beside {}: run `cargo build -p juju-sim` \
         (or `cargo build --release -p juju-sim` for benchmarks) first",
        exe.display()
    ))
}

/// Runs `command` to its end ([`output_retrying_busy`]); with `mounts`, from a thread of
/// its own that first enters a mount namespace in which `/var/lib/juju` is that dir
/// ([`crate::mounts::enter_machine_mounts`]), so the caller's view never changes.
pub fn run_command(
    command: &mut Command,
    mounts: Option<&Path>,
) -> std::io::Result<std::process::Output> {
    let Some(data_dir) = mounts else {
        return output_retrying_busy(command);
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                crate::mounts::enter_machine_mounts(data_dir).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "cannot give the hook {} as {}: {e}",
                            data_dir.display(),
                            crate::mounts::JUJU_DATA_DIR
                        ),
                    )
                })?;
                output_retrying_busy(command)
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the hook's spawning thread panicked")))
    })
}

/// `command.output()`, tried again for a moment while exec fails with "text file busy": a
/// hook file just written by this process is still open for writing in any child another
/// thread forked meanwhile and has not yet exec'd (its copy of the descriptor closes at its
/// exec), so the error says nothing about the hook and passes within microseconds.
pub fn output_retrying_busy(command: &mut Command) -> std::io::Result<std::process::Output> {
    let mut tries = 0;
    loop {
        match command.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            result => return result,
        }
    }
}
