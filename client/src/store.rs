//! The client's local store, in Juju's shape: `controllers.yaml` (per controller its UUID,
//! `api-endpoints` in the order they will be dialled, the CA certificate; and the current
//! controller) and `accounts.yaml` (per controller the user and password).
//!
//! Every write is atomic: a new file (mode 0600) in the same dir, written, fsynced, renamed
//! over the old one, and the dir fsynced, so a crash leaves the old file or the new one,
//! never a torn one. Updates read, change and write under an exclusive lock on a lock file,
//! so two clients do not lose each other's changes. A file that does not parse is an error
//! naming it; the store never replaces it with what it could make of it. Keys this code does
//! not know are kept as they were.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The controllers file's name (as Juju's).
pub const CONTROLLERS_FILE: &str = "controllers.yaml";
/// The accounts file's name (as Juju's).
pub const ACCOUNTS_FILE: &str = "accounts.yaml";
/// The lock file held while the store is read, changed and written.
const LOCK_FILE: &str = ".store.lock";

/// `controllers.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Controllers {
    /// Every controller this client knows, by the name the user gave it.
    #[serde(default)]
    pub controllers: BTreeMap<String, ControllerDetails>,
    /// The controller commands use when none is named.
    #[serde(
        rename = "current-controller",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub current_controller: Option<String>,
}

/// One controller in `controllers.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControllerDetails {
    /// The controller's UUID, as its login answers.
    #[serde(default)]
    pub uuid: String,
    /// `ip:port` addresses in dial order: the one that last worked first.
    #[serde(rename = "api-endpoints", default)]
    pub api_endpoints: Vec<String>,
    /// The controller CA's certificate (PEM): the only root the client trusts for it.
    #[serde(rename = "ca-cert", default)]
    pub ca_cert: String,
    /// How many controllers the last login reported.
    #[serde(rename = "controller-machine-count", default)]
    pub controller_machine_count: usize,
    /// Keys this code does not know (Juju's `cloud`, `agent-version`, ...), kept as read.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml_ng::Value>,
}

/// `accounts.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Accounts {
    /// The account per controller name.
    #[serde(default)]
    pub controllers: BTreeMap<String, Account>,
}

/// One controller's account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// The user name a login sends.
    pub user: String,
    /// The password a login sends (the file is 0600 for this).
    #[serde(default)]
    pub password: String,
    /// Keys this code does not know, kept as read.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml_ng::Value>,
}

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt (fix or remove it; it was left as it is): {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("cannot serialize {path}: {source}")]
    Serialize {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("controller {0:?} not found in the store")]
    NoController(String),
    #[error("no current controller in the store (log in first)")]
    NoCurrentController,
    #[error("no account for controller {0:?} in the store (log in first)")]
    NoAccount(String),
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The store in one dir (Juju's `$JUJU_DATA`).
#[derive(Debug, Clone)]
pub struct Store {
    /// Where `controllers.yaml`, `accounts.yaml` and the lock file live.
    pub dir: PathBuf,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn controllers_path(&self) -> PathBuf {
        self.dir.join(CONTROLLERS_FILE)
    }

    pub fn accounts_path(&self) -> PathBuf {
        self.dir.join(ACCOUNTS_FILE)
    }

    /// `controllers.yaml`; empty when there is none yet.
    pub fn controllers(&self) -> Result<Controllers, StoreError> {
        read_yaml(&self.controllers_path())
    }

    /// `accounts.yaml`; empty when there is none yet.
    pub fn accounts(&self) -> Result<Accounts, StoreError> {
        read_yaml(&self.accounts_path())
    }

    /// The details of `name`, or of the current controller.
    pub fn controller(
        &self,
        name: Option<&str>,
    ) -> Result<(String, ControllerDetails), StoreError> {
        let controllers = self.controllers()?;
        let name = match name {
            Some(name) => name.to_owned(),
            None => controllers
                .current_controller
                .clone()
                .ok_or(StoreError::NoCurrentController)?,
        };
        let details = controllers
            .controllers
            .get(&name)
            .cloned()
            .ok_or_else(|| StoreError::NoController(name.clone()))?;
        Ok((name, details))
    }

    /// The account for controller `name`.
    pub fn account(&self, name: &str) -> Result<Account, StoreError> {
        self.accounts()?
            .controllers
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::NoAccount(name.to_owned()))
    }

    /// Holds the store's lock while `change` edits `controllers.yaml`, then writes it
    /// atomically. A file that does not parse is not touched: the error says so.
    pub fn update_controllers<T>(
        &self,
        change: impl FnOnce(&mut Controllers) -> T,
    ) -> Result<T, StoreError> {
        let _lock = self.lock()?;
        let mut controllers = self.controllers()?;
        let result = change(&mut controllers);
        write_yaml(&self.controllers_path(), &controllers)?;
        Ok(result)
    }

    /// As [`Store::update_controllers`], for `accounts.yaml`.
    pub fn update_accounts<T>(
        &self,
        change: impl FnOnce(&mut Accounts) -> T,
    ) -> Result<T, StoreError> {
        let _lock = self.lock()?;
        let mut accounts = self.accounts()?;
        let result = change(&mut accounts);
        write_yaml(&self.accounts_path(), &accounts)?;
        Ok(result)
    }

    /// The store's exclusive lock (released when the file is dropped).
    fn lock(&self) -> Result<File, StoreError> {
        create_dir(&self.dir)?;
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io("open", &path))?;
        file.lock().map_err(io("lock", &path))?;
        Ok(file)
    }
}

/// Creates `dir` (0700) if it is missing.
fn create_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("create", dir))
}

fn read_yaml<T: Default + for<'de> Deserialize<'de>>(path: &Path) -> Result<T, StoreError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(T::default()),
        Err(source) => {
            return Err(StoreError::Io {
                action: "read",
                path: path.to_owned(),
                source,
            })
        }
    };
    // An empty file is what Juju reads as "nothing yet"; anything else must parse whole.
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    serde_yaml_ng::from_str(&text).map_err(|source| StoreError::Corrupt {
        path: path.to_owned(),
        source,
    })
}

fn write_yaml<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let text = serde_yaml_ng::to_string(value).map_err(|source| StoreError::Serialize {
        path: path.to_owned(),
        source,
    })?;
    write_atomic(path, text.as_bytes())
}

/// Replaces `path` with `bytes` atomically: a new file (0600, created exclusively) beside
/// it, written and fsynced, renamed over `path`, then the dir fsynced so the rename lasts.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_dir(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    // A temp file left by a crashed earlier run of this pid is ours to replace.
    let _ = std::fs::remove_file(&temp);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io("create", &temp))?;
        // The mode given at creation is masked by the umask; say it again.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io("chmod", &temp))?;
        file.write_all(bytes).map_err(io("write", &temp))?;
        file.sync_all().map_err(io("fsync", &temp))?;
        std::fs::rename(&temp, path).map_err(io("rename into place", path))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("file").permissions().mode() & 0o777
    }

    fn details(endpoints: &[&str]) -> ControllerDetails {
        ControllerDetails {
            uuid: "0e9a1f4c-0000-4000-8000-000000000000".into(),
            api_endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
            ca_cert: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            controller_machine_count: endpoints.len(),
            other: BTreeMap::new(),
        }
    }

    #[test]
    fn a_missing_or_empty_store_is_empty_and_writes_are_0600_and_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path().join("juju"));
        assert_eq!(store.controllers().expect("empty"), Controllers::default());
        store
            .update_controllers(|c| {
                c.controllers.insert(
                    "sim".into(),
                    details(&["10.0.0.10:17070", "10.0.0.11:17070"]),
                );
                c.current_controller = Some("sim".into());
            })
            .expect("written");
        store
            .update_accounts(|a| {
                a.controllers.insert(
                    "sim".into(),
                    Account {
                        user: "admin".into(),
                        password: "s3cret".into(),
                        other: BTreeMap::new(),
                    },
                );
            })
            .expect("written");
        assert_eq!(mode(&store.controllers_path()), 0o600);
        assert_eq!(mode(&store.accounts_path()), 0o600);
        assert_eq!(mode(&store.dir), 0o700);
        let (name, got) = store.controller(None).expect("current");
        assert_eq!(name, "sim");
        assert_eq!(got.api_endpoints, ["10.0.0.10:17070", "10.0.0.11:17070"]);
        assert_eq!(store.account("sim").expect("account").password, "s3cret");
        // Juju's key names, as Juju writes them.
        let text = std::fs::read_to_string(store.controllers_path()).expect("text");
        for key in [
            "controllers:",
            "sim:",
            "uuid:",
            "api-endpoints:",
            "ca-cert:",
            "current-controller: sim",
        ] {
            assert!(text.contains(key), "{key} missing from:\n{text}");
        }
        // No temp file is left behind.
        let names: Vec<String> = std::fs::read_dir(&store.dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        std::fs::write(store.accounts_path(), "").expect("emptied");
        assert_eq!(store.accounts().expect("empty"), Accounts::default());
    }

    #[test]
    fn unknown_keys_are_kept_through_an_update() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        std::fs::write(
            store.controllers_path(),
            "controllers:\n  sim:\n    uuid: u\n    api-endpoints: ['10.0.0.10:17070']\n    ca-cert: pem\n    cloud: lxd\n    agent-version: 4.0.0\ncurrent-controller: sim\n",
        )
        .expect("written");
        store
            .update_controllers(|c| {
                let sim = c.controllers.get_mut("sim").expect("sim");
                sim.api_endpoints.push("10.0.0.11:17070".into());
            })
            .expect("updated");
        let text = std::fs::read_to_string(store.controllers_path()).expect("text");
        assert!(text.contains("cloud: lxd"), "{text}");
        assert!(text.contains("agent-version: 4.0.0"), "{text}");
        assert!(text.contains("10.0.0.11:17070"), "{text}");
    }

    #[test]
    fn a_corrupt_or_torn_file_is_an_error_and_is_left_as_it_was() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        store
            .update_controllers(|c| {
                c.controllers
                    .insert("sim".into(), details(&["10.0.0.10:17070"]));
            })
            .expect("written");
        let whole = std::fs::read(store.controllers_path()).expect("bytes");
        for torn in [
            &whole[..whole.len() / 2],
            b"controllers: [not, a, map".as_slice(),
            b"\x00\x01\x02".as_slice(),
        ] {
            std::fs::write(store.controllers_path(), torn).expect("torn");
            let error = store.controllers().expect_err("corrupt").to_string();
            assert!(error.contains("controllers.yaml is corrupt"), "{error}");
            let error = store
                .update_controllers(|c| c.controllers.clear())
                .expect_err("no update over a corrupt file")
                .to_string();
            assert!(error.contains("is corrupt"), "{error}");
            assert_eq!(
                std::fs::read(store.controllers_path()).expect("bytes"),
                torn
            );
        }
    }

    #[test]
    fn an_atomic_write_replaces_the_whole_file_or_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("controllers.yaml");
        std::fs::write(&path, "old").expect("old");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_atomic(&path, b"new").expect("written");
        assert_eq!(std::fs::read_to_string(&path).expect("text"), "new");
        assert_eq!(
            mode(&path),
            0o600,
            "the new file is 0600 whatever the old one was"
        );
        // The rename's target is a dir: the write fails and the temp file goes.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).expect("dir");
        std::fs::write(blocked.join("file"), "x").expect("file");
        assert!(write_atomic(&blocked, b"new").is_err());
        assert!(blocked.is_dir());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn concurrent_updates_lose_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for j in 0..10 {
                        store
                            .update_controllers(|c| {
                                c.controllers
                                    .insert(format!("c{i}-{j}"), details(&["10.0.0.10:17070"]));
                            })
                            .expect("updated");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        assert_eq!(store.controllers().expect("read").controllers.len(), 80);
    }
}
