//! Runs the queued hooks until the model settles, as Juju's unit agents would: one hook at a
//! time per unit, units concurrently (a thread waits on each running hook), relation writes
//! committed only on exit 0 and turned into `-relation-changed` on the other units, a failed
//! hook put back at the head of its queue and retried with back-off while the unit shows
//! `error`. Settled means no hook queued or running and the Dqlite cluster converged on the
//! published map ([`crate::cluster::converged`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use controller_backoff::Backoff;

use crate::cluster::{self, ClusterView};
use crate::model::{Bag, Span, State};
use crate::runner::{Prepared, Runner};
use crate::simulation::{machine_data_dir, SimError, Simulation};
use crate::world::{QueuedHook, APP};

/// The retry delays of a failed hook (Juju: 5 s doubling to 5 min; scaled down to 500 ms
/// doubling to 5 s so a simulated model recovers in test time).
const HOOK_RETRY: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
/// How often the convergence check asks the dbaccessors once the hooks are done.
const CONVERGE_POLL: Duration = Duration::from_millis(100);
/// How often the units' leadership files are read for a changed leader while settling.
const LEADERSHIP_POLL: Duration = Duration::from_millis(200);
/// The model dir's debug log (`juju-sim debug-log` reads it).
pub const DEBUG_LOG: &str = "debug.log";
/// How often a summary progress line is printed while waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);

/// How to settle.
#[derive(Debug, Clone)]
pub struct SettleOptions {
    /// Give up after this long.
    pub timeout: Duration,
    /// Print every hook as it ends (otherwise failures and a summary every few seconds).
    pub verbose: bool,
    /// Wait for the Dqlite cluster too (not only for the hooks).
    pub wait_for_cluster: bool,
}

/// What settling did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleReport {
    /// Hooks run (failed runs included).
    pub hooks: usize,
    /// Hook runs that failed.
    pub failures: usize,
    /// How long it took.
    pub elapsed: Duration,
}

/// How many of the model's hooks run at once at most. Juju's unit agents are independent, one
/// hook at a time each, so the natural bound is the number of units; here every unit's hooks
/// share the host's CPUs and the one state-file lock their tool processes take in turn. A few
/// hooks per CPU keep the CPUs busy while others wait on that lock or on a child process;
/// more would not end the set sooner but stretch every hook (each a process tree: the mount
/// wrapper, the charm, its tool calls) and fork a model's worth of process trees at once.
/// The floor keeps a three-controller model's units running side by side on a one-CPU host;
/// the ceiling keeps a large model (dozens of units) from forking hundreds of processes.
fn hook_slots() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus * 4).clamp(4, 16)
}

/// How many hook-tool calls and `juju-log` lines the state file keeps (every tool call
/// rewrites it, so it is kept small).
const KEEP_CALLS: usize = 200;
const KEEP_LOG_LINES: usize = 1000;
/// How many hook runs the history keeps.
const KEEP_HISTORY: usize = 500;

/// A hook whose process runs on a waiting thread.
struct Running {
    hook: QueuedHook,
    prepared: Prepared,
    started: Instant,
}

/// What the waiting thread reports when a hook's process has ended.
struct Done {
    unit: String,
    output: std::io::Result<Output>,
    span: Span,
}

/// The bags a hook of `unit` may change, per relation it is in: its own unit bag and its
/// application's bag (which only a leader writes), with the units in scope.
type OwnBags = BTreeMap<String, (Option<Bag>, Option<Bag>, Vec<String>)>;

/// What a hook of one unit can change that other units are told about: its bags and its
/// application's leader settings.
#[derive(Debug, Clone, PartialEq)]
struct Shared {
    bags: OwnBags,
    leader_settings: Option<Bag>,
}

impl Shared {
    fn of(state: &State, unit: &str) -> Self {
        let app = State::app_of(unit);
        let bags = state
            .relations_of(unit)
            .into_iter()
            .filter_map(|id| {
                let relation = state.relations.get(&id)?;
                let bags = (
                    relation.unit_bags.get(unit).cloned(),
                    relation.app_bags.get(app).cloned(),
                    relation.units.iter().cloned().collect(),
                );
                Some((id, bags))
            })
            .collect();
        Self {
            bags,
            leader_settings: state.leader_settings.get(app).cloned(),
        }
    }
}

/// Ends a hook in one locked update of the model: what its unit shares before, the commit
/// (or discard) of its writes with its run in the history, and what it shares after. Both
/// views come from the same state the commit changed, so the hooks queued from their
/// difference answer exactly this hook's writes, whatever other units' tools do meanwhile.
fn commit(
    sim: &Simulation,
    prepared: &Prepared,
    exit_code: Option<i32>,
    span: Span,
) -> Result<(Shared, Shared), SimError> {
    let shared = sim.store().update(|state| {
        let before = Shared::of(state, &prepared.unit);
        Runner::commit(state, prepared, exit_code, span);
        let excess = state.juju_log.len().saturating_sub(KEEP_LOG_LINES);
        state.juju_log.drain(..excess);
        let excess = state.history.len().saturating_sub(KEEP_HISTORY);
        state.history.drain(..excess);
        let after = Shared::of(state, &prepared.unit);
        (before, after)
    })?;
    sim.store().trim_calls(KEEP_CALLS)?;
    Ok(shared)
}

/// Seconds since the epoch.
fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Queues `update-status` on every started unit whose last one is older than the model's
/// interval (Juju's `update-status-hook-interval`).
fn queue_update_status(sim: &mut Simulation) {
    let interval = sim.world.update_status_interval_s;
    if interval == 0 {
        return;
    }
    let now = now_s();
    for queue in sim.world.units.values_mut() {
        if queue.dying || !queue.in_scope {
            continue;
        }
        if queue.last_update_status == 0 {
            // The timer starts when the unit has started.
            queue.last_update_status = now;
        } else if now.saturating_sub(queue.last_update_status) >= interval {
            queue.last_update_status = now;
            let hook = QueuedHook::plain("update-status");
            if !queue.queue.contains(&hook) {
                queue.queue.push_back(hook);
            }
        }
    }
}

/// Queues `leader-elected` on a new leader of a lease-governed application and
/// `leader-settings-changed` on its other units, as Juju's uniter does when its unit gains
/// leadership and when the leader changes ([`crate::leadership`]).
fn queue_leader_changes(sim: &mut Simulation, out: &mut dyn Write) -> Result<(), SimError> {
    // Read first: the state file is rewritten only when a leader changed.
    let mut seen = sim.store().load()?;
    if crate::leadership::changed_leaders(&mut seen).is_empty() {
        return Ok(());
    }
    let changed = sim.store().update(crate::leadership::changed_leaders)?;
    for (app, leader) in changed {
        writeln!(out, "  {leader}: elected leader of {app} (its lease)").ok();
        for unit in sim.world.app_units(&app) {
            if sim.world.units.get(&unit).is_some_and(|q| q.dying) {
                continue;
            }
            let hook = if unit == leader {
                "leader-elected"
            } else {
                "leader-settings-changed"
            };
            sim.world.enqueue(&unit, QueuedHook::plain(hook));
        }
    }
    Ok(())
}

/// The cluster as the dbaccessors of the mapped agents see it.
pub fn cluster_view(sim: &Simulation) -> Result<ClusterView, SimError> {
    let state = sim.store().load()?;
    let map = state
        .relations
        .values()
        .filter_map(|r| r.app_bags.get(APP))
        .filter_map(|bag| bag.get("db-bind-addresses"))
        .filter_map(|json| serde_json::from_str::<BTreeMap<String, std::net::IpAddr>>(json).ok())
        .next()
        .unwrap_or_default();
    let statuses = map
        .keys()
        .map(|agent| {
            let status = agent
                .parse::<u32>()
                .ok()
                .filter(|id| sim.world.machines.contains_key(id))
                .ok_or_else(|| "no such machine".to_owned())
                .and_then(|id| {
                    let socket =
                        controller_contract::paths::status_socket(&machine_data_dir(&sim.dir, id));
                    cluster::query_status(&socket).map_err(|e| e.to_string())
                });
            (agent.clone(), status)
        })
        .collect();
    Ok(ClusterView { map, statuses })
}

/// Runs hooks until the model settles or `options.timeout` passes, printing progress to `out`.
///
/// The hooks of different units run at the same time (up to [`hook_slots`]), each unit's one
/// after the other. This thread alone changes the queues and commits hooks, one ended hook
/// at a time, so every decision (which hooks to queue, when a unit enters scope or goes)
/// is made from the model as that hook left it.
pub fn settle(
    sim: &mut Simulation,
    options: &SettleOptions,
    out: &mut dyn Write,
) -> Result<SettleReport, SimError> {
    let started = Instant::now();
    let deadline = started + options.timeout;
    let slots = hook_slots();
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut retry_at: HashMap<String, Instant> = HashMap::new();
    let mut report = SettleReport {
        hooks: 0,
        failures: 0,
        elapsed: Duration::ZERO,
    };
    let mut last_progress = Instant::now();
    let hooks_log = sim.dir.join("hooks.log");
    let mut leadership_read = Instant::now() - LEADERSHIP_POLL;
    loop {
        queue_update_status(sim);
        if leadership_read.elapsed() >= LEADERSHIP_POLL {
            leadership_read = Instant::now();
            queue_leader_changes(sim, out)?;
        }
        // Start the next hook of idle units whose retry time has come, the longest queues
        // first: when the slots are fewer than the units, the unit with the most hooks to
        // run is the one the model waits for.
        let now = Instant::now();
        let mut idle: Vec<(usize, String)> = sim
            .world
            .units
            .iter()
            .filter(|(unit, queue)| {
                !queue.queue.is_empty()
                    && !running.contains_key(*unit)
                    && retry_at.get(*unit).is_none_or(|t| *t <= now)
            })
            .map(|(unit, queue)| (queue.queue.len(), unit.clone()))
            .collect();
        idle.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        for (_, unit) in idle {
            if running.len() >= slots {
                break;
            }
            let Some(hook) = sim
                .world
                .units
                .get_mut(&unit)
                .and_then(|q| q.queue.pop_front())
            else {
                continue;
            };
            let Some(mut prepared) = sim.runner.prepare(&unit, &hook.invocation())? else {
                // No handler: Juju skips the hook, which counts as done.
                if hook.name == "start" {
                    sim.enter_scope(&unit)?;
                }
                continue;
            };
            let mut command = std::mem::replace(&mut prepared.command, Command::new("true"));
            let mounts = prepared.mounts.clone();
            let tx = done_tx.clone();
            let name = unit.clone();
            std::thread::spawn(move || {
                let started_ms = crate::tools::now_ms();
                let output =
                    crate::runner::run_command(command.stdin(Stdio::null()), mounts.as_deref());
                let span = Span {
                    started_ms,
                    ended_ms: crate::tools::now_ms(),
                };
                // The receiver lives until every running hook has reported.
                let _ = tx.send(Done {
                    unit: name,
                    output,
                    span,
                });
            });
            running.insert(
                unit,
                Running {
                    hook,
                    prepared,
                    started: Instant::now(),
                },
            );
        }

        // Finish the dying units whose hooks have all run.
        let finished: Vec<String> = sim
            .world
            .units
            .iter()
            .filter(|(name, q)| q.dying && q.queue.is_empty() && !running.contains_key(*name))
            .map(|(name, _)| name.clone())
            .collect();
        for unit in finished {
            writeln!(
                out,
                "  {unit}: hooks done, stopping machine {}",
                sim.world.units[&unit].machine
            )
            .ok();
            sim.finish_removal(&unit)?;
        }

        let idle = running.is_empty() && sim.world.units.values().all(|q| q.queue.is_empty());
        if idle {
            sim.save()?;
            if !options.wait_for_cluster {
                break;
            }
            match cluster::converged(&cluster_view(sim)?) {
                Ok(()) => break,
                Err(missing) => {
                    if Instant::now() >= deadline {
                        return Err(SimError::Refused(format!(
                            "the model did not settle within {} s: cluster not converged: {missing}",
                            options.timeout.as_secs()
                        )));
                    }
                    if last_progress.elapsed() >= PROGRESS_EVERY {
                        writeln!(out, "  waiting for the cluster: {missing}").ok();
                        last_progress = Instant::now();
                    }
                    std::thread::sleep(CONVERGE_POLL);
                    continue;
                }
            }
        }
        if Instant::now() >= deadline {
            sim.save()?;
            let queued: usize = sim.world.units.values().map(|q| q.queue.len()).sum();
            return Err(SimError::Refused(format!(
                "the model did not settle within {} s: {} hooks running, {queued} queued",
                options.timeout.as_secs(),
                running.len()
            )));
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            let queued: usize = sim.world.units.values().map(|q| q.queue.len()).sum();
            writeln!(
                out,
                "  ... {} hooks run, {} running, {queued} queued",
                report.hooks,
                running.len()
            )
            .ok();
            last_progress = Instant::now();
        }

        let Ok(Done { unit, output, span }) = done_rx.recv_timeout(Duration::from_millis(20))
        else {
            continue;
        };
        let Some(run) = running.remove(&unit) else {
            continue;
        };
        report.hooks += 1;
        let (exit_code, stdout, stderr) = match output {
            Ok(output) => (
                output.status.code(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            ),
            // The program could not start: the hook failed, as Juju would report it.
            Err(error) => (
                Some(1),
                String::new(),
                format!("cannot run the hook: {error}"),
            ),
        };
        let success = exit_code == Some(0);
        let (before, after) = commit(sim, &run.prepared, exit_code, span)?;
        let elapsed_ms = run.started.elapsed().as_millis();
        log_hook(
            sim, &hooks_log, &unit, &run.hook, exit_code, elapsed_ms, &stdout, &stderr,
        );
        if success {
            if options.verbose {
                writeln!(out, "  {unit}: {} ok ({elapsed_ms} ms)", run.hook.label()).ok();
            }
            retry_at.remove(&unit);
            if let Some(queue) = sim.world.units.get_mut(&unit) {
                queue.error = None;
                queue.failures = 0;
            }
            queue_consequences(sim, &unit, &before, &after);
            if run.hook.name == "start" {
                sim.enter_scope(&unit)?;
            }
            if run.hook.name == "update-status" {
                if let Some(queue) = sim.world.units.get_mut(&unit) {
                    queue.last_update_status = now_s();
                }
            }
        } else {
            report.failures += 1;
            let first_line = stderr.lines().last().unwrap_or_default().to_owned();
            let queue = sim.world.units.get_mut(&unit);
            let failures = queue.as_ref().map_or(0, |q| q.failures);
            let delay = HOOK_RETRY.delay_after(failures);
            if let Some(queue) = queue {
                queue.failures += 1;
                queue.error = Some(format!("hook failed: {:?}", run.hook.name));
                queue.queue.push_front(run.hook.clone());
            }
            retry_at.insert(unit.clone(), Instant::now() + delay);
            writeln!(
                out,
                "  {unit}: {} failed (exit {exit_code:?}): {first_line}; retrying in {} ms",
                run.hook.label(),
                delay.as_millis()
            )
            .ok();
        }
        sim.save()?;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Queues what a successful hook of `unit` tells the others: `-relation-changed` (with it as
/// the remote unit) on the units in scope when its bag changed, `-relation-changed` of the
/// application bag when that changed, `leader-settings-changed` on its application's other
/// units when the leader settings changed.
fn queue_consequences(sim: &mut Simulation, unit: &str, before: &Shared, after: &Shared) {
    for (relation, (unit_bag, app_bag, members)) in &after.bags {
        let (old_unit_bag, old_app_bag) = before
            .bags
            .get(relation)
            .map(|(u, a, _)| (u.clone(), a.clone()))
            .unwrap_or_default();
        let others = members.iter().filter(|u| *u != unit);
        if old_unit_bag != *unit_bag && members.iter().any(|u| u == unit) {
            for other in others.clone() {
                sim.world
                    .enqueue(other, QueuedHook::relation("changed", relation, Some(unit)));
            }
        }
        if old_app_bag != *app_bag {
            for other in others {
                sim.world
                    .enqueue(other, QueuedHook::relation("changed", relation, None));
            }
        }
    }
    if before.leader_settings != after.leader_settings {
        let app = State::app_of(unit);
        for other in sim.world.app_units(app) {
            if other != unit {
                sim.world
                    .enqueue(&other, QueuedHook::plain("leader-settings-changed"));
            }
        }
    }
}

/// Appends a hook's run to `hooks.log` and to the debug log: one line with its outcome, then
/// its output (stdout at DEBUG, stderr at WARNING, as Juju logs them). Both logs are for
/// people: a write error must not stop the model.
#[allow(clippy::too_many_arguments)]
fn log_hook(
    sim: &Simulation,
    hooks_log: &std::path::Path,
    unit: &str,
    hook: &QueuedHook,
    exit_code: Option<i32>,
    elapsed_ms: u128,
    stdout: &str,
    stderr: &str,
) {
    if let Ok(mut log) = OpenOptions::new().create(true).append(true).open(hooks_log) {
        let _ = writeln!(
            log,
            "{unit} {} exit {exit_code:?} {elapsed_ms} ms\n{}{}",
            hook.label(),
            indent(stdout),
            indent(stderr)
        );
    }
    if let Ok(mut log) = OpenOptions::new()
        .create(true)
        .append(true)
        .open(sim.dir.join(DEBUG_LOG))
    {
        let now = crate::tools::now_ms();
        let entity = format!("unit-{}", unit.replace('/', "-"));
        let level = if exit_code == Some(0) {
            "INFO"
        } else {
            "ERROR"
        };
        let mut text = format!(
            "{now} {entity} {level} juju.worker.uniter.operation ran {:?} hook (exit {exit_code:?}, {elapsed_ms} ms)\n",
            hook.label(),
        );
        for line in stdout.lines() {
            text.push_str(&format!(
                "{now} {entity} DEBUG unit.{unit}.{} {line}\n",
                hook.name
            ));
        }
        for line in stderr.lines() {
            text.push_str(&format!(
                "{now} {entity} WARNING unit.{unit}.{} {line}\n",
                hook.name
            ));
        }
        let _ = log.write_all(text.as_bytes());
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("    {line}\n")).collect()
}
