//! The charm's own dbaccessor as a systemd service, set up only when the `run-dbaccessor`
//! option asks for it (a Juju 4 controller agent runs its own, so the default is off).
//! Every hook observes it (`observe`), the pure plan decides (`plan::plan_service`: the unit
//! file from `packaging/jujud-dbaccessor.service` in the charm is written, and systemd
//! reloaded, enabled and restarted, only when the file changes; switching the option off
//! disables and removes it), and `apply` carries the change out.
//!
//! The agent id passed to the daemon is `JUJU_MACHINE_ID`: only right for machine
//! controllers, which is why this is opt-in (see docs/operations.md).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::plan::{ServiceChange, ServiceView};

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

/// Observes the service: the option, the installed unit file, and (when wanted) the unit
/// file this controller should have or why it cannot have one.
pub fn observe(wanted: bool, charm_dir: &Path, data_dir: &Path) -> ServiceView {
    let unit_path = PathBuf::from(SYSTEMD_DIR).join(UNIT_NAME);
    // A unit file that exists but cannot be read counts as installed (and different).
    let installed = unit_path
        .exists()
        .then(|| std::fs::read_to_string(&unit_path).unwrap_or_default());
    let rendered = wanted.then(|| wanted_unit(charm_dir, data_dir));
    ServiceView {
        wanted,
        installed,
        rendered,
    }
}

/// The unit file this controller should have, or why it cannot have one.
fn wanted_unit(charm_dir: &Path, data_dir: &Path) -> Result<String, String> {
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
    Ok(render(&template, charm_dir, data_dir, &agent_id))
}

/// Carries out the planned change; `Err` says why it failed (the hook's status then says
/// `run-dbaccessor: <why>`).
pub fn apply(change: &ServiceChange) -> Result<(), String> {
    let unit_path = PathBuf::from(SYSTEMD_DIR).join(UNIT_NAME);
    match change {
        ServiceChange::Install(unit) => {
            std::fs::write(&unit_path, unit)
                .map_err(|e| format!("cannot write {}: {e}", unit_path.display()))?;
            systemctl(&["daemon-reload"])?;
            // restart as well as enable: a changed unit (a new charm dir after upgrade-charm)
            // must take effect now.
            systemctl(&["enable", UNIT_NAME])?;
            systemctl(&["restart", UNIT_NAME])
        }
        ServiceChange::Remove => {
            systemctl(&["disable", "--now", UNIT_NAME])?;
            std::fs::remove_file(&unit_path)
                .map_err(|e| format!("cannot remove {}: {e}", unit_path.display()))?;
            systemctl(&["daemon-reload"])
        }
    }
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
