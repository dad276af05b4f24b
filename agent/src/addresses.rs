//! The API address updater: keeps `apiaddresses` in an agent's `agent.conf` equal to the
//! addresses agents may use ([`controller_contract::agentaddr::select_for_agents`]: usable
//! scopes, cloud-local first, only `juju-mgmt-space`'s when that leaves some).
//!
//! A controller's updater follows its own API server's address watch in process (the
//! `watch` the server fills); a machine agent's runs on its API connection (see
//! [`crate::apicaller`]). Both write through [`apply`]: an answer that leaves no address
//! writes nothing (an agent never loses its way to the controllers), an unchanged list is
//! not written, and a write is atomic (temp file in the same dir, mode 0600, fsync, rename,
//! fsync of the dir) with every other key of the file kept.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use controller_contract::agentaddr::{select_for_agents, with_api_addresses, API_ADDRESSES_KEY};
use controller_contract::api::ApiAddressesResult;
use tokio::sync::watch;

use crate::host::{Stop, WorkerSpec};

/// The controller's updater worker's name.
pub const NAME: &str = "api-address-updater";

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The file now lists these addresses.
    Written(Vec<String>),
    /// The file already listed them.
    Unchanged,
    /// The answer left no usable address: the file keeps what it had.
    KeptEmpty,
}

/// The `apiaddresses` list of `text`, if it has one that is a list of strings.
pub fn listed(text: &str) -> Option<Vec<String>> {
    let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).ok()?;
    document
        .get(API_ADDRESSES_KEY)?
        .as_sequence()?
        .iter()
        .map(|item| item.as_str().map(str::to_owned))
        .collect()
}

/// Chooses the agents' addresses from `result` and writes them into `path` when they differ
/// from what it lists (creating the file when it is missing).
pub fn apply(path: &Path, result: &ApiAddressesResult) -> anyhow::Result<Applied> {
    let selection = select_for_agents(&result.servers, &result.mgmt_space);
    if let Some(warning) = &selection.warning {
        log::warn!("{warning}");
    }
    if selection.addresses.is_empty() {
        log::warn!(
            "the controllers' address list (version {}) leaves no address agents may use: keeping {}",
            result.version,
            path.display()
        );
        return Ok(Applied::KeptEmpty);
    }
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    };
    if listed(&text).as_ref() == Some(&selection.addresses) {
        return Ok(Applied::Unchanged);
    }
    let new = with_api_addresses(&text, &selection.addresses)
        .map_err(|e| anyhow::anyhow!("cannot update {}: {e}", path.display()))?;
    write_atomically(path, new.as_bytes())?;
    log::info!(
        "wrote {} API addresses into {}: {}",
        selection.addresses.len(),
        path.display(),
        selection.addresses.join(" ")
    );
    Ok(Applied::Written(selection.addresses))
}

/// Replaces `path` with `bytes`: a temp file beside it (mode 0600), fsynced, renamed over
/// it, the dir fsynced. A reader sees the old file or the new one, never a part.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{} has no dir", path.display()))?;
    fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp: PathBuf = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// A controller's updater: every new value of its API server's address watch is applied to
/// `conf` (the controller's `agent.conf`).
pub fn controller_worker(
    conf: PathBuf,
    addresses: watch::Receiver<Option<ApiAddressesResult>>,
) -> WorkerSpec {
    WorkerSpec::new(NAME, &[], move |stop| {
        run(conf.clone(), addresses.clone(), stop)
    })
}

async fn run(
    conf: PathBuf,
    mut addresses: watch::Receiver<Option<ApiAddressesResult>>,
    mut stop: Stop,
) -> anyhow::Result<()> {
    loop {
        let current = addresses.borrow_and_update().clone();
        if let Some(current) = current {
            apply(&conf, &current)?;
        }
        tokio::select! {
            changed = addresses.changed() => if changed.is_err() {
                // The sender lives as long as the agent: this is its end.
                return Ok(());
            },
            () = stop.requested() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use controller_contract::api::HostPort;

    fn result(values: &[(&str, &str)], mgmt_space: &str) -> ApiAddressesResult {
        let servers = values
            .iter()
            .map(|(value, space)| {
                vec![HostPort {
                    value: (*value).into(),
                    kind: "ipv4".into(),
                    scope: "local-cloud".into(),
                    space_name: (*space).into(),
                    port: 17070,
                }]
            })
            .collect();
        ApiAddressesResult {
            version: 1,
            servers,
            mgmt_space: mgmt_space.into(),
        }
    }

    #[test]
    fn apply_writes_keeps_keys_and_never_empties() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("agent.conf");
        fs::write(
            &path,
            "tag: machine-4\ncacert: x\napipassword: p\napiaddresses:\n- 10.0.0.1:17070\n",
        )
        .expect("write");
        let two = result(&[("10.0.0.1", "alpha"), ("10.0.0.2", "alpha")], "");
        assert_eq!(
            apply(&path, &two).expect("apply"),
            Applied::Written(vec!["10.0.0.1:17070".into(), "10.0.0.2:17070".into()])
        );
        assert_eq!(apply(&path, &two).expect("apply"), Applied::Unchanged);
        let text = fs::read_to_string(&path).expect("read");
        assert!(
            text.contains("tag: machine-4") && text.contains("apipassword: p"),
            "{text}"
        );
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Nothing usable: the file keeps its list.
        let loopback = result(&[("127.0.0.1", "")], "");
        assert_eq!(apply(&path, &loopback).expect("apply"), Applied::KeptEmpty);
        let empty = result(&[], "");
        assert_eq!(apply(&path, &empty).expect("apply"), Applied::KeptEmpty);
        assert_eq!(
            listed(&fs::read_to_string(&path).expect("read")),
            Some(vec!["10.0.0.1:17070".into(), "10.0.0.2:17070".into()])
        );
        // No temp file is left behind.
        let names: Vec<String> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["agent.conf"]);
    }

    #[test]
    fn a_missing_file_is_created() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sub").join("agent.conf");
        let one = result(&[("10.0.0.7", "")], "");
        assert!(matches!(
            apply(&path, &one).expect("apply"),
            Applied::Written(_)
        ));
        assert_eq!(
            listed(&fs::read_to_string(&path).expect("read")),
            Some(vec!["10.0.0.7:17070".into()])
        );
    }
}
