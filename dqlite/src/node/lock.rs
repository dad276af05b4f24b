//! The exclusive lock on a node's data dir: libdqlite does not stop two nodes (in this
//! process or another) from writing one raft log, so the crate does.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::NodeError;

/// The lock file inside the data dir. It stays on disk after the node ends; only the lock
/// on it matters.
pub const LOCK_FILE: &str = "dqlite-node.lock";

/// How long a held lock is retried before it counts as another node's. A process that
/// forks (any thread spawning a child) shares the lock's open file with the child until the
/// child execs, so for a moment after a node drops its lock the lock can still look held;
/// a live node holds it far longer.
pub(crate) const TRANSIENT_HOLD: Duration = Duration::from_millis(250);

/// Holds an exclusive `flock` on the data dir's lock file until dropped. `flock` locks
/// belong to the open file, so a second opener fails even in the same process, and the
/// kernel releases the lock when the process dies however it dies.
#[derive(Debug)]
pub(crate) struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock, waiting at most [`TRANSIENT_HOLD`]: a lock held longer means a live
    /// node owns the dir.
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
        let deadline = Instant::now() + TRANSIENT_HOLD;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(DataDirLock { _file: file }),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(5));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(NodeError::DataDirLocked {
                        data_dir: data_dir.to_owned(),
                    })
                }
                Err(TryLockError::Error(source)) => return Err(NodeError::Lock { path, source }),
            }
        }
    }
}
