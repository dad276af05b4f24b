//! The shell around [`crate::plan`]: observe the world through hook tools, the reload socket
//! and controller.conf; plan; apply the plan. Errors here are the ones that fail the hook
//! (Juju retries it); everything an operator must fix becomes a status instead.

use std::path::PathBuf;

use controller_contract::paths;

use crate::actions;
use crate::address::{self, Choice, NetworkError};
use crate::conffile::{self, ConfFileError};
use crate::config::{CharmConfig, ConfigError, Paths};
use crate::event::{Event, Hook, HookEnv, RelationEvent, RelationKind, PEER_ENDPOINT};
use crate::memo::{self, Memo};
use crate::plan::{self, ConfView, Membership, Observed, PeerView, Plan};
use crate::reload::{self, ReloadError};
use crate::service_unit;
use crate::tools::{self, HookTools, Level, Status, StatusKind, ToolError};

/// Why a hook fails (exit non-zero, so Juju retries it and shows the error).
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("hook tool failed: {0}")]
    Tool(#[from] ToolError),
    #[error(transparent)]
    ConfFile(#[from] ConfFileError),
    /// `network-get` exited 0 but printed something Juju never prints: a failed tool.
    #[error("hook tool failed: {0}")]
    NetworkOutput(NetworkError),
}

/// Everything observed, plus what apply needs beyond the plan's input.
#[derive(Debug)]
pub struct World {
    /// The plan's input.
    pub observed: Observed,
    /// The resolved paths, when the options are valid.
    pub paths: Option<Paths>,
    /// controller.conf's path, when the agent id is known.
    pub conf_path: Option<PathBuf>,
    /// The `run-dbaccessor` option (false when the options are invalid).
    pub run_dbaccessor: bool,
    /// What was read (options, binding) and the status last shown, to save after the hook.
    pub memo: Memo,
    /// The memo as the hook found it (saving an unchanged memo is skipped).
    pub memo_on_disk: Memo,
}

/// The options (with their paths), or the bad one.
pub type ConfigObserved = Result<(CharmConfig, Paths), ConfigError>;

/// The address choice, or why the binding could not be read; `None` without valid options.
pub type ChoiceObserved = Option<Result<Choice, NetworkError>>;

/// Reads the options and the address choice; shared by hooks and actions. A relation hook
/// takes both from `memo` when it holds them (see [`memo`]); the returned memo holds what was
/// used, to be saved with the hook's status.
pub fn observe_address(
    tools: &HookTools,
    env: &HookEnv,
    memo: &Memo,
) -> Result<(ConfigObserved, ChoiceObserved, Memo), HookError> {
    let reuse = memo::may_reuse_inputs(&env.event);
    let mut used = memo.clone();
    let options = match memo.options.as_ref().filter(|_| reuse) {
        Some(options) => options.clone(),
        None => {
            // Fresh options may change the binding's answer (bind-cidr, address-family).
            used.network = None;
            tools.config_get()?
        }
    };
    let config = CharmConfig::parse(&options).and_then(|config| {
        let paths = config.paths(&env.charm_dir)?;
        Ok((config, paths))
    });
    used.options = Some(options);
    let choice = match &config {
        Err(_) => None,
        Ok((config, _)) => {
            let text = match used.network.as_ref().filter(|_| reuse) {
                Some(text) => Ok(text.clone()),
                None => tools.network_get(PEER_ENDPOINT),
            };
            used.network = None;
            Some(match text {
                Ok(text) => {
                    let choice = address::parse_network_info(&text)
                        .map(|addresses| address::choose(&addresses, &config.preferences));
                    if choice.is_ok() {
                        used.network = Some(text);
                    }
                    choice
                }
                Err(ToolError::Oversized { size, .. }) => Err(NetworkError::Oversized { size }),
                Err(error) => return Err(error.into()),
            })
        }
    };
    Ok((config, choice, used))
}

/// Reads the agent id from the reload socket, as a plan input (`Err` is a waiting message).
pub fn observe_agent_id(paths: &Paths) -> Result<String, String> {
    reload::agent_id(&paths.reload_socket).map_err(|error| match error {
        ReloadError::Absent { path } | ReloadError::Refused { path } => format!(
            "waiting for the controller agent's reload socket {} (not up yet)",
            path.display()
        ),
        other => format!("waiting for the controller agent: {other}"),
    })
}

/// Observes everything a handled hook needs.
pub fn observe(
    tools: &HookTools,
    env: &HookEnv,
    relation_event: Option<&RelationEvent>,
    remembered: &Memo,
) -> Result<World, HookError> {
    let is_leader = tools.is_leader()?;
    let (config, choice, memo) = observe_address(tools, env, remembered)?;
    let paths = config.as_ref().ok().map(|(_, paths)| paths.clone());
    let run_dbaccessor = config
        .as_ref()
        .is_ok_and(|(config, _)| config.run_dbaccessor);
    let agent_id = paths.as_ref().map(observe_agent_id);

    let membership = match relation_event {
        Some(event) if event.kind == RelationKind::Broken => Membership::Broken,
        Some(event)
            if event.kind == RelationKind::Departed
                && event.departing_unit.as_deref() == Some(env.unit.as_str()) =>
        {
            Membership::Departing
        }
        _ => Membership::Member,
    };
    let relation = match membership {
        Membership::Member => observe_relation(tools, env, relation_event, is_leader)?,
        // The relation is going away: its bags no longer matter to this unit.
        Membership::Departing | Membership::Broken => None,
    };

    let conf_path = match (&paths, &agent_id) {
        (Some(paths), Some(Ok(id))) => Some(paths::controller_conf(&paths.data_dir, id)),
        _ => None,
    };
    let conf = match &conf_path {
        Some(path) => Some(ConfView {
            path: path.display().to_string(),
            on_disk: conffile::read(path)?,
        }),
        None => None,
    };
    Ok(World {
        observed: Observed {
            unit: env.unit.clone(),
            is_leader,
            install: matches!(env.event, Event::Hook(Hook::Install)),
            config: config.map(drop),
            choice,
            agent_id,
            relation,
            membership,
            conf,
        },
        paths,
        conf_path,
        run_dbaccessor,
        memo,
        memo_on_disk: remembered.clone(),
    })
}

/// The peer relation's bags (the lowest-numbered `db-cluster` relation; there is one). In a
/// `db-cluster` relation hook Juju names it in `JUJU_RELATION_ID`, which saves a tool call.
/// A non-leader reads only the bags [`plan::peer_bags_to_read`] says its plan can use.
fn observe_relation(
    tools: &HookTools,
    env: &HookEnv,
    relation_event: Option<&RelationEvent>,
    is_leader: bool,
) -> Result<Option<PeerView>, HookError> {
    let id = match relation_event {
        Some(event) => event.relation_id.clone(),
        None => match tools.relation_ids(PEER_ENDPOINT)?.into_iter().next() {
            Some(id) => id,
            None => return Ok(None),
        },
    };
    let own = tools.relation_get(&id, &env.unit, false)?;
    let app_name = env
        .unit
        .split_once('/')
        .map_or(env.unit.as_str(), |(app, _)| app);
    let app = tools.relation_get(&id, app_name, true)?;
    let listed = tools.relation_list(&id)?;
    let to_read = plan::peer_bags_to_read(is_leader, &app, &listed);
    let mut peers = std::collections::BTreeMap::new();
    for unit in listed {
        let bag = if to_read.contains(&unit) {
            tools.relation_get(&id, &unit, false)?
        } else {
            plan::Bag::new()
        };
        peers.insert(unit, bag);
    }
    Ok(Some(PeerView {
        id,
        own,
        app,
        peers,
    }))
}

/// Carries out the plan. The order puts what can fail before what cannot be taken back:
/// the relation writes (held by Juju until the hook exits 0), the decisions printed, and
/// the status (its message made printable first, so `status-set` has nothing to refuse)
/// come before controller.conf is replaced and the agent told; only a failed reload then
/// changes the status once more.
pub fn apply(tools: &HookTools, env: &HookEnv, world: &World, plan: Plan) -> Result<(), HookError> {
    if let Some(relation) = &world.observed.relation {
        if !plan.unit_writes.is_empty() {
            tools.relation_set(&relation.id, false, &plan.unit_writes)?;
        }
        if !plan.app_writes.is_empty() {
            tools.relation_set(&relation.id, true, &plan.app_writes)?;
        }
    }
    // Juju logs a hook's stdout at DEBUG and its stderr at WARNING: printing there records
    // the decisions without a juju-log process per line (a hook-tool call costs far more than
    // everything else the charm does). Peers' data may appear in a line: it is made
    // printable so that it cannot forge other log lines.
    for (level, line) in &plan.log {
        let line = tools::printable(line);
        match level {
            Level::Warning => eprintln!("WARNING {line}"),
            Level::Debug | Level::Info => println!("{line}"),
        }
    }
    let mut memo = world.memo.clone();
    set_status(tools, env, &mut memo, &world.memo_on_disk, &plan.status)?;
    if let Some(dir) = world.conf_path.as_deref().and_then(|path| path.parent()) {
        // A hook killed mid-write leaves a temp file; the next hook removes it whether or not
        // it writes. Failing to is only worth a warning: the leftover harms nothing.
        if let Err(error) = conffile::remove_leftovers(dir) {
            eprintln!("WARNING {}", tools::printable(&error.to_string()));
        }
    }
    if let (Some(conf), Some(path), Some(paths)) = (&plan.conf, &world.conf_path, &world.paths) {
        if conffile::write_if_changed(path, &conf.render())? {
            if let Err(error) = reload::reload(&paths.reload_socket) {
                // The file is in place; the agent reads it when it (re)starts.
                let status = Status::new(
                    StatusKind::Waiting,
                    format!("controller.conf updated but the agent was not told: {error}"),
                );
                set_status(tools, env, &mut memo, &world.memo_on_disk, &status)?;
            }
        }
    }
    Ok(())
}

/// Runs a handled hook to the end.
pub fn converge(
    tools: &HookTools,
    env: &HookEnv,
    relation_event: Option<&RelationEvent>,
) -> Result<(), HookError> {
    let world = observe(tools, env, relation_event, &memo::load(&env.charm_dir))?;
    // Malformed output is a failed tool, like a non-zero exit: Juju retries the hook and
    // nothing is committed. (Actions report it through action-fail instead.)
    if let Some(Err(error @ NetworkError::Malformed(_))) = &world.observed.choice {
        return Err(HookError::NetworkOutput(error.clone()));
    }
    let mut plan = plan::plan(&world.observed);
    if let Some(paths) = &world.paths {
        if let Some(status) =
            service_unit::ensure(world.run_dbaccessor, &env.charm_dir, &paths.data_dir)
        {
            plan.status = status;
        }
    }
    publish_log_position(&world, env, &mut plan);
    apply(tools, env, &world, plan)
}

/// Sets `status` unless the memo shows it set already (and the event does not always set
/// it), then saves the memo with it and what this hook read. A failed `status-set` forgets
/// the memo, so that the next hook sets its status whatever the memo said.
fn set_status(
    tools: &HookTools,
    env: &HookEnv,
    memo: &mut Memo,
    on_disk: &Memo,
    status: &Status,
) -> Result<(), HookError> {
    let unchanged = memo.shows(status) && !memo::must_set_status(&env.event);
    if !unchanged {
        if let Err(error) = tools.status_set(status) {
            if let Err(forget) = memo::forget(&env.charm_dir) {
                eprintln!("WARNING cannot remove the hook memo: {forget}");
            }
            return Err(error.into());
        }
        memo.set_status(status);
    }
    if *memo == *on_disk {
        return Ok(());
    }
    if let Err(error) = memo::save(&env.charm_dir, memo) {
        // Only a cache: the next hook reads everything afresh.
        eprintln!(
            "WARNING cannot save the hook memo in {}: {}",
            env.charm_dir.display(),
            tools::printable(&error.to_string())
        );
    }
    Ok(())
}

/// Adds this node's last log position (`db-log-position`) to the unit bag, so that
/// `recover-cluster` on another unit can compare logs after this machine is gone.
///
/// Publishing it from every hook would never settle: every write to the database moves the
/// position, and every publication fires `relation-changed` on each peer, whose hook would
/// publish its own moved position in turn. So only `update-status` publishes while a leader
/// is known (every 5 minutes; the peers' hooks it fires do not publish back), and any hook
/// publishes while no leader is known: without a leader the log cannot grow, the positions
/// stand still and the exchange settles, which is exactly when `recover-cluster` needs them.
/// A dbaccessor that does not answer changes nothing.
fn publish_log_position(world: &World, env: &HookEnv, plan: &mut Plan) {
    let (Some(relation), Some(paths)) = (&world.observed.relation, &world.paths) else {
        return;
    };
    if world.observed.membership != Membership::Member {
        return;
    }
    let Some(leader_known) = actions::local_leader_known(&paths.data_dir) else {
        return;
    };
    if !should_publish(&env.event, leader_known) {
        return;
    }
    let Some(position) = actions::local_log_position(&paths.data_dir) else {
        return;
    };
    let text = position.to_string();
    if relation.own.get(actions::LOG_POSITION_KEY) != Some(&text) {
        plan.unit_writes
            .insert(actions::LOG_POSITION_KEY.to_owned(), text);
    }
}

/// Whether a hook publishes the log position (see [`publish_log_position`]).
fn should_publish(event: &Event, leader_known: bool) -> bool {
    !leader_known || matches!(event, Event::Hook(Hook::UpdateStatus))
}

/// Logs an unhandled hook at debug level.
pub fn unhandled(tools: &HookTools, name: &str) -> Result<(), HookError> {
    tools.juju_log(
        Level::Debug,
        &format!("hook {name} is not handled by this charm"),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::RelationEvent;

    #[test]
    fn log_position_publication_table() {
        let check = |event: Event, leader_known: bool, expected: bool| {
            assert_eq!(
                should_publish(&event, leader_known),
                expected,
                "{event:?} leader known: {leader_known}"
            );
        };
        let changed = || {
            Event::Relation(RelationEvent {
                kind: RelationKind::Changed,
                relation_id: "db-cluster:0".into(),
                remote_unit: Some("controller/1".into()),
                departing_unit: None,
            })
        };
        // With a leader the log moves: only the 5-minute update-status publishes.
        check(Event::Hook(Hook::UpdateStatus), true, true);
        check(Event::Hook(Hook::ConfigChanged), true, false);
        check(changed(), true, false);
        // Without a leader the log stands still: every hook keeps the value current.
        check(Event::Hook(Hook::UpdateStatus), false, true);
        check(Event::Hook(Hook::ConfigChanged), false, true);
        check(changed(), false, true);
    }
}
