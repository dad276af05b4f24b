//! The lease manager and singular runner against a real node: of three runners exactly one
//! runs the singular workers at a time (the fencing log shows one unbroken run per grant),
//! a stopping holder hands over, and a holder that loses the database stops its workers by
//! its deadline.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::host::{Stop, WorkerSpec};
use agent::lease::{self, LeaseKey};
use agent::singular::{self, Fence, Settings, Timing};
use dbaccessor::Database;
use tokio::sync::watch;
use tokio::time::Instant;

/// What the probe worker saw: each grant it ran under, when it started and when it was told
/// to stop.
type Probe = Arc<Mutex<Vec<(Fence, Instant, Option<Instant>)>>>;

fn probe_worker(fence: Fence, probe: Probe) -> WorkerSpec {
    WorkerSpec::new("probe", &[], move |mut stop: Stop| {
        let probe = probe.clone();
        let fence = fence.clone();
        async move {
            let index = {
                let mut runs = probe.lock().expect("probe lock");
                runs.push((fence, Instant::now(), None));
                runs.len() - 1
            };
            stop.requested().await;
            probe.lock().expect("probe lock")[index].2 = Some(Instant::now());
            Ok(())
        }
    })
}

fn settings(
    holder: &str,
    timing: Timing,
    available: watch::Receiver<Option<Database>>,
    probe: Probe,
) -> Settings {
    Settings {
        holder: holder.into(),
        timing,
        workers: Arc::new(move |fence: Fence| {
            vec![
                singular::heartbeat(
                    fence.clone(),
                    available.clone(),
                    Duration::from_millis(50),
                    Duration::from_secs(600),
                ),
                probe_worker(fence, probe.clone()),
            ]
        }),
        running: Arc::new(watch::Sender::new(None)),
    }
}

fn database(cluster: &support::Cluster) -> Database {
    Database {
        node_id: cluster.apps[0].id(),
        own_address: cluster.addresses[0].clone(),
        members: cluster.addresses.clone(),
        tls: None,
    }
}

/// Waits until the probe has seen `runs` grants start; returns the newest grant's holder.
async fn wait_for_runs(probe: &Probe, runs: usize) -> String {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        {
            let seen = probe.lock().expect("probe lock");
            if seen.len() >= runs {
                return seen[runs - 1].0.token.holder.clone();
            }
        }
        assert!(Instant::now() < until, "only {:?}", probe.lock());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runner_of_three_runs_the_singular_workers_and_hands_over_when_it_stops() {
    let cluster = support::Cluster::start(42, 1).await;
    let (available_tx, available) = watch::channel(None);
    available_tx.send_replace(Some(database(&cluster)));
    let timing = Timing {
        duration: Duration::from_millis(1500),
        extend_every: Duration::from_millis(400),
        margin: Duration::from_millis(500),
    };
    let probe: Probe = Arc::default();
    let mut runners = std::collections::BTreeMap::new();
    for id in 0..3 {
        let holder = format!("controller-{id}");
        let (stop_tx, stop) = Stop::new();
        let task = tokio::spawn(singular::run(
            settings(&holder, timing.clone(), available.clone(), probe.clone()),
            available.clone(),
            stop,
        ));
        runners.insert(holder, (stop_tx, task));
    }
    // Three holders in turn: each stop hands the lease to one of the others.
    for turn in 1..=3 {
        let holder = wait_for_runs(&probe, turn).await;
        // Let it act for a few extensions.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let (stop_tx, task) = runners.remove(&holder).expect("a running holder");
        stop_tx.send_replace(true);
        task.await.expect("runner task").expect("runner result");
    }
    for (_, (stop_tx, task)) in runners {
        stop_tx.send_replace(true);
        task.await.expect("runner task").expect("runner result");
    }
    let runs = probe.lock().expect("probe lock").clone();
    // Every probe run ended before the next began, as the runners' own clocks saw it.
    for pair in runs.windows(2) {
        let ended = pair[0].2.expect("told to stop");
        assert!(ended <= pair[1].1, "{runs:?}");
    }
    let mut client = cluster.client().await;
    let log = lease::fencing_log(&mut client, 0)
        .await
        .expect("fencing log");
    let grants = lease::check_no_overlap(&log).expect("no overlap");
    assert!(grants >= 3, "{grants} grants in {log:?}");
    let tokens: Vec<_> = runs.iter().map(|r| r.0.token.clone()).collect();
    let mut logged: Vec<_> = log.iter().map(|a| a.token.clone()).collect();
    logged.dedup();
    assert_eq!(logged, tokens[..logged.len()].to_vec());
    // The last holder revoked its grant when it stopped.
    let last = lease::read(&mut client, &LeaseKey::singular_controller())
        .await
        .expect("read")
        .expect("row");
    assert!(!last.is_held(), "{last:?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_loses_the_database_stops_its_workers_by_its_deadline() {
    let mut cluster = support::Cluster::start(43, 1).await;
    let (available_tx, available) = watch::channel(None);
    available_tx.send_replace(Some(database(&cluster)));
    let timing = Timing {
        duration: Duration::from_millis(3000),
        extend_every: Duration::from_millis(1000),
        margin: Duration::from_millis(1000),
    };
    let probe: Probe = Arc::default();
    let (stop_tx, stop) = Stop::new();
    let runner = tokio::spawn(singular::run(
        settings(
            "controller-0",
            timing.clone(),
            available.clone(),
            probe.clone(),
        ),
        available.clone(),
        stop,
    ));
    wait_for_runs(&probe, 1).await;
    // A few extensions, then the database goes away.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let gone = Instant::now();
    for app in cluster.apps.drain(..) {
        let _ = app.stop().await;
    }
    let until = Instant::now() + Duration::from_secs(20);
    let stopped = loop {
        if let Some(stopped) = probe.lock().expect("probe lock")[0].2 {
            break stopped;
        }
        assert!(Instant::now() < until, "the workers never stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Any extension was sent before the database went, so the deadline is at most
    // duration - margin after that; the margin itself is the slack allowed here.
    assert!(
        stopped <= gone + timing.duration,
        "stopped {:?} after the database went",
        stopped - gone
    );
    assert_eq!(probe.lock().expect("probe lock").len(), 1);
    stop_tx.send_replace(true);
    runner.await.expect("runner task").expect("runner result");
}
