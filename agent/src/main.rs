//! The `jujud-controller` binary: parses the flags, sets up logging and runs the agent's
//! workers until SIGTERM or SIGINT.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use agent::host::{Host, RestartPolicy};
use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

/// Command-line flags of `jujud-controller`: the dbaccessor's, unchanged.
#[derive(Debug, Parser)]
#[command(
    name = "jujud-controller",
    version,
    about = "The controller agent: the dbaccessor and the workers that use the controller database"
)]
struct AgentArgs {
    #[command(flatten)]
    dbaccessor: dbaccessor::config::Args,

    /// The API server's TCP port, which the published API addresses carry.
    #[arg(long, default_value_t = agent::apiserver::API_PORT)]
    api_port: u16,

    /// Where the API server listens [default: 0.0.0.0:<api-port>].
    #[arg(long)]
    api_listen: Option<std::net::SocketAddr>,

    /// How often the machine's addresses are read again for the API address publisher,
    /// in milliseconds.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..))]
    address_poll_ms: u64,
}

fn main() -> anyhow::Result<()> {
    // First, while this is the only thread (see dbaccessor::threadpool).
    dbaccessor::threadpool::configure();
    let args = AgentArgs::parse();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(&args.dbaccessor.log_level),
    )
    .format_timestamp_millis()
    .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut config = dbaccessor::config::Config::from_args(&args.dbaccessor);
    // The agent runs its node with mutual TLS unless told otherwise.
    config.dqlite_tls = args.dbaccessor.dqlite_tls.unwrap_or(true);
    let available = Arc::new(tokio::sync::watch::Sender::new(None));
    let publisher = agent::publisher::Settings {
        controller_id: config.agent_id.clone(),
        api_port: args.api_port,
        poll: Duration::from_millis(args.address_poll_ms),
        source: Arc::new(agent::publisher::host_addresses),
    };
    let apiserver = agent::apiserver::Settings {
        controller_id: config.agent_id.clone(),
        listen: args
            .api_listen
            .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], args.api_port))),
        dir: config
            .controller_conf
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_else(|| config.data_dir.clone()),
        source: publisher.source.clone(),
        limits: agent::apiserver::Limits::default(),
    };
    let mut host = Host::new(RestartPolicy::default());
    host.add(agent::workers::dbaccessor(config, available.clone()))
        .add(agent::publisher::worker(publisher, available.subscribe()))
        .add(agent::apiserver::worker(apiserver, available.subscribe()));
    host.run(async move {
        let name = tokio::select! {
            _ = sigterm.recv() => "SIGTERM",
            _ = sigint.recv() => "SIGINT",
        };
        log::info!("{name} received: stopping the workers");
    })
    .await
    .context("cannot run the workers")?;
    log::info!("stopped cleanly");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_are_the_dbaccessors_plus_the_agents() {
        use clap::CommandFactory;
        AgentArgs::command().debug_assert();
        let args = AgentArgs::parse_from([
            "jujud-controller",
            "--agent-id",
            "2",
            "--api-listen",
            "127.0.0.1:17071",
        ]);
        assert_eq!(args.dbaccessor.agent_id, "2");
        assert_eq!(args.api_port, 17070);
        assert_eq!(args.address_poll_ms, 5000);
        assert_eq!(
            args.api_listen,
            Some("127.0.0.1:17071".parse().expect("address"))
        );
    }
}
