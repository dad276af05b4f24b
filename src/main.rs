//! `dispatch`: the charm's one entry point. Juju runs it for every hook and action; it reads
//! the event from the environment and hands it to the library. Exit 0 commits the hook's
//! relation writes; a non-zero exit (printed on stderr with its cause chain) makes Juju retry.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context;

/// Names a file to which, at exit, the process's own CPU time (every thread of it, none of
/// the hook tools it ran) is appended in nanoseconds. Benchmarks only (`benches/hook.rs`):
/// Juju never sets it, and a failure to write it is ignored.
const CPU_FILE_VARIABLE: &str = "CONTROLLER_CHARM_CPU_FILE";

fn main() -> ExitCode {
    let code = match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ERROR {error:#}");
            ExitCode::FAILURE
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
            .and_then(|mut file| {
                std::io::Write::write_all(&mut file, format!("{nanos}\n").as_bytes())
            });
    }
    code
}

fn run() -> anyhow::Result<()> {
    let argv0 = std::env::args().next().unwrap_or_default();
    let env = controller_charm::event::from_env(|name| std::env::var(name).ok(), &argv0)
        .context("cannot tell which event to handle")?;
    controller_charm::run(&env).with_context(|| format!("{} failed", env.name))
}
