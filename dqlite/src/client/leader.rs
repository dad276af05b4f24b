//! The leader-finding, retrying [`Client`]: discovery across a list of addresses, the retry
//! decision (a pure function, table-tested), and the operations applications use.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::{Connection, Error, ExecResult, Leader, Options, Rows};
use crate::wire::{failure_code, Value};
use crate::{NodeInfo, NodeRole};

/// A handle to a cluster's leader. It finds the leader among `addresses`, reconnects when
/// leadership moves, and retries with back-off while the cluster is busy, for up to
/// [`Options::retry_timeout`].
///
/// A statement is retried only when it cannot have run: the node refused it as "not leader"
/// or "busy", or the connection was found closed before it was sent. After "leadership lost"
/// or a connection that failed mid-request the statement may or may not have been committed,
/// so the error is returned (the next call finds the new leader). Reads of the configuration
/// ([`Client::cluster`], [`Client::leader`]) are retried in every case.
#[derive(Debug)]
pub struct Client {
    /// Where to look for the leader, in order (the last known leader is tried first).
    addresses: Vec<String>,
    options: Options,
    /// The connection to the confirmed leader, if there is one.
    connection: Option<Connection>,
    /// Database ids opened on `connection`, by name; ids are per connection.
    databases: HashMap<String, u32>,
}

/// What to do after an operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Drop the connection, find the leader again, retry.
    Rediscover,
    /// Keep the connection, wait, retry.
    Backoff,
    /// Return the error; drop the connection first when its state is unknown.
    GiveUp { drop_connection: bool },
}

/// Whether an operation can safely run twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idempotent {
    Yes,
    No,
}

/// The retry decision: pure, so that it can be checked case by case.
fn next_step(error: &Error, idempotent: Idempotent) -> Step {
    let ambiguous = if idempotent == Idempotent::Yes {
        Step::Rediscover
    } else {
        Step::GiveUp {
            drop_connection: true,
        }
    };
    match error {
        Error::Failure { code, .. } => match *code {
            failure_code::NOT_LEADER => Step::Rediscover,
            failure_code::BUSY => Step::Backoff,
            failure_code::LEADERSHIP_LOST => ambiguous,
            _ => Step::GiveUp {
                drop_connection: false,
            },
        },
        // Nothing was sent: discovery failed or the leader is unreachable.
        Error::Connect { .. } | Error::ConnectTimeout { .. } | Error::NoLeader { .. } => {
            Step::Rediscover
        }
        Error::Send { .. }
        | Error::Receive { .. }
        | Error::Timeout { .. }
        | Error::Decode { .. }
        | Error::MessageTooLarge { .. }
        | Error::UnexpectedResponse { .. }
        | Error::Broken { .. } => ambiguous,
        Error::Encode(_) => Step::GiveUp {
            drop_connection: false,
        },
    }
}

/// One operation of the handle, run by [`perform`] on the leader's connection. An enum rather
/// than a closure so that the retry loop's future stays `Send` for every caller.
#[derive(Debug)]
enum Op<'a> {
    /// Nothing: just find the leader.
    Connect,
    Leader,
    Exec {
        db: &'a str,
        sql: &'a str,
        params: &'a [Value],
    },
    Query {
        db: &'a str,
        sql: &'a str,
        params: &'a [Value],
    },
    Cluster,
    Add {
        id: u64,
        address: &'a str,
    },
    Assign {
        id: u64,
        role: NodeRole,
    },
    Remove {
        id: u64,
    },
    Transfer {
        id: u64,
    },
}

impl Op<'_> {
    fn idempotent(&self) -> Idempotent {
        match self {
            Op::Connect | Op::Leader | Op::Cluster => Idempotent::Yes,
            _ => Idempotent::No,
        }
    }
}

/// What [`perform`] returns for each [`Op`].
#[derive(Debug)]
enum Outcome {
    Done,
    Leader(Leader),
    Exec(ExecResult),
    Rows(Rows),
    Nodes(Vec<NodeInfo>),
}

const OUTCOME_MATCHES_OP: &str = "perform answers each op with its own outcome";

impl Client {
    /// Finds the leader among `addresses` (retrying until [`Options::retry_timeout`]) and
    /// returns a handle connected to it.
    pub async fn connect_leader<A: AsRef<str>>(
        addresses: &[A],
        options: Options,
    ) -> Result<Client, Error> {
        if addresses.is_empty() {
            // Nothing to wait for: retrying an empty list cannot succeed.
            return Err(Error::NoLeader {
                addresses: Vec::new(),
                last: None,
            });
        }
        let mut client = Client {
            addresses: addresses.iter().map(|a| a.as_ref().to_owned()).collect(),
            options,
            connection: None,
            databases: HashMap::new(),
        };
        client.retry(Op::Connect).await?;
        Ok(client)
    }

    /// The addresses searched for the leader.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// Replaces the addresses searched for the leader (for example with the current
    /// configuration's); the current connection is kept while it works.
    pub fn set_addresses<A: AsRef<str>>(&mut self, addresses: &[A]) {
        self.addresses = addresses.iter().map(|a| a.as_ref().to_owned()).collect();
    }

    /// The address of the leader this handle is connected to, if it is connected.
    pub fn leader_address(&self) -> Option<&str> {
        self.connection.as_ref().map(Connection::address)
    }

    /// The leader's id and address, confirmed by the leader itself.
    pub async fn leader(&mut self) -> Result<Leader, Error> {
        match self.retry(Op::Leader).await? {
            Outcome::Leader(leader) => Ok(leader),
            _ => unreachable!("{OUTCOME_MATCHES_OP}"),
        }
    }

    /// The connection to the leader, for requests this handle does not wrap. It is not
    /// retried: errors from it are the caller's to handle.
    pub async fn connection(&mut self) -> Result<&mut Connection, Error> {
        self.retry(Op::Connect).await?;
        self.connection.as_mut().ok_or_else(|| Error::NoLeader {
            addresses: self.addresses.clone(),
            last: None,
        })
    }

    /// Runs a statement that returns no rows on database `db` (opened on first use).
    pub async fn exec(
        &mut self,
        db: &str,
        sql: &str,
        params: &[Value],
    ) -> Result<ExecResult, Error> {
        match self.retry(Op::Exec { db, sql, params }).await? {
            Outcome::Exec(result) => Ok(result),
            _ => unreachable!("{OUTCOME_MATCHES_OP}"),
        }
    }

    /// Runs a query on database `db` and returns all of its rows.
    pub async fn query(&mut self, db: &str, sql: &str, params: &[Value]) -> Result<Rows, Error> {
        match self.retry(Op::Query { db, sql, params }).await? {
            Outcome::Rows(rows) => Ok(rows),
            _ => unreachable!("{OUTCOME_MATCHES_OP}"),
        }
    }

    /// The cluster's configuration, as the leader knows it.
    pub async fn cluster(&mut self) -> Result<Vec<NodeInfo>, Error> {
        match self.retry(Op::Cluster).await? {
            Outcome::Nodes(nodes) => Ok(nodes),
            _ => unreachable!("{OUTCOME_MATCHES_OP}"),
        }
    }

    /// Adds node `id` at `address` as a spare; retried while another change is in progress.
    pub async fn add(&mut self, id: u64, address: &str) -> Result<(), Error> {
        self.retry(Op::Add { id, address }).await.map(drop)
    }

    /// Gives node `id` a new role; returns once the node has caught up.
    pub async fn assign(&mut self, id: u64, role: NodeRole) -> Result<(), Error> {
        self.retry(Op::Assign { id, role }).await.map(drop)
    }

    /// Removes node `id`. libdqlite 1.11 accepts removing the last voter, which kills the
    /// cluster: callers must refuse that themselves.
    pub async fn remove(&mut self, id: u64) -> Result<(), Error> {
        self.retry(Op::Remove { id }).await.map(drop)
    }

    /// Hands leadership to voter `id`. The handle reconnects to the new leader on next use.
    pub async fn transfer(&mut self, id: u64) -> Result<(), Error> {
        self.retry(Op::Transfer { id }).await?;
        self.disconnect();
        Ok(())
    }

    fn disconnect(&mut self) {
        self.connection = None;
        self.databases.clear();
    }

    /// Runs `op` on the leader's connection, finding the leader first when needed, and
    /// retries as [`next_step`] decides until the retry deadline.
    async fn retry(&mut self, op: Op<'_>) -> Result<Outcome, Error> {
        let deadline = Instant::now() + self.options.retry_timeout;
        let mut backoff = self.options.initial_backoff;
        loop {
            let result = match self.ensure_connected().await {
                Ok(()) => match self.connection.as_mut() {
                    Some(connection) => perform(connection, &mut self.databases, &op).await,
                    None => Err(Error::NoLeader {
                        addresses: self.addresses.clone(),
                        last: None,
                    }),
                },
                Err(error) => Err(error),
            };
            let error = match result {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            match next_step(&error, op.idempotent()) {
                Step::GiveUp { drop_connection } => {
                    if drop_connection {
                        self.disconnect();
                    }
                    return Err(error);
                }
                Step::Rediscover => self.disconnect(),
                Step::Backoff => {}
            }
            if Instant::now() + backoff > deadline {
                return Err(error);
            }
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(self.options.max_backoff);
        }
    }

    async fn ensure_connected(&mut self) -> Result<(), Error> {
        if self.connection.as_ref().is_some_and(Connection::is_usable) {
            return Ok(());
        }
        let previous = self.connection.take().map(|c| c.address().to_owned());
        self.databases.clear();
        let connection = find_leader(&self.addresses, previous.as_deref(), &self.options).await?;
        self.connection = Some(connection);
        Ok(())
    }
}

/// Runs one operation on the leader's connection.
async fn perform(
    connection: &mut Connection,
    databases: &mut HashMap<String, u32>,
    op: &Op<'_>,
) -> Result<Outcome, Error> {
    Ok(match *op {
        Op::Connect => Outcome::Done,
        Op::Leader => match connection.leader().await? {
            Some(leader) if leader.address == connection.address() => Outcome::Leader(leader),
            // The node we trusted no longer names itself: treat it as "not leader" and look
            // again.
            _ => {
                return Err(Error::Failure {
                    address: connection.address().to_owned(),
                    request: "leader",
                    code: failure_code::NOT_LEADER,
                    message: "node no longer names itself leader".to_owned(),
                })
            }
        },
        Op::Exec { db, sql, params } => {
            let id = open(connection, databases, db).await?;
            Outcome::Exec(connection.exec(id, sql, params).await?)
        }
        Op::Query { db, sql, params } => {
            let id = open(connection, databases, db).await?;
            Outcome::Rows(connection.query(id, sql, params).await?)
        }
        Op::Cluster => Outcome::Nodes(connection.cluster().await?),
        Op::Add { id, address } => {
            connection.add(id, address).await?;
            Outcome::Done
        }
        Op::Assign { id, role } => {
            connection.assign(id, role).await?;
            Outcome::Done
        }
        Op::Remove { id } => {
            connection.remove(id).await?;
            Outcome::Done
        }
        Op::Transfer { id } => {
            connection.transfer(id).await?;
            Outcome::Done
        }
    })
}

/// A pause between half and all of `backoff`, so that clients refused together (several
/// writers finding the database locked) do not retry in lock-step.
fn jitter(backoff: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // Each `RandomState` has fresh keys: its hash of nothing is a cheap random number.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let half = backoff / 2;
    half + half.mul_f64((random % 1024) as f64 / 1024.0)
}

/// The id of database `name` on `connection`, opening it on first use.
async fn open(
    connection: &mut Connection,
    databases: &mut HashMap<String, u32>,
    name: &str,
) -> Result<u32, Error> {
    if let Some(id) = databases.get(name) {
        return Ok(*id);
    }
    let id = connection.open(name).await?;
    databases.insert(name.to_owned(), id);
    Ok(id)
}

/// Asks each address in turn (the previous leader first) and returns a connection to a node
/// that names itself the leader.
async fn find_leader(
    addresses: &[String],
    previous: Option<&str>,
    options: &Options,
) -> Result<Connection, Error> {
    let ordered = previous.into_iter().chain(
        addresses
            .iter()
            .map(String::as_str)
            .filter(|a| Some(*a) != previous),
    );
    let mut last = None;
    for address in ordered {
        match probe(address, options).await {
            Ok(Some(connection)) => return Ok(connection),
            Ok(None) => {}
            Err(error) => last = Some(Box::new(error)),
        }
    }
    Err(Error::NoLeader {
        addresses: addresses.to_vec(),
        last,
    })
}

/// Asks the node at `address` for the leader; follows its answer once, and trusts a leader
/// only when the node at the named address names itself.
async fn probe(address: &str, options: &Options) -> Result<Option<Connection>, Error> {
    let mut connection = Connection::connect(address, options).await?;
    let named = match connection.leader().await? {
        None => return Ok(None),
        Some(leader) if leader.address == address => return Ok(Some(connection)),
        Some(leader) => leader.address,
    };
    drop(connection);
    let mut candidate = Connection::connect(&named, options).await?;
    match candidate.leader().await? {
        Some(leader) if leader.address == named => Ok(Some(candidate)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: u64) -> Error {
        Error::Failure {
            address: "a".into(),
            request: "exec",
            code,
            message: String::new(),
        }
    }

    fn io_error() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::ConnectionReset)
    }

    fn check(error: Error, idempotent: Idempotent, expected: Step) {
        assert_eq!(next_step(&error, idempotent), expected, "after {error:?}");
    }

    #[tokio::test]
    async fn an_empty_address_list_fails_at_once() {
        let addresses: [&str; 0] = [];
        let error = Client::connect_leader(&addresses, Options::default())
            .await
            .expect_err("no addresses");
        assert!(matches!(error, Error::NoLeader { .. }), "{error:?}");
    }

    #[test]
    fn retry_decisions() {
        use Idempotent::{No, Yes};
        let give_up = Step::GiveUp {
            drop_connection: false,
        };
        let give_up_and_drop = Step::GiveUp {
            drop_connection: true,
        };
        check(failure(failure_code::NOT_LEADER), No, Step::Rediscover);
        check(failure(failure_code::BUSY), No, Step::Backoff);
        // The write may have been committed before leadership went: not retried.
        check(failure(failure_code::LEADERSHIP_LOST), No, give_up_and_drop);
        check(
            failure(failure_code::LEADERSHIP_LOST),
            Yes,
            Step::Rediscover,
        );
        check(failure(failure_code::SQL_ERROR), No, give_up);
        check(failure(failure_code::SQL_ERROR), Yes, give_up);
        let connect = Error::Connect {
            address: "a".into(),
            source: io_error(),
        };
        check(connect, No, Step::Rediscover);
        let no_leader = Error::NoLeader {
            addresses: vec![],
            last: None,
        };
        check(no_leader, No, Step::Rediscover);
        let receive = Error::Receive {
            address: "a".into(),
            source: io_error(),
        };
        check(receive, No, give_up_and_drop);
        let timeout = Error::Timeout {
            address: "a".into(),
            timeout: Duration::from_secs(1),
        };
        check(timeout, Yes, Step::Rediscover);
        let encode = Error::Encode(crate::wire::EncodeError::NulInText);
        check(encode, Yes, give_up);
    }
}
