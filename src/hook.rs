//! The shell around [`crate::plan`]: observe the world through hook tools, the reload socket
//! and controller.conf; plan; apply the plan. Errors here are the ones that fail the hook
//! (Juju retries it); everything an operator must fix becomes a status instead.

use std::collections::BTreeMap;
use std::path::PathBuf;

use controller_contract::paths;

use crate::address::{self, Choice, NetworkError};
use crate::conffile::{self, ConfFileError};
use crate::config::{CharmConfig, ConfigError, Paths};
use crate::event::{Event, Hook, HookEnv, RelationEvent, RelationKind, PEER_ENDPOINT};
use crate::memo::{self, Memo, PeerBags};
use crate::plan::{self, ConfView, Membership, Observed, PeerView, Plan};
use crate::reload::{self, ReloadError};
use crate::service_unit;
use crate::status::{printable, Level, Status, StatusKind};
use crate::status_socket;
use crate::tools::{HookTools, ToolError};

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
    let (config, choice, mut memo) = observe_address(tools, env, remembered)?;
    let paths = config.as_ref().ok().map(|(_, paths)| paths.clone());
    // The agent id never changes for a machine: a relation hook takes it from the memo (a
    // map change still meets the agent at `POST /reload`); other hooks ask the socket.
    let remembered_id = memo
        .agent_id
        .take()
        .filter(|_| memo::may_reuse_inputs(&env.event));
    let agent_id = paths.as_ref().map(|paths| match remembered_id {
        Some(id) => Ok(id),
        None => observe_agent_id(paths),
    });
    memo.agent_id = agent_id.clone().and_then(Result::ok);

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
    // The memo keeps the peer bags of this hook only, if it reads any.
    memo.peers = None;
    let relation = match membership {
        Membership::Member => {
            let reusable = remembered.reusable_bags(&env.event);
            let (view, known) = observe_relation(tools, env, relation_event, is_leader, reusable)?;
            memo.peers = known;
            view
        }
        // A leader that leaves publishes the map without itself (plan_membership), so it
        // reads the application bag once more.
        Membership::Departing if is_leader => observe_app_bag(tools, env, relation_event),
        // The relation is going away: its bags no longer matter to this unit.
        Membership::Departing | Membership::Broken => None,
    };

    // The service and the log position belong to hooks; actions only report.
    let hook_event = matches!(env.event, Event::Hook(_) | Event::Relation(_));
    let service = match (&config, hook_event) {
        (Ok((config, paths)), true) => Some(service_unit::observe(
            config.run_dbaccessor,
            &env.charm_dir,
            &paths.data_dir,
        )),
        _ => None,
    };
    let log_position = match (&relation, &paths, membership, hook_event) {
        (Some(_), Some(paths), Membership::Member, true) => {
            observe_log_position(&env.event, &paths.data_dir)
        }
        _ => None,
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
            service,
            log_position,
        },
        paths,
        conf_path,
        memo,
        memo_on_disk: remembered.clone(),
    })
}

/// The peer relation's bags (the lowest-numbered `db-cluster` relation; there is one). In a
/// `db-cluster` relation hook Juju names it in `JUJU_RELATION_ID`, which saves a tool call.
/// A non-leader reads only the bags [`plan::peer_bags_to_read`] says its plan can use, and
/// a bag in `reusable` (the memo's, see [`Memo::reusable_bags`]) is not read again. Returns
/// the view and, for the memo, every peer bag read or reused.
fn observe_relation(
    tools: &HookTools,
    env: &HookEnv,
    relation_event: Option<&RelationEvent>,
    is_leader: bool,
    mut reusable: BTreeMap<String, plan::Bag>,
) -> Result<(Option<PeerView>, Option<PeerBags>), HookError> {
    let id = match relation_event {
        Some(event) => event.relation_id.clone(),
        None => match tools.relation_ids(PEER_ENDPOINT)?.into_iter().next() {
            Some(id) => id,
            None => return Ok((None, None)),
        },
    };
    let own = tools.relation_get(&id, &env.unit, false)?;
    let app_name = env.application();
    let app = tools.relation_get(&id, app_name, true)?;
    let listed = tools.relation_list(&id)?;
    let to_read = plan::peer_bags_to_read(is_leader, &app, &listed);
    let mut peers = BTreeMap::new();
    let mut known = BTreeMap::new();
    for unit in listed {
        let bag = if to_read.contains(&unit) {
            let bag = match reusable.remove(&unit) {
                Some(bag) => bag,
                None => tools.relation_get(&id, &unit, false)?,
            };
            known.insert(unit.clone(), bag.clone());
            bag
        } else {
            plan::Bag::new()
        };
        peers.insert(unit, bag);
    }
    let view = PeerView {
        id: id.clone(),
        own,
        app,
        peers,
    };
    let known = PeerBags {
        relation: id,
        bags: known,
    };
    Ok((Some(view), Some(known)))
}

/// The application bag alone, for a leader that is leaving (see `plan::depart_as_leader`).
/// Best effort: the relation is going away and the next leader rewrites the map anyway,
/// so a bag that cannot be read leaves the map alone rather than failing the hook (a failed
/// `-departed` would hold the unit's removal up until it succeeds).
fn observe_app_bag(
    tools: &HookTools,
    env: &HookEnv,
    relation_event: Option<&RelationEvent>,
) -> Option<PeerView> {
    let id = relation_event?.relation_id.clone();
    let app_name = env.application();
    match tools.relation_get(&id, app_name, true) {
        Ok(app) => Some(PeerView {
            id,
            app,
            ..PeerView::default()
        }),
        Err(e) => {
            eprintln!("WARNING leaving as the leader: cannot read the application bag: {e}");
            None
        }
    }
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
            let written = tools.relation_set(&relation.id, true, &plan.app_writes);
            match written {
                // A leaving leader's map is a head start, not a duty (observe_app_bag).
                Err(e) if world.observed.membership == Membership::Departing => eprintln!(
                    "WARNING leaving as the leader: cannot publish the map without this \
                     controller ({e}); the next leader will"
                ),
                written => written?,
            }
        }
    }
    // Juju logs a hook's stdout at DEBUG and its stderr at WARNING: printing there records
    // the decisions without a juju-log process per line (a hook-tool call costs far more than
    // everything else the charm does). Peers' data may appear in a line: it is made
    // printable so that it cannot forge other log lines.
    for (level, line) in &plan.log {
        let line = printable(line);
        match level {
            Level::Warning => eprintln!("WARNING {line}"),
            Level::Debug | Level::Info => println!("{line}"),
        }
    }
    let mut status = plan.status.clone();
    if let Some(change) = &plan.service {
        if let Err(why) = service_unit::apply(change) {
            status = plan::service_blocked(&why);
        }
    }
    let mut memo = world.memo.clone();
    set_status(tools, env, &mut memo, &world.memo_on_disk, &status)?;
    // A hook killed mid-write leaves its temp file; the next hook removes it whether or not
    // it writes (write_if_changed removes it before it creates its own).
    match (
        &plan.conf,
        &world.conf_path,
        &world.paths,
        &world.observed.conf,
    ) {
        (Some(conf), Some(path), Some(paths), Some(view)) => {
            if conffile::write_if_changed(path, conf.text(), &view.on_disk)? {
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
        (_, Some(path), _, _) => {
            // Failing to remove it is only worth a warning here: the leftover harms nothing.
            if let Err(error) = conffile::remove_leftover(path) {
                let temp = conffile::temp_path(path);
                let line = format!("cannot remove {}: {error}", temp.display());
                eprintln!("WARNING {}", printable(&line));
            }
        }
        (_, None, _, _) => {}
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
    let plan = plan::plan(&world.observed);
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
            printable(&error.to_string())
        );
    }
    Ok(())
}

/// The node's log position when this hook publishes it ([`plan::wants_log_position`]):
/// a cheap `status` request first, and the log read only when it is published. A dbaccessor
/// that does not answer gives nothing.
fn observe_log_position(event: &Event, data_dir: &std::path::Path) -> Option<String> {
    let leader_known = status_socket::local_leader_known(data_dir)?;
    let update_status = matches!(event, Event::Hook(Hook::UpdateStatus));
    if !plan::wants_log_position(update_status, leader_known) {
        return None;
    }
    status_socket::local_log_position(data_dir).map(|position| position.to_string())
}

/// Logs an unhandled hook at debug level.
pub fn unhandled(tools: &HookTools, name: &str) -> Result<(), HookError> {
    tools.juju_log(
        Level::Debug,
        &format!("hook {name} is not handled by this charm"),
    )?;
    Ok(())
}
