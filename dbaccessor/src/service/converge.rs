//! Convergence: observe the data dir, the map and the cluster, ask the pure `decide`, apply
//! its action through the [`Driver`]; and the `recover-cluster` action, which stops the node,
//! rewrites membership and converges again.

use std::time::{SystemTime, UNIX_EPOCH};

use controller_contract::status::{Decided, LogPosition, NodeState, Recovered, DECISIONS_KEPT};
use tokio::time::Instant;

use crate::decide::{decide, Action, Decision, LocalData, MapRead, Membership, Observed, Quorum};
use crate::event::Trigger;

use super::*;

impl<D: Driver> Service<D> {
    /// The `recover-cluster` action: stop, check the log against the best peer's, rewrite
    /// membership to this node alone, and let a convergence round restart it.
    pub(super) async fn recover(
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
    pub(super) async fn converge(&mut self, trigger: Trigger, mut quorum: Quorum) {
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

    pub(super) async fn observe(&mut self, quorum: Quorum) -> Observed {
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
    pub(super) async fn membership(&mut self) -> Membership {
        let Some(own) = self.driver.node_id() else {
            return Membership::Unknown;
        };
        match self.driver.cluster().await {
            Some((members, Some(leader))) => classify_membership(own, &members, leader),
            _ => Membership::Unknown,
        }
    }

    pub(super) fn log_decision(
        &mut self,
        trigger: Trigger,
        observed: &Observed,
        decision: &Decision,
    ) {
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
            let decisions = &mut self.status.decisions;
            if decisions.len() == DECISIONS_KEPT {
                decisions.remove(0);
            }
            decisions.push(Decided {
                trigger: trigger.to_string(),
                action: action_name(&decision.action).to_owned(),
                reason: decision.reason.clone(),
                at_unix_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            });
        }
        self.last_decision = Some(decision.clone());
    }
}

/// At most this many actions in one convergence round: a round that keeps acting is a bug,
/// and stopping it keeps the loop answering status queries.
pub(super) const MAX_STEPS: usize = 6;

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

pub(super) fn action_name(action: &Action) -> &'static str {
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
