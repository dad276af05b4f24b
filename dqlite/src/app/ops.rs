//! The membership requests the application makes, over one [`Connection`] to the leader:
//! leader discovery, retries while the cluster is busy with another change, and a new
//! leader found when the old one says it no longer leads.

use std::time::Duration;

use controller_backoff::Backoff;

use super::AppError;
use crate::client::{self, Connection, Options};
use crate::wire::failure_code;
use crate::{NodeInfo, NodeRole};

/// How long a request that the leader answers with "busy" (another configuration change
/// in progress) is retried: such a change lasts milliseconds on a healthy cluster.
pub(crate) const BUSY_RETRY: Duration = Duration::from_secs(5);

/// A connection to the node that named itself the leader.
pub(crate) struct Leader {
    pub(crate) connection: Connection,
    /// The leader's raft id.
    pub(crate) id: u64,
    /// Where the leader was looked for: where to look again when it stops leading.
    addresses: Vec<String>,
    /// How to dial (the bound on each connect and request, TLS).
    options: Options,
}

/// Client options with every connect and request bounded by `timeout`, with the node's TLS.
pub(crate) fn options(timeout: Duration, tls: Option<crate::tls::Tls>) -> Options {
    Options {
        connect_timeout: timeout,
        request_timeout: timeout,
        retry_timeout: timeout,
        tls,
        ..Options::default()
    }
}

/// The longest a leader lookup or a member probe waits for one connection (or the request
/// timeout, if shorter). Establishing a connection is the far kernel's work, so a live node
/// accepts in milliseconds even when its process is busy; a dead address whose SYNs vanish
/// must not hold the lookup or the role review, and the status behind them, for a whole
/// request timeout. With TLS the handshake counts too: a few milliseconds of the peer's CPU.
pub(crate) const PEER_CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

/// `options` with the connect bounded by [`PEER_CONNECT_TIMEOUT`].
fn peer_options(options: &Options) -> Options {
    Options {
        connect_timeout: options.connect_timeout.min(PEER_CONNECT_TIMEOUT),
        ..options.clone()
    }
}

/// Finds the leader among `addresses`: a node is trusted as the leader only when it names
/// itself; a node that names another is followed once to that address. The first address
/// (the app's own node, which knows the leader whenever there is one) is asked alone; only
/// when it names no leader that confirms are the others asked, all at once, so that dead
/// ones cost one bounded connect together rather than one each.
pub(crate) async fn find_leader(
    addresses: &[String],
    options: &Options,
) -> Result<Leader, AppError> {
    let peer = peer_options(options);
    let found = |(connection, id)| Leader {
        connection,
        id,
        addresses: addresses.to_vec(),
        options: options.clone(),
    };
    let mut last_error = "no node knows a leader".to_owned();
    let Some((first, rest)) = addresses.split_first() else {
        return Err(AppError::NoLeader {
            addresses: vec![],
            last_error,
        });
    };
    match leader_through(first.clone(), peer.clone()).await {
        Ok(Some(leader)) => return Ok(found(leader)),
        Ok(None) => {}
        Err(error) => last_error = error,
    }
    let mut asks = tokio::task::JoinSet::new();
    for address in rest {
        asks.spawn(leader_through(address.clone(), peer.clone()));
    }
    while let Some(answer) = asks.join_next().await {
        match answer {
            Ok(Ok(Some(leader))) => return Ok(found(leader)),
            Ok(Ok(None)) => {}
            Ok(Err(error)) => last_error = error,
            Err(join) => last_error = format!("the lookup task failed: {join}"),
        }
    }
    Err(AppError::NoLeader {
        addresses: addresses.to_vec(),
        last_error,
    })
}

/// Asks `address` for the leader: the connection and id when it names itself, or when the
/// node it names confirms; `None` when it knows no leader.
async fn leader_through(
    address: String,
    options: Options,
) -> Result<Option<(Connection, u64)>, String> {
    match ask_leader(&address, &options).await {
        Ok((connection, Some(leader))) if leader.address == address => {
            Ok(Some((connection, leader.id)))
        }
        Ok((_, Some(leader))) => match ask_leader(&leader.address, &options).await {
            Ok((connection, Some(confirmed))) if confirmed.address == leader.address => {
                Ok(Some((connection, confirmed.id)))
            }
            Ok(_) => Err(format!("{} did not confirm its leadership", leader.address)),
            Err(error) => Err(crate::error_chain(&error)),
        },
        Ok((_, None)) => Ok(None),
        Err(error) => Err(crate::error_chain(&error)),
    }
}

async fn ask_leader(
    address: &str,
    options: &Options,
) -> Result<(Connection, Option<client::Leader>), client::Error> {
    let mut connection = Connection::connect(address, options).await?;
    let leader = connection.leader().await?;
    Ok((connection, leader))
}

/// The configuration as the leader knows it.
pub(crate) async fn cluster(leader: &mut Leader) -> Result<Vec<NodeInfo>, AppError> {
    leader
        .connection
        .cluster()
        .await
        .map_err(|source| failed("list the cluster members".to_owned(), source))
}

/// ADD `id` at `address` as a spare.
pub(crate) async fn add(leader: &mut Leader, id: u64, address: &str) -> Result<(), AppError> {
    retry_busy(leader, Change::Add { id, address })
        .await
        .map_err(|source| failed(format!("add node {id} at {address}"), source))
}

/// ASSIGN `role` to `id`. "Busy" is returned, not retried: a role change planned from a
/// snapshot must be checked again before it is sent again (see `run::apply_checked`).
pub(crate) async fn assign(leader: &mut Leader, id: u64, role: NodeRole) -> Result<(), AppError> {
    retry_busy(leader, Change::Assign { id, role })
        .await
        .map_err(|source| failed(format!("make node {id} a {role}"), source))
}

/// REMOVE `id`.
pub(crate) async fn remove(leader: &mut Leader, id: u64) -> Result<(), AppError> {
    retry_busy(leader, Change::Remove { id })
        .await
        .map_err(|source| failed(format!("remove node {id}"), source))
}

/// TRANSFER leadership to `id`.
pub(crate) async fn transfer(leader: &mut Leader, id: u64) -> Result<(), AppError> {
    retry_busy(leader, Change::Transfer { id })
        .await
        .map_err(|source| failed(format!("transfer leadership to node {id}"), source))
}

/// The longest a request on a kept connection ([`Leader::still_leads`], a probe through a
/// [`Kept`] connection) may take: a node answers these from memory in well under a
/// millisecond, so a silence this long means a dead or cut-off node, which must not hold
/// a lookup or a role review for a whole request timeout.
pub(crate) const KEPT_REQUEST_TIMEOUT: Duration = Duration::from_millis(500);

impl Leader {
    /// Whether this kept connection can serve again: it is usable and its node still names
    /// itself the leader, within [`KEPT_REQUEST_TIMEOUT`].
    pub(crate) async fn still_leads(&mut self) -> bool {
        if !self.connection.is_usable() {
            return false;
        }
        let address = self.connection.address().to_owned();
        let id = self.id;
        matches!(
            tokio::time::timeout(KEPT_REQUEST_TIMEOUT, self.connection.leader()).await,
            Ok(Ok(Some(named))) if named.address == address && named.id == id
        )
    }
}

/// DESCRIBE the node at `address`: its failure domain and weight, through `kept` (a
/// connection to that node from an earlier probe) when there is one, else through a new
/// connection. Returns the connection to keep for the next probe: none after a failure.
///
/// A kept connection that fails at once (the node restarted and closed it) is replaced by a
/// new one; one that stays silent for [`KEPT_REQUEST_TIMEOUT`] is not (a node that does
/// not answer on a live connection would not accept a new one sooner).
pub(crate) async fn describe(
    address: &str,
    options: &Options,
    kept: Option<Connection>,
) -> (Result<(u64, u64), client::Error>, Option<Connection>) {
    if let Some(mut connection) = kept.filter(|c| c.address() == address) {
        if connection.is_usable() {
            match tokio::time::timeout(KEPT_REQUEST_TIMEOUT, connection.describe()).await {
                Ok(Ok(metadata)) => {
                    return (
                        Ok((metadata.failure_domain, metadata.weight)),
                        Some(connection),
                    )
                }
                Ok(Err(_)) => {}
                Err(_) => {
                    return (
                        Err(client::Error::Timeout {
                            address: address.to_owned(),
                            timeout: KEPT_REQUEST_TIMEOUT,
                        }),
                        None,
                    )
                }
            }
        }
    }
    let fresh = async {
        let mut connection = Connection::connect(address, &peer_options(options)).await?;
        let metadata = connection.describe().await?;
        Ok::<_, client::Error>((connection, (metadata.failure_domain, metadata.weight)))
    };
    match fresh.await {
        Ok((connection, answer)) => (Ok(answer), Some(connection)),
        Err(error) => (Err(error), None),
    }
}

/// The leader the node at `address` follows, as its own raft state names it (LEADER asked
/// of that node alone, answered from its memory), through `kept` when it still serves, else
/// through a new connection. `None` when the node names no leader or does not answer.
/// Returns the connection to keep for the next question: none after a failure.
pub(crate) async fn named_leader(
    address: &str,
    options: &Options,
    kept: Option<Connection>,
) -> (Option<u64>, Option<Connection>) {
    let kept = kept
        .filter(|c| c.address() == address)
        .and_then(|mut c| c.is_usable().then_some(c));
    let mut connection = match kept {
        Some(connection) => connection,
        None => match Connection::connect(address, &peer_options(options)).await {
            Ok(connection) => connection,
            Err(_) => return (None, None),
        },
    };
    match tokio::time::timeout(KEPT_REQUEST_TIMEOUT, connection.leader()).await {
        Ok(Ok(named)) => (named.map(|leader| leader.id), Some(connection)),
        _ => (None, None),
    }
}

/// Sets the weight of the node at `address` (WEIGHT goes to the node itself).
pub(crate) async fn set_weight(
    address: &str,
    weight: u64,
    options: &Options,
) -> Result<(), client::Error> {
    let mut connection = Connection::connect(address, options).await?;
    connection.weight(weight).await
}

/// A configuration change request.
#[derive(Clone, Copy)]
enum Change<'a> {
    Add { id: u64, address: &'a str },
    Assign { id: u64, role: NodeRole },
    Remove { id: u64 },
    Transfer { id: u64 },
}

/// Sends a configuration change, again after a pause while the leader answers "busy", and
/// to the new leader when the old one answers "not leader" (a request it refused before
/// doing anything, so sending it again is safe). "Leadership lost" is returned: the change
/// may or may not have been made, and only a fresh look at the configuration can tell.
async fn retry_busy(leader: &mut Leader, change: Change<'_>) -> Result<(), client::Error> {
    let deadline = tokio::time::Instant::now() + BUSY_RETRY;
    let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(250));
    loop {
        let connection = &mut leader.connection;
        let result = match change {
            Change::Add { id, address } => connection.add(id, address).await,
            Change::Assign { id, role } => connection.assign(id, role).await,
            Change::Remove { id } => connection.remove(id).await,
            Change::Transfer { id } => connection.transfer(id).await,
        };
        let retry = match &result {
            Err(error) if error.is_busy() => !matches!(change, Change::Assign { .. }),
            Err(error) => error.failure_code() == Some(failure_code::NOT_LEADER),
            Ok(()) => false,
        };
        if !retry || tokio::time::Instant::now() >= deadline {
            return result;
        }
        tokio::time::sleep(backoff.next_delay()).await;
        if result.as_ref().is_err_and(|e| !e.is_busy()) {
            // Not the leader any more: look again (an election may still be under way, in
            // which case the next turn of the loop looks again).
            if let Ok(found) = find_leader(&leader.addresses, &leader.options).await {
                *leader = found;
            }
        }
    }
}

fn failed(operation: String, source: client::Error) -> AppError {
    AppError::Cluster { operation, source }
}
