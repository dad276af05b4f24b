//! The node's persisted identity (`info.yaml`): libdqlite stores neither the node id nor
//! its address, yet both must survive a restart.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::NodeError;
use crate::NodeRole;

/// The identity file in the data dir, named and shaped as go-dqlite's (`ID`, `Address`,
/// `Role`) so that the `dqlite` shell and people can read it.
pub const IDENTITY_FILE: &str = "info.yaml";

/// Who a data dir belongs to: the raft node id and the address its peers dial.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeIdentity {
    pub id: u64,
    pub address: String,
}

/// The YAML document, field names as go-dqlite's `client.NodeInfo` spells them.
#[derive(Debug, Serialize, Deserialize)]
struct InfoYaml {
    #[serde(rename = "ID")]
    id: u64,
    #[serde(rename = "Address")]
    address: String,
    /// Written as voter (0), as go-dqlite does at a node's first start; ignored when read:
    /// the live role is the cluster's business, not this file's.
    #[serde(rename = "Role", default)]
    role: u64,
}

impl NodeIdentity {
    /// Reads the identity persisted in `data_dir`, `None` when there is none yet.
    pub fn load(data_dir: &Path) -> Result<Option<NodeIdentity>, NodeError> {
        let path = data_dir.join(IDENTITY_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(NodeError::ReadIdentity { path, source }),
        };
        Self::parse(&text)
            .map(Some)
            .map_err(|reason| NodeError::ParseIdentity { path, reason })
    }

    /// Persists the identity in `data_dir` atomically: a crash leaves the old file or the
    /// new one, never a torn one (write a temporary file, fsync it, rename it over, fsync
    /// the dir).
    pub fn save(&self, data_dir: &Path) -> Result<(), NodeError> {
        let path = data_dir.join(IDENTITY_FILE);
        let temporary = data_dir.join(format!(".{IDENTITY_FILE}.tmp"));
        let write = || -> io::Result<()> {
            let mut file = File::create(&temporary)?;
            file.write_all(self.render().as_bytes())?;
            file.sync_all()?;
            fs::rename(&temporary, &path)?;
            File::open(data_dir)?.sync_all()
        };
        write().map_err(|source| NodeError::WriteIdentity { path, source })
    }

    /// Parses an `info.yaml` document. Pure.
    pub fn parse(text: &str) -> Result<NodeIdentity, String> {
        let info: InfoYaml = serde_yaml_ng::from_str(text).map_err(|error| error.to_string())?;
        if info.id == 0 {
            return Err("ID is 0".to_owned());
        }
        if info.address.is_empty() {
            return Err("Address is empty".to_owned());
        }
        Ok(NodeIdentity {
            id: info.id,
            address: info.address,
        })
    }

    /// Renders the `info.yaml` document. Pure.
    pub fn render(&self) -> String {
        let info = InfoYaml {
            id: self.id,
            address: self.address.clone(),
            role: NodeRole::Voter.code(),
        };
        serde_yaml_ng::to_string(&info)
            .expect("a struct of two integers and a string always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_dqlite_documents() {
        let check = |text: &str, expected: Result<(u64, &str), &str>| {
            let actual = NodeIdentity::parse(text).map(|identity| (identity.id, identity.address));
            let expected = expected
                .map(|(id, address)| (id, address.to_owned()))
                .map_err(str::to_owned);
            match (&actual, &expected) {
                (Err(actual), Err(expected)) => {
                    assert!(actual.contains(expected.as_str()), "{actual} vs {expected}")
                }
                _ => assert_eq!(actual, expected, "{text}"),
            }
        };
        // As go-dqlite's app writes it (fields in its order).
        check(
            "Address: 127.0.0.1:9001\nID: 3297041220608546238\nRole: 0\n",
            Ok((3297041220608546238, "127.0.0.1:9001")),
        );
        check("ID: 1\nAddress: '@dqlite-1'\n", Ok((1, "@dqlite-1")));
        check("ID: 0\nAddress: 127.0.0.1:9001\n", Err("ID is 0"));
        check("ID: 2\nAddress: ''\n", Err("Address is empty"));
        check("Address: 127.0.0.1:9001\n", Err("missing field `ID`"));
        check("ID: -1\nAddress: x\n", Err("ID"));
        check("[not, a, map]", Err("invalid type"));
    }

    #[test]
    fn renders_what_it_parses() {
        let check = |identity: NodeIdentity, expected: &str| {
            let text = identity.render();
            assert_eq!(text, expected);
            assert_eq!(NodeIdentity::parse(&text), Ok(identity));
        };
        check(
            NodeIdentity {
                id: 1,
                address: "127.11.0.1:9001".to_owned(),
            },
            "ID: 1\nAddress: 127.11.0.1:9001\nRole: 0\n",
        );
        // `@` starts no plain YAML scalar: the address is quoted.
        check(
            NodeIdentity {
                id: u64::MAX,
                address: "@dqlite".to_owned(),
            },
            "ID: 18446744073709551615\nAddress: '@dqlite'\nRole: 0\n",
        );
    }

    #[test]
    fn saves_atomically_and_loads() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(NodeIdentity::load(dir.path()).expect("load"), None);
        let identity = NodeIdentity {
            id: 42,
            address: "127.11.0.1:9001".to_owned(),
        };
        identity.save(dir.path()).expect("save");
        identity.save(dir.path()).expect("save over");
        assert_eq!(
            NodeIdentity::load(dir.path()).expect("load"),
            Some(identity)
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, [IDENTITY_FILE]);
        fs::write(dir.path().join(IDENTITY_FILE), "ID: x").expect("corrupt");
        let error = NodeIdentity::load(dir.path()).expect_err("corrupt identity");
        assert!(
            error.to_string().starts_with("malformed node identity"),
            "{error}"
        );
    }
}
