//! `juju-hook-tool`: the hook-tool emulator's process. Linked under each tool's name
//! (`network-get`, `relation-set`, ...) it answers as that tool from the model file named by
//! `JUJU_SIM_STATE`, or else by `JUJU_AGENT_SOCKET_ADDRESS` (where the runner puts it so that
//! the charm sees only Juju's own variables). Run under its own name it takes the tool name as
//! its first argument, or `reload-responder --socket PATH --agent-id ID` to stand in for the
//! controller agent's reload socket until killed.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Context};
use juju_sim::responder;
use juju_sim::runner::HOOK_TOOL_BINARY;
use juju_sim::tools::{run_tool, Caller};
use juju_sim::Store;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    let argv0 = if args.is_empty() {
        String::new()
    } else {
        args.remove(0)
    };
    let mut tool = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if tool == HOOK_TOOL_BINARY {
        if args.is_empty() {
            eprintln!("ERROR usage: {HOOK_TOOL_BINARY} <tool> [args...] | reload-responder --socket PATH --agent-id ID");
            return ExitCode::from(2);
        }
        tool = args.remove(0);
        if tool == "reload-responder" {
            return match reload_responder(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ERROR {e:#}");
                    ExitCode::from(1)
                }
            };
        }
    }
    let Some(state_path) = std::env::var_os("JUJU_SIM_STATE")
        .or_else(|| std::env::var_os("JUJU_AGENT_SOCKET_ADDRESS"))
        .map(PathBuf::from)
    else {
        eprintln!("ERROR no model: set JUJU_SIM_STATE to the model's state file");
        return ExitCode::from(1);
    };
    let caller = Caller {
        context_id: std::env::var("JUJU_CONTEXT_ID").ok(),
        unit_name: std::env::var("JUJU_UNIT_NAME").ok(),
    };
    let store = Store::new(state_path);
    match store.update(|state| run_tool(state, &caller, &tool, &args)) {
        Ok(output) => {
            // A closed stdout or stderr is the caller's choice; the exit code still tells.
            let _ = std::io::stdout().write_all(output.stdout.as_bytes());
            let _ = std::io::stderr().write_all(output.stderr.as_bytes());
            ExitCode::from(u8::try_from(output.code).unwrap_or(1))
        }
        Err(e) => {
            eprintln!("ERROR {e}");
            ExitCode::from(1)
        }
    }
}

/// Serves a reload socket until the process is killed, logging each request on stderr.
fn reload_responder(args: &[String]) -> anyhow::Result<()> {
    let mut socket = None;
    let mut agent_id = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--socket" => socket = iter.next().cloned(),
            "--agent-id" => agent_id = iter.next().cloned(),
            other => bail!("unknown argument {other:?}"),
        }
    }
    let socket = socket.context("--socket PATH is required")?;
    let agent_id = agent_id.context("--agent-id ID is required")?;
    let listener = responder::bind(Path::new(&socket))
        .with_context(|| format!("cannot listen on {socket}"))?;
    eprintln!("reload-responder: serving agent {agent_id} on {socket}");
    let never = AtomicBool::new(false);
    responder::serve(&listener, &agent_id, &never, |request| {
        eprintln!("reload-responder: {} {}", request.method, request.path);
    });
    Ok(())
}
