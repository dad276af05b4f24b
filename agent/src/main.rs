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

    /// Where the API server listens [default: [::]:<api-port>, every IPv4 and IPv6 address].
    #[arg(long)]
    api_listen: Option<std::net::SocketAddr>,

    /// How often the machine's addresses are read again for the API address publisher,
    /// in milliseconds.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..))]
    address_poll_ms: u64,

    /// How long a claim or an extension of the `singular-controller` lease grants, in
    /// milliseconds.
    #[arg(long, env = "JUJUD_LEASE_DURATION_MS", default_value_t = 60_000)]
    lease_duration_ms: u64,

    /// How often the holder extends the lease, in milliseconds.
    #[arg(long, env = "JUJUD_LEASE_EXTEND_MS", default_value_t = 30_000)]
    lease_extend_ms: u64,

    /// How long before the grant's end (by this machine's monotonic clock, from before the
    /// claim was sent) the holder stops its singular workers, in milliseconds. It must
    /// exceed the controllers' wall-clock skew.
    #[arg(long, env = "JUJUD_LEASE_MARGIN_MS", default_value_t = 10_000)]
    lease_margin_ms: u64,

    /// How long a unit's claim or extension of its application's `application-leadership`
    /// lease grants, in milliseconds (the API takes 1000 to 300000).
    #[arg(long, env = "JUJUD_LEADERSHIP_DURATION_MS", default_value_t = 60_000)]
    leadership_duration_ms: u64,

    /// How often a leader unit's tracker extends, in milliseconds.
    #[arg(long, env = "JUJUD_LEADERSHIP_EXTEND_MS", default_value_t = 30_000)]
    leadership_extend_ms: u64,

    /// How long before the grant's end (by the monotonic clock, from before the claim was
    /// sent) a unit stops being leader, in milliseconds.
    #[arg(long, env = "JUJUD_LEADERSHIP_MARGIN_MS", default_value_t = 10_000)]
    leadership_margin_ms: u64,

    /// How often a non-leader unit's tracker asks again at most, and how often the
    /// machine's units are looked for, in milliseconds.
    #[arg(long, env = "JUJUD_LEADERSHIP_POLL_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(50..))]
    leadership_poll_ms: u64,

    /// Run as a workload machine's agent: no dbaccessor, no API server; only the API caller
    /// (logs in as `machine-<agent-id>` from `<data-dir>/agents/machine-<agent-id>/agent.conf`)
    /// and its address updater.
    #[arg(long)]
    machine_agent: bool,

    /// The cloud, for the compute provisioner: a program that takes one JSON request on
    /// stdin and answers on stdout. Without it, no provisioner runs and requested machines
    /// stay pending.
    #[arg(long, env = "JUJUD_CLOUD_COMMAND")]
    cloud_command: Option<std::path::PathBuf>,

    /// An argument of the cloud command (repeatable).
    #[arg(long = "cloud-arg", allow_hyphen_values = true)]
    cloud_args: Vec<String>,

    /// How often the compute provisioner reads the requested machines, in milliseconds.
    #[arg(long, env = "JUJUD_PROVISIONER_POLL_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..))]
    provisioner_poll_ms: u64,

    /// How often the singular heartbeat worker records a fenced action, in milliseconds.
    #[arg(long, env = "JUJUD_SINGULAR_HEARTBEAT_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    singular_heartbeat_ms: u64,
}

/// Runs the agent; a fatal error is logged on one line (each cause once) and exits 1.
fn main() -> std::process::ExitCode {
    // First, while this is the only thread (see dbaccessor::threadpool).
    dbaccessor::threadpool::configure();
    let args = AgentArgs::parse();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(&args.dbaccessor.log_level),
    )
    .format_timestamp_millis()
    .init();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
        .and_then(|runtime| runtime.block_on(run(args)));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{}", controller_contract::describe_error(error.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Waits for SIGTERM or SIGINT and logs which came.
async fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        let name = tokio::select! {
            _ = sigterm.recv() => "SIGTERM",
            _ = sigint.recv() => "SIGINT",
        };
        log::info!("{name} received: stopping the workers");
    })
}

/// A workload machine's agent: the API caller and its address updater.
async fn run_machine_agent(args: AgentArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal().await?;
    let agent_dir = args
        .dbaccessor
        .data_dir
        .join("agents")
        .join(format!("machine-{}", args.dbaccessor.agent_id));
    let settings = agent::apicaller::Settings {
        agent_dir,
        dial: juju_client::DialOptions::default(),
        watch_timeout: agent::apiserver::Limits::default().long_poll + Duration::from_secs(15),
    };
    let mut host = Host::new(RestartPolicy::default());
    host.add(agent::apicaller::worker(settings));
    host.run(shutdown).await.context("cannot run the workers")?;
    log::info!("stopped cleanly");
    Ok(())
}

async fn run(args: AgentArgs) -> anyhow::Result<()> {
    if args.machine_agent {
        return run_machine_agent(args).await;
    }
    let shutdown = shutdown_signal().await?;
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
    let addresses = Arc::new(tokio::sync::watch::Sender::new(None));
    let apiserver = agent::apiserver::Settings {
        addresses: addresses.clone(),
        controller_id: config.agent_id.clone(),
        listen: args.api_listen.unwrap_or_else(|| {
            std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, args.api_port))
        }),
        dir: config
            .controller_conf
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_else(|| config.data_dir.clone()),
        source: publisher.source.clone(),
        limits: agent::apiserver::Limits::default(),
    };
    let timing = agent::singular::Timing {
        duration: Duration::from_millis(args.lease_duration_ms),
        extend_every: Duration::from_millis(args.lease_extend_ms),
        margin: Duration::from_millis(args.lease_margin_ms),
    };
    timing.validate().context("invalid lease timings")?;
    let heartbeat_every = Duration::from_millis(args.singular_heartbeat_ms);
    // As often as the publisher rounds that used to sweep on every controller.
    let cleanup_every = Duration::from_millis(args.address_poll_ms);
    let singular_available = available.subscribe();
    let running = Arc::new(tokio::sync::watch::Sender::new(None));
    let holder = format!("controller-{}", config.agent_id);
    let lease_status = agent::singular::status_worker(
        holder.clone(),
        controller_contract::paths::lease_status(&config.data_dir),
        Duration::from_millis(args.lease_extend_ms.min(5000)),
        running.subscribe(),
        available.subscribe(),
    );
    let provisioner = args
        .cloud_command
        .clone()
        .map(|program| agent::provisioner::Settings {
            cloud: agent::provisioner::CloudCommand {
                program,
                args: args.cloud_args.clone(),
            },
            poll: Duration::from_millis(args.provisioner_poll_ms),
            cloud_timeout: Duration::from_secs(120),
        });
    if provisioner.is_none() {
        log::info!("no --cloud-command: the compute provisioner does not run");
    }
    let singular = agent::singular::Settings {
        holder,
        timing,
        workers: Arc::new(move |fence| {
            let mut workers = vec![
                agent::singular::heartbeat(
                    fence.clone(),
                    singular_available.clone(),
                    heartbeat_every,
                    Duration::from_secs(600),
                ),
                agent::cleanup::worker(fence.clone(), cleanup_every, singular_available.clone()),
            ];
            if let Some(settings) = &provisioner {
                workers.push(agent::provisioner::worker(
                    fence,
                    settings.clone(),
                    singular_available.clone(),
                ));
            }
            workers
        }),
        running,
    };
    let leadership = agent::leadership::Settings {
        data_dir: config.data_dir.clone(),
        controller_dir: apiserver.dir.clone(),
        timing: agent::singular::Timing {
            duration: Duration::from_millis(args.leadership_duration_ms),
            extend_every: Duration::from_millis(args.leadership_extend_ms),
            margin: Duration::from_millis(args.leadership_margin_ms),
        },
        poll: Duration::from_millis(args.leadership_poll_ms),
        dial: juju_client::DialOptions::default(),
    };
    leadership
        .timing
        .validate()
        .context("invalid leadership timings")?;
    let controller_conf = apiserver.dir.join("agent.conf");
    let mut host = Host::new(RestartPolicy::default());
    host.add(agent::addresses::controller_worker(
        controller_conf,
        addresses.subscribe(),
    ));
    host.add(agent::workers::dbaccessor(config, available.clone()))
        .add(agent::publisher::worker(publisher, available.subscribe()))
        .add(agent::apiserver::worker(apiserver, available.subscribe()))
        .add(agent::singular::worker(singular, available.subscribe()))
        .add(lease_status)
        .add(agent::leadership::worker(leadership, available.subscribe()));
    host.run(shutdown).await.context("cannot run the workers")?;
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
        assert_eq!(args.lease_duration_ms, 60_000);
        assert_eq!(args.lease_extend_ms, 30_000);
        assert_eq!(args.lease_margin_ms, 10_000);
        assert_eq!(args.leadership_duration_ms, 60_000);
        assert_eq!(args.leadership_extend_ms, 30_000);
        assert_eq!(args.leadership_poll_ms, 2000);
        assert_eq!(
            args.api_listen,
            Some("127.0.0.1:17071".parse().expect("address"))
        );
    }
}
