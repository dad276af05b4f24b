//! Reading the controllers' map (`controller.conf`) as the service sees it, and whether an
//! address is this host's.

use std::net::IpAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use controller_contract::conf::ControllerConf;
use controller_contract::status::ConfigSeen;

use crate::decide::MapRead;

/// Reads `controller.conf` into what [`crate::decide::decide`] needs and what the status shows.
pub(crate) fn read_map(path: &Path) -> (MapRead, ConfigSeen) {
    let read_at_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let map = match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => MapRead::Missing,
        Err(e) => MapRead::Unusable(format!("cannot read {}: {e}", path.display())),
        Ok(text) => match ControllerConf::parse(&text) {
            Err(e) => MapRead::Unusable(e.to_string()),
            Ok(conf) if !conf.has_bind_addresses() => {
                MapRead::Unusable("controller.conf has no db-bind-addresses key".into())
            }
            Ok(conf) => MapRead::Map(conf.bind_addresses().clone()),
        },
    };
    let (bind_addresses, error) = match &map {
        MapRead::Missing => (None, Some(format!("{} does not exist", path.display()))),
        MapRead::Unusable(why) => (None, Some(why.clone())),
        MapRead::Map(map) => (Some(map.clone()), None),
    };
    (
        map,
        ConfigSeen {
            read_at_unix,
            bind_addresses,
            error,
        },
    )
}

/// Whether this host has `ip` on one of its interfaces: binding a socket to it says so.
pub(crate) fn host_has_ip(ip: IpAddr) -> bool {
    std::net::TcpListener::bind((ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_map_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let check = |content: Option<&str>, expected: &str| {
            let path = dir.path().join("controller.conf");
            let _ = std::fs::remove_file(&path);
            if let Some(text) = content {
                std::fs::write(&path, text).expect("write");
            }
            let (map, seen) = read_map(&path);
            let got = format!("{map:?}");
            assert!(got.contains(expected), "{content:?} -> {got}");
            assert_eq!(
                seen.bind_addresses.is_some(),
                matches!(map, MapRead::Map(_))
            );
            assert_eq!(seen.error.is_none(), matches!(map, MapRead::Map(_)));
        };
        check(None, "Missing");
        check(Some(""), "Unusable(\"controller.conf is empty\")");
        check(Some("db-bind-addresses: {'0': [\n"), "not valid YAML");
        check(Some("other: 1\n"), "no db-bind-addresses key");
        check(Some("db-bind-addresses:\n  '0': 10.0.0\n"), "not an IP");
        check(
            Some("db-bind-addresses:\n  '0': 127.21.0.1\n"),
            "127.21.0.1",
        );
    }

    #[test]
    fn host_has_ip_table() {
        let check = |ip: &str, expected: bool| {
            assert_eq!(host_has_ip(ip.parse().expect("ip")), expected, "{ip}");
        };
        check("127.21.0.1", true);
        // TEST-NET-1 (RFC 5737) is never assigned to a host.
        check("192.0.2.1", false);
    }
}
