//! The charm's own dbaccessor as a systemd service, set up only when the `run-dbaccessor`
//! option asks for it (a Juju 4 controller agent runs its own, so the default is off).
//! Every hook checks it idempotently: the unit file is written (from
//! `packaging/jujud-dbaccessor.service` in the charm), `systemctl daemon-reload` and
//! `enable --now` run only when the file changes; switching the option off disables and
//! removes it.
//!
//! The agent id passed to the daemon is `JUJU_MACHINE_ID`: only right for machine
//! controllers, which is why this is opt-in (see docs/operations.md).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tools::{Status, StatusKind};

/// The systemd unit's name.
pub const UNIT_NAME: &str = "jujud-dbaccessor.service";
/// The template inside the charm.
pub const TEMPLATE: &str = "packaging/jujud-dbaccessor.service";
/// Where systemd looks for units an administrator installs.
pub const SYSTEMD_DIR: &str = "/etc/systemd/system";
/// Present while systemd runs as PID 1 (what `sd_booted` checks).
const SYSTEMD_RUNNING: &str = "/run/systemd/system";

/// The unit file for this controller. Pure.
pub fn render(template: &str, charm_dir: &Path, data_dir: &Path, agent_id: &str) -> String {
    template
        .replace("@CHARM_DIR@", &charm_dir.display().to_string())
        .replace("@DATA_DIR@", &data_dir.display().to_string())
        .replace("@AGENT_ID@", agent_id)
}

/// Brings the service in line with the option. `Ok(None)`: nothing to report; `Ok(Some)`:
/// a status that replaces the hook's (blocked when the option cannot be honoured).
pub fn ensure(wanted: bool, charm_dir: &Path, data_dir: &Path) -> Option<Status> {
    let unit_path = PathBuf::from(SYSTEMD_DIR).join(UNIT_NAME);
    if !wanted {
        if unit_path.exists() {
            return remove(&unit_path).err().map(blocked);
        }
        return None;
    }
    setup(&unit_path, charm_dir, data_dir).err().map(blocked)
}

fn blocked(why: String) -> Status {
    Status::new(StatusKind::Blocked, format!("run-dbaccessor: {why}"))
}

fn setup(unit_path: &Path, charm_dir: &Path, data_dir: &Path) -> Result<(), String> {
    if !Path::new(SYSTEMD_RUNNING).is_dir() {
        return Err(format!(
            "systemd is not running on this machine ({SYSTEMD_RUNNING} is missing); run the \
             dbaccessor another way or set run-dbaccessor=false"
        ));
    }
    let agent_id = std::env::var("JUJU_MACHINE_ID")
        .map_err(|_| "JUJU_MACHINE_ID is not set: cannot tell the controller id".to_owned())?;
    let binary = charm_dir.join("bin/dbaccessor");
    if !binary.is_file() {
        return Err(format!("{} is missing from the charm", binary.display()));
    }
    let template_path = charm_dir.join(TEMPLATE);
    let template = std::fs::read_to_string(&template_path)
        .map_err(|e| format!("cannot read {}: {e}", template_path.display()))?;
    let unit = render(&template, charm_dir, data_dir, &agent_id);
    if std::fs::read_to_string(unit_path).ok().as_deref() == Some(unit.as_str()) {
        return Ok(());
    }
    std::fs::write(unit_path, unit)
        .map_err(|e| format!("cannot write {}: {e}", unit_path.display()))?;
    systemctl(&["daemon-reload"])?;
    // restart as well as enable: a changed unit (a new charm dir after upgrade-charm) must
    // take effect now.
    systemctl(&["enable", UNIT_NAME])?;
    systemctl(&["restart", UNIT_NAME])
}

fn remove(unit_path: &Path) -> Result<(), String> {
    systemctl(&["disable", "--now", UNIT_NAME])?;
    std::fs::remove_file(unit_path)
        .map_err(|e| format!("cannot remove {}: {e}", unit_path.display()))?;
    systemctl(&["daemon-reload"])
}

fn systemctl(args: &[&str]) -> Result<(), String> {
    let output = Command::new("systemctl").args(args).output().map_err(|e| {
        format!(
            "cannot run systemctl {}: {e} (is systemd installed?)",
            args.join(" ")
        )
    })?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "systemctl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_every_placeholder() {
        let template = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packaging/jujud-dbaccessor.service"
        ))
        .expect("the packaged unit exists");
        let unit = render(
            &template,
            Path::new("/var/lib/juju/agents/unit-controller-0/charm"),
            Path::new("/var/lib/juju"),
            "0",
        );
        assert!(!unit.contains('@'), "{unit}");
        assert!(
            unit.contains(
                "ExecStart=/var/lib/juju/agents/unit-controller-0/charm/bin/dbaccessor \
                 --agent-id 0 --data-dir /var/lib/juju"
            ),
            "{unit}"
        );
    }
}
