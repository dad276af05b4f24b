//! The exclusive lock on a node's data dir: libdqlite does not stop two nodes (in this
//! process or another) from writing one raft log, so the crate does.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use super::NodeError;

/// The lock file inside the data dir. It stays on disk after the node ends; only the lock
/// on it matters.
pub const LOCK_FILE: &str = "dqlite-node.lock";

/// Holds an exclusive `flock` on the data dir's lock file until dropped. `flock` locks
/// belong to the open file, so a second opener fails even in the same process, and the
/// kernel releases the lock when the process dies however it dies.
#[derive(Debug)]
pub(crate) struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock without waiting: a held lock means a live node owns the dir.
    pub(crate) fn acquire(data_dir: &Path) -> Result<DataDirLock, NodeError> {
        let path = data_dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| NodeError::OpenLock {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(NodeError::DataDirLocked {
                data_dir: data_dir.to_owned(),
            }),
            Err(TryLockError::Error(source)) => Err(NodeError::Lock { path, source }),
        }
    }
}
