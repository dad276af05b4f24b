//! A safe owner of one libdqlite node, its persisted identity and its locked data dir.
//!
//! A [`Node`] is always bound: [`Node::new`] creates the C node and sets its bind address
//! before it returns, so the 1.11 abort on "start without a bind address" cannot happen.
//! The data dir is locked for the node's whole life (a second [`Node::new`], [`recover`] or
//! [`log_position`] on it, in this process or another, fails with
//! [`NodeError::DataDirLocked`]), and the
//! node's id and address, which libdqlite does not store, are persisted in a
//! go-dqlite-compatible `info.yaml` beside raft's files.
//!
//! Every call here blocks (start opens the raft log, stop joins the node's thread, recover
//! writes the log): async callers run them under `tokio::task::spawn_blocking`.

mod connect;
mod forward;
mod identity;
mod listener;
mod lock;
mod log;

use std::ffi::{CStr, CString};
use std::fs::DirBuilder;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::ffi;
use crate::tls::Tls;
use crate::{NodeInfo, NodeRole};

pub use connect::{
    parse_raft_address, raft_connect, ConnectError, RaftConnect, DEFAULT_CONNECT_TIMEOUT,
    LIBDQLITE_DEFAULT_PORT, RAFT_USER_TIMEOUT,
};
pub use forward::{HANDSHAKE_TIMEOUT, MAX_CONNECTIONS};
pub use identity::{NodeIdentity, IDENTITY_FILE};
pub use lock::LOCK_FILE;
pub use log::{parse_segment_name, LogPosition, SegmentName};

use lock::DataDirLock;

/// The id with which a node bootstraps a new one-voter cluster when its data dir is empty.
/// Any other id waits to be added by the cluster's leader, so never give it to a joining node.
pub const BOOTSTRAP_ID: u64 = 1;

/// The default network latency: 20 ms gives a 30 ms heartbeat and a 300 ms election timeout
/// (libdqlite uses 1.5x and 15x the latency), so a LAN cluster fails over in about half a
/// second (`benches/node_failover.rs`, three node processes on loopback, kill -9 of the
/// leader: 0.45-0.57 s), while a LAN round trip (well under 1 ms) stays far below the
/// heartbeat. libdqlite's own default fails over in about 5.5 s. Raise it for links with
/// round trips near the heartbeat (a WAN), or on hosts so loaded that the node's thread
/// can stall for hundreds of milliseconds.
pub const DEFAULT_NETWORK_LATENCY: Duration = Duration::from_millis(20);

/// Raft snapshot tuning, `dqlite_node_set_snapshot_params`. libdqlite 1.11 requires
/// `trailing >= 4` and `trailing >= threshold` (so that the entries behind the previous
/// snapshot survive an unusable last one); `threshold` must be at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotParams {
    /// Take a snapshot after this many new log entries (libdqlite's default: 1024).
    pub threshold: u32,
    /// Keep this many entries behind a snapshot so that lagging followers can catch up
    /// without a full snapshot transfer (libdqlite's default: 8192).
    pub trailing: u32,
}

/// How a node runs; everything here is set before the node starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeOptions {
    /// One-way network latency the raft timers are derived from (heartbeat 1.5x, election
    /// timeout 15x). Whole milliseconds, from 1 ms to one hour.
    pub network_latency: Duration,
    /// The failure domain reported to clients (DESCRIBE), used by role management to spread
    /// voters; `None` keeps libdqlite's default (0).
    pub failure_domain: Option<u64>,
    /// Snapshot tuning; `None` keeps libdqlite's defaults.
    pub snapshot: Option<SnapshotParams>,
    /// How outgoing raft connections are opened: by default [`raft_connect`] (bounded,
    /// `TCP_NODELAY`); [`RaftConnect::Libdqlite`] only to compare with libdqlite's own.
    pub raft_connect: RaftConnect,
    /// Mutual TLS on every connection to and from the node (`None`: plaintext). With TLS,
    /// or on an IPv6 address, the node listens through the crate's forwarding listener
    /// (`node::forward`) and libdqlite itself on an abstract unix socket.
    pub tls: Option<Tls>,
    /// Leave raft's timers as `dqlite_node_create` sets them (libdqlite 1.11: 3000 ms
    /// election timeout, 500 ms heartbeat) instead of deriving them from `network_latency`,
    /// as go-dqlite does when no latency is given. No latency gives that pair (15x and 1.5x
    /// of one value), so this is the only way to run at go-dqlite's default timers; it is
    /// here to compare with `dqlite-demo` (`benches/formation_failover.rs`), not for
    /// production. `network_latency` is still checked, and the application layer still
    /// sizes its waits by it.
    pub libdqlite_timers: bool,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            network_latency: DEFAULT_NETWORK_LATENCY,
            failure_domain: None,
            snapshot: None,
            raft_connect: RaftConnect::default(),
            tls: None,
            libdqlite_timers: false,
        }
    }
}

/// Everything that can go wrong with a node, one variant per failed operation.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("node id 0 is reserved: node ids start at 1")]
    ZeroId,
    #[error("invalid node address {address:?}: {reason}")]
    InvalidAddress {
        address: String,
        reason: &'static str,
    },
    #[error("libdqlite's own raft connect dials plaintext IPv4 only: it cannot serve {address:?}{}", if *tls { " with TLS" } else { "" })]
    LibdqliteConnect { address: String, tls: bool },
    #[error("cannot start the forwarding listener of {address}")]
    Forward { address: String, source: io::Error },
    #[error("invalid network latency {latency:?}: must be whole milliseconds from 1 ms to 1 hour")]
    InvalidNetworkLatency { latency: Duration },
    #[error("invalid raft connect timeout {timeout:?}: must be from 1 ms to 1 hour")]
    InvalidConnectTimeout { timeout: Duration },
    #[error("invalid snapshot parameters (threshold {threshold}, trailing {trailing}): the threshold must be at least 1 and the trailing at least 4 and at least the threshold")]
    InvalidSnapshotParams { threshold: u32, trailing: u32 },
    #[error("data dir {path:?} cannot be passed to libdqlite: it contains a NUL byte")]
    DataDirPath { path: PathBuf },
    #[error("cannot create data dir {path:?}")]
    CreateDataDir { path: PathBuf, source: io::Error },
    #[error("cannot open the lock file {path:?}")]
    OpenLock { path: PathBuf, source: io::Error },
    #[error("data dir {data_dir:?} is in use by another node (its lock file is held)")]
    DataDirLocked { data_dir: PathBuf },
    #[error("cannot lock {path:?}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("cannot read the node identity {path:?}")]
    ReadIdentity { path: PathBuf, source: io::Error },
    #[error("malformed node identity {path:?}: {reason}")]
    ParseIdentity { path: PathBuf, reason: String },
    #[error("cannot write the node identity {path:?}")]
    WriteIdentity { path: PathBuf, source: io::Error },
    #[error(
        "data dir {data_dir:?} belongs to node {} at {:?}, not node {} at {:?}",
        persisted.id, persisted.address, given.id, given.address
    )]
    IdentityMismatch {
        data_dir: PathBuf,
        persisted: NodeIdentity,
        given: NodeIdentity,
    },
    #[error("cannot create node {id} in {data_dir:?}: libdqlite error {code}: {message}")]
    Create {
        id: u64,
        data_dir: PathBuf,
        code: i32,
        message: String,
    },
    #[error("cannot bind {address}: the address is in use")]
    AddressInUse { address: String, source: io::Error },
    #[error("cannot bind {address}: libdqlite error {code}: {message}")]
    Bind {
        address: String,
        code: i32,
        message: String,
    },
    #[error("cannot set {option}: libdqlite error {code}: {message}")]
    SetOption {
        option: &'static str,
        code: i32,
        message: String,
    },
    #[error("cannot start node {id}: libdqlite error {code}: {message}")]
    Start { id: u64, code: i32, message: String },
    #[error("node {id} was stopped and cannot start again: create a new node on its data dir")]
    Restart { id: u64 },
    #[error("cannot stop node {id}: libdqlite error {code}: {message}")]
    Stop { id: u64, code: i32, message: String },
    #[error("invalid recovery membership: {reason}")]
    InvalidMembership { reason: String },
    #[error("refusing to recover {data_dir:?}: its raft log is empty (the node never joined a cluster), so recovery would only start a new, empty one")]
    EmptyLog { data_dir: PathBuf },
    #[error("cannot recover {data_dir:?}: libdqlite error {code}: {message}")]
    Recover {
        data_dir: PathBuf,
        code: i32,
        message: String,
    },
    #[error("cannot read the raft log in {path:?}")]
    ReadLog { path: PathBuf, source: io::Error },
    #[error("malformed raft file {path:?}: {reason}")]
    ParseLog { path: PathBuf, reason: String },
}

/// One libdqlite node in this process, bound to its address, owning its locked data dir.
///
/// Dropping a node stops it (when started; this blocks) and destroys it, then releases the
/// data dir's lock. A stopped node cannot start again: create a new `Node` on the same dir.
pub struct Node {
    // Field order matters: the C node is stopped and destroyed before its forwarder (so no
    // connect waits on a stopped runtime) and before the lock is released.
    raw: ffi::BoundNode,
    /// The listener on the public address and the TLS dialler, when the node has TLS or an
    /// IPv6 address (`node::forward`).
    _forwarder: Option<forward::Forwarder>,
    id: u64,
    address: String,
    data_dir: PathBuf,
    _lock: DataDirLock,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("address", &self.address)
            .field("data_dir", &self.data_dir)
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

// `Node` moves into `spawn_blocking` closures and behind a `Mutex`: keep it `Send`.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Node>();
};

impl Node {
    /// Creates node `id` listening on `address` (`ipv4:port` or `@abstract-name`) with its
    /// raft log in `data_dir`, which is created (mode 0700) when missing and locked.
    ///
    /// The identity persisted in the dir must match `id` and `address` (a dir is never
    /// reused for another node by mistake); a dir without one gets it now. With id
    /// [`BOOTSTRAP_ID`] and an empty dir the node bootstraps a one-voter cluster when it
    /// starts; any other id waits to be added (see [`generate_node_id`]). The node does not
    /// run until [`Node::start`]. Blocks.
    pub fn new(
        id: u64,
        address: &str,
        data_dir: &Path,
        options: &NodeOptions,
    ) -> Result<Node, NodeError> {
        if id == 0 {
            return Err(NodeError::ZeroId);
        }
        check_address(address)?;
        let latency_ms = latency_millis(options.network_latency)?;
        check_raft_connect(options.raft_connect)?;
        if let Some(snapshot) = options.snapshot {
            check_snapshot_params(snapshot)?;
        }
        let c_address = address_cstring(address)?;
        let c_data_dir = path_cstring(data_dir)?;
        create_data_dir(data_dir)?;
        let lock = DataDirLock::acquire(data_dir)?;
        let given = NodeIdentity {
            id,
            address: address.to_owned(),
        };
        match NodeIdentity::load(data_dir)? {
            Some(persisted) if persisted != given => {
                return Err(NodeError::IdentityMismatch {
                    data_dir: data_dir.to_owned(),
                    persisted,
                    given,
                })
            }
            Some(_) => {}
            None => given.save(data_dir)?,
        }

        let mut created =
            ffi::CreatedNode::create(id, &c_address, &c_data_dir).map_err(|error| {
                NodeError::Create {
                    id,
                    data_dir: data_dir.to_owned(),
                    code: error.code,
                    message: error.message,
                }
            })?;
        if !options.libdqlite_timers {
            created
                .set_network_latency_ms(latency_ms)
                .map_err(|error| set_option_error("network latency", error))?;
        }
        if let Some(domain) = options.failure_domain {
            created
                .set_failure_domain(domain)
                .map_err(|error| set_option_error("failure domain", error))?;
        }
        if let Some(snapshot) = options.snapshot {
            created
                .set_snapshot_params(snapshot.threshold, snapshot.trailing)
                .map_err(|error| set_option_error("snapshot parameters", error))?;
        }
        let forwarded = forward::needs_forwarding(address, options.tls.is_some());
        let forwarder = if forwarded {
            Some(
                forward::Forwarder::new().map_err(|source| NodeError::Forward {
                    address: address.to_owned(),
                    source,
                })?,
            )
        } else {
            None
        };
        let tune_listener = match options.raft_connect {
            RaftConnect::Bounded { timeout } => {
                let connect: Box<ffi::RaftConnectFn> = match (&options.tls, &forwarder) {
                    (Some(tls), Some(forwarder)) => {
                        let handle = forwarder.handle();
                        let connector = tokio_rustls::TlsConnector::from(tls.client_config());
                        Box::new(move |address: &CStr| {
                            let address = address.to_str().ok()?;
                            forward::dial_tls(&handle, &connector, address, timeout)
                                .map_err(|error| ::log::debug!("raft connect: {error}"))
                                .ok()
                        })
                    }
                    _ => Box::new(move |address: &CStr| {
                        let address = address.to_str().ok()?;
                        // libdqlite only learns "no connection" and raft redials about
                        // once a second, so the reason is worth a debug line, not more.
                        raft_connect(address, timeout)
                            .map_err(|error| ::log::debug!("raft connect: {error}"))
                            .ok()
                    }),
                };
                created
                    .set_connect_func(connect)
                    .map_err(|error| set_option_error("connect function", error))?;
                true
            }
            RaftConnect::Libdqlite if forwarded => {
                return Err(NodeError::LibdqliteConnect {
                    address: address.to_owned(),
                    tls: options.tls.is_some(),
                })
            }
            RaftConnect::Libdqlite => false,
        };
        let raw = match &forwarder {
            Some(forwarder) => {
                // libdqlite listens on an abstract socket only the forwarder dials; the
                // public address is ours, bound first so that "in use" is reported as before.
                let listener = bind_public(address)?;
                let name = forward::abstract_name(id);
                let bind_address = format!("@{name}");
                let c_bind_address = address_cstring(&bind_address)?;
                let raw = bind(created, &bind_address, &c_bind_address, false)?;
                let tls = options.tls.as_ref().map(Tls::server_config);
                forwarder
                    .listen(listener, &name, tls)
                    .map_err(|source| NodeError::Forward {
                        address: address.to_owned(),
                        source,
                    })?;
                raw
            }
            None => bind(created, address, &c_address, tune_listener)?,
        };
        Ok(Node {
            raw,
            _forwarder: forwarder,
            id,
            address: address.to_owned(),
            data_dir: data_dir.to_owned(),
            _lock: lock,
        })
    }

    /// Starts the node on its own thread; returns once its raft log is open. Starting a
    /// running node does nothing; a stopped node cannot start again. Blocks: async callers
    /// use `spawn_blocking`.
    pub fn start(&mut self) -> Result<(), NodeError> {
        if self.raw.is_stopped() {
            return Err(NodeError::Restart { id: self.id });
        }
        self.raw.start().map_err(|error| NodeError::Start {
            id: self.id,
            code: error.code,
            message: error.message,
        })
    }

    /// Stops the node and waits for its thread to end. Stopping a node that is not running
    /// does nothing. It does not hand leadership over: do that first through the cluster.
    /// Blocks: async callers use `spawn_blocking`.
    pub fn stop(&mut self) -> Result<(), NodeError> {
        self.raw.stop().map_err(|error| NodeError::Stop {
            id: self.id,
            code: error.code,
            message: error.message,
        })
    }

    /// Whether the node is running (started and not stopped).
    pub fn is_running(&self) -> bool {
        self.raw.is_running()
    }

    /// The raft node id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The address the node listens on and that its peers dial.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The node's id and address, as persisted in its data dir.
    pub fn identity(&self) -> NodeIdentity {
        NodeIdentity {
            id: self.id,
            address: self.address.clone(),
        }
    }

    /// The node's (locked) data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// Binds the node's listener and keeps it out of child processes (see `node::listener`);
/// with `nodelay`, sets `TCP_NODELAY` on it for every connection it accepts. An address
/// that is in use is retried for [`lock::TRANSIENT_HOLD`]: a child forked by
/// another thread holds a copy of a just-dropped node's listener until it execs.
fn bind(
    mut created: ffi::CreatedNode,
    address: &str,
    c_address: &CStr,
    nodelay: bool,
) -> Result<ffi::BoundNode, NodeError> {
    let deadline = Instant::now() + lock::TRANSIENT_HOLD;
    loop {
        let sockets_before_bind = listener::sockets();
        match created.bind(c_address) {
            Ok(mut bound) => {
                listener::protect_new(&mut bound, &sockets_before_bind, nodelay);
                return Ok(bound);
            }
            Err((unbound, error)) => match bind_error(address, error) {
                NodeError::AddressInUse { .. } if Instant::now() < deadline => {
                    created = unbound;
                    thread::sleep(Duration::from_millis(5));
                }
                error => return Err(error),
            },
        }
    }
}

/// Binds the node's public TCP address for the forwarding listener, retrying "in use" for
/// [`lock::TRANSIENT_HOLD`] like [`bind`] (a node just dropped may still be closing it).
fn bind_public(address: &str) -> Result<std::net::TcpListener, NodeError> {
    let deadline = Instant::now() + lock::TRANSIENT_HOLD;
    loop {
        match TcpListener::bind(address) {
            Ok(listener) => return Ok(listener),
            Err(source) if source.kind() == io::ErrorKind::AddrInUse => {
                if Instant::now() >= deadline {
                    return Err(NodeError::AddressInUse {
                        address: address.to_owned(),
                        source,
                    });
                }
                thread::sleep(Duration::from_millis(5));
            }
            Err(source) => {
                return Err(NodeError::Forward {
                    address: address.to_owned(),
                    source,
                })
            }
        }
    }
}

/// A random node id for a node that joins an existing cluster, seeded with its address.
/// It is never 0 nor [`BOOTSTRAP_ID`] (nor libdqlite's other bootstrap id), so the node
/// waits to be added instead of bootstrapping a cluster of its own. Persist it: the id of a
/// data dir never changes.
pub fn generate_node_id(address: &str) -> u64 {
    // Only entropy: an address with a NUL byte (never a valid one) is cut at the NUL.
    let seed = address.split('\0').next().unwrap_or_default();
    let seed = CString::new(seed).expect("the seed was cut at the first NUL byte");
    loop {
        let id = ffi::generate_node_id(&seed);
        if !is_bootstrap_id(id) && id != 0 {
            return id;
        }
    }
}

/// libdqlite 1.11 bootstraps an empty node with either of these ids.
fn is_bootstrap_id(id: u64) -> bool {
    id == BOOTSTRAP_ID || id == 0x2dc1_7185_8c31_55be
}

/// Rewrites the raft configuration of a stopped node's data dir to `members`, offline
/// (`dqlite_node_recover_ext`): the node's next start uses that configuration. `identity`
/// is the node's current id and address; when `members` gives the node another address
/// (a re-bind), the persisted identity takes the new one. Takes the dir's lock, so it fails
/// while a node runs on the dir. Blocks.
///
/// Recover from the member with the most up-to-date log (compare [`log_position`]): a
/// stale member's recovery silently drops committed entries.
pub fn recover(
    data_dir: &Path,
    identity: &NodeIdentity,
    members: &[NodeInfo],
) -> Result<(), NodeError> {
    let new_identity = plan_recovery(identity, members)?;
    let c_data_dir = path_cstring(data_dir)?;
    let c_address = address_cstring(&identity.address)?;
    let c_member_addresses = members
        .iter()
        .map(|member| address_cstring(&member.address))
        .collect::<Result<Vec<CString>, NodeError>>()?;
    let _lock = DataDirLock::acquire(data_dir)?;
    if let Some(persisted) = NodeIdentity::load(data_dir)? {
        if persisted != *identity {
            return Err(NodeError::IdentityMismatch {
                data_dir: data_dir.to_owned(),
                persisted,
                given: identity.clone(),
            });
        }
    }
    // libdqlite would "recover" an empty log into a brand-new cluster with no data: that is
    // a bootstrap in disguise, never a recovery.
    if log::read_log_position(data_dir)? == LogPosition::default() {
        return Err(NodeError::EmptyLog {
            data_dir: data_dir.to_owned(),
        });
    }
    let recover_error = |error: ffi::CError| NodeError::Recover {
        data_dir: data_dir.to_owned(),
        code: error.code,
        message: error.message,
    };
    let mut created =
        ffi::CreatedNode::create(identity.id, &c_address, &c_data_dir).map_err(recover_error)?;
    let c_members: Vec<ffi::RecoverMember<'_>> = members
        .iter()
        .zip(&c_member_addresses)
        .map(|(member, address)| ffi::RecoverMember {
            id: member.id,
            address,
            role_code: member.role.code(),
        })
        .collect();
    created.recover(&c_members).map_err(recover_error)?;
    drop(created);
    new_identity.save(data_dir)
}

/// Checks a recovery membership and returns the identity the node has after it: at least
/// one voter, ids non-zero and unique, addresses valid and unique, and the node itself a
/// member. Pure.
pub fn plan_recovery(
    identity: &NodeIdentity,
    members: &[NodeInfo],
) -> Result<NodeIdentity, NodeError> {
    let invalid = |reason: String| NodeError::InvalidMembership { reason };
    if !members.iter().any(|member| member.role == NodeRole::Voter) {
        return Err(invalid("no voter among the members".to_owned()));
    }
    for (index, member) in members.iter().enumerate() {
        if member.id == 0 {
            return Err(invalid(format!("member {:?} has id 0", member.address)));
        }
        check_address(&member.address)?;
        for other in &members[..index] {
            if other.id == member.id {
                return Err(invalid(format!("id {} appears twice", member.id)));
            }
            if other.address == member.address {
                return Err(invalid(format!(
                    "address {:?} appears twice",
                    member.address
                )));
            }
        }
    }
    let own = members
        .iter()
        .find(|member| member.id == identity.id)
        .ok_or_else(|| {
            invalid(format!(
                "the node itself (id {}) is not a member",
                identity.id
            ))
        })?;
    Ok(NodeIdentity {
        id: identity.id,
        address: own.address.clone(),
    })
}

/// The last log position of a stopped node, read from raft's files in its data dir (see
/// [`LogPosition`] for what it means). Takes the dir's lock while it reads, so it fails with
/// [`NodeError::DataDirLocked`] while a node runs there (its files would be moving). Blocks.
pub fn log_position(data_dir: &Path) -> Result<LogPosition, NodeError> {
    if let Err(source) = std::fs::metadata(data_dir) {
        return Err(NodeError::ReadLog {
            path: data_dir.to_owned(),
            source,
        });
    }
    let _lock = DataDirLock::acquire(data_dir)?;
    log::read_log_position(data_dir)
}

/// Checks that a node can listen on `address`: an IPv4 literal with a port (libdqlite
/// binds it), a bracketed IPv6 literal with a port (through the forwarding listener), or an
/// abstract unix socket `@name`. Pure.
pub fn check_address(address: &str) -> Result<(), NodeError> {
    let invalid = |reason| NodeError::InvalidAddress {
        address: address.to_owned(),
        reason,
    };
    if address.contains('\0') {
        return Err(invalid("it contains a NUL byte"));
    }
    if let Some(name) = address.strip_prefix('@') {
        if name.is_empty() {
            // A bare `@` autobinds to a random name that peers could not know.
            return Err(invalid("an abstract socket needs a name after `@`"));
        }
        return Ok(());
    }
    match address.parse::<SocketAddr>() {
        Ok(socket) if socket.port() == 0 => Err(invalid(
            "port 0 would bind a random port that peers could not know",
        )),
        Ok(SocketAddr::V6(v6)) if v6.scope_id() != 0 => Err(invalid(
            "an IPv6 zone (`%eth0`) cannot be part of a raft address",
        )),
        Ok(_) => Ok(()),
        Err(_) if address.parse::<IpAddr>().is_ok() => {
            Err(invalid("it has no port (IPv6 is written `[ip]:port`)"))
        }
        Err(_) => Err(invalid("expected `ipv4:port`, `[ipv6]:port` or `@name`")),
    }
}

/// Checks snapshot parameters against libdqlite 1.11's rules. Pure.
fn check_snapshot_params(params: SnapshotParams) -> Result<(), NodeError> {
    let SnapshotParams {
        threshold,
        trailing,
    } = params;
    if threshold >= 1 && trailing >= 4 && trailing >= threshold {
        Ok(())
    } else {
        Err(NodeError::InvalidSnapshotParams {
            threshold,
            trailing,
        })
    }
}

/// The latency in whole milliseconds as libdqlite takes it.
fn latency_millis(latency: Duration) -> Result<u32, NodeError> {
    let invalid = NodeError::InvalidNetworkLatency { latency };
    if !latency.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(invalid);
    }
    match u32::try_from(latency.as_millis()) {
        Ok(ms @ 1..=3_600_000) => Ok(ms),
        _ => Err(invalid),
    }
}

/// A bounded connect's timeout must be from 1 ms to one hour (a zero one never connects).
fn check_raft_connect(raft_connect: RaftConnect) -> Result<(), NodeError> {
    match raft_connect {
        RaftConnect::Bounded { timeout }
            if timeout < Duration::from_millis(1) || timeout > Duration::from_secs(3600) =>
        {
            Err(NodeError::InvalidConnectTimeout { timeout })
        }
        RaftConnect::Bounded { .. } | RaftConnect::Libdqlite => Ok(()),
    }
}

fn address_cstring(address: &str) -> Result<CString, NodeError> {
    CString::new(address).map_err(|_| NodeError::InvalidAddress {
        address: address.to_owned(),
        reason: "it contains a NUL byte",
    })
}

fn path_cstring(path: &Path) -> Result<CString, NodeError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| NodeError::DataDirPath {
        path: path.to_owned(),
    })
}

/// Creates the data dir (and missing parents) readable by the owner only: it holds the
/// whole database.
fn create_data_dir(path: &Path) -> Result<(), NodeError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| NodeError::CreateDataDir {
            path: path.to_owned(),
            source,
        })
}

fn set_option_error(option: &'static str, error: ffi::CError) -> NodeError {
    NodeError::SetOption {
        option,
        code: error.code,
        message: error.message,
    }
}

/// Tells "address in use" apart: it is the one bind failure a caller acts on (wait for the
/// old process, or pick another port). libdqlite 1.11 reports it as rc 1 with no message,
/// so after its bind failed, binding the address once more from here says why.
fn bind_error(address: &str, error: ffi::CError) -> NodeError {
    if let Some(source) = probe_bind(address) {
        if source.kind() == io::ErrorKind::AddrInUse {
            return NodeError::AddressInUse {
                address: address.to_owned(),
                source,
            };
        }
    }
    NodeError::Bind {
        address: address.to_owned(),
        code: error.code,
        message: error.message,
    }
}

/// Binds `address` and lets go at once, returning the bind's error if it fails.
fn probe_bind(address: &str) -> Option<io::Error> {
    let outcome = match address.strip_prefix('@') {
        Some(name) => UnixSocketAddr::from_abstract_name(name)
            .and_then(|socket| UnixListener::bind_addr(&socket))
            .map(drop),
        None => TcpListener::bind(address).map(drop),
    };
    outcome.err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let check = |address: &str, expected: Result<(), &str>| {
            let actual = check_address(address).map_err(|error| error.to_string());
            assert_eq!(actual, expected.map_err(str::to_owned), "{address}");
        };
        check("127.11.0.1:9001", Ok(()));
        check("@dqlite-node-1", Ok(()));
        check(
            "@",
            Err(r#"invalid node address "@": an abstract socket needs a name after `@`"#),
        );
        check(
            "127.11.0.1:0",
            Err(
                r#"invalid node address "127.11.0.1:0": port 0 would bind a random port that peers could not know"#,
            ),
        );
        check(
            "127.11.0.1",
            Err(
                r#"invalid node address "127.11.0.1": it has no port (IPv6 is written `[ip]:port`)"#,
            ),
        );
        check("[::1]:9001", Ok(()));
        check("[fc00::1]:17666", Ok(()));
        check(
            "::1",
            Err(r#"invalid node address "::1": it has no port (IPv6 is written `[ip]:port`)"#),
        );
        check(
            "[fe80::1%2]:9001",
            Err(
                r#"invalid node address "[fe80::1%2]:9001": an IPv6 zone (`%eth0`) cannot be part of a raft address"#,
            ),
        );
        for address in ["[::1]", "fe80::1%eth0", "localhost:9001"] {
            check(
                address,
                Err(&format!(
                    "invalid node address {address:?}: expected `ipv4:port`, `[ipv6]:port` or `@name`"
                )),
            );
        }
        check(
            "127.0.0.1:9001\0",
            Err(r#"invalid node address "127.0.0.1:9001\0": it contains a NUL byte"#),
        );
    }

    #[test]
    fn latencies() {
        let check = |latency: Duration, expected: Option<u32>| {
            assert_eq!(latency_millis(latency).ok(), expected, "{latency:?}");
        };
        check(DEFAULT_NETWORK_LATENCY, Some(20));
        check(Duration::from_millis(1), Some(1));
        check(Duration::from_secs(3600), Some(3_600_000));
        check(Duration::ZERO, None);
        check(Duration::from_micros(1500), None);
        check(Duration::from_secs(3601), None);
    }

    #[test]
    fn snapshot_params() {
        let check = |threshold, trailing, valid: bool| {
            let params = SnapshotParams {
                threshold,
                trailing,
            };
            assert_eq!(check_snapshot_params(params).is_ok(), valid, "{params:?}");
        };
        check(1024, 8192, true);
        check(8, 8, true);
        check(1, 4, true);
        check(0, 8, false);
        check(2, 3, false);
        check(16, 8, false);
    }

    #[test]
    fn recovery_plans() {
        let identity = NodeIdentity {
            id: 7,
            address: "127.11.0.1:9001".to_owned(),
        };
        let member = |id, address: &str, role| NodeInfo {
            id,
            address: address.to_owned(),
            role,
        };
        let check = |members: Vec<NodeInfo>, expected: Result<&str, &str>| {
            let actual = plan_recovery(&identity, &members)
                .map(|identity| identity.address)
                .map_err(|error| error.to_string());
            assert_eq!(
                actual,
                expected.map(str::to_owned).map_err(str::to_owned),
                "{members:?}"
            );
        };
        check(
            vec![member(7, "127.11.0.1:9001", NodeRole::Voter)],
            Ok("127.11.0.1:9001"),
        );
        // A re-bind: the node recovers itself under its new address.
        check(
            vec![
                member(7, "127.11.0.9:9001", NodeRole::Voter),
                member(8, "127.11.0.2:9001", NodeRole::Spare),
            ],
            Ok("127.11.0.9:9001"),
        );
        check(
            vec![member(7, "127.11.0.1:9001", NodeRole::StandBy)],
            Err("invalid recovery membership: no voter among the members"),
        );
        check(
            Vec::new(),
            Err("invalid recovery membership: no voter among the members"),
        );
        check(
            vec![member(8, "127.11.0.2:9001", NodeRole::Voter)],
            Err("invalid recovery membership: the node itself (id 7) is not a member"),
        );
        check(
            vec![
                member(7, "127.11.0.1:9001", NodeRole::Voter),
                member(7, "127.11.0.2:9001", NodeRole::Voter),
            ],
            Err("invalid recovery membership: id 7 appears twice"),
        );
        check(
            vec![
                member(7, "127.11.0.1:9001", NodeRole::Voter),
                member(8, "127.11.0.1:9001", NodeRole::Voter),
            ],
            Err(r#"invalid recovery membership: address "127.11.0.1:9001" appears twice"#),
        );
        check(
            vec![
                member(7, "127.11.0.1:9001", NodeRole::Voter),
                member(0, "127.11.0.2:9001", NodeRole::Voter),
            ],
            Err(r#"invalid recovery membership: member "127.11.0.2:9001" has id 0"#),
        );
        check(
            vec![member(7, "[::1]:9001", NodeRole::Voter)],
            Ok("[::1]:9001"),
        );
    }

    #[test]
    fn generated_ids_never_bootstrap() {
        for _ in 0..100 {
            let id = generate_node_id("127.11.0.1:9001");
            assert!(!is_bootstrap_id(id) && id != 0, "{id}");
        }
        assert_ne!(generate_node_id("a\0b"), 0);
    }
}
