//! Application leadership for the units of this machine: one tracker per unit, each logged
//! in to the controller API as its unit (`unit-<app>-<n>`), claiming the application's
//! `application-leadership` lease (`POST /leadership`) and extending it well before expiry,
//! as Juju's unit agents do. What a tracker knows goes into the unit's `leadership.json`
//! ([`controller_contract::leadership`]), which `is-leader` answers from.
//!
//! The rule that keeps two units from leading at once is the singular runner's
//! ([`crate::singular`]): the tracker reads its monotonic clock *before* it sends a claim;
//! the grant lasts at least the claimed duration (and at least the `remaining-ms` the answer
//! read) from that instant by the database's clock, so the unit leads until that instant +
//! the grant − the margin (its *deadline*), and not a moment later unless an extension
//! moved it. The deadline is written as `CLOCK_MONOTONIC` milliseconds, so a reader in
//! another process stops seeing the unit as leader by it even when the tracker is dead,
//! paused or cut off: unknown is not leader. Another unit can only claim once the expiry
//! has passed by the database's clock, after the deadline.
//!
//! A unit agent's restart keeps its leadership (the store lets a unit extend its own grant,
//! whichever process of it asks), as in Juju.
//!
//! Credentials: the controller agent is its machine's root and has the database, so it
//! registers each local unit's `apipassword` (from the unit's `agent.conf`, which the
//! deployer, here the simulator, wrote) as that unit's credential, as Juju's deployer sets a
//! new unit agent's password ([`crate::identity::ensure_agent_credential`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use controller_backoff::Backoff;
use controller_contract::api::{LeadershipRequest, LeadershipResult, LoginRequest};
use controller_contract::describe_error;
use controller_contract::leadership::{HeldGrant, UnitLeadership, KEEP_GRANTS};
use dbaccessor::Database;
use juju_client::DialOptions;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::host::{Stop, WorkerSpec};
use crate::singular::Timing;
use crate::workers::DBACCESSOR;
use crate::{addresses, apicaller, database, identity};

/// The worker's name.
pub const NAME: &str = "leadership";

/// The trackers' settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The machine's data dir: the units are `<data-dir>/agents/unit-*/agent.conf`.
    pub data_dir: PathBuf,
    /// This controller's agent dir (`agents/controller-<id>`): its `ca.pem` and its
    /// `agent.conf`'s current API addresses, used beside a unit's own.
    pub controller_dir: PathBuf,
    /// The claim's duration, how often the leader extends, and how long before the grant's
    /// end (by the local clock) the unit stops leading.
    pub timing: Timing,
    /// How often a non-leader asks again at most (sooner when the answer says the lease
    /// runs out sooner), and how often the units are looked for.
    pub poll: Duration,
    /// The staggered dial.
    pub dial: DialOptions,
}

/// Milliseconds on `CLOCK_MONOTONIC`: the clock every process of the host shares, which
/// `leadership.json`'s deadlines are on.
pub fn monotonic_ms() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(now.tv_sec).unwrap_or(0) * 1000
        + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000_000
}

/// `at` on `CLOCK_MONOTONIC` in milliseconds, rounded down (never later than `at`).
fn monotonic_at(at: Instant) -> u64 {
    let now = Instant::now();
    let mono = monotonic_ms();
    if at >= now {
        mono + u64::try_from((at - now).as_millis()).unwrap_or(u64::MAX / 2)
    } else {
        mono.saturating_sub(u64::try_from((now - at).as_millis()).unwrap_or(u64::MAX))
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The unit named by an agent dir or tag (`unit-my-app-3` -> `my-app/3`).
pub fn unit_of_tag(tag: &str) -> Option<String> {
    let (app, number) = tag.strip_prefix("unit-")?.rsplit_once('-')?;
    (!app.is_empty() && number.parse::<u32>().is_ok()).then(|| format!("{app}/{number}"))
}

/// The keys of a unit's `agent.conf` a tracker needs (`cacert` may be missing: the
/// controller's own CA is used then).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
struct UnitConf {
    tag: String,
    apipassword: String,
    cacert: String,
    apiaddresses: Vec<String>,
}

/// The units of this machine: `agents/unit-*` dirs holding an `agent.conf`, by unit name.
fn local_units(data_dir: &Path) -> BTreeMap<String, PathBuf> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("agents")) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let unit = unit_of_tag(&name)?;
            let dir = entry.path();
            dir.join("agent.conf").is_file().then_some((unit, dir))
        })
        .collect()
}

fn read_unit_conf(unit_dir: &Path) -> anyhow::Result<UnitConf> {
    let path = unit_dir.join("agent.conf");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    serde_yaml_ng::from_str(&text).map_err(|e| anyhow::anyhow!("in {}: {e}", path.display()))
}

/// The trackers as a worker of the controller agent, after the dbaccessor (for the units'
/// credentials).
pub fn worker(settings: Settings, available: watch::Receiver<Option<Database>>) -> WorkerSpec {
    WorkerSpec::new(NAME, &[DBACCESSOR], move |stop| {
        run(settings.clone(), available.clone(), stop)
    })
}

/// Looks for units every `poll`, registers each one's credential, and runs a tracker per
/// unit until its dir goes or the stop.
async fn run(
    settings: Settings,
    mut available: watch::Receiver<Option<Database>>,
    mut stop: Stop,
) -> anyhow::Result<()> {
    settings.timing.validate()?;
    let Some(mut client) = database::open(&mut available, &mut stop, NAME).await? else {
        return Ok(());
    };
    // Per unit: the password registered, and the tracker.
    let mut trackers: BTreeMap<String, (String, tokio::task::JoinHandle<()>)> = BTreeMap::new();
    let result = 'scan: loop {
        if let Some(database) = available.borrow().as_ref() {
            if client.addresses() != database.members.as_slice() {
                client.set_addresses(&database.members);
            }
        }
        let units = local_units(&settings.data_dir);
        trackers.retain(|unit, (_, task)| {
            let keep = units.contains_key(unit) && !task.is_finished();
            if !keep {
                log::info!("leadership tracker of {unit} ends");
                task.abort();
            }
            keep
        });
        for (unit, dir) in &units {
            let conf = match read_unit_conf(dir) {
                Ok(conf) if !conf.apipassword.is_empty() => conf,
                Ok(_) => continue, // no password (yet): nothing to log in with
                Err(e) => {
                    log::warn!("leadership of {unit}: {}", describe_error(e.as_ref()));
                    continue;
                }
            };
            if trackers
                .get(unit)
                .is_some_and(|(password, _)| *password == conf.apipassword)
            {
                continue;
            }
            let register =
                identity::ensure_agent_credential(&mut client, &conf.tag, &conf.apipassword);
            let registered = tokio::select! {
                registered = register => registered,
                () = stop.requested() => break 'scan Ok(()),
            };
            match registered {
                Ok(wrote) => {
                    if wrote {
                        log::info!("registered the credential of {}", conf.tag);
                    }
                    if let Some((_, task)) = trackers.remove(unit) {
                        task.abort();
                    }
                    let task = tokio::spawn(track(settings.clone(), unit.clone(), dir.clone()));
                    log::info!("leadership tracker of {unit} starts");
                    trackers.insert(unit.clone(), (conf.apipassword.clone(), task));
                }
                Err(e) => log::warn!(
                    "cannot register the credential of {}: {}",
                    conf.tag,
                    describe_error(e.as_ref())
                ),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(settings.poll) => {}
            () = stop.requested() => break Ok(()),
        }
    };
    // The files keep their deadlines: a unit whose tracker stopped stops leading by them.
    for (_, (_, task)) in trackers {
        task.abort();
    }
    result
}

/// What one tracker knows, and its file.
struct Tracker {
    path: PathBuf,
    file: UnitLeadership,
    /// Whether the file is there: it is written only once the API has answered a claim, so
    /// that a reader tells "the lease decides" (the file exists) from "no controller API
    /// yet" (it does not; the simulator keeps its own pick then).
    answered: bool,
}

impl Tracker {
    fn new(unit: &str, unit_dir: &Path) -> Self {
        let path = unit_dir.join(controller_contract::leadership::FILE_NAME);
        // A previous run's file keeps its grants (the record) and its deadline, which holds
        // whoever writes next.
        let previous: Option<UnitLeadership> = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let answered = previous.is_some();
        let mut file = previous.unwrap_or_default();
        file.unit = unit.to_owned();
        file.application = unit.split_once('/').map_or(unit, |(app, _)| app).to_owned();
        Tracker {
            path,
            file,
            answered,
        }
    }

    fn write(&mut self) {
        if !self.answered {
            return;
        }
        self.file.written_unix_ms = wall_ms();
        let json = serde_json::to_vec_pretty(&self.file).expect("plain data serializes");
        if let Err(e) = addresses::write_atomically(&self.path, &json) {
            log::warn!(
                "cannot write {}: {}",
                self.path.display(),
                describe_error(e.as_ref())
            );
        }
    }

    /// Records an answer to a claim sent at `sent`; returns the deadline while leader.
    fn answered(
        &mut self,
        timing: &Timing,
        sent: Instant,
        answer: &LeadershipResult,
    ) -> Option<Instant> {
        self.answered = true;
        self.file.error.clear();
        self.file.leader_unit = answer.leader.clone();
        let now_mono = monotonic_ms();
        let deadline = answer
            .is_leader
            .then(|| {
                let grant = timing
                    .duration
                    .min(Duration::from_millis(answer.remaining_ms));
                timing.deadline(sent + grant)
            })
            .filter(|deadline| *deadline > Instant::now());
        match (deadline, answer.start_ms) {
            (Some(deadline), Some(start_ms)) => {
                let until = monotonic_at(deadline);
                let was_leader = self.file.leads_at(now_mono);
                match self.file.grants.last_mut() {
                    Some(last) if last.start_ms == start_ms => {
                        last.until_monotonic_ms = last.until_monotonic_ms.max(until);
                    }
                    _ => {
                        self.file.grants.push(HeldGrant {
                            start_ms,
                            from_monotonic_ms: now_mono,
                            until_monotonic_ms: until,
                        });
                        let excess = self.file.grants.len().saturating_sub(KEEP_GRANTS);
                        self.file.grants.drain(..excess);
                    }
                }
                if !was_leader {
                    log::info!(
                        "{} leads {} (grant {start_ms}, unix_ms={})",
                        self.file.unit,
                        self.file.application,
                        wall_ms()
                    );
                }
                self.file.leader = true;
                self.file.until_monotonic_ms = self.file.until_monotonic_ms.max(until);
                Some(deadline)
            }
            _ => {
                self.lost(now_mono);
                None
            }
        }
    }

    /// The unit no longer leads (it learnt so at `now_mono`, or its deadline passed).
    fn lost(&mut self, now_mono: u64) {
        if self.file.leader {
            log::info!(
                "{} no longer leads {} (unix_ms={})",
                self.file.unit,
                self.file.application,
                wall_ms()
            );
        }
        self.file.leader = false;
        self.file.until_monotonic_ms = 0;
        if let Some(last) = self.file.grants.last_mut() {
            last.until_monotonic_ms = last.until_monotonic_ms.min(now_mono);
        }
    }
}

/// One unit's tracker: logs in as the unit, claims or extends, writes what it knows; dials
/// again (another controller, in a new random order) when the connection fails. Runs until
/// aborted.
async fn track(settings: Settings, unit: String, unit_dir: PathBuf) {
    let timing = settings.timing.clone();
    let mut tracker = Tracker::new(&unit, &unit_dir);
    let mut deadline: Option<Instant> = None;
    let mut backoff = Backoff::new(
        apicaller::FIRST_PAUSE,
        settings.poll.max(apicaller::FIRST_PAUSE),
    );
    let request_timeout = timing.duration.min(Duration::from_secs(10));
    let claim = LeadershipRequest {
        application: tracker.file.application.clone(),
        unit: unit.clone(),
        duration_ms: Some(u64::try_from(timing.duration.as_millis()).unwrap_or(u64::MAX)),
    };
    loop {
        let connection = async {
            let conf = read_unit_conf(&unit_dir)?;
            let ca_cert = if conf.cacert.is_empty() {
                std::fs::read_to_string(settings.controller_dir.join("ca.pem")).map_err(|e| {
                    anyhow::anyhow!("no CA in the unit's agent.conf nor the controller's: {e}")
                })?
            } else {
                conf.cacert.clone()
            };
            let mut endpoints = conf.apiaddresses.clone();
            if let Ok(own) = read_unit_conf(&settings.controller_dir) {
                endpoints.extend(own.apiaddresses);
            }
            endpoints.sort();
            endpoints.dedup();
            let order = apicaller::dial_order(&endpoints, &mut apicaller::new_rng());
            let login = LoginRequest {
                user: None,
                tag: Some(conf.tag.clone()),
                password: conf.apipassword.clone(),
            };
            juju_client::dial_endpoints(&order, &ca_cert, &login, &settings.dial)
                .await
                .map_err(|e| anyhow::anyhow!("cannot log in as {}: {e}", conf.tag))
        };
        // A leader's deadline does not wait for a dial.
        let connection = tokio::select! {
            connection = connection => connection,
            () = sleep_until_some(deadline) => {
                tracker.lost(monotonic_ms());
                tracker.write();
                deadline = None;
                continue;
            }
        };
        let mut connection = match connection {
            Ok(connection) => connection,
            Err(e) => {
                tracker.file.error = describe_error(e.as_ref());
                log::warn!("leadership of {unit}: {}", tracker.file.error);
                tracker.write();
                pause(&mut tracker, &mut deadline, backoff.next_delay()).await;
                continue;
            }
        };
        backoff.reset();
        loop {
            let sent = Instant::now();
            let answer = tokio::select! {
                answer = connection.claim_leadership(&claim, request_timeout) => answer,
                () = sleep_until_some(deadline) => {
                    // Still waiting for the extension: the unit leads no more.
                    tracker.lost(monotonic_ms());
                    tracker.write();
                    deadline = None;
                    continue;
                }
            };
            let next = match answer {
                Ok(answer) => {
                    deadline = tracker.answered(&timing, sent, &answer);
                    tracker.write();
                    if deadline.is_some() {
                        sent + timing.extend_every
                    } else {
                        let remaining = answer
                            .leader
                            .is_some()
                            .then(|| Duration::from_millis(answer.remaining_ms));
                        Instant::now() + timing.claim_pause(remaining).min(settings.poll)
                    }
                }
                Err(e) => {
                    log::warn!("leadership of {unit}: {e}");
                    tracker.file.error = e.to_string();
                    tracker.write();
                    break;
                }
            };
            pause(
                &mut tracker,
                &mut deadline,
                next.saturating_duration_since(Instant::now()),
            )
            .await;
        }
        pause(&mut tracker, &mut deadline, apicaller::FIRST_PAUSE).await;
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Sleeps `pause`, ending the unit's leadership (in its file) if its deadline comes first.
async fn pause(tracker: &mut Tracker, deadline: &mut Option<Instant>, pause: Duration) {
    tokio::select! {
        () = tokio::time::sleep(pause) => {}
        () = sleep_until_some(*deadline) => {
            tracker.lost(monotonic_ms());
            tracker.write();
            *deadline = None;
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_from_tags() {
        assert_eq!(
            unit_of_tag("unit-controller-0").as_deref(),
            Some("controller/0")
        );
        assert_eq!(unit_of_tag("unit-my-app-12").as_deref(), Some("my-app/12"));
        assert_eq!(unit_of_tag("unit-app"), None);
        assert_eq!(unit_of_tag("unit--3"), None);
        assert_eq!(unit_of_tag("machine-3"), None);
        assert_eq!(unit_of_tag("unit-app-x"), None);
    }

    fn answer(is_leader: bool, remaining_ms: u64, start_ms: Option<i64>) -> LeadershipResult {
        LeadershipResult {
            application: "app".into(),
            leader: start_ms.map(|_| if is_leader { "app/0" } else { "app/1" }.to_owned()),
            is_leader,
            remaining_ms,
            start_ms,
        }
    }

    #[tokio::test]
    async fn the_deadline_is_from_before_the_claim_minus_the_margin_and_grants_are_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let timing = Timing {
            duration: Duration::from_millis(3000),
            extend_every: Duration::from_millis(1000),
            margin: Duration::from_millis(1000),
        };
        let mut tracker = Tracker::new("app/0", dir.path());
        assert_eq!(tracker.file.application, "app");
        // No file until the API has answered a claim.
        tracker.file.error = "cannot log in".into();
        tracker.write();
        assert!(!tracker.path.exists());
        let sent = Instant::now();
        let deadline = tracker
            .answered(&timing, sent, &answer(true, 3000, Some(7)))
            .expect("leads");
        assert_eq!(deadline, sent + Duration::from_millis(2000));
        // The answer's remaining time bounds the grant when shorter.
        let sent = Instant::now();
        let deadline = tracker
            .answered(&timing, sent, &answer(true, 2500, Some(7)))
            .expect("leads");
        assert_eq!(deadline, sent + Duration::from_millis(1500));
        assert_eq!(tracker.file.grants.len(), 1, "one grant, extended");
        assert!(tracker.file.leads_at(monotonic_ms()));
        // Too little left to act on: not leader.
        assert_eq!(
            tracker.answered(&timing, Instant::now(), &answer(true, 900, Some(7))),
            None
        );
        assert!(!tracker.file.leads_at(monotonic_ms()));
        // Another unit leads; later a new grant of this unit is a grant of its own.
        assert_eq!(
            tracker.answered(&timing, Instant::now(), &answer(false, 3000, Some(8))),
            None
        );
        assert_eq!(tracker.file.leader_unit.as_deref(), Some("app/1"));
        tracker.answered(&timing, Instant::now(), &answer(true, 3000, Some(9)));
        assert_eq!(
            tracker
                .file
                .grants
                .iter()
                .map(|g| g.start_ms)
                .collect::<Vec<_>>(),
            [7, 9]
        );
        tracker.write();
        let back = Tracker::new("app/0", dir.path());
        assert_eq!(
            back.file.grants, tracker.file.grants,
            "kept across restarts"
        );
        let grants: Vec<(String, HeldGrant)> = back
            .file
            .grants
            .iter()
            .map(|g| ("app/0".to_owned(), g.clone()))
            .collect();
        assert!(controller_contract::leadership::check_one_leader(&grants).is_ok());
    }

    #[test]
    fn monotonic_instants_convert_downwards() {
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        let mono = monotonic_ms();
        let converted = monotonic_at(later);
        assert!(
            converted >= mono + 4990 && converted <= mono + 5010,
            "{converted} vs {mono}"
        );
        assert!(monotonic_at(now - Duration::from_secs(1)) < mono);
    }
}
