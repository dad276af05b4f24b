//! The daemon's settings: command-line flags (clap) resolved into the paths and timings the
//! rest of the crate uses.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use controller_contract::{conf::is_agent_id, paths, DQLITE_PORT};

/// Command-line flags of `dbaccessor`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "dbaccessor",
    version,
    about = "Watches controller.conf and converges the local Dqlite node"
)]
pub struct Args {
    /// This controller's agent id (the machine id: `0`, `1`, ...), as the map keys it.
    #[arg(long, value_parser = parse_agent_id)]
    pub agent_id: String,

    /// The agent data dir: controller.conf, the sockets and the Dqlite data live under it.
    #[arg(long, default_value = paths::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// The reload socket (HTTP: GET /agent-id, POST /reload) [default: <data-dir>/configchange.socket].
    #[arg(long)]
    pub reload_socket: Option<PathBuf>,

    /// The status socket (one JSON line each way) [default: <data-dir>/dbaccessor-status.socket].
    #[arg(long)]
    pub status_socket: Option<PathBuf>,

    /// The TCP port of every controller's Dqlite node.
    #[arg(long, default_value_t = DQLITE_PORT)]
    pub dqlite_port: u16,

    /// The network latency between controllers in milliseconds: Raft heartbeats are 1.5x
    /// and election timeouts 15x this, so it sets how fast a dead leader is replaced (the
    /// default fails over in about half a second on a LAN).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub network_latency_ms: u64,

    /// How long to look for a leader before deciding that no quorum can be reached, in
    /// milliseconds [default: 20 election timeouts, at least 2 s].
    #[arg(long)]
    pub quorum_timeout_ms: Option<u64>,

    /// Mutual TLS between the Dqlite nodes and for every client (`on` or `off`): the
    /// controller CA and the node certificate live beside controller.conf
    /// [default: off for the bare dbaccessor, on in jujud-controller].
    #[arg(long, value_parser = parse_toggle)]
    pub dqlite_tls: Option<bool>,

    /// The log filter (env_logger syntax); RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

fn parse_toggle(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{text:?} is neither on nor off")),
    }
}

fn parse_agent_id(text: &str) -> Result<String, String> {
    if is_agent_id(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a controller agent id (a decimal number)"
        ))
    }
}

/// The resolved settings the service runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Which key of `db-bind-addresses` is this controller.
    pub agent_id: String,
    /// The agent data dir.
    pub data_dir: PathBuf,
    /// `<data-dir>/agents/controller-<id>/controller.conf`: the map the charm writes.
    pub controller_conf: PathBuf,
    /// Where the reload HTTP server listens.
    pub reload_socket: PathBuf,
    /// Where the status server listens.
    pub status_socket: PathBuf,
    /// `<data-dir>/dqlite`: the local node's data.
    pub dqlite_dir: PathBuf,
    /// The Dqlite TCP port of every controller.
    pub dqlite_port: u16,
    /// Raft timing base (see [`Args::network_latency_ms`]).
    pub network_latency: Duration,
    /// How long a leader is looked for before a quorum counts as unreachable.
    pub quorum_timeout: Duration,
    /// Whether the node and every client use mutual TLS (see [`crate::node_tls`]).
    pub dqlite_tls: bool,
}

impl Config {
    /// Resolves the flags' defaults that depend on other flags.
    pub fn from_args(args: &Args) -> Self {
        let network_latency = Duration::from_millis(args.network_latency_ms);
        // An election takes one or two election timeouts (15x latency each) when votes
        // split; 20 timeouts leave room for many rounds before the quorum counts as lost.
        let quorum_timeout = args
            .quorum_timeout_ms
            .map(Duration::from_millis)
            .unwrap_or_else(|| (network_latency * 15 * 20).max(Duration::from_secs(2)));
        Self {
            agent_id: args.agent_id.clone(),
            controller_conf: paths::controller_conf(&args.data_dir, &args.agent_id),
            reload_socket: args
                .reload_socket
                .clone()
                .unwrap_or_else(|| paths::reload_socket(&args.data_dir)),
            status_socket: args
                .status_socket
                .clone()
                .unwrap_or_else(|| paths::status_socket(&args.data_dir)),
            dqlite_dir: paths::dqlite_dir(&args.data_dir),
            data_dir: args.data_dir.clone(),
            dqlite_port: args.dqlite_port,
            network_latency,
            quorum_timeout,
            dqlite_tls: args.dqlite_tls.unwrap_or(false),
        }
    }

    /// The Dqlite address for a bind IP with the configured port (`ip:port`, IPv6 bracketed).
    pub fn dqlite_address(&self, ip: std::net::IpAddr) -> String {
        controller_contract::ip_port(ip, self.dqlite_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<Config, String> {
        Args::try_parse_from(std::iter::once("dbaccessor").chain(argv.iter().copied()))
            .map(|args| Config::from_args(&args))
            .map_err(|e| format!("{:?}", e.kind()))
    }

    #[test]
    fn defaults_follow_the_data_dir() {
        let config = parse(&["--agent-id", "2"]).expect("valid flags");
        assert_eq!(
            config,
            Config {
                agent_id: "2".into(),
                data_dir: "/var/lib/juju".into(),
                controller_conf: "/var/lib/juju/agents/controller-2/controller.conf".into(),
                reload_socket: "/var/lib/juju/configchange.socket".into(),
                status_socket: "/var/lib/juju/dbaccessor-status.socket".into(),
                dqlite_dir: "/var/lib/juju/dqlite".into(),
                dqlite_port: 17666,
                network_latency: Duration::from_millis(20),
                quorum_timeout: Duration::from_secs(6),
                dqlite_tls: false,
            }
        );
        let tls = parse(&["--agent-id", "2", "--dqlite-tls", "on"]).expect("valid flags");
        assert!(tls.dqlite_tls);
        assert!(parse(&["--agent-id", "2", "--dqlite-tls", "yes"]).is_err());
        let other = parse(&["--agent-id", "0", "--data-dir", "/m/0"]).expect("valid flags");
        assert_eq!(
            other.reload_socket,
            PathBuf::from("/m/0/configchange.socket")
        );
        assert_eq!(
            other.status_socket,
            PathBuf::from("/m/0/dbaccessor-status.socket")
        );
    }

    #[test]
    fn flags_table() {
        let check = |argv: &[&str], expected: Result<(u16, u64, u64), &str>| {
            let got = parse(argv).map(|c| {
                (
                    c.dqlite_port,
                    c.network_latency.as_millis() as u64,
                    c.quorum_timeout.as_millis() as u64,
                )
            });
            assert_eq!(got, expected.map_err(str::to_owned), "{argv:?}");
        };
        check(&["--agent-id", "0"], Ok((17666, 20, 6_000)));
        check(
            &["--agent-id", "0", "--network-latency-ms", "2"],
            Ok((17666, 2, 2_000)),
        );
        check(
            &["--agent-id", "0", "--quorum-timeout-ms", "500"],
            Ok((17666, 20, 500)),
        );
        check(
            &["--agent-id", "0", "--dqlite-port", "18000"],
            Ok((18000, 20, 6_000)),
        );
        check(&[], Err("MissingRequiredArgument"));
        check(&["--agent-id", "x"], Err("ValueValidation"));
        check(
            &["--agent-id", "0", "--network-latency-ms", "0"],
            Err("ValueValidation"),
        );
    }

    #[test]
    fn dqlite_address_uses_the_configured_port() {
        let config = parse(&["--agent-id", "0", "--dqlite-port", "18000"]).expect("valid");
        assert_eq!(
            config.dqlite_address("10.0.0.1".parse().expect("ip")),
            "10.0.0.1:18000"
        );
        assert_eq!(
            config.dqlite_address("fc00::1".parse().expect("ip")),
            "[fc00::1]:18000"
        );
    }
}
