//! The service loop: one task that owns the local node and handles every [`Event`] in
//! turn. Each convergence round observes (map, data dir, node), asks [`decide`] for one
//! action, applies it, and repeats until the decision is to keep, wait or fail. Failed
//! starts are retried with back-off; a health timer refreshes the status and notices a
//! lost leader.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use controller_backoff::Backoff;
use controller_contract::conf::ControllerConf;
use controller_contract::status::{
    ConfigSeen, LogPosition, Member, NodeState, Recovered, Role, Status,
};
use dqlite::{NodeInfo, NodeRole};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::Config;
use crate::decide::{decide, Action, Decision, LocalData, MapRead, Membership, Observed, Quorum};
use crate::event::{Event, Trigger};
use crate::health::{self, Report};
use crate::Database;

/// At most this many actions in one convergence round: a round that keeps acting is a bug,
/// and stopping it keeps the loop answering status queries.
const MAX_STEPS: usize = 6;

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
/// as text with their whole cause chain: they end up in the log and the status and are
/// never matched on (the decision to retry belongs to the loop, not to the error).
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
    /// Members other than this node that are absent from `wanted` (the map's addresses)
    /// and answer nobody.
    fn absent_and_unreachable(&mut self, wanted: &[String]) -> impl Future<Output = Vec<NodeInfo>>;
    /// Removes a member from the cluster (never the last voter).
    fn remove(&mut self, id: u64) -> impl Future<Output = Result<(), DriverError>>;
    /// Stops the node (it is outside the configuration: nothing to hand over) and moves its
    /// data dir aside; returns where it went.
    fn set_aside(&mut self) -> impl Future<Output = Result<String, DriverError>>;
    /// The members' last progress reports (log positions), with their age now; `None`
    /// while the node does not run or nothing has been read yet.
    fn progress(&self) -> Option<BTreeMap<u64, Report>>;
    /// Hands leadership and the vote over, then stops the node.
    fn shutdown(&mut self) -> impl Future<Output = Result<(), DriverError>>;
    /// Stops the node without handing anything over (there is nobody to hand over to).
    fn stop(&mut self) -> impl Future<Output = Result<(), DriverError>>;
    /// The local node's last log position: exact when the node is stopped, a snapshot of
    /// its files while it runs.
    fn log_position(&mut self) -> impl Future<Output = Result<LogPosition, DriverError>>;
}

/// Timings of the loop.
#[derive(Debug, Clone)]
pub struct Timings {
    /// How long a leader is looked for before the quorum counts as lost.
    pub quorum_timeout: Duration,
    /// How often the status is refreshed and the leader checked.
    pub health_interval: Duration,
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
    /// Members absent from the map and unreachable, and since when: removed once that has
    /// lasted a whole quorum timeout, so that a blip never removes anyone.
    absent_since: BTreeMap<u64, Instant>,
    /// When the last departure probe was sent (the `absent_since` of members it found
    /// silent for the first time).
    last_probe: Option<Instant>,
    /// Absent voters kept because the map dropped several voters at once (warned once).
    kept_absent: BTreeSet<u64>,
    /// After a map change: until when the membership is checked every
    /// [`DEPARTURE_CHECK_EVERY`] rather than every health tick, and when next.
    departure_watch: Option<(Instant, Instant)>,
    /// "The database is available": set while the node is a member, cleared otherwise, so
    /// that the workers beside the dbaccessor in an agent reach the cluster only through it.
    available: watch::Sender<Option<Database>>,
    /// What the published [`Database`] carries for clients' TLS.
    client_tls: Option<dqlite::tls::Tls>,
}

/// Why `recover-cluster` refused or failed; the action shows the chain.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecoverError {
    #[error("this controller's node has no identity yet: nothing to recover")]
    NoIdentity,
    #[error("the data dir holds no node: nothing to recover")]
    Empty,
    #[error("the data dir is unreadable: {0}")]
    Unreadable(String),
    #[error("cannot stop the node")]
    Stop(#[source] DriverError),
    #[error("cannot read the local log position (the node was restarted unchanged)")]
    LogPosition(#[source] DriverError),
    #[error(
        "the local log ({local}) is behind another member's ({best}): recover the most \
         up-to-date member instead, or pass force=true to lose the entries after {local}; \
         the node was restarted unchanged"
    )]
    Behind {
        local: LogPosition,
        best: LogPosition,
    },
    #[error("cannot rewrite membership")]
    Shrink(#[source] DriverError),
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
        };
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
            absent_since: BTreeMap::new(),
            last_probe: None,
            kept_absent: BTreeSet::new(),
            departure_watch: None,
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
        let mut health = tokio::time::interval(self.timings.health_interval);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                _ = health.tick() => {
                    if let Some(failure) = self.check_health().await {
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

    /// The `recover-cluster` action: stop, check the log against the best peer's, rewrite
    /// membership to this node alone, and let a convergence round restart it.
    async fn recover(
        &mut self,
        force: bool,
        best_peer: Option<LogPosition>,
    ) -> Result<Recovered, RecoverError> {
        let node_id = self.driver.node_id().ok_or(RecoverError::NoIdentity)?;
        let address = match self.driver.local_data().await {
            LocalData::Member { address, .. } => address,
            LocalData::Empty => return Err(RecoverError::Empty),
            LocalData::Unreadable(why) => return Err(RecoverError::Unreadable(why)),
        };
        let members_before = self.status.members.clone();
        let mut steps = vec![];
        log::warn!("recover-cluster: stopping the node (force {force}, best peer {best_peer:?})");
        self.status.state = NodeState::Recovering;
        self.status.reason = "recover-cluster: stopping the node".into();
        self.driver.stop().await.map_err(RecoverError::Stop)?;
        steps.push(format!("stopped node {node_id} at {address}"));
        let position = match self.driver.log_position().await {
            Ok(position) => position,
            Err(error) => {
                self.converge(Trigger::Recover, Quorum::Unknown).await;
                return Err(RecoverError::LogPosition(error));
            }
        };
        steps.push(format!("read the local log position {position}"));
        if let Some(best) = best_peer.filter(|best| *best > position) {
            if !force {
                self.converge(Trigger::Recover, Quorum::Unknown).await;
                return Err(RecoverError::Behind {
                    local: position,
                    best,
                });
            }
            steps.push(format!(
                "forced: entries after {position} that another member has ({best}) are lost"
            ));
        }
        if let Err(error) = self.driver.shrink_to_one().await {
            self.converge(Trigger::Recover, Quorum::Unknown).await;
            return Err(RecoverError::Shrink(error));
        }
        steps.push(format!(
            "rewrote membership to node {node_id} at {address} alone (voter)"
        ));
        log::warn!("recover-cluster: membership rewritten to node {node_id} alone; restarting");
        self.converge(Trigger::Recover, Quorum::Unknown).await;
        if self.driver.running_address().is_some() {
            steps.push(format!("restarted the node: {}", self.status.reason));
        } else {
            steps.push(format!("the node did not restart: {}", self.status.reason));
        }
        Ok(Recovered {
            node_id,
            address,
            log_position: position,
            members_before,
            steps,
            status: self.status.clone(),
        })
    }

    /// Observes, decides and applies until the decision leaves the node alone.
    async fn converge(&mut self, trigger: Trigger, mut quorum: Quorum) {
        for _ in 0..MAX_STEPS {
            let observed = self.observe(quorum).await;
            let decision = decide(&observed);
            self.log_decision(trigger, &observed, &decision);
            self.status.state = decision.state();
            self.reason = decision.reason.clone();
            self.status.reason = decision.reason.clone();
            let result = match &decision.action {
                Action::Wait | Action::Keep | Action::Fail | Action::Outside => {
                    self.refresh_cluster().await;
                    if decision.action == Action::Keep {
                        self.backoff.reset();
                    }
                    return;
                }
                Action::ProbeQuorum => {
                    let probe = self.driver.probe_quorum(self.timings.quorum_timeout);
                    quorum =
                        while_answering(&mut self.events, &mut self.deferred, &self.status, probe)
                            .await;
                    log::info!("quorum probe: {quorum:?}");
                    continue;
                }
                Action::Bootstrap { address } | Action::Join { address, .. } => {
                    let peers = match &decision.action {
                        Action::Join { peers, .. } => peers.clone(),
                        _ => vec![],
                    };
                    let start = self.driver.start(address, &peers);
                    while_answering(&mut self.events, &mut self.deferred, &self.status, start).await
                }
                Action::Restart { address, peers } => {
                    let start = self.driver.start(address, peers);
                    while_answering(&mut self.events, &mut self.deferred, &self.status, start).await
                }
                Action::Rebind { to, .. } => {
                    let rebind = self.driver.rebind(to);
                    while_answering(&mut self.events, &mut self.deferred, &self.status, rebind)
                        .await
                }
                Action::SetAside { .. } => {
                    let aside = self.driver.set_aside();
                    match while_answering(&mut self.events, &mut self.deferred, &self.status, aside)
                        .await
                    {
                        Ok(moved_to) => {
                            log::warn!(
                                "the node was outside the cluster's configuration: its data dir \
                                 is kept at {moved_to}; joining again as a new member"
                            );
                            Ok(())
                        }
                        Err(error) => Err(error),
                    }
                }
                Action::ShrinkToOne { .. } => {
                    let started = Instant::now();
                    let shrink = self.driver.shrink_to_one();
                    let result =
                        while_answering(&mut self.events, &mut self.deferred, &self.status, shrink)
                            .await;
                    log::info!(
                        "shrink to one: membership rewritten in {} ms",
                        started.elapsed().as_millis()
                    );
                    result
                }
            };
            // The quorum seen before an action says nothing about the node after it.
            quorum = Quorum::Unknown;
            if let Err(error) = result {
                let error = dqlite::error_chain(&error);
                let delay = self.backoff.next_delay();
                log::warn!(
                    "{:?} failed: {error}; retrying in {} ms",
                    decision.action,
                    delay.as_millis()
                );
                self.status.state = NodeState::Failed;
                self.reason = format!(
                    "{} failed: {error}; retrying in {} ms",
                    action_name(&decision.action),
                    delay.as_millis()
                );
                self.retry_at = Some(Instant::now() + delay);
                self.refresh_cluster().await;
                return;
            }
            log::info!("{} done", action_name(&decision.action));
            self.retry_at = None;
        }
        log::error!("convergence did not settle within {MAX_STEPS} steps; trying again later");
        self.retry_at = Some(Instant::now() + self.backoff.next_delay());
    }

    async fn observe(&mut self, quorum: Quorum) -> Observed {
        let (map, seen) = read_map(&self.config.controller_conf);
        self.status.config = Some(seen);
        let own_ip_on_host = match &map {
            MapRead::Map(map) => map
                .get(&self.config.agent_id)
                .is_some_and(|ip| host_has_ip(*ip)),
            _ => false,
        };
        let running = self.driver.running_address();
        // Right after a probe that found no leader for a whole quorum timeout no leader can
        // say "excluded": asking again would only cost another bounded lookup.
        let membership = if running.is_some() && quorum != Quorum::Unreachable {
            self.membership().await
        } else {
            Membership::Unknown
        };
        Observed {
            agent_id: self.config.agent_id.clone(),
            port: self.config.dqlite_port,
            map,
            own_ip_on_host,
            data: self.driver.local_data().await,
            running,
            quorum,
            membership,
        }
    }

    /// Whether a leader lists the running node. Only a live answer from another leader
    /// can say "excluded"; anything else is unknown.
    async fn membership(&mut self) -> Membership {
        let Some(own) = self.driver.node_id() else {
            return Membership::Unknown;
        };
        match self.driver.cluster().await {
            Some((members, Some(leader))) => classify_membership(own, &members, leader),
            _ => Membership::Unknown,
        }
    }

    fn log_decision(&mut self, trigger: Trigger, observed: &Observed, decision: &Decision) {
        // A retry that decides what the last round decided adds nothing to the log; a
        // reload or a file change is always answered in the log, even when nothing changes.
        let repeated = trigger == Trigger::Retry && self.last_decision.as_ref() == Some(decision);
        let read = match &observed.map {
            MapRead::Missing => "no file".to_owned(),
            MapRead::Unusable(why) => format!("unusable ({why})"),
            MapRead::Map(map) => format!("{map:?}"),
        };
        let message = format!(
            "[{trigger}] read {}: {read}; node {}; decided {}: {}",
            self.config.controller_conf.display(),
            observed
                .running
                .as_deref()
                .map_or("stopped".to_owned(), |at| format!("running at {at}")),
            action_name(&decision.action),
            decision.reason
        );
        if repeated {
            log::debug!("{message}");
        } else {
            log::info!("{message}");
        }
        self.last_decision = Some(decision.clone());
    }

    /// Updates the status from the cluster; on the leader, removes departed members.
    async fn refresh_cluster(&mut self) {
        self.status.node_id = self.driver.node_id();
        self.status.bind_address = self.driver.running_address();
        if self.status.bind_address.is_none() {
            self.status.members.clear();
            self.status.leader_id = None;
            self.status.health = None;
            self.status.reason = self.reason.clone();
            return;
        }
        match self.driver.cluster().await {
            Some((members, leader)) => {
                self.status.members = members.iter().map(to_member).collect();
                self.status.leader_id = leader;
            }
            None => {
                self.status.members.clear();
                self.status.leader_id = None;
            }
        }
        self.assess_health();
        self.status.reason = match (self.status.state, self.status.leader_id) {
            (NodeState::Member, None) => format!(
                "{}; no leader is visible: waiting for a quorum of voters",
                self.reason
            ),
            _ => self.reason.clone(),
        };
    }

    /// The health verdict from the members, the leader, the progress reports and the map
    /// just read.
    fn assess_health(&mut self) {
        let members: Vec<NodeInfo> = self.status.members.iter().map(from_member).collect();
        let reports = self.driver.progress();
        let map = self
            .status
            .config
            .as_ref()
            .and_then(|c| c.bind_addresses.clone());
        let health = health::assess(&health::Inputs {
            members: &members,
            leader: self.status.leader_id,
            reports: reports.as_ref(),
            map: map.as_ref(),
            port: self.config.dqlite_port,
        });
        let changed = self
            .status
            .health
            .as_ref()
            .is_none_or(|h| h.verdict != health.verdict);
        if changed {
            log::info!("health: {}", health.summary);
        }
        self.status.health = Some(health);
    }

    /// Refreshes the status; returns a failure when the node has seen no leader for a
    /// whole quorum timeout, or when a leader's configuration no longer lists it.
    async fn check_health(&mut self) -> Option<String> {
        if self.driver.running_address().is_none() {
            self.leaderless_since = None;
            return None;
        }
        self.refresh_cluster().await;
        if let (Some(leader), Some(own)) = (self.status.leader_id, self.status.node_id) {
            let members: Vec<NodeInfo> = self.status.members.iter().map(from_member).collect();
            if self.status.state == NodeState::Member
                && classify_membership(own, &members, leader) != Membership::Included
            {
                return Some(format!(
                    "leader node {leader}'s configuration does not list this node ({own})"
                ));
            }
        }
        if self.status.leader_id.is_some() {
            self.leaderless_since = None;
            if self.status.leader_id == self.status.node_id {
                self.remove_departed().await;
            }
            return None;
        }
        let since = *self.leaderless_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.timings.quorum_timeout {
            self.leaderless_since = None;
            return Some(format!("no leader for {} ms", since.elapsed().as_millis()));
        }
        None
    }

    /// One check of the departure watch: the cluster as it now is and, on the leader, the
    /// removal of departed members. The watch ends when its time is up, or when the leader
    /// finds no member absent (or only absent voters it keeps).
    async fn check_departures(&mut self) {
        let Some((until, _)) = self.departure_watch else {
            return;
        };
        let now = Instant::now();
        if now >= until || self.driver.running_address().is_none() {
            self.departure_watch = None;
            return;
        }
        self.refresh_cluster().await;
        let leads = self.status.leader_id.is_some() && self.status.leader_id == self.status.node_id;
        if leads && !self.remove_departed().await {
            self.departure_watch = None;
            return;
        }
        self.departure_watch = Some((
            until,
            next_departure_check(&self.absent_since, self.last_probe, Instant::now()),
        ));
    }

    /// On the leader: removes members that have been absent from a usable map, and
    /// unreachable, for a whole quorum timeout (spares: see [`SPARE_GRACE`]). Returns
    /// whether a member the map lacks is still in the configuration (not one of the
    /// absent voters it keeps).
    async fn remove_departed(&mut self) -> bool {
        let (MapRead::Map(map), _) = read_map(&self.config.controller_conf) else {
            self.absent_since.clear();
            return false;
        };
        if !map.contains_key(&self.config.agent_id) {
            self.absent_since.clear();
            return false;
        }
        let wanted: Vec<String> = map
            .values()
            .map(|ip| self.config.dqlite_address(*ip))
            .collect();
        // Absence counts from when the probe was sent: a probe of a black-holed address takes
        // its whole bound, which is time the member was already silent.
        let now = Instant::now();
        self.last_probe = Some(now);
        let absent = self.driver.absent_and_unreachable(&wanted).await;
        let due = due_for_removal(
            &mut self.absent_since,
            &absent,
            now,
            self.timings.quorum_timeout,
        );
        let members: Vec<NodeInfo> = self.status.members.iter().map(from_member).collect();
        let own = self.status.node_id.unwrap_or_default();
        let (due, kept) = removable(&members, own, &wanted, due);
        let kept_ids: BTreeSet<u64> = kept.iter().map(|m| m.id).collect();
        for member in kept.iter().filter(|m| !self.kept_absent.contains(&m.id)) {
            log::warn!(
                "keeping voter {} at {}: it is absent from the map and unreachable, but the map \
                 drops several voters at once, which a departure never does (departing \
                 controllers hand their vote over first); unknown is not gone",
                member.id,
                member.address
            );
        }
        self.kept_absent = kept_ids;
        let removing = !due.is_empty();
        for member in due {
            let waited = self
                .absent_since
                .get(&member.id)
                .map_or(0, |since| now.duration_since(*since).as_millis());
            match self.driver.remove(member.id).await {
                Ok(()) => log::info!(
                    "removed departed member {} at {} ({}): absent from the map and unreachable \
                     (for {waited} ms)",
                    member.id,
                    member.address,
                    member.role,
                ),
                Err(e) => log::warn!(
                    "cannot remove departed member {} at {}: {}",
                    member.id,
                    member.address,
                    dqlite::error_chain(&e)
                ),
            }
        }
        if removing {
            // The status shows the configuration as it now is, not a second later.
            self.refresh_cluster().await;
        }
        // Still waited for: any member the map lacks, answering or not (a departing
        // controller answers until it has handed over and stopped), except kept voters.
        members.iter().any(|m| {
            m.id != own && !wanted.contains(&m.address) && !self.kept_absent.contains(&m.id)
        })
    }
}

/// Splits the members due for removal into those that may go and the voters that stay.
/// A voter is removed for its absence only when it is the one voter the map dropped: a
/// map that drops several voters at once is more likely wrong than several controllers
/// gone at once without handing over (a departing controller's dbaccessor hands its vote
/// over and leaves as a spare). Stand-bys and spares hold no vote and may always go.
pub(crate) fn removable(
    members: &[NodeInfo],
    own_id: u64,
    wanted: &[String],
    due: Vec<NodeInfo>,
) -> (Vec<NodeInfo>, Vec<NodeInfo>) {
    let absent_voters = members
        .iter()
        .filter(|m| m.id != own_id && m.role == NodeRole::Voter && !wanted.contains(&m.address))
        .count();
    if absent_voters <= 1 {
        return (due, vec![]);
    }
    due.into_iter().partition(|m| m.role != NodeRole::Voter)
}

/// Spares and stand-bys absent from the map go once they failed two checks at least this far
/// apart: a departing controller hands its vote over and leaves as a spare (or stays a
/// stand-by when no spare can take that role), neither of which holds a vote, so it needs
/// no quorum-timeout grace; but one silent probe (a joiner the leader's map does not name
/// yet, on a loaded machine) is not enough to call it gone.
pub(crate) const SPARE_GRACE: Duration = Duration::from_millis(300);

/// How often the membership is checked for a while after a map change (see
/// `Service::check_departures`): often enough that a departed controller leaves the
/// configuration within a few hundred milliseconds of its hand-over.
pub(crate) const DEPARTURE_CHECK_EVERY: Duration = Duration::from_millis(150);

/// When the departure watch checks next: [`DEPARTURE_CHECK_EVERY`] after the last check,
/// or sooner when the probe sent at `probed_at` found a member silent for the first time:
/// its second probe goes as soon as [`SPARE_GRACE`] has passed since the first was sent,
/// not a check period after the first one's answer (a black-holed probe takes its whole
/// bound).
pub(crate) fn next_departure_check(
    absent_since: &BTreeMap<u64, Instant>,
    probed_at: Option<Instant>,
    now: Instant,
) -> Instant {
    let regular = now + DEPARTURE_CHECK_EVERY;
    absent_since
        .values()
        .filter(|since| Some(**since) == probed_at)
        .map(|since| (*since + SPARE_GRACE).max(now))
        .filter(|at| *at < regular)
        .min()
        .unwrap_or(regular)
}

/// Tracks since when each member has been absent (and unreachable); returns those absent
/// for at least `grace`, and spares and stand-bys absent for [`SPARE_GRACE`] (one that was
/// only cut off and is removed finds itself outside the configuration and rejoins). Members no
/// longer absent are forgotten.
pub(crate) fn due_for_removal(
    absent_since: &mut BTreeMap<u64, Instant>,
    absent: &[NodeInfo],
    now: Instant,
    grace: Duration,
) -> Vec<NodeInfo> {
    absent_since.retain(|id, _| absent.iter().any(|m| m.id == *id));
    absent
        .iter()
        .filter(|member| {
            let since = *absent_since.entry(member.id).or_insert(now);
            let waited = now.duration_since(since);
            waited >= grace || (member.role != NodeRole::Voter && waited >= SPARE_GRACE)
        })
        .cloned()
        .collect()
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

fn action_name(action: &Action) -> &'static str {
    match action {
        Action::Wait => "wait",
        Action::Keep => "keep",
        Action::Fail => "fail",
        Action::Bootstrap { .. } => "bootstrap",
        Action::Join { .. } => "join",
        Action::Restart { .. } => "restart",
        Action::Rebind { .. } => "re-bind",
        Action::ProbeQuorum => "probe quorum",
        Action::ShrinkToOne { .. } => "shrink to one",
        Action::SetAside { .. } => "set aside and rejoin",
        Action::Outside => "outside the configuration",
    }
}

/// Whether `members`, as leader `leader` reported them, include node `own`.
pub(crate) fn classify_membership(own: u64, members: &[NodeInfo], leader: u64) -> Membership {
    if members.iter().any(|m| m.id == own) {
        Membership::Included
    } else if leader == own || members.is_empty() {
        // A leader always lists itself; an empty list is no answer.
        Membership::Unknown
    } else {
        Membership::Excluded { leader }
    }
}

fn from_member(member: &Member) -> NodeInfo {
    NodeInfo {
        id: member.id,
        address: member.address.clone(),
        role: match member.role {
            Role::Voter => NodeRole::Voter,
            Role::StandBy => NodeRole::StandBy,
            Role::Spare => NodeRole::Spare,
        },
    }
}

fn to_member(info: &NodeInfo) -> Member {
    Member {
        id: info.id,
        address: info.address.clone(),
        role: match info.role {
            NodeRole::Voter => Role::Voter,
            NodeRole::StandBy => Role::StandBy,
            NodeRole::Spare => Role::Spare,
        },
    }
}

/// Reads `controller.conf` into what [`decide`] needs and what the status shows.
pub(crate) fn read_map(path: &Path) -> (MapRead, ConfigSeen) {
    let read_at_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let map = match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => MapRead::Missing,
        Err(e) => MapRead::Unusable(format!("cannot read {}: {e}", path.display())),
        Ok(text) => match ControllerConf::parse(&text) {
            Err(e) => MapRead::Unusable(e.to_string()),
            Ok(conf) if !conf.has_bind_addresses() => {
                MapRead::Unusable("controller.conf has no db-bind-addresses key".into())
            }
            Ok(conf) => MapRead::Map(conf.bind_addresses().clone()),
        },
    };
    let (bind_addresses, error) = match &map {
        MapRead::Missing => (None, Some(format!("{} does not exist", path.display()))),
        MapRead::Unusable(why) => (None, Some(why.clone())),
        MapRead::Map(map) => (Some(map.clone()), None),
    };
    (
        map,
        ConfigSeen {
            read_at_unix,
            bind_addresses,
            error,
        },
    )
}

/// What "database available" says for a status: set only for a member with an address,
/// carrying the members' addresses (its own first, then the others in id order).
pub(crate) fn availability(status: &Status, tls: Option<&dqlite::tls::Tls>) -> Option<Database> {
    let (node_id, own) = match (status.state, status.node_id, &status.bind_address) {
        (NodeState::Member, Some(node_id), Some(own)) => (node_id, own.clone()),
        _ => return None,
    };
    let mut members = vec![own.clone()];
    members.extend(
        status
            .members
            .iter()
            .map(|member| member.address.clone())
            .filter(|address| *address != own),
    );
    Some(Database {
        node_id,
        own_address: own,
        members,
        tls: tls.cloned(),
    })
}

/// Whether this host has `ip` on one of its interfaces: binding a socket to it says so.
pub(crate) fn host_has_ip(ip: IpAddr) -> bool {
    std::net::TcpListener::bind((ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[test]
    fn read_map_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let check = |content: Option<&str>, expected: &str| {
            let path = dir.path().join("controller.conf");
            let _ = std::fs::remove_file(&path);
            if let Some(text) = content {
                std::fs::write(&path, text).expect("write");
            }
            let (map, seen) = read_map(&path);
            let got = format!("{map:?}");
            assert!(got.contains(expected), "{content:?} -> {got}");
            assert_eq!(
                seen.bind_addresses.is_some(),
                matches!(map, MapRead::Map(_))
            );
            assert_eq!(seen.error.is_none(), matches!(map, MapRead::Map(_)));
        };
        check(None, "Missing");
        check(Some(""), "Unusable(\"controller.conf is empty\")");
        check(Some("db-bind-addresses: {'0': [\n"), "not valid YAML");
        check(Some("other: 1\n"), "no db-bind-addresses key");
        check(Some("db-bind-addresses:\n  '0': 10.0.0\n"), "not an IP");
        check(
            Some("db-bind-addresses:\n  '0': 127.21.0.1\n"),
            "127.21.0.1",
        );
    }

    #[test]
    fn host_has_ip_table() {
        let check = |ip: &str, expected: bool| {
            assert_eq!(host_has_ip(ip.parse().expect("ip")), expected, "{ip}");
        };
        check("127.21.0.1", true);
        // TEST-NET-1 (RFC 5737) is never assigned to a host.
        check("192.0.2.1", false);
    }

    #[test]
    fn removal_policy_table() {
        let node = |id: u64, role: NodeRole| NodeInfo {
            id,
            address: format!("127.21.0.{id}:17666"),
            role,
        };
        let check =
            |members: &[NodeInfo], wanted: &[u64], due: &[u64], expected: (&[u64], &[u64])| {
                let wanted: Vec<String> = wanted
                    .iter()
                    .map(|id| format!("127.21.0.{id}:17666"))
                    .collect();
                let due: Vec<NodeInfo> = members
                    .iter()
                    .filter(|m| due.contains(&m.id))
                    .cloned()
                    .collect();
                let (go, stay) = removable(members, 1, &wanted, due);
                let ids = |v: Vec<NodeInfo>| v.iter().map(|m| m.id).collect::<Vec<_>>();
                assert_eq!(
                    (ids(go), ids(stay)),
                    (expected.0.to_vec(), expected.1.to_vec()),
                    "{members:?} wanted {wanted:?}"
                );
            };
        use NodeRole::{Spare, StandBy, Voter};
        let three = [node(1, Voter), node(2, Voter), node(3, Voter)];
        // One voter dropped by the map: it may go.
        check(&three, &[1, 2], &[3], (&[3], &[]));
        // Two voters dropped at once: both stay, even when both are due.
        check(&three, &[1], &[2, 3], (&[], &[2, 3]));
        check(&three, &[1], &[3], (&[], &[3]));
        // Spares and stand-bys always may go; voters stay while several are dropped.
        let mixed = [
            node(1, Voter),
            node(2, Voter),
            node(3, Voter),
            node(4, Spare),
            node(5, StandBy),
        ];
        check(&mixed, &[1], &[2, 4, 5], (&[4, 5], &[2]));
        check(&mixed, &[1, 2, 3], &[4, 5], (&[4, 5], &[]));
        // A departed controller that handed over (a spare) plus one voter dropped: the voter may go.
        check(&mixed, &[1, 2, 4, 5], &[3], (&[3], &[]));
    }

    #[test]
    fn membership_is_excluded_only_by_another_leaders_answer() {
        let node = |id: u64| NodeInfo {
            id,
            address: format!("127.21.0.{id}:17666"),
            role: NodeRole::Voter,
        };
        assert_eq!(
            classify_membership(1, &[node(1), node(2)], 2),
            Membership::Included
        );
        assert_eq!(
            classify_membership(1, &[node(2), node(3)], 2),
            Membership::Excluded { leader: 2 }
        );
        assert_eq!(classify_membership(1, &[], 2), Membership::Unknown);
        assert_eq!(classify_membership(1, &[node(2)], 1), Membership::Unknown);
    }

    #[test]
    fn removal_waits_out_the_grace_period() {
        let grace = Duration::from_secs(2);
        let t0 = Instant::now();
        let node = |id: u64| NodeInfo {
            id,
            address: format!("127.21.0.{id}:17666"),
            role: NodeRole::Voter,
        };
        let mut since = BTreeMap::new();
        let check =
            |since: &mut BTreeMap<u64, Instant>, absent: &[u64], at_ms: u64, due: &[u64]| {
                let absent: Vec<NodeInfo> = absent.iter().map(|id| node(*id)).collect();
                let got: Vec<u64> =
                    due_for_removal(since, &absent, t0 + Duration::from_millis(at_ms), grace)
                        .iter()
                        .map(|m| m.id)
                        .collect();
                assert_eq!(got, due, "absent {absent:?} at {at_ms} ms");
            };
        check(&mut since, &[2, 3], 0, &[]);
        check(&mut since, &[2, 3], 1_000, &[]);
        // 3 came back: its clock restarts when it goes again.
        check(&mut since, &[2], 1_500, &[]);
        check(&mut since, &[2, 3], 2_000, &[2]);
        check(&mut since, &[2, 3], 3_900, &[2]);
        check(&mut since, &[2, 3], 4_000, &[2, 3]);
        check(&mut since, &[], 5_000, &[]);
        assert!(since.is_empty());
        // A spare (a departed controller that handed its vote over) or a stand-by (one that
        // had no spare to hand its role to) is due at its second failed check, not at the
        // first silence; a voter waits out the quorum timeout.
        let spare = NodeInfo {
            role: NodeRole::Spare,
            ..node(4)
        };
        let stand_by = NodeInfo {
            role: NodeRole::StandBy,
            ..node(5)
        };
        let mut due_at = |ms: u64| {
            due_for_removal(
                &mut since,
                &[spare.clone(), stand_by.clone(), node(2)],
                t0 + Duration::from_millis(ms),
                grace,
            )
            .iter()
            .map(|m| m.id)
            .collect::<Vec<_>>()
        };
        assert_eq!(due_at(6_000), Vec::<u64>::new());
        assert_eq!(due_at(6_000 + 150), Vec::<u64>::new());
        let at = 6_000 + SPARE_GRACE.as_millis() as u64;
        assert_eq!(due_at(at - 1), Vec::<u64>::new());
        assert_eq!(due_at(at), [4, 5]);
    }

    #[test]
    fn next_departure_check_table() {
        let t0 = Instant::now();
        let ms = |n: u64| Duration::from_millis(n);
        let grace = SPARE_GRACE.as_millis() as u64;
        let every = DEPARTURE_CHECK_EVERY.as_millis() as u64;
        // (absent since, in ms from t0; the last probe sent; now; the next check), in ms
        // from t0
        let cases: [(&[u64], u64, u64, u64); 6] = [
            // Nothing silent: the regular period.
            (&[], 0, 0, every),
            // Found silent by a probe sent at 0 that took 300 ms (black-holed): its second
            // probe goes at once, the grace having passed while the first was waited for.
            (&[0], 0, grace, grace),
            // Found silent by a quick (refused) probe: the regular period while the grace
            // ends later, then the grace's end when it comes first.
            (&[0], 0, 10, 10 + every),
            (&[0], 0, grace - every / 2, grace),
            // Silent since before the last probe (a voter waiting out the quorum timeout,
            // already probed twice): the regular period, never a busy loop.
            (&[0], 4_700, 5_000, 5_000 + every),
            (&[0, 4_700], 4_700, 4_710, 4_710 + every),
        ];
        for (since, probed_at, now, next) in cases {
            let absent_since: BTreeMap<u64, Instant> = since
                .iter()
                .enumerate()
                .map(|(id, at)| (id as u64, t0 + ms(*at)))
                .collect();
            assert_eq!(
                next_departure_check(&absent_since, Some(t0 + ms(probed_at)), t0 + ms(now)),
                t0 + ms(next),
                "since {since:?}, now {now}"
            );
        }
    }

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
        async fn absent_and_unreachable(&mut self, _wanted: &[String]) -> Vec<NodeInfo> {
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

    fn test_timings() -> Timings {
        Timings {
            quorum_timeout: Duration::from_secs(2),
            health_interval: Duration::from_secs(3600),
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
