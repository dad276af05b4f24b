//! The worker host: named workers with one-way dependencies, each started once what it
//! depends on runs, restarted with back-off when it fails, and stopped in reverse order
//! (dependents before what they depend on) when the agent shuts down.
//!
//! The pure parts are [`start_order`] (dependency order, or why there is none) and
//! [`RestartPolicy`] (the pause before a restart); [`Host::run`] is the shell that spawns,
//! watches and stops the tasks.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use controller_backoff::Backoff;
use controller_contract::describe_error;
use tokio::sync::watch;
use tokio::time::Instant;

/// What a worker's run returns: `Ok` when it has nothing more to do (it is not restarted),
/// an error when it failed (it is restarted after a pause).
pub type WorkerResult = Result<(), anyhow::Error>;

/// One run of a worker.
pub type WorkerFuture = Pin<Box<dyn Future<Output = WorkerResult> + Send + 'static>>;

/// Starts one run of a worker; called again for every restart.
pub type StartFn = Arc<dyn Fn(Stop) -> WorkerFuture + Send + Sync + 'static>;

/// Tells a worker to stop. A worker must return soon after [`Stop::requested`] completes;
/// the host waits for it (nothing is cancelled midway).
#[derive(Debug, Clone)]
pub struct Stop {
    /// `true` once the host asked this worker to stop.
    requested: watch::Receiver<bool>,
}

impl Stop {
    /// Completes once the host asks the worker to stop (at once if it already has).
    pub async fn requested(&mut self) {
        // The host keeps the sender until the worker has returned; a closed channel can
        // only mean the host is gone, which is a reason to stop too.
        let _ = self.requested.wait_for(|stop| *stop).await;
    }

    /// Whether the host has asked the worker to stop.
    pub fn is_requested(&self) -> bool {
        *self.requested.borrow()
    }

    /// A stop that is never requested while `sender` lives (for tests and tools).
    pub fn new() -> (watch::Sender<bool>, Stop) {
        let (sender, requested) = watch::channel(false);
        (sender, Stop { requested })
    }
}

/// A named worker and what it depends on.
#[derive(Clone)]
pub struct WorkerSpec {
    /// Unique among the host's workers; logs and dependencies use it.
    pub name: String,
    /// Workers that must run before this one starts and that stop only after it.
    pub depends_on: Vec<String>,
    /// Starts one run.
    pub start: StartFn,
}

impl WorkerSpec {
    pub fn new<F, Fut>(name: &str, depends_on: &[&str], start: F) -> Self
    where
        F: Fn(Stop) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = WorkerResult> + Send + 'static,
    {
        Self {
            name: name.to_owned(),
            depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
            start: Arc::new(move |stop| Box::pin(start(stop))),
        }
    }
}

/// Why workers cannot be ordered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("two workers are named {0:?}")]
    Duplicate(String),
    #[error("worker {worker:?} depends on {missing:?}, which is not a worker")]
    UnknownDependency { worker: String, missing: String },
    #[error("workers depend on each other in a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// The order to start workers in (indices into `workers`, each `(name, depends_on)`): every
/// worker after everything it depends on, otherwise in the order given. Stopping goes in
/// the reverse order.
pub fn start_order(workers: &[(&str, &[&str])]) -> Result<Vec<usize>, OrderError> {
    let mut index = BTreeMap::new();
    for (i, (name, _)) in workers.iter().enumerate() {
        if index.insert(*name, i).is_some() {
            return Err(OrderError::Duplicate((*name).to_owned()));
        }
    }
    for (name, depends_on) in workers {
        if let Some(missing) = depends_on.iter().find(|d| !index.contains_key(*d)) {
            return Err(OrderError::UnknownDependency {
                worker: (*name).to_owned(),
                missing: (*missing).to_owned(),
            });
        }
    }
    // Depth-first, in the given order, so that independent workers keep their order.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Visiting,
        Done,
    }
    fn visit(
        i: usize,
        workers: &[(&str, &[&str])],
        index: &BTreeMap<&str, usize>,
        marks: &mut [Mark],
        path: &mut Vec<usize>,
        order: &mut Vec<usize>,
    ) -> Result<(), OrderError> {
        match marks[i] {
            Mark::Done => return Ok(()),
            Mark::Visiting => {
                let from = path.iter().position(|p| *p == i).unwrap_or(0);
                let mut cycle: Vec<String> = path[from..]
                    .iter()
                    .map(|p| workers[*p].0.to_owned())
                    .collect();
                cycle.push(workers[i].0.to_owned());
                return Err(OrderError::Cycle(cycle));
            }
            Mark::New => {}
        }
        marks[i] = Mark::Visiting;
        path.push(i);
        for dependency in workers[i].1 {
            visit(index[dependency], workers, index, marks, path, order)?;
        }
        path.pop();
        marks[i] = Mark::Done;
        order.push(i);
        Ok(())
    }
    let mut marks = vec![Mark::New; workers.len()];
    let mut order = Vec::with_capacity(workers.len());
    for i in 0..workers.len() {
        visit(i, workers, &index, &mut marks, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

/// When a failed worker runs again: after a pause that doubles with every failure in a
/// row, from `initial` up to `max`; a run that lasted `healthy_after` or more counts as a
/// success, so the next failure starts again from `initial`.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    /// The first pause (and the pause after a healthy run).
    pub initial: Duration,
    /// The longest pause.
    pub max: Duration,
    /// A run at least this long resets the pause.
    pub healthy_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            healthy_after: Duration::from_secs(10),
        }
    }
}

impl RestartPolicy {
    /// A back-off in this policy's bounds.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.initial, self.max)
    }

    /// The pause before the restart of a run that failed after `ran_for`.
    pub fn delay_after_failure(&self, backoff: &mut Backoff, ran_for: Duration) -> Duration {
        if ran_for >= self.healthy_after {
            backoff.reset();
        }
        backoff.next_delay()
    }
}

/// What happened to a worker, in order, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEvent {
    Started {
        name: String,
        run: u32,
    },
    Failed {
        name: String,
        error: String,
        restart_in: Duration,
    },
    Finished {
        name: String,
    },
    Stopped {
        name: String,
    },
}

/// The worker host.
pub struct Host {
    /// The workers as added.
    workers: Vec<WorkerSpec>,
    /// How failed workers are restarted.
    policy: RestartPolicy,
    /// Every [`WorkerEvent`], for whoever listens (the log gets them too).
    events: Option<tokio::sync::mpsc::UnboundedSender<WorkerEvent>>,
}

/// A running worker's handles.
struct Running {
    name: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Host {
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            workers: Vec::new(),
            policy,
            events: None,
        }
    }

    /// Adds a worker.
    pub fn add(&mut self, worker: WorkerSpec) -> &mut Self {
        self.workers.push(worker);
        self
    }

    /// Sends every [`WorkerEvent`] to `events` as well as to the log.
    pub fn report_to(&mut self, events: tokio::sync::mpsc::UnboundedSender<WorkerEvent>) {
        self.events = Some(events);
    }

    /// Starts every worker in dependency order, keeps them running until `shutdown`
    /// completes, then stops them in reverse order, waiting for each to return before its
    /// dependencies are told to stop.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), OrderError> {
        let names: Vec<(&str, Vec<&str>)> = self
            .workers
            .iter()
            .map(|w| {
                (
                    w.name.as_str(),
                    w.depends_on.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        let pairs: Vec<(&str, &[&str])> = names.iter().map(|(n, d)| (*n, d.as_slice())).collect();
        let order = start_order(&pairs)?;
        let mut running: Vec<Running> = Vec::with_capacity(order.len());
        for i in order {
            let spec = self.workers[i].clone();
            let (stop_tx, stop) = Stop::new();
            let name = spec.name.clone();
            let task = tokio::spawn(supervise(
                spec,
                stop,
                self.policy.clone(),
                self.events.clone(),
            ));
            running.push(Running {
                name,
                stop: stop_tx,
                task,
            });
        }
        shutdown.await;
        while let Some(worker) = running.pop() {
            log::info!("stopping worker {}", worker.name);
            worker.stop.send_replace(true);
            if let Err(e) = worker.task.await {
                log::error!("worker {}'s supervisor ended abnormally: {e}", worker.name);
            }
        }
        Ok(())
    }
}

fn report(events: &Option<tokio::sync::mpsc::UnboundedSender<WorkerEvent>>, event: WorkerEvent) {
    if let Some(events) = events {
        // A listener that went away does not stop the workers.
        let _ = events.send(event);
    }
}

/// Runs one worker until it finishes or is told to stop, restarting it after failures.
async fn supervise(
    spec: WorkerSpec,
    mut stop: Stop,
    policy: RestartPolicy,
    events: Option<tokio::sync::mpsc::UnboundedSender<WorkerEvent>>,
) {
    let mut backoff = policy.backoff();
    let mut run = 0u32;
    let name = spec.name.clone();
    while !stop.is_requested() {
        run += 1;
        log::info!("starting worker {name} (run {run})");
        report(
            &events,
            WorkerEvent::Started {
                name: name.clone(),
                run,
            },
        );
        let began = Instant::now();
        // A run of its own task, so that a panic is a failure like any other.
        let outcome = tokio::spawn((spec.start)(stop.clone())).await;
        let result = match outcome {
            Ok(result) => result,
            Err(join_error) => Err(anyhow::anyhow!("panicked: {join_error}")),
        };
        if stop.is_requested() {
            if let Err(e) = result {
                log::warn!(
                    "worker {name} failed while stopping: {}",
                    describe_error(e.as_ref())
                );
            }
            break;
        }
        match result {
            Ok(()) => {
                log::info!("worker {name} finished");
                report(&events, WorkerEvent::Finished { name: name.clone() });
                return;
            }
            Err(e) => {
                let delay = policy.delay_after_failure(&mut backoff, began.elapsed());
                log::warn!(
                    "worker {name} failed: {}; restarting in {} ms",
                    describe_error(e.as_ref()),
                    delay.as_millis()
                );
                report(
                    &events,
                    WorkerEvent::Failed {
                        name: name.clone(),
                        error: describe_error(e.as_ref()),
                        restart_in: delay,
                    },
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.requested() => break,
                }
            }
        }
    }
    log::info!("worker {name} stopped");
    report(&events, WorkerEvent::Stopped { name });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_order(workers: &[(&str, &[&str])], expected: Result<Vec<&str>, OrderError>) {
        let got = start_order(workers).map(|order| {
            order
                .into_iter()
                .map(|i| workers[i].0)
                .collect::<Vec<&str>>()
        });
        assert_eq!(got, expected, "{workers:?}");
    }

    #[test]
    fn start_order_table() {
        check_order(&[], Ok(vec![]));
        check_order(&[("a", &[]), ("b", &[])], Ok(vec!["a", "b"]));
        // Dependencies first, whatever order they were added in.
        check_order(
            &[
                ("apiserver", &["dbaccessor"]),
                ("publisher", &["dbaccessor"]),
                ("dbaccessor", &[]),
            ],
            Ok(vec!["dbaccessor", "apiserver", "publisher"]),
        );
        check_order(
            &[("c", &["b"]), ("b", &["a"]), ("a", &[])],
            Ok(vec!["a", "b", "c"]),
        );
        // A diamond starts the shared dependency once.
        check_order(
            &[("d", &["b", "c"]), ("b", &["a"]), ("c", &["a"]), ("a", &[])],
            Ok(vec!["a", "b", "c", "d"]),
        );
        check_order(
            &[("a", &[]), ("a", &[])],
            Err(OrderError::Duplicate("a".into())),
        );
        check_order(
            &[("a", &["ghost"])],
            Err(OrderError::UnknownDependency {
                worker: "a".into(),
                missing: "ghost".into(),
            }),
        );
        check_order(
            &[("a", &["b"]), ("b", &["c"]), ("c", &["a"])],
            Err(OrderError::Cycle(vec![
                "a".into(),
                "b".into(),
                "c".into(),
                "a".into(),
            ])),
        );
        check_order(
            &[("a", &["a"])],
            Err(OrderError::Cycle(vec!["a".into(), "a".into()])),
        );
    }

    #[test]
    fn restart_policy_table() {
        let policy = RestartPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            healthy_after: Duration::from_secs(10),
        };
        // (how long each run lasted, the pause after it), one sequence of failures.
        let check = |runs: &[(u64, u64)]| {
            let mut backoff = policy.backoff();
            for (ran_ms, expected_ms) in runs {
                let delay =
                    policy.delay_after_failure(&mut backoff, Duration::from_millis(*ran_ms));
                assert_eq!(delay.as_millis() as u64, *expected_ms, "{runs:?}");
            }
        };
        check(&[(0, 100), (0, 200), (0, 400), (0, 800), (0, 1000), (0, 1000)]);
        // A healthy run resets the pause; a run just short of healthy does not.
        check(&[(0, 100), (0, 200), (10_000, 100), (9_999, 200)]);
        check(&[(60_000, 100), (60_000, 100)]);
    }
}
