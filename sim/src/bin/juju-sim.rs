//! `juju-sim`: the HA simulator's command line; see [`juju_sim::commands`].
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    match juju_sim::commands::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "ERROR {}",
                controller_contract::describe_error(error.as_ref())
            );
            std::process::ExitCode::FAILURE
        }
    }
}
