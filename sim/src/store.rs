//! The state file: one JSON document shared by the runner and every hook-tool process,
//! guarded by an exclusive lock on a sidecar `<state>.lock` file (the state itself is replaced
//! by rename, so a lock on it would be lost with the old inode).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::model::State;

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open lock file {path}: {source}")]
    OpenLock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not a valid model: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A handle on a state file.
#[derive(Debug, Clone)]
pub struct Store {
    /// The JSON state file.
    path: PathBuf,
}

impl Store {
    /// A store for the state file at `path` (which need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state under the lock.
    pub fn load(&self) -> Result<State, StoreError> {
        let _lock = self.lock()?;
        self.read()
    }

    /// Replaces the state under the lock.
    pub fn save(&self, state: &State) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        self.write(state)
    }

    /// Reads, changes and writes the state while holding the lock, so that concurrent tool
    /// processes never lose each other's changes. The state is written even when `change`
    /// returns an error value, since a failed tool call is still recorded.
    pub fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> Result<T, StoreError> {
        let _lock = self.lock()?;
        let mut state = self.read()?;
        let result = change(&mut state);
        self.write(&state)?;
        Ok(result)
    }

    fn lock(&self) -> Result<File, StoreError> {
        let mut lock_path = self.path.clone().into_os_string();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StoreError::OpenLock {
                path: lock_path.clone(),
                source,
            })?;
        file.lock().map_err(|source| StoreError::Lock {
            path: lock_path,
            source,
        })?;
        // The lock is released when the returned file is dropped.
        Ok(file)
    }

    fn read(&self) -> Result<State, StoreError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(source) => {
                return Err(StoreError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        serde_json::from_str(&text).map_err(|source| StoreError::Parse {
            path: self.path.clone(),
            source,
        })
    }

    fn write(&self, state: &State) -> Result<(), StoreError> {
        let write_error = |source| StoreError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(write_error)?;
        // Compact, not pretty: every tool call of every running hook reads and rewrites the
        // whole file under the lock, so its size is time every other hook waits.
        let text = serde_json::to_string(state).expect("the model is plain serde data");
        temp.write_all(text.as_bytes()).map_err(write_error)?;
        temp.persist(&self.path).map_err(|e| write_error(e.error))?;
        Ok(())
    }
}
