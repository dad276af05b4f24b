//! The node's own listener and TLS dialler: how a node listens on IPv6 and speaks TLS,
//! which libdqlite 1.11 cannot do itself (it binds IPv4 literals or abstract unix sockets
//! only, in plaintext).
//!
//! The shape is go-dqlite's: libdqlite binds an abstract unix socket (`@dqlite-...`, unique
//! in this process) while its raft configuration keeps the public `ip:port`; a tokio
//! listener of the crate on that `ip:port` accepts each connection (raft peers and clients
//! alike), terminates TLS when the node has it, connects to the abstract socket and copies
//! bytes both ways. Outgoing raft connections with TLS go through [`Forwarder::dial_tls`]:
//! a bounded TCP connect, the TLS handshake verifying the peer against the CA and the IP
//! dialled, then a unix socket pair whose one end goes to libdqlite (which sees a connected
//! stream socket, as from its own connect) and whose other end is copied through the TLS
//! stream. Everything runs on one current-thread tokio runtime per node, on its own thread;
//! dropping the [`Forwarder`] stops that thread and closes every socket it holds.
//!
//! The abstract socket itself has no permissions: any process of the host's network
//! namespace can reach the node through it in plaintext, as with go-dqlite. TLS guards the
//! network, not the host.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr as UnixSocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, Semaphore};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::connect::{parse_raft_address, raft_connect, ConnectError};

/// How long an accepted connection may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many connections are forwarded at once; accepting waits for a free slot.
/// A cluster of seven nodes holds about a dozen raft connections per node, and clients a
/// few each.
pub const MAX_CONNECTIONS: usize = 1024;

/// A unique abstract socket name for a node of this process (without the leading `@`).
pub(crate) fn abstract_name(id: u64) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or_default();
    format!(
        "dqlite-{}-{id:x}-{}-{nanos:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The node's forwarding runtime: its listener (once [`Forwarder::listen`] ran) and the
/// copies of every forwarded connection, in and out.
#[derive(Debug)]
pub(crate) struct Forwarder {
    handle: Handle,
    /// Dropped (or sent) to end the runtime's thread.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Forwarder {
    /// Starts the runtime's thread.
    pub fn new() -> io::Result<Forwarder> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name("dqlite-forward".to_owned())
            .spawn(move || {
                // Either a stop or the sender's drop ends it.
                let _ = runtime.block_on(stopped);
                // Dropping the runtime here drops every task and closes their sockets.
                drop(runtime);
            })?;
        Ok(Forwarder {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// A handle for dialling from libdqlite's threads.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Serves `listener` (bound to the node's public address): each accepted connection,
    /// after TLS when `tls` is given, is forwarded to the abstract unix socket `node_name`.
    pub fn listen(
        &self,
        listener: std::net::TcpListener,
        node_name: &str,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let listener = {
            let _runtime = self.handle.enter();
            TcpListener::from_std(listener)?
        };
        let node = UnixSocketAddr::from_abstract_name(node_name.as_bytes())?;
        let acceptor = tls.map(TlsAcceptor::from);
        self.handle.spawn(serve(listener, node, acceptor));
        Ok(())
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // The thread only waits and drops: it cannot panic but for a runtime bug.
            let _ = thread.join();
        }
    }
}

/// The accept loop: one task per connection, at most [`MAX_CONNECTIONS`] at once.
async fn serve(listener: TcpListener, node: UnixSocketAddr, acceptor: Option<TlsAcceptor>) {
    let node = Arc::new(node);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, say: wait a little rather than spin.
                ::log::warn!("dqlite listener: cannot accept: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let node = Arc::clone(&node);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(error) = forward_incoming(stream, &node, acceptor).await {
                ::log::debug!("dqlite listener: connection from {peer}: {error}");
            }
        });
    }
}

/// One accepted connection: TLS (when the node has it), then bytes both ways to the node.
async fn forward_incoming(
    stream: TcpStream,
    node: &UnixSocketAddr,
    acceptor: Option<TlsAcceptor>,
) -> io::Result<()> {
    // Raft and the protocol send small messages and wait for answers: never coalesce.
    stream.set_nodelay(true)?;
    match acceptor {
        Some(acceptor) => {
            let mut stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            let mut local = connect_node(node)?;
            copy_bidirectional(&mut stream, &mut local).await?;
        }
        None => {
            let mut stream = stream;
            let mut local = connect_node(node)?;
            copy_bidirectional(&mut stream, &mut local).await?;
        }
    }
    Ok(())
}

/// Connects to the node's abstract socket (local: it cannot block for long).
fn connect_node(node: &UnixSocketAddr) -> io::Result<UnixStream> {
    let stream = std::os::unix::net::UnixStream::connect_addr(node)?;
    stream.set_nonblocking(true)?;
    UnixStream::from_std(stream)
}

/// Opens a raft connection to `address` over TLS within about twice `timeout` (the TCP
/// connect, then the handshake): the returned descriptor is one end of a unix socket pair,
/// blocking, as libdqlite expects a connected socket; the runtime copies the other end
/// through the TLS stream until either side closes. Blocks the calling thread (a libuv pool
/// thread); never call it from the forwarder's own runtime.
pub(crate) fn dial_tls(
    handle: &Handle,
    connector: &TlsConnector,
    address: &str,
    timeout: Duration,
) -> Result<OwnedFd, ConnectError> {
    let tcp = raft_connect(address, timeout)?;
    let target = parse_raft_address(address).ok_or_else(|| ConnectError::Address {
        address: address.to_owned(),
    })?;
    let forward_error = |source: io::Error| ConnectError::Forward {
        address: target,
        source,
    };
    let tcp = std::net::TcpStream::from(tcp);
    tcp.set_nonblocking(true).map_err(forward_error)?;
    let (node_end, forward_end) = std::os::unix::net::UnixStream::pair().map_err(forward_error)?;
    forward_end.set_nonblocking(true).map_err(forward_error)?;
    let (ready, handshake) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
    let connector = connector.clone();
    let server_name = rustls::pki_types::ServerName::IpAddress(target.ip().into());
    handle.spawn(async move {
        let established = async {
            let tcp = TcpStream::from_std(tcp)?;
            let stream = connector.connect(server_name, tcp).await?;
            let local = UnixStream::from_std(forward_end)?;
            Ok::<_, io::Error>((stream, local))
        };
        match tokio::time::timeout(timeout, established).await {
            Ok(Ok((mut stream, mut local))) => {
                if ready.send(Ok(())).is_ok() {
                    let _ = copy_bidirectional(&mut stream, &mut local).await;
                }
            }
            Ok(Err(error)) => {
                let _ = ready.send(Err(error));
            }
            Err(_) => {
                let _ = ready.send(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                )));
            }
        }
    });
    // The task answers within `timeout`; a runtime that is shutting down drops it (and the
    // sender) at once.
    match handshake.recv_timeout(timeout + Duration::from_secs(1)) {
        Ok(Ok(())) => Ok(node_end.into()),
        Ok(Err(source)) => Err(ConnectError::Tls {
            address: target,
            source,
        }),
        Err(_) => Err(forward_error(io::Error::other(
            "the forwarding runtime did not answer",
        ))),
    }
}

/// Whether a node at `address` with `tls` needs the forwarding listener: TLS, or an IPv6
/// address (libdqlite 1.11 binds IPv4 only). Pure.
pub(crate) fn needs_forwarding(address: &str, tls: bool) -> bool {
    tls || matches!(address.parse::<SocketAddr>(), Ok(SocketAddr::V6(_)))
}
