//! Juju's address scopes (`core/network`): which network an IP address belongs to, and so
//! who can reach it. Shared by the charm (choosing the Dqlite bind address) and the
//! controller agent (classifying the API addresses it publishes).
//!
//! **Architecture Invariant:** no IO; a pure function of the address.

use std::fmt;
use std::net::IpAddr;
use std::sync::LazyLock;

use ipnetwork::IpNetwork;

/// Juju's address scopes (`core/network`), best tier first among the usable ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// RFC 1918 and IPv6 unique-local: the tier a cluster should use.
    LocalCloud,
    /// The fan overlay (240.0.0.0/4): usable when no local-cloud address exists.
    Fan,
    /// Any other global unicast address.
    Public,
    /// Loopback: never valid, other machines cannot reach it.
    LocalMachine,
    /// Link-local: never valid, it only works on one link.
    LinkLocal,
    /// Multicast, broadcast or unspecified: never an address of a node.
    NotUnicast,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::LocalCloud => "local-cloud",
            Scope::Fan => "fan",
            Scope::Public => "public",
            Scope::LocalMachine => "loopback",
            Scope::LinkLocal => "link-local",
            Scope::NotUnicast => "not unicast",
        })
    }
}

fn net(text: &str) -> IpNetwork {
    text.parse().expect("the scope table holds valid networks")
}

/// Networks checked in order; the first that contains an address gives its scope.
static SCOPES: LazyLock<Vec<(IpNetwork, Scope)>> = LazyLock::new(|| {
    vec![
        (net("127.0.0.0/8"), Scope::LocalMachine),
        (net("::1/128"), Scope::LocalMachine),
        (net("0.0.0.0/32"), Scope::NotUnicast),
        (net("::/128"), Scope::NotUnicast),
        (net("255.255.255.255/32"), Scope::NotUnicast),
        (net("169.254.0.0/16"), Scope::LinkLocal),
        (net("fe80::/10"), Scope::LinkLocal),
        (net("224.0.0.0/4"), Scope::NotUnicast),
        (net("ff00::/8"), Scope::NotUnicast),
        (net("10.0.0.0/8"), Scope::LocalCloud),
        (net("172.16.0.0/12"), Scope::LocalCloud),
        (net("192.168.0.0/16"), Scope::LocalCloud),
        (net("fc00::/7"), Scope::LocalCloud),
        (net("240.0.0.0/4"), Scope::Fan),
    ]
});

/// The scope of an address (IPv4-mapped IPv6 addresses count as their IPv4 address).
pub fn scope(ip: IpAddr) -> Scope {
    let ip = ip.to_canonical();
    SCOPES
        .iter()
        .find(|(network, _)| network.contains(ip))
        .map_or(Scope::Public, |(_, scope)| *scope)
}

impl Scope {
    /// The scope's name in Juju's API (`core/network.Scope`), as `servers` in a login
    /// answer carries it.
    pub fn juju_name(self) -> &'static str {
        match self {
            Scope::LocalCloud => "local-cloud",
            Scope::Fan => "local-fan",
            Scope::Public => "public",
            Scope::LocalMachine => "local-machine",
            Scope::LinkLocal => "link-local",
            Scope::NotUnicast => "unknown",
        }
    }

    /// Whether agents on other machines may dial an address of this scope: Juju drops
    /// machine-local and link-local addresses from agents' lists.
    pub fn usable_by_agents(self) -> bool {
        matches!(self, Scope::LocalCloud | Scope::Fan | Scope::Public)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn juju_names_and_agent_use_table() {
        let check = |address: &str, name: &str, agents: bool| {
            let scope = scope(address.parse().expect("test ip"));
            assert_eq!(
                (scope.juju_name(), scope.usable_by_agents()),
                (name, agents),
                "{address}"
            );
        };
        check("10.0.0.1", "local-cloud", true);
        check("fd00::1", "local-cloud", true);
        check("240.1.0.1", "local-fan", true);
        check("8.8.8.8", "public", true);
        check("127.0.0.1", "local-machine", false);
        check("::1", "local-machine", false);
        check("169.254.1.1", "link-local", false);
        check("fe80::1", "link-local", false);
        check("224.0.0.1", "unknown", false);
        check("::ffff:10.1.2.3", "local-cloud", true);
    }
}
