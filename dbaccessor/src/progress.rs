//! Progress reports: every running node's dbaccessor writes its last log position into the
//! cluster itself, through the leader, once a health interval, and reads everybody's back.
//! libdqlite 1.11 tells no client how far a follower's log is, so this is how any
//! controller learns which voters are connected (a recent report) and caught up (a report
//! close to the leader's), for [`crate::health`].
//!
//! The reports live in their own database ([`DATABASE`]), one row per node id, so they
//! never mix with an application's schema. Each row keeps the previous report too, which
//! gives the write rate that widens the catch-up window on a busy log. Times are the
//! database's own clock (`julianday('now')` runs on the leader), so a controller's skewed
//! wall clock cannot make a stale report look fresh.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use controller_contract::status::LogPosition;
use dqlite::client::{Client, Options};
use dqlite::wire::Value;
use std::sync::Arc;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::health::Report;

/// The database that holds the reports.
pub const DATABASE: &str = "dbaccessor";

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS progress (
    node_id INTEGER PRIMARY KEY,
    term INTEGER NOT NULL,
    log_index INTEGER NOT NULL,
    at REAL NOT NULL,
    prev_index INTEGER NOT NULL,
    prev_at REAL NOT NULL)";

/// The previous report moves to `prev_*`; the time is the leader's.
const UPSERT: &str = "INSERT INTO progress (node_id, term, log_index, at, prev_index, prev_at)
    VALUES (?, ?, ?, julianday('now'), ?, julianday('now'))
    ON CONFLICT (node_id) DO UPDATE SET
        prev_index = log_index, prev_at = at,
        term = excluded.term, log_index = excluded.log_index, at = excluded.at";

/// Age in milliseconds and entries a second between a row's last two reports.
const READ: &str = "SELECT node_id, term, log_index,
        (julianday('now') - at) * 86400000.0,
        CASE WHEN at > prev_at AND log_index >= prev_index
             THEN (log_index - prev_index) / ((at - prev_at) * 86400.0) ELSE 0.0 END
    FROM progress";

/// Rows of nodes that stopped reporting a day ago are gone for good (a rejoined node has a
/// new id): they are deleted now and then.
const PRUNE: &str = "DELETE FROM progress WHERE at < julianday('now') - 1.0";
const PRUNE_EVERY: u32 = 600;

/// Every member's report, as last read.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// The reports by node id, with their age when read.
    pub reports: BTreeMap<u64, Report>,
    /// When they were read.
    pub read_at: Instant,
}

impl View {
    /// The reports with their age now, not when they were read: a reporter that can no
    /// longer reach the leader makes everyone look stale, as they are from here.
    pub fn aged(&self) -> BTreeMap<u64, Report> {
        let since = self.read_at.elapsed();
        self.reports
            .iter()
            .map(|(id, report)| {
                (
                    *id,
                    Report {
                        age: report.age + since,
                        ..*report
                    },
                )
            })
            .collect()
    }
}

/// The running reporter; dropping it stops the task.
pub struct Reporter {
    task: JoinHandle<()>,
    view: watch::Receiver<Option<View>>,
    /// Wakes the loop for a round now (see [`Reporter::kick`]).
    kick: Arc<Notify>,
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Reporter {
    /// Starts reporting node `node_id`'s log position (read by `position`) every
    /// `interval`, finding the leader among the members persisted in `data_dir`.
    pub fn spawn<F>(
        node_id: u64,
        data_dir: PathBuf,
        interval: Duration,
        tls: Option<dqlite::tls::Tls>,
        position: F,
    ) -> Self
    where
        F: Fn() -> Result<LogPosition, String> + Send + Sync + Clone + 'static,
    {
        let (tx, view) = watch::channel(None);
        let kick = Arc::new(Notify::new());
        let task = tokio::spawn(report_loop(
            node_id,
            data_dir,
            interval,
            tls,
            position,
            tx,
            kick.clone(),
        ));
        Reporter { task, view, kick }
    }

    /// Reports and reads the reports now rather than at the next interval (the interval
    /// then counts from this round): while the cluster settles after a change, so that a
    /// member that just joined or caught up shows in the verdict at once. The caller paces
    /// it; a kick during a round runs one more round right after.
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// The last reports read, if any.
    pub fn view(&self) -> Option<View> {
        self.view.borrow().clone()
    }
}

async fn report_loop<F>(
    node_id: u64,
    data_dir: PathBuf,
    interval: Duration,
    tls: Option<dqlite::tls::Tls>,
    position: F,
    view: watch::Sender<Option<View>>,
    kick: Arc<Notify>,
) where
    F: Fn() -> Result<LogPosition, String> + Send + Sync + Clone + 'static,
{
    let mut client: Option<Client> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds: u32 = 0;
    let mut last_error = String::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = kick.notified() => ticker.reset(),
        }
        rounds = rounds.wrapping_add(1);
        let reported = report_once(
            node_id,
            &data_dir,
            interval,
            tls.as_ref(),
            &position,
            &mut client,
            rounds,
        )
        .await;
        match reported {
            Ok(reports) => {
                last_error.clear();
                view.send_replace(Some(View {
                    reports,
                    read_at: Instant::now(),
                }));
            }
            Err(error) => {
                // A leaderless spell fails every round the same way: say it once.
                if error != last_error {
                    log::info!("progress report of node {node_id} failed: {error}");
                    last_error = error;
                }
                client = None;
            }
        }
    }
}

async fn report_once<F>(
    node_id: u64,
    data_dir: &std::path::Path,
    interval: Duration,
    tls: Option<&dqlite::tls::Tls>,
    position: &F,
    client: &mut Option<Client>,
    rounds: u32,
) -> Result<BTreeMap<u64, Report>, String>
where
    F: Fn() -> Result<LogPosition, String> + Send + Sync + Clone + 'static,
{
    let read = position.clone();
    let own = tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| format!("the log reader panicked: {e}"))??;
    let addresses: Vec<String> = dqlite::app::store::load(data_dir)
        .map_err(|e| format!("cannot read the member list: {e}"))?
        .into_iter()
        .map(|m| m.address)
        .collect();
    // Each request is bounded well inside one interval, so that a silent leader shows up as
    // stale reports rather than as a reporter stuck behind it.
    let bound = (interval / 2).max(Duration::from_millis(200));
    let fresh = client.is_none();
    let client = match client {
        Some(client) => {
            client.set_addresses(&addresses);
            client
        }
        None => {
            let options = Options {
                connect_timeout: bound,
                request_timeout: bound,
                retry_timeout: bound,
                tls: tls.cloned(),
                ..Options::default()
            };
            client.insert(
                Client::connect_leader(&addresses, options)
                    .await
                    .map_err(|e| e.to_string())?,
            )
        }
    };
    if fresh {
        client
            .exec(DATABASE, SCHEMA, &[])
            .await
            .map_err(|e| format!("cannot create the progress table: {e}"))?;
    }
    let index = as_sql_integer(own.index);
    client
        .exec(
            DATABASE,
            UPSERT,
            &[
                Value::Integer(as_sql_id(node_id)),
                Value::Integer(as_sql_integer(own.term)),
                Value::Integer(index),
                Value::Integer(index),
            ],
        )
        .await
        .map_err(|e| format!("cannot write the report: {e}"))?;
    if rounds.is_multiple_of(PRUNE_EVERY) {
        client
            .exec(DATABASE, PRUNE, &[])
            .await
            .map_err(|e| format!("cannot prune old reports: {e}"))?;
    }
    let rows = client
        .query(DATABASE, READ, &[])
        .await
        .map_err(|e| format!("cannot read the reports: {e}"))?;
    Ok(parse_rows(&rows.rows))
}

/// Node ids are unsigned 64-bit; SQLite integers are signed: the bits are kept as they are.
fn as_sql_id(id: u64) -> i64 {
    i64::from_ne_bytes(id.to_ne_bytes())
}

fn from_sql_id(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

/// Terms and indexes never reach 2^63; saturate rather than wrap if one ever did.
fn as_sql_integer(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The rows of [`READ`] as reports; a row of another shape is skipped.
fn parse_rows(rows: &[Vec<Value>]) -> BTreeMap<u64, Report> {
    let integer = |value: &Value| match value {
        Value::Integer(n) | Value::UnixTime(n) => Some(*n),
        _ => None,
    };
    let float = |value: &Value| match value {
        Value::Float(x) => Some(*x),
        Value::Integer(n) => Some(*n as f64),
        _ => None,
    };
    rows.iter()
        .filter_map(|row| {
            let [id, term, index, age_ms, rate] = row.as_slice() else {
                return None;
            };
            let age_ms = float(age_ms)?;
            Some((
                from_sql_id(integer(id)?),
                Report {
                    position: LogPosition {
                        term: u64::try_from(integer(term)?).ok()?,
                        index: u64::try_from(integer(index)?).ok()?,
                    },
                    // A report "from the future" (a new leader whose clock is behind the
                    // old one's) counts as fresh, not as an error.
                    age: Duration::from_secs_f64((age_ms / 1000.0).clamp(0.0, 1e9)),
                    rate: float(rate)?,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits up to 20 s for a view read after `after`.
    async fn view_after(reporter: &Reporter, after: Option<Instant>) -> View {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(view) = reporter.view() {
                if after.is_none_or(|after| view.read_at > after) {
                    return view;
                }
            }
            assert!(Instant::now() < deadline, "no report read after {after:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A reporter whose interval is an hour reports once at its start and again only when
    /// kicked: a kick is a round now.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_kick_reports_and_reads_now_rather_than_at_the_interval() {
        let dir = tempfile::tempdir().expect("temp dir");
        let address = "127.21.250.1:17666";
        let app = dqlite::app::App::start(dqlite::app::AppConfig::new(dir.path(), address))
            .await
            .expect("a node starts");
        app.ready(Duration::from_secs(20)).await.expect("ready");
        let position = || Ok(LogPosition { term: 1, index: 7 });
        let reporter = Reporter::spawn(
            app.id(),
            dir.path().to_path_buf(),
            Duration::from_secs(3600),
            None,
            position,
        );
        let first = view_after(&reporter, None).await;
        assert_eq!(
            first.reports.get(&app.id()).map(|r| r.position.index),
            Some(7)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            reporter.view().map(|v| v.read_at),
            Some(first.read_at),
            "no second round without a kick"
        );
        reporter.kick();
        let second = view_after(&reporter, Some(first.read_at)).await;
        assert!(second.read_at > first.read_at);
        drop(reporter);
        app.stop().await.expect("stop");
    }

    #[test]
    fn ids_keep_their_bits() {
        for id in [0, 1, u64::MAX, 0x2dc1_7185_8c31_55be, 1 << 63] {
            assert_eq!(from_sql_id(as_sql_id(id)), id);
        }
        assert_eq!(as_sql_integer(u64::MAX), i64::MAX);
    }

    #[test]
    fn rows_table() {
        let rows = vec![
            vec![
                Value::Integer(-1),
                Value::Integer(3),
                Value::Integer(40),
                Value::Float(250.0),
                Value::Float(2.5),
            ],
            // An integer age, a negative age (clock step between leaders).
            vec![
                Value::Integer(7),
                Value::Integer(3),
                Value::Integer(41),
                Value::Integer(-20),
                Value::Integer(0),
            ],
            // Wrong shapes are skipped.
            vec![Value::Integer(8), Value::Null],
            vec![
                Value::Integer(9),
                Value::Text("x".into()),
                Value::Integer(1),
                Value::Float(1.0),
                Value::Float(1.0),
            ],
        ];
        let parsed = parse_rows(&rows);
        assert_eq!(parsed.len(), 2, "{parsed:?}");
        let first = parsed[&u64::MAX];
        assert_eq!(first.position, LogPosition { term: 3, index: 40 });
        assert_eq!(first.age, Duration::from_millis(250));
        assert!((first.rate - 2.5).abs() < f64::EPSILON);
        assert_eq!(parsed[&7].age, Duration::ZERO);
    }
}
