//! `juju-hook-tool`: the hook-tool emulator's process. Linked under each tool's name
//! (`network-get`, `relation-set`, ...) it answers as that tool from the model file named by
//! `JUJU_SIM_STATE`, or else by `JUJU_AGENT_SOCKET_ADDRESS` (where the runner puts it so that
//! the charm sees only Juju's own variables). Run under its own name it takes the tool name as
//! its first argument, or one of:
//! - `run --state FILE --unit UNIT [--relation ID --remote-unit U] HOOK|action:NAME`: runs one
//!   hook of a unit with Juju's environment (the runner of `juju_sim::runner`);
//! - `show --state FILE`: prints statuses, relation bags, action results and log lines;
//! - `reload-responder --socket PATH --agent-id ID`: stands in for the controller agent's
//!   reload socket until killed.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Context};
use juju_sim::responder;
use juju_sim::runner::HOOK_TOOL_BINARY;
use juju_sim::tools::{run_tool, Caller};
use juju_sim::{Invocation, Runner, Store};
use std::collections::BTreeMap;

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
        let command = match tool.as_str() {
            "reload-responder" => Some(reload_responder(&args)),
            "run" => Some(run_hook(&args)),
            "show" => Some(show(&args)),
            _ => None,
        };
        if let Some(result) = command {
            return match result {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("ERROR {}", controller_contract::describe_error(e.as_ref()));
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
    // `--file -` reads the settings from standard input, before the model is locked.
    let stdin = if juju_sim::tools::reads_stdin(&tool, &args) {
        let mut text = String::new();
        match std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
            Ok(_) => Some(text),
            Err(e) => {
                eprintln!("ERROR cannot read standard input: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    let caller = Caller {
        context_id: std::env::var("JUJU_CONTEXT_ID").ok(),
        unit_name: std::env::var("JUJU_UNIT_NAME").ok(),
        stdin,
    };
    let store = Store::new(state_path);
    let run = |state: &mut _| run_tool(state, &caller, &tool, &args);
    let outcome = if juju_sim::tools::is_read_only(&tool) {
        store.read_only(run)
    } else {
        store.update(run)
    };
    match outcome {
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

/// Reads `--name value` options; every option must be one of `known`.
fn options(
    args: &[String],
    known: &[&str],
) -> anyhow::Result<(BTreeMap<String, String>, Vec<String>)> {
    let mut values = BTreeMap::new();
    let mut positional = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.strip_prefix("--") {
            Some(name) if known.contains(&name) => {
                let value = iter
                    .next()
                    .with_context(|| format!("--{name} needs a value"))?;
                values.insert(name.to_owned(), value.clone());
            }
            Some(name) => bail!("unknown option --{name}"),
            None => positional.push(arg.clone()),
        }
    }
    Ok((values, positional))
}

/// `run --state FILE --unit UNIT [--relation ID] [--remote-unit U] [--departing-unit U]
/// [--params JSON] (HOOK | action:NAME)`: runs one hook or action of a unit with Juju's
/// environment, commits or discards its relation writes, and exits with its exit code.
fn run_hook(args: &[String]) -> anyhow::Result<ExitCode> {
    let (values, positional) = options(
        args,
        &[
            "state",
            "unit",
            "relation",
            "remote-unit",
            "departing-unit",
            "params",
        ],
    )?;
    let state = PathBuf::from(values.get("state").context("--state FILE is required")?);
    let unit = values.get("unit").context("--unit UNIT is required")?;
    let [name] = positional.as_slice() else {
        bail!("give exactly one hook name (or action:NAME)");
    };
    let invocation = if let Some(action) = name.strip_prefix("action:") {
        let params = values.get("params").map_or("{}", String::as_str);
        let params: serde_json::Value =
            serde_json::from_str(params).context("--params is not a JSON object")?;
        Invocation::action(action, params)
    } else if let Some(relation) = values.get("relation") {
        let kind = name
            .rsplit_once("-relation-")
            .map(|(_, kind)| kind)
            .with_context(|| format!("{name} is not a relation hook"))?;
        let mut invocation = Invocation::relation(
            kind,
            relation,
            values.get("remote-unit").map(String::as_str),
        );
        if let (
            Invocation::Hook {
                relation: Some(relation),
                ..
            },
            Some(departing),
        ) = (&mut invocation, values.get("departing-unit"))
        {
            relation.departing_unit = Some(departing.clone());
        }
        invocation
    } else {
        Invocation::hook(name)
    };
    let hook_tool = std::env::current_exe().context("cannot find this executable")?;
    let tools_dir = state.with_extension("tools");
    let runner = Runner::new(Store::new(&state), &hook_tool, &tools_dir)?;
    let outcome = runner.run(unit, &invocation)?;
    let _ = std::io::stdout().write_all(outcome.stdout.as_bytes());
    let _ = std::io::stderr().write_all(outcome.stderr.as_bytes());
    let verdict = if outcome.skipped {
        "skipped (no handler)".to_owned()
    } else if matches!(invocation, Invocation::Action { .. }) {
        let state = runner.store().load()?;
        let record = state
            .actions
            .last()
            .context("the runner records every action")?;
        format!(
            "{} {}",
            record.outcome,
            record.action.failed.clone().unwrap_or_default()
        )
    } else if outcome.committed {
        "exit 0, relation writes committed".to_owned()
    } else {
        format!("exit {:?}, relation writes discarded", outcome.exit_code)
    };
    println!("{unit}: {} -> {verdict}", invocation.dispatch_path());
    Ok(if outcome.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `show --state FILE`: statuses, relation bags, action results and log lines, for people.
fn show(args: &[String]) -> anyhow::Result<ExitCode> {
    let (values, _) = options(args, &["state"])?;
    let state = Store::new(values.get("state").context("--state FILE is required")?).load()?;
    println!("units:");
    for (name, unit) in &state.units {
        let status = unit.status.as_ref().map_or("unknown".to_owned(), |s| {
            format!("{}: {}", s.status, s.message)
        });
        let leader = if state.is_leader(name) {
            " (leader)"
        } else {
            ""
        };
        println!("  {name}{leader}  machine {}  {status}", unit.machine);
    }
    for (id, relation) in &state.relations {
        println!("relation {id}:");
        for (app, bag) in &relation.app_bags {
            println!("  app bag {app}: {}", serde_json::to_string(bag)?);
        }
        for (unit, bag) in &relation.unit_bags {
            println!("  unit bag {unit}: {}", serde_json::to_string(bag)?);
        }
    }
    for record in &state.actions {
        println!(
            "action {} on {}: {} {}",
            record.action.name,
            record.unit,
            record.outcome,
            serde_json::to_string(&record.action.results)?
        );
    }
    println!("juju-log:");
    for line in &state.juju_log {
        println!("  {} {}: {}", line.unit, line.level, line.message);
    }
    Ok(ExitCode::SUCCESS)
}

/// Serves a reload socket until the process is killed, logging each request on stderr.
fn reload_responder(args: &[String]) -> anyhow::Result<ExitCode> {
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
    Ok(ExitCode::SUCCESS)
}
