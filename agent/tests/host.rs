//! The worker host with fake workers under paused time: dependency order, restart with
//! back-off (failures and panics), stop in reverse order waiting for each worker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::host::{Host, RestartPolicy, Stop, WorkerEvent, WorkerSpec};
use tokio::time::Instant;

/// What the fake workers did, with the virtual time in milliseconds since the test began.
#[derive(Clone)]
struct Journal {
    began: Instant,
    lines: Arc<Mutex<Vec<(u128, String)>>>,
}

impl Journal {
    fn new() -> Self {
        Self {
            began: Instant::now(),
            lines: Arc::default(),
        }
    }

    fn note(&self, line: impl Into<String>) {
        let at = self.began.elapsed().as_millis();
        self.lines
            .lock()
            .expect("journal lock")
            .push((at, line.into()));
    }

    fn lines(&self) -> Vec<(u128, String)> {
        self.lines.lock().expect("journal lock").clone()
    }
}

/// A worker that runs until told to stop, then takes `stopping` to return.
fn steady(journal: &Journal, name: &'static str, deps: &[&str], stopping: Duration) -> WorkerSpec {
    let journal = journal.clone();
    WorkerSpec::new(name, deps, move |mut stop: Stop| {
        let journal = journal.clone();
        async move {
            journal.note(format!("start {name}"));
            stop.requested().await;
            journal.note(format!("stopping {name}"));
            tokio::time::sleep(stopping).await;
            journal.note(format!("stopped {name}"));
            Ok(())
        }
    })
}

fn policy() -> RestartPolicy {
    RestartPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(1000),
        healthy_after: Duration::from_secs(10),
    }
}

#[tokio::test(start_paused = true)]
async fn workers_start_after_their_dependencies_and_stop_before_them() {
    let journal = Journal::new();
    let mut host = Host::new(policy());
    // Added in the "wrong" order on purpose: the host orders them.
    host.add(steady(
        &journal,
        "apiserver",
        &["dbaccessor", "publisher"],
        Duration::from_secs(2),
    ))
    .add(steady(
        &journal,
        "publisher",
        &["dbaccessor"],
        Duration::from_secs(1),
    ))
    .add(steady(&journal, "dbaccessor", &[], Duration::from_secs(3)));
    host.run(tokio::time::sleep(Duration::from_secs(5)))
        .await
        .expect("workers can be ordered");
    let expected: Vec<(u128, String)> = [
        (0, "start dbaccessor"),
        (0, "start publisher"),
        (0, "start apiserver"),
        // Each stop waits for the worker to return before its dependencies are told.
        (5_000, "stopping apiserver"),
        (7_000, "stopped apiserver"),
        (7_000, "stopping publisher"),
        (8_000, "stopped publisher"),
        (8_000, "stopping dbaccessor"),
        (11_000, "stopped dbaccessor"),
    ]
    .into_iter()
    .map(|(at, line)| (at, line.to_owned()))
    .collect();
    assert_eq!(journal.lines(), expected);
}

#[tokio::test(start_paused = true)]
async fn failed_and_panicking_workers_restart_with_backoff_reset_after_a_healthy_run() {
    let journal = Journal::new();
    let runs = Arc::new(Mutex::new(0u32));
    let worker = {
        let journal = journal.clone();
        let runs = runs.clone();
        WorkerSpec::new("flaky", &[], move |mut stop: Stop| {
            let journal = journal.clone();
            let runs = runs.clone();
            async move {
                let run = {
                    let mut runs = runs.lock().expect("runs lock");
                    *runs += 1;
                    *runs
                };
                journal.note(format!("run {run}"));
                match run {
                    1 | 2 => anyhow::bail!("cannot reach the database"),
                    3 => panic!("a bug in run 3"),
                    // Healthy for 20 s, then fails: the next pause starts from 100 ms.
                    4 => {
                        tokio::time::sleep(Duration::from_secs(20)).await;
                        anyhow::bail!("lost the database")
                    }
                    _ => {
                        stop.requested().await;
                        Ok(())
                    }
                }
            }
        })
    };
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut host = Host::new(policy());
    host.add(worker);
    host.report_to(events_tx);
    host.run(tokio::time::sleep(Duration::from_secs(30)))
        .await
        .expect("one worker");
    let starts: Vec<u128> = journal.lines().into_iter().map(|(at, _)| at).collect();
    // Pauses of 100, 200, 400 ms after the three quick failures; 100 ms again after the
    // healthy run.
    assert_eq!(starts, vec![0, 100, 300, 700, 20_800]);
    let mut failures = Vec::new();
    let mut stopped = false;
    while let Ok(event) = events_rx.try_recv() {
        match event {
            WorkerEvent::Failed {
                error, restart_in, ..
            } => failures.push((error, restart_in.as_millis())),
            WorkerEvent::Stopped { .. } => stopped = true,
            _ => {}
        }
    }
    assert_eq!(failures.len(), 4, "{failures:?}");
    assert_eq!(failures[0], ("cannot reach the database".into(), 100));
    assert!(failures[2].0.contains("panicked"), "{failures:?}");
    assert_eq!(failures[2].1, 400);
    assert_eq!(failures[3], ("lost the database".into(), 100));
    assert!(stopped, "the worker was stopped at shutdown");
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_restart_pause_is_prompt_and_finished_workers_stay_finished() {
    let journal = Journal::new();
    let failing = {
        let journal = journal.clone();
        WorkerSpec::new("failing", &[], move |_stop: Stop| {
            let journal = journal.clone();
            async move {
                journal.note("failing runs");
                anyhow::bail!("always fails")
            }
        })
    };
    let once = {
        let journal = journal.clone();
        WorkerSpec::new("once", &["failing"], move |_stop: Stop| {
            let journal = journal.clone();
            async move {
                journal.note("once runs");
                Ok(())
            }
        })
    };
    let policy = RestartPolicy {
        initial: Duration::from_secs(60),
        max: Duration::from_secs(60),
        healthy_after: Duration::from_secs(10),
    };
    let mut host = Host::new(policy);
    host.add(failing).add(once);
    let began = Instant::now();
    host.run(tokio::time::sleep(Duration::from_secs(1)))
        .await
        .expect("two workers");
    assert_eq!(
        began.elapsed(),
        Duration::from_secs(1),
        "no wait for the pause"
    );
    let lines: Vec<String> = journal.lines().into_iter().map(|(_, l)| l).collect();
    assert_eq!(lines, vec!["failing runs", "once runs"]);
}

#[tokio::test]
async fn a_dependency_cycle_is_refused_before_anything_starts() {
    let journal = Journal::new();
    let mut host = Host::new(policy());
    host.add(steady(&journal, "a", &["b"], Duration::ZERO))
        .add(steady(&journal, "b", &["a"], Duration::ZERO));
    let error = host
        .run(std::future::pending())
        .await
        .expect_err("a cycle cannot be ordered");
    assert_eq!(
        error.to_string(),
        "workers depend on each other in a cycle: a -> b -> a"
    );
    assert!(journal.lines().is_empty());
}
