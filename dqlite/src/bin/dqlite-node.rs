//! One application node as its own process: what the kill -9 scenarios run (a binary, so
//! that the tests find it built: `CARGO_BIN_EXE_dqlite-node`), and a quick way to try a
//! cluster by hand.
//!
//! ```text
//! dqlite-node --data-dir DIR --address IP:PORT [--peer IP:PORT]... [--latency-ms N]
//!      [--raft-connect bounded|libdqlite] [--connect-timeout-ms N]
//! ```
//!
//! `--raft-connect libdqlite` keeps libdqlite's own raft connect (blocking, Nagle on), for
//! comparisons; the default is the crate's bounded connect with `TCP_NODELAY`.
//!
//! Prints `ready <id>` once the node is in the cluster, then runs until its standard input
//! closes, when it hands over and stops.
#![forbid(unsafe_code)]

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use dqlite::app::{App, AppConfig};
use dqlite::node::{RaftConnect, DEFAULT_CONNECT_TIMEOUT};

fn main() -> ExitCode {
    let config = match parse(std::env::args().skip(1)) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("dqlite-node: {message}");
            eprintln!(
                "usage: dqlite-node --data-dir DIR --address IP:PORT [--peer IP:PORT]... [--latency-ms N] \
                 [--raft-connect bounded|libdqlite] [--connect-timeout-ms N]"
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("dqlite-node: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dqlite-node: {}", dqlite::error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

async fn run(config: AppConfig) -> Result<(), dqlite::app::AppError> {
    let app = App::start(config).await?;
    app.ready(Duration::from_secs(30)).await?;
    println!("ready {}", app.id());
    // Standard input closing (the parent gone, or Ctrl-D) is the signal to stop.
    let (closed, wait_closed) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = closed.send(());
    });
    let _ = wait_closed.await;
    app.stop().await
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<AppConfig, String> {
    let (mut data_dir, mut address, mut peers, mut latency) = (None, None, Vec::new(), None);
    let (mut libdqlite_connect, mut connect_timeout) = (false, DEFAULT_CONNECT_TIMEOUT);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--data-dir" => data_dir = Some(value()?),
            "--address" => address = Some(value()?),
            "--peer" => peers.push(value()?),
            "--latency-ms" => {
                let ms: u64 = value()?.parse().map_err(|e| format!("--latency-ms: {e}"))?;
                latency = Some(Duration::from_millis(ms));
            }
            "--raft-connect" => {
                libdqlite_connect = match value()?.as_str() {
                    "bounded" => false,
                    "libdqlite" => true,
                    other => return Err(format!("--raft-connect: unknown {other:?}")),
                }
            }
            "--connect-timeout-ms" => {
                let ms: u64 = value()?
                    .parse()
                    .map_err(|e| format!("--connect-timeout-ms: {e}"))?;
                connect_timeout = Duration::from_millis(ms);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let mut config = AppConfig::new(
        data_dir.ok_or("--data-dir is required")?,
        address.ok_or("--address is required")?,
    );
    config.peers = peers;
    config.role_interval = Duration::from_millis(200);
    if let Some(latency) = latency {
        config.node.network_latency = latency;
    }
    config.node.raft_connect = if libdqlite_connect {
        RaftConnect::Libdqlite
    } else {
        RaftConnect::Bounded {
            timeout: connect_timeout,
        }
    };
    Ok(config)
}
