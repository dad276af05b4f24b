//! The contract between the controller charm, the controller agent and the API client: the
//! serde types of every file, socket and API payload they exchange, and the paths where
//! those live.
//!
//! This crate is an API boundary. It holds no policy and does no IO, with two exceptions:
//! [`status::client`], the status socket's one (synchronous) client, kept beside the
//! protocol's types so that the charm, the simulator and the tests speak it alike; and
//! [`files::read_capped`], the one reader of the files the charm and the agents hand each
//! other (controller.conf above all), so that both sides refuse what is in the way alike. The charm
//! (synchronous, short-lived) and the daemon (tokio) both convert to and from these types at
//! their edges.
//!
//! - [`agentaddr`]: the API addresses agents get (`juju-mgmt-space`), `agent.conf`, and a
//!   machine agent's connection-status file.
//! - [`api`]: the controller API's JSON bodies (login, status, the address watch), shared
//!   with the client.
//! - [`cloud`]: the compute provisioner's requests to the cloud (a command's stdin and
//!   stdout), each fenced by the lease token.
//! - [`conf`]: `controller.conf`, the map of every controller's Dqlite bind address.
//! - [`files`]: small files read without blocking or reading without end (IO).
//! - [`lease`]: `lease-status.json`, the leases as the agent last read them.
//! - [`paths`]: where Juju (or the simulator) keeps the files and sockets.
//! - [`reload`]: the HTTP routes of the reload socket.
//! - [`scope`]: Juju's address scopes (pure; the charm and the agent classify alike).
//! - [`status`]: the dbaccessor's status socket, read by the charm's hooks and actions
//!   through [`status::client`].
#![forbid(unsafe_code)]

pub mod agentaddr;
pub mod api;
pub mod cloud;
pub mod conf;
pub mod files;
pub mod leadership;
pub mod lease;
pub mod paths;
pub mod reload;
pub mod scope;
pub mod status;

/// The TCP port every Dqlite node listens on (upstream Juju's choice).
pub const DQLITE_PORT: u16 = 17666;

/// Formats `ip:port`, IPv6 bracketed (`[fd00::3]:17666`): the workspace's one writer of
/// such addresses (Dqlite node addresses, API addresses). The raft configuration, the
/// dbaccessor's map comparisons, the simulator and its tools all compare these strings, so
/// every writer must agree to the byte.
pub fn ip_port(ip: std::net::IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

/// The Dqlite address of a controller from its bind IP on the default port: `ip:17666`.
pub fn dqlite_address(ip: std::net::IpAddr) -> String {
    ip_port(ip, DQLITE_PORT)
}

/// An error and its causes on one line, each cause once: the workspace's one way to print
/// an error chain (a failed hook's `ERROR` line, the agent's worker logs). Most errors here
/// print their cause in their own message, because a status, an action's failure or a
/// log line often shows that message alone; std's chain (`{:#}` of an `anyhow::Error`)
/// then names the cause again, and a bad hook tool's answer came out three times. A cause
/// whose message the line already holds is left out.
pub fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let message = error.to_string();
        if !line.contains(&message) {
            line.push_str(": ");
            line.push_str(&message);
        }
        cause = error.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message with an optional cause, printed in the message or not.
    #[derive(Debug)]
    struct Layer {
        message: String,
        cause: Option<Box<Layer>>,
    }

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.message)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.cause
                .as_deref()
                .map(|cause| cause as &(dyn std::error::Error + 'static))
        }
    }

    #[test]
    fn describe_error_names_each_cause_once() {
        let layer = |message: &str, cause: Option<Layer>| Layer {
            message: message.to_owned(),
            cause: cause.map(Box::new),
        };
        // A cause its wrapper prints, under a wrapper that does not print its own.
        let error = layer(
            "worker lease failed",
            Some(layer(
                "cannot read lease k: disk I/O error",
                Some(layer("disk I/O error", None)),
            )),
        );
        assert_eq!(
            describe_error(&error),
            "worker lease failed: cannot read lease k: disk I/O error"
        );
        assert_eq!(describe_error(&layer("alone", None)), "alone");
    }

    #[test]
    fn dqlite_address_brackets_ipv6() {
        let check = |ip: &str, expected: &str| {
            assert_eq!(dqlite_address(ip.parse().expect("test ip")), expected);
        };
        check("10.0.0.5", "10.0.0.5:17666");
        check("fc00::1", "[fc00::1]:17666");
        check("::ffff:10.0.0.5", "[::ffff:10.0.0.5]:17666");
        assert_eq!(
            ip_port("fd00::3".parse().expect("test ip"), 9001),
            "[fd00::3]:9001"
        );
    }
}
