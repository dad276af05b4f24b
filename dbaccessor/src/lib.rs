//! The dbaccessor: a daemon that watches `controller.conf` and converges the local Dqlite
//! node (bootstrap, join, re-bind, shrink to one), serving the charm's reload socket and a
//! status socket. [`run`] is the `dbaccessor` binary (stops on SIGTERM/SIGINT); [`run_until`]
//! is the controller agent's dbaccessor worker (stops when told).
//!
//! - [`config`]: command-line flags resolved into paths and timings.
//! - [`event`]: the closed set of events the service loop handles.
//! - [`decide`]: the pure decision from an observation to one action. No IO.
//! - `service`: the loop that observes, decides and applies, with back-off
//!   (`controller_backoff::Backoff`) and health checks; it publishes [`Database`].
//! - `driver`: the local node through the `dqlite` crate's application layer.
//! - [`health`]: the pure health verdict (voters connected and caught up, mapped
//!   controllers missing from the configuration).
//! - `progress`: every node's log position, reported through the leader into the cluster,
//!   which the verdict is made from.
//! - [`reload`] and [`status_socket`]: the two unix-socket servers (their test clients live
//!   in the `test-support` crate, out of the daemon).
//! - [`watch`]: the fallback file watch on `controller.conf`.
//! - `unix`: binding the sockets (stale files removed, mode 0600).
//! - [`threadpool`]: the size of libuv's thread pool, which `main` sets before the node starts.
#![forbid(unsafe_code)]

pub mod ca;
pub mod config;
pub mod decide;
mod driver;
pub mod event;
pub mod health;
pub mod node_tls;
mod progress;
pub mod reload;
mod service;
pub mod status_socket;
pub mod threadpool;
mod unix;
pub mod watch;

pub use service::DriverError;

use std::path::PathBuf;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch as watch_channel};

use crate::config::Config;
use crate::event::Event;

/// Why the daemon could not run or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {path}: {source}")]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot install the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        source: std::io::Error,
    },
    #[error("cannot stop the node cleanly")]
    Stop(#[source] Box<service::DriverError>),
    #[error("cannot set up the Dqlite node's TLS")]
    Tls(#[from] node_tls::NodeTlsError),
}

/// "The database is available": what a client of the controllers' cluster needs, published
/// by the dbaccessor while its node is a member (see [`run_until`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    /// The local node's raft id.
    pub node_id: u64,
    /// The local node's address (`ip:port`).
    pub own_address: String,
    /// Every member's address, this node's first: what
    /// `dqlite::client::Client::connect_leader` searches for the leader.
    pub members: Vec<String>,
    /// The client side of the nodes' mutual TLS (`None` when the nodes run in plaintext):
    /// set it as `dqlite::client::Options::tls`.
    pub tls: Option<dqlite::tls::Tls>,
}

/// Runs the daemon until SIGTERM or SIGINT; then hands over, stops the node and removes
/// the sockets.
pub async fn run(config: Config) -> Result<(), RunError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(|source| RunError::Signal {
        signal: "SIGTERM",
        source,
    })?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|source| RunError::Signal {
        signal: "SIGINT",
        source,
    })?;
    let shutdown = async move {
        let name = tokio::select! {
            _ = sigterm.recv() => "SIGTERM",
            _ = sigint.recv() => "SIGINT",
        };
        log::info!("{name} received");
    };
    run_until(config, shutdown, watch_channel::Sender::new(None)).await
}

/// Runs the daemon until `shutdown` completes; then hands over, stops the node and removes
/// the sockets. While the node is a member, `available` holds the [`Database`]; it is
/// cleared whenever the node stops being one, and before the node stops.
pub async fn run_until(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    available: watch_channel::Sender<Option<Database>>,
) -> Result<(), RunError> {
    log::info!(
        "dbaccessor for agent {}: map {}, dqlite data {}, reload socket {}, status socket {}",
        config.agent_id,
        config.controller_conf.display(),
        config.dqlite_dir.display(),
        config.reload_socket.display(),
        config.status_socket.display()
    );
    // The CA (made here by the controller that bootstraps) and this process's client
    // certificate, before any socket: a node that cannot have TLS must not start plaintext.
    let node_tls = if config.dqlite_tls {
        let dir = config
            .controller_conf
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| config.data_dir.clone());
        Some(node_tls::NodeTls::load_or_create(&dir)?)
    } else {
        None
    };
    let client_tls = node_tls.as_ref().map(node_tls::NodeTls::client);
    let (events_tx, events_rx) = mpsc::channel(64);
    let (stop_tx, stop_rx) = watch_channel::channel(false);

    let listen = |path: &PathBuf| {
        unix::bind_private(path).map_err(|source| RunError::Listen {
            path: path.clone(),
            source,
        })
    };
    let reload_listener = listen(&config.reload_socket)?;
    let status_listener = listen(&config.status_socket)?;

    let servers = [
        tokio::spawn(reload::serve(
            reload_listener,
            config.agent_id.clone(),
            events_tx.clone(),
            stop_rx.clone(),
        )),
        tokio::spawn(status_socket::serve(
            status_listener,
            events_tx.clone(),
            stop_rx.clone(),
            client_tls.clone(),
        )),
    ];
    // The watch is only the fallback for a charm that does not call POST /reload.
    let _file_watch = match watch::start(&config.controller_conf, events_tx.clone()) {
        Ok(file_watch) => Some(file_watch),
        Err(e) => {
            log::warn!("no file watch, relying on POST /reload only: {e}");
            None
        }
    };
    let shutdown_tx = events_tx.clone();
    let shutdown_task = tokio::spawn(async move {
        shutdown.await;
        // The loop is gone only if it already stopped.
        let _ = shutdown_tx.send(Event::Shutdown).await;
    });
    drop(events_tx);

    let timings = service::Timings::from_config(&config);
    let driver =
        driver::DqliteDriver::new(config.dqlite_dir.clone(), config.network_latency, node_tls);
    let result = service::Service::new(config.clone(), timings, driver, events_rx)
        .with_availability(available, client_tls)
        .run()
        .await;
    // The loop has ended (it failed, or it was told to): nothing waits for the signal now.
    shutdown_task.abort();

    stop_tx.send_replace(true);
    for server in servers {
        // A server task ends at its next accept; a panic in it was already reported.
        let _ = server.await;
    }
    unix::remove_socket(&config.reload_socket);
    unix::remove_socket(&config.status_socket);
    match result {
        Ok(()) => {
            log::info!("stopped cleanly");
            Ok(())
        }
        Err(e) => Err(RunError::Stop(Box::new(e))),
    }
}
