//! The Juju controller charm: compiled hook handlers that choose this controller's Dqlite
//! bind address, agree on every controller's address through the `db-cluster` peer relation,
//! and write the map into `controller.conf` for the dbaccessor.
//!
//! A hook is observe -> plan -> apply:
//! - [`event`]: which hook or action runs, from Juju's environment (pure).
//! - [`tools`]: the hook tools, through one runner (IO).
//! - [`config`]: the options, validated (pure).
//! - [`address`]: the address choice by Juju's scopes (pure).
//! - [`plan`]: the relation writes, the controller.conf map and the status (pure).
//! - [`conffile`]: controller.conf on disk, written atomically (IO).
//! - [`reload`]: the reload socket client (IO).
//! - [`hook`]: observe and apply around the plan (IO).
//! - [`memo`]: what the last hook read and showed, so that relation hooks skip tool calls.
//! - [`service_unit`]: the optional dbaccessor systemd service (`run-dbaccessor`) (IO).
//! - [`actions`]: `bind-candidates`, `cluster-status` and `recover-cluster`.
#![forbid(unsafe_code)]

pub mod actions;
pub mod address;
pub mod conffile;
pub mod config;
pub mod event;
pub mod hook;
pub mod memo;
pub mod plan;
pub mod reload;
pub mod service_unit;
pub mod status;
pub mod status_socket;
pub mod tools;

use event::{Event, Hook, HookEnv};
use hook::HookError;
use tools::HookTools;

/// Handles the event. An `Err` means the hook must fail so that Juju retries it.
pub fn run(env: &HookEnv) -> Result<(), HookError> {
    let tools = HookTools;
    match &env.event {
        Event::Hook(hook) => {
            if matches!(hook, Hook::Install | Hook::UpgradeCharm) {
                tools.application_version_set(env!("CARGO_PKG_VERSION"))?;
            }
            hook::converge(&tools, env, None)
        }
        Event::Relation(relation) => hook::converge(&tools, env, Some(relation)),
        Event::Action(name) => actions::run(&tools, env, name),
        Event::Unhandled(name) => hook::unhandled(&tools, name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use controller_contract::describe_error;
    use tools::ToolError;

    #[test]
    fn a_tool_errors_line_names_each_cause_once() {
        let parse = serde_json::from_str::<bool>("{").expect_err("not a boolean");
        let cause = parse.to_string();
        let error = HookError::Tool(ToolError::Parse {
            tool: "is-leader".into(),
            source: parse,
        });
        let line = describe_error(&error);
        assert_eq!(
            line,
            format!(
                "hook tool failed: is-leader printed output that is not what Juju prints: {cause}"
            )
        );
        assert_eq!(line.matches(&cause).count(), 1, "{line}");
        // A wrapper that does not repeat its cause gets it appended.
        let wrapped = anyhow::Error::new(error).context("cluster-status failed");
        assert_eq!(
            describe_error(wrapped.as_ref()),
            format!("cluster-status failed: {line}")
        );
    }
}
