//! The `juju-sim` command line (clap): the operator's commands, each of which changes the
//! model, queues the hooks Juju would fire and waits until the model settles, plus the
//! hidden `machine-agent` the simulator starts for each machine.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::agent::{self, AgentSpec};
use crate::charm::Charm;
use crate::client;
use crate::engine::{self, SettleOptions};
use crate::report;
use crate::runner::{Invocation, HOOK_TOOL_BINARY};
use crate::simulation::{self, Binaries, ModelOptions, Simulation};
use crate::world::{self, APP};

/// A local Juju controller model: real charm, real dbaccessors, one network namespace per
/// machine.
#[derive(Debug, Parser)]
#[command(name = "juju-sim", version)]
pub struct Cli {
    /// The model dir.
    #[arg(
        long,
        global = true,
        env = "JUJU_SIM_MODEL",
        default_value = "jsim-model"
    )]
    pub model_dir: PathBuf,
    /// How long a command waits for the model to settle, in seconds.
    #[arg(long, global = true, default_value_t = 120)]
    pub timeout: u64,
    /// Print every hook as it ends.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    /// The charm's `dispatch` [default: beside juju-sim].
    #[arg(long, global = true, env = "JUJU_SIM_DISPATCH")]
    pub dispatch: Option<PathBuf>,
    /// The controller agent `jujud-controller` (the dbaccessor and the API server are its
    /// workers) [default: beside juju-sim].
    #[arg(long, global = true, env = "JUJU_SIM_CONTROLLER_AGENT")]
    pub controller_agent: Option<PathBuf>,
    /// `juju-hook-tool` [default: beside juju-sim].
    #[arg(long, global = true, env = "JUJU_HOOK_TOOL")]
    pub hook_tool: Option<PathBuf>,
    /// The API client's store (`controllers.yaml`, `accounts.yaml`) [default: <model>/client].
    #[arg(long, global = true, env = "JUJU_SIM_CLIENT_DIR")]
    pub client_dir: Option<PathBuf>,
    /// Log the API client's dial order (and every attempt's outcome) on stderr.
    #[arg(long, global = true)]
    pub debug: bool,
    #[command(subcommand)]
    pub command: Commands,
}

/// Output formats of `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Tabular,
    Json,
}

/// Output formats of `run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActionFormat {
    Yaml,
    Json,
}

/// How a new model is laid out (`bootstrap`, `deploy` into an empty dir).
#[derive(Debug, Clone, clap::Args)]
pub struct LayoutArgs {
    /// The default space as NAME=CIDR.
    #[arg(long, default_value = "alpha=10.131.0.0/24", value_parser = parse_space)]
    pub default_space: (String, String),
    /// Another space as NAME=CIDR (repeatable); every machine gets a NIC in each.
    #[arg(long = "space", value_parser = parse_space)]
    pub spaces: Vec<(String, String)>,
    /// Raft's expected round trip given to every dbaccessor.
    #[arg(long, default_value_t = 20)]
    pub network_latency_ms: u64,
    /// How long a dbaccessor looks for a quorum before acting on its absence.
    #[arg(long, default_value_t = 3000)]
    pub quorum_timeout_ms: u64,
}

impl LayoutArgs {
    fn options(&self) -> ModelOptions {
        ModelOptions {
            default_space: self.default_space.clone(),
            spaces: self.spaces.clone(),
            network_latency_ms: self.network_latency_ms,
            quorum_timeout_ms: self.quorum_timeout_ms,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Creates the model with one controller (machine 0, unit controller/0).
    Bootstrap {
        #[command(flatten)]
        layout: LayoutArgs,
    },
    /// Adds controllers up to -n (odd, 3 by default, at most 7).
    EnableHa {
        #[arg(short = 'n', default_value_t = 0)]
        n: usize,
    },
    /// Removes a machine: a controller's unit departs, then its agent stops; a workload
    /// machine is marked dying in the controller database, and the controllers' compute
    /// provisioner stops its instance and deletes its credential (waited for).
    RemoveMachine {
        id: u32,
        /// Workload machines: return once it is marked dying.
        #[arg(long)]
        no_wait: bool,
    },
    /// Requests workload machines (`-n`, 1 by default) in the controller database, each
    /// with a NIC per `--space` (the default space when none is given); the controllers'
    /// compute provisioner (on the `singular-controller` lease holder) starts each through
    /// the simulated cloud with a machine agent that logs in with its own credential and
    /// keeps its agent.conf's API addresses current. Waits until they are started.
    AddMachine {
        #[arg(short = 'n', default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        n: u16,
        /// A space the machine gets a NIC in (repeatable).
        #[arg(long = "space")]
        spaces: Vec<String>,
        /// Return once the machines are requested (pending).
        #[arg(long)]
        no_wait: bool,
    },
    /// Fault injection: the simulated cloud answers each instance start this many
    /// milliseconds after starting it (0: at once), so a provisioner can die in between.
    FaultCloudDelay { ms: u64 },
    /// Fault injection: controller MACHINE's agent runs with its wall clock MS milliseconds
    /// off (negative: behind; 0: true again), through libfaketime; its agent is restarted.
    FaultClockSkew {
        machine: u32,
        #[arg(allow_negative_numbers = true)]
        ms: i64,
    },
    /// The simulated cloud (run by the controllers' compute provisioner): one JSON request
    /// on stdin, one JSON reply on stdout.
    #[command(hide = true)]
    Cloud,
    /// Adds a space; machines added later get a NIC in it.
    AddSpace { name: String, cidr: String },
    /// Gives a machine another NIC in a space (its unit gets config-changed).
    AddNic { machine: u32, space: String },
    /// Binds an endpoint of an application to a space ("" unbinds; endpoint "" is the
    /// default binding); its units get config-changed.
    Bind {
        endpoint: String,
        space: String,
        /// The application [default: controller].
        #[arg(long, default_value = APP)]
        app: String,
    },
    /// Deploys a charm dir (its metadata.yaml or charmcraft.yaml, config.yaml, actions.yaml)
    /// as an application with -n units, each on a new machine; or, with --bundle, a bundle's
    /// applications (`charm:` a charm dir relative to the bundle, `num_units:`, `bindings:`
    /// with "" for every endpoint, `options:`). The application `controller` is the
    /// built-in controller charm.
    Deploy {
        /// The charm dir (or a bundle file).
        charm: Option<PathBuf>,
        /// The application name [default: the charm's name].
        application: Option<String>,
        #[arg(short = 'n', default_value_t = 1)]
        num_units: usize,
        /// KEY=VALUE charm options (repeatable).
        #[arg(long = "config")]
        config: Vec<String>,
        /// Bindings: "SPACE" for the default, "ENDPOINT=SPACE" for one (space separated).
        #[arg(long)]
        bind: Option<String>,
        #[arg(long, conflicts_with = "charm")]
        bundle: Option<PathBuf>,
        #[command(flatten)]
        layout: LayoutArgs,
    },
    /// Adds units to an application (each on a new machine); `enable-ha` for the controller.
    AddUnit {
        application: String,
        #[arg(short = 'n', default_value_t = 1)]
        num_units: usize,
    },
    /// Shows an application's config, or sets KEY=VALUE options:
    /// `config [APPLICATION] [KEY=VALUE...]` (the controller by default).
    Config { settings: Vec<String> },
    /// Shows the model config the simulator honours, or sets KEY=VALUE:
    /// `update-status-hook-interval` (`5m`, `30s`, `0` never), `juju-http-proxy`,
    /// `juju-https-proxy`, `juju-ftp-proxy`, `juju-no-proxy`.
    ModelConfig { settings: Vec<String> },
    /// Prints the hooks' and agents' logs (`hooks.log`, `juju-log` lines, machine agents),
    /// optionally only those of some units or machines (`--include controller/1`,
    /// `--include unit-tiny-0`, `--include machine-2`).
    DebugLog {
        #[arg(long = "include", short = 'i')]
        include: Vec<String>,
        /// Only the last N lines.
        #[arg(long, short = 'n')]
        lines: Option<usize>,
    },
    /// Fault injection: `network-get db-cluster` on UNIT prints RAW (say, truncated JSON)
    /// instead of its real answer, until run again without RAW; the unit gets
    /// config-changed.
    FaultNetworkGet { unit: String, raw: Option<String> },
    /// Runs an action on a unit and prints its result as `juju run` does.
    Run {
        unit: String,
        action: String,
        params: Vec<String>,
        #[arg(long, value_enum, default_value_t = ActionFormat::Yaml)]
        format: ActionFormat,
    },
    /// Shows units, machines, addresses and the Dqlite members.
    Status {
        #[arg(long, value_enum, default_value_t = StatusFormat::Tabular)]
        format: StatusFormat,
    },
    /// Logs in to the model's controller through the API (from the client namespace) and
    /// stores its addresses; without a password, the stored one or the bootstrap admin's.
    Login {
        #[arg(long, short, default_value = client::ADMIN)]
        user: String,
        #[arg(long, conflicts_with = "password_file")]
        password: Option<String>,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Lists the controllers in the client store.
    Controllers,
    /// Shows a controller from the client store: endpoints in the order they will be dialled.
    ShowController { name: Option<String> },
    /// Shows the controller config (through the API), or sets KEY=VALUE rows of it (in the
    /// controller database, through the go-dqlite shell).
    ControllerConfig { settings: Vec<String> },
    /// Fault injection: cuts a machine off the cloud network (its processes keep running),
    /// or with --undo plugs it back in.
    Isolate {
        machine: u32,
        #[arg(long)]
        undo: bool,
    },
    /// The API client inside the client namespace (run by the client commands).
    #[command(hide = true)]
    ClientCall {
        #[arg(long, value_enum)]
        op: client::Op,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        password_stdin: bool,
        /// KEY=VALUE for `--op set-config` (repeatable).
        #[arg(long = "setting")]
        settings: Vec<String>,
    },
    /// Runs SQL through the go-dqlite shell in the model's cloud namespace.
    Sql {
        statement: String,
        #[arg(long, default_value = "juju")]
        database: String,
        #[arg(long)]
        json: bool,
    },
    /// Runs queued hooks until the model settles.
    Wait {
        /// Run the hooks until none is queued, without waiting for the Dqlite cluster to
        /// converge (a model with a stopped or cut-off controller).
        #[arg(long)]
        hooks_only: bool,
    },
    /// Stops every agent, deletes the namespaces and the model dir.
    Destroy,
    /// Deletes `jsim-*` namespaces whose model dir is gone.
    Cleanup,
    /// The machine agent (started by the simulator).
    #[command(hide = true)]
    MachineAgent {
        #[arg(long)]
        machine: u32,
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        network_latency_ms: u64,
        #[arg(long)]
        quorum_timeout_ms: u64,
        /// A workload machine's agent (`jujud-controller --machine-agent`).
        #[arg(long)]
        workload: bool,
    },
}

fn parse_space(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, cidr)| (name.to_owned(), cidr.to_owned()))
        .ok_or_else(|| format!("{text:?} is not NAME=CIDR"))
}

/// A binary beside this executable, or the override.
fn beside(name: &str, given: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return std::path::absolute(path)
            .with_context(|| format!("cannot resolve {}", path.display()));
    }
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let dir = exe.parent().context("this executable has no dir")?;
    for candidate in [dir.join(name), dir.join("..").join(name)] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} not found beside {} (build it: cargo build --release -p controller-charm -p agent -p juju-sim)",
        exe.display()
    )
}

fn binaries(cli: &Cli) -> anyhow::Result<Binaries> {
    Ok(Binaries {
        juju_sim: std::env::current_exe().context("cannot find this executable")?,
        dispatch: beside("dispatch", cli.dispatch.as_ref())?,
        hook_tool: beside(HOOK_TOOL_BINARY, cli.hook_tool.as_ref())?,
        controller_agent: beside("jujud-controller", cli.controller_agent.as_ref())?,
    })
}

/// Parses the command line and runs it.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    run(&cli)
}

fn settle(cli: &Cli, sim: &mut Simulation, out: &mut dyn Write) -> anyhow::Result<()> {
    settle_with(cli, sim, out, true)
}

fn settle_with(
    cli: &Cli,
    sim: &mut Simulation,
    out: &mut dyn Write,
    wait_for_cluster: bool,
) -> anyhow::Result<()> {
    let report = engine::settle(
        sim,
        &SettleOptions {
            timeout: Duration::from_secs(cli.timeout),
            verbose: cli.verbose,
            wait_for_cluster,
        },
        out,
    )?;
    writeln!(
        out,
        "settled in {:.1} s ({} hooks{})",
        report.elapsed.as_secs_f64(),
        report.hooks,
        if report.failures > 0 {
            format!(", {} failed and retried", report.failures)
        } else {
            String::new()
        }
    )?;
    Ok(())
}

/// Runs one parsed command.
pub fn run(cli: &Cli) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match &cli.command {
        Commands::MachineAgent {
            machine,
            namespace,
            data_dir,
            network_latency_ms,
            quorum_timeout_ms,
            workload,
        } => {
            let spec = AgentSpec {
                model_dir: std::path::absolute(&cli.model_dir)?,
                machine: *machine,
                namespace: namespace.clone(),
                controller_agent: beside("jujud-controller", cli.controller_agent.as_ref())?,
                data_dir: data_dir.clone(),
                network_latency_ms: *network_latency_ms,
                quorum_timeout_ms: *quorum_timeout_ms,
                workload: *workload,
            };
            agent::supervise(&spec)?;
        }
        Commands::Cleanup => {
            let removed = simulation::cleanup_stale()?;
            if removed.is_empty() {
                writeln!(out, "no stale namespaces")?;
            }
            for namespace in removed {
                writeln!(out, "removed namespace {namespace}")?;
            }
        }
        Commands::Bootstrap { layout } => {
            let mut sim = Simulation::create(&cli.model_dir, binaries(cli)?, &layout.options())?;
            writeln!(
                out,
                "bootstrapping model in {} (namespaces jsim-{}-*)",
                sim.dir.display(),
                sim.world.prefix
            )?;
            let added = sim.add_controllers(1)?;
            writeln!(out, "added {}", added.join(", "))?;
            settle(cli, &mut sim, &mut out)?;
            // The API server makes the admin once the database is up, shortly after.
            let started = std::time::Instant::now();
            let file = loop {
                match client::admin_password_file(&sim.dir, &sim.world) {
                    Some(file) => break Some(file),
                    None if started.elapsed() < Duration::from_secs(20) => {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    None => break None,
                }
            };
            match file {
                Some(file) => writeln!(
                    out,
                    "admin password in {} (`juju-sim login` uses it)",
                    file.display()
                )?,
                None => writeln!(
                    out,
                    "no admin password yet: the API server writes it into a controller's agents/controller-<id>/admin-password"
                )?,
            }
        }
        Commands::Deploy {
            charm,
            application,
            num_units,
            config,
            bind,
            bundle,
            layout,
        } => {
            let bundle_path = match (bundle, charm) {
                (Some(bundle), _) => Some(bundle.clone()),
                (None, Some(charm)) if charm.is_file() => Some(charm.clone()),
                _ => None,
            };
            let apps = match (&bundle_path, charm) {
                (Some(path), _) => read_bundle(path)?,
                (None, Some(charm)) => {
                    let name = match application {
                        Some(name) => name.clone(),
                        None => Charm::load(charm)?.name,
                    };
                    let options = config
                        .iter()
                        .map(|s| parse_setting(s))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    vec![BundleApp {
                        name,
                        charm: Some(charm.display().to_string()),
                        num_units: *num_units,
                        bindings: parse_bind(bind.as_deref().unwrap_or_default())?,
                        options,
                    }]
                }
                (None, None) => bail!("give a charm dir or --bundle FILE"),
            };
            let mut sim = if simulation::world_path(&cli.model_dir).exists() {
                Simulation::open(&cli.model_dir, binaries(cli)?)?
            } else {
                Simulation::create(&cli.model_dir, binaries(cli)?, &layout.options())?
            };
            for app in &apps {
                deploy_app(cli, &mut sim, app, &mut out)?;
            }
            settle(cli, &mut sim, &mut out)?;
        }
        Commands::AddUnit {
            application,
            num_units,
        } => {
            let mut sim = open(cli)?;
            if application == APP {
                bail!("use enable-ha to add controllers");
            }
            let added = add_units(cli, &mut sim, application, *num_units)?;
            writeln!(out, "added {}", added.join(", "))?;
            settle(cli, &mut sim, &mut out)?;
        }
        Commands::ModelConfig { settings } => {
            let mut sim = open(cli)?;
            if settings.is_empty() {
                let state = sim.store().load()?;
                writeln!(
                    out,
                    "update-status-hook-interval: {}s",
                    sim.world.update_status_interval_s
                )?;
                for key in PROXY_KEYS {
                    writeln!(
                        out,
                        "{key}: {:?}",
                        state.charm_proxy.get(key).map_or("", String::as_str)
                    )?;
                }
            } else {
                for setting in settings {
                    let (key, value) = setting
                        .split_once('=')
                        .with_context(|| format!("{setting:?} is not KEY=VALUE"))?;
                    set_model_config(&mut sim, key, value)?;
                }
                sim.save()?;
                writeln!(out, "set {}", settings.join(" "))?;
            }
        }
        Commands::DebugLog { include, lines } => {
            let model_dir = std::path::absolute(&cli.model_dir)?;
            let world = client::read_world(&model_dir)?;
            let state = crate::store::Store::new(model_dir.join("state.json")).load()?;
            let text = report::debug_log(&model_dir, &world, &state, include);
            let all: Vec<&str> = text.lines().collect();
            let start = lines.map_or(0, |n| all.len().saturating_sub(n));
            for line in &all[start..] {
                writeln!(out, "{line}")?;
            }
        }
        Commands::EnableHa { n } => {
            let mut sim = open(cli)?;
            let current = sim.world.app_units(APP).len();
            let target = world::enable_ha_target(current, *n)?;
            let maintained: Vec<String> = sim.world.machines.keys().map(u32::to_string).collect();
            let added = sim.add_controllers(target)?;
            let machines: Vec<String> = added
                .iter()
                .filter_map(|u| sim.world.units.get(u).map(|q| q.machine.to_string()))
                .collect();
            writeln!(out, "maintaining machines: {}", maintained.join(", "))?;
            if !machines.is_empty() {
                writeln!(out, "adding machines: {}", machines.join(", "))?;
            }
            settle(cli, &mut sim, &mut out)?;
        }
        Commands::RemoveMachine { id, no_wait }
            if is_workload(cli, *id) && !hosts_unit(cli, *id) =>
        {
            let sim = open(cli)?;
            let known = sql_shell(
                &sim,
                "controller",
                &format!("SELECT COUNT(*) FROM machine WHERE id = {id}"),
                false,
            )
            .context("cannot read the machine from the controller database")?;
            if known.trim() != "1" {
                bail!("machine {id} not found in the controller database");
            }
            sql_shell(
                &sim,
                "controller",
                &format!("UPDATE machine SET status = 'dying' WHERE id = {id}"),
                false,
            )
            .context("cannot mark the machine dying in the controller database")?;
            drop(sim);
            if *no_wait {
                writeln!(out, "machine {id} is dying")?;
            } else {
                wait_for_machines(cli, &[*id], MachineWait::Gone)?;
                writeln!(
                    out,
                    "removed machine {id} and the credential of machine-{id}"
                )?;
            }
        }
        Commands::AddMachine { n, spaces, no_wait } => {
            let ids = request_machines(cli, usize::from(*n), spaces)?;
            if *no_wait {
                for id in &ids {
                    writeln!(out, "requested machine {id} (pending)")?;
                }
            } else {
                wait_for_machines(cli, &ids, MachineWait::Started)?;
                let world = client::read_world(&cli.model_dir)?;
                for id in &ids {
                    let addresses: Vec<String> = world
                        .machines
                        .get(id)
                        .map(|machine| {
                            machine
                                .nics
                                .iter()
                                .map(|nic| format!("{}({})", nic.address, nic.space))
                                .collect()
                        })
                        .unwrap_or_default();
                    writeln!(out, "added machine {id}: {}", addresses.join(" "))?;
                }
            }
        }
        Commands::FaultCloudDelay { ms } => {
            let mut sim = open(cli)?;
            sim.world.cloud_start_reply_delay_ms = *ms;
            sim.save()?;
            writeln!(out, "the cloud answers each start {ms} ms after it")?;
        }
        Commands::FaultClockSkew { machine, ms } => {
            let mut sim = open(cli)?;
            match sim.world.machines.get(machine) {
                None => bail!("machine {machine} not found"),
                Some(m) if m.workload => {
                    bail!("machine {machine} is a workload machine: only controllers are skewed")
                }
                Some(_) => {}
            }
            if *ms != 0 && agent::libfaketime().is_none() {
                bail!("a clock skew needs libfaketime (apt-get install libfaketime)");
            }
            if *ms == 0 {
                sim.world.clock_skew_ms.remove(machine);
            } else {
                sim.world.clock_skew_ms.insert(*machine, *ms);
            }
            sim.save()?;
            // Its supervisor starts it again at once, with the new clock.
            if let Some(pid) = agent::dbaccessor_pid(&sim.dir, *machine) {
                agent::signal(pid, rustix::process::Signal::TERM);
            }
            writeln!(
                out,
                "machine {machine}: the agent's wall clock is {ms} ms off (restarting it)"
            )?;
        }
        Commands::Cloud => {
            let request: controller_contract::cloud::CloudRequest =
                serde_json::from_reader(std::io::stdin().lock())
                    .context("the cloud request on stdin")?;
            let reply = crate::cloud::serve(&cli.model_dir, binaries(cli)?, &request)?;
            writeln!(out, "{}", serde_json::to_string(&reply)?)?;
        }
        Commands::RemoveMachine { id, .. } => {
            let mut sim = open(cli)?;
            let unit = sim.remove_machine(*id)?;
            writeln!(out, "removing machine {id} ({unit})")?;
            settle(cli, &mut sim, &mut out)?;
        }
        Commands::AddSpace { name, cidr } => {
            let mut sim = open(cli)?;
            sim.add_space(name, cidr)?;
            writeln!(out, "added space {name:?} with subnet {cidr}")?;
            // The controllers learn the subnet's space from the database; a later command
            // that needs it (controller-config, add-machine) writes every space again.
            if let Err(e) = sync_spaces(&sim) {
                eprintln!(
                    "WARNING: the controller database does not know space {name:?} yet: {}",
                    controller_contract::describe_error(e.as_ref())
                );
            }
        }
        Commands::AddNic { machine, space } => {
            let mut sim = open(cli)?;
            let nic = sim.add_nic(*machine, space)?;
            writeln!(out, "machine {machine}: added {nic} in space {space:?}")?;
            settle(cli, &mut sim, &mut out)?;
        }
        Commands::Bind {
            endpoint,
            space,
            app,
        } => {
            let mut sim = open(cli)?;
            sim.bind(app, endpoint, space)?;
            writeln!(out, "bound {app}:{endpoint} to space {space:?}")?;
            settle(cli, &mut sim, &mut out)?;
        }
        Commands::Config { settings } => {
            let mut sim = open(cli)?;
            let (app, settings) = match settings.split_first() {
                Some((first, rest)) if !first.contains('=') => (first.clone(), rest),
                _ => (APP.to_owned(), settings.as_slice()),
            };
            if settings.is_empty() {
                let state = sim.store().load()?;
                let config = state
                    .applications
                    .get(&app)
                    .map(|a| a.config.clone())
                    .with_context(|| format!("application {app:?} not found"))?;
                write!(out, "{}", serde_yaml_ng::to_string(&config)?)?;
            } else {
                let parsed = settings
                    .iter()
                    .map(|s| parse_setting(s))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                if sim.set_config(&app, &parsed)? {
                    settle(cli, &mut sim, &mut out)?;
                }
            }
        }
        Commands::FaultNetworkGet { unit, raw } => {
            let mut sim = open(cli)?;
            sim.fault_network_get(unit, raw.as_deref())?;
            match raw {
                Some(raw) => writeln!(out, "{unit}: network-get db-cluster now prints {raw:?}")?,
                None => writeln!(out, "{unit}: network-get db-cluster answers again")?,
            }
            settle(cli, &mut sim, &mut out)?;
        }
        Commands::Run {
            unit,
            action,
            params,
            format,
        } => {
            let sim = open(cli)?;
            let mut map = serde_json::Map::new();
            for param in params {
                let (key, value) = parse_setting(param)?;
                map.insert(key, value);
            }
            if !sim.world.units.contains_key(unit) {
                bail!("unit {unit:?} not found");
            }
            let charm = sim.charm(crate::model::State::app_of(unit))?;
            let map = charm.action_params(unit, action, map)?;
            let outcome = sim
                .runner
                .run(unit, &Invocation::action(action, Value::Object(map)))?;
            let state = sim.store().load()?;
            let record =
                report::last_action(&state, unit).context("the runner records every action")?;
            eprintln!(
                "Running operation {id} with 1 task\n  - task {id} on unit-{}\n",
                unit.replace('/', "-"),
                id = record.action.id
            );
            write!(
                out,
                "{}",
                report::render_action(record, *format == ActionFormat::Json)
            )?;
            if record.outcome != "completed" || !outcome.success() {
                bail!(
                    "task {} failed: {}",
                    record.action.id,
                    record
                        .action
                        .failed
                        .clone()
                        .unwrap_or_else(|| outcome.stderr.trim().to_owned())
                );
            }
        }
        Commands::Status { format } => {
            let sim = open(cli)?;
            let mut status = report::status(&sim)?;
            let store = juju_client::Store::new(store_dir(cli));
            if store.account(&client::controller_name(&sim.world)).is_ok() {
                let model_dir = std::path::absolute(&cli.model_dir)?;
                status.api = Some(
                    match client::call(
                        &model_dir,
                        &store.dir,
                        &sim.world,
                        client::Op::Status,
                        None,
                        cli.debug,
                    ) {
                        Ok(outcome) => report::ApiReport {
                            endpoint: outcome.endpoint,
                            status: outcome.status,
                            error: None,
                        },
                        Err(e) => report::ApiReport {
                            endpoint: String::new(),
                            status: None,
                            error: Some(controller_contract::describe_error(e.as_ref())),
                        },
                    },
                );
            }
            match format {
                StatusFormat::Json => writeln!(out, "{}", serde_json::to_string(&status)?)?,
                StatusFormat::Tabular => write!(out, "{}", report::render_status(&status))?,
            }
        }
        Commands::Sql {
            statement,
            database,
            json,
        } => {
            let sim = open(cli)?;
            let output = sql_shell(&sim, database, statement, *json)?;
            write!(out, "{output}")?;
        }
        Commands::Login {
            user,
            password,
            password_file,
        } => {
            let model_dir = std::path::absolute(&cli.model_dir)?;
            let world = client::read_world(&model_dir)?;
            let store = juju_client::Store::new(store_dir(cli));
            let name = client::ensure_controller(&store, &model_dir, &world)?;
            store.update_controllers(|c| c.current_controller = Some(name.clone()))?;
            let password = match (password, password_file) {
                (Some(password), _) => Some(password.clone()),
                (None, Some(file)) => Some(read_password(file)?),
                (None, None) => match store.account(&name) {
                    Ok(stored) if &stored.user == user => None,
                    _ if user == client::ADMIN => {
                        let file = client::admin_password_file(&model_dir, &world)
                            .context("no bootstrap admin password in the model yet (is it settled?); give --password")?;
                        Some(read_password(&file)?)
                    }
                    _ => {
                        bail!("no stored password for {user:?}: give --password or --password-file")
                    }
                },
            };
            let account = password.map(|password| juju_client::Account {
                user: user.clone(),
                password,
                other: Default::default(),
            });
            let outcome = client::call(
                &model_dir,
                &store.dir,
                &world,
                client::Op::Login,
                account.as_ref(),
                cli.debug,
            )?;
            writeln!(
                out,
                "logged in to {} (UUID {}) as {user} through {}",
                outcome.controller, outcome.uuid, outcome.endpoint
            )?;
            writeln!(out, "api-endpoints: {}", outcome.endpoints.join(" "))?;
            writeln!(out, "store: {}", store.dir.display())?;
        }
        Commands::Controllers => {
            let store = juju_client::Store::new(store_dir(cli));
            write!(out, "{}", client::render_controllers(&store)?)?;
        }
        Commands::ShowController { name } => {
            let store = juju_client::Store::new(store_dir(cli));
            write!(
                out,
                "{}",
                client::render_controller(&store, name.as_deref())?
            )?;
        }
        Commands::ControllerConfig { settings } => {
            let model_dir = std::path::absolute(&cli.model_dir)?;
            if settings.is_empty() {
                let world = client::read_world(&model_dir)?;
                let store = juju_client::Store::new(store_dir(cli));
                let outcome = client::call(
                    &model_dir,
                    &store.dir,
                    &world,
                    client::Op::Status,
                    None,
                    cli.debug,
                )?;
                let config = outcome
                    .status
                    .map(|s| s.controller_config)
                    .unwrap_or_default();
                write!(out, "{}", serde_yaml_ng::to_string(&config)?)?;
            } else {
                let sim = open(cli)?;
                for setting in settings {
                    let (key, value) = setting
                        .split_once('=')
                        .with_context(|| format!("{setting:?} is not KEY=VALUE"))?;
                    check_controller_setting(&sim.world, key, value)?;
                }
                // The spaces the controllers judge addresses (and this setting) by, before
                // agents are told to keep only one of them.
                sync_spaces(&sim).context("cannot write the model's spaces")?;
                let store = juju_client::Store::new(store_dir(cli));
                if store.account(&client::controller_name(&sim.world)).is_ok() {
                    // Through the API, as a logged-in user (the server checks again).
                    let outcome = client::call_with(
                        &model_dir,
                        &store.dir,
                        &sim.world,
                        client::Op::SetConfig,
                        None,
                        cli.debug,
                        settings,
                    )?;
                    writeln!(
                        out,
                        "set {} (through the API at {})",
                        settings.join(" "),
                        outcome.endpoint
                    )?;
                } else {
                    // Not logged in: straight into the database, in one statement (the
                    // shell runs each in a transaction of its own).
                    let rows: Vec<String> = settings
                        .iter()
                        .filter_map(|setting| setting.split_once('='))
                        .map(|(key, value)| format!("({}, {})", sql_quote(key), sql_quote(value)))
                        .collect();
                    let statements = format!(
                        "INSERT OR REPLACE INTO controller_config (key, value) VALUES {}",
                        rows.join(", ")
                    );
                    sql_shell(&sim, "controller", &statements, false)?;
                    writeln!(
                        out,
                        "set {} (through the database shell: not logged in)",
                        settings.join(" ")
                    )?;
                }
            }
        }
        Commands::Isolate { machine, undo } => {
            let sim = open(cli)?;
            if !sim.world.machines.contains_key(machine) {
                bail!("machine {machine} not found");
            }
            crate::netns::set_isolated(&sim.world, *machine, !undo)?;
            if *undo {
                writeln!(out, "machine {machine} is back on the network")?;
            } else {
                writeln!(out, "machine {machine} is cut off the network")?;
            }
        }
        Commands::ClientCall {
            op,
            user,
            password_stdin,
            settings,
        } => {
            if cli.debug {
                env_logger::Builder::new()
                    .filter_module("juju_client", log::LevelFilter::Debug)
                    .format_timestamp_millis()
                    .init();
            }
            let outcome = client::run_call(
                &store_dir(cli),
                *op,
                user.as_deref(),
                *password_stdin,
                settings,
            )?;
            writeln!(out, "{}", serde_json::to_string(&outcome)?)?;
        }
        Commands::Wait { hooks_only } => {
            let mut sim = open(cli)?;
            settle_with(cli, &mut sim, &mut out, !hooks_only)?;
        }
        Commands::Destroy => {
            let sim = open(cli)?;
            let dir = sim.dir.clone();
            sim.destroy()?;
            writeln!(out, "destroyed model {}", dir.display())?;
        }
    }
    Ok(())
}

/// A SQL string literal.
fn sql_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Refuses a controller config setting that cannot be stored as given.
pub fn check_controller_setting(
    world: &world::World,
    key: &str,
    value: &str,
) -> anyhow::Result<()> {
    match key {
        "controller-uuid" => bail!("controller-uuid cannot be changed"),
        controller_contract::agentaddr::MGMT_SPACE_KEY
            if !value.is_empty() && !world.spaces.contains_key(value) =>
        {
            let known: Vec<&str> = world.spaces.keys().map(String::as_str).collect();
            bail!(
                "cannot set juju-mgmt-space: space {value:?} not found (the model's spaces: {})",
                known.join(", ")
            )
        }
        _ => Ok(()),
    }
}

/// Whether machine `id` of the model is a workload machine (false when it cannot be told).
/// A machine the model does not have yet but whose id was handed out is a requested
/// workload machine (the controller database knows).
fn is_workload(cli: &Cli, id: u32) -> bool {
    client::read_world(&cli.model_dir)
        .ok()
        .is_some_and(|world| {
            world
                .machines
                .get(&id)
                .map_or(id < world.next_machine, |m| m.workload)
        })
}

/// Whether machine `id` of the model hosts a unit.
fn hosts_unit(cli: &Cli, id: u32) -> bool {
    client::read_world(&cli.model_dir)
        .ok()
        .is_some_and(|world| world.unit_on(id).is_some())
}

/// The model config keys of the charm proxies (`JUJU_CHARM_*_PROXY`).
const PROXY_KEYS: [&str; 4] = [
    "juju-http-proxy",
    "juju-https-proxy",
    "juju-ftp-proxy",
    "juju-no-proxy",
];

/// Sets one model config key the simulator honours.
fn set_model_config(sim: &mut Simulation, key: &str, value: &str) -> anyhow::Result<()> {
    match key {
        "update-status-hook-interval" => {
            sim.world.update_status_interval_s = parse_duration_s(value)
                .with_context(|| format!("{value:?} is not a duration (5m, 30s, 1h)"))?;
        }
        key if PROXY_KEYS.contains(&key) => {
            sim.store().update(|state| {
                if value.is_empty() {
                    state.charm_proxy.remove(key);
                } else {
                    state.charm_proxy.insert(key.to_owned(), value.to_owned());
                }
            })?;
        }
        other => bail!("unknown model config key {other:?}"),
    }
    Ok(())
}

/// `30s`, `5m`, `1h`, `90` (seconds) as seconds.
fn parse_duration_s(text: &str) -> Option<u64> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number.parse().ok()?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return None,
    };
    number.checked_mul(scale)
}

/// `--bind "SPACE ENDPOINT=SPACE ..."`: a bare space is the default binding.
fn parse_bind(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    Ok(text
        .split_whitespace()
        .map(|part| match part.split_once('=') {
            Some((endpoint, space)) => (endpoint.to_owned(), space.to_owned()),
            None => (String::new(), part.to_owned()),
        })
        .collect())
}

/// Deploys one application of a bundle (or of `deploy CHARM`): the charm, bindings,
/// options, then its units.
fn deploy_app(
    cli: &Cli,
    sim: &mut Simulation,
    app: &BundleApp,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if app.name == APP {
        if !sim.world.apps.contains_key(APP) {
            sim.deploy_app(APP, None)?;
        }
    } else {
        let charm = app
            .charm
            .as_deref()
            .with_context(|| format!("application {:?} has no charm", app.name))?;
        let dir = Path::new(charm);
        if !dir.is_dir() {
            bail!(
                "application {:?}: charm {charm:?} is not a charm dir (the simulator cannot fetch charms from Charmhub)",
                app.name
            );
        }
        sim.deploy_app(&app.name, Some(dir))?;
    }
    for (endpoint, space) in &app.bindings {
        sim.bind(&app.name, endpoint, space)?;
    }
    if !app.options.is_empty() {
        sim.set_config(&app.name, &app.options)?;
    }
    let added = if app.name == APP {
        let target = sim.world.app_units(APP).len().max(app.num_units);
        sim.add_controllers(target)?
    } else {
        add_units(cli, sim, &app.name, app.num_units)?
    };
    writeln!(
        out,
        "deployed {}: {} units (added {})",
        app.name,
        app.num_units,
        added.join(", ")
    )?;
    Ok(())
}

/// Adds `count` units of a (non-controller) application, each on a new machine with a NIC
/// in each space its endpoints are bound to (the default space first). The machines get
/// agents when the model has a controller to log in to.
fn add_units(
    cli: &Cli,
    sim: &mut Simulation,
    app: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let spec = sim
        .world
        .apps
        .get(app)
        .with_context(|| format!("application {app:?} not found"))?;
    let mut spaces: Vec<String> = Vec::new();
    let default = spec.bindings.get("").cloned();
    for space in default.iter().chain(spec.bindings.values()) {
        if !space.is_empty() && !spaces.contains(space) {
            spaces.push(space.clone());
        }
    }
    if !spaces.is_empty() && !spaces.contains(&sim.world.default_space) && default.is_none() {
        spaces.insert(0, sim.world.default_space.clone());
    }
    let machines = if sim.controller_ca().is_some() {
        // As in Juju, a unit's machine comes from the controllers' provisioner: requested
        // in the controller database, started by the lease holder through the simulated
        // cloud, which needs the model unlocked meanwhile.
        sim.unlocked(|| -> anyhow::Result<Vec<u32>> {
            let ids = request_machines(cli, count, &spaces)?;
            wait_for_machines(cli, &ids, MachineWait::Started)?;
            Ok(ids)
        })??
    } else {
        sim.add_workload_machines(count, &spaces)?
    };
    Ok(sim.add_units_on(app, &machines)?)
}

/// Writes every space of the model with its subnet into the controller database's `space`
/// table (the controllers give each API address the space of its subnet).
fn sync_spaces(sim: &Simulation) -> anyhow::Result<()> {
    let rows: Vec<String> = sim
        .world
        .spaces
        .iter()
        .map(|(name, space)| format!("({}, {})", sql_quote(name), sql_quote(&space.cidr())))
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    sql_shell(
        sim,
        "controller",
        &format!(
            "INSERT OR IGNORE INTO space (name, cidr) VALUES {}",
            rows.join(", ")
        ),
        false,
    )?;
    Ok(())
}

/// Requests `count` workload machines: reserves their ids in the model and records each
/// as a `pending` row of the controller database's `machine` table, for the controllers'
/// compute provisioner. The spaces are checked first.
pub fn request_machines(cli: &Cli, count: usize, spaces: &[String]) -> anyhow::Result<Vec<u32>> {
    let mut sim = open(cli)?;
    let spaces = sim.world.workload_spaces(spaces)?;
    // The controllers give API addresses the space of their subnet from this table.
    sync_spaces(&sim).context("cannot write the model's spaces")?;
    let ids = sim.world.reserve_machine_ids(count);
    sim.save()?;
    let rows: Vec<String> = ids
        .iter()
        .map(|id| format!("({id}, 'pending', {})", sql_quote(&spaces.join(","))))
        .collect();
    sql_shell(
        &sim,
        "controller",
        &format!(
            "INSERT INTO machine (id, status, spaces) VALUES {}",
            rows.join(", ")
        ),
        false,
    )
    .context("cannot request the machines in the controller database")?;
    Ok(ids)
}

/// What [`wait_for_machines`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineWait {
    /// Every machine's row says `started`.
    Started,
    /// Every machine's row is gone.
    Gone,
}

/// Polls the controller database (without holding the model, which the cloud needs) until
/// the machines are where `want` says, for up to the command's `--timeout`.
pub fn wait_for_machines(cli: &Cli, ids: &[u32], want: MachineWait) -> anyhow::Result<()> {
    let list: Vec<String> = ids.iter().map(u32::to_string).collect();
    let query = format!(
        "SELECT id, status FROM machine WHERE id IN ({}) ORDER BY id",
        list.join(", ")
    );
    let started = std::time::Instant::now();
    let timeout = Duration::from_secs(cli.timeout);
    loop {
        // The members can change meanwhile (a controller removed): asked again each time.
        let answer = open(cli).and_then(|sim| sql_shell(&sim, "controller", &query, false));
        let last = match answer {
            Ok(rows) => {
                let rows: Vec<(String, String)> = rows
                    .lines()
                    .filter_map(|line| line.split_once('|'))
                    .map(|(id, status)| (id.trim().to_owned(), status.trim().to_owned()))
                    .collect();
                let done = match want {
                    MachineWait::Started => {
                        rows.len() == ids.len() && rows.iter().all(|(_, s)| s == "started")
                    }
                    MachineWait::Gone => rows.is_empty(),
                };
                if done {
                    return Ok(());
                }
                format!("{rows:?}")
            }
            Err(e) => controller_contract::describe_error(e.as_ref()),
        };
        if started.elapsed() >= timeout {
            bail!(
                "machines {} not {} after {} s (last seen: {last}); is a controller holding \
                 the singular-controller lease and running its provisioner?",
                list.join(", "),
                match want {
                    MachineWait::Started => "started",
                    MachineWait::Gone => "removed",
                },
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs `statement` through the go-dqlite shell against the current members.
fn sql_shell(
    sim: &Simulation,
    database: &str,
    statement: &str,
    json: bool,
) -> anyhow::Result<String> {
    let status = report::status(sim)?;
    let mut servers: Vec<String> = status.dqlite.iter().map(|m| m.address.clone()).collect();
    if servers.is_empty() {
        servers = status
            .map
            .values()
            .filter_map(|ip| ip.parse().ok())
            .map(controller_contract::dqlite_address)
            .collect();
    }
    Ok(sim.shell(&servers, database, statement, json)?)
}

/// The client store's dir.
fn store_dir(cli: &Cli) -> PathBuf {
    let dir = cli
        .client_dir
        .clone()
        .unwrap_or_else(|| client::default_store_dir(&cli.model_dir));
    std::path::absolute(&dir).unwrap_or(dir)
}

/// The first line of a password file.
fn read_password(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the password file {}", path.display()))?;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

fn open(cli: &Cli) -> anyhow::Result<Simulation> {
    Ok(Simulation::open(&cli.model_dir, binaries(cli)?)?)
}

/// `key=value`, the value read as a YAML scalar (as Juju reads action params and config).
fn parse_setting(text: &str) -> anyhow::Result<(String, Value)> {
    let (key, value) = text
        .split_once('=')
        .with_context(|| format!("{text:?} is not KEY=VALUE"))?;
    let value = match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(value) {
        Ok(serde_yaml_ng::Value::Null) | Err(_) => Value::from(value),
        Ok(parsed) => serde_json::to_value(parsed).unwrap_or_else(|_| Value::from(value)),
    };
    Ok((key.to_owned(), value))
}

/// What `deploy` takes from one application of a bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleApp {
    /// The application name.
    pub name: String,
    /// `charm:`: a charm dir (resolved against the bundle's dir); ignored for `controller`,
    /// which is always the built-in charm.
    pub charm: Option<String>,
    pub num_units: usize,
    /// Endpoint (`""` for the default) -> space.
    pub bindings: Vec<(String, String)>,
    pub options: Vec<(String, Value)>,
}

/// Reads the applications of a bundle file, charm paths resolved against its dir.
pub fn read_bundle(path: &Path) -> anyhow::Result<Vec<BundleApp>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read bundle {}", path.display()))?;
    let mut apps = parse_bundle(&text).with_context(|| format!("bundle {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    for app in &mut apps {
        if let Some(charm) = &mut app.charm {
            if charm.starts_with('.') || charm.starts_with('/') {
                *charm = base.join(&*charm).display().to_string();
            }
        }
    }
    Ok(apps)
}

/// Parses a bundle's applications (`applications:` or the older `services:`), the
/// controller first.
pub fn parse_bundle(text: &str) -> anyhow::Result<Vec<BundleApp>> {
    let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).context("not YAML")?;
    let apps = document
        .get("applications")
        .or_else(|| document.get("services"))
        .and_then(serde_yaml_ng::Value::as_mapping)
        .context("no applications")?;
    let mut parsed = Vec::new();
    for (name, app) in apps {
        let name = name
            .as_str()
            .context("an application name is not a string")?
            .to_owned();
        let charm = app
            .get("charm")
            .and_then(serde_yaml_ng::Value::as_str)
            .map(str::to_owned);
        if name != APP && charm.is_none() {
            bail!("application {name:?} has no charm");
        }
        let num_units = app
            .get("num_units")
            .map(|n| n.as_u64().context("num_units is not a number"))
            .transpose()?
            .unwrap_or(1);
        let num_units = usize::try_from(num_units).context("num_units is too large")?;
        if name == APP {
            world::enable_ha_target(0, num_units)
                .map_err(|e| anyhow::anyhow!("num_units {num_units}: {e}"))?;
        }
        let mut bindings = Vec::new();
        if let Some(map) = app
            .get("bindings")
            .and_then(serde_yaml_ng::Value::as_mapping)
        {
            for (endpoint, space) in map {
                let endpoint = endpoint
                    .as_str()
                    .context("a binding's endpoint is not a string")?;
                let space = space
                    .as_str()
                    .context("a binding's space is not a string")?;
                if name == APP {
                    Charm::builtin().check_endpoint(APP, endpoint)?;
                }
                bindings.push((endpoint.to_owned(), space.to_owned()));
            }
        }
        let mut options = Vec::new();
        if let Some(map) = app
            .get("options")
            .and_then(serde_yaml_ng::Value::as_mapping)
        {
            for (key, value) in map {
                let key = key.as_str().context("an option name is not a string")?;
                options.push((key.to_owned(), serde_json::to_value(value)?));
            }
        }
        parsed.push(BundleApp {
            name,
            charm,
            num_units,
            bindings,
            options,
        });
    }
    parsed.sort_by_key(|app| app.name != APP);
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_table() {
        let check = |text: &str, expected: Result<Vec<BundleApp>, &str>| {
            let got = parse_bundle(text).map_err(|e| format!("{e:#}"));
            assert_eq!(got, expected.map_err(str::to_owned), "{text}");
        };
        let controller = |num_units, bindings: Vec<(String, String)>, options| BundleApp {
            name: "controller".into(),
            charm: None,
            num_units,
            bindings,
            options,
        };
        check(
            "applications:\n  controller:\n    charm: ./controller\n    num_units: 3\n    bindings:\n      \"\": alpha\n      db-cluster: internal\n    options:\n      address-family: ipv4\n",
            Ok(vec![BundleApp {
                charm: Some("./controller".into()),
                ..controller(
                    3,
                    vec![("".into(), "alpha".into()), ("db-cluster".into(), "internal".into())],
                    vec![("address-family".into(), Value::from("ipv4"))],
                )
            }]),
        );
        check(
            "services:\n  controller: {}\n",
            Ok(vec![controller(1, vec![], vec![])]),
        );
        check(
            "applications:\n  controller:\n    num_units: 2\n",
            Err("num_units 2: number of controllers must be odd and non-negative"),
        );
        check(
            "applications:\n  controller:\n    bindings:\n      website: alpha\n",
            Err("application \"controller\" has no endpoint \"website\""),
        );
        check(
            "applications:\n  other: {}\n",
            Err("application \"other\" has no charm"),
        );
        // Any other application with a charm dir; the controller comes first; an even
        // number of units is fine for it.
        check(
            "applications:\n  tiny:\n    charm: ./tiny\n    num_units: 2\n    bindings:\n      replicas: beta\n  controller: {}\n",
            Ok(vec![
                controller(1, vec![], vec![]),
                BundleApp {
                    name: "tiny".into(),
                    charm: Some("./tiny".into()),
                    num_units: 2,
                    bindings: vec![("replicas".into(), "beta".into())],
                    options: vec![],
                },
            ]),
        );
    }

    #[test]
    fn duration_and_bind_table() {
        assert_eq!(parse_duration_s("5m"), Some(300));
        assert_eq!(parse_duration_s("30s"), Some(30));
        assert_eq!(parse_duration_s("90"), Some(90));
        assert_eq!(parse_duration_s("1h"), Some(3600));
        assert_eq!(parse_duration_s("soon"), None);
        assert_eq!(
            parse_bind("alpha replicas=beta").expect("parses"),
            vec![
                ("".to_owned(), "alpha".to_owned()),
                ("replicas".to_owned(), "beta".to_owned())
            ]
        );
    }

    #[test]
    fn controller_setting_table() {
        let mut world = world::World::new("abc123", "alpha", "10.131.0.0/24").expect("world");
        world.add_space("beta", "10.132.0.0/24").expect("beta");
        let check = |key: &str, value: &str, expected: Result<(), &str>| {
            let got = check_controller_setting(&world, key, value).map_err(|e| e.to_string());
            assert_eq!(got, expected.map_err(str::to_owned), "{key}={value}");
        };
        check("juju-mgmt-space", "beta", Ok(()));
        check("juju-mgmt-space", "", Ok(()));
        check(
            "juju-mgmt-space",
            "gamma",
            Err("cannot set juju-mgmt-space: space \"gamma\" not found (the model's spaces: alpha, beta)"),
        );
        check(
            "controller-uuid",
            "x",
            Err("controller-uuid cannot be changed"),
        );
        check("audit-log-max-size", "300M", Ok(()));
    }

    #[test]
    fn setting_table() {
        let check = |text: &str, expected: Option<(&str, Value)>| {
            let got = parse_setting(text).ok();
            assert_eq!(got, expected.map(|(k, v)| (k.to_owned(), v)), "{text}");
        };
        check(
            "bind-cidr=10.0.0.0/24",
            Some(("bind-cidr", Value::from("10.0.0.0/24"))),
        );
        check("n=3", Some(("n", Value::from(3))));
        check("flag=true", Some(("flag", Value::from(true))));
        check("empty=", Some(("empty", Value::from(""))));
        check("novalue", None);
    }
}
