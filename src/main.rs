//! `dispatch`: the charm's one entry point. Juju runs it for every hook and action; it reads
//! the event from the environment and hands it to the library. Exit 0 commits the hook's
//! relation writes; a non-zero exit (printed on stderr with its cause chain) makes Juju retry.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ERROR {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let argv0 = std::env::args().next().unwrap_or_default();
    let env = controller_charm::event::from_env(|name| std::env::var(name).ok(), &argv0)
        .context("cannot tell which event to handle")?;
    controller_charm::run(&env).with_context(|| format!("{} failed", env.name))
}
