//! The agent's workers and how they are wired: the dbaccessor owns the node and publishes
//! "database available"; every other worker reaches the database only through that.

use std::sync::Arc;

use anyhow::Context;
use dbaccessor::Database;
use tokio::sync::{oneshot, watch};

use crate::host::{Stop, WorkerSpec};

/// The dbaccessor worker's name, which the database's users depend on.
pub const DBACCESSOR: &str = "dbaccessor";

/// The dbaccessor as a worker: the daemon's whole contract (controller.conf, the reload
/// and status sockets, the flags) with the stop request in place of the signals. While the
/// node is a member, `available` holds the members' addresses.
///
/// It runs on a thread and runtime of its own, as in the `dbaccessor` binary: its loop
/// holds the node (which is `Send` but deliberately not `Sync`) across awaits, so its
/// future cannot be spawned on the agent's multi-threaded runtime. Only the stop request
/// and `available` (both runtime-independent channels) cross over.
pub fn dbaccessor(
    config: dbaccessor::config::Config,
    available: Arc<watch::Sender<Option<Database>>>,
) -> WorkerSpec {
    WorkerSpec::new(DBACCESSOR, &[], move |mut stop: Stop| {
        let config = config.clone();
        let available = (*available).clone();
        async move {
            let (done_tx, done_rx) = oneshot::channel();
            std::thread::Builder::new()
                .name("dbaccessor".into())
                .spawn(move || {
                    let result = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .thread_name("dbaccessor-rt")
                        .enable_all()
                        .build()
                        .context("cannot start the dbaccessor's runtime")
                        .and_then(|runtime| {
                            let stopped = async move { stop.requested().await };
                            runtime
                                .block_on(dbaccessor::run_until(config, stopped, available))
                                .map_err(anyhow::Error::from)
                        });
                    // The worker's future may be gone (the host ended); nobody to tell.
                    let _ = done_tx.send(result);
                })
                .context("cannot start the dbaccessor's thread")?;
            done_rx
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the dbaccessor's thread panicked")))
        }
    })
}
