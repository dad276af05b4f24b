//! The simulator's API client: `juju-sim login`, `controllers`, `show-controller`, and the
//! API half of `status`, on the `juju-client` library.
//!
//! The client store (`controllers.yaml`, `accounts.yaml`) lives in `<model>/client` unless
//! `--client-dir` says otherwise; the model's controller is named `jsim-<prefix>`. The store
//! is first filled as `juju bootstrap` fills it: the controller CA and the controllers'
//! default-space addresses from the model, the bootstrap admin's password from the file the
//! first API server wrote (`agents/controller-<id>/admin-password` in a machine's data dir).
//!
//! Every dial runs in the model's client namespace (`jsim-<prefix>-client`, one NIC in the
//! default space, no route through the host): this process re-runs itself there as the
//! hidden `client-call` command, which prints its outcome as JSON on stdout and its debug
//! log (the dial order) on stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use controller_contract::api::StatusResult;
use juju_client::{Account, ControllerDetails, DialOptions, Store};
use serde::{Deserialize, Serialize};

use crate::simulation;
use crate::world::World;

/// The API port every controller serves on.
pub const API_PORT: u16 = 17070;

/// The bootstrap admin's user name (as the controller agent makes it).
pub const ADMIN: &str = "admin";

/// The store dir of a model's client unless told otherwise.
pub fn default_store_dir(model_dir: &Path) -> PathBuf {
    model_dir.join("client")
}

/// The name the model's controller has in the client store.
pub fn controller_name(world: &World) -> String {
    format!("jsim-{}", world.prefix)
}

/// Reads `world.json` without taking the model's lock: client commands only need the
/// prefix, the spaces and the machines' addresses, and must not wait for a settle.
pub fn read_world(model_dir: &Path) -> anyhow::Result<World> {
    let path = simulation::world_path(model_dir);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no model in {} (bootstrap first)", model_dir.display()))?;
    serde_json::from_str(&text).with_context(|| format!("cannot read {}", path.display()))
}

/// `<machine data dir>/agents/controller-<id>/<name>` of the first machine that has it.
pub fn controller_file(model_dir: &Path, world: &World, name: &str) -> Option<PathBuf> {
    world.machines.keys().find_map(|id| {
        let path = simulation::machine_data_dir(model_dir, *id)
            .join("agents")
            .join(format!("controller-{id}"))
            .join(name);
        path.is_file().then_some(path)
    })
}

/// The bootstrap admin's password file, once the first API server has written it.
pub fn admin_password_file(model_dir: &Path, world: &World) -> Option<PathBuf> {
    controller_file(model_dir, world, "admin-password")
}

/// Every controller machine's default-space address with the API port, in machine order: what the
/// simulator knows without asking a controller.
pub fn known_endpoints(world: &World) -> Vec<String> {
    world
        .machines
        .values()
        .filter(|machine| !machine.workload)
        .flat_map(|machine| machine.nics.iter())
        .filter(|nic| nic.space == world.default_space)
        .map(|nic| controller_contract::ip_port(nic.address, API_PORT))
        .collect()
}

/// Adds the model's controller to the store if it is not there (the CA from a machine's
/// data dir, the known addresses), makes it current if none is, and returns its name.
pub fn ensure_controller(store: &Store, model_dir: &Path, world: &World) -> anyhow::Result<String> {
    let name = controller_name(world);
    if store.controllers()?.controllers.contains_key(&name) {
        return Ok(name);
    }
    let ca_path = controller_file(model_dir, world, "ca.pem").with_context(|| {
        "no controller CA in the model yet (is it bootstrapped and settled? run `juju-sim wait`)"
    })?;
    let ca_cert = std::fs::read_to_string(&ca_path)
        .with_context(|| format!("cannot read {}", ca_path.display()))?;
    let details = ControllerDetails {
        api_endpoints: known_endpoints(world),
        ca_cert,
        ..ControllerDetails::default()
    };
    store.update_controllers(|controllers| {
        controllers
            .controllers
            .entry(name.clone())
            .or_insert(details);
        if controllers.current_controller.is_none() {
            controllers.current_controller = Some(name.clone());
        }
    })?;
    Ok(name)
}

/// What a `client-call` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// The controller's name in the store.
    pub controller: String,
    /// The address that answered.
    pub endpoint: String,
    /// The controller's UUID.
    pub uuid: String,
    /// `api-endpoints` as stored after the login.
    pub endpoints: Vec<String>,
    /// The API's status answer, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusResult>,
    /// The controller config after a `set-config` call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<std::collections::BTreeMap<String, String>>,
}

/// What a `client-call` does after logging in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Op {
    Login,
    Status,
    /// `POST /controller-config` with the call's settings.
    SetConfig,
}

/// Runs `client-call` in the model's client namespace. `login` carries a new account
/// (its password goes over stdin); `None` uses the stored one. The child's stderr (its
/// debug log, the dial order) is copied to this process's stderr.
pub fn call(
    model_dir: &Path,
    store_dir: &Path,
    world: &World,
    op: Op,
    login: Option<&Account>,
    debug: bool,
) -> anyhow::Result<Outcome> {
    call_with(model_dir, store_dir, world, op, login, debug, &[])
}

/// [`call`] with `KEY=VALUE` settings for [`Op::SetConfig`].
pub fn call_with(
    model_dir: &Path,
    store_dir: &Path,
    world: &World,
    op: Op,
    login: Option<&Account>,
    debug: bool,
    settings: &[String],
) -> anyhow::Result<Outcome> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &world.client_namespace()])
        .arg(exe)
        .arg("--model-dir")
        .arg(model_dir)
        .arg("--client-dir")
        .arg(store_dir)
        .arg("client-call")
        .args([
            "--op",
            match op {
                Op::Login => "login",
                Op::Status => "status",
                Op::SetConfig => "set-config",
            },
        ]);
    for setting in settings {
        command.args(["--setting", setting]);
    }
    if debug {
        command.arg("--debug");
    }
    if let Some(account) = login {
        command.args(["--user", &account.user, "--password-stdin"]);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run ip netns exec")?;
    if let (Some(account), Some(mut stdin)) = (login, child.stdin.take()) {
        // A child that failed early closed its stdin: its error says why.
        let _ = writeln!(stdin, "{}", account.password);
    }
    let output = child
        .wait_with_output()
        .context("cannot wait for the client")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut error = None;
    for line in stderr.lines() {
        match line.strip_prefix("ERROR ") {
            Some(message) => error = Some(message.to_owned()),
            None => eprintln!("{line}"),
        }
    }
    if !output.status.success() {
        match error {
            Some(message) => bail!("{message}"),
            None => bail!("the client failed ({}): {}", output.status, stderr.trim()),
        }
    }
    serde_json::from_slice(&output.stdout).context("the client's answer is not an outcome")
}

/// The `client-call` command itself (in the client namespace): logs in, asks for the status
/// when told, prints the outcome as JSON.
pub fn run_call(
    store_dir: &Path,
    op: Op,
    user: Option<&str>,
    password_stdin: bool,
    settings: &[String],
) -> anyhow::Result<Outcome> {
    let mut wanted = std::collections::BTreeMap::new();
    for setting in settings {
        let (key, value) = setting
            .split_once('=')
            .with_context(|| format!("{setting:?} is not KEY=VALUE"))?;
        wanted.insert(key.to_owned(), value.to_owned());
    }
    let store = Store::new(store_dir);
    let account = match (user, password_stdin) {
        (Some(user), true) => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("cannot read the password from stdin")?;
            Some(Account {
                user: user.to_owned(),
                password: password.trim_end_matches(['\r', '\n']).to_owned(),
                other: Default::default(),
            })
        }
        (None, false) => None,
        _ => bail!("--user and --password-stdin go together"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let options = DialOptions::default();
        let (controller, mut connection) =
            juju_client::login(&store, None, account, &options).await?;
        let (status, config) = match op {
            Op::Login => (None, None),
            Op::Status => (Some(connection.status(options.timeout).await?), None),
            Op::SetConfig => (
                None,
                Some(
                    connection
                        .set_controller_config(&wanted, options.timeout)
                        .await?,
                ),
            ),
        };
        let (_, details) = store.controller(Some(&controller))?;
        anyhow::Ok(Outcome {
            controller,
            endpoint: connection.endpoint.clone(),
            uuid: connection.login.controller_uuid.clone(),
            endpoints: details.api_endpoints,
            status,
            config,
        })
    })
}

/// `juju-sim controllers`: one line per stored controller, the current one marked.
pub fn render_controllers(store: &Store) -> anyhow::Result<String> {
    let controllers = store.controllers()?;
    let accounts = store.accounts()?;
    let mut out = format!(
        "{:<18} {:<10} {:<38} {:>9}  {}\n",
        "Controller", "User", "UUID", "Machines", "Next address"
    );
    for (name, details) in &controllers.controllers {
        let current = controllers.current_controller.as_deref() == Some(name.as_str());
        let user = accounts
            .controllers
            .get(name)
            .map_or("-", |a| a.user.as_str());
        out.push_str(&format!(
            "{:<18} {:<10} {:<38} {:>9}  {}\n",
            format!("{name}{}", if current { "*" } else { "" }),
            user,
            if details.uuid.is_empty() {
                "-"
            } else {
                &details.uuid
            },
            details.controller_machine_count,
            details.api_endpoints.first().map_or("-", String::as_str)
        ));
    }
    Ok(out)
}

/// `juju-sim show-controller`: Juju's shape, endpoints in the order they will be dialled.
pub fn render_controller(store: &Store, name: Option<&str>) -> anyhow::Result<String> {
    let (name, details) = store.controller(name)?;
    let user = store.account(&name).map(|a| a.user).unwrap_or_default();
    // Juju's order: details first, the endpoints as they will be dialled.
    let yaml = |pairs: Vec<(&str, serde_yaml_ng::Value)>| {
        serde_yaml_ng::Value::Mapping(
            pairs
                .into_iter()
                .map(|(key, value)| (serde_yaml_ng::Value::from(key), value))
                .collect(),
        )
    };
    let endpoints = details
        .api_endpoints
        .iter()
        .map(|e| serde_yaml_ng::Value::from(e.as_str()))
        .collect();
    let shown = yaml(vec![(
        name.as_str(),
        yaml(vec![
            (
                "details",
                yaml(vec![
                    ("uuid", details.uuid.as_str().into()),
                    ("api-endpoints", serde_yaml_ng::Value::Sequence(endpoints)),
                    ("ca-cert", details.ca_cert.as_str().into()),
                    (
                        "controller-machine-count",
                        (details.controller_machine_count as u64).into(),
                    ),
                ]),
            ),
            ("account", yaml(vec![("user", user.as_str().into())])),
        ]),
    )]);
    Ok(serde_yaml_ng::to_string(&shown)?)
}
