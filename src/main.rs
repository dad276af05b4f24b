//! `dispatch`: the charm's one entry point. Juju runs it for every hook and action; it reads
//! the event from the environment and hands it to the library. Exit 0 commits the hook's
//! relation writes; a non-zero exit (printed on stderr with its causes) makes Juju retry.
//!
//! Its `main` is C's, called by glibc's start-up, not std's: see [`main`].
#![no_main]
#![deny(unsafe_code)]

use std::io::Write;
use std::os::fd::IntoRawFd;

use anyhow::Context;
use rustix::event::{poll, PollFd, PollFlags, Timespec};

/// Names a file to which, at exit, the process's own CPU time (every thread of it, none of
/// the hook tools it ran) is appended in nanoseconds. Benchmarks only (`benches/hook.rs`):
/// Juju never sets it, and a failure to write it is ignored.
const CPU_FILE_VARIABLE: &str = "CONTROLLER_CHARM_CPU_FILE";

/// The heap: dlmalloc instead of the libc's malloc. The charm's dispatch is linked against
/// musl (scripts/build-dispatch.sh), whose allocator hands freed pages back to the kernel at
/// once: strace of one map-change hook counts 20 mmap and 17 munmap calls with it, 9 and 6
/// with dlmalloc, which keeps what it got for the process's short life (the rest are musl's
/// own, a pair per tool spawn). An unmap after a spawn also has to flush the other CPU's TLB
/// (the vfork child ran there in this address space), a costly interrupt on a VM. Paired runs
/// of the hook bench, 20 each: 0.19 ms less CPU in the map-change hook, 0.11 ms less in the
/// steady state (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// The exit status of a hook or action that failed, and of a panic (std's own code for one).
const FAILED: i32 = 1;
const PANICKED: i32 = 101;

/// The process's entry point, in place of std's runtime start-up.
///
/// Juju execs dispatch for every hook and action, and std's start-up costs about 90 µs of
/// CPU on a VM (of a 2 ms budget per hook): it reads `/proc/self/maps` to find the main
/// thread's stack guard, maps an alternate signal stack for its stack-overflow message, and
/// ignores SIGPIPE. dispatch needs none of it: a stack overflow still kills it (SIGSEGV,
/// without the message), its socket writes pass MSG_NOSIGNAL (std's), and a write to a
/// closed stdout fails the hook either way. The one guard it needs, fds 0-2 open, is kept
/// ([`open_standard_fds`]); `std::env::args` still works (glibc hands argv to std's
/// initialiser), and a panic still exits with status 101.
#[allow(unsafe_code)] // `no_mangle` is the one unsafe item: it exports C's `main`.
#[unsafe(no_mangle)]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    open_standard_fds();
    let code = std::panic::catch_unwind(dispatch).unwrap_or(PANICKED);
    // std's start-up would flush stdout at exit; every line printed ends in a newline, but a
    // last partial one must not be lost.
    let _ = std::io::stdout().flush();
    code
}

/// Runs the event and reports a failure on stderr; returns the exit status.
fn dispatch() -> i32 {
    let code = match run() {
        Ok(()) => 0,
        Err(error) => {
            eprintln!(
                "ERROR {}",
                controller_contract::describe_error(error.as_ref())
            );
            FAILED
        }
    };
    if let Some(path) = std::env::var_os(CPU_FILE_VARIABLE) {
        let cpu = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        let nanos = u128::try_from(cpu.tv_sec).unwrap_or(0) * 1_000_000_000
            + u128::try_from(cpu.tv_nsec).unwrap_or(0);
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| file.write_all(format!("{nanos}\n").as_bytes()));
    }
    code
}

fn run() -> anyhow::Result<()> {
    let argv0 = std::env::args().next().unwrap_or_default();
    let env = controller_charm::event::from_env(|name| std::env::var(name).ok(), &argv0)
        .context("cannot tell which event to handle")?;
    controller_charm::run(&env).with_context(|| format!("{} failed", env.name))
}

/// Opens `/dev/null` on each of fds 0-2 that is closed, as std's start-up does, so that no
/// file opened later (controller.conf's temp file) can become this process's stdout. `open`
/// takes the lowest free fd, so filling them in order puts each where it belongs.
fn open_standard_fds() {
    let standard = [
        rustix::stdio::stdin(),
        rustix::stdio::stdout(),
        rustix::stdio::stderr(),
    ];
    let mut fds = standard.map(|fd| PollFd::from_borrowed_fd(fd, PollFlags::empty()));
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    if poll(&mut fds, Some(&now)).is_err() {
        return;
    }
    for fd in &fds {
        if fd.revents().contains(PollFlags::NVAL) {
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                // Kept open for the life of the process and inherited, like the fd it
                // stands in for (std opens files close-on-exec).
                Ok(null) => {
                    let _ = rustix::io::fcntl_setfd(&null, rustix::io::FdFlags::empty());
                    let _ = null.into_raw_fd();
                }
                Err(_) => std::process::abort(),
            }
        }
    }
}
