//! Dqlite for Rust: a safe node over libdqlite, the wire protocol, an async client and the
//! cluster application layer.
//!
//! - `node` (with the private `ffi`): one libdqlite node in this process. The only `unsafe`
//!   in the workspace lives in `ffi`.
//! - `wire`: encode and decode protocol-version-1 messages. No IO.
//! - `client`: a tokio client over `wire`: leader discovery, SQL, cluster membership.
//! - `app`: what an application needs: bootstrap, join, restart, role management,
//!   hand-over, offline recovery.
//! - `tls`: mutual TLS configurations (one CA, one certificate) for nodes and clients.
#![deny(unsafe_code)]

use std::fmt;

/// A node's role in the cluster, with Dqlite's wire codes (raft's own codes differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeRole {
    /// Votes in elections and replicates every entry.
    Voter,
    /// Replicates every entry without voting; promoted first when a voter goes.
    StandBy,
    /// Neither votes nor replicates.
    Spare,
}

impl NodeRole {
    /// The role's code on the wire and in `dqlite_node_info_ext`.
    pub fn code(self) -> u64 {
        match self {
            NodeRole::Voter => 0,
            NodeRole::StandBy => 1,
            NodeRole::Spare => 2,
        }
    }

    /// The role for a wire code, `None` for an unknown one.
    pub fn from_code(code: u64) -> Option<Self> {
        match code {
            0 => Some(NodeRole::Voter),
            1 => Some(NodeRole::StandBy),
            2 => Some(NodeRole::Spare),
            _ => None,
        }
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeRole::Voter => "voter",
            NodeRole::StandBy => "stand-by",
            NodeRole::Spare => "spare",
        })
    }
}

/// One member of a cluster configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeInfo {
    /// The raft node id (never 0; 1 only for the bootstrapping node).
    pub id: u64,
    /// Where the node listens: `ip:port` or `@abstract-socket`.
    pub address: String,
    pub role: NodeRole,
}

pub mod app;
pub mod client;
#[allow(unsafe_code)]
mod ffi;
pub mod node;
pub mod tls;
pub mod wire;

/// The error and its causes on one line (`a: b: c`), for errors kept as text: logs, statuses
/// and answers. The one such formatter of the dqlite, dbaccessor and agent crates.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
