//! Mutual TLS for every connection to a node: raft between nodes and clients alike.
//!
//! One [`Tls`] holds a node's (or a client's) certificate chain and key and the CA that
//! signed every certificate of the cluster. Both ends present a certificate and verify the
//! other's against that CA only (no system roots): a node's listener refuses a client
//! without one (`WebPkiClientVerifier`, client authentication required), and a dialling
//! node or client checks that the server's certificate names the IP address it dialled
//! (a host name for `host:port` addresses). The certificates themselves are made elsewhere
//! (the dbaccessor issues each controller's from the controller CA); go-dqlite's shell
//! (`dqlite --cert C --key K`) takes such a chain file too, since it trusts the
//! certificates in its own file and checks the server against the first DNS name of its
//! own certificate, a name every node certificate of one cluster therefore shares.
//!
//! TLS 1.3 and 1.2 with ring's cipher suites; no session tickets are sent (a client's idle
//! connection must not receive bytes it did not ask for: the client reads unasked bytes as a
//! stale connection).

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// What can go wrong building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path:?}")]
    Read { path: PathBuf, source: io::Error },
    #[error("no {what} in the PEM text: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("the CA certificate is not a usable trust anchor: {0}")]
    Ca(rustls::Error),
    #[error("cannot build the client verifier: {0}")]
    Verifier(String),
    #[error("the certificate and key do not make a usable {side} configuration: {source}")]
    Config {
        side: &'static str,
        source: rustls::Error,
    },
}

/// The TLS side of a node or client: one certificate (with its chain) and key, trusted
/// against one CA, as a server and as a client. Cheap to clone (two `Arc`s).
#[derive(Clone)]
pub struct Tls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never prints the key.
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

/// Two `Tls` are equal when they share their configurations (clones of one another).
impl PartialEq for Tls {
    fn eq(&self, other: &Tls) -> bool {
        Arc::ptr_eq(&self.server, &other.server) && Arc::ptr_eq(&self.client, &other.client)
    }
}

impl Eq for Tls {}

impl Tls {
    /// A configuration from DER: the CA certificate, the certificate chain (leaf first) and
    /// the leaf's private key.
    pub fn new(
        ca: CertificateDer<'static>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(ca).map_err(TlsError::Ca)?;
        let roots = Arc::new(roots);
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|error| TlsError::Verifier(error.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Config {
                side: "server",
                source,
            })?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|source| TlsError::Config {
                side: "server",
                source,
            })?;
        server.send_tls13_tickets = 0;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Config {
                side: "client",
                source,
            })?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|source| TlsError::Config {
                side: "client",
                source,
            })?;
        Ok(Tls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// A configuration from PEM text: the CA certificate, the chain (leaf first; a CA
    /// certificate after it is fine) and the key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(ca_pem: &[u8], chain_pem: &[u8], key_pem: &[u8]) -> Result<Tls, TlsError> {
        let pem_error = |what| {
            move |error: rustls::pki_types::pem::Error| TlsError::Pem {
                what,
                reason: error.to_string(),
            }
        };
        let ca = CertificateDer::from_pem_slice(ca_pem).map_err(pem_error("CA certificate"))?;
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_error("certificate"))?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                what: "certificate",
                reason: "the chain is empty".to_owned(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(pem_error("private key"))?;
        Tls::new(ca, chain, key)
    }

    /// [`Tls::from_pem`] of three files.
    pub fn from_files(ca: &Path, chain: &Path, key: &Path) -> Result<Tls, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        Tls::from_pem(&read(ca)?, &read(chain)?, &read(key)?)
    }

    /// The listener's side: client certificates required and verified against the CA.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server)
    }

    /// The dialling side: presents the certificate, verifies the server against the CA.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.client)
    }
}

/// The name a server's certificate must carry for `address`: the IP of `ip:port` or
/// `[ipv6]:port`, else the host of `host:port`. `None` for an abstract socket or text
/// that names no host. Pure.
pub fn server_name(address: &str) -> Option<ServerName<'static>> {
    if address.starts_with('@') {
        return None;
    }
    if let Ok(socket) = address.parse::<SocketAddr>() {
        return Some(ServerName::IpAddress(socket.ip().into()));
    }
    let host = match address.rsplit_once(':') {
        Some((host, _port)) => host,
        None => address,
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_owned()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_dialled_address() {
        let check = |address: &str, expected: Option<&str>| {
            let expected = expected.map(|name| {
                ServerName::try_from(name.to_owned())
                    .expect("test name")
                    .to_owned()
            });
            assert_eq!(server_name(address), expected, "{address:?}");
        };
        check("10.0.0.1:17666", Some("10.0.0.1"));
        check("[fd00::3]:17666", Some("fd00::3"));
        check("localhost:17666", Some("localhost"));
        check("10.0.0.1", Some("10.0.0.1"));
        check("@dqlite", None);
        check(":17666", None);
    }
}
