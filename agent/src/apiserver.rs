//! The API server: HTTPS on port 17070 (hyper 1 over tokio-rustls) with a certificate from
//! the controller CA naming this controller's addresses. Two routes:
//!
//! `POST /login` with `{"user": ..., "password": ...}` or `{"tag": ..., "password": ...}`
//! answers `{"controller-uuid": ..., "servers": [[{value, type, scope, space-name, port},
//! ...] per controller]}` from `controller_api_address`: the current address list, which a
//! client stores and dials next time. A wrong password (or an unknown name) is 401;
//! malformed JSON 400; a body over the limit 413; the database unreachable 503.
//!
//! `GET /status`, on a connection that has logged in (as in Juju, the login holds for the
//! connection), answers the controller database's view of the control plane: the
//! controllers with their Dqlite node and API addresses, the controller config and the
//! schema version. Without a login on that connection: 401. Each table read is bounded
//! (`LIMIT`).
//!
//! `GET /api-addresses?after=<version>`, on a logged-in connection, is the address watch
//! agents follow: it answers the controllers' addresses (each with its space, from the
//! `space` table's subnets) and `juju-mgmt-space` as soon as their version differs from
//! `after` (at once without `after`), or as they are after [`Limits::long_poll`]. One task
//! per server reads them from the database every [`WATCH_POLL`] and wakes the waiting
//! requests only when they changed; a failed read keeps the last known list.
//!
//! `POST /leadership` (`{"application", "unit", "duration-ms"}`) claims an application's
//! `application-leadership` lease for a unit, or extends it when that unit holds it; a user
//! may claim for any unit, a unit agent (`unit-<app>-<n>`) only for itself, a machine agent
//! not at all (403). `GET /leadership?application=<name>` reads it. Both answer the leader,
//! whether the named unit is it, and how long the lease still runs by the database's clock.
//!
//! Bounded everywhere: the body size, the number of connections (accepting waits for a
//! free slot), the TLS handshake, each request, each connection's lifetime, the password
//! hashes computed at once. Every request is logged with its outcome. An oversized body is
//! read and thrown away up to 1 MiB before the 413, so that the client, still writing, reads
//! the answer rather than a reset.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use controller_contract::describe_error;
use dbaccessor::Database;
use dqlite::client::Client;
use dqlite::wire::Value;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::database;
use crate::host::{Stop, WorkerSpec};
use crate::identity;
use crate::lease::{self, Lease, LeaseKey};
use crate::publisher::AddressSource;
use crate::schema::{quote, DATABASE};
use crate::workers::DBACCESSOR;

/// The worker's name.
pub const NAME: &str = "apiserver";

/// Juju's API port.
pub const API_PORT: u16 = 17070;

/// The API server's settings.
#[derive(Clone)]
pub struct Settings {
    /// This controller's id (the agent id).
    pub controller_id: String,
    /// Where to listen (`[::]:17070` in production: every IPv4 and IPv6 address, see
    /// [`bind_listener`]).
    pub listen: SocketAddr,
    /// This controller's dir (beside controller.conf): the CA files and the admin password.
    pub dir: PathBuf,
    /// The machine's addresses, which the server certificate names.
    pub source: AddressSource,
    /// Limits.
    pub limits: Limits,
    /// The controllers' addresses as the server last read them (`None` before the first
    /// read): the long poll's source, and the controller's own address updater's.
    pub addresses: Arc<watch::Sender<Option<ApiAddressesResult>>>,
}

/// How often the server reads the address tables for the address watch.
pub const WATCH_POLL: Duration = Duration::from_millis(500);

/// What one client can take of the server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// The largest request body read.
    pub max_body: usize,
    /// The TLS handshake, and each request from its headers to the answer.
    pub request_timeout: Duration,
    /// The longest a connection stays open, idle or not.
    pub connection_lifetime: Duration,
    /// Password checks (Argon2, CPU- and memory-hungry) at once.
    pub concurrent_hashes: usize,
    /// The longest an address watch request waits for a change before it answers the list
    /// as it is (the request timeout comes on top).
    pub long_poll: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_body: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            connection_lifetime: Duration::from_secs(300),
            concurrent_hashes: 2,
            long_poll: Duration::from_secs(30),
        }
    }
}

pub use controller_contract::api::{
    ApiAddressesResult, ControllerConfigRequest, ControllerNode, ErrorBody, HostPort,
    LeadershipRequest, LeadershipResult, LoginRequest, LoginResult, StatusResult,
};

/// The rows of `controller_api_address` as a login answer's `servers`; rows that do not
/// parse are left out (they are never written by this code). A row without a space gets
/// the space whose subnet (from `spaces`: name, CIDR) holds its IP.
pub fn servers(
    rows: &[(String, String, String, String)],
    spaces: &[(String, String)],
) -> Vec<Vec<HostPort>> {
    let mut by_controller: BTreeMap<&str, Vec<HostPort>> = BTreeMap::new();
    for (controller_id, value, scope, space) in rows {
        let Ok(address) = value.parse::<SocketAddr>() else {
            continue;
        };
        by_controller
            .entry(controller_id.as_str())
            .or_default()
            .push(HostPort {
                value: address.ip().to_string(),
                kind: if address.is_ipv4() { "ipv4" } else { "ipv6" }.into(),
                scope: scope.clone(),
                space_name: if space.is_empty() {
                    controller_contract::agentaddr::space_of(address.ip(), spaces)
                } else {
                    space.clone()
                },
                port: address.port(),
            });
    }
    // Numeric controller ids in numeric order ("2" before "10").
    let mut grouped: Vec<(&str, Vec<HostPort>)> = by_controller.into_iter().collect();
    grouped.sort_by_key(|(id, _)| (id.len(), id.to_string()));
    grouped.into_iter().map(|(_, hosts)| hosts).collect()
}

/// What every connection shares.
struct State {
    /// This controller's id, which a status answer names.
    controller_id: String,
    /// The database, through one leader connection at a time.
    client: Mutex<Client>,
    /// The controller's UUID.
    controller_uuid: String,
    /// Password checks in progress.
    hashes: Semaphore,
    limits: Limits,
    /// The address watch's current value.
    addresses: Arc<watch::Sender<Option<ApiAddressesResult>>>,
}

/// The API server as a worker of the host, after the dbaccessor.
pub fn worker(settings: Settings, available: watch::Receiver<Option<Database>>) -> WorkerSpec {
    WorkerSpec::new(NAME, &[DBACCESSOR], move |stop| {
        run(settings.clone(), available.clone(), stop)
    })
}

/// The server's TLS configuration: the chain for `ips` from `ca`, HTTP/1.1 only.
pub fn tls_config(ca: &crate::ca::Ca, ips: &[IpAddr]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (chain, key) = ca.issue_server(ips)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves until told to stop: waits for the database, settles the controller's identity
/// (CA, UUID, bootstrap admin), then listens.
pub async fn run(
    settings: Settings,
    mut available: watch::Receiver<Option<Database>>,
    mut stop: Stop,
) -> anyhow::Result<()> {
    let who = format!("controller-{}", settings.controller_id);
    let Some(mut client) = database::open(&mut available, &mut stop, &who).await? else {
        return Ok(());
    };
    let ca = identity::ensure_ca(&mut client, &settings.dir, &settings.controller_id).await?;
    let controller_uuid = identity::ensure_controller_uuid(&mut client).await?;
    identity::ensure_admin(&mut client, &settings.dir).await?;
    // The certificate names the machine's addresses, and the listen address when it is a
    // specific one (a loopback alias, say).
    let mut ips = (settings.source)()?;
    if !settings.listen.ip().is_unspecified() && !ips.contains(&settings.listen.ip()) {
        ips.push(settings.listen.ip());
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config(&ca, &ips)?);
    let (listener, listening) = bind_listener(settings.listen)?;
    log::info!("API server for controller {controller_uuid} listening on https://{listening}");
    let state = Arc::new(State {
        controller_id: settings.controller_id.clone(),
        client: Mutex::new(client),
        controller_uuid,
        hashes: Semaphore::new(settings.limits.concurrent_hashes.max(1)),
        limits: settings.limits.clone(),
        addresses: settings.addresses.clone(),
    });
    let watch = tokio::spawn(watch_addresses(state.clone(), stop.clone()));
    serve(listener, acceptor, state, stop).await;
    watch.abort();
    Ok(())
}

/// Binds the API listener. The unspecified IPv6 address (`[::]`, the default) is bound
/// dual-stack, so that agents and clients reach the server over IPv4 and IPv6 alike (an
/// IPv6-only model has no IPv4 address to dial): `IPV6_V6ONLY` is turned off explicitly,
/// since `net.ipv6.bindv6only=1` would otherwise make it IPv6 only. A host without IPv6
/// (`ipv6.disable=1`) cannot open that socket at all; it listens on `0.0.0.0` then, and the
/// log says so. Any other address is bound as given. Returns the listener and the address
/// it listens on.
pub fn bind_listener(listen: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};
    let dual_stack = matches!(listen, SocketAddr::V6(v6) if v6.ip().is_unspecified());
    if !dual_stack {
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let bound = listener.local_addr()?;
        return Ok((TcpListener::from_std(listener)?, bound));
    }
    let socket = match rustix::net::socket_with(
        AddressFamily::INET6,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    ) {
        Ok(socket) => socket,
        Err(rustix::io::Errno::AFNOSUPPORT) => {
            let fallback = SocketAddr::from(([0, 0, 0, 0], listen.port()));
            log::warn!("this host has no IPv6: the API server listens on {fallback} only");
            return bind_listener(fallback);
        }
        Err(errno) => return Err(errno.into()),
    };
    sockopt::set_ipv6_v6only(&socket, false)?;
    // As std's own listeners do: a restarted server binds at once despite TIME_WAIT.
    sockopt::set_socket_reuseaddr(&socket, true)?;
    rustix::net::bind(&socket, &listen)?;
    rustix::net::listen(&socket, 1024)?;
    let listener = std::net::TcpListener::from(socket);
    let bound = listener.local_addr()?;
    Ok((TcpListener::from_std(listener)?, bound))
}

/// Reads the address tables every [`WATCH_POLL`] and publishes them when they changed; a
/// failed read publishes nothing (the last known list stands).
async fn watch_addresses(state: Arc<State>, mut stop: Stop) {
    loop {
        let read = {
            let mut client = state.client.lock().await;
            read_addresses(&mut client).await
        };
        match read {
            Ok((servers, mgmt_space)) => {
                let version =
                    controller_contract::agentaddr::addresses_version(&servers, &mgmt_space);
                state.addresses.send_if_modified(|current| {
                    if current.as_ref().map(|c| c.version) == Some(version) {
                        return false;
                    }
                    log::info!(
                        "API addresses now version {version}: {} controllers, juju-mgmt-space {mgmt_space:?}",
                        servers.len()
                    );
                    *current = Some(ApiAddressesResult {
                        version,
                        servers,
                        mgmt_space,
                    });
                    true
                });
            }
            Err(e) => log::warn!("cannot read the API addresses (keeping the last known): {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(WATCH_POLL) => {}
            () = stop.requested() => return,
        }
    }
}

/// The controllers' addresses (spaces filled in) and `juju-mgmt-space`.
async fn read_addresses(
    client: &mut Client,
) -> Result<(Vec<Vec<HostPort>>, String), dqlite::client::Error> {
    let texts = |rows: Vec<Vec<Value>>| -> Vec<Vec<String>> {
        rows.into_iter()
            .filter_map(|row| {
                row.into_iter()
                    .map(|value| match value {
                        Value::Text(text) => Some(text),
                        _ => None,
                    })
                    .collect::<Option<Vec<String>>>()
            })
            .collect()
    };
    let rows = texts(
        client
            .query(
                DATABASE,
                "SELECT controller_id, value, scope, space FROM controller_api_address ORDER BY controller_id, value LIMIT 1000",
                &[],
            )
            .await?
            .rows,
    );
    let spaces = texts(
        client
            .query(
                DATABASE,
                "SELECT name, cidr FROM space ORDER BY name, cidr LIMIT 1000",
                &[],
            )
            .await?
            .rows,
    );
    let mgmt = texts(
        client
            .query(
                DATABASE,
                "SELECT value FROM controller_config WHERE key = 'juju-mgmt-space'",
                &[],
            )
            .await?
            .rows,
    );
    let rows: Vec<(String, String, String, String)> = rows
        .into_iter()
        .filter_map(|row| match <[String; 4]>::try_from(row) {
            Ok([id, value, scope, space]) => Some((id, value, scope, space)),
            Err(_) => None,
        })
        .collect();
    let spaces: Vec<(String, String)> = spaces
        .into_iter()
        .filter_map(|row| match <[String; 2]>::try_from(row) {
            Ok([name, cidr]) => Some((name, cidr)),
            Err(_) => None,
        })
        .collect();
    let mgmt_space = mgmt
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next())
        .unwrap_or_default();
    Ok((servers(&rows, &spaces), mgmt_space))
}

async fn serve(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
    mut stop: Stop,
) {
    let slots = Arc::new(Semaphore::new(state.limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = stop.requested() => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait a moment rather than spin.
                    log::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.requested() => break,
        };
        // Answers go out as several small TLS records; with Nagle on, the second waits for
        // the client's delayed ACK (40 ms), which made every login take 44 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            log::debug!("cannot set TCP_NODELAY on the connection from {peer}: {e}");
        }
        let acceptor = acceptor.clone();
        let state = state.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let _slot = slot;
            connection(tcp, peer, acceptor, state, stop).await;
        });
    }
    drop(listener);
    // Every connection was told (graceful shutdown); each ends within a request timeout.
    while connections.join_next().await.is_some() {}
    log::info!("API server stopped");
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
    mut stop: Stop,
) {
    let limits = state.limits.clone();
    let tls = match tokio::time::timeout(limits.request_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            log::info!("{peer}: TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            log::info!("{peer}: TLS handshake timed out");
            return;
        }
    };
    // Who logged in on this connection: later requests on it act as them.
    let session: Arc<std::sync::Mutex<Option<Session>>> = Arc::default();
    let service = hyper::service::service_fn(move |request| {
        let state = state.clone();
        let session = session.clone();
        async move { Ok::<_, Infallible>(answer(&state, &session, peer, request).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        .max_buf_size(64 * 1024);
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let lifetime = tokio::time::sleep(limits.connection_lifetime);
    tokio::pin!(lifetime);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop.requested() => {
            conn.as_mut().graceful_shutdown();
            tokio::time::timeout(limits.request_timeout, conn.as_mut()).await.unwrap_or(Ok(()))
        }
        () = &mut lifetime => {
            conn.as_mut().graceful_shutdown();
            tokio::time::timeout(limits.request_timeout, conn.as_mut()).await.unwrap_or(Ok(()))
        }
    };
    if let Err(e) = result {
        log::debug!("{peer}: connection ended: {e}");
    }
}

/// Answers one request within the request timeout, and logs it.
async fn answer(
    state: &State,
    session: &std::sync::Mutex<Option<Session>>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let began = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // The address watch waits by design; its own wait comes on top of the timeout.
    let timeout = if path == "/api-addresses" {
        state.limits.request_timeout + state.limits.long_poll
    } else {
        state.limits.request_timeout
    };
    let (status, body, outcome) =
        match tokio::time::timeout(timeout, route(state, session, request)).await {
            Ok(answer) => answer,
            Err(_) => error(StatusCode::REQUEST_TIMEOUT, "request timed out"),
        };
    log::info!(
        "{peer} {method} {path} -> {} ({outcome}) in {} ms",
        status.as_u16(),
        began.elapsed().as_millis()
    );
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a status and a fixed header make a valid response")
}

type Answer = (StatusCode, Vec<u8>, String);

fn error(status: StatusCode, why: &str) -> Answer {
    let body =
        serde_json::to_vec(&ErrorBody { error: why.into() }).expect("an error body serializes");
    (status, body, why.to_owned())
}

/// Who logged in on a connection.
#[derive(Debug, Clone)]
struct Session {
    /// The user name or agent tag.
    name: String,
    /// Logged in with a tag: an agent, which may read but not change the controller config.
    agent: bool,
}

/// The name logged in on a connection, if any.
fn logged_in(session: &std::sync::Mutex<Option<Session>>) -> Option<String> {
    logged_in_as(session).map(|s| s.name)
}

fn logged_in_as(session: &std::sync::Mutex<Option<Session>>) -> Option<Session> {
    session.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

async fn route(
    state: &State,
    session: &std::sync::Mutex<Option<Session>>,
    request: Request<Incoming>,
) -> Answer {
    match request.uri().path() {
        "/login" if request.method() == Method::POST => {}
        "/login" => return error(StatusCode::METHOD_NOT_ALLOWED, "only POST"),
        "/status" if request.method() == Method::GET => {
            return match logged_in(session) {
                Some(name) => status_answer(state, &name).await,
                None => error(StatusCode::UNAUTHORIZED, "not logged in on this connection"),
            };
        }
        "/status" => return error(StatusCode::METHOD_NOT_ALLOWED, "only GET"),
        "/api-addresses" if request.method() == Method::GET => {
            return match logged_in(session) {
                Some(name) => addresses_answer(state, &name, request.uri().query()).await,
                None => error(StatusCode::UNAUTHORIZED, "not logged in on this connection"),
            };
        }
        "/api-addresses" => return error(StatusCode::METHOD_NOT_ALLOWED, "only GET"),
        "/controller-config" if request.method() == Method::POST => {
            return match logged_in_as(session) {
                Some(Session { agent: false, name }) => {
                    set_config_answer(state, &name, request).await
                }
                Some(Session { agent: true, name }) => error(
                    StatusCode::FORBIDDEN,
                    &format!("{name} may not change the controller config"),
                ),
                None => error(StatusCode::UNAUTHORIZED, "not logged in on this connection"),
            };
        }
        "/controller-config" => return error(StatusCode::METHOD_NOT_ALLOWED, "only POST"),
        "/leadership" if request.method() == Method::POST => {
            return match logged_in_as(session) {
                Some(session) => claim_leadership_answer(state, &session, request).await,
                None => error(StatusCode::UNAUTHORIZED, "not logged in on this connection"),
            };
        }
        "/leadership" if request.method() == Method::GET => {
            return match logged_in(session) {
                Some(name) => read_leadership_answer(state, &name, request.uri().query()).await,
                None => error(StatusCode::UNAUTHORIZED, "not logged in on this connection"),
            };
        }
        "/leadership" => return error(StatusCode::METHOD_NOT_ALLOWED, "only GET or POST"),
        _ => return error(StatusCode::NOT_FOUND, "no such route"),
    }
    let max = state.limits.max_body;
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > DRAIN_LIMIT as u64) {
        // Not worth reading: the client gets its answer when it reads (the connection closes).
        return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    }
    let login: LoginRequest = match read_json(request, max, "login").await {
        Ok(login) => login,
        Err(answer) => return answer,
    };
    let (name, agent) = match (&login.user, &login.tag) {
        (Some(user), None) if !user.is_empty() => (user.clone(), false),
        (None, Some(tag)) if !tag.is_empty() => (tag.clone(), true),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "malformed login: exactly one of user and tag is needed",
            )
        }
    };
    let answer = login_answer(state, &name, login.password).await;
    let mut logged = session.lock().unwrap_or_else(|e| e.into_inner());
    // A failed login ends what an earlier one on this connection allowed.
    *logged = (answer.0 == StatusCode::OK).then_some(Session { name, agent });
    answer
}

/// The most of an oversized body read (and thrown away) before answering 413, so that a
/// client still writing it reads the answer instead of a reset connection.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// The body as JSON of `T`, or the answer to give: 413 when over `max` bytes, 400 when it
/// cannot be read or is not a `what` ("malformed login: ...").
async fn read_json<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
    max: usize,
    what: &str,
) -> Result<T, Answer> {
    let body = match read_body(request.into_body(), max).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return Err(error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"))
        }
        Err(BodyError::Read(e)) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}"),
            ))
        }
    };
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("malformed {what}: {e}")))
}

enum BodyError {
    TooLarge,
    Read(hyper::Error),
}

/// The body, if it is at most `max` bytes; an oversized one is drained up to
/// [`DRAIN_LIMIT`] (and no more) before the answer.
async fn read_body(mut body: Incoming, max: usize) -> Result<Bytes, BodyError> {
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        seen = seen.saturating_add(data.len());
        if seen <= max {
            kept.extend_from_slice(&data);
        } else if seen > DRAIN_LIMIT {
            return Err(BodyError::TooLarge);
        }
    }
    if seen > max {
        return Err(BodyError::TooLarge);
    }
    Ok(Bytes::from(kept))
}

async fn login_answer(state: &State, name: &str, password: String) -> Answer {
    let hash = {
        let mut client = state.client.lock().await;
        identity::password_hash(&mut client, name).await
    };
    let hash = match hash {
        Ok(hash) => hash,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("cannot read credentials: {}", describe_error(e.as_ref())),
            )
        }
    };
    // An unknown name costs a hash too, so that timing does not tell which names exist.
    let hash = hash.unwrap_or_else(|| identity::unknown_name_hash(name).to_owned());
    let verified = {
        let _permit = state.hashes.acquire().await.expect("never closed");
        tokio::task::spawn_blocking(move || identity::verify_password(&password, &hash))
            .await
            .unwrap_or(false)
    };
    if !verified {
        return error(
            StatusCode::UNAUTHORIZED,
            &format!("invalid login for {name:?}"),
        );
    }
    let read = {
        let mut client = state.client.lock().await;
        read_addresses(&mut client).await
    };
    let servers = match read {
        Ok((servers, _)) => servers,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("cannot read the API addresses: {e}"),
            )
        }
    };
    let result = LoginResult {
        controller_uuid: state.controller_uuid.clone(),
        servers,
    };
    let body = serde_json::to_vec(&result).expect("a login result serializes");
    (StatusCode::OK, body, format!("login of {name:?}"))
}

/// Checks a controller config change against the model's space names: at least one
/// setting, no empty key, `controller-uuid` never, `juju-mgmt-space` empty or a known space.
pub fn check_config(
    settings: &BTreeMap<String, String>,
    spaces: &BTreeSet<String>,
) -> Result<(), String> {
    if settings.is_empty() {
        return Err("no settings given".into());
    }
    for (key, value) in settings {
        match key.as_str() {
            "" => return Err("a setting has an empty key".into()),
            "controller-uuid" => return Err("controller-uuid cannot be changed".into()),
            controller_contract::agentaddr::MGMT_SPACE_KEY
                if !value.is_empty() && !spaces.contains(value) =>
            {
                let known: Vec<&str> = spaces.iter().map(String::as_str).collect();
                return Err(format!(
                    "cannot set juju-mgmt-space: space {value:?} not found (known spaces: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `POST /controller-config` with `{"settings": {key: value}}`: checked (see
/// [`check_config`]), then written in one statement; answers the whole config.
async fn set_config_answer(state: &State, name: &str, request: Request<Incoming>) -> Answer {
    let change: ControllerConfigRequest =
        match read_json(request, state.limits.max_body, "config").await {
            Ok(change) => change,
            Err(answer) => return answer,
        };
    let mut client = state.client.lock().await;
    let spaces = match client
        .query(DATABASE, "SELECT DISTINCT name FROM space LIMIT 1000", &[])
        .await
    {
        Ok(rows) => rows
            .rows
            .into_iter()
            .filter_map(|row| match row.as_slice() {
                [Value::Text(name)] => Some(name.clone()),
                _ => None,
            })
            .collect::<BTreeSet<String>>(),
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("cannot read the spaces: {e}"),
            )
        }
    };
    if let Err(why) = check_config(&change.settings, &spaces) {
        return error(StatusCode::BAD_REQUEST, &why);
    }
    let rows: Vec<String> = change
        .settings
        .iter()
        .map(|(key, value)| format!("({}, {})", quote(key), quote(value)))
        .collect();
    let statement = format!(
        "INSERT OR REPLACE INTO controller_config (key, value) VALUES {}",
        rows.join(", ")
    );
    if let Err(e) = client.exec(DATABASE, &statement, &[]).await {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cannot write the controller config: {e}"),
        );
    }
    let config = match client
        .query(
            DATABASE,
            "SELECT key, value FROM controller_config ORDER BY key LIMIT 1000",
            &[],
        )
        .await
    {
        Ok(rows) => rows
            .rows
            .into_iter()
            .filter_map(|row| match row.as_slice() {
                [Value::Text(key), Value::Text(value)] => Some((key.clone(), value.clone())),
                _ => None,
            })
            .collect::<BTreeMap<String, String>>(),
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("written, but cannot read the controller config back: {e}"),
            )
        }
    };
    let body = serde_json::to_vec(&config).expect("a config serializes");
    let keys: Vec<&str> = change.settings.keys().map(String::as_str).collect();
    (
        StatusCode::OK,
        body,
        format!("controller config {} set by {name:?}", keys.join(", ")),
    )
}

/// The default and the bounds of a leadership claim's duration.
pub const LEADERSHIP_DURATION: Duration = Duration::from_secs(60);
const LEADERSHIP_DURATION_RANGE: std::ops::RangeInclusive<u64> = 1_000..=300_000;

/// Why a leadership claim is refused before the database is asked (`None`: it may go
/// ahead), with its status: a unit not of the application, a duration out of range, or an
/// agent claiming for a unit other than itself (a user may claim for any unit).
pub fn leadership_refusal(
    caller: &str,
    caller_is_agent: bool,
    request: &LeadershipRequest,
) -> Option<(StatusCode, String)> {
    let number = request
        .unit
        .strip_prefix(request.application.as_str())
        .and_then(|rest| rest.strip_prefix('/'));
    if request.application.is_empty() || number.is_none_or(|n| n.parse::<u32>().is_err()) {
        return Some((
            StatusCode::BAD_REQUEST,
            format!(
                "{:?} is not a unit of application {:?}",
                request.unit, request.application
            ),
        ));
    }
    if let Some(ms) = request.duration_ms {
        if !LEADERSHIP_DURATION_RANGE.contains(&ms) {
            return Some((
                StatusCode::BAD_REQUEST,
                format!(
                    "a leadership duration of {ms} ms is out of range ({} to {} ms)",
                    LEADERSHIP_DURATION_RANGE.start(),
                    LEADERSHIP_DURATION_RANGE.end()
                ),
            ));
        }
    }
    let own_tag = format!("unit-{}", request.unit.replace('/', "-"));
    if caller_is_agent && caller != own_tag {
        return Some((
            StatusCode::FORBIDDEN,
            format!("{caller} may not claim leadership for {}", request.unit),
        ));
    }
    None
}

fn leadership_result(
    application: &str,
    unit: Option<&str>,
    lease: Option<&Lease>,
) -> LeadershipResult {
    let leader = lease
        .filter(|l| l.is_held())
        .map(|l| l.token.holder.clone());
    LeadershipResult {
        application: application.to_owned(),
        is_leader: unit.is_some() && leader.as_deref() == unit,
        remaining_ms: lease.filter(|l| l.is_held()).map_or(0, |l| {
            u64::try_from(l.remaining().as_millis()).unwrap_or(u64::MAX)
        }),
        start_ms: lease.filter(|l| l.is_held()).map(|l| l.token.start_ms),
        leader,
    }
}

/// `POST /leadership`: claims or extends the application's `application-leadership`
/// lease for the unit; answers who leads now.
async fn claim_leadership_answer(
    state: &State,
    session: &Session,
    request: Request<Incoming>,
) -> Answer {
    let claim: LeadershipRequest =
        match read_json(request, state.limits.max_body, "leadership claim").await {
            Ok(claim) => claim,
            Err(answer) => return answer,
        };
    if let Some((status, why)) = leadership_refusal(&session.name, session.agent, &claim) {
        return error(status, &why);
    }
    let key = LeaseKey::application_leadership(&claim.application);
    let duration = claim
        .duration_ms
        .map_or(LEADERSHIP_DURATION, Duration::from_millis);
    let mut client = state.client.lock().await;
    let outcome = lease::claim_or_extend(&mut *client, &key, &claim.unit, duration).await;
    let lease = match outcome {
        Ok(lease::Claim::Held(_)) | Ok(lease::Claim::Taken(_)) => {
            lease::read(&mut *client, &key).await
        }
        Err(e) => Err(e),
    };
    match lease {
        Ok(lease) => {
            let result = leadership_result(&claim.application, Some(&claim.unit), lease.as_ref());
            let body = serde_json::to_vec(&result).expect("a leadership result serializes");
            (
                StatusCode::OK,
                body,
                format!(
                    "leadership of {} for {} by {:?}: leader {:?}",
                    claim.application, claim.unit, session.name, result.leader
                ),
            )
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cannot claim leadership: {e}"),
        ),
    }
}

/// `GET /leadership?application=<name>`: the application's leader.
async fn read_leadership_answer(state: &State, name: &str, query: Option<&str>) -> Answer {
    let application = match query.unwrap_or_default().split_once('=') {
        Some(("application", application))
            if !application.is_empty() && !application.contains('&') =>
        {
            application.to_owned()
        }
        _ => return error(StatusCode::BAD_REQUEST, "want ?application=<name>"),
    };
    let key = LeaseKey::application_leadership(&application);
    let read = {
        let mut client = state.client.lock().await;
        lease::read(&mut *client, &key).await
    };
    match read {
        Ok(lease) => {
            let result = leadership_result(&application, None, lease.as_ref());
            let body = serde_json::to_vec(&result).expect("a leadership result serializes");
            (
                StatusCode::OK,
                body,
                format!("leader of {application} for {name:?}: {:?}", result.leader),
            )
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cannot read leadership: {e}"),
        ),
    }
}

/// `after=<version>` from a query string: `Ok(None)` without it, an error for a value
/// that is not a version or for another parameter.
pub fn parse_after(query: Option<&str>) -> Result<Option<u64>, String> {
    let mut after = None;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("after", value)) => {
                after = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| format!("after={value:?} is not a version"))?,
                );
            }
            _ => return Err(format!("unknown parameter {pair:?}")),
        }
    }
    Ok(after)
}

/// The address watch: the current list once its version differs from `after`, or after
/// the long poll as it is.
async fn addresses_answer(state: &State, name: &str, query: Option<&str>) -> Answer {
    let after = match parse_after(query) {
        Ok(after) => after,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    let mut receiver = state.addresses.subscribe();
    let deadline = Instant::now() + state.limits.long_poll;
    loop {
        let current = receiver.borrow_and_update().clone();
        match current {
            Some(current) if Some(current.version) != after || Instant::now() >= deadline => {
                let changed = Some(current.version) != after;
                let body = serde_json::to_vec(&current).expect("an address list serializes");
                return (
                    StatusCode::OK,
                    body,
                    format!(
                        "addresses for {name:?}: version {}{}",
                        current.version,
                        if changed { "" } else { " (unchanged)" }
                    ),
                );
            }
            None if Instant::now() >= deadline => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the API addresses have not been read yet",
                )
            }
            _ => {}
        }
        tokio::select! {
            changed = receiver.changed() => if changed.is_err() {
                return error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping");
            },
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// The most rows of each table a status answer reads.
const STATUS_ROWS: usize = 1000;

/// Reads the status tables, each bounded by [`STATUS_ROWS`].
async fn status_tables(client: &mut Client) -> Result<[Vec<Vec<Value>>; 4], dqlite::client::Error> {
    let mut tables = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    let queries = [
        "SELECT controller_id, dqlite_node_id, bind_address FROM controller_node",
        "SELECT controller_id, value FROM controller_api_address ORDER BY value",
        "SELECT key, value FROM controller_config ORDER BY key",
        "SELECT MAX(version) FROM schema_version",
    ];
    for (table, sql) in tables.iter_mut().zip(queries) {
        let sql = format!("{sql} LIMIT {STATUS_ROWS}");
        *table = client.query(DATABASE, &sql, &[]).await?.rows;
    }
    Ok(tables)
}

/// The status answer from the rows of [`status_tables`] (rows of unexpected shape are left
/// out); controllers in numeric id order.
pub fn status_result(
    controller_uuid: &str,
    answered_by: &str,
    tables: &[Vec<Vec<Value>>; 4],
) -> StatusResult {
    let [nodes, addresses, config, version] = tables;
    let mut controllers: BTreeMap<String, ControllerNode> = BTreeMap::new();
    let blank = |id: &str| ControllerNode {
        controller_id: id.to_owned(),
        dqlite_node_id: 0,
        bind_address: String::new(),
        api_addresses: Vec::new(),
    };
    for row in nodes {
        if let [Value::Text(id), Value::Integer(node_id), Value::Text(bind)] = row.as_slice() {
            let node = controllers.entry(id.clone()).or_insert_with(|| blank(id));
            node.dqlite_node_id = *node_id;
            node.bind_address = bind.clone();
        }
    }
    for row in addresses {
        if let [Value::Text(id), Value::Text(value)] = row.as_slice() {
            let node = controllers.entry(id.clone()).or_insert_with(|| blank(id));
            node.api_addresses.push(value.clone());
        }
    }
    let mut controllers: Vec<ControllerNode> = controllers.into_values().collect();
    controllers.sort_by(|a, b| {
        (a.controller_id.len(), &a.controller_id).cmp(&(b.controller_id.len(), &b.controller_id))
    });
    let controller_config = config
        .iter()
        .filter_map(|row| match row.as_slice() {
            [Value::Text(key), Value::Text(value)] => Some((key.clone(), value.clone())),
            _ => None,
        })
        .collect();
    let schema_version = match version.first().map(Vec::as_slice) {
        Some([Value::Integer(version)]) => *version,
        _ => 0,
    };
    StatusResult {
        controller_uuid: controller_uuid.to_owned(),
        answered_by: answered_by.to_owned(),
        schema_version,
        controllers,
        controller_config,
    }
}

async fn status_answer(state: &State, name: &str) -> Answer {
    let tables = {
        let mut client = state.client.lock().await;
        status_tables(&mut client).await
    };
    match tables {
        Ok(tables) => {
            let result = status_result(&state.controller_uuid, &state.controller_id, &tables);
            let body = serde_json::to_vec(&result).expect("a status result serializes");
            (StatusCode::OK, body, format!("status for {name:?}"))
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cannot read the status: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, value: &str, scope: &str) -> (String, String, String, String) {
        (id.into(), value.into(), scope.into(), String::new())
    }

    #[test]
    fn servers_group_by_controller_in_numeric_order() {
        let got = servers(
            &[
                row("10", "10.0.0.10:17070", "local-cloud"),
                row("2", "10.0.0.2:17070", "local-cloud"),
                row("2", "[fd00::2]:17070", "local-cloud"),
                row("2", "garbage", "public"),
            ],
            &[],
        );
        let host = |value: &str, kind: &str| HostPort {
            value: value.into(),
            kind: kind.into(),
            scope: "local-cloud".into(),
            space_name: String::new(),
            port: 17070,
        };
        assert_eq!(
            got,
            vec![
                vec![host("10.0.0.2", "ipv4"), host("fd00::2", "ipv6")],
                vec![host("10.0.0.10", "ipv4")],
            ]
        );
        let json = serde_json::to_value(&got[1][0]).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"value": "10.0.0.10", "type": "ipv4", "scope": "local-cloud", "space-name": "", "port": 17070})
        );
    }

    #[test]
    fn servers_get_the_space_of_their_subnet() {
        let spaces = [("beta".to_owned(), "10.1.0.0/24".to_owned())];
        let mut stated = row("1", "10.1.0.5:17070", "local-cloud");
        stated.3 = "given".into();
        let got = servers(
            &[
                row("1", "10.1.0.4:17070", "local-cloud"),
                stated,
                row("1", "10.2.0.4:17070", "local-cloud"),
            ],
            &spaces,
        );
        let names: Vec<&str> = got[0].iter().map(|h| h.space_name.as_str()).collect();
        assert_eq!(names, ["beta", "given", ""]);
    }

    #[test]
    fn config_change_table() {
        let spaces: BTreeSet<String> = ["alpha".to_owned(), "beta".to_owned()].into();
        let check = |pairs: &[(&str, &str)], expected: Result<(), &str>| {
            let settings: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            assert_eq!(
                check_config(&settings, &spaces),
                expected.map_err(str::to_owned),
                "{pairs:?}"
            );
        };
        check(&[("juju-mgmt-space", "beta")], Ok(()));
        check(&[("juju-mgmt-space", "")], Ok(()));
        check(&[("other", "x")], Ok(()));
        check(
            &[("juju-mgmt-space", "gamma")],
            Err(
                "cannot set juju-mgmt-space: space \"gamma\" not found (known spaces: alpha, beta)",
            ),
        );
        check(
            &[("controller-uuid", "x")],
            Err("controller-uuid cannot be changed"),
        );
        check(&[("", "x")], Err("a setting has an empty key"));
        check(&[], Err("no settings given"));
        assert_eq!(
            check_config(
                &[("juju-mgmt-space".to_owned(), "a".to_owned())].into(),
                &BTreeSet::new()
            ),
            Err("cannot set juju-mgmt-space: space \"a\" not found (known spaces: none)".into())
        );
    }

    /// The default listener takes IPv4 and IPv6 connections alike; a specific address only
    /// its own family.
    #[tokio::test]
    async fn the_unspecified_ipv6_listener_is_dual_stack() {
        let (listener, bound) =
            bind_listener(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))).expect("bind");
        assert!(bound.is_ipv6() && bound.port() != 0, "{bound}");
        for ip in ["127.0.0.1", "::1"] {
            let ip: std::net::IpAddr = ip.parse().expect("ip");
            let dial = tokio::net::TcpStream::connect((ip, bound.port()));
            let (dialled, accepted) = tokio::join!(dial, listener.accept());
            dialled.unwrap_or_else(|e| panic!("dial {ip}: {e}"));
            accepted.unwrap_or_else(|e| panic!("accept from {ip}: {e}"));
        }
        let (_v4_only, bound) =
            bind_listener(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind IPv4");
        let refused = tokio::net::TcpStream::connect(("::1", bound.port())).await;
        assert!(refused.is_err(), "an IPv4 listener answered on ::1");
    }

    #[test]
    fn leadership_refusal_table() {
        let check =
            |caller: &str, agent: bool, unit: &str, ms: Option<u64>, expected: Option<u16>| {
                let request = LeadershipRequest {
                    application: "my-app".into(),
                    unit: unit.into(),
                    duration_ms: ms,
                };
                assert_eq!(
                    leadership_refusal(caller, agent, &request).map(|(status, _)| status.as_u16()),
                    expected,
                    "{caller} {agent} {unit} {ms:?}"
                );
            };
        check("admin", false, "my-app/0", None, None);
        check("admin", false, "my-app/12", Some(1000), None);
        check("unit-my-app-3", true, "my-app/3", Some(300_000), None);
        // An agent claims only for itself; machine agents not at all.
        check("unit-my-app-3", true, "my-app/4", None, Some(403));
        check("machine-3", true, "my-app/3", None, Some(403));
        // Not a unit of the application.
        check("admin", false, "other/0", None, Some(400));
        check("admin", false, "my-app/x", None, Some(400));
        check("admin", false, "my-app", None, Some(400));
        check("admin", false, "my-app-0", None, Some(400));
        // Durations out of range.
        check("admin", false, "my-app/0", Some(999), Some(400));
        check("admin", false, "my-app/0", Some(300_001), Some(400));
    }

    #[test]
    fn after_table() {
        assert_eq!(parse_after(None), Ok(None));
        assert_eq!(parse_after(Some("")), Ok(None));
        assert_eq!(parse_after(Some("after=42")), Ok(Some(42)));
        assert_eq!(
            parse_after(Some("after=-1")),
            Err("after=\"-1\" is not a version".into())
        );
        assert_eq!(
            parse_after(Some("wait=3")),
            Err("unknown parameter \"wait=3\"".into())
        );
    }

    #[test]
    fn a_status_groups_rows_by_controller_and_skips_odd_ones() {
        let text = |t: &str| Value::Text(t.into());
        let tables = [
            vec![
                vec![text("10"), Value::Integer(7), text("10.0.0.20:17666")],
                vec![text("2"), Value::Integer(-5), text("10.0.0.12:17666")],
                vec![text("3"), Value::Null, text("odd")],
            ],
            vec![
                vec![text("2"), text("10.0.0.12:17070")],
                vec![text("2"), text("127.0.0.1:17070")],
                vec![text("4"), text("10.0.0.14:17070")],
            ],
            vec![vec![text("juju-mgmt-space"), text("alpha")]],
            vec![vec![Value::Integer(2)]],
        ];
        let got = status_result("uuid", "2", &tables);
        let ids: Vec<&str> = got
            .controllers
            .iter()
            .map(|c| c.controller_id.as_str())
            .collect();
        assert_eq!(ids, ["2", "4", "10"]);
        assert_eq!(got.controllers[0].dqlite_node_id, -5);
        assert_eq!(
            got.controllers[0].api_addresses,
            ["10.0.0.12:17070", "127.0.0.1:17070"]
        );
        // An address row without a node row still shows; a malformed node row does not.
        assert_eq!(got.controllers[1].bind_address, "");
        assert_eq!(got.controllers[2].dqlite_node_id, 7);
        assert_eq!(got.schema_version, 2);
        assert_eq!(got.controller_config["juju-mgmt-space"], "alpha");
        assert_eq!(got.answered_by, "2");
    }
}
