//! Reading the controllers' map (`controller.conf`) as the service sees it, and whether an
//! address is this host's.

use std::net::IpAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use controller_contract::conf::{self, ControllerConf};
use controller_contract::files::{self, Contents};
use controller_contract::status::ConfigSeen;

use crate::decide::MapRead;

/// Reads `controller.conf` into what [`crate::decide::decide`] needs and what the status shows.
pub(crate) fn read_map(path: &Path) -> (MapRead, ConfigSeen) {
    let read_at_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Non-blocking and capped: a FIFO, a device or a huge file in the map's place must not
    // hold this (async) loop up or fill the memory; it is an unusable map, said so.
    let read = files::read_capped(path, conf::MAX_BYTES, "controller.conf");
    let map = match read {
        Ok(Contents::Missing) => MapRead::Missing,
        Ok(Contents::Refused(why)) => MapRead::Unusable(why),
        Err(e) => MapRead::Unusable(format!("cannot read {}: {e}", path.display())),
        Ok(Contents::Bytes(bytes)) => match String::from_utf8(bytes) {
            Err(_) => MapRead::Unusable("controller.conf is not UTF-8 text".into()),
            Ok(text) => match ControllerConf::parse(&text) {
                Err(e) => MapRead::Unusable(e.to_string()),
                Ok(conf) if !conf.has_bind_addresses() => {
                    MapRead::Unusable("controller.conf has no db-bind-addresses key".into())
                }
                Ok(conf) => MapRead::Map(conf.bind_addresses().clone()),
            },
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

    /// What a fault or an operator leaves in the map's place is an unusable map at once:
    /// never waited on (the loop is async), never read whole.
    #[test]
    fn a_fifo_a_dir_or_a_huge_file_is_unusable_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("controller.conf");
        let status = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("run mkfifo");
        assert!(status.success());
        let (sender, receiver) = std::sync::mpsc::channel();
        let fifo = path.clone();
        std::thread::spawn(move || sender.send(format!("{:?}", read_map(&fifo).0)));
        let got = receiver
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a FIFO is refused at once");
        assert!(got.contains("controller.conf is a FIFO"), "{got}");
        std::fs::remove_file(&path).expect("remove the FIFO");

        std::fs::create_dir(&path).expect("a dir in its place");
        let (map, seen) = read_map(&path);
        assert!(format!("{map:?}").contains("is a directory"), "{map:?}");
        assert!(seen.error.is_some_and(|e| e.contains("is a directory")));
        std::fs::remove_dir(&path).expect("remove the dir");

        let file = std::fs::File::create(&path).expect("create");
        file.set_len(conf::MAX_BYTES + 1)
            .expect("a sparse huge file");
        let (map, _) = read_map(&path);
        assert!(format!("{map:?}").contains("more than the"), "{map:?}");
        std::fs::write(&path, b"db-bind-addresses:\n  '0': \xff\n").expect("write");
        assert!(format!("{:?}", read_map(&path).0).contains("not UTF-8"));
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
