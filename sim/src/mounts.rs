//! Each simulated machine's private view of `/var/lib/juju`: a hook, or a machine agent, runs
//! in a mount namespace of its own in which `/var/lib/juju` is its machine's data dir
//! (`<model>/machines/<id>/var/lib/juju`), so that a charm using Juju's fixed paths finds its
//! machine's files and never the host's.
//!
//! A hook's namespace is made by the thread that spawns it ([`enter_machine_mounts`]:
//! `unshare(CLONE_NEWNS)`, every mount made private, then the bind mount), so the charm's
//! program is exec'd directly, keeping its pid and `argv[0]` as Juju runs it, with no wrapper
//! process per hook (before, `unshare`, `sh` and `mount` ran for every hook: a tenth of the
//! CPU of `enable-ha -n 7`). A machine agent, started once, gets the same view from
//! `mount --bind` in a shell between `ip netns exec` and the agent ([`bind_prefix`]). The host
//! needs an (empty) `/var/lib/juju` to mount over; [`ensure_mount_point`] makes it when it is
//! missing, and nothing is ever written below it on the host.

use std::ffi::OsString;
use std::path::Path;

use rustix::mount::MountPropagationFlags;
use rustix::thread::UnshareFlags;

/// Where Juju keeps an agent's data on a machine.
pub const JUJU_DATA_DIR: &str = "/var/lib/juju";

/// The shell step that mounts `$0` on `/var/lib/juju` and becomes the program (`"$@"`).
const MOUNT_AND_EXEC: &str = "mount --bind \"$0\" /var/lib/juju && exec \"$@\"";

/// Makes the host's `/var/lib/juju` mount point (an empty dir) when it does not exist.
pub fn ensure_mount_point() -> std::io::Result<()> {
    std::fs::create_dir_all(JUJU_DATA_DIR)
}

/// Moves the calling thread into a new mount namespace in which `/var/lib/juju` is
/// `data_dir`; every process the thread spawns from then on starts there. Call it only on a
/// thread made for one hook (see `runner::run_command`): the thread keeps this view until it
/// ends, and no other thread's view changes (mount namespaces, and the working dir that
/// `CLONE_NEWNS` unshares with them, are per thread).
///
/// Every mount is made private first, as `unshare --mount` does, so that the bind mount
/// never reaches the host's namespace.
pub fn enter_machine_mounts(data_dir: &Path) -> std::io::Result<()> {
    // rustix deprecates its safe `unshare` because `CLONE_FILES` can leave other threads
    // holding descriptors this thread no longer has; `NEWNS` (and the `CLONE_FS` it implies)
    // leaves the descriptor table shared and whole, so the call is sound here, and this crate
    // keeps `forbid(unsafe_code)`.
    #[allow(deprecated)]
    rustix::thread::unshare(UnshareFlags::NEWNS)?;
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )?;
    rustix::mount::mount_bind(data_dir, JUJU_DATA_DIR)?;
    Ok(())
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
