//! The `dbaccessor` binary: parses the flags, sets up logging and runs the daemon.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use dbaccessor::config::{Args, Config};

/// Runs the daemon; a fatal error is logged on one line (each cause once) and exits 1.
fn main() -> std::process::ExitCode {
    // First, while this is the only thread: libdqlite's raft connects must not take every
    // thread of libuv's pool (see the module).
    dbaccessor::threadpool::configure();
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(&args.log_level))
        .format_timestamp_millis()
        .init();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{}", controller_contract::describe_error(error.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime
        .block_on(dbaccessor::run(Config::from_args(args)))
        .context("dbaccessor failed")
}
