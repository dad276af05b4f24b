//! An async (tokio) client for the Dqlite wire protocol.
//!
//! Two levels:
//!
//! - [`Connection`]: one connection to one node, one request in flight at a time (the methods
//!   take `&mut self`). Every connect, send and read has a timeout. Use it to talk to a
//!   particular node: ask whom it believes is the leader, describe it, set its weight, or run
//!   SQL on it when you know it leads.
//! - [`Client`]: a handle that finds the leader among a list of addresses, trusting a leader
//!   only when the node at that address names itself, reconnects when the leader changes
//!   ("not leader", a dead connection), and retries with back-off while the cluster is busy,
//!   but never sends again a write that may already have been committed (that is
//!   [`Error::OutcomeUnknown`]). This is what applications use.
//!
//! ```no_run
//! # async fn demo() -> Result<(), dqlite::client::Error> {
//! use dqlite::client::{Client, Options};
//! use dqlite::wire::Value;
//!
//! let mut client = Client::connect_leader(&["127.0.0.1:9001", "127.0.0.1:9002"], Options::default()).await?;
//! client.exec("app", "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB)", &[]).await?;
//! client.exec("app", "INSERT INTO kv VALUES (?, ?)", &["a".into(), Value::Blob(vec![1])]).await?;
//! let rows = client.query("app", "SELECT v FROM kv WHERE k = ?", &["a".into()]).await?;
//! assert_eq!(rows.rows[0][0], Value::Blob(vec![1]));
//! # Ok(()) }
//! ```

mod connection;
mod leader;

use std::time::Duration;

use crate::wire::{failure_code, DecodeError, EncodeError, Value};

pub use connection::Connection;
pub use leader::Client;

/// Timeouts, limits and retry policy shared by [`Connection`] and [`Client`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Longest wait for a TCP (or unix socket) connection to be established.
    pub connect_timeout: Duration,
    /// Longest wait for any single send or read; a node that stops answering mid-request is
    /// given up on after this long.
    pub request_timeout: Duration,
    /// Largest response body accepted, so that a bad header cannot make the client allocate
    /// gigabytes. Dqlite splits large results into batches well below the default.
    pub max_message_size: u64,
    /// How long [`Client`] keeps retrying (leader discovery, not leader, busy) before it gives
    /// up and returns the last error.
    pub retry_timeout: Duration,
    /// First pause between retries; it doubles up to `max_backoff` (each pause is jittered
    /// down by up to half). Short, because "database is locked" clears within a commit.
    pub initial_backoff: Duration,
    /// Longest pause between retries. A write refused with "database is locked" waits at
    /// most 10 ms whatever this says; writes from handles of one process to one database
    /// take turns without asking the node at all.
    pub max_backoff: Duration,
    /// Mutual TLS to nodes that have it (`None`: plaintext); see [`Connection::connect`].
    pub tls: Option<crate::tls::Tls>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_message_size: 64 << 20,
            // Long enough for an election at libdqlite's default latency (about 5.5 s).
            retry_timeout: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(100),
            tls: None,
        }
    }
}

/// The result of a statement run with [`Connection::exec`] or [`Client::exec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecResult {
    pub last_insert_id: u64,
    pub rows_affected: u64,
}

/// Every row of a query, gathered from all of its ROWS batches.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    pub columns: Vec<String>,
    /// Each row holds one value per column.
    pub rows: Vec<Vec<Value>>,
}

/// A node's failure domain and weight, as DESCRIBE reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    pub failure_domain: u64,
    pub weight: u64,
}

/// The leader as a node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub id: u64,
    pub address: String,
}

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connect to {address}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connect to {address} timed out after {timeout:?}")]
    ConnectTimeout { address: String, timeout: Duration },
    #[error("send to {address}")]
    Send {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("receive from {address}")]
    Receive {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{address} did not answer within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("malformed response from {address}")]
    Decode {
        address: String,
        #[source]
        source: DecodeError,
    },
    #[error("response of {bytes} bytes from {address} exceeds the {limit}-byte limit")]
    MessageTooLarge {
        address: String,
        bytes: u64,
        limit: u64,
    },
    #[error("encode request")]
    Encode(#[source] EncodeError),
    #[error("{address} answered {request} with unexpected message type {kind}")]
    UnexpectedResponse {
        address: String,
        request: &'static str,
        kind: u8,
    },
    #[error("{address} failed {request}: {message} (code {code})")]
    Failure {
        address: String,
        request: &'static str,
        code: u64,
        message: String,
    },
    #[error("connection to {address} was left mid-request and cannot be reused")]
    Broken { address: String },
    /// A write was sent and then failed in a way that leaves its fate open: it may or may not
    /// have been committed. [`Client`] never sends such a write again on its own; only the
    /// caller can tell (by reading the data back) whether to repeat it.
    #[error("outcome unknown, the write may or may not have been committed: {reason}")]
    OutcomeUnknown {
        reason: &'static str,
        #[source]
        source: Box<Error>,
    },
    #[error("no node among {addresses:?} confirmed itself as the leader")]
    NoLeader {
        addresses: Vec<String>,
        /// The error from the last node tried, if any failed outright.
        #[source]
        last: Option<Box<Error>>,
    },
}

impl Error {
    /// The node's failure code, for an error the node reported.
    pub fn failure_code(&self) -> Option<u64> {
        match self {
            Error::Failure { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The node is not the leader and refused the request before doing anything: find the
    /// leader and send it again. "Leadership lost" is not this: it can come after a write was
    /// handed to raft, which may still commit it.
    pub fn is_not_leader(&self) -> bool {
        self.failure_code() == Some(failure_code::NOT_LEADER)
    }

    /// A write may or may not have been committed ([`Error::OutcomeUnknown`]).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Error::OutcomeUnknown { .. })
    }

    /// The node is busy (for example a configuration change is in progress): try again later.
    pub fn is_busy(&self) -> bool {
        self.failure_code() == Some(failure_code::BUSY)
    }
}
