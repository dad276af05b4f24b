//! Test support: a real Dqlite cluster of the `dqlite` crate's nodes in this process, each
//! on its own loopback address in the agent tests' range (127.60.0.0/16, one /24 per
//! scenario), and clients of it.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agent::ca::Ca;
use dqlite::app::{App, AppConfig};
use dqlite::client::{Client, Options};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Node `host`'s address in scenario `scenario`: 127.60.<scenario>.<host>:17666.
pub fn address(scenario: u8, host: u8) -> String {
    format!("127.60.{scenario}.{host}:17666")
}

/// One in-process cluster at a time per test binary. libdqlite registers each node's SQLite
/// VFS process-wide under a name made from the node id, and every cluster bootstraps node
/// 1: two clusters alive at once in one process share a VFS name, and a read of one node's
/// database can land in the other's (seen: `vfsDatabaseRead: Assertion 'page_size > 0'
/// failed` while two tests of one binary ran). Production runs one node per process.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A running cluster; its nodes stop (without hand-over) when it is dropped.
pub struct Cluster {
    pub apps: Vec<App>,
    pub addresses: Vec<String>,
    /// Holds the data dirs.
    _dirs: Vec<tempfile::TempDir>,
    /// Held while the cluster lives (see [`ONE_CLUSTER_AT_A_TIME`]).
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    /// Bootstraps node 1 and joins the others through it; returns once every node is ready.
    pub async fn start(scenario: u8, size: u8) -> Cluster {
        let serial = ONE_CLUSTER_AT_A_TIME.lock().await;
        let mut apps = Vec::new();
        let mut dirs = Vec::new();
        let mut addresses = Vec::new();
        for host in 1..=size {
            let dir = tempfile::tempdir().expect("tempdir");
            let address = address(scenario, host);
            let mut config = AppConfig::new(dir.path(), address.clone());
            config.peers = addresses.first().cloned().into_iter().collect();
            config.role_interval = Duration::from_millis(100);
            config.join_timeout = Duration::from_secs(20);
            let app = App::start(config).await.expect("node starts");
            app.ready(Duration::from_secs(20))
                .await
                .expect("node ready");
            apps.push(app);
            dirs.push(dir);
            addresses.push(address);
        }
        Cluster {
            apps,
            addresses,
            _dirs: dirs,
            _serial: serial,
        }
    }

    /// A client of its own, connected to the leader.
    pub async fn client(&self) -> Client {
        Client::connect_leader(&self.addresses, Options::default())
            .await
            .expect("a leader is found")
    }

    /// Stops every node with a hand-over.
    pub async fn stop(self) {
        for app in self.apps {
            let _ = app.stop().await;
        }
    }
}

/// A TLS client trusting one CA, keeping one HTTP/1.1 connection and reconnecting when
/// the server closed it.
pub struct ApiClient {
    /// The name the server's certificate must carry (the dialled IP unless set).
    pub server_ip: Option<std::net::IpAddr>,
    connector: tokio_rustls::TlsConnector,
    address: SocketAddr,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

fn connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let ca = Ca {
        cert_pem: ca_pem.to_owned(),
        key_pem: String::new(),
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().expect("CA der")).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

impl ApiClient {
    pub fn new(ca_pem: &str, address: SocketAddr) -> Self {
        Self {
            connector: connector(ca_pem),
            address,
            sender: None,
            server_ip: None,
        }
    }

    pub async fn tls(
        &self,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
        let tcp = tokio::net::TcpStream::connect(self.address)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = rustls::pki_types::ServerName::IpAddress(
            self.server_ip.unwrap_or(self.address.ip()).into(),
        );
        self.connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))
    }

    /// The next request opens a new connection (after an answer that closes this one).
    pub fn reconnect_next(&mut self) {
        self.sender = None;
    }

    pub async fn connect(&mut self) -> Result<(), String> {
        let tls = self.tls().await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        self.sender = Some(sender);
        Ok(())
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), String> {
        let usable = match &mut self.sender {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            self.connect().await?;
        }
        let sender = self.sender.as_mut().expect("connected above");
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.address.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let response = tokio::time::timeout(Duration::from_secs(20), sender.send_request(request))
            .await
            .map_err(|_| "no answer within 20 s".to_owned())?
            .map_err(|e| {
                self.sender = None;
                format!("send: {e}")
            })?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes()
            .to_vec();
        Ok((status, body))
    }

    pub async fn login(&mut self, body: serde_json::Value) -> (u16, Vec<u8>) {
        self.request("POST", "/login", body.to_string().into_bytes())
            .await
            .expect("an answer")
    }

    /// Sends raw bytes over a fresh TLS connection; returns the status line's code.
    pub async fn raw(&self, bytes: &[u8]) -> Option<u16> {
        let mut tls = self.tls().await.ok()?;
        // The server may answer (and close) before every byte is written.
        let _ = tls.write_all(bytes).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }
}
