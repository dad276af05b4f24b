//! The service loop: one task that owns the local node and handles every [`Event`] in
//! turn. Each convergence round observes (map, data dir, node), asks [`decide`] for one
//! action, applies it, and repeats until the decision is to keep, wait or fail. Failed
//! starts are retried with back-off; a health timer refreshes the status and notices a
//! lost leader.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::time::Duration;

mod converge;
mod departures;
mod map;
mod status;

pub(crate) use departures::Absent;
pub(crate) use map::{host_has_ip, read_map};
use status::from_member;
pub(crate) use status::{availability, classify_membership};

use controller_backoff::Backoff;
use controller_contract::status::{LogPosition, NodeState, Role, Status, Verdict};
use dqlite::NodeInfo;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::Config;
use crate::decide::{Decision, LocalData, Quorum};
use crate::event::{Event, Trigger};
use crate::health::Report;
use crate::Database;

/// Why a [`Driver`] operation failed. The status and the log show its whole chain
/// ([`dqlite::error_chain`]).
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("the node is not running")]
    NotRunning,
    /// Starting, joining, re-binding, shrinking or removing through the application layer.
    #[error(transparent)]
    App(#[from] dqlite::app::AppError),
    #[error("cannot stop the node")]
    Stop(#[source] dqlite::app::AppError),
    #[error(transparent)]
    Certificate(#[from] crate::node_tls::NodeTlsError),
    /// Reading the node's identity or log.
    #[error(transparent)]
    Node(#[from] dqlite::node::NodeError),
    /// A file-system step (`what` names it and its path).
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} panicked")]
    Panicked {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// What the service needs from the local node. The real one runs libdqlite through the
/// `dqlite` crate's application layer; the tests use a scripted fake. Failures come back
/// as a [`DriverError`], whose whole cause chain ends up in the log and the status; they
/// are never matched on (the decision to retry belongs to the loop, not to the error).
pub(crate) trait Driver {
    /// What the data dir holds: identity and the persisted membership, which the running
    /// node keeps fresh.
    fn local_data(&mut self) -> impl Future<Output = LocalData>;
    /// The address the node runs at, if it runs.
    fn running_address(&self) -> Option<String>;
    /// The node's id, once it has one.
    fn node_id(&self) -> Option<u64>;
    /// Starts the node: bootstraps without peers and without data, joins through `peers`
    /// without data, restarts an existing member otherwise.
    fn start(
        &mut self,
        address: &str,
        peers: &[String],
    ) -> impl Future<Output = Result<(), DriverError>>;
    /// Stops the node if it runs and rewrites its one-member configuration to `address`.
    fn rebind(&mut self, address: &str) -> impl Future<Output = Result<(), DriverError>>;
    /// Stops the node if it runs and rewrites membership to the local node alone.
    fn shrink_to_one(&mut self) -> impl Future<Output = Result<(), DriverError>>;
    /// Looks, for at most `within`, for a quorum: a leader, and a majority of the voters
    /// answering.
    fn probe_quorum(&mut self, within: Duration) -> impl Future<Output = Quorum>;
    /// The members and the leader's id as the cluster reports them.
    fn cluster(&mut self) -> impl Future<Output = Option<(Vec<NodeInfo>, Option<u64>)>>;
    /// The members other than this node that `wanted` (the map's addresses) lacks and that
    /// are going: they do not answer, or they answer as stopping (draining, see
    /// `dqlite::app::roles::DRAINING_WEIGHT`). Members that answer otherwise are not listed:
    /// unknown is not gone.
    fn departed(&mut self, wanted: &[String]) -> impl Future<Output = Vec<Absent>>;
    /// Removes a member from the cluster (never the last voter).
    fn remove(&mut self, id: u64) -> impl Future<Output = Result<(), DriverError>>;
    /// Stops the node (it is outside the configuration: nothing to hand over) and moves its
    /// data dir aside; returns where it went.
    fn set_aside(&mut self) -> impl Future<Output = Result<String, DriverError>>;
    /// The members' last progress reports (log positions), with their age now; `None`
    /// while the node does not run or nothing has been read yet.
    fn progress(&self) -> Option<BTreeMap<u64, Report>>;
    /// Has the progress reporter report and read now (nothing while the node does not run).
    fn kick_progress(&self) {}
    /// Hands leadership and the vote over, then stops the node.
    fn shutdown(&mut self) -> impl Future<Output = Result<(), DriverError>>;
    /// Stops the node without handing anything over (there is nobody to hand over to).
    fn stop(&mut self) -> impl Future<Output = Result<(), DriverError>>;
    /// The local node's last log position: exact when the node is stopped, a snapshot of
    /// its files while it runs.
    fn log_position(&mut self) -> impl Future<Output = Result<LogPosition, DriverError>>;
}

/// How long after a map change the status is refreshed every
/// [`Timings::health_interval_settling`] while it is not healthy: long enough for joins and
/// promotions (well under a second each), short enough that a controller that stays down
/// costs the quick checks only this long after each change.
pub const SETTLING_WINDOW: Duration = Duration::from_secs(5);

/// How long until the next health check: the settling interval within [`SETTLING_WINDOW`]
/// of a map change or a membership change while the verdict is not healthy or the last
/// check still saw the membership change (a lone voter is healthy while two joiners wait
/// for their promotion), the normal interval otherwise. Pure.
pub(crate) fn health_delay(
    timings: &Timings,
    healthy: bool,
    membership_changed: bool,
    now: Instant,
    settling_until: Option<Instant>,
) -> Duration {
    match settling_until {
        Some(until) if now < until && (!healthy || membership_changed) => {
            timings.health_interval_settling
        }
        _ => timings.health_interval,
    }
}

/// The progress reporter is kicked at most this often while settling: each kick is a
/// write through the leader, from every settling node.
const KICK_EVERY: Duration = Duration::from_millis(250);

/// Timings of the loop.
#[derive(Debug, Clone)]
pub struct Timings {
    /// How long a leader is looked for before the quorum counts as lost.
    pub quorum_timeout: Duration,
    /// How often the status is refreshed and the leader checked.
    pub health_interval: Duration,
    /// How often instead while the cluster settles: within [`SETTLING_WINDOW`] of a map
    /// change, until the verdict is healthy, so that a member that joined or was promoted
    /// shows in the status (and the verdict turns healthy) within this rather than at the
    /// next tick. Each check is one request to the leader.
    pub health_interval_settling: Duration,
    /// The first pause after a failed start.
    pub retry_initial: Duration,
    /// The longest pause between failed starts.
    pub retry_max: Duration,
}

impl Timings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            quorum_timeout: config.quorum_timeout,
            health_interval: Duration::from_secs(1),
            health_interval_settling: Duration::from_millis(100),
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// The loop's state.
pub(crate) struct Service<D> {
    /// Where the map is and who this controller is.
    config: Config,
    /// Probe, health and retry timings.
    timings: Timings,
    /// The only way to the local node.
    driver: D,
    /// Every event, from the sockets, the file watch and the signal handler.
    events: mpsc::Receiver<Event>,
    /// What the status socket answers.
    status: Status,
    /// The pause before the next attempt after a failed one.
    backoff: Backoff,
    /// When the next attempt after a failure is due.
    retry_at: Option<Instant>,
    /// Since when the running node has seen no leader (health checks).
    leaderless_since: Option<Instant>,
    /// The last decision, so that a retry repeating it is logged at debug level only.
    last_decision: Option<Decision>,
    /// Why the service is in its state (the status adds what the health check sees).
    reason: String,
    /// Events that arrived while an operation ran (status queries are answered at once).
    deferred: VecDeque<Event>,
    /// Members absent from the map that went silent, and since when, and those seen stopping
    /// (see `departures::due_for_removal`): a silent voter is removed once its silence has
    /// lasted a whole quorum timeout, so that a blip never removes anyone.
    absence: departures::AbsenceMemory,
    /// When the last departure probe was sent (the silence start of members it found
    /// silent for the first time).
    last_probe: Option<Instant>,
    /// Absent voters kept because the map dropped several voters at once (warned once).
    kept_absent: BTreeSet<u64>,
    /// After a map change: until when the membership is checked every
    /// [`DEPARTURE_CHECK_EVERY`] rather than every health tick, and when next.
    departure_watch: Option<(Instant, Instant)>,
    /// Until when the status is refreshed at the settling pace ([`health_delay`]).
    settling_until: Option<Instant>,
    /// Whether a cluster refresh saw the members or their roles change since the last
    /// health check chose its pace.
    membership_changed: bool,
    /// When the progress reporter was last kicked.
    last_kick: Option<Instant>,
    /// When the next health check is due.
    next_health: Instant,
    /// "The database is available": set while the node is a member, cleared otherwise, so
    /// that the workers beside the dbaccessor in an agent reach the cluster only through it.
    available: watch::Sender<Option<Database>>,
    /// What the published [`Database`] carries for clients' TLS.
    client_tls: Option<dqlite::tls::Tls>,
}

impl<D: Driver> Service<D> {
    pub fn new(config: Config, timings: Timings, driver: D, events: mpsc::Receiver<Event>) -> Self {
        let status = Status {
            agent_id: config.agent_id.clone(),
            node_id: None,
            bind_address: None,
            state: NodeState::Waiting,
            reason: "starting".into(),
            members: vec![],
            leader_id: None,
            config: None,
            health: None,
            decisions: Vec::new(),
        };
        let timings_health_interval = timings.health_interval;
        Self {
            backoff: Backoff::new(timings.retry_initial, timings.retry_max),
            config,
            timings,
            driver,
            events,
            status,
            retry_at: None,
            leaderless_since: None,
            last_decision: None,
            absence: departures::AbsenceMemory::default(),
            last_probe: None,
            kept_absent: BTreeSet::new(),
            departure_watch: None,
            settling_until: None,
            membership_changed: false,
            last_kick: None,
            next_health: Instant::now() + timings_health_interval,
            deferred: VecDeque::new(),
            reason: String::new(),
            available: watch::Sender::new(None),
            client_tls: None,
        }
    }

    /// Publishes "database available" on `available` instead of on a channel nobody reads,
    /// with `client_tls` for the clients when the nodes have TLS.
    pub fn with_availability(
        mut self,
        available: watch::Sender<Option<Database>>,
        client_tls: Option<dqlite::tls::Tls>,
    ) -> Self {
        self.available = available;
        self.client_tls = client_tls;
        self
    }

    /// Sets "database available" from the status: the member addresses while the node is a
    /// member, nothing otherwise. Receivers wake only when the value changes.
    fn publish_availability(&self) {
        let now = availability(&self.status, self.client_tls.as_ref());
        self.available.send_if_modified(|current| {
            if *current == now {
                return false;
            }
            match &now {
                Some(database) => {
                    log::info!("database available through {}", database.members.join(", "))
                }
                None if current.is_some() => log::info!("database no longer available"),
                None => {}
            }
            *current = now;
            true
        });
    }

    /// Runs until [`Event::Shutdown`] (or every sender is gone), then shuts the node down.
    pub async fn run(mut self) -> Result<(), DriverError> {
        self.converge(Trigger::Startup, Quorum::Unknown).await;
        loop {
            self.publish_availability();
            // Events that arrived while an operation ran come first, in order; one round
            // answers every config change queued behind it (each re-reads the same file).
            if let Some(event) = self.deferred.pop_front() {
                match event {
                    Event::Shutdown => break,
                    event @ Event::ConfigChanged(_) => {
                        self.deferred
                            .retain(|queued| !matches!(queued, Event::ConfigChanged(_)));
                        self.handle(event).await;
                    }
                    event => self.handle(event).await,
                }
                continue;
            }
            let retry_at = self.retry_at;
            let retry = async move {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let departure_check = self.departure_watch.map(|(_, next)| next);
            let departure_check = async move {
                match departure_check {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = departure_check => self.check_departures().await,
                event = self.events.recv() => match event {
                    None | Some(Event::Shutdown) => break,
                    Some(event) => self.handle(event).await,
                },
                () = retry => {
                    self.retry_at = None;
                    self.converge(Trigger::Retry, Quorum::Unknown).await;
                }
                () = tokio::time::sleep_until(self.next_health) => {
                    let failure = self.check_health().await;
                    let healthy = self
                        .status
                        .health
                        .as_ref()
                        .is_some_and(|health| health.verdict == Verdict::Healthy);
                    let now = Instant::now();
                    let delay = health_delay(
                        &self.timings,
                        healthy,
                        std::mem::take(&mut self.membership_changed),
                        now,
                        self.settling_until,
                    );
                    let kicked_lately = self
                        .last_kick
                        .is_some_and(|at| now.duration_since(at) < KICK_EVERY);
                    if delay < self.timings.health_interval && !kicked_lately {
                        // Settling: fresh reports for the next check, not the last second's.
                        self.driver.kick_progress();
                        self.last_kick = Some(now);
                    }
                    self.next_health = now + delay;
                    if let Some(failure) = failure {
                        self.handle(Event::NodeFailed(failure)).await;
                    }
                }
            }
        }
        // Users of the database stop before the node does (the agent stops them first);
        // anyone left sees it go now.
        self.available.send_replace(None);
        log::info!("shutting down: handing leadership and voting over, stopping the node");
        self.driver.shutdown().await
    }

    /// Looks at the cluster at the settling pace ([`health_delay`]) for
    /// [`SETTLING_WINDOW`] from now, or until healthy.
    fn settle_from_now(&mut self) {
        let now = Instant::now();
        self.settling_until = Some(now + SETTLING_WINDOW);
        self.next_health = self
            .next_health
            .min(now + self.timings.health_interval_settling);
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::ConfigChanged(trigger) => {
                self.converge(trigger, Quorum::Unknown).await;
                // A map that lost a controller is the departure itself: the leader acts on
                // it now rather than at its next health tick, and every node keeps looking
                // closely for a while, since the departing controller may be the leader,
                // which hands leadership over just before it goes.
                let now = Instant::now();
                self.departure_watch = Some((now + self.timings.quorum_timeout * 2, now));
                // Joins and promotions follow a map change: look at the cluster at the
                // settling pace until it is healthy.
                self.settle_from_now();
            }
            Event::NodeFailed(why) => {
                log::warn!("node failed: {why}");
                // A lost leader is not yet a lost quorum (a leader may be between terms):
                // the round probes the voters before any recovery.
                self.converge(Trigger::NodeFailed, Quorum::Unknown).await;
            }
            Event::StatusQuery(reply) => {
                // The verdict from the latest progress reports, not the last tick's.
                if self.status.bind_address.is_some() {
                    self.assess_health();
                }
                // The client may have given up; nothing to do then.
                let _ = reply.send(self.status.clone());
            }
            Event::ProbeQuery(reply) => {
                if self.status.bind_address.is_some() {
                    self.assess_health();
                }
                let position = self.driver.log_position().await;
                let position = position.map_err(|e| dqlite::error_chain(&e));
                let _ = reply.send((self.status.clone(), position));
            }
            Event::Recover {
                force,
                best_peer,
                reply,
            } => {
                let answer = self.recover(force, best_peer).await;
                let _ = reply.send(answer.map_err(|e| dqlite::error_chain(&e)));
            }
            Event::Shutdown => {}
        }
    }
}

/// Runs `operation` (a start, a join, a probe, a recovery: seconds at worst) while still
/// answering status queries, so that a client sees "joining" or "recovering" instead of a
/// silent socket. Other events wait in `deferred` for the loop.
async fn while_answering<T>(
    events: &mut mpsc::Receiver<Event>,
    deferred: &mut VecDeque<Event>,
    status: &Status,
    operation: impl Future<Output = T>,
) -> T {
    tokio::pin!(operation);
    loop {
        tokio::select! {
            output = &mut operation => return output,
            Some(event) = events.recv() => match event {
                Event::StatusQuery(reply) => {
                    // The client may have given up; nothing to do then.
                    let _ = reply.send(status.clone());
                }
                Event::ProbeQuery(reply) => {
                    // The node's files are moving: no log position until the operation ends.
                    let busy = format!("the node is busy ({})", status.state.as_str());
                    let _ = reply.send((status.clone(), Err(busy)));
                }
                other => deferred.push_back(other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::path::Path;
    use std::rc::Rc;

    use dqlite::NodeRole;

    /// What the fake node did, in order, with the (virtual) time since the test began.
    type Journal = Rc<RefCell<Vec<(u128, String)>>>;

    /// A scripted node: starts fail `failures` times, then succeed.
    struct FakeDriver {
        journal: Journal,
        began: Instant,
        failures: usize,
        running: Option<String>,
        data: LocalData,
        /// How long each start takes (virtual time).
        start_takes: Duration,
        /// How many times the data dir was observed (one per decision).
        observations: Rc<std::cell::Cell<usize>>,
    }

    impl FakeDriver {
        fn note(&self, what: String) {
            self.journal
                .borrow_mut()
                .push((self.began.elapsed().as_millis(), what));
        }
    }

    impl Driver for FakeDriver {
        async fn local_data(&mut self) -> LocalData {
            self.observations.set(self.observations.get() + 1);
            self.data.clone()
        }
        fn running_address(&self) -> Option<String> {
            self.running.clone()
        }
        fn node_id(&self) -> Option<u64> {
            self.running.as_ref().map(|_| 1)
        }
        async fn start(&mut self, address: &str, peers: &[String]) -> Result<(), DriverError> {
            self.note(format!("start {address} {peers:?}"));
            tokio::time::sleep(self.start_takes).await;
            if self.failures > 0 {
                self.failures -= 1;
                return Err(DriverError::App(dqlite::app::AppError::NoLeader {
                    addresses: vec![],
                    last_error: "no node knows a leader".into(),
                }));
            }
            self.running = Some(address.to_owned());
            self.data = LocalData::Member {
                node_id: 1,
                address: address.to_owned(),
                members: vec![NodeInfo {
                    id: 1,
                    address: address.to_owned(),
                    role: NodeRole::Voter,
                }],
            };
            Ok(())
        }
        async fn rebind(&mut self, address: &str) -> Result<(), DriverError> {
            self.note(format!("rebind {address}"));
            Ok(())
        }
        async fn shrink_to_one(&mut self) -> Result<(), DriverError> {
            self.note("shrink".into());
            Ok(())
        }
        async fn probe_quorum(&mut self, _within: Duration) -> Quorum {
            Quorum::Reachable
        }
        async fn cluster(&mut self) -> Option<(Vec<NodeInfo>, Option<u64>)> {
            None
        }
        async fn departed(&mut self, _wanted: &[String]) -> Vec<Absent> {
            vec![]
        }
        async fn remove(&mut self, id: u64) -> Result<(), DriverError> {
            self.note(format!("remove {id}"));
            Ok(())
        }
        async fn set_aside(&mut self) -> Result<String, DriverError> {
            self.note("set aside".into());
            self.running = None;
            self.data = LocalData::Empty;
            Ok("aside".into())
        }
        fn progress(&self) -> Option<BTreeMap<u64, Report>> {
            None
        }
        async fn shutdown(&mut self) -> Result<(), DriverError> {
            self.note("shutdown".into());
            Ok(())
        }
        async fn stop(&mut self) -> Result<(), DriverError> {
            self.note("stop".into());
            self.running = None;
            Ok(())
        }
        async fn log_position(&mut self) -> Result<LogPosition, DriverError> {
            Ok(LogPosition { term: 1, index: 5 })
        }
    }

    /// A config for agent 1 whose map names agents 0 and 1.
    fn joining_config(dir: &Path) -> Config {
        let args = crate::config::Args {
            agent_id: "1".into(),
            data_dir: dir.to_owned(),
            reload_socket: None,
            status_socket: None,
            dqlite_port: 17666,
            network_latency_ms: 20,
            quorum_timeout_ms: None,
            dqlite_tls: None,
            log_level: "info".into(),
        };
        let config = Config::from_args(&args);
        std::fs::create_dir_all(config.controller_conf.parent().expect("parent")).expect("mkdir");
        std::fs::write(
            &config.controller_conf,
            "db-bind-addresses:\n  '0': 127.21.0.11\n  '1': 127.21.0.12\n",
        )
        .expect("write conf");
        config
    }

    #[test]
    fn the_status_is_checked_at_the_settling_pace_only_after_a_change_until_healthy() {
        let timings = Timings {
            health_interval_settling: Duration::from_millis(100),
            health_interval: Duration::from_secs(1),
            ..test_timings()
        };
        let now = Instant::now();
        let window = Some(now + SETTLING_WINDOW);
        let fast = Duration::from_millis(100);
        let slow = Duration::from_secs(1);
        // (healthy, membership changed at the last check, now, settling until) -> delay
        let table = [
            (false, false, now, window, fast),
            (true, false, now, window, slow),
            (true, true, now, window, fast),
            (false, true, now + SETTLING_WINDOW, window, slow),
            (false, false, now + SETTLING_WINDOW * 2, window, slow),
            (false, true, now, None, slow),
            (true, false, now, None, slow),
        ];
        for (healthy, changed, at, until, expected) in table {
            assert_eq!(
                health_delay(&timings, healthy, changed, at, until),
                expected,
                "healthy {healthy}, changed {changed}, {:?} into the window",
                at - now
            );
        }
    }

    fn test_timings() -> Timings {
        Timings {
            quorum_timeout: Duration::from_secs(2),
            health_interval: Duration::from_secs(3600),
            health_interval_settling: Duration::from_secs(3600),
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
        }
    }

    async fn query_status(events: &mpsc::Sender<Event>) -> Status {
        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
        events
            .send(Event::StatusQuery(reply_tx))
            .await
            .expect("loop runs");
        reply_rx.await.expect("status")
    }

    #[tokio::test(start_paused = true)]
    async fn status_is_answered_while_a_join_runs_and_shutdown_waits_for_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = joining_config(dir.path());
        let journal = Journal::default();
        let observations: Rc<std::cell::Cell<usize>> = Rc::default();
        let driver = FakeDriver {
            journal: journal.clone(),
            began: Instant::now(),
            failures: 0,
            running: None,
            data: LocalData::Empty,
            start_takes: Duration::from_secs(5),
            observations: observations.clone(),
        };
        let (events_tx, events_rx) = mpsc::channel(8);
        let service = Service::new(config, test_timings(), driver, events_rx);
        let client = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let during = query_status(&events_tx).await;
            let asked_at = journal.borrow().len();
            for trigger in [Trigger::Reload, Trigger::FileWatch, Trigger::Reload] {
                events_tx
                    .send(Event::ConfigChanged(trigger))
                    .await
                    .expect("loop runs");
            }
            events_tx.send(Event::Shutdown).await.expect("loop runs");
            (during, asked_at)
        };
        let (result, (during, entries_when_answered)) = tokio::join!(service.run(), client);
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(during.state, NodeState::Joining);
        assert!(
            during.reason.contains("join at 127.21.0.12:17666"),
            "{during:?}"
        );
        assert_eq!(entries_when_answered, 1, "answered during the join");
        // Start-up: decide to join, then decide to keep; then one round for the three
        // config changes queued during the join.
        assert_eq!(observations.get(), 3);
        let start = "start 127.21.0.12:17666 [\"127.21.0.11:17666\"]".to_owned();
        // The shutdown sent at 1 s waited for the join to end at 5 s.
        assert_eq!(
            *journal.borrow(),
            vec![(0, start), (5_000, "shutdown".to_owned())]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failed_joins_are_retried_with_backoff_until_they_succeed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = joining_config(dir.path());
        let journal = Journal::default();
        let driver = FakeDriver {
            journal: journal.clone(),
            began: Instant::now(),
            failures: 3,
            running: None,
            data: LocalData::Empty,
            start_takes: Duration::ZERO,
            observations: Rc::default(),
        };
        let (events_tx, events_rx) = mpsc::channel(8);
        let (available_tx, mut available) = watch::channel(None);
        let service = Service::new(config, test_timings(), driver, events_rx)
            .with_availability(available_tx, None);
        let stopper = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let failed = query_status(&events_tx).await;
            let while_failed = available.borrow_and_update().clone();
            tokio::time::sleep(Duration::from_millis(9_800)).await;
            let status = query_status(&events_tx).await;
            let while_member = available.borrow_and_update().clone();
            events_tx.send(Event::Shutdown).await.expect("loop runs");
            (failed, status, while_failed, while_member)
        };
        let (result, (failed, status, while_failed, while_member)) =
            tokio::join!(service.run(), stopper);
        assert!(result.is_ok(), "{result:?}");
        // Other workers see the database only while the node is a member.
        assert_eq!(while_failed, None);
        let member = while_member.expect("available while a member");
        assert_eq!(member.own_address, "127.21.0.12:17666");
        assert_eq!(member.members[0], "127.21.0.12:17666");
        assert_eq!(*available.borrow(), None, "cleared at shutdown");
        assert_eq!(failed.state, NodeState::Failed);
        assert!(
            failed.reason.contains(
                "join failed: no leader found among []: no node knows a leader; retrying in 500 ms"
            ),
            "{failed:?}"
        );
        assert_eq!(status.state, NodeState::Member);
        assert_eq!(status.bind_address.as_deref(), Some("127.21.0.12:17666"));
        let start = "start 127.21.0.12:17666 [\"127.21.0.11:17666\"]".to_owned();
        // Three failures: retried after 0.5, 1 and 2 s; the fourth attempt succeeds.
        assert_eq!(
            *journal.borrow(),
            vec![
                (0, start.clone()),
                (500, start.clone()),
                (1500, start.clone()),
                (3500, start),
                (10_000, "shutdown".to_owned()),
            ]
        );
    }
}
