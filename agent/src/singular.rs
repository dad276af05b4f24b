//! The lease manager and the singular runner: every controller runs one; the one holding
//! the `singular-controller` lease runs the singular workers, and only while it surely
//! holds it.
//!
//! The rule that keeps two controllers from acting at once: the runner reads its monotonic
//! clock *before* it sends a claim or an extension; the grant then lasts at least
//! `duration` from that instant by the database's clock, so the runner stops its singular
//! workers at that instant + `duration` - `margin` (its *deadline*) unless an extension
//! has moved the deadline on. Reaching the database is not needed to stop: a holder cut off
//! from the cluster stops its workers by the deadline, before any other controller can
//! claim (which needs the expiry to have passed by the database's clock). The margin covers
//! the difference in rate between the controllers' clocks and a new Dqlite leader's wall
//! clock being ahead of the old one's. The workers' writes are fenced as well
//! ([`crate::lease::log_fenced`]), so a paused former holder is refused by the database.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use controller_backoff::Backoff;
use controller_contract::describe_error;
use dbaccessor::Database;
use dqlite::client::Client;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::database;
use crate::host::{Host, RestartPolicy, Stop, WorkerSpec};
use crate::lease::{self, Claim, Fenced, LeaseKey, Token};
use crate::workers::DBACCESSOR;

/// The worker's name.
pub const NAME: &str = "lease-manager";

/// The lease timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// How long a claim or an extension grants (Juju: a minute).
    pub duration: Duration,
    /// How often the holder extends (Juju: about every 30 s).
    pub extend_every: Duration,
    /// How long before the grant's end, by the local clock, the holder stops its workers.
    pub margin: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(60),
            extend_every: Duration::from_secs(30),
            margin: Duration::from_secs(10),
        }
    }
}

/// Why timings cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    #[error("the lease margin {margin:?} must be shorter than the lease duration {duration:?}")]
    Margin {
        margin: Duration,
        duration: Duration,
    },
    #[error(
        "extending every {extend_every:?} must leave time before the deadline \
         (duration {duration:?} - margin {margin:?})"
    )]
    Extend {
        extend_every: Duration,
        duration: Duration,
        margin: Duration,
    },
}

impl Timing {
    /// Checks that a holder can act at all and extends before its deadline.
    pub fn validate(&self) -> Result<(), TimingError> {
        if self.margin >= self.duration {
            return Err(TimingError::Margin {
                margin: self.margin,
                duration: self.duration,
            });
        }
        if self.extend_every.is_zero() || self.extend_every >= self.duration - self.margin {
            return Err(TimingError::Extend {
                extend_every: self.extend_every,
                duration: self.duration,
                margin: self.margin,
            });
        }
        Ok(())
    }

    /// The instant the holder must have stopped acting by, for a grant the database holds
    /// until `until` (by this controller's monotonic clock).
    pub fn deadline(&self, until: Instant) -> Instant {
        until.checked_sub(self.margin).unwrap_or(until)
    }

    /// How long a non-holder waits before claiming again, for a grant that the database
    /// says runs `remaining` more: just past the expiry, but at least every
    /// `extend_every` (a holder may revoke early) and no sooner than 50 ms.
    pub fn claim_pause(&self, remaining: Option<Duration>) -> Duration {
        let after_expiry = remaining.map_or(Duration::ZERO, |r| r + Duration::from_millis(20));
        after_expiry
            .min(self.extend_every)
            .max(Duration::from_millis(50))
    }
}

/// What a singular worker carries: the lease it runs under and the grant's token, which
/// each of its writes must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub key: LeaseKey,
    pub token: Token,
}

/// Makes the singular workers for one grant.
pub type SingularWorkers = Arc<dyn Fn(Fence) -> Vec<WorkerSpec> + Send + Sync>;

/// The runner's settings.
#[derive(Clone)]
pub struct Settings {
    /// The holder name: `controller-<id>`.
    pub holder: String,
    pub timing: Timing,
    /// The singular workers.
    pub workers: SingularWorkers,
    /// Set to the grant the singular workers run under while they run (for the status).
    pub running: Arc<watch::Sender<Option<Token>>>,
}

/// The lease manager as a worker of the host, after the dbaccessor.
pub fn worker(settings: Settings, available: watch::Receiver<Option<Database>>) -> WorkerSpec {
    WorkerSpec::new(NAME, &[DBACCESSOR], move |stop| {
        run(settings.clone(), available.clone(), stop)
    })
}

/// Milliseconds since the Unix epoch by this machine's wall clock, for log lines only
/// (tests compare them with the fencing log; nothing decides by them).
pub fn wall_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// The singular workers of one grant, running under a host of their own.
struct Running {
    fence: Fence,
    /// Stop at this instant at the latest.
    deadline: Instant,
    next_extend: Instant,
    shutdown: tokio::sync::oneshot::Sender<()>,
    host: tokio::task::JoinHandle<()>,
    /// Cleared once the workers have stopped.
    running: Arc<watch::Sender<Option<Token>>>,
}

impl Running {
    fn start(settings: &Settings, fence: Fence, deadline: Instant) -> Self {
        let mut host = Host::new(RestartPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            healthy_after: Duration::from_secs(10),
        });
        let workers = (settings.workers)(fence.clone());
        let names: Vec<String> = workers.iter().map(|w| w.name.clone()).collect();
        for worker in workers {
            host.add(worker);
        }
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) = host.run(shutdown).await {
                log::error!("cannot run the singular workers: {e}");
            }
        });
        settings.running.send_replace(Some(fence.token.clone()));
        log::info!(
            "holding lease {} as {} (unix_ms={}): running singular workers {}",
            fence.key,
            fence.token,
            wall_ms(),
            names.join(", ")
        );
        Running {
            next_extend: Instant::now() + settings.timing.extend_every,
            fence,
            deadline,
            shutdown,
            host: task,
            running: settings.running.clone(),
        }
    }

    /// Stops the workers and waits until they have returned.
    async fn stop(self, why: &str) -> Fence {
        log::warn!(
            "stopping the singular workers of {} ({why})",
            self.fence.token
        );
        let _ = self.shutdown.send(());
        if let Err(e) = self.host.await {
            log::error!("the singular workers' host ended abnormally: {e}");
        }
        self.running.send_replace(None);
        log::info!(
            "singular workers of {} stopped (unix_ms={})",
            self.fence.token,
            wall_ms()
        );
        self.fence
    }
}

/// Claims, extends and runs the singular workers until told to stop. Database errors do not
/// end it (a holder must keep its deadline whatever happens); they are retried with
/// back-off.
pub async fn run(
    settings: Settings,
    mut available: watch::Receiver<Option<Database>>,
    mut stop: Stop,
) -> anyhow::Result<()> {
    settings.timing.validate()?;
    let Some(mut client) = database::open(&mut available, &mut stop, &settings.holder).await?
    else {
        return Ok(());
    };
    let key = LeaseKey::singular_controller();
    let timing = settings.timing.clone();
    let mut backoff = Backoff::new(Duration::from_millis(100), timing.extend_every);
    let mut running: Option<Running> = None;
    loop {
        if let Some(database) = available.borrow().as_ref() {
            if client.addresses() != database.members.as_slice() {
                client.set_addresses(&database.members);
            }
        }
        match running.take() {
            None => {
                let claim = tokio::select! {
                    claim = lease::claim(&mut client, &key, &settings.holder, timing.duration) => claim,
                    () = stop.requested() => return Ok(()),
                };
                let pause = match claim {
                    Ok(Claim::Held(held)) => {
                        backoff.reset();
                        let deadline = timing.deadline(held.until);
                        let fence = Fence {
                            key: key.clone(),
                            token: held.token,
                        };
                        if deadline > Instant::now() {
                            running = Some(Running::start(&settings, fence, deadline));
                            continue;
                        }
                        // Granted, but too late to act on: let it lapse.
                        log::warn!("lease {key} granted to {} past its deadline", fence.token);
                        timing.claim_pause(None)
                    }
                    Ok(Claim::Taken(lease)) => {
                        backoff.reset();
                        timing.claim_pause(lease.filter(|l| !l.pinned).map(|l| l.remaining()))
                    }
                    Err(e) => {
                        log::warn!("cannot claim lease {key}: {e}");
                        backoff.next_delay()
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.requested() => return Ok(()),
                }
            }
            Some(mut holding) => {
                let deadline = holding.deadline;
                tokio::select! {
                    () = tokio::time::sleep_until(holding.next_extend) => {}
                    () = tokio::time::sleep_until(deadline) => {
                        holding.stop("its deadline passed without an extension").await;
                        continue;
                    }
                    () = stop.requested() => {
                        let fence = holding.stop("the agent is stopping").await;
                        revoke_on_stop(&mut client, &fence).await;
                        return Ok(());
                    }
                }
                // The extension may take long on a sick cluster: the deadline does not wait.
                let extend = lease::extend(
                    &mut client,
                    &holding.fence.key,
                    &holding.fence.token,
                    timing.duration,
                );
                let extended = tokio::select! {
                    extended = extend => extended,
                    () = tokio::time::sleep_until(deadline) => {
                        holding.stop("its deadline passed while extending").await;
                        continue;
                    }
                    () = stop.requested() => {
                        // The extension is abandoned; whether it ran or not, the token is
                        // the same, so the revocation below hands over either way.
                        let fence = holding.stop("the agent is stopping").await;
                        revoke_on_stop(&mut client, &fence).await;
                        return Ok(());
                    }
                };
                match extended {
                    Ok(Some(held)) => {
                        backoff.reset();
                        holding.deadline = timing.deadline(held.until).max(holding.deadline);
                        holding.next_extend = Instant::now() + timing.extend_every;
                        running = Some(holding);
                    }
                    Ok(None) => {
                        holding.stop("the lease was lost").await;
                    }
                    Err(e) => {
                        log::warn!("cannot extend lease {}: {e}", holding.fence.key);
                        holding.next_extend = Instant::now() + backoff.next_delay();
                        running = Some(holding);
                    }
                }
            }
        }
    }
}

/// Revokes the grant of a holder that is stopping (its workers already stopped), so that
/// the next holder takes over at once rather than after the expiry; a failure only delays
/// the next holder until then.
async fn revoke_on_stop(client: &mut Client, fence: &Fence) {
    let revoke = lease::revoke(client, &fence.key, &fence.token);
    match tokio::time::timeout(Duration::from_secs(2), revoke).await {
        Ok(Ok(_)) => log::info!("revoked lease {} of {}", fence.key, fence.token),
        Ok(Err(e)) => log::warn!("cannot revoke lease {}: {e}", fence.key),
        Err(_) => log::warn!("revoking lease {} timed out", fence.key),
    }
}

/// The lease status worker's name.
pub const STATUS: &str = "lease-status";

/// Writes every lease row, as read now and then, to `path` (`<data-dir>/lease-status.json`,
/// [`controller_contract::lease`]) for the charm's `cluster-status` action, which cannot
/// reach the database. A failed read leaves the file as it was (its write time says how old
/// it is).
pub fn status_worker(
    holder: String,
    path: std::path::PathBuf,
    every: Duration,
    running: watch::Receiver<Option<Token>>,
    available: watch::Receiver<Option<Database>>,
) -> WorkerSpec {
    WorkerSpec::new(STATUS, &[DBACCESSOR], move |stop| {
        run_status(
            holder.clone(),
            path.clone(),
            every,
            running.clone(),
            available.clone(),
            stop,
        )
    })
}

async fn run_status(
    holder: String,
    path: std::path::PathBuf,
    every: Duration,
    running: watch::Receiver<Option<Token>>,
    mut available: watch::Receiver<Option<Database>>,
    mut stop: Stop,
) -> anyhow::Result<()> {
    let who = format!("{STATUS} of {holder}");
    let Some(mut client) = database::open(&mut available, &mut stop, &who).await? else {
        return Ok(());
    };
    loop {
        let read = tokio::select! {
            read = async {
                let leases = lease::list(&mut client).await?;
                let now = lease::database_now(&mut client).await?;
                anyhow::Ok((leases, now))
            } => read,
            () = stop.requested() => return Ok(()),
        };
        match read {
            Ok((leases, read_at_ms)) => {
                let status = controller_contract::lease::LeaseStatus {
                    holder: holder.clone(),
                    running_singular_workers: running.borrow().as_ref().map(ToString::to_string),
                    leases: leases
                        .into_iter()
                        .map(|l| controller_contract::lease::LeaseEntry {
                            kind: l.key.kind,
                            model: l.key.model,
                            name: l.key.name,
                            holder: l.token.holder,
                            start_ms: l.token.start_ms,
                            expiry_ms: l.expiry_ms,
                            pinned: l.pinned,
                        })
                        .collect(),
                    read_at_ms,
                    written_unix_ms: i64::try_from(wall_ms()).unwrap_or(i64::MAX),
                };
                if let Err(e) = write_atomically(&path, &serde_json::to_vec_pretty(&status)?) {
                    log::warn!("{who}: cannot write {}: {e}", path.display());
                }
            }
            Err(e) => log::warn!(
                "{who}: cannot read the leases: {}",
                describe_error(e.as_ref())
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.requested() => return Ok(()),
        }
    }
}

/// Writes `bytes` to a temp file beside `path` and renames it over `path`, so that a reader
/// sees the old file or the new one, never half of one.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    std::fs::write(&temp, bytes)?;
    std::fs::rename(&temp, path)
}

/// The heartbeat worker's name.
pub const HEARTBEAT: &str = "singular-heartbeat";

/// A fenced singular worker that records one action every `every` in `fencing_log`: the
/// visible proof of who acts when. It stops acting as soon as the database refuses its
/// token. Rows older than `keep` are pruned now and then.
pub fn heartbeat(
    fence: Fence,
    available: watch::Receiver<Option<Database>>,
    every: Duration,
    keep: Duration,
) -> WorkerSpec {
    WorkerSpec::new(HEARTBEAT, &[], move |stop| {
        run_heartbeat(fence.clone(), available.clone(), every, keep, stop)
    })
}

async fn run_heartbeat(
    fence: Fence,
    mut available: watch::Receiver<Option<Database>>,
    every: Duration,
    keep: Duration,
    mut stop: Stop,
) -> anyhow::Result<()> {
    let who = format!("{HEARTBEAT} of {}", fence.token);
    let Some(mut client) = database::open(&mut available, &mut stop, &who).await? else {
        return Ok(());
    };
    // Unique per token across restarts of this worker: the wall clock only makes the
    // number unique, it decides nothing.
    let mut seq = i64::try_from(wall_ms()).unwrap_or(0);
    let mut beats = 0u64;
    loop {
        seq += 1;
        let write = lease::log_fenced(&mut client, &fence.key, &fence.token, seq, "heartbeat");
        let outcome = tokio::select! {
            outcome = write => outcome?,
            () = stop.requested() => return Ok(()),
        };
        if outcome == Fenced::Stale {
            log::warn!("{who}: the database refused the token; acting no more");
            stop.requested().await;
            return Ok(());
        }
        beats += 1;
        if beats % 100 == 1 {
            if let Err(e) = lease::prune_fencing_log(&mut client, keep).await {
                log::warn!("{who}: cannot prune the fencing log: {e}");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.requested() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(duration: u64, extend_every: u64, margin: u64) -> Timing {
        Timing {
            duration: Duration::from_millis(duration),
            extend_every: Duration::from_millis(extend_every),
            margin: Duration::from_millis(margin),
        }
    }

    #[test]
    fn timing_table() {
        assert_eq!(Timing::default().validate(), Ok(()));
        assert_eq!(timing(3000, 1000, 1000).validate(), Ok(()));
        assert!(matches!(
            timing(3000, 1000, 3000).validate(),
            Err(TimingError::Margin { .. })
        ));
        // Extending at or after the deadline cannot keep the workers running.
        assert!(matches!(
            timing(3000, 2000, 1000).validate(),
            Err(TimingError::Extend { .. })
        ));
        assert!(matches!(
            timing(3000, 0, 1000).validate(),
            Err(TimingError::Extend { .. })
        ));
    }

    #[test]
    fn claim_pause_table() {
        let t = timing(3000, 1000, 1000);
        let check = |remaining: Option<u64>, expected: u64| {
            assert_eq!(
                t.claim_pause(remaining.map(Duration::from_millis)),
                Duration::from_millis(expected),
                "{remaining:?}"
            );
        };
        // Just past the expiry, at least every extend period, never a busy loop.
        check(Some(400), 420);
        check(Some(2500), 1000);
        check(Some(0), 50);
        check(None, 50);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_is_the_grant_minus_the_margin() {
        let t = timing(3000, 1000, 1000);
        let now = Instant::now();
        assert_eq!(
            t.deadline(now + Duration::from_secs(3)),
            now + Duration::from_secs(2)
        );
    }
}
