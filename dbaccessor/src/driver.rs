//! The real [`Driver`]: the local node run through the `dqlite` crate's application layer
//! (`dqlite::app`), its data dir `<data-dir>/dqlite` (0700, locked by the node).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use controller_contract::status::LogPosition;
use dqlite::app::roles::DRAINING_WEIGHT;
use dqlite::app::{self, App, AppConfig};
use dqlite::client::{Connection, Options};
use dqlite::node::{NodeError, NodeIdentity, NodeOptions};
use dqlite::NodeInfo;
use tokio::time::Instant;

use crate::decide::{LocalData, Quorum};
use crate::health::Report;
use crate::node_tls::NodeTls;
use crate::progress::Reporter;
use crate::service::{Absent, Driver, DriverError};

/// How long a cluster request for the status may take before the status falls back to the
/// persisted membership: the loop waits for it.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);

/// The longest a probe waits for one answer: a node without a quorum may not answer at all.
const PROBE_REQUEST_TIMEOUT: Duration = Duration::from_millis(300);

/// The shortest a quorum probe's last round waits for answers (when little time is left).
const PROBE_MIN_ASK: Duration = Duration::from_millis(100);

/// Runs the local node.
pub(crate) struct DqliteDriver {
    /// `<data-dir>/dqlite`.
    data_dir: PathBuf,
    /// Raft timing and the other node options.
    options: NodeOptions,
    /// How often the leader reviews roles; short so that a joined node becomes a voter fast.
    role_interval: Duration,
    /// How long a join may take before it counts as failed (and is retried).
    join_timeout: Duration,
    /// The running application node.
    app: Option<App>,
    /// How often the node reports its log position (the health interval).
    report_interval: Duration,
    /// Writes this node's progress report and reads everybody's while the node runs.
    reporter: Option<Reporter>,
    /// The CA and the client certificate when the node runs with mutual TLS: each start
    /// issues the node a certificate for its address.
    tls: Option<NodeTls>,
}

/// How many set-aside data dirs of earlier, removed identities are kept (newest first).
const SET_ASIDE_KEPT: usize = 2;

impl DqliteDriver {
    pub fn new(data_dir: PathBuf, network_latency: Duration, tls: Option<NodeTls>) -> Self {
        Self {
            data_dir,
            options: NodeOptions {
                network_latency,
                ..NodeOptions::default()
            },
            role_interval: (network_latency * 10)
                .clamp(Duration::from_millis(100), Duration::from_secs(1)),
            join_timeout: Duration::from_secs(10),
            app: None,
            report_interval: Duration::from_secs(1),
            reporter: None,
            tls,
        }
    }

    /// The client side of the nodes' TLS, if they have it.
    fn client_tls(&self) -> Option<dqlite::tls::Tls> {
        self.tls.as_ref().map(NodeTls::client)
    }

    fn persisted_members(&self) -> Vec<NodeInfo> {
        app::store::load(&self.data_dir).unwrap_or_default()
    }

    async fn stop_without_handover(&mut self) -> Result<(), DriverError> {
        self.reporter = None;
        if let Some(app) = self.app.take() {
            app.stop_without_handover()
                .await
                .map_err(DriverError::Stop)?;
        }
        Ok(())
    }
}

impl Driver for DqliteDriver {
    async fn local_data(&mut self) -> LocalData {
        let identity = match NodeIdentity::load(&self.data_dir) {
            Ok(identity) => identity,
            Err(e) => return LocalData::Unreadable(dqlite::error_chain(&e)),
        };
        let Some(identity) = identity else {
            let has_log = ["metadata1", "metadata2"]
                .iter()
                .any(|f| self.data_dir.join(f).exists());
            return if has_log {
                LocalData::Unreadable(format!(
                    "{} holds a raft log but no node identity (info.yaml)",
                    self.data_dir.display()
                ))
            } else {
                LocalData::Empty
            };
        };
        // The persisted list, which the running app refreshes every role interval, rather
        // than a live CLUSTER request: without a quorum that request waits for its timeout,
        // and the decisions need roles and addresses, not the last millisecond.
        LocalData::Member {
            node_id: identity.id,
            address: identity.address,
            members: self.persisted_members(),
        }
    }

    fn running_address(&self) -> Option<String> {
        self.app.as_ref().map(|app| app.address().to_owned())
    }

    fn node_id(&self) -> Option<u64> {
        match &self.app {
            Some(app) => Some(app.id()),
            None => NodeIdentity::load(&self.data_dir)
                .ok()
                .flatten()
                .map(|i| i.id),
        }
    }

    async fn start(&mut self, address: &str, peers: &[String]) -> Result<(), DriverError> {
        self.stop_without_handover().await?;
        let mut config = AppConfig::new(&self.data_dir, address);
        config.peers = peers.to_vec();
        config.node = self.options.clone();
        if let Some(tls) = &self.tls {
            config.node.tls = Some(tls.node(address)?);
        }
        config.role_interval = self.role_interval;
        config.join_timeout = self.join_timeout;
        let app = App::start(config).await?;
        let data_dir = self.data_dir.clone();
        self.reporter = Some(Reporter::spawn(
            app.id(),
            self.data_dir.clone(),
            self.report_interval,
            self.client_tls(),
            move || peek_log_position(&data_dir).map_err(|e| dqlite::error_chain(&e)),
        ));
        self.app = Some(app);
        Ok(())
    }

    async fn set_aside(&mut self) -> Result<String, DriverError> {
        // The node is outside the configuration: nothing to hand over.
        self.stop_without_handover().await?;
        let data_dir = self.data_dir.clone();
        tokio::task::spawn_blocking(move || set_aside(&data_dir, SET_ASIDE_KEPT))
            .await
            .map_err(|source| DriverError::Panicked {
                what: "setting the data dir aside",
                source,
            })?
    }

    fn progress(&self) -> Option<BTreeMap<u64, Report>> {
        self.reporter.as_ref()?.view().map(|view| view.aged())
    }

    fn kick_progress(&self) {
        if let Some(reporter) = &self.reporter {
            reporter.kick();
        }
    }

    async fn rebind(&mut self, address: &str) -> Result<(), DriverError> {
        // A lone member has nobody to hand anything over to.
        self.stop_without_handover().await?;
        app::rebind(&self.data_dir, address).await?;
        Ok(())
    }

    async fn shrink_to_one(&mut self) -> Result<(), DriverError> {
        // Without a quorum there is nobody to hand anything over to.
        self.stop_without_handover().await?;
        app::shrink_to_one(&self.data_dir).await?;
        Ok(())
    }

    async fn probe_quorum(&mut self, within: Duration) -> Quorum {
        let Some(app) = &self.app else {
            return Quorum::Unknown;
        };
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // A leader that lost its followers believes it leads until its election timeout
            // passes: a quorum counts only when a majority of the voters answer as well.
            let members = self.persisted_members();
            let voters: Vec<&NodeInfo> = members
                .iter()
                .filter(|m| m.role == dqlite::NodeRole::Voter)
                .collect();
            // Every voter and the leader are asked at once, each for at most the time left
            // (but a short answer's worth): one round costs one probe timeout, not one per
            // dead voter, and the last round ends at the deadline rather than after it.
            let ask = left.clamp(PROBE_MIN_ASK, PROBE_REQUEST_TIMEOUT);
            let mut probes = tokio::task::JoinSet::new();
            let mut answering = 0;
            for voter in &voters {
                if voter.address == app.address() {
                    answering += 1;
                } else {
                    let (address, tls) = (voter.address.clone(), self.client_tls());
                    probes.spawn(async move {
                        tokio::time::timeout(ask, reachable(&address, tls))
                            .await
                            .unwrap_or(false)
                    });
                }
            }
            let leader = match tokio::time::timeout(ask, app.leader()).await {
                Ok(Ok(leader)) => leader,
                _ => None,
            };
            while let Some(answered) = probes.join_next().await {
                if answered.unwrap_or(false) {
                    answering += 1;
                }
            }
            let leader_text = match &leader {
                Some(leader) => format!("node {} at {} leads", leader.id, leader.address),
                None => "no leader".to_owned(),
            };
            let seen = format!(
                "{answering} of {} voters answer, {leader_text}",
                voters.len()
            );
            if leader.is_some() && answering * 2 > voters.len() {
                log::info!("quorum probe: {seen}");
                return Quorum::Reachable;
            }
            if Instant::now() >= deadline {
                log::info!(
                    "quorum probe: no quorum within {} ms: {seen}",
                    within.as_millis()
                );
                return Quorum::Unreachable;
            }
            tokio::time::sleep(Duration::from_millis(100).min(left)).await;
        }
    }

    async fn cluster(&mut self) -> Option<(Vec<NodeInfo>, Option<u64>)> {
        let app = self.app.as_ref()?;
        let live = async {
            let leader = tokio::time::timeout(STATUS_TIMEOUT, app.leader())
                .await
                .ok()?
                .ok()??;
            let members = tokio::time::timeout(STATUS_TIMEOUT, app.cluster())
                .await
                .ok()?
                .ok()?;
            Some((members, Some(leader.id)))
        };
        // Without a leader, the last persisted membership is still worth showing.
        Some(
            live.await
                .unwrap_or_else(|| (self.persisted_members(), None)),
        )
    }

    async fn departed(&mut self, wanted: &[String]) -> Vec<Absent> {
        let Some(app) = &self.app else {
            return vec![];
        };
        let Ok(Ok(members)) = tokio::time::timeout(STATUS_TIMEOUT, app.cluster()).await else {
            return vec![];
        };
        // Every candidate at once, each bounded: a dead address costs one bound, not one
        // per member.
        let mut probes = tokio::task::JoinSet::new();
        for member in departure_candidates(&members, app.id(), wanted) {
            let tls = self.client_tls();
            probes.spawn(async move {
                let answer = weight_of(&member.address, tls).await;
                (member, answer)
            });
        }
        let mut gone = vec![];
        while let Some(probe) = probes.join_next().await {
            match probe {
                Ok((member, None)) => gone.push(Absent {
                    member,
                    stopping: false,
                }),
                Ok((member, Some(DRAINING_WEIGHT))) => gone.push(Absent {
                    member,
                    stopping: true,
                }),
                Ok((_, Some(_))) => {}
                // A probe that panicked says nothing about the member: unknown is not gone.
                Err(e) => log::warn!("a reachability probe failed: {e}"),
            }
        }
        gone.sort_by_key(|a| a.member.id);
        gone
    }

    async fn remove(&mut self, id: u64) -> Result<(), DriverError> {
        let Some(app) = &self.app else {
            return Err(DriverError::NotRunning);
        };
        Ok(app.remove(id).await?)
    }

    async fn shutdown(&mut self) -> Result<(), DriverError> {
        self.reporter = None;
        if let Some(app) = self.app.take() {
            app.stop().await?;
        }
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), DriverError> {
        self.stop_without_handover().await
    }

    async fn log_position(&mut self) -> Result<LogPosition, DriverError> {
        let data_dir = self.data_dir.clone();
        tokio::task::spawn_blocking(move || peek_log_position(&data_dir))
            .await
            .map_err(|source| DriverError::Panicked {
                what: "the log reader",
                source,
            })?
    }
}

/// The node's last log position. A stopped node's dir is read under its lock. A running
/// node holds that lock, so its files are hard-linked into a fresh dir beside it and read
/// there: raft only appends to segments and replaces files by rename, so the links are a
/// consistent enough snapshot (a torn tail entry is skipped as on a crash). The result is
/// advisory; `recover` reads the position again with the node stopped.
pub(crate) fn peek_log_position(data_dir: &Path) -> Result<LogPosition, DriverError> {
    match dqlite::node::log_position(data_dir) {
        Ok(position) => return Ok(to_position(position)),
        Err(NodeError::DataDirLocked { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let parent = data_dir.parent().unwrap_or(data_dir);
    let peek = tempfile::Builder::new()
        .prefix(".dqlite-log-peek-")
        .tempdir_in(parent)
        .map_err(|source| {
            io_error(
                format!("cannot make a peek dir in {}", parent.display()),
                source,
            )
        })?;
    let entries = std::fs::read_dir(data_dir)
        .map_err(|source| io_error(format!("cannot list {}", data_dir.display()), source))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        // The lock is taken on the file itself: a link would share it.
        if name == dqlite::node::LOCK_FILE || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        match std::fs::hard_link(entry.path(), peek.path().join(&name)) {
            Ok(()) => {}
            // Renamed or removed by raft since the listing: it was not the log's end.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(io_error(
                    format!("cannot link {}", entry.path().display()),
                    source,
                ))
            }
        }
    }
    Ok(to_position(dqlite::node::log_position(peek.path())?))
}

fn io_error(what: String, source: std::io::Error) -> DriverError {
    DriverError::Io { what, source }
}

/// Moves a removed node's data dir aside, as `<dir>.removed-<unix seconds>`, so that the
/// node can join again as a new member; keeps the `kept` newest set-aside dirs and deletes
/// older ones. Nothing of the cluster's is lost: a member outside the configuration holds
/// no entry the cluster needs (every committed entry is on the leader), and its old log is
/// kept for inspection. Returns where the dir went.
pub(crate) fn set_aside(data_dir: &Path, kept: usize) -> Result<String, DriverError> {
    let name = data_dir
        .file_name()
        .ok_or_else(|| {
            io_error(
                format!("cannot set {} aside", data_dir.display()),
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the path has no file name",
                ),
            )
        })?
        .to_string_lossy()
        .into_owned();
    let parent = data_dir.parent().unwrap_or(Path::new("."));
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut target = parent.join(format!("{name}.removed-{stamp}"));
    let mut n = 1;
    while target.exists() {
        target = parent.join(format!("{name}.removed-{stamp}-{n}"));
        n += 1;
    }
    std::fs::rename(data_dir, &target).map_err(|source| {
        io_error(
            format!(
                "cannot move {} aside to {}",
                data_dir.display(),
                target.display()
            ),
            source,
        )
    })?;
    let prefix = format!("{name}.removed-");
    // The names sort by time: the stamps have the same number of digits for centuries.
    let mut old: Vec<PathBuf> = std::fs::read_dir(parent)
        .map_err(|source| io_error(format!("cannot list {}", parent.display()), source))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    old.sort_by(|a, b| b.cmp(a));
    for path in old.into_iter().skip(kept) {
        if let Err(e) = std::fs::remove_dir_all(&path) {
            log::warn!(
                "cannot delete the old set-aside dir {}: {e}",
                path.display()
            );
        }
    }
    Ok(target.display().to_string())
}

fn to_position(position: dqlite::node::LogPosition) -> LogPosition {
    LogPosition {
        term: position.term,
        index: position.index,
    }
}

/// Members that may have departed: not this node and absent from the map. The caller still
/// checks that each answers nobody.
pub(crate) fn departure_candidates(
    members: &[NodeInfo],
    own_id: u64,
    wanted: &[String],
) -> Vec<NodeInfo> {
    members
        .iter()
        .filter(|m| m.id != own_id && !wanted.contains(&m.address))
        .cloned()
        .collect()
}

/// Whether a member answers a LEADER request within [`PROBE_REQUEST_TIMEOUT`] (connect and
/// request each): a dead address costs a few hundred ms, never a full request timeout.
async fn reachable(address: &str, tls: Option<dqlite::tls::Tls>) -> bool {
    let options = probe_options(tls);
    match Connection::connect(address, &options).await {
        Ok(mut connection) => connection.leader().await.is_ok(),
        Err(_) => false,
    }
}

fn probe_options(tls: Option<dqlite::tls::Tls>) -> Options {
    Options {
        connect_timeout: PROBE_REQUEST_TIMEOUT,
        request_timeout: PROBE_REQUEST_TIMEOUT,
        tls,
        ..Options::default()
    }
}

/// The weight a member reports (see [`DRAINING_WEIGHT`]) when it answers a DESCRIBE request
/// within [`PROBE_REQUEST_TIMEOUT`] (connect and request each), `None` when it does not: a
/// dead address costs a few hundred ms, never a full request timeout.
async fn weight_of(address: &str, tls: Option<dqlite::tls::Tls>) -> Option<u64> {
    let options = probe_options(tls);
    let mut connection = Connection::connect(address, &options).await.ok()?;
    connection
        .describe()
        .await
        .ok()
        .map(|metadata| metadata.weight)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dqlite::NodeRole;

    fn member(id: u64, address: &str, role: NodeRole) -> NodeInfo {
        NodeInfo {
            id,
            address: address.into(),
            role,
        }
    }

    #[test]
    fn departure_candidates_table() {
        let check = |members: &[NodeInfo], wanted: &[&str], expected: &[u64]| {
            let wanted: Vec<String> = wanted.iter().map(|s| (*s).to_owned()).collect();
            let got: Vec<u64> = departure_candidates(members, 1, &wanted)
                .iter()
                .map(|m| m.id)
                .collect();
            assert_eq!(got, expected, "{members:?} wanted {wanted:?}");
        };
        let a = "127.21.0.1:17666";
        let b = "127.21.0.2:17666";
        let c = "127.21.0.3:17666";
        let all = [
            member(1, a, NodeRole::Voter),
            member(2, b, NodeRole::Spare),
            member(3, c, NodeRole::StandBy),
        ];
        check(&all, &[a, b, c], &[]);
        check(&all, &[a], &[2, 3]);
        check(&all, &[a, c], &[2]);
        check(
            &[member(1, a, NodeRole::Voter), member(2, b, NodeRole::Voter)],
            &[a],
            &[2],
        );
        // This node never is, even when the map lacks it.
        check(&[member(1, a, NodeRole::Spare)], &[], &[]);
    }
}
