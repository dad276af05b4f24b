//! `<data-dir>/lease-status.json`: the leases as this controller's agent last read them from
//! the controller database, written by the agent's `lease-status` worker and read by the
//! charm's `cluster-status` action (which cannot reach the database itself).

use serde::{Deserialize, Serialize};

/// The file's largest accepted size: a reader refuses more.
pub const MAX_BYTES: u64 = 256 * 1024;

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// This controller's holder name (`controller-<id>`).
    pub holder: String,
    /// The grant this controller runs its singular workers under (`holder@start`), if any.
    pub running_singular_workers: Option<String>,
    /// Every lease row, as read.
    pub leases: Vec<LeaseEntry>,
    /// The database's clock at the read (milliseconds since the epoch).
    pub read_at_ms: i64,
    /// This machine's wall clock when the file was written, to tell how old it is.
    pub written_unix_ms: i64,
}

/// One lease row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseEntry {
    /// `singular-controller`, ...
    pub kind: String,
    pub model: String,
    pub name: String,
    pub holder: String,
    /// The grant's start (database clock); with the holder, its token.
    pub start_ms: i64,
    pub expiry_ms: i64,
    pub pinned: bool,
}

impl LeaseEntry {
    /// Milliseconds from the read to the expiry (negative: had expired).
    pub fn remaining_ms(&self, read_at_ms: i64) -> i64 {
        self.expiry_ms - read_at_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_round_trips_through_json() {
        let status = LeaseStatus {
            holder: "controller-1".into(),
            running_singular_workers: Some("controller-1@1700000000000".into()),
            leases: vec![LeaseEntry {
                kind: "singular-controller".into(),
                model: "controller".into(),
                name: "controller".into(),
                holder: "controller-1".into(),
                start_ms: 1_700_000_000_000,
                expiry_ms: 1_700_000_060_000,
                pinned: false,
            }],
            read_at_ms: 1_700_000_010_000,
            written_unix_ms: 1_700_000_010_005,
        };
        let json = serde_json::to_string(&status).expect("json");
        assert_eq!(
            serde_json::from_str::<LeaseStatus>(&json).expect("parse"),
            status
        );
        assert_eq!(status.leases[0].remaining_ms(status.read_at_ms), 50_000);
    }
}
