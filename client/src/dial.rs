//! Which addresses a client dials, in which order, and what it keeps after a login. Pure
//! functions: no IO, no clock.
//!
//! - [`usable_endpoints`]: the addresses of a login's `servers` list a client may use:
//!   every controller's, in the order sent, without machine-local and link-local ones
//!   (Juju's `FilterUnusableHostPorts`) and without duplicates. Spaces play no part:
//!   `juju-mgmt-space` restricts what agents use, never what clients get.
//! - [`endpoints_after_login`]: the new `api-endpoints`: the address that worked first.
//! - [`dial_schedule`]: when each attempt starts: the first address at once, each next one
//!   a stagger later (or as soon as every attempt started so far has failed).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use controller_contract::api::HostPort;

/// Whether a client may dial `host`: not machine-local, not link-local (by the scope the
/// server sent, and by the address itself in case the scope is missing).
pub fn usable(host: &HostPort) -> bool {
    if matches!(host.scope.as_str(), "local-machine" | "link-local") {
        return false;
    }
    match host.value.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => !ip.is_loopback() && !ip.is_link_local() && !ip.is_unspecified(),
        Ok(IpAddr::V6(ip)) => {
            !ip.is_loopback() && !ip.is_unicast_link_local() && !ip.is_unspecified()
        }
        Err(_) => false,
    }
}

/// The usable `ip:port` addresses of `servers`, in the order sent, each once.
pub fn usable_endpoints(servers: &[Vec<HostPort>]) -> Vec<String> {
    let mut endpoints: Vec<String> = Vec::new();
    for host in servers.iter().flatten().filter(|h| usable(h)) {
        if let Some(address) = host.socket_address() {
            let address = address.to_string();
            if !endpoints.contains(&address) {
                endpoints.push(address);
            }
        }
    }
    endpoints
}

/// The `api-endpoints` to store after a login through `used`: `used` first (kept even when
/// the list does not name it: it is the one address known to work from here), then the
/// usable addresses of `servers`. A list with no usable address (a controller that has not
/// published yet) tells nothing: the `stored` addresses stay, `used` first.
pub fn endpoints_after_login(
    servers: &[Vec<HostPort>],
    used: &str,
    stored: &[String],
) -> Vec<String> {
    let mut others = usable_endpoints(servers);
    if others.is_empty() {
        others = stored.to_vec();
    }
    let mut endpoints = vec![used.to_owned()];
    for address in others {
        if !endpoints.contains(&address) {
            endpoints.push(address);
        }
    }
    endpoints
}

/// One planned dial attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The address as stored.
    pub endpoint: String,
    /// The address parsed; `None` when the stored text is not `ip:port` (the attempt then
    /// fails at once, and says so).
    pub address: Option<SocketAddr>,
    /// When it starts, from the first attempt's start, unless every earlier attempt has
    /// already failed (then it starts at once).
    pub start_after: Duration,
}

/// The attempts for `endpoints` (stored order, each once): attempt `i` starts at
/// `i * stagger`.
pub fn dial_schedule(endpoints: &[String], stagger: Duration) -> Vec<Attempt> {
    let mut seen: Vec<&str> = Vec::new();
    let mut attempts = Vec::new();
    for endpoint in endpoints {
        if seen.contains(&endpoint.as_str()) {
            continue;
        }
        seen.push(endpoint);
        let index = u32::try_from(attempts.len()).unwrap_or(u32::MAX);
        attempts.push(Attempt {
            endpoint: endpoint.clone(),
            address: endpoint.parse().ok(),
            start_after: stagger.saturating_mul(index),
        });
    }
    attempts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(value: &str, scope: &str, space: &str) -> HostPort {
        HostPort {
            value: value.into(),
            kind: if value.contains(':') { "ipv6" } else { "ipv4" }.into(),
            scope: scope.into(),
            space_name: space.into(),
            port: 17070,
        }
    }

    #[test]
    fn usable_endpoints_table() {
        let check = |servers: Vec<Vec<HostPort>>, expected: &[&str]| {
            assert_eq!(usable_endpoints(&servers), expected, "{servers:?}");
        };
        check(vec![], &[]);
        // Every controller's usable addresses, in the order sent.
        check(
            vec![
                vec![
                    host("10.0.0.10", "local-cloud", "alpha"),
                    host("127.0.0.1", "local-machine", ""),
                    host("::1", "local-machine", ""),
                ],
                vec![
                    host("fe80::1", "link-local", ""),
                    host("10.0.0.11", "local-cloud", "alpha"),
                    host("10.1.0.11", "local-cloud", "mgmt"),
                ],
                vec![host("203.0.113.12", "public", "")],
            ],
            &[
                "10.0.0.10:17070",
                "10.0.0.11:17070",
                "10.1.0.11:17070",
                "203.0.113.12:17070",
            ],
        );
        // The address decides too when the scope is missing or wrong; a duplicate once;
        // a name that is no IP is left out.
        check(
            vec![
                vec![host("127.0.0.5", "", ""), host("169.254.1.1", "public", "")],
                vec![
                    host("fd00::5", "local-cloud", ""),
                    host("fd00::5", "local-cloud", ""),
                ],
                vec![host("controller.example", "public", "")],
            ],
            &["[fd00::5]:17070"],
        );
    }

    #[test]
    fn the_address_used_goes_first_and_the_rest_follow_the_servers_list() {
        let servers = vec![
            vec![host("10.0.0.10", "local-cloud", "")],
            vec![host("10.0.0.11", "local-cloud", "")],
            vec![host("10.0.0.12", "local-cloud", "")],
        ];
        let stored = vec!["10.0.0.99:17070".to_owned()];
        let check = |used: &str, expected: &[&str]| {
            assert_eq!(
                endpoints_after_login(&servers, used, &stored),
                expected,
                "{used}"
            );
        };
        check(
            "10.0.0.11:17070",
            &["10.0.0.11:17070", "10.0.0.10:17070", "10.0.0.12:17070"],
        );
        check(
            "10.0.0.10:17070",
            &["10.0.0.10:17070", "10.0.0.11:17070", "10.0.0.12:17070"],
        );
        // An address outside the list (a proxy, say) still worked: it stays first.
        check(
            "192.0.2.1:17070",
            &[
                "192.0.2.1:17070",
                "10.0.0.10:17070",
                "10.0.0.11:17070",
                "10.0.0.12:17070",
            ],
        );
        // The servers list replaces what was stored, however different.
        assert!(!endpoints_after_login(&servers, "10.0.0.10:17070", &stored).contains(&stored[0]));
        // An empty list (or one of unusable addresses only) keeps what was stored.
        let stored: Vec<String> = ["10.0.0.10:17070", "10.0.0.11:17070"]
            .iter()
            .map(|e| (*e).to_owned())
            .collect();
        let local_only = vec![vec![host("127.0.0.1", "local-machine", "")]];
        for servers in [vec![], local_only] {
            assert_eq!(
                endpoints_after_login(&servers, "10.0.0.11:17070", &stored),
                ["10.0.0.11:17070", "10.0.0.10:17070"]
            );
        }
    }

    #[test]
    fn dial_schedule_table() {
        let ms = Duration::from_millis;
        let check = |endpoints: &[&str], expected: &[(&str, bool, u64)]| {
            let endpoints: Vec<String> = endpoints.iter().map(|e| (*e).to_owned()).collect();
            let got: Vec<(String, bool, Duration)> = dial_schedule(&endpoints, ms(200))
                .into_iter()
                .map(|a| (a.endpoint, a.address.is_some(), a.start_after))
                .collect();
            let expected: Vec<(String, bool, Duration)> = expected
                .iter()
                .map(|(e, parsed, at)| ((*e).to_owned(), *parsed, ms(*at)))
                .collect();
            assert_eq!(got, expected, "{endpoints:?}");
        };
        check(&[], &[]);
        check(&["10.0.0.11:17070"], &[("10.0.0.11:17070", true, 0)]);
        // The stored order is the dial order: the last good address first.
        check(
            &["10.0.0.12:17070", "10.0.0.10:17070", "10.0.0.11:17070"],
            &[
                ("10.0.0.12:17070", true, 0),
                ("10.0.0.10:17070", true, 200),
                ("10.0.0.11:17070", true, 400),
            ],
        );
        // A duplicate is dialled once; text that is no address is an attempt that fails.
        check(
            &[
                "[fd00::1]:17070",
                "nonsense",
                "[fd00::1]:17070",
                "10.0.0.10:17070",
            ],
            &[
                ("[fd00::1]:17070", true, 0),
                ("nonsense", false, 200),
                ("10.0.0.10:17070", true, 400),
            ],
        );
    }
}
