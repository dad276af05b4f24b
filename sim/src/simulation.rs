//! One simulated controller model on disk and the changes an operator makes to it: create
//! (bootstrap), add and remove controller machines, spaces, NICs, bindings and config. Each
//! change updates the world, the hook-tool state and the namespaces, and queues the hooks
//! Juju would fire; [`crate::engine`] then runs them until the model settles.
//!
//! Layout of a model dir: `world.json` (the [`World`]), `state.json` (the hook tools'
//! [`State`]), `tools/` (the hook-tool links), `hooks.log` (every hook's output),
//! `machines/<id>/var/lib/juju` (the machine's agent data dir: charm dir, controller.conf,
//! sockets, Dqlite data) and `machines/<id>/agent.log`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::agent::{self, AgentSpec};
use crate::charm::{Charm, CharmError};
use crate::model::{Application, State, Unit};
use crate::netns;
use crate::runner::Runner;
use crate::store::Store;
use crate::world::{self, AppSpec, QueuedHook, UnitQueue, World, APP, PEER_ENDPOINT};

/// How long a new machine's agent gets to open its reload socket.
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a model operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("no model in {0} (run `juju-sim bootstrap` first)")]
    NoModel(PathBuf),
    #[error("a model already exists in {0} (run `juju-sim destroy` first)")]
    Exists(PathBuf),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid world file: {source}")]
    WorldFile {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(transparent)]
    World(#[from] world::WorldError),
    #[error(transparent)]
    Net(#[from] netns::NetError),
    #[error(transparent)]
    Agent(#[from] agent::AgentError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Run(#[from] crate::runner::RunError),
    #[error(transparent)]
    Charm(#[from] CharmError),
    #[error("{0}")]
    Refused(String),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SimError {
    let path = path.to_owned();
    move |source| SimError::Io {
        action,
        path,
        source,
    }
}

/// The programs a model runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// `juju-sim` itself (the machine agents run it).
    pub juju_sim: PathBuf,
    /// The charm's `dispatch`.
    pub dispatch: PathBuf,
    /// `juju-hook-tool`.
    pub hook_tool: PathBuf,
    /// `jujud-controller`, the controller agent that runs the dbaccessor as a worker.
    pub controller_agent: PathBuf,
}

/// How a new model is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelOptions {
    /// The default space and its subnet.
    pub default_space: (String, String),
    /// More spaces (name, subnet); every machine gets a NIC in each.
    pub spaces: Vec<(String, String)>,
    /// `--network-latency-ms` of every dbaccessor.
    pub network_latency_ms: u64,
    /// `--quorum-timeout-ms` of every dbaccessor.
    pub quorum_timeout_ms: u64,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            default_space: ("alpha".into(), "10.131.0.0/24".into()),
            spaces: Vec::new(),
            network_latency_ms: 20,
            quorum_timeout_ms: 3000,
        }
    }
}

/// An open model, locked against other `juju-sim` commands for as long as it lives.
#[derive(Debug)]
pub struct Simulation {
    /// The model dir.
    pub dir: PathBuf,
    /// The simulator's part of the model.
    pub world: World,
    /// The hook runner over the hook-tool state.
    pub runner: Runner,
    /// The programs it runs.
    pub bins: Binaries,
    /// The held lock on `<dir>/cli.lock`; released on drop.
    /// The model lock; `None` only inside [`Simulation::unlocked`].
    lock: Option<File>,
}

/// `<dir>/world.json`.
pub fn world_path(dir: &Path) -> PathBuf {
    dir.join("world.json")
}

/// The data dir (`/var/lib/juju`) of machine `id`.
pub fn machine_data_dir(dir: &Path, id: u32) -> PathBuf {
    agent::machine_dir(dir, id).join("var/lib/juju")
}

/// Machine `id`'s controller dir (`<data-dir>/agents/controller-<id>`): controller.conf, the
/// controller CA (`ca.pem`, `ca.key`) and the node's certificate (`dqlite-node.pem`,
/// `dqlite-node.key`).
pub fn controller_dir(dir: &Path, id: u32) -> PathBuf {
    machine_data_dir(dir, id)
        .join("agents")
        .join(format!("controller-{id}"))
}

/// Workload machine `id`'s agent dir (`<data-dir>/agents/machine-<id>`): `agent.conf` and
/// the API caller's `api-connection.json`.
pub fn machine_agent_dir(dir: &Path, id: u32) -> PathBuf {
    machine_data_dir(dir, id)
        .join("agents")
        .join(format!("machine-{id}"))
}

/// What a workload machine's `agent.conf` starts with, as Juju's provisioner writes it.
#[derive(Debug, Clone)]
pub struct WorkloadAgentConf {
    /// The controller's UUID (`controller: controller-<uuid>`).
    pub controller_uuid: String,
    /// The model's UUID (`model: model-<uuid>`).
    pub model_uuid: String,
    /// The controller CA in PEM.
    pub ca_cert: String,
    /// The agent's password (its hash is in the `credential` table).
    pub password: String,
    /// The controllers' addresses known at provisioning time (the updater corrects them).
    pub api_addresses: Vec<String>,
}

impl WorkloadAgentConf {
    /// `agent.conf` for machine `id`, in Juju's key names.
    pub fn render(&self, id: u32, data_dir: &Path) -> String {
        use serde_yaml_ng::Value as Yaml;
        let mut map = serde_yaml_ng::Mapping::new();
        let mut put = |key: &str, value: Yaml| {
            map.insert(Yaml::from(key), value);
        };
        put("tag", Yaml::from(format!("machine-{id}")));
        put("datadir", Yaml::from(data_dir.display().to_string()));
        put("nonce", Yaml::from(format!("jsim:{id}")));
        put("jobs", Yaml::Sequence(vec![Yaml::from("JobHostUnits")]));
        put("upgradedToVersion", Yaml::from("4.0.0"));
        put(
            "controller",
            Yaml::from(format!("controller-{}", self.controller_uuid)),
        );
        put("model", Yaml::from(format!("model-{}", self.model_uuid)));
        put(
            "apiaddresses",
            Yaml::Sequence(
                self.api_addresses
                    .iter()
                    .map(|a| Yaml::from(a.as_str()))
                    .collect(),
            ),
        );
        put("cacert", Yaml::from(self.ca_cert.as_str()));
        put("apipassword", Yaml::from(self.password.as_str()));
        serde_yaml_ng::to_string(&Yaml::Mapping(map)).expect("plain data serializes")
    }
}

impl Simulation {
    /// Runs `command` on `database` through the go-dqlite shell in the model's cloud
    /// namespace against `servers`, with a controller's node certificate when the nodes
    /// have one ([`shell_certificate`]).
    pub fn shell(
        &self,
        servers: &[String],
        database: &str,
        command: &str,
        json: bool,
    ) -> Result<String, crate::cluster::ClusterError> {
        let certificate = shell_certificate(&self.dir, &self.world);
        crate::cluster::shell(
            &self.world.net_namespace(),
            servers,
            certificate.as_ref(),
            database,
            command,
            json,
        )
    }
}

/// The CA files a controller shares with every other, as Juju's agent.conf carries them.
const CA_FILES: [&str; 2] = ["ca.pem", "ca.key"];

/// The node certificate and key of one controller of the model, for the go-dqlite shell's
/// `--cert` and `--key` (any certificate of the controller CA will do); `None` before any
/// node has started (or when the nodes run without TLS).
pub fn shell_certificate(dir: &Path, world: &World) -> Option<(PathBuf, PathBuf)> {
    world.machines.keys().find_map(|&id| {
        let controller = controller_dir(dir, id);
        let cert = controller.join("dqlite-node.pem");
        let key = controller.join("dqlite-node.key");
        (cert.is_file() && key.is_file()).then_some((cert, key))
    })
}

fn lock(dir: &Path) -> Result<File, SimError> {
    let path = dir.join("cli.lock");
    let file = File::create(&path).map_err(io("create", &path))?;
    file.lock().map_err(io("lock", &path))?;
    Ok(file)
}

/// A short random-enough prefix for the namespaces: hashed from the process's random hasher
/// keys, the time and the dir.
fn new_prefix(dir: &Path) -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(dir.as_os_str().as_encoded_bytes());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.write_u32(std::process::id());
    format!("{:06x}", hasher.finish() & 0xff_ffff)
}

/// The controller charm's options with their defaults, as `config-get` prints them.
pub fn charm_defaults() -> BTreeMap<String, Value> {
    Charm::builtin().defaults()
}

/// Copies the charm dir `from` into `to` (files with their modes, symlinks as symlinks), as
/// Juju unpacks a charm into each unit's charm dir.
pub fn copy_charm(from: &Path, to: &Path) -> Result<(), SimError> {
    fs::create_dir_all(to).map_err(io("create", to))?;
    for entry in fs::read_dir(from).map_err(io("read", from))? {
        let entry = entry.map_err(io("read", from))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().map_err(io("stat", &source))?;
        if kind.is_symlink() {
            let link = fs::read_link(&source).map_err(io("read the link", &source))?;
            if fs::symlink_metadata(&target).is_ok() {
                fs::remove_file(&target).map_err(io("replace", &target))?;
            }
            std::os::unix::fs::symlink(&link, &target).map_err(io("link", &target))?;
        } else if kind.is_dir() {
            copy_charm(&source, &target)?;
        } else {
            fs::copy(&source, &target).map_err(io("copy", &source))?;
        }
    }
    Ok(())
}

impl Simulation {
    /// Creates a model in `dir` (its cloud namespace included) with no machine yet.
    pub fn create(dir: &Path, bins: Binaries, options: &ModelOptions) -> Result<Self, SimError> {
        fs::create_dir_all(dir).map_err(io("create", dir))?;
        let dir = std::path::absolute(dir).map_err(io("resolve", dir))?;
        let lock = lock(&dir)?;
        if world_path(&dir).exists() {
            return Err(SimError::Exists(dir));
        }
        let prefix = new_prefix(&dir);
        let (space, cidr) = &options.default_space;
        let mut world = World::new(&prefix, space, cidr)?;
        for (name, cidr) in &options.spaces {
            world.add_space(name, cidr)?;
        }
        world.network_latency_ms = options.network_latency_ms;
        world.quorum_timeout_ms = options.quorum_timeout_ms;

        let state = State {
            model_name: "controller".into(),
            model_uuid: format!("{prefix}00-0bad-400d-8000-4b1d0d06f00d"),
            juju_version: "4.0.0".into(),
            ..State::default()
        };
        let store = Store::new(dir.join("state.json"));
        store.save(&state)?;
        let runner = Runner::new(store, &bins.hook_tool, &dir.join("tools"))?;
        netns::register(&prefix, &dir).map_err(io("register", Path::new(netns::REGISTRY_DIR)))?;
        netns::create_cloud(&world)?;
        netns::create_client(&world)?;
        let sim = Self {
            dir,
            world,
            runner,
            bins,
            lock: Some(lock),
        };
        sim.save()?;
        Ok(sim)
    }

    /// Opens the model in `dir`.
    pub fn open(dir: &Path, bins: Binaries) -> Result<Self, SimError> {
        let dir = std::path::absolute(dir).map_err(io("resolve", dir))?;
        if !world_path(&dir).exists() {
            return Err(SimError::NoModel(dir));
        }
        let lock = lock(&dir)?;
        let path = world_path(&dir);
        let text = fs::read_to_string(&path).map_err(io("read", &path))?;
        let world: World =
            serde_json::from_str(&text).map_err(|source| SimError::WorldFile { path, source })?;
        let runner = Runner::new(
            Store::new(dir.join("state.json")),
            &bins.hook_tool,
            &dir.join("tools"),
        )?;
        Ok(Self {
            dir,
            world,
            runner,
            bins,
            lock: Some(lock),
        })
    }

    /// Runs `work` with the model saved and unlocked, so that other `juju-sim` processes
    /// (the simulated cloud the controllers' provisioner calls) can change it; then locks it
    /// again and reads the world back.
    pub fn unlocked<T>(&mut self, work: impl FnOnce() -> T) -> Result<T, SimError> {
        self.save()?;
        self.lock = None;
        let output = work();
        self.lock = Some(lock(&self.dir)?);
        let path = world_path(&self.dir);
        let text = fs::read_to_string(&path).map_err(io("read", &path))?;
        self.world =
            serde_json::from_str(&text).map_err(|source| SimError::WorldFile { path, source })?;
        Ok(output)
    }

    /// Writes the world file (by rename, so a reader never sees half of it).
    pub fn save(&self) -> Result<(), SimError> {
        let path = world_path(&self.dir);
        let text = serde_json::to_string_pretty(&self.world).expect("plain data serializes");
        let temp = self.dir.join("world.json.new");
        fs::write(&temp, text).map_err(io("write", &temp))?;
        fs::rename(&temp, &path).map_err(io("replace", &path))
    }

    /// The hook-tool state.
    pub fn store(&self) -> &Store {
        self.runner.store()
    }

    /// The controller application's peer relation id.
    pub fn relation_id(&self) -> Result<String, SimError> {
        let state = self.store().load()?;
        state
            .relations
            .iter()
            .find(|(_, r)| r.endpoint == PEER_ENDPOINT && (r.app.is_empty() || r.app == APP))
            .map(|(id, _)| id.clone())
            .ok_or_else(|| SimError::Refused("the model has no db-cluster relation".into()))
    }

    /// The charm of `app`: the built-in controller charm, or the one its charm dir holds.
    pub fn charm(&self, app: &str) -> Result<Charm, SimError> {
        let spec = self
            .world
            .apps
            .get(app)
            .ok_or_else(|| SimError::Refused(format!("application {app:?} not found")))?;
        Ok(match &spec.charm_dir {
            None => Charm::builtin(),
            Some(dir) => Charm::load(dir)?,
        })
    }

    /// Adds application `name` running the charm in `charm_dir` (`None`: the built-in
    /// controller charm): its config defaults and one relation per peer endpoint. Returns
    /// the charm.
    pub fn deploy_app(&mut self, name: &str, charm_dir: Option<&Path>) -> Result<Charm, SimError> {
        if self.world.apps.contains_key(name) {
            return Err(SimError::Refused(format!(
                "cannot add application {name:?}: application already exists"
            )));
        }
        let charm_dir = charm_dir
            .map(|dir| std::path::absolute(dir).map_err(io("resolve", dir)))
            .transpose()?;
        let charm = match &charm_dir {
            None => Charm::builtin(),
            Some(dir) => Charm::load(dir)?,
        };
        if name == APP && charm_dir.is_some() {
            return Err(SimError::Refused(format!(
                "the application name {APP:?} is the controller's: deploy this charm under another name"
            )));
        }
        self.world.apps.insert(
            name.to_owned(),
            AppSpec {
                charm_dir,
                endpoints: charm.endpoints.keys().cloned().collect(),
                ..AppSpec::default()
            },
        );
        self.store().update(|state| {
            state.applications.insert(
                name.to_owned(),
                Application {
                    config: charm.defaults(),
                    status: None,
                },
            );
            for peer in charm.peers() {
                state.add_peer_relation(name, &peer);
            }
        })?;
        self.save()?;
        Ok(charm)
    }

    /// Deploys the controller application unless the model has it.
    fn ensure_controller_app(&mut self) -> Result<(), SimError> {
        if !self.world.apps.contains_key(APP) {
            self.deploy_app(APP, None)?;
        }
        Ok(())
    }

    fn agent_spec(&self, id: u32) -> AgentSpec {
        AgentSpec {
            model_dir: self.dir.clone(),
            machine: id,
            namespace: self.world.machine_namespace(id),
            controller_agent: self.bins.controller_agent.clone(),
            data_dir: machine_data_dir(&self.dir, id),
            network_latency_ms: self.world.network_latency_ms,
            quorum_timeout_ms: self.world.quorum_timeout_ms,
            workload: self
                .world
                .machines
                .get(&id)
                .is_some_and(|machine| machine.workload),
        }
    }

    /// Adds controller machines and units until there are `target` live units: each machine
    /// gets its namespace and a running machine agent before its unit is added, as in Juju.
    /// Returns the new units.
    pub fn add_controllers(&mut self, target: usize) -> Result<Vec<String>, SimError> {
        self.ensure_controller_app()?;
        let mut added = Vec::new();
        let mut pending = Vec::new();
        while self.world.app_units(APP).len() + pending.len() < target {
            let id = self.world.add_machine()?;
            self.save()?;
            netns::create_machine(&self.world, id)?;
            let shared_ca = self.provision_ca(id)?;
            let spec = self.agent_spec(id);
            let pid = agent::start(&self.bins.juju_sim, &spec)?;
            if let Some(machine) = self.world.machines.get_mut(&id) {
                machine.agent_pid = Some(pid);
            }
            self.save()?;
            if !shared_ca {
                // The first controller makes the CA before it listens: wait, so that the
                // machines provisioned next get it.
                agent::wait_until_up(&spec, AGENT_START_TIMEOUT)?;
            }
            pending.push(id);
        }
        for id in pending {
            agent::wait_until_up(&self.agent_spec(id), AGENT_START_TIMEOUT)?;
            added.push(self.add_unit(APP, id)?);
        }
        self.refresh_api_addresses()?;
        Ok(added)
    }

    /// Adds a unit of `app` on each of `machines` (workload machines with their namespaces).
    pub fn add_units_on(&mut self, app: &str, machines: &[u32]) -> Result<Vec<String>, SimError> {
        let mut added = Vec::new();
        for &id in machines {
            added.push(self.add_unit(app, id)?);
        }
        Ok(added)
    }

    /// Puts the controllers' API addresses in the hook-tool state (`JUJU_API_ADDRESSES`).
    pub fn refresh_api_addresses(&self) -> Result<(), SimError> {
        let addresses = if self.world.controller_machines().is_empty() {
            Vec::new()
        } else {
            crate::client::known_endpoints(&self.world)
        };
        self.store()
            .update(|state| state.api_addresses = addresses)?;
        Ok(())
    }

    /// Adds `count` workload machines with NICs in `spaces` (the default space when empty):
    /// each gets its namespace; its agent starts with [`Self::start_workload_agent`].
    /// Returns their ids.
    pub fn add_workload_machines(
        &mut self,
        count: usize,
        spaces: &[String],
    ) -> Result<Vec<u32>, SimError> {
        let mut added = Vec::new();
        for _ in 0..count {
            let id = self.world.add_workload_machine(spaces)?;
            self.save()?;
            netns::create_machine(&self.world, id)?;
            added.push(id);
        }
        Ok(added)
    }

    /// Writes workload machine `id`'s `agent.conf` (mode 0600) and starts its agent.
    pub fn start_workload_agent(
        &mut self,
        id: u32,
        conf: &WorkloadAgentConf,
    ) -> Result<(), SimError> {
        let agent_dir = machine_agent_dir(&self.dir, id);
        fs::create_dir_all(&agent_dir).map_err(io("create", &agent_dir))?;
        let text = conf.render(id, &machine_data_dir(&self.dir, id));
        write_private(&agent_dir.join("agent.conf"), text.as_bytes())?;
        let spec = self.agent_spec(id);
        let pid = agent::start(&self.bins.juju_sim, &spec)?;
        if let Some(machine) = self.world.machines.get_mut(&id) {
            machine.agent_pid = Some(pid);
        }
        self.save()
    }

    /// Removes workload machine `id`: stops its agent, deletes its namespace, forgets it.
    pub fn remove_workload_machine(&mut self, id: u32) -> Result<(), SimError> {
        match self.world.machines.get(&id) {
            None => return Err(world::WorldError::UnknownMachine(id.to_string()).into()),
            Some(machine) if !machine.workload => {
                return Err(SimError::Refused(format!(
                    "machine {id} is a controller, not a workload machine"
                )))
            }
            Some(_) => {}
        }
        self.stop_machine(id)?;
        self.world.machines.remove(&id);
        self.save()
    }

    /// The controllers' default-space addresses as `ip:17070`, in machine order: what the
    /// provisioner puts in a new agent's `agent.conf` (the addresses a client knows); the
    /// agent's address updater replaces them with the controllers' own list once it logs in.
    pub fn controller_api_addresses(&self) -> Vec<String> {
        crate::client::known_endpoints(&self.world)
    }

    /// The controller CA in PEM, from a controller that has it.
    pub fn controller_ca(&self) -> Option<String> {
        self.world
            .controller_machines()
            .iter()
            .find_map(|&id| fs::read_to_string(controller_dir(&self.dir, id).join("ca.pem")).ok())
    }

    /// Copies the controller CA of a controller that has one into machine `id`'s controller
    /// dir (`ca.key` 0600), as Juju hands a new controller the CA in its agent.conf: its
    /// Dqlite node needs a certificate of the cluster's CA to join. Returns whether there
    /// was one to copy (none for the first controller, whose agent makes it).
    fn provision_ca(&self, id: u32) -> Result<bool, SimError> {
        let source = self
            .world
            .machines
            .keys()
            .filter(|&&other| other != id)
            .find_map(|&other| {
                let dir = controller_dir(&self.dir, other);
                CA_FILES
                    .iter()
                    .all(|name| dir.join(name).is_file())
                    .then_some(dir)
            });
        let Some(source) = source else {
            return Ok(false);
        };
        let target = controller_dir(&self.dir, id);
        std::fs::create_dir_all(&target).map_err(io("create", &target))?;
        for name in CA_FILES {
            let to = target.join(name);
            std::fs::copy(source.join(name), &to).map_err(io("copy the CA into", &to))?;
            let mode = if name.ends_with(".key") { 0o600 } else { 0o644 };
            std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(io("set the mode of", &to))?;
        }
        Ok(true)
    }

    /// Adds a unit of `app` on machine `id`: its charm dir (the charm copied in, or the
    /// `dispatch` binary linked for the controller charm), its `agent.conf`, its bags in its
    /// application's relations, and the hooks Juju's uniter runs before the unit enters
    /// relation scope (section 1b).
    fn add_unit(&mut self, app: &str, id: u32) -> Result<String, SimError> {
        let spec = self
            .world
            .apps
            .get_mut(app)
            .ok_or_else(|| SimError::Refused(format!("application {app:?} not found")))?;
        let number = spec.next_unit;
        spec.next_unit += 1;
        let charm_source = spec.charm_dir.clone();
        let unit = format!("{app}/{number}");
        let data_dir = machine_data_dir(&self.dir, id);
        let unit_dir = data_dir.join("agents").join(format!("unit-{app}-{number}"));
        let charm_dir = unit_dir.join("charm");
        fs::create_dir_all(&charm_dir).map_err(io("create", &charm_dir))?;
        match &charm_source {
            Some(source) => copy_charm(source, &charm_dir)?,
            None => {
                let dispatch = charm_dir.join("dispatch");
                if fs::symlink_metadata(&dispatch).is_ok() {
                    fs::remove_file(&dispatch).map_err(io("replace", &dispatch))?;
                }
                std::os::unix::fs::symlink(&self.bins.dispatch, &dispatch)
                    .map_err(io("link", &dispatch))?;
            }
        }
        crate::mounts::ensure_mount_point().map_err(io(
            "create the mount point",
            Path::new(crate::mounts::JUJU_DATA_DIR),
        ))?;
        let model_uuid = self.store().load()?.model_uuid;
        let conf = unit_agent_conf(
            &unit,
            &model_uuid,
            &self.controller_api_addresses(),
            &new_password()?,
            self.controller_ca().as_deref(),
        );
        let conf_path = unit_dir.join("agent.conf");
        write_private(&conf_path, conf.as_bytes())?;
        let network = self.world.unit_network(id, app);
        let (leader, relations) = self.store().update(|state| {
            state.units.insert(
                unit.clone(),
                Unit {
                    machine: id.to_string(),
                    charm_dir: charm_dir.clone(),
                    data_dir: Some(data_dir.clone()),
                    network,
                    ..Unit::default()
                },
            );
            let leads = !state.leaders.contains_key(app);
            if leads {
                state.leaders.insert(app.to_owned(), unit.clone());
            }
            let relations = state.relations_of(&unit);
            for relation in &relations {
                state.create_bag(relation, &unit);
            }
            (leads, relations)
        })?;
        self.world.units.insert(
            unit.clone(),
            UnitQueue {
                machine: id,
                ..UnitQueue::default()
            },
        );
        for hook in world::new_unit_hooks(&relations, leader) {
            self.world.enqueue(&unit, hook);
        }
        self.save()?;
        Ok(unit)
    }

    /// Puts `unit` in the scope of its relations (after its `start`, as Juju's uniter does):
    /// it runs `-joined` and `-changed` for every unit already there, and each of those runs
    /// them for it.
    pub fn enter_scope(&mut self, unit: &str) -> Result<(), SimError> {
        let Some(queue) = self.world.units.get_mut(unit) else {
            return Ok(());
        };
        if queue.in_scope || queue.dying {
            return Ok(());
        }
        queue.in_scope = true;
        let members = self.store().update(|state| {
            let mut members = Vec::new();
            for relation in state.relations_of(unit) {
                let existing: Vec<String> = state.relations[&relation]
                    .units
                    .iter()
                    .filter(|u| *u != unit)
                    .cloned()
                    .collect();
                state.enter_scope(&relation, unit);
                members.push((relation, existing));
            }
            members
        })?;
        for (relation, existing) in members {
            for other in existing {
                for hook in world::peer_joined_hooks(&relation, &other) {
                    self.world.enqueue(unit, hook);
                }
                for hook in world::peer_joined_hooks(&relation, unit) {
                    self.world.enqueue(&other, hook);
                }
            }
        }
        self.save()
    }

    /// Starts removing machine `id`: its unit leaves its relations (its departing hooks and
    /// the others' `-departed` are queued), a new leader is elected if it led. The machine
    /// itself goes once its unit's hooks have run ([`Self::finish_removal`]).
    pub fn remove_machine(&mut self, id: u32) -> Result<String, SimError> {
        if !self.world.machines.contains_key(&id) {
            return Err(world::WorldError::UnknownMachine(id.to_string()).into());
        }
        let unit = self
            .world
            .unit_on(id)
            .map(str::to_owned)
            .ok_or_else(|| SimError::Refused(format!("machine {id} has no unit")))?;
        if self.world.units.get(&unit).is_some_and(|u| u.dying) {
            return Err(SimError::Refused(format!(
                "machine {id} is already being removed"
            )));
        }
        let app = State::app_of(&unit).to_owned();
        let remaining: Vec<String> = self
            .world
            .app_units(&app)
            .into_iter()
            .filter(|u| u != &unit)
            .collect();
        if remaining.is_empty() && app == APP {
            return Err(SimError::Refused(format!(
                "cannot remove machine {id}: it is the last controller"
            )));
        }
        let (new_leader, relations) = self.store().update(|state| {
            let mut relations = Vec::new();
            for relation in state.relations_of(&unit) {
                let was_in = state.relations[&relation].units.contains(&unit);
                let others: Vec<String> = state.relations[&relation]
                    .units
                    .iter()
                    .filter(|u| *u != &unit)
                    .cloned()
                    .collect();
                state.leave_relation(&relation, &unit);
                relations.push((relation, if was_in { others } else { Vec::new() }));
            }
            // A lease-governed application's next leader is whoever claims once the
            // leaver's grant is revoked ([`Self::finish_removal`]); the engine notices.
            let governed =
                crate::leadership::lease_leader(state, &app, crate::leadership::monotonic_ms())
                    .is_some();
            let new_leader = if !governed && state.is_leader(&unit) {
                let leader = world::elect_leader(&remaining);
                match &leader {
                    Some(leader) => {
                        state.leaders.insert(app.clone(), leader.clone());
                    }
                    None => {
                        state.leaders.remove(&app);
                    }
                }
                leader
            } else {
                None
            };
            (new_leader, relations)
        })?;
        if let Some(queue) = self.world.units.get_mut(&unit) {
            queue.dying = true;
            // Hooks it had not run yet no longer matter: it is going away.
            queue.queue.clear();
        }
        for hook in world::leaving_hooks(&relations, &unit) {
            self.world.enqueue(&unit, hook);
        }
        for (relation, others) in &relations {
            for other in others {
                self.world
                    .enqueue(other, QueuedHook::departed(relation, &unit, &unit));
            }
        }
        if let Some(leader) = new_leader {
            for other in &remaining {
                let hook = if other == &leader {
                    "leader-elected"
                } else {
                    "leader-settings-changed"
                };
                self.world.enqueue(other, QueuedHook::plain(hook));
            }
        }
        self.save()?;
        Ok(unit)
    }

    /// Ends a dying unit whose hooks have all run: stops its machine agent (the dbaccessor
    /// hands over and stops), deletes its namespace and forgets unit and machine.
    pub fn finish_removal(&mut self, unit: &str) -> Result<(), SimError> {
        let Some(queue) = self.world.units.get(unit).cloned() else {
            return Ok(());
        };
        let governed = {
            let state = self.store().load()?;
            crate::leadership::lease_leader(
                &state,
                State::app_of(unit),
                crate::leadership::monotonic_ms(),
            )
            .is_some()
        };
        // Juju removes the unit (revoking its leadership) before its machine: the lease goes
        // while the departing controller's node still answers, and the others' trackers can
        // claim it while the machine stops.
        if governed {
            self.revoke_leadership(unit);
        }
        self.stop_machine(queue.machine)?;
        self.store().update(|state| {
            state.units.remove(unit);
        })?;
        self.world.units.remove(unit);
        self.world.machines.remove(&queue.machine);
        self.save()?;
        self.refresh_api_addresses()
    }

    /// Ends removed `unit`'s grant of its application's leadership, if it holds one (the
    /// controller's part of a unit's removal, as Juju revokes a removed leader's lease), so
    /// that another unit claims at once. A failure is logged: the grant then runs out.
    fn revoke_leadership(&self, unit: &str) {
        let statement = crate::leadership::revoke_statement(State::app_of(unit), unit);
        let servers: Vec<String> = match crate::engine::cluster_view(self) {
            Ok(view) => view
                .map
                .values()
                .map(|ip| controller_contract::dqlite_address(*ip))
                .collect(),
            Err(e) => {
                log::warn!("cannot revoke {unit}'s leadership: {e}");
                return;
            }
        };
        if let Err(e) = self.shell(&servers, "controller", &statement, false) {
            log::warn!("cannot revoke {unit}'s leadership: {e}");
        }
    }

    /// Stops machine `id`'s agent and deletes its namespace.
    fn stop_machine(&mut self, id: u32) -> Result<(), SimError> {
        if let Some(pid) = self.world.machines.get(&id).and_then(|m| m.agent_pid) {
            agent::stop(&self.dir, id, pid);
        }
        if let Some(machine) = self.world.machines.get_mut(&id) {
            machine.agent_pid = None;
        }
        netns::delete_namespace(&self.world.machine_namespace(id))?;
        Ok(())
    }

    /// Writes every unit's `network-get` answers from the world into the hook-tool state.
    pub fn refresh_networks(&self) -> Result<(), SimError> {
        let networks: BTreeMap<String, BTreeMap<String, Value>> = self
            .world
            .units
            .iter()
            .map(|(unit, q)| {
                let app = State::app_of(unit);
                (unit.clone(), self.world.unit_network(q.machine, app))
            })
            .collect();
        self.store().update(|state| {
            for (unit, network) in networks {
                if let Some(entry) = state.units.get_mut(&unit) {
                    entry.network = network;
                }
            }
        })?;
        Ok(())
    }

    /// Makes `network-get` of the peer endpoint on `unit` print `raw` (or its real answer
    /// again with `None`) and queues `config-changed` on it.
    pub fn fault_network_get(&mut self, unit: &str, raw: Option<&str>) -> Result<(), SimError> {
        if !self.world.units.contains_key(unit) {
            return Err(SimError::Refused(format!(
                "unit {unit:?} is not in the model"
            )));
        }
        self.store().update(|state| {
            if let Some(entry) = state.units.get_mut(unit) {
                match raw {
                    Some(raw) => {
                        entry
                            .network_raw
                            .insert(PEER_ENDPOINT.to_owned(), raw.to_owned());
                    }
                    None => {
                        entry.network_raw.remove(PEER_ENDPOINT);
                    }
                }
            }
        })?;
        self.world
            .enqueue(unit, QueuedHook::plain("config-changed"));
        self.save()
    }

    /// Queues `hook` on every live unit of `app`.
    pub fn enqueue_app(&mut self, app: &str, hook: &QueuedHook) {
        for unit in self.world.app_units(app) {
            self.world.enqueue(&unit, hook.clone());
        }
    }

    /// Adds a space (and its bridge); machines added later get a NIC in it.
    pub fn add_space(&mut self, name: &str, cidr: &str) -> Result<(), SimError> {
        let space = self.world.add_space(name, cidr)?.clone();
        netns::add_bridge(&self.world, &space)?;
        self.save()
    }

    /// Gives machine `id` a NIC on `space`; its unit gets `config-changed` (its addresses
    /// changed).
    pub fn add_nic(&mut self, id: u32, space: &str) -> Result<String, SimError> {
        let nic = self.world.add_nic(id, space)?;
        netns::add_nic(&self.world, id, &nic)?;
        self.save()?;
        self.refresh_networks()?;
        if let Some(unit) = self.world.unit_on(id).map(str::to_owned) {
            self.world
                .enqueue(&unit, QueuedHook::plain("config-changed"));
        }
        self.save()?;
        Ok(format!("{} {}", nic.name, nic.address))
    }

    /// Binds `app`'s `endpoint` (`""`: every endpoint without its own binding) to `space`
    /// (`""`: unbinds); every unit of it gets `config-changed`.
    pub fn bind(&mut self, app: &str, endpoint: &str, space: &str) -> Result<(), SimError> {
        self.charm(app)?.check_endpoint(app, endpoint)?;
        if !space.is_empty() && !self.world.spaces.contains_key(space) {
            return Err(world::WorldError::UnknownSpace(space.to_owned()).into());
        }
        let bindings = &mut self
            .world
            .apps
            .get_mut(app)
            .expect("charm() found the application")
            .bindings;
        if space.is_empty() {
            bindings.remove(endpoint);
        } else {
            bindings.insert(endpoint.to_owned(), space.to_owned());
        }
        self.save()?;
        self.refresh_networks()?;
        self.enqueue_app(app, &QueuedHook::plain("config-changed"));
        self.save()
    }

    /// Sets `app`'s charm options (`key=value`, checked against its config.yaml as Juju
    /// checks them); its units get `config-changed` when one changed.
    pub fn set_config(
        &mut self,
        app: &str,
        settings: &[(String, Value)],
    ) -> Result<bool, SimError> {
        let charm = self.charm(app)?;
        let mut checked = Vec::new();
        for (key, value) in settings {
            checked.push((key.clone(), charm.check_setting(key, value)?));
        }
        let changed = self.store().update(|state| {
            let config = &mut state.applications.entry(app.to_owned()).or_default().config;
            let mut changed = false;
            for (key, value) in checked {
                if config.get(&key) != Some(&value) {
                    config.insert(key, value);
                    changed = true;
                }
            }
            changed
        })?;
        if changed {
            self.enqueue_app(app, &QueuedHook::plain("config-changed"));
            self.save()?;
        }
        Ok(changed)
    }

    /// Stops every machine, deletes every namespace and the model dir.
    pub fn destroy(mut self) -> Result<(), SimError> {
        let ids: Vec<u32> = self.world.machines.keys().copied().collect();
        for id in ids {
            self.stop_machine(id)?;
        }
        netns::delete_namespace(&self.world.client_namespace())?;
        netns::delete_namespace(&self.world.net_namespace())?;
        netns::unregister(&self.world.prefix);
        let dir = self.dir.clone();
        drop(self);
        fs::remove_dir_all(&dir).map_err(io("remove", &dir))
    }
}

/// A unit's `agent.conf` (`<data-dir>/agents/unit-<app>-<n>/agent.conf`) in Juju's key
/// names, with `/var/lib/juju` as the data dir as the unit sees it in its machine's mount
/// namespace.
/// `password` is the unit agent's (`apipassword`; the controller agent of the unit's machine
/// registers it as the unit's credential), `ca_cert` the controller CA when there is one.
pub fn unit_agent_conf(
    unit: &str,
    model_uuid: &str,
    api_addresses: &[String],
    password: &str,
    ca_cert: Option<&str>,
) -> String {
    use serde_yaml_ng::Value as Yaml;
    let mut map = serde_yaml_ng::Mapping::new();
    let mut put = |key: &str, value: Yaml| {
        map.insert(Yaml::from(key), value);
    };
    put(
        "tag",
        Yaml::from(format!("unit-{}", unit.replace('/', "-"))),
    );
    put("datadir", Yaml::from(crate::mounts::JUJU_DATA_DIR));
    put("upgradedToVersion", Yaml::from("4.0.0"));
    put("model", Yaml::from(format!("model-{model_uuid}")));
    put(
        "apiaddresses",
        Yaml::Sequence(
            api_addresses
                .iter()
                .map(|a| Yaml::from(a.as_str()))
                .collect(),
        ),
    );
    put("apipassword", Yaml::from(password));
    if let Some(ca_cert) = ca_cert {
        put("cacert", Yaml::from(ca_cert));
    }
    serde_yaml_ng::to_string(&Yaml::Mapping(map)).expect("plain data serializes")
}

/// A new agent password: 32 hex characters from the kernel's random source.
fn new_password() -> Result<String, SimError> {
    let path = Path::new("/dev/urandom");
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(
        &mut fs::File::open(path).map_err(io("open", path))?,
        &mut bytes,
    )
    .map_err(io("read", path))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `bytes` to `path` with mode 0600 (a temp file renamed over it).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SimError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut temp = path.as_os_str().to_owned();
    temp.push(".new");
    let temp = PathBuf::from(temp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(io("create", &temp))?;
    std::io::Write::write_all(&mut file, bytes).map_err(io("write", &temp))?;
    fs::rename(&temp, path).map_err(io("rename", &temp))
}

/// Removes every `jsim-*` namespace whose model dir is gone (killing what still runs in it)
/// and returns their names.
pub fn cleanup_stale() -> Result<Vec<String>, SimError> {
    let mut removed = Vec::new();
    for namespace in netns::list_sim_namespaces()? {
        let Some(prefix) = netns::prefix_of(&namespace) else {
            continue;
        };
        let alive =
            netns::registered_model(prefix).is_some_and(|dir| world_path(Path::new(&dir)).exists());
        if alive {
            continue;
        }
        for pid in netns::namespace_pids(&namespace) {
            agent::signal(pid, rustix::process::Signal::KILL);
        }
        netns::delete_namespace(&namespace)?;
        netns::unregister(prefix);
        removed.push(namespace);
    }
    Ok(removed)
}
