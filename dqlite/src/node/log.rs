//! The last log position of a stopped node, read from raft's on-disk files (libraft 0.15's
//! uv layout), for choosing the most up-to-date member before an offline recovery.

use std::path::Path;

use super::NodeError;

/// Where a node's raft log ends: the term and index of its last entry. Positions order the
/// way raft's election rule does (term first, then index), so the greatest position is the
/// most up-to-date log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogPosition {
    /// The term of the last entry (0 for an empty log).
    pub term: u64,
    /// The index of the last entry (0 for an empty log).
    pub index: u64,
}

/// A raft file name in the data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentName {
    /// `<first>-<last>`: a closed segment holding entries `first..=last`.
    Closed { first: u64, last: u64 },
    /// `open-<counter>`: a segment being written, its entries found only by reading it.
    Open { counter: u64 },
    /// `snapshot-<term>-<index>-<timestamp>` (the `.meta` file beside it names the same).
    Snapshot { term: u64, index: u64 },
}

/// Recognises a raft file name, `None` for any other file (metadata, `info.yaml`, ...). Pure.
pub fn parse_segment_name(name: &str) -> Option<SegmentName> {
    let _ = name;
    None
}

/// Reads the log position of the stopped node in `data_dir`.
pub(crate) fn read_log_position(data_dir: &Path) -> Result<LogPosition, NodeError> {
    let _ = data_dir;
    Ok(LogPosition::default())
}
