//! The cluster application layer: bootstrap, join, restart, roles, hand-over, recovery.
//!
//! An [`App`] runs one local node and keeps it a good member of its cluster:
//!
//! - [`App::start`] decides from the data dir and the configuration ([`plan::plan_startup`])
//!   whether to bootstrap a new cluster (id 1), join one through its peers (a new random
//!   id, ADD as spare, then promotion), or restart the member the data dir belongs to.
//! - A background task finds the leader every `role_interval`, refreshes the persisted
//!   member list (`cluster.yaml`), and, on the leader, probes every member and applies the
//!   role plan ([`roles::plan_roles`]): the configured numbers of voters and stand-bys,
//!   promoting and demoting as nodes come and go. A ready follower that still follows the
//!   same leader asks only its own node in most rounds and the leader about once a second
//!   ([`App::rounds`] counts both kinds), so that the leader's event loop, which carries
//!   every write, is not also answering every follower five times a second.
//! - [`App::stop`] hands leadership and the node's vote over first ([`App::handover`]).
//! - [`App::remove`] refuses to remove the last voter: libdqlite 1.11 accepts it and the
//!   cluster is dead until an offline recovery.
//!
//! The offline operations ([`recover_to`], [`recover_checked`], [`shrink_to_one`],
//! [`rebind`], [`choose_most_up_to_date`]) work on the data dir of a stopped node.
//!
//! The decisions are pure and live in submodules ([`roles`], [`plan`], [`recovery`]); this
//! module observes and applies.
//!
//! A process running an [`App`] should set `UV_THREADPOOL_SIZE` well above 4 before anything
//! starts (dbaccessor's `main` sets 64): libdqlite 1.11 opens raft connections with a
//! blocking `connect()` on libuv's thread pool, which raft's disk work shares. Each member
//! whose machine is gone (its address silent, not refusing) holds a thread until the
//! kernel's SYN timeout, about 2 minutes, even after its removal; with the default 4
//! threads the leader then answers LEADER but stalls every write and barrier. Stopping the
//! node also waits for those connects.

pub mod plan;
pub mod recovery;
pub mod roles;
pub mod store;

mod ops;
mod run;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use controller_backoff::Backoff;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::client::{Client, Options};
use crate::node::{self, LogPosition, Node, NodeError, NodeIdentity, NodeOptions, BOOTSTRAP_ID};
use crate::{NodeInfo, NodeRole};

pub use plan::{PersistedState, PlanError, StartupPlan};
pub use recovery::BehindError;
pub use roles::{MemberState, RoleChange, RoleTargets};
pub use store::StoreError;

/// The marker file of a join that was started and not yet confirmed (go-dqlite's name).
pub const JOIN_FILE: &str = "join";

/// How an [`App`] runs.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Where the node keeps its raft log, `info.yaml` and `cluster.yaml`.
    pub data_dir: PathBuf,
    /// The address the node binds and its peers dial (`ipv4:port` or `@name`).
    pub address: String,
    /// Addresses of existing members to join through; empty to bootstrap. Ignored on a
    /// restart (the persisted member list is used, with these as extra seeds).
    pub peers: Vec<String>,
    /// How the local node runs (network latency, failure domain, snapshots).
    pub node: NodeOptions,
    /// Target number of voters (an even number counts as the odd one below it).
    pub voters: usize,
    /// Target number of stand-bys.
    pub standbys: usize,
    /// How often the leader reviews the roles (and every node refreshes `cluster.yaml`).
    pub role_interval: Duration,
    /// How long [`App::start`] of a joining node waits to be added to the cluster.
    pub join_timeout: Duration,
    /// The limit on each connection attempt and request to another node.
    pub request_timeout: Duration,
}

impl AppConfig {
    /// A configuration with the defaults: 3 voters, 3 stand-bys, a role review every
    /// second, 30 s to join, 2 s per request.
    pub fn new(data_dir: impl Into<PathBuf>, address: impl Into<String>) -> AppConfig {
        AppConfig {
            data_dir: data_dir.into(),
            address: address.into(),
            peers: Vec::new(),
            node: NodeOptions::default(),
            voters: 3,
            standbys: 3,
            role_interval: Duration::from_secs(1),
            join_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// Everything that can go wrong in the application layer, one variant per failed operation.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("invalid configuration: {reason}")]
    InvalidConfig { reason: String },
    #[error("cannot plan the start-up of {data_dir:?}")]
    Plan {
        data_dir: PathBuf,
        source: PlanError,
    },
    #[error("cannot read the state of data dir {data_dir:?}")]
    ReadState {
        data_dir: PathBuf,
        source: NodeError,
    },
    #[error("cannot write the join marker {path:?}")]
    JoinMarker { path: PathBuf, source: io::Error },
    #[error("cannot create the node")]
    CreateNode { source: NodeError },
    #[error("cannot start the node")]
    StartNode { source: NodeError },
    #[error("cannot stop the node")]
    StopNode { source: NodeError },
    #[error("cannot keep the persisted member list")]
    Store {
        #[from]
        source: StoreError,
    },
    #[error("node {id} did not join the cluster within {timeout:?}: {last_error}")]
    JoinTimeout {
        id: u64,
        timeout: Duration,
        last_error: String,
    },
    #[error("no leader found among {addresses:?}: {last_error}")]
    NoLeader {
        addresses: Vec<String>,
        last_error: String,
    },
    #[error("cannot {operation}")]
    Cluster {
        operation: String,
        source: crate::client::Error,
    },
    #[error("the node was not ready within {timeout:?}")]
    NotReady { timeout: Duration },
    #[error("the application is stopping")]
    Stopping,
    #[error("refusing to remove node {id}: it is the last voter, and the cluster would be dead until an offline recovery")]
    LastVoter { id: u64 },
    #[error("node {id} is not a member of the cluster")]
    NotMember { id: u64 },
    #[error("cannot hand leadership over: no other voter is online")]
    NoTransferTarget,
    #[error("cannot hand over: {reason}")]
    Handover { reason: String },
    #[error("the data dir {data_dir:?} has no node identity (info.yaml)")]
    NoIdentity { data_dir: PathBuf },
    #[error("cannot read the log position of {data_dir:?}")]
    LogPosition {
        data_dir: PathBuf,
        source: NodeError,
    },
    #[error("cannot recover {data_dir:?}")]
    Recover {
        data_dir: PathBuf,
        source: NodeError,
    },
    #[error("refusing to recover {data_dir:?}")]
    Behind {
        data_dir: PathBuf,
        source: BehindError,
    },
    #[error("no data dir to choose from")]
    NoDataDirs,
    #[error("a blocking task failed: {reason}")]
    Blocking { reason: String },
}

/// One running application node. Stop it with [`App::stop`] (hand-over, then stop):
/// dropping it stops the node without a hand-over, blocking the current thread.
pub struct App {
    shared: Arc<Shared>,
    /// The local node; `None` once stopped.
    node: Option<Node>,
    /// The background task (join, member list refresh, role loop).
    task: Option<JoinHandle<()>>,
    /// Tells the background task to end.
    shutdown: watch::Sender<bool>,
    /// Becomes `true` once the node is in the configuration and a leader is known.
    ready: watch::Receiver<bool>,
}

/// What the application and its background task share.
struct Shared {
    /// The local node's raft id: who "we" are in every configuration.
    id: u64,
    /// The local node's address: the first place to ask for the leader.
    address: String,
    /// Where `cluster.yaml` is kept up to date.
    data_dir: PathBuf,
    /// What the role reviews aim for.
    targets: RoleTargets,
    /// The pause between background rounds.
    role_interval: Duration,
    /// The bound on each connect and request to another node.
    request_timeout: Duration,
    /// Client options for every connection to a node: `request_timeout` and the node's TLS.
    dial: Options,
    /// How long to keep looking for a leader: a few election timeouts (libdqlite's is 15
    /// times the network latency), at least one request timeout.
    leader_wait: Duration,
    /// Addresses to look for the leader at: the configured peers, then the members the
    /// cluster reported last (also persisted in `cluster.yaml`).
    seeds: Mutex<Vec<String>>,
    /// Wakes the role loop before its interval ends (after a join, on request).
    kick: Notify,
    /// Failed probes in a row and last known metadata, by member id: a voter is taken for
    /// offline only after `run::OFFLINE_AFTER` failed rounds.
    probe_memory: Mutex<HashMap<u64, run::ProbeMemory>>,
    /// Leader connections kept between uses (at most [`KEPT_LEADERS`]): the status queries
    /// ([`App::cluster`], [`App::leader`]), which the dbaccessor makes every second, and the
    /// background rounds each need one, and a fresh lookup costs a connection and a TLS
    /// handshake to this node, often one to the leader too. Checked before each use (the
    /// node must still name itself the leader, see `ops::Leader::still_leads`).
    leaders: Mutex<Vec<ops::Leader>>,
    /// The connection the last probe of each member used, by address, for the next probe
    /// (the leader probes every member every round; a follower's quiet round asks its own
    /// node through its entry). Dropped when a probe fails or the member leaves.
    peers: Mutex<HashMap<String, crate::client::Connection>>,
    /// The member list `cluster.yaml` was last read or written with by this process: a
    /// round whose list matches it skips the file (a blocking-pool hop, a read and a parse
    /// five times a second on every node at the dbaccessor's pace).
    persisted: Mutex<Option<Vec<NodeInfo>>>,
    /// The background rounds so far, full and quiet: see [`App::rounds`].
    full_rounds: AtomicU64,
    quiet_rounds: AtomicU64,
}

/// How many background rounds a node has run since it started ([`App::rounds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rounds {
    /// Rounds that asked the leader for the member list (and, on the leader, reviewed the
    /// roles); failed ones included.
    pub full: u64,
    /// A follower's rounds that asked only its own node which leader it follows.
    pub quiet: u64,
}

/// How many leader connections [`Shared`] keeps: one for the status queries and one for the
/// background round, which may run at the same time.
const KEPT_LEADERS: usize = 2;

impl Shared {
    /// The addresses to look for the leader at, our own first (cheapest, and right when we
    /// lead).
    fn seed_addresses(&self) -> Vec<String> {
        let seeds = self
            .seeds
            .lock()
            .expect("the seed list lock is never poisoned: no panic holds it");
        let mut addresses = vec![self.address.clone()];
        for address in seeds.iter() {
            if !addresses.contains(address) {
                addresses.push(address.clone());
            }
        }
        addresses
    }

    fn set_seeds(&self, members: &[NodeInfo]) {
        let mut seeds = self
            .seeds
            .lock()
            .expect("the seed list lock is never poisoned: no panic holds it");
        for member in members {
            if !seeds.contains(&member.address) {
                seeds.push(member.address.clone());
            }
        }
        // Members the cluster no longer lists stay at the end as a last resort; the
        // current ones go first.
        seeds.sort_by_key(|address| !members.iter().any(|m| &m.address == address));
    }

    /// A connection to the current leader: a kept one whose node still leads, else a new
    /// lookup, which looks again for up to `leader_wait` while an election is under way
    /// (nobody leads). Give it back with [`Shared::keep_leader`] when done.
    async fn leader(&self) -> Result<ops::Leader, AppError> {
        loop {
            // Its own statement: the guard must not live across the await below.
            let kept = self.lock_leaders().pop();
            let Some(mut kept) = kept else { break };
            if kept.still_leads().await {
                return Ok(kept);
            }
        }
        let deadline = tokio::time::Instant::now() + self.leader_wait;
        let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(250));
        loop {
            match ops::find_leader(&self.seed_addresses(), &self.dial).await {
                Err(error) if tokio::time::Instant::now() + backoff.upcoming() < deadline => {
                    log::debug!("node {}: no leader yet: {error}", self.id);
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                result => return result,
            }
        }
    }

    /// Keeps `leader` for the next [`Shared::leader`] if it can carry another request.
    fn keep_leader(&self, mut leader: ops::Leader) {
        if leader.connection.is_usable() {
            let mut kept = self.lock_leaders();
            if kept.len() < KEPT_LEADERS {
                kept.push(leader);
            }
        }
    }

    fn lock_leaders(&self) -> std::sync::MutexGuard<'_, Vec<ops::Leader>> {
        self.leaders
            .lock()
            .expect("the kept leader lock is never poisoned: no panic holds it")
    }

    /// Takes out the kept probe connection to each of `addresses` (in their order), and
    /// drops those to any other address (members that left).
    fn take_peers(&self, addresses: &[&str]) -> Vec<Option<crate::client::Connection>> {
        let mut kept = self.lock_peers();
        let taken = addresses.iter().map(|a| kept.remove(*a)).collect();
        kept.clear();
        taken
    }

    /// Takes out the kept probe connection to `address`, if any.
    fn take_peer(&self, address: &str) -> Option<crate::client::Connection> {
        self.lock_peers().remove(address)
    }

    /// Keeps `connection` for the next probe of its node.
    fn keep_peer(&self, connection: crate::client::Connection) {
        self.lock_peers()
            .insert(connection.address().to_owned(), connection);
    }

    fn lock_peers(&self) -> std::sync::MutexGuard<'_, HashMap<String, crate::client::Connection>> {
        self.peers
            .lock()
            .expect("the kept peer lock is never poisoned: no panic holds it")
    }
}

impl App {
    /// Starts the local node: bootstraps a new cluster, joins one through
    /// `config.peers`, or restarts the member the data dir belongs to (see
    /// [`plan::plan_startup`]). A joining node returns once the cluster has added it (as a
    /// spare; promotion follows in the background), or fails after `join_timeout`.
    pub async fn start(config: AppConfig) -> Result<App, AppError> {
        if config.voters == 0 {
            return Err(AppError::InvalidConfig {
                reason: "voters must be at least 1".to_owned(),
            });
        }
        node::check_address(&config.address).map_err(|source| AppError::InvalidConfig {
            reason: source.to_string(),
        })?;
        let data_dir = config.data_dir.clone();
        let state = blocking({
            let data_dir = data_dir.clone();
            move || read_persisted_state(&data_dir)
        })
        .await??;
        let startup =
            plan::plan_startup(&state, &config.address, &config.peers).map_err(|source| {
                AppError::Plan {
                    data_dir: data_dir.clone(),
                    source,
                }
            })?;

        let (id, join) = match &startup {
            StartupPlan::Bootstrap => (BOOTSTRAP_ID, false),
            StartupPlan::Join { .. } => (node::generate_node_id(&config.address), true),
            StartupPlan::Restart {
                identity,
                join_pending,
            } => (identity.id, *join_pending),
        };
        if let StartupPlan::Join { .. } = startup {
            // The marker goes first: a crash between here and the ADD leaves a node that
            // knows it must still join, not one that waits forever to be added.
            create_dir_private(&data_dir)?;
            write_join_marker(&data_dir)?;
        }
        let mut seeds: Vec<String> = config
            .peers
            .iter()
            .filter(|p| **p != config.address)
            .cloned()
            .collect();
        let persisted = {
            let data_dir = data_dir.clone();
            blocking(move || store::load(&data_dir)).await??
        };
        for member in &persisted {
            if member.address != config.address && !seeds.contains(&member.address) {
                seeds.push(member.address.clone());
            }
        }

        let mut node = {
            let (address, data_dir, options) = (
                config.address.clone(),
                data_dir.clone(),
                config.node.clone(),
            );
            blocking(move || Node::new(id, &address, &data_dir, &options))
                .await?
                .map_err(|source| AppError::CreateNode { source })?
        };
        node = blocking(move || node.start().map(|()| node))
            .await?
            .map_err(|source| AppError::StartNode { source })?;
        if persisted.is_empty() {
            let own = NodeInfo {
                id,
                address: config.address.clone(),
                role: NodeRole::Voter,
            };
            let mut seed_list = vec![own];
            seed_list.extend(seeds.iter().map(|address| NodeInfo {
                id: 0,
                address: address.clone(),
                role: NodeRole::Spare,
            }));
            let data_dir = data_dir.clone();
            blocking(move || store::save(&data_dir, &seed_list)).await??;
        }

        let shared = Arc::new(Shared {
            id,
            address: config.address.clone(),
            data_dir: data_dir.clone(),
            targets: RoleTargets {
                voters: config.voters,
                standbys: config.standbys,
            },
            role_interval: config.role_interval,
            request_timeout: config.request_timeout,
            dial: ops::options(config.request_timeout, config.node.tls.clone()),
            leader_wait: (config.node.network_latency * 60).max(config.request_timeout),
            seeds: Mutex::new(seeds),
            kick: Notify::new(),
            probe_memory: Mutex::new(HashMap::new()),
            leaders: Mutex::new(Vec::new()),
            peers: Mutex::new(HashMap::new()),
            persisted: Mutex::new(None),
            full_rounds: AtomicU64::new(0),
            quiet_rounds: AtomicU64::new(0),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (ready_tx, ready) = watch::channel(false);
        let mut app = App {
            shared: shared.clone(),
            node: Some(node),
            task: None,
            shutdown,
            ready,
        };

        if join {
            let joined = tokio::time::timeout(config.join_timeout, run::join(&shared)).await;
            let failure = match joined {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(crate::error_chain(&error)),
                Err(_) => Some("timed out".to_owned()),
            };
            if let Some(last_error) = failure {
                app.stop_without_handover().await?;
                return Err(AppError::JoinTimeout {
                    id,
                    timeout: config.join_timeout,
                    last_error,
                });
            }
            remove_join_marker(&data_dir)?;
            shared.kick.notify_one();
        }
        app.task = Some(tokio::spawn(run::background(shared, shutdown_rx, ready_tx)));
        Ok(app)
    }

    /// Waits until a leader is known and this node is in its configuration.
    pub async fn ready(&self, timeout: Duration) -> Result<(), AppError> {
        let mut ready = self.ready.clone();
        let waited = tokio::time::timeout(timeout, async {
            ready.wait_for(|ready| *ready).await.map(|_| ())
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(AppError::Stopping),
            Err(_) => Err(AppError::NotReady { timeout }),
        }
    }

    /// The local node's raft id.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// How many background rounds this node has run, full and quiet: a follower that
    /// keeps following the same leader runs mostly quiet ones, the leader only full ones.
    pub fn rounds(&self) -> Rounds {
        Rounds {
            full: self.shared.full_rounds.load(Ordering::Relaxed),
            quiet: self.shared.quiet_rounds.load(Ordering::Relaxed),
        }
    }

    /// The local node's address.
    pub fn address(&self) -> &str {
        &self.shared.address
    }

    /// The local node's data dir.
    pub fn data_dir(&self) -> &Path {
        &self.shared.data_dir
    }

    /// A client for SQL and membership requests: it finds the leader among the current
    /// members and follows it when it changes, retrying for as long as an election at
    /// libdqlite's default latency can take (the client's default retry time).
    pub async fn client(&self) -> Result<Client, AppError> {
        // Refresh the member list first, so that the client knows every member, not only
        // those this node had heard of at its last round.
        if let Ok(mut leader) = self.shared.leader().await {
            if let Ok(members) = ops::cluster(&mut leader).await {
                self.shared.set_seeds(&members);
            }
        }
        let addresses = self.shared.seed_addresses();
        let options = Options {
            retry_timeout: Options::default().retry_timeout,
            ..self.shared.dial.clone()
        };
        Client::connect_leader(&addresses, options)
            .await
            .map_err(|source| AppError::Cluster {
                operation: "connect to the leader".to_owned(),
                source,
            })
    }

    /// The addresses of the members this node knows (itself first): where a client looks
    /// for the leader.
    pub fn member_addresses(&self) -> Vec<String> {
        self.shared.seed_addresses()
    }

    /// The cluster configuration as the leader reports it.
    pub async fn cluster(&self) -> Result<Vec<NodeInfo>, AppError> {
        self.leader_and_members().await.map(|(_, members)| members)
    }

    /// The current leader, `None` when none is known.
    pub async fn leader(&self) -> Result<Option<NodeInfo>, AppError> {
        match self.leader_and_members().await {
            Ok((leader, members)) => Ok(members.into_iter().find(|m| m.id == leader)),
            Err(AppError::NoLeader { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The leader's id and the configuration it reports, through a kept leader connection
    /// while its node still leads (see [`Shared::leader`]).
    async fn leader_and_members(&self) -> Result<(u64, Vec<NodeInfo>), AppError> {
        let mut leader = self.shared.leader().await?;
        let members = ops::cluster(&mut leader).await?;
        let id = leader.id;
        self.shared.keep_leader(leader);
        Ok((id, members))
    }

    /// Runs one role review now (as the leader's loop does every `role_interval`) and
    /// returns the changes applied; nothing when this node is not the leader.
    pub async fn adjust_roles(&self) -> Result<Vec<RoleChange>, AppError> {
        run::adjust_roles(&self.shared).await
    }

    /// Hands this node's responsibilities over: leadership to another online voter, then
    /// its vote (or stand-by place) to the best online candidate, becoming a spare. A voter
    /// without a candidate still steps down while another voter is online (its stopping
    /// must not take the quorum with it); a lone voter keeps its vote. A lone voter with a
    /// stand-by or spare first makes it a voter, so that it can hand leadership over.
    pub async fn handover(&self) -> Result<(), AppError> {
        run::handover(&self.shared).await
    }

    /// Removes node `id` from the cluster. Refuses to remove the last voter; moves
    /// leadership away first when `id` leads.
    pub async fn remove(&self, id: u64) -> Result<(), AppError> {
        run::remove(&self.shared, id).await
    }

    /// Marks the node as draining (weight [`roles::DRAINING_WEIGHT`], so that no leader
    /// promotes it while it goes), hands over (see [`App::handover`]; a failure is logged,
    /// not fatal), stops the background task, then stops the node.
    pub async fn stop(self) -> Result<(), AppError> {
        if let Err(error) = run::mark_draining(&self.shared).await {
            log::warn!(
                "node {}: cannot mark the node as draining: {}",
                self.shared.id,
                crate::error_chain(&error)
            );
        }
        if let Err(error) = self.handover().await {
            log::warn!(
                "node {}: hand-over before stopping failed: {error}",
                self.shared.id
            );
        }
        self.stop_without_handover().await
    }

    /// Stops the background task and the node without handing anything over, as a crash
    /// would (the cluster notices when heartbeats stop).
    pub async fn stop_without_handover(mut self) -> Result<(), AppError> {
        self.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            // The task ends at its next await point; a panic in it is already reported.
            let _ = task.await;
        }
        if let Some(mut node) = self.node.take() {
            blocking(move || node.stop())
                .await?
                .map_err(|source| AppError::StopNode { source })?;
        }
        Ok(())
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
        // The node (if still there) stops in its own Drop.
    }
}

/// Rewrites the raft configuration of the stopped node in `data_dir` to `members`
/// (offline), and the persisted member list with it. The node's next start uses that
/// configuration. Choose the member to recover with [`choose_most_up_to_date`]: a stale
/// member's recovery drops committed entries ([`recover_checked`] refuses it).
pub async fn recover_to(data_dir: &Path, members: &[NodeInfo]) -> Result<(), AppError> {
    let data_dir = data_dir.to_owned();
    let members = members.to_vec();
    blocking(move || {
        let identity = load_identity(&data_dir)?;
        node::recover(&data_dir, &identity, &members).map_err(|source| AppError::Recover {
            data_dir: data_dir.clone(),
            source,
        })?;
        store::save(&data_dir, &members)?;
        Ok(())
    })
    .await?
}

/// Like [`recover_to`], but first checks that the log in `data_dir` is not behind the
/// logs in `other_dirs` (the other members' data dirs, stopped): recovering a stale member
/// silently drops committed entries. `force` accepts that loss.
pub async fn recover_checked(
    data_dir: &Path,
    members: &[NodeInfo],
    other_dirs: &[PathBuf],
    force: bool,
) -> Result<(), AppError> {
    let own = read_log_position(data_dir.to_owned()).await?;
    let mut others = Vec::with_capacity(other_dirs.len());
    for dir in other_dirs {
        others.push(read_log_position(dir.clone()).await?);
    }
    recovery::check_recovery_source(own, &others, force).map_err(|source| AppError::Behind {
        data_dir: data_dir.to_owned(),
        source,
    })?;
    recover_to(data_dir, members).await
}

/// Makes the stopped node in `data_dir` the only member (a voter) of its cluster: the way
/// out when the other members are gone for good. Returns its identity.
pub async fn shrink_to_one(data_dir: &Path) -> Result<NodeIdentity, AppError> {
    let identity = {
        let data_dir = data_dir.to_owned();
        blocking(move || load_identity(&data_dir)).await??
    };
    let own = NodeInfo {
        id: identity.id,
        address: identity.address.clone(),
        role: NodeRole::Voter,
    };
    recover_to(data_dir, &[own]).await?;
    Ok(identity)
}

/// Moves the stopped node in `data_dir` to `new_address`, as the only member (a voter) of
/// its cluster: for a node that bootstrapped alone on one address (say loopback) and must
/// now listen on another. Its other members, if any, are dropped from its configuration.
/// Returns its new identity.
pub async fn rebind(data_dir: &Path, new_address: &str) -> Result<NodeIdentity, AppError> {
    node::check_address(new_address).map_err(|source| AppError::InvalidConfig {
        reason: source.to_string(),
    })?;
    let identity = {
        let data_dir = data_dir.to_owned();
        blocking(move || load_identity(&data_dir)).await??
    };
    let own = NodeInfo {
        id: identity.id,
        address: new_address.to_owned(),
        role: NodeRole::Voter,
    };
    recover_to(data_dir, &[own]).await?;
    Ok(NodeIdentity {
        id: identity.id,
        address: new_address.to_owned(),
    })
}

/// The data dir, among the stopped members' `dirs`, whose raft log is the most up-to-date
/// (the one to recover from), with its log position.
pub async fn choose_most_up_to_date(dirs: &[PathBuf]) -> Result<(PathBuf, LogPosition), AppError> {
    let mut positions = Vec::with_capacity(dirs.len());
    for dir in dirs {
        positions.push(read_log_position(dir.clone()).await?);
    }
    let best = recovery::most_up_to_date(&positions).ok_or(AppError::NoDataDirs)?;
    Ok((dirs[best].clone(), positions[best]))
}

async fn read_log_position(data_dir: PathBuf) -> Result<LogPosition, AppError> {
    blocking(move || {
        node::log_position(&data_dir).map_err(|source| AppError::LogPosition { data_dir, source })
    })
    .await?
}

/// Reads what the data dir holds. Blocks.
fn read_persisted_state(data_dir: &Path) -> Result<PersistedState, AppError> {
    let identity = NodeIdentity::load(data_dir).map_err(|source| AppError::ReadState {
        data_dir: data_dir.to_owned(),
        source,
    })?;
    Ok(PersistedState {
        identity,
        // libraft writes its metadata files at a node's first start.
        has_raft_data: data_dir.join("metadata1").exists() || data_dir.join("metadata2").exists(),
        join_pending: data_dir.join(JOIN_FILE).exists(),
    })
}

fn load_identity(data_dir: &Path) -> Result<NodeIdentity, AppError> {
    NodeIdentity::load(data_dir)
        .map_err(|source| AppError::ReadState {
            data_dir: data_dir.to_owned(),
            source,
        })?
        .ok_or_else(|| AppError::NoIdentity {
            data_dir: data_dir.to_owned(),
        })
}

fn create_dir_private(data_dir: &Path) -> Result<(), AppError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|source| AppError::JoinMarker {
            path: data_dir.to_owned(),
            source,
        })
}

fn write_join_marker(data_dir: &Path) -> Result<(), AppError> {
    let path = data_dir.join(JOIN_FILE);
    std::fs::write(&path, b"").map_err(|source| AppError::JoinMarker { path, source })
}

fn remove_join_marker(data_dir: &Path) -> Result<(), AppError> {
    let path = data_dir.join(JOIN_FILE);
    match std::fs::remove_file(&path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(AppError::JoinMarker {
            path,
            source: error,
        }),
        _ => Ok(()),
    }
}

/// Runs a blocking call (FFI, file IO) off the runtime's threads.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|error| AppError::Blocking {
            reason: error.to_string(),
        })
}
