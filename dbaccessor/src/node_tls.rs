//! Where the Dqlite node's TLS comes from: the controller CA in the controller's dir, a
//! node certificate per start naming the node's IP, and one client certificate per
//! process for the dbaccessor's own requests (probes, progress reports) and the agent's
//! workers.
//!
//! Files, in `<data-dir>/agents/controller-<id>/` (the CA's dir, see [`crate::ca`]):
//! `ca.pem` and `ca.key` (0600), read at start and made when absent (only right for the
//! controller that bootstraps: a joining controller must have been given its peers' CA);
//! `dqlite-node.pem` (the node certificate and the CA, 0644) and `dqlite-node.key` (0600),
//! rewritten at every node start for the address it starts at. Those two are what an
//! operator gives go-dqlite's shell: `dqlite --cert dqlite-node.pem --key dqlite-node.key`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use dqlite::tls::{Tls, TlsError};

use crate::ca::{write_file, Ca, CaError};

/// The node certificate's file name in the controller's dir.
pub const NODE_CERT_FILE: &str = "dqlite-node.pem";
/// The node key's file name in the controller's dir.
pub const NODE_KEY_FILE: &str = "dqlite-node.key";

/// What can go wrong with the node's TLS material.
#[derive(Debug, thiserror::Error)]
pub enum NodeTlsError {
    #[error("controller CA in {dir:?}")]
    Ca { dir: PathBuf, source: CaError },
    #[error("cannot build the TLS configuration")]
    Config(#[from] TlsError),
    #[error("the node address {address:?} has no IP to name in its certificate")]
    Address { address: String },
}

/// The controller CA and this process's client identity.
#[derive(Debug, Clone)]
pub struct NodeTls {
    ca: Ca,
    dir: PathBuf,
    client: Tls,
}

impl NodeTls {
    /// Reads the CA from `dir` (made and saved when absent) and issues the client
    /// certificate (no IP: servers check only that the CA signed it).
    pub fn load_or_create(dir: &Path) -> Result<NodeTls, NodeTlsError> {
        let ca_error = |source| NodeTlsError::Ca {
            dir: dir.to_owned(),
            source,
        };
        let ca = match Ca::load(dir).map_err(ca_error)? {
            Some(ca) => ca,
            None => {
                log::warn!(
                    "no controller CA in {}: making one (right only for the controller that bootstraps)",
                    dir.display()
                );
                let ca = Ca::generate().map_err(ca_error)?;
                ca.save(dir).map_err(ca_error)?;
                ca
            }
        };
        let (chain, key) = ca.issue_node(&[]).map_err(ca_error)?;
        let client = Tls::from_pem(ca.cert_pem.as_bytes(), chain.as_bytes(), key.as_bytes())?;
        Ok(NodeTls {
            ca,
            dir: dir.to_owned(),
            client,
        })
    }

    /// The client side for requests to the cluster's nodes.
    pub fn client(&self) -> Tls {
        self.client.clone()
    }

    /// A node certificate for `address` (`ip:port`), written to the controller's dir
    /// (`dqlite-node.pem`, `dqlite-node.key`), as the node's TLS.
    pub fn node(&self, address: &str) -> Result<Tls, NodeTlsError> {
        let ip: IpAddr = address
            .parse::<SocketAddr>()
            .map(|socket| socket.ip())
            .map_err(|_| NodeTlsError::Address {
                address: address.to_owned(),
            })?;
        let ca_error = |source| NodeTlsError::Ca {
            dir: self.dir.clone(),
            source,
        };
        let (chain, key) = self.ca.issue_node(&[ip]).map_err(ca_error)?;
        write_file(&self.dir.join(NODE_KEY_FILE), key.as_bytes(), 0o600).map_err(ca_error)?;
        write_file(&self.dir.join(NODE_CERT_FILE), chain.as_bytes(), 0o644).map_err(ca_error)?;
        Ok(Tls::from_pem(
            self.ca.cert_pem.as_bytes(),
            chain.as_bytes(),
            key.as_bytes(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ca_is_made_once_and_node_files_are_written_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let first = NodeTls::load_or_create(dir.path()).expect("made");
        let second = NodeTls::load_or_create(dir.path()).expect("read back");
        assert_eq!(first.ca, second.ca);
        first.node("[fd00::3]:17666").expect("node tls");
        let mode = |name: &str| {
            std::fs::metadata(dir.path().join(name))
                .expect("file")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(NODE_KEY_FILE), 0o600);
        assert_eq!(mode("ca.key"), 0o600);
        let chain = std::fs::read_to_string(dir.path().join(NODE_CERT_FILE)).expect("chain");
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2, "{chain}");
        assert!(matches!(
            first.node("@abstract"),
            Err(NodeTlsError::Address { .. })
        ));
    }
}
