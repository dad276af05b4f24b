//! The persisted member list (`cluster.yaml`, go-dqlite's node store shape): where a
//! restarting node looks for the cluster when its peers are not configured any more.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{NodeInfo, NodeRole};

/// The member list file in the data dir, named as go-dqlite's.
pub const CLUSTER_FILE: &str = "cluster.yaml";

/// Reading or writing the member list failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read the member list {path:?}")]
    Read { path: PathBuf, source: io::Error },
    #[error("malformed member list {path:?}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("cannot write the member list {path:?}")]
    Write { path: PathBuf, source: io::Error },
}

/// One entry, field names as go-dqlite's `client.NodeInfo` spells them.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    #[serde(rename = "ID", default)]
    id: u64,
    #[serde(rename = "Address")]
    address: String,
    #[serde(rename = "Role", default)]
    role: u64,
}

/// Reads the member list in `data_dir`; an empty list when there is none.
pub fn load(data_dir: &Path) -> Result<Vec<NodeInfo>, StoreError> {
    let path = data_dir.join(CLUSTER_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(StoreError::Read { path, source }),
    };
    parse(&text).map_err(|reason| StoreError::Parse { path, reason })
}

/// Persists the member list in `data_dir` atomically (temporary file, fsync, rename).
pub fn save(data_dir: &Path, members: &[NodeInfo]) -> Result<(), StoreError> {
    let path = data_dir.join(CLUSTER_FILE);
    let temporary = data_dir.join(format!(".{CLUSTER_FILE}.tmp"));
    let write = || -> io::Result<()> {
        let mut file = File::create(&temporary)?;
        file.write_all(render(members).as_bytes())?;
        file.sync_all()?;
        fs::rename(&temporary, &path)
    };
    write().map_err(|source| StoreError::Write { path, source })
}

/// Parses a member list. An unknown role code reads as spare: the list only serves to find
/// the cluster, and the cluster itself says who is what. Pure.
pub fn parse(text: &str) -> Result<Vec<NodeInfo>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let entries: Vec<Entry> = serde_yaml_ng::from_str(text).map_err(|error| error.to_string())?;
    Ok(entries
        .into_iter()
        .map(|entry| NodeInfo {
            id: entry.id,
            address: entry.address,
            role: NodeRole::from_code(entry.role).unwrap_or(NodeRole::Spare),
        })
        .collect())
}

/// Renders a member list. Pure.
pub fn render(members: &[NodeInfo]) -> String {
    let entries: Vec<Entry> = members
        .iter()
        .map(|m| Entry {
            id: m.id,
            address: m.address.clone(),
            role: m.role.code(),
        })
        .collect();
    serde_yaml_ng::to_string(&entries).expect("a list of integers and strings always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_list_round_trips_and_reads_go_dqlite_files() {
        let members = vec![
            NodeInfo {
                id: 1,
                address: "127.0.0.1:9001".to_owned(),
                role: NodeRole::Voter,
            },
            NodeInfo {
                id: 77,
                address: "@dqlite-77".to_owned(),
                role: NodeRole::StandBy,
            },
        ];
        assert_eq!(parse(&render(&members)), Ok(members));
        // What go-dqlite writes at a joining node's first start: addresses only.
        let go = "- Address: 10.0.0.1:9001\n- Address: 10.0.0.2:9001\n";
        let parsed = parse(go).expect("go-dqlite's seed list parses");
        assert_eq!(
            parsed
                .iter()
                .map(|m| m.address.as_str())
                .collect::<Vec<_>>(),
            ["10.0.0.1:9001", "10.0.0.2:9001"]
        );
        let go_full = "- ID: 3297041220608546238\n  Address: 127.0.0.1:9001\n  Role: 0\n";
        assert_eq!(
            parse(go_full),
            Ok(vec![NodeInfo {
                id: 3297041220608546238,
                address: "127.0.0.1:9001".to_owned(),
                role: NodeRole::Voter
            }])
        );
        assert_eq!(parse(""), Ok(Vec::new()));
        assert!(parse("{not: a list}").is_err());
    }
}
