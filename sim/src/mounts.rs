//! Each simulated machine's private view of `/var/lib/juju`: a hook, or a machine agent, runs
//! in a mount namespace of its own in which `/var/lib/juju` is its machine's data dir
//! (`<model>/machines/<id>/var/lib/juju`), so that a charm using Juju's fixed paths finds its
//! machine's files and never the host's.
//!
//! The namespace is made by util-linux's `unshare --mount` (private propagation, so nothing
//! mounted inside reaches the host) and the bind mount by `mount --bind` in a shell that then
//! `exec`s the program: the program keeps the wrapper's pid and its own `argv[0]`, as Juju
//! runs it. The host needs an (empty) `/var/lib/juju` to mount over; [`ensure_mount_point`]
//! makes it when it is missing, and nothing is ever written below it on the host.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

/// Where Juju keeps an agent's data on a machine.
pub const JUJU_DATA_DIR: &str = "/var/lib/juju";

/// The shell step that mounts `$0` on `/var/lib/juju` and becomes the program (`"$@"`).
const MOUNT_AND_EXEC: &str = "mount --bind \"$0\" /var/lib/juju && exec \"$@\"";

/// [`MOUNT_AND_EXEC`] with a working dir (`$1`) entered after the mount, so that it may lie
/// below `/var/lib/juju`.
const MOUNT_CD_AND_EXEC: &str =
    "mount --bind \"$0\" /var/lib/juju && cd \"$1\" && shift && exec \"$@\"";

/// Makes the host's `/var/lib/juju` mount point (an empty dir) when it does not exist.
pub fn ensure_mount_point() -> std::io::Result<()> {
    std::fs::create_dir_all(JUJU_DATA_DIR)
}

/// A command that runs `program` in `working_dir` in a new mount namespace in which
/// `/var/lib/juju` is `data_dir`. Arguments and environment are set on the returned command
/// as on any other (they follow the program).
pub fn in_machine_mounts(data_dir: &Path, program: &Path, working_dir: &Path) -> Command {
    let mut command = Command::new("unshare");
    command
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            MOUNT_CD_AND_EXEC,
        ])
        .arg(data_dir)
        .arg(working_dir)
        .arg(program);
    command
}

/// What to put between `ip netns exec <ns>` and the program so that it runs with
/// `/var/lib/juju` bound to `data_dir` (`ip netns exec` already gives the process a mount
/// namespace of its own, with slave propagation, so the bind mount stays inside it).
pub fn bind_prefix(data_dir: &Path) -> Vec<OsString> {
    vec![
        "sh".into(),
        "-c".into(),
        MOUNT_AND_EXEC.into(),
        data_dir.as_os_str().to_owned(),
    ]
}
