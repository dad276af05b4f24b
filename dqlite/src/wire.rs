//! Encode and decode Dqlite wire-protocol version 1 messages. No IO.
//!
//! A message is an 8-byte [`Header`] (body length in 8-byte words, type, revision) followed by
//! a body that is a whole, non-zero number of words. [`Request`] and [`Response`] are the typed
//! messages; [`Value`] is one SQL value in a parameter list or a row.
//!
//! Decoding takes a byte slice and either returns a typed message or a [`DecodeError`]. It never
//! panics, and it never allocates by a count read from the wire before checking that count
//! against the bytes that remain: a hostile peer cannot make it reserve more memory than the
//! message it actually sent.
//!
//! Encoding appends to a `Vec<u8>` and cannot fail for the messages the protocol can carry; the
//! few limits the protocol has (a parameter count that fits in 32 bits, a body that fits in
//! `u32` words) are checked by [`Request::encode`] and [`Response::encode`].

mod decode;
mod encode;

use crate::{NodeInfo, NodeRole};

pub use decode::{DecodeError, Header};

/// The protocol version sent as the first word after connecting.
pub const PROTOCOL_VERSION: u64 = 1;

/// Bytes in one protocol word; every body is a whole number of words.
pub const WORD: usize = 8;

/// Size of a message header.
pub const HEADER_SIZE: usize = 8;

/// Request type codes.
pub mod request_type {
    pub const LEADER: u8 = 0;
    pub const CLIENT: u8 = 1;
    pub const OPEN: u8 = 3;
    pub const EXEC_SQL: u8 = 8;
    pub const QUERY_SQL: u8 = 9;
    pub const INTERRUPT: u8 = 10;
    pub const ADD: u8 = 12;
    pub const ASSIGN: u8 = 13;
    pub const REMOVE: u8 = 14;
    pub const DUMP: u8 = 15;
    pub const CLUSTER: u8 = 16;
    pub const TRANSFER: u8 = 17;
    pub const DESCRIBE: u8 = 18;
    pub const WEIGHT: u8 = 19;
}

/// Response type codes.
pub mod response_type {
    pub const FAILURE: u8 = 0;
    pub const SERVER: u8 = 1;
    pub const WELCOME: u8 = 2;
    pub const SERVERS: u8 = 3;
    pub const DB: u8 = 4;
    pub const RESULT: u8 = 6;
    pub const ROWS: u8 = 7;
    pub const EMPTY: u8 = 8;
    pub const FILES: u8 = 9;
    pub const METADATA: u8 = 10;
}

/// Value type codes, shared by parameter tuples and row headers.
pub mod value_type {
    pub const INTEGER: u8 = 1;
    pub const FLOAT: u8 = 2;
    pub const TEXT: u8 = 3;
    pub const BLOB: u8 = 4;
    pub const NULL: u8 = 5;
    pub const UNIXTIME: u8 = 9;
    pub const ISO8601: u8 = 10;
    pub const BOOLEAN: u8 = 11;
}

/// The CLUSTER request format whose SERVERS response carries each node's role.
pub const CLUSTER_FORMAT: u64 = 1;

/// The DESCRIBE request format this crate speaks.
pub const DESCRIBE_FORMAT: u64 = 0;

/// Well-known FAILURE codes.
pub mod failure_code {
    /// SQLite's generic error (a bad SQL statement, a constraint, ...).
    pub const SQL_ERROR: u64 = 1;
    /// `SQLITE_BUSY`: also "a configuration change is already in progress"; retry.
    pub const BUSY: u64 = 5;
    /// `SQLITE_IOERR_NOT_LEADER`: this node is not the leader; rediscover and retry.
    pub const NOT_LEADER: u64 = 10250;
    /// `SQLITE_IOERR_LEADERSHIP_LOST`: leadership was lost mid-request; a write may still
    /// have been committed, so it must not be sent again blindly.
    pub const LEADERSHIP_LOST: u64 = 10506;
}

/// One SQL value, as a parameter or in a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Integer(i64),
    Float(f64),
    Text(String),
    Blob(Vec<u8>),
    Null,
    /// Seconds since the Unix epoch, for an integer in a column declared as a date/time.
    /// libdqlite 1.11 refuses this type code in parameters; the client sends it as an integer.
    UnixTime(i64),
    /// An ISO-8601 date/time string, for text in a column declared as a date/time. A NULL in
    /// such a column arrives as an empty string (the client reads it as `Null`).
    Iso8601(String),
    /// A value in a column declared `BOOLEAN`: any non-zero integer reads as `true`.
    /// libdqlite 1.11 sends a NULL in such a column as `false`.
    Boolean(bool),
}

impl Value {
    /// The value's type code on the wire.
    pub fn type_code(&self) -> u8 {
        match self {
            Value::Integer(_) => value_type::INTEGER,
            Value::Float(_) => value_type::FLOAT,
            Value::Text(_) => value_type::TEXT,
            Value::Blob(_) => value_type::BLOB,
            Value::Null => value_type::NULL,
            Value::UnixTime(_) => value_type::UNIXTIME,
            Value::Iso8601(_) => value_type::ISO8601,
            Value::Boolean(_) => value_type::BOOLEAN,
        }
    }

    /// The integer, for `Integer`, `UnixTime` and `Boolean` values.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Integer(v) | Value::UnixTime(v) => Some(*v),
            Value::Boolean(v) => Some(i64::from(*v)),
            _ => None,
        }
    }

    /// The text, for `Text` and `Iso8601` values.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(v) | Value::Iso8601(v) => Some(v),
            _ => None,
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Integer(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Boolean(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Blob(v.to_vec())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// A request from a client to a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Ask a node which node it believes is the leader.
    Leader,
    /// Register the client's id (optional; nodes do not require it).
    Client { id: u64 },
    /// Open a database on the node; answered by `Db`.
    Open {
        name: String,
        flags: u64,
        vfs: String,
    },
    /// Run SQL that returns no rows; answered by `Result`.
    ExecSql {
        db: u32,
        sql: String,
        params: Vec<Value>,
    },
    /// Run SQL that returns rows; answered by one or more `Rows`.
    QuerySql {
        db: u32,
        sql: String,
        params: Vec<Value>,
    },
    /// Stop a query whose rows are still arriving; answered by `Empty`.
    Interrupt { db: u32 },
    /// Add a node to the configuration as a spare.
    Add { id: u64, address: String },
    /// Change a node's role; answered once the node has caught up.
    Assign { id: u64, role: NodeRole },
    /// Remove a node from the configuration.
    Remove { id: u64 },
    /// Ask for the files of a database; answered by `Files`.
    Dump { name: String },
    /// Ask for the configuration (format 1, with roles); answered by `Servers`.
    Cluster,
    /// Hand leadership to another voter.
    Transfer { id: u64 },
    /// Ask for a node's failure domain and weight; answered by `Metadata`.
    Describe,
    /// Set the weight of the node the request is sent to.
    Weight { weight: u64 },
}

/// A response from a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// The request failed: a SQLite or dqlite error code and its message.
    Failure {
        code: u64,
        message: String,
    },
    /// The leader as this node knows it; id 0 and an empty address when it knows none.
    Server {
        id: u64,
        address: String,
    },
    Welcome {
        heartbeat_timeout: u64,
    },
    /// The cluster configuration.
    Servers(Vec<NodeInfo>),
    Db {
        id: u32,
    },
    Result {
        last_insert_id: u64,
        rows_affected: u64,
    },
    /// One batch of a query's rows.
    Rows(RowsBatch),
    Empty,
    Files(Vec<File>),
    Metadata {
        failure_domain: u64,
        weight: u64,
    },
}

/// One ROWS message: the column names, some rows, and whether another batch follows.
#[derive(Debug, Clone, PartialEq)]
pub struct RowsBatch {
    pub columns: Vec<String>,
    /// Each row has exactly one value per column.
    pub rows: Vec<Vec<Value>>,
    /// `true` when the batch ended with the "more rows" marker: another ROWS message follows.
    pub more: bool,
}

/// One file of a database dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub name: String,
    pub data: Vec<u8>,
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("a row has {values} values but the batch has {columns} columns")]
    RowWidth { columns: usize, values: usize },
    #[error("rows cannot be sent for a result without columns")]
    RowsWithoutColumns,
    #[error("{count} parameters exceed the protocol's limit")]
    TooManyParams { count: usize },
    #[error("a message body of {bytes} bytes exceeds the protocol's limit")]
    BodyTooLarge { bytes: usize },
    #[error("text contains a NUL byte, which the protocol cannot carry")]
    NulInText,
}

#[cfg(test)]
mod tests;
