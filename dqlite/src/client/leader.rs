//! The leader-finding, retrying [`Client`]: discovery across a list of addresses, the retry
//! decision (a pure function, table-tested), and the operations applications use.

use std::collections::HashMap;
use std::time::Duration;

use controller_backoff::{jitter, Backoff};
use tokio::time::Instant;

use super::{Connection, Error, ExecResult, Leader, Options, Rows};
use crate::wire::{failure_code, Value};
use crate::{NodeInfo, NodeRole};

/// A handle to a cluster's leader. It finds the leader among `addresses`, reconnects when
/// leadership moves, and retries with back-off while the cluster is busy, for up to
/// [`Options::retry_timeout`].
///
/// A write is sent again only when it certainly did not run; when it may have been committed
/// the handle returns [`Error::OutcomeUnknown`] (with the reason and the node's error) and
/// finds the leader afresh on the next call. What libdqlite 1.11.1 answers, and when:
///
/// - "not leader" (10250) comes only from the check at the start of a request: retried on
///   the leader.
/// - "busy" (5) for one statement comes before anything was handed to raft: "checkpoint in
///   progress", or "database is locked" while another connection's write is between its
///   commit and raft applying it (libdqlite holds the write lock that long): retried after a
///   pause of at most 10 ms. Writes of this process's handles to one database on one
///   leader take turns, so they do not lock each other out.
/// - 7 with a message such as "not an error" is raft's own "not leader" code passed through
///   raw when raft refused the statement's barrier or its frames (a leadership transfer is
///   under way); the frames were dropped, so one statement is retried on the leader. With
///   SQLite's message "out of memory" it is SQLite's own code, which a step can return after
///   writing its commit (libdqlite then replicates the frames anyway): outcome unknown.
/// - 12, "no database opened": the node lost leadership since this connection opened the
///   database (libdqlite then closes every connection's database) and leads again; nothing
///   ran, so the database is opened again on a new connection and the statement retried.
/// - "leadership lost" (10506) and the other I/O error codes (10 and its extended codes,
///   4 "abort") can come after the frames were handed to raft, which may still commit them
///   (the new leader then applies them): outcome unknown.
/// - A connection that fails after the request was sent (reset, timeout, garbage): outcome
///   unknown. One that failed before the whole request was written could not have run it.
/// - SQL text with several statements runs them one by one, each committed on its own: when a
///   later one fails (with any code but "not leader", which only the first can get) the
///   earlier ones may have been committed, so every failure of such a text is an unknown
///   outcome. The handle tells the two apart without parsing SQL fully; it counts
///   a trigger body's statements too, which only makes the handle more careful.
///
/// Reads ([`Client::query`], [`Client::cluster`], [`Client::leader`]) are retried in every
/// case. Membership changes are retried on "not leader" and "busy" only.
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
    /// The write may have been committed: drop the connection and return
    /// [`Error::OutcomeUnknown`] with this reason.
    Unknown { reason: &'static str },
}

/// What sending an operation again could do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// Nothing: a read, or an operation whose request was never sent.
    Harmless,
    /// A write of one SQL statement.
    Statement,
    /// SQL text that may hold several statements, each committed on its own.
    Statements,
    /// A membership change or a leadership transfer.
    Change,
}

/// Longest pause before a write refused with "database is locked" (by another process's
/// write: this process's writers take turns at [`write_gate`]) is sent again: the lock is
/// held for one raft commit, a few milliseconds, and a longer pause leaves the database idle
/// while the writer sleeps. [`Options::max_backoff`] still bounds the other pauses.
const WRITE_BUSY_MAX_BACKOFF: Duration = Duration::from_millis(10);

/// SQLite's "out of memory", which is also raft's "not leader" passed through raw.
const RAW_NOT_LEADER: u64 = 7;
/// SQLite's message for its own code 7; raft's code comes with a stale message instead
/// (seen: "not an error", "no more rows available").
const OUT_OF_MEMORY: &str = "out of memory";
/// SQLite's "not found", which libdqlite sends as "no database opened".
const NO_DATABASE: u64 = 12;
/// SQLite's "abort": a write's raft entry was abandoned when its connection closed.
const ABORT: u64 = 4;
/// SQLite's I/O error; its extended codes (leadership lost, write) share the low byte.
const IOERR: u64 = 10;

const AFTER_RAFT: &str =
    "the leader failed the write after handing it to raft, which may still commit it";
const AFTER_SEND: &str = "the connection failed after the write was sent";
const SEVERAL: &str = "a statement of the SQL text failed after earlier ones may have committed";

/// The retry decision: pure, so that it can be checked case by case.
fn next_step(error: &Error, repeat: Repeat) -> Step {
    let give_up = Step::GiveUp {
        drop_connection: false,
    };
    let after_send = match repeat {
        Repeat::Harmless => Step::Rediscover,
        Repeat::Statement | Repeat::Statements | Repeat::Change => {
            Step::Unknown { reason: AFTER_SEND }
        }
    };
    match error {
        Error::Failure { code, message, .. } => match (repeat, *code) {
            (_, failure_code::NOT_LEADER) => Step::Rediscover,
            (Repeat::Statements, _) => Step::Unknown { reason: SEVERAL },
            (_, failure_code::BUSY) => Step::Backoff,
            // SQLite's own "out of memory" can come from a step that had already written
            // the commit, whose frames libdqlite then hands to raft all the same.
            (Repeat::Statement, RAW_NOT_LEADER) if message == OUT_OF_MEMORY => {
                Step::Unknown { reason: AFTER_RAFT }
            }
            (Repeat::Harmless | Repeat::Statement, RAW_NOT_LEADER | NO_DATABASE) => {
                Step::Rediscover
            }
            (Repeat::Harmless, failure_code::LEADERSHIP_LOST) => Step::Rediscover,
            (Repeat::Statement | Repeat::Change, code) if code == ABORT || code & 0xff == IOERR => {
                Step::Unknown { reason: AFTER_RAFT }
            }
            _ => give_up,
        },
        // Nothing was sent: discovery failed, the leader is unreachable, the request could
        // not be written whole, or the connection was already unusable.
        Error::Connect { .. }
        | Error::ConnectTimeout { .. }
        | Error::NoLeader { .. }
        | Error::Send { .. }
        | Error::Broken { .. } => Step::Rediscover,
        Error::Receive { .. }
        | Error::Timeout { .. }
        | Error::Decode { .. }
        | Error::MessageTooLarge { .. }
        | Error::UnexpectedResponse { .. } => after_send,
        Error::Encode(_) | Error::OutcomeUnknown { .. } => give_up,
    }
}

/// How many statements `sql` holds, as far as retrying needs to know: 0 or 1, or 2 meaning
/// "more than one, or cannot tell". Semicolons inside quotes, identifiers in brackets or
/// backquotes, and comments do not count, nor do trailing ones.
fn statement_count(sql: &str) -> usize {
    let mut count = 0;
    let mut in_statement = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ';' => in_statement = false,
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut star = false;
                for c in chars.by_ref() {
                    if star && c == '/' {
                        break;
                    }
                    star = c == '*';
                }
            }
            c if c.is_whitespace() => {}
            c => {
                if !in_statement {
                    in_statement = true;
                    count += 1;
                }
                let close = match c {
                    '\'' | '"' | '`' => Some(c),
                    '[' => Some(']'),
                    _ => None,
                };
                if let Some(close) = close {
                    // A doubled quote inside is read as the end and a new start: same result.
                    for c in chars.by_ref() {
                        if c == close {
                            break;
                        }
                    }
                }
            }
        }
    }
    count.min(2)
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
    fn repeat(&self) -> Repeat {
        match self {
            Op::Connect | Op::Leader | Op::Cluster | Op::Query { .. } => Repeat::Harmless,
            Op::Exec { sql, .. } if statement_count(sql) <= 1 => Repeat::Statement,
            Op::Exec { .. } => Repeat::Statements,
            Op::Add { .. } | Op::Assign { .. } | Op::Remove { .. } | Op::Transfer { .. } => {
                Repeat::Change
            }
        }
    }
}

/// An operation's error, and whether its own request (not one it needs first, such as
/// opening the database) was sent.
#[derive(Debug)]
struct Failed {
    error: Error,
    sent: bool,
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Failed { error, sent: true }
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
        let mut backoff = Backoff::new(self.options.initial_backoff, self.options.max_backoff);
        loop {
            let result = match self.ensure_connected().await {
                Ok(()) => match self.connection.as_mut() {
                    Some(connection) => {
                        let gate_wait = self.options.request_timeout;
                        perform(connection, &mut self.databases, &op, gate_wait).await
                    }
                    None => Err(Failed {
                        error: Error::NoLeader {
                            addresses: self.addresses.clone(),
                            last: None,
                        },
                        sent: false,
                    }),
                },
                Err(error) => Err(Failed { error, sent: false }),
            };
            let Failed { error, sent } = match result {
                Ok(value) => return Ok(value),
                Err(failed) => failed,
            };
            let repeat = if sent { op.repeat() } else { Repeat::Harmless };
            let step = next_step(&error, repeat);
            match step {
                Step::GiveUp { drop_connection } => {
                    if drop_connection {
                        self.disconnect();
                    }
                    return Err(error);
                }
                Step::Unknown { reason } => {
                    self.disconnect();
                    return Err(Error::OutcomeUnknown {
                        reason,
                        source: Box::new(error),
                    });
                }
                Step::Rediscover => self.disconnect(),
                Step::Backoff => {}
            }
            let pause = backoff.next_delay();
            let pause = match (step, repeat) {
                // A locked database frees up within one commit: poll it often.
                (Step::Backoff, Repeat::Statement | Repeat::Statements) => {
                    pause.min(WRITE_BUSY_MAX_BACKOFF)
                }
                _ => pause,
            };
            if Instant::now() + pause > deadline {
                return Err(error);
            }
            tokio::time::sleep(jitter(pause)).await;
        }
    }

    async fn ensure_connected(&mut self) -> Result<(), Error> {
        if self.connection.as_mut().is_some_and(Connection::is_usable) {
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
    gate_wait: Duration,
) -> Result<Outcome, Failed> {
    // Opening the database comes before the operation's own request.
    let not_sent = |error| Failed { error, sent: false };
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
                }
                .into())
            }
        },
        Op::Exec { db, sql, params } => {
            let id = open(connection, databases, db).await.map_err(not_sent)?;
            let gate = write_gate(connection.address(), db);
            // Past `gate_wait` (a writer stuck on a dead connection) go anyway: the node's
            // own lock still keeps writes apart, with "busy" and back-off.
            let _turn = tokio::time::timeout(gate_wait, gate.lock()).await;
            Outcome::Exec(connection.exec(id, sql, params).await?)
        }
        Op::Query { db, sql, params } => {
            let id = open(connection, databases, db).await.map_err(not_sent)?;
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

/// libdqlite 1.11 runs one write transaction per database at a time: from the commit until
/// raft has applied it (a network round trip or more) every other writer is refused with
/// "database is locked". Handles of this process writing to the same database through the
/// same leader therefore take turns here, first come first served, instead of polling the
/// node with back-off, which leaves the database idle between a commit and the next
/// writer's retry and lets an unlucky writer lose again and again.
type Gate = std::sync::Arc<tokio::sync::Mutex<()>>;

fn write_gate(leader: &str, db: &str) -> Gate {
    use std::sync::{Mutex, OnceLock};
    static GATES: OnceLock<Mutex<HashMap<(String, String), Gate>>> = OnceLock::new();
    let mut gates = GATES
        .get_or_init(Mutex::default)
        .lock()
        // Nothing can panic while the map is held; a poisoned map is still a valid map.
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    gates
        .entry((leader.to_owned(), db.to_owned()))
        .or_default()
        .clone()
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

/// How long the previous leader is asked alone before every other address is asked too.
/// A live leader answers within milliseconds, so the common case (the leader did not move)
/// opens one connection; a previous leader that is gone (its machine removed: an address
/// that drops packets) costs this long, not a whole connect timeout.
pub(crate) const PREVIOUS_LEADER_HEAD_START: Duration = Duration::from_millis(150);

/// Asks every address at once (the previous leader [`PREVIOUS_LEADER_HEAD_START`] ahead of
/// the others) and returns the first connection to a node that names itself the leader; the
/// other probes are dropped. One dead or black-holed address delays nothing: its probe runs
/// out its connect timeout alone.
async fn find_leader(
    addresses: &[String],
    previous: Option<&str>,
    options: &Options,
) -> Result<Connection, Error> {
    let ordered: Vec<String> = previous
        .into_iter()
        .chain(
            addresses
                .iter()
                .map(String::as_str)
                .filter(|a| Some(*a) != previous),
        )
        .map(str::to_owned)
        .collect();
    let mut probes = tokio::task::JoinSet::new();
    for (index, address) in ordered.into_iter().enumerate() {
        let options = options.clone();
        let head_start = if previous.is_some() && index > 0 {
            PREVIOUS_LEADER_HEAD_START
        } else {
            Duration::ZERO
        };
        probes.spawn(async move {
            tokio::time::sleep(head_start).await;
            probe(&address, &options).await
        });
    }
    let mut last = None;
    while let Some(joined) = probes.join_next().await {
        match joined {
            Ok(Ok(Some(connection))) => return Ok(connection),
            Ok(Ok(None)) => {}
            Ok(Err(error)) => last = Some(Box::new(error)),
            // A probe that panicked found nothing; the others still count.
            Err(join_error) => {
                last = Some(Box::new(Error::Connect {
                    address: "a leader probe".into(),
                    source: std::io::Error::other(join_error.to_string()),
                }))
            }
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

    fn check(error: Error, repeat: Repeat, expected: Step) {
        assert_eq!(
            next_step(&error, repeat),
            expected,
            "after {error:?} ({repeat:?})"
        );
    }

    fn check_count(sql: &str, expected: usize) {
        assert_eq!(statement_count(sql), expected, "in {sql:?}");
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
        use failure_code::{BUSY, LEADERSHIP_LOST, NOT_LEADER, SQL_ERROR};
        use Repeat::{Change, Harmless, Statement, Statements};
        let give_up = Step::GiveUp {
            drop_connection: false,
        };
        let after_raft = Step::Unknown { reason: AFTER_RAFT };
        let after_send = Step::Unknown { reason: AFTER_SEND };
        let several = Step::Unknown { reason: SEVERAL };
        const IOERR_WRITE: u64 = 778;
        const CONSTRAINT_UNIQUE: u64 = 2067;

        // Refused at the start of the request: nothing ran, whatever the operation.
        for repeat in [Harmless, Statement, Statements, Change] {
            check(failure(NOT_LEADER), repeat, Step::Rediscover);
        }
        // Busy before anything was handed to raft; for SQL text with several statements it
        // can also be a later statement's, after earlier ones committed.
        check(failure(BUSY), Harmless, Step::Backoff);
        check(failure(BUSY), Statement, Step::Backoff);
        check(failure(BUSY), Change, Step::Backoff);
        check(failure(BUSY), Statements, several);
        // Raft's raw "not leader" (a transfer under way) and "no database opened" (the node
        // lost and regained leadership): refused before the statement ran.
        check(failure(RAW_NOT_LEADER), Statement, Step::Rediscover);
        let out_of_memory = Error::Failure {
            address: "a".into(),
            request: "exec",
            code: RAW_NOT_LEADER,
            message: OUT_OF_MEMORY.into(),
        };
        check(out_of_memory, Statement, after_raft);
        check(failure(RAW_NOT_LEADER), Statements, several);
        check(failure(NO_DATABASE), Statement, Step::Rediscover);
        check(failure(NO_DATABASE), Harmless, Step::Rediscover);
        // Failed after the frames went to raft: maybe committed.
        check(failure(LEADERSHIP_LOST), Statement, after_raft);
        check(failure(LEADERSHIP_LOST), Change, after_raft);
        check(failure(LEADERSHIP_LOST), Statements, several);
        check(failure(LEADERSHIP_LOST), Harmless, Step::Rediscover);
        check(failure(IOERR), Statement, after_raft);
        check(failure(IOERR_WRITE), Statement, after_raft);
        check(failure(ABORT), Statement, after_raft);
        // SQL errors: one statement certainly did not run; in a longer text earlier ones may
        // have.
        check(failure(SQL_ERROR), Statement, give_up);
        check(failure(CONSTRAINT_UNIQUE), Statement, give_up);
        check(failure(SQL_ERROR), Harmless, give_up);
        check(failure(SQL_ERROR), Statements, several);
        check(failure(SQL_ERROR), Change, give_up);

        // Nothing sent.
        let connect = || Error::Connect {
            address: "a".into(),
            source: io_error(),
        };
        let no_leader = || Error::NoLeader {
            addresses: vec![],
            last: None,
        };
        let send = || Error::Send {
            address: "a".into(),
            source: io_error(),
        };
        let broken = || Error::Broken {
            address: "a".into(),
        };
        for repeat in [Harmless, Statement, Statements, Change] {
            check(connect(), repeat, Step::Rediscover);
            check(no_leader(), repeat, Step::Rediscover);
            check(send(), repeat, Step::Rediscover);
            check(broken(), repeat, Step::Rediscover);
        }
        // Sent, then the connection failed.
        let receive = || Error::Receive {
            address: "a".into(),
            source: io_error(),
        };
        let timeout = || Error::Timeout {
            address: "a".into(),
            timeout: Duration::from_secs(1),
        };
        for repeat in [Statement, Statements, Change] {
            check(receive(), repeat, after_send);
            check(timeout(), repeat, after_send);
        }
        check(receive(), Harmless, Step::Rediscover);
        check(timeout(), Harmless, Step::Rediscover);

        let encode = Error::Encode(crate::wire::EncodeError::NulInText);
        check(encode, Harmless, give_up);
    }

    #[test]
    fn statement_counts() {
        check_count("", 0);
        check_count(" ;\n; ", 0);
        check_count("INSERT INTO kv VALUES (?)", 1);
        check_count("INSERT INTO kv VALUES (?);", 1);
        check_count("INSERT INTO kv VALUES (?) ; -- done\n", 1);
        check_count(
            "INSERT INTO kv VALUES ('a;b', \"c;\", [d;], `e;`) /* ; */",
            1,
        );
        check_count("INSERT INTO kv VALUES ('it''s; fine')", 1);
        check_count("-- a; b\nSELECT 1", 1);
        check_count("INSERT INTO a VALUES (1); INSERT INTO b VALUES (2)", 2);
        check_count("BEGIN; INSERT INTO a VALUES (1); COMMIT", 2);
        check_count("CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; END", 2);
        // An unterminated quote or comment swallows the rest: still one statement.
        check_count("SELECT 'a; b", 1);
        check_count("SELECT 1 /* ; SELECT 2", 1);
    }

    #[test]
    fn exec_texts_are_classified_by_statement_count() {
        let exec = |sql| Op::Exec {
            db: "d",
            sql,
            params: &[],
        };
        assert_eq!(
            exec("INSERT INTO a VALUES (1);").repeat(),
            Repeat::Statement
        );
        assert_eq!(
            exec("DELETE FROM a; DELETE FROM b").repeat(),
            Repeat::Statements
        );
        assert_eq!(Op::Cluster.repeat(), Repeat::Harmless);
        assert_eq!(Op::Transfer { id: 2 }.repeat(), Repeat::Change);
    }
}
