//! The actions: `bind-candidates` (the address choice: every address with its scope and
//! why it was kept or dropped, and the command that fixes an ambiguity), `cluster-status`
//! (this unit's address, controller.conf, the dbaccessor's state, the Dqlite members with
//! their reachability, a health verdict and the leases from the agent's lease-status file) and `recover-cluster` (the operator's way out
//! after losing quorum for good: never run by a hook).
//!
//! Results go through `action-set` as dotted keys (`members.1.address=...`), so
//! `juju run controller/0 cluster-status` prints nested YAML. Whatever the operator must fix
//! (bad input, a dbaccessor that does not answer, a refused recovery) ends in `action-fail`
//! with the reason, after the results gathered so far; the process still exits 0.

mod bind_candidates;
mod cluster_status;
mod recover_cluster;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::event::HookEnv;
use crate::hook::HookError;
use crate::tools::HookTools;

pub use bind_candidates::describe_choice;
pub use cluster_status::{describe_leases, describe_probe, health_line};
pub use recover_cluster::{describe_recovered, plan_recovery, RecoveryPlan};

/// Action results: dotted keys to values.
pub type Results = BTreeMap<String, String>;

/// Runs action `name`. Failures the operator can act on end in `action-fail` and exit 0.
pub fn run(tools: &HookTools, env: &HookEnv, name: &str) -> Result<(), HookError> {
    let outcome = match name {
        "bind-candidates" => bind_candidates::run(tools, env),
        "cluster-status" => cluster_status::run(tools, env),
        "recover-cluster" => recover_cluster::run(tools, env),
        other => Ok((Results::new(), Some(format!("unknown action {other:?}")))),
    };
    let (results, failure) = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            // The action fails either way (exit 1); the message is what `juju run` shows
            // in place of a bare exit status. action-fail may be the broken tool itself.
            let _ = tools.action_fail(&controller_contract::describe_error(&error));
            return Err(error);
        }
    };
    if !results.is_empty() {
        tools.action_set(&results)?;
    }
    if let Some(message) = failure {
        tools.action_fail(&message)?;
    }
    Ok(())
}

/// What an action reports, and why it failed if it did.
pub(crate) type Outcome = (Results, Option<String>);

/// A boolean action parameter (absent: false).
fn flag(params: &Map<String, Value>, name: &str) -> Result<bool, String> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(value)) => Ok(*value),
        Some(other) => Err(format!("{name} must be true or false, not {other}")),
    }
}
