//! Choosing this controller's Dqlite bind address from the `db-cluster` binding: parse what
//! `network-get` printed, classify every address into Juju's scopes, keep the best tier and
//! say why every other address was dropped.
//!
//! **Architecture Invariant:** no IO; every input is a value and every outcome is a value.

use std::fmt;
use std::net::IpAddr;

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;
use serde::Deserialize;

/// The largest `network-get` output accepted; anything bigger is not a binding's addresses.
pub const MAX_NETWORK_INFO: usize = 256 * 1024;

/// The most addresses considered; a binding with more is refused as malformed.
pub const MAX_ADDRESSES: usize = 1024;

// The scopes are Juju's, shared with the controller agent's API address publisher.
pub use controller_contract::scope::{scope, Scope};

/// The `address-family` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressFamily {
    /// IPv4 preferred within a tier, IPv6 when the tier has no IPv4 address.
    #[default]
    Auto,
    /// IPv4 addresses only.
    Ipv4,
    /// IPv6 addresses only.
    Ipv6,
}

impl fmt::Display for AddressFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressFamily::Auto => "auto",
            AddressFamily::Ipv4 => "ipv4",
            AddressFamily::Ipv6 => "ipv6",
        })
    }
}

/// The operator's restrictions on candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Preferences {
    /// `bind-cidr`: only addresses inside it are candidates.
    pub cidr: Option<IpNetwork>,
    /// `address-family`.
    pub family: AddressFamily,
}

/// Why an address is not the bind address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// The text is not an IP address.
    NotAnIp,
    /// Loopback, link-local, multicast, broadcast or unspecified.
    NeverValid(Scope),
    /// Outside `bind-cidr`.
    OutsideCidr(IpNetwork),
    /// Excluded by `address-family`.
    Family(AddressFamily),
    /// A better tier has a candidate.
    LowerTier { scope: Scope, best: Scope },
    /// IPv6, and the same tier has an IPv4 candidate.
    Ipv4Preferred,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::NotAnIp => f.write_str("not an IP address"),
            DropReason::NeverValid(scope) => write!(f, "{scope}"),
            DropReason::OutsideCidr(cidr) => write!(f, "outside bind-cidr {cidr}"),
            DropReason::Family(family) => write!(f, "excluded by address-family={family}"),
            DropReason::LowerTier { scope, best } => write!(f, "{scope}, a {best} address exists"),
            DropReason::Ipv4Preferred => {
                f.write_str("IPv6, an IPv4 address in the same tier exists")
            }
        }
    }
}

/// One address that was not chosen, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The address as the binding gave it.
    pub address: String,
    /// Why it was dropped.
    pub reason: DropReason,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.address, self.reason)
    }
}

/// The outcome of the address choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Exactly one candidate in the best tier.
    Unique {
        address: IpAddr,
        dropped: Vec<Dropped>,
    },
    /// Several candidates in the best tier: the operator must bind the endpoint to a space.
    Ambiguous {
        candidates: Vec<IpAddr>,
        dropped: Vec<Dropped>,
    },
    /// No usable address at all.
    None { dropped: Vec<Dropped> },
}

impl Choice {
    /// The chosen address, when unique.
    pub fn address(&self) -> Option<IpAddr> {
        match self {
            Choice::Unique { address, .. } => Some(*address),
            _ => None,
        }
    }

    /// Every dropped address with its reason.
    pub fn dropped(&self) -> &[Dropped] {
        match self {
            Choice::Unique { dropped, .. }
            | Choice::Ambiguous { dropped, .. }
            | Choice::None { dropped } => dropped,
        }
    }
}

/// Chooses the bind address among `addresses` (in binding order; duplicates count once).
pub fn choose(addresses: &[String], preferences: &Preferences) -> Choice {
    let mut dropped = Vec::new();
    let mut candidates: Vec<(IpAddr, Scope, &str)> = Vec::new();
    let mut seen: Vec<IpAddr> = Vec::new();
    for text in addresses {
        let Ok(ip) = text.trim().parse::<IpAddr>() else {
            if !dropped.iter().any(|d: &Dropped| d.address == *text) {
                dropped.push(Dropped {
                    address: text.clone(),
                    reason: DropReason::NotAnIp,
                });
            }
            continue;
        };
        let ip = ip.to_canonical();
        if seen.contains(&ip) {
            continue;
        }
        seen.push(ip);
        let drop = |reason| Dropped {
            address: ip.to_string(),
            reason,
        };
        let scope = scope(ip);
        if scope > Scope::Public {
            dropped.push(drop(DropReason::NeverValid(scope)));
        } else if let Some(cidr) = preferences.cidr.filter(|cidr| !cidr.contains(ip)) {
            dropped.push(drop(DropReason::OutsideCidr(cidr)));
        } else if !family_allows(preferences.family, ip) {
            dropped.push(drop(DropReason::Family(preferences.family)));
        } else {
            candidates.push((ip, scope, text));
        }
    }
    let Some(best) = candidates.iter().map(|(_, scope, _)| *scope).min() else {
        return Choice::None { dropped };
    };
    let best_has_ipv4 = candidates
        .iter()
        .any(|(ip, scope, _)| *scope == best && ip.is_ipv4());
    let mut chosen = Vec::new();
    for (ip, scope, _) in candidates {
        if scope != best {
            dropped.push(Dropped {
                address: ip.to_string(),
                reason: DropReason::LowerTier { scope, best },
            });
        } else if ip.is_ipv6() && best_has_ipv4 {
            dropped.push(Dropped {
                address: ip.to_string(),
                reason: DropReason::Ipv4Preferred,
            });
        } else {
            chosen.push(ip);
        }
    }
    match chosen.as_slice() {
        [address] => Choice::Unique {
            address: *address,
            dropped,
        },
        _ => Choice::Ambiguous {
            candidates: chosen,
            dropped,
        },
    }
}

fn family_allows(family: AddressFamily, ip: IpAddr) -> bool {
    match family {
        AddressFamily::Auto => true,
        AddressFamily::Ipv4 => ip.is_ipv4(),
        AddressFamily::Ipv6 => ip.is_ipv6(),
    }
}

/// Why `network-get` output could not be read as a binding's addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error(
        "network-get printed more than the {MAX_NETWORK_INFO} bytes accepted (at least {size})"
    )]
    Oversized { size: usize },
    #[error("network-get printed malformed JSON: {0}")]
    Malformed(String),
    #[error("network-get listed {count} addresses, more than the {MAX_ADDRESSES} accepted")]
    TooManyAddresses { count: usize },
}

/// `network-get --format json` output. Juju omits empty lists, so every key may be missing.
#[derive(Debug, Default, Deserialize)]
struct NetworkInfo {
    #[serde(rename = "bind-addresses", default)]
    bind_addresses: Vec<Interface>,
    #[serde(rename = "ingress-addresses", default)]
    ingress_addresses: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Interface {
    #[serde(default)]
    addresses: Vec<InterfaceAddress>,
}

#[derive(Debug, Default, Deserialize)]
struct InterfaceAddress {
    /// The current key.
    #[serde(default)]
    value: Option<String>,
    /// The older key some Juju versions print instead.
    #[serde(default)]
    address: Option<String>,
    /// The interface's subnet (`10.0.0.0/24`; some versions print the host's own address
    /// with the prefix, `10.0.0.5/24`).
    #[serde(default)]
    cidr: Option<String>,
}

/// What `network-get` says of a binding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    /// Interface addresses first, then ingress addresses, as text.
    pub addresses: Vec<String>,
    /// Address -> its interface's subnet, normalised (`10.0.0.0/24`), where Juju gave one.
    pub subnets: BTreeMap<String, String>,
}

/// Every address of the binding: interface addresses first, then ingress addresses, as text
/// (the choice drops what is not an IP, so the operator sees it named).
pub fn parse_network_info(text: &str) -> Result<Vec<String>, NetworkError> {
    parse_binding(text).map(|binding| binding.addresses)
}

/// The binding as `network-get` prints it: its addresses and their subnets.
pub fn parse_binding(text: &str) -> Result<Binding, NetworkError> {
    if text.len() > MAX_NETWORK_INFO {
        return Err(NetworkError::Oversized { size: text.len() });
    }
    let info: NetworkInfo =
        serde_json::from_str(text).map_err(|e| NetworkError::Malformed(e.to_string()))?;
    let mut binding = Binding::default();
    for address in info.bind_addresses.into_iter().flat_map(|i| i.addresses) {
        let Some(value) = address.value.or(address.address).filter(|a| !a.is_empty()) else {
            continue;
        };
        let subnet = address
            .cidr
            .and_then(|c| c.parse::<IpNetwork>().ok())
            .and_then(|n| IpNetwork::new(n.network(), n.prefix()).ok());
        if let Some(subnet) = subnet {
            binding.subnets.insert(value.clone(), subnet.to_string());
        }
        binding.addresses.push(value);
    }
    binding
        .addresses
        .extend(info.ingress_addresses.into_iter().filter(|a| !a.is_empty()));
    if binding.addresses.len() > MAX_ADDRESSES {
        return Err(NetworkError::TooManyAddresses {
            count: binding.addresses.len(),
        });
    }
    Ok(binding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_binding_reads_subnets() {
        let text = r#"{"bind-addresses":[{"interface-name":"eth0","addresses":[{"value":"10.0.0.5","cidr":"10.0.0.0/24"},{"address":"10.1.0.5","cidr":"10.1.0.5/24"},{"value":"10.2.0.5"},{"value":"10.3.0.5","cidr":"nonsense"}]}],"ingress-addresses":["10.0.0.5"]}"#;
        let binding = parse_binding(text).expect("parses");
        assert_eq!(
            binding.addresses,
            ["10.0.0.5", "10.1.0.5", "10.2.0.5", "10.3.0.5", "10.0.0.5"]
        );
        assert_eq!(binding.subnets.len(), 2);
        assert_eq!(binding.subnets["10.0.0.5"], "10.0.0.0/24");
        assert_eq!(binding.subnets["10.1.0.5"], "10.1.0.0/24");
        assert!(matches!(
            parse_binding("not json"),
            Err(NetworkError::Malformed(_))
        ));
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test ip")
    }

    #[test]
    fn scope_table() {
        let check = |address: &str, expected: Scope| {
            assert_eq!(scope(ip(address)), expected, "{address}");
        };
        check("10.0.0.5", Scope::LocalCloud);
        check("172.16.0.1", Scope::LocalCloud);
        check("172.31.255.254", Scope::LocalCloud);
        check("172.32.0.1", Scope::Public);
        check("192.168.1.5", Scope::LocalCloud);
        check("fc00::1", Scope::LocalCloud);
        check("fd12:3456::1", Scope::LocalCloud);
        check("240.0.0.1", Scope::Fan);
        check("252.10.0.1", Scope::Fan);
        check("127.0.0.1", Scope::LocalMachine);
        check("127.1.2.3", Scope::LocalMachine);
        check("::1", Scope::LocalMachine);
        check("169.254.10.1", Scope::LinkLocal);
        check("fe80::1", Scope::LinkLocal);
        check("224.0.0.1", Scope::NotUnicast);
        check("ff02::1", Scope::NotUnicast);
        check("0.0.0.0", Scope::NotUnicast);
        check("::", Scope::NotUnicast);
        check("255.255.255.255", Scope::NotUnicast);
        check("8.8.8.8", Scope::Public);
        check("2001:db8::1", Scope::Public);
        check("::ffff:10.0.0.1", Scope::LocalCloud);
        check("::ffff:127.0.0.1", Scope::LocalMachine);
    }

    /// The expected outcome in compact form.
    #[derive(Debug, PartialEq)]
    enum Want<'a> {
        Unique(&'a str),
        Ambiguous(&'a [&'a str]),
        None,
    }

    #[test]
    fn choose_table() {
        let check = |addresses: &[&str],
                     cidr: Option<&str>,
                     family: AddressFamily,
                     want: Want,
                     dropped: &[&str]| {
            let preferences = Preferences {
                cidr: cidr.map(|c| c.parse().expect("test cidr")),
                family,
            };
            let addresses: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
            let choice = choose(&addresses, &preferences);
            let got = match &choice {
                Choice::Unique { address, .. } => {
                    format!("{:?}", Want::Unique(&address.to_string()))
                }
                Choice::Ambiguous { candidates, .. } => {
                    let texts: Vec<String> = candidates.iter().map(|c| c.to_string()).collect();
                    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                    format!("{:?}", Want::Ambiguous(&refs))
                }
                Choice::None { .. } => format!("{:?}", Want::None),
            };
            assert_eq!(got, format!("{want:?}"), "{addresses:?} {cidr:?} {family}");
            let got_dropped: Vec<String> = choice.dropped().iter().map(|d| d.to_string()).collect();
            assert_eq!(got_dropped, dropped, "{addresses:?} {cidr:?} {family}");
        };
        use AddressFamily::*;
        // One local-cloud address.
        check(&["10.0.0.5"], None, Auto, Want::Unique("10.0.0.5"), &[]);
        // The same address as bind and ingress address counts once.
        check(
            &["10.0.0.5", "10.0.0.5"],
            None,
            Auto,
            Want::Unique("10.0.0.5"),
            &[],
        );
        // Loopback and link-local are never candidates.
        check(
            &["127.0.0.1", "fe80::1", "169.254.1.1", "10.0.0.5"],
            None,
            Auto,
            Want::Unique("10.0.0.5"),
            &[
                "127.0.0.1 (loopback)",
                "fe80::1 (link-local)",
                "169.254.1.1 (link-local)",
            ],
        );
        check(
            &["127.0.0.1", "::1"],
            None,
            Auto,
            Want::None,
            &["127.0.0.1 (loopback)", "::1 (loopback)"],
        );
        check(&[], None, Auto, Want::None, &[]);
        // Several NICs in the same tier: ambiguous.
        check(
            &["10.0.0.5", "192.168.1.5"],
            None,
            Auto,
            Want::Ambiguous(&["10.0.0.5", "192.168.1.5"]),
            &[],
        );
        // The local-cloud tier beats fan and public.
        check(
            &["8.8.4.4", "240.1.2.3", "10.0.0.5"],
            None,
            Auto,
            Want::Unique("10.0.0.5"),
            &[
                "8.8.4.4 (public, a local-cloud address exists)",
                "240.1.2.3 (fan, a local-cloud address exists)",
            ],
        );
        // Fan beats public.
        check(
            &["8.8.4.4", "252.0.1.2"],
            None,
            Auto,
            Want::Unique("252.0.1.2"),
            &["8.8.4.4 (public, a fan address exists)"],
        );
        // Only public: public is used.
        check(
            &["203.0.113.7"],
            None,
            Auto,
            Want::Unique("203.0.113.7"),
            &[],
        );
        // IPv4 before IPv6 within a tier; a local-cloud IPv6 still beats a public IPv4.
        check(
            &["fc00::1", "10.0.0.5"],
            None,
            Auto,
            Want::Unique("10.0.0.5"),
            &["fc00::1 (IPv6, an IPv4 address in the same tier exists)"],
        );
        check(
            &["203.0.113.7", "fc00::1"],
            None,
            Auto,
            Want::Unique("fc00::1"),
            &["203.0.113.7 (public, a local-cloud address exists)"],
        );
        check(
            &["fc00::1", "fc00::2"],
            None,
            Auto,
            Want::Ambiguous(&["fc00::1", "fc00::2"]),
            &[],
        );
        // The family option.
        check(
            &["10.0.0.5", "fc00::1"],
            None,
            Ipv6,
            Want::Unique("fc00::1"),
            &["10.0.0.5 (excluded by address-family=ipv6)"],
        );
        check(
            &["fc00::1", "10.0.0.5"],
            None,
            Ipv4,
            Want::Unique("10.0.0.5"),
            &["fc00::1 (excluded by address-family=ipv4)"],
        );
        check(
            &["fc00::1"],
            None,
            Ipv4,
            Want::None,
            &["fc00::1 (excluded by address-family=ipv4)"],
        );
        // The CIDR option resolves a multi-NIC machine.
        check(
            &["10.0.0.5", "192.168.1.5"],
            Some("192.168.0.0/16"),
            Auto,
            Want::Unique("192.168.1.5"),
            &["10.0.0.5 (outside bind-cidr 192.168.0.0/16)"],
        );
        check(
            &["fc00::1", "fd00::1"],
            Some("fd00::/8"),
            Auto,
            Want::Unique("fd00::1"),
            &["fc00::1 (outside bind-cidr fd00::/8)"],
        );
        // Non-IP strings are named, never guessed at (and never split on ':').
        check(
            &["not-an-ip", "10.0.0.5:17666", "fe80::1%eth0", "10.0.0.5"],
            None,
            Auto,
            Want::Unique("10.0.0.5"),
            &[
                "not-an-ip (not an IP address)",
                "10.0.0.5:17666 (not an IP address)",
                "fe80::1%eth0 (not an IP address)",
            ],
        );
    }

    #[test]
    fn parse_network_info_table() {
        let check = |text: &str, expected: Result<Vec<&str>, NetworkError>| {
            let expected = expected.map(|v| v.into_iter().map(str::to_owned).collect::<Vec<_>>());
            assert_eq!(parse_network_info(text), expected, "{text}");
        };
        check(
            r#"{"bind-addresses":[{"mac-address":"00:11:22:33:44:22","interface-name":"eth2","addresses":[{"hostname":"","value":"10.20.1.42","cidr":"10.20.1.0/24"},{"hostname":"","value":"fc00::1","cidr":"fc00::/64"}]}],"egress-subnets":["10.20.1.0/24"],"ingress-addresses":["10.20.1.42","fc00::1"]}"#,
            Ok(vec!["10.20.1.42", "fc00::1", "10.20.1.42", "fc00::1"]),
        );
        // Juju omits empty lists.
        check("{}", Ok(vec![]));
        check(
            r#"{"bind-addresses":[{"interface-name":"eth0"}]}"#,
            Ok(vec![]),
        );
        // The older `address` key.
        check(
            r#"{"bind-addresses":[{"addresses":[{"address":"10.0.0.9"}]}]}"#,
            Ok(vec!["10.0.0.9"]),
        );
        check(r#"{"ingress-addresses":["x"]}"#, Ok(vec!["x"]));
        assert!(matches!(
            parse_network_info(""),
            Err(NetworkError::Malformed(_))
        ));
        assert!(matches!(
            parse_network_info("{\"bind-addresses\":"),
            Err(NetworkError::Malformed(_))
        ));
        assert!(matches!(
            parse_network_info("[1,2]"),
            Err(NetworkError::Malformed(_))
        ));
        assert!(matches!(
            parse_network_info(r#"{"ingress-addresses":[5]}"#),
            Err(NetworkError::Malformed(_))
        ));
        let huge = format!(
            "{{\"ingress-addresses\":[{}]}}",
            vec!["\"10.0.0.1\""; 40_000].join(",")
        );
        assert_eq!(
            parse_network_info(&huge),
            Err(NetworkError::Oversized { size: huge.len() })
        );
        let many = format!(
            "{{\"ingress-addresses\":[{}]}}",
            vec!["\"10.0.0.1\""; 2000].join(",")
        );
        assert_eq!(
            parse_network_info(&many),
            Err(NetworkError::TooManyAddresses { count: 2000 })
        );
    }
}
