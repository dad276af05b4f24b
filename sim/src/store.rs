//! The state file: one JSON document shared by the runner and every hook-tool process,
//! guarded by a lock on a sidecar `<state>.lock` file (the state itself is replaced by
//! rename, so a lock on it would be lost with the old inode): exclusive to change the state,
//! shared for a tool that only reads it. Beside it, `<state>.calls` logs every hook-tool
//! call, one JSON line each, appended (`O_APPEND`, one write per call) under either lock, so
//! that recording a call never rewrites the state, and trimmed under the exclusive lock.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::model::{State, ToolCall};

/// A calls log line is at most about this long on average; the log is trimmed once it is
/// past twice the kept calls' worth of bytes.
const CALL_LINE_BYTES: u64 = 256;

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

    /// Reads the state, with the calls log, under the shared lock (it changes nothing).
    pub fn load(&self) -> Result<State, StoreError> {
        let _lock = self.lock(Lock::Shared)?;
        let mut state = self.read()?;
        state.calls = self.read_calls()?;
        Ok(state)
    }

    /// Replaces the state under the lock (its `calls` are the log's, and are not written).
    pub fn save(&self, state: &State) -> Result<(), StoreError> {
        let _lock = self.lock(Lock::Exclusive)?;
        self.write(state)
    }

    /// Reads, changes and writes the state while holding the lock, so that concurrent tool
    /// processes never lose each other's changes. The state is written even when `change`
    /// returns an error value, since a failed tool call is still recorded. `change` sees no
    /// earlier calls; the calls it records are appended to the log.
    pub fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> Result<T, StoreError> {
        let _lock = self.lock(Lock::Exclusive)?;
        let mut state = self.read()?;
        let result = change(&mut state);
        self.write(&state)?;
        self.append_calls(&state.calls)?;
        Ok(result)
    }

    /// Runs `look` on the state under a shared lock and never writes the state: for the
    /// tools that only read it, which then run side by side. The calls `look` records are
    /// appended to the log; any other change it makes is dropped.
    pub fn read_only<T>(&self, look: impl FnOnce(&mut State) -> T) -> Result<T, StoreError> {
        let _lock = self.lock(Lock::Shared)?;
        let mut state = self.read()?;
        let result = look(&mut state);
        self.append_calls(&state.calls)?;
        Ok(result)
    }

    /// Keeps only the last `keep` calls of the log once it has grown past about twice that.
    pub fn trim_calls(&self, keep: usize) -> Result<(), StoreError> {
        let _lock = self.lock(Lock::Exclusive)?;
        let path = self.calls_path();
        let size = match fs::metadata(&path) {
            Ok(metadata) => metadata.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        if size <= 2 * keep as u64 * CALL_LINE_BYTES {
            return Ok(());
        }
        let calls = self.read_calls()?;
        let kept = &calls[calls.len().saturating_sub(keep)..];
        let text: String = kept.iter().map(call_line).collect();
        replace(&path, text.as_bytes())
    }

    /// `<state>.calls`.
    fn calls_path(&self) -> PathBuf {
        let mut path = self.path.clone().into_os_string();
        path.push(".calls");
        PathBuf::from(path)
    }

    /// The calls log, oldest first. A line that does not parse (a tool killed in the middle
    /// of its one write, or a hand edit) is skipped: it is a record, not the model.
    fn read_calls(&self) -> Result<Vec<ToolCall>, StoreError> {
        let path = self.calls_path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect())
    }

    /// Appends `calls` to the log in one write (so that concurrent appenders never
    /// interleave within a line).
    fn append_calls(&self, calls: &[ToolCall]) -> Result<(), StoreError> {
        if calls.is_empty() {
            return Ok(());
        }
        let text: String = calls.iter().map(call_line).collect();
        let path = self.calls_path();
        let write_error = |source| StoreError::Write {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(write_error)?;
        file.write_all(text.as_bytes()).map_err(write_error)
    }

    fn lock(&self, kind: Lock) -> Result<File, StoreError> {
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
        match kind {
            Lock::Exclusive => file.lock(),
            Lock::Shared => file.lock_shared(),
        }
        .map_err(|source| StoreError::Lock {
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
        // Compact, not pretty: every changing tool call of every running hook reads and
        // rewrites the whole file under the lock, so its size is time every other hook waits.
        let text = serde_json::to_string(state).expect("the model is plain serde data");
        replace(&self.path, text.as_bytes())
    }
}

/// Replaces `path` with `bytes` through a temp file beside it and a rename.
fn replace(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let write_error = |source| StoreError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(write_error)?;
    temp.write_all(bytes).map_err(write_error)?;
    temp.persist(path).map_err(|e| write_error(e.error))?;
    Ok(())
}

/// Which lock a store operation holds.
#[derive(Debug, Clone, Copy)]
enum Lock {
    Exclusive,
    Shared,
}

/// One line of the calls log.
fn call_line(call: &ToolCall) -> String {
    let mut line = serde_json::to_string(call).expect("a tool call is plain serde data");
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(n: usize) -> ToolCall {
        ToolCall {
            context_id: format!("unit/0-{n}"),
            tool: "relation-get".into(),
            args: vec![n.to_string()],
            exit_code: 0,
        }
    }

    #[test]
    fn calls_go_to_the_log_not_the_state_and_come_back_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::new(dir.path().join("state.json"));
        store
            .update(|state| {
                state.next_id = 7;
                state.calls.push(call(1));
            })
            .expect("update");
        store
            .read_only(|state| state.calls.push(call(2)))
            .expect("read");
        let state = store.load().expect("load");
        assert_eq!(state.next_id, 7);
        assert_eq!(state.calls, vec![call(1), call(2)]);
        let text = fs::read_to_string(store.path()).expect("state file");
        assert!(!text.contains("relation-get"), "{text}");
    }

    #[test]
    fn a_read_only_look_never_writes_the_state() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::new(dir.path().join("state.json"));
        store.update(|state| state.next_id = 3).expect("update");
        let before = fs::read(store.path()).expect("state file");
        let seen = store
            .read_only(|state| {
                state.next_id = 99;
                state.calls.push(call(1));
                state.next_id
            })
            .expect("read");
        assert_eq!(seen, 99, "the look sees its own change");
        assert_eq!(fs::read(store.path()).expect("state file"), before);
        let state = store.load().expect("load");
        assert_eq!((state.next_id, state.calls.len()), (3, 1));
    }

    #[test]
    fn a_torn_or_foreign_line_of_the_log_is_skipped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::new(dir.path().join("state.json"));
        store
            .update(|state| state.calls.push(call(1)))
            .expect("update");
        let mut log = OpenOptions::new()
            .append(true)
            .open(store.calls_path())
            .expect("log");
        log.write_all(b"{\"context_id\":\"cut sh\nnot json\n")
            .expect("append");
        store
            .update(|state| state.calls.push(call(2)))
            .expect("update");
        assert_eq!(store.load().expect("load").calls, vec![call(1), call(2)]);
    }

    #[test]
    fn the_log_is_trimmed_to_the_last_calls_once_it_has_grown() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::new(dir.path().join("state.json"));
        store
            .update(|state| state.calls.extend((0..10).map(call)))
            .expect("update");
        store.trim_calls(8).expect("trim");
        assert_eq!(store.load().expect("load").calls.len(), 10, "not grown yet");
        store
            .update(|state| state.calls.extend((10..100).map(call)))
            .expect("update");
        store.trim_calls(8).expect("trim");
        assert_eq!(
            store.load().expect("load").calls,
            (92..100).map(call).collect::<Vec<_>>()
        );
    }
}
