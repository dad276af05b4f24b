//! Where the files and sockets of the contract live, relative to an agent data dir
//! (`/var/lib/juju` on a real machine, a directory under the model for a simulated one).

use std::path::{Path, PathBuf};

/// The data dir of a Juju machine agent.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/juju";

/// The reload socket's file name inside the data dir.
pub const RELOAD_SOCKET_NAME: &str = "configchange.socket";

/// The dbaccessor status socket's file name inside the data dir.
pub const STATUS_SOCKET_NAME: &str = "dbaccessor-status.socket";

/// `<data-dir>/agents/controller-<agent-id>/controller.conf`.
pub fn controller_conf(data_dir: &Path, agent_id: &str) -> PathBuf {
    data_dir
        .join("agents")
        .join(format!("controller-{agent_id}"))
        .join("controller.conf")
}

/// `<data-dir>/configchange.socket`.
pub fn reload_socket(data_dir: &Path) -> PathBuf {
    data_dir.join(RELOAD_SOCKET_NAME)
}

/// `<data-dir>/dbaccessor-status.socket`.
pub fn status_socket(data_dir: &Path) -> PathBuf {
    data_dir.join(STATUS_SOCKET_NAME)
}

/// The lease status file's name inside the data dir.
pub const LEASE_STATUS_NAME: &str = "lease-status.json";

/// `<data-dir>/lease-status.json` (see [`crate::lease`]).
pub fn lease_status(data_dir: &Path) -> PathBuf {
    data_dir.join(LEASE_STATUS_NAME)
}

/// `unit-<app>-<n>` for unit `<app>/<n>`: its agent's tag and dir name.
pub fn unit_tag(unit: &str) -> String {
    format!("unit-{}", unit.replace('/', "-"))
}

/// `<data-dir>/agents/unit-<app>-<n>/leadership.json` (see [`crate::leadership`]).
pub fn unit_leadership(data_dir: &Path, unit: &str) -> PathBuf {
    data_dir
        .join("agents")
        .join(unit_tag(unit))
        .join(crate::leadership::FILE_NAME)
}

/// `<data-dir>/dqlite`: the local Dqlite node's data (mode 0700).
pub fn dqlite_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("dqlite")
}

/// Derives the agent data dir from the charm dir Juju gives a unit:
/// `<data-dir>/agents/unit-<app>-<n>/charm`. Returns `None` when the path has another shape.
pub fn data_dir_from_charm_dir(charm_dir: &Path) -> Option<PathBuf> {
    if charm_dir.file_name()? != "charm" {
        return None;
    }
    let unit_dir = charm_dir.parent()?;
    if !unit_dir.file_name()?.to_str()?.starts_with("unit-") {
        return None;
    }
    let agents = unit_dir.parent()?;
    if agents.file_name()? != "agents" {
        return None;
    }
    agents.parent().map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_from_charm_dir_table() {
        let check = |charm_dir: &str, expected: Option<&str>| {
            assert_eq!(
                data_dir_from_charm_dir(Path::new(charm_dir)),
                expected.map(PathBuf::from),
                "{charm_dir}"
            );
        };
        check(
            "/var/lib/juju/agents/unit-controller-0/charm",
            Some("/var/lib/juju"),
        );
        check("/m/0/agents/unit-controller-12/charm", Some("/m/0"));
        check("/var/lib/juju/agents/unit-controller-0/other", None);
        check("/var/lib/juju/units/unit-controller-0/charm", None);
        check("/var/lib/juju/agents/machine-0/charm", None);
        check("charm", None);
    }

    #[test]
    fn controller_conf_path_shape() {
        assert_eq!(
            controller_conf(Path::new("/var/lib/juju"), "3"),
            PathBuf::from("/var/lib/juju/agents/controller-3/controller.conf")
        );
    }
}
