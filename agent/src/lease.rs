//! The lease store: leases in the controller database (table `lease`), each operation ONE
//! SQL statement whose time is the database's own clock, and fenced writes that the
//! database refuses unless their lease token still holds.
//!
//! Time: every statement computes "now" itself (`julianday('now')`, in milliseconds since
//! the Unix epoch, see [`NOW_MS`]); SQLite fixes it once per statement, and the statement
//! runs on the Dqlite leader, so no controller's wall clock decides who holds what. The
//! controllers only ever use their *monotonic* clock, to know how long they may still act
//! (see [`Held::until`]).
//!
//! Atomicity: our client commits each statement of a multi-statement text on its own, so
//! every operation here is a single statement (`INSERT ... ON CONFLICT DO UPDATE ... WHERE`,
//! `UPDATE ... WHERE`, `INSERT ... SELECT ... WHERE EXISTS`). A write whose outcome is
//! unknown ([`dqlite::client::Error::OutcomeUnknown`]) is read back, never assumed either
//! way.
//!
//! Tokens: a claim sets `start_ms` to the database's now, but never to less than the
//! previous start + 1, so the starts of one lease row strictly increase even when a new
//! Dqlite leader's clock is behind; a token (holder, start) is therefore never granted
//! twice while the row exists.

use std::future::Future;
use std::time::Duration;

use dqlite::client::{Client, Error as ClientError, ExecResult, Rows};
use dqlite::wire::Value;
use tokio::time::Instant;

use crate::schema::DATABASE;

/// What the lease store sends its statements through: the Dqlite [`Client`], or a test's
/// wrapper that loses a reply (an unknown outcome after the write ran, or before it was
/// sent) to show that such a write is read back, never assumed.
pub trait Transport: Send {
    /// Runs one write; see [`Client::exec`].
    fn exec(
        &mut self,
        database: &str,
        sql: &str,
        params: &[Value],
    ) -> impl Future<Output = Result<ExecResult, ClientError>> + Send;

    /// Runs one read; see [`Client::query`].
    fn query(
        &mut self,
        database: &str,
        sql: &str,
        params: &[Value],
    ) -> impl Future<Output = Result<Rows, ClientError>> + Send;
}

impl Transport for Client {
    fn exec(
        &mut self,
        database: &str,
        sql: &str,
        params: &[Value],
    ) -> impl Future<Output = Result<ExecResult, ClientError>> + Send {
        Client::exec(self, database, sql, params)
    }

    fn query(
        &mut self,
        database: &str,
        sql: &str,
        params: &[Value],
    ) -> impl Future<Output = Result<Rows, ClientError>> + Send {
        Client::query(self, database, sql, params)
    }
}

/// The database's now, in milliseconds since the Unix epoch, as SQL. SQLite evaluates
/// `'now'` once per statement, so every use in one statement is the same instant.
pub const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// The lease type whose holder runs the controller's singular workers.
pub const SINGULAR_CONTROLLER: &str = "singular-controller";

/// The model of controller-wide leases.
pub const CONTROLLER_MODEL: &str = "controller";

/// The lease type whose holder (a unit) is its application's leader.
pub const APPLICATION_LEADERSHIP: &str = "application-leadership";

/// Which lease: Juju's (type, model, name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LeaseKey {
    /// `singular-controller`, `application-leadership`, ...
    pub kind: String,
    /// The model the lease is about.
    pub model: String,
    /// The lease's name within the type and model (an application, `controller`, ...).
    pub name: String,
}

impl LeaseKey {
    /// The controller's `singular-controller` lease.
    pub fn singular_controller() -> Self {
        Self {
            kind: SINGULAR_CONTROLLER.into(),
            model: CONTROLLER_MODEL.into(),
            name: CONTROLLER_MODEL.into(),
        }
    }

    /// Application `application`'s leadership (in the controller's model, the only one).
    pub fn application_leadership(application: &str) -> Self {
        Self {
            kind: APPLICATION_LEADERSHIP.into(),
            model: CONTROLLER_MODEL.into(),
            name: application.into(),
        }
    }

    fn params(&self) -> [Value; 3] {
        [
            Value::Text(self.kind.clone()),
            Value::Text(self.model.clone()),
            Value::Text(self.name.clone()),
        ]
    }
}

impl std::fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.model, self.name)
    }
}

/// Proof of one grant of a lease: its holder and the start the database gave that claim.
/// Fenced writes carry it; extending needs it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token {
    pub holder: String,
    pub start_ms: i64,
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.holder, self.start_ms)
    }
}

/// A lease row as read, with the database's now at the read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: LeaseKey,
    pub token: Token,
    pub expiry_ms: i64,
    pub pinned: bool,
    /// The database's clock when the row was read.
    pub now_ms: i64,
}

impl Lease {
    /// Whether the lease holds at the read: not yet expired, or pinned.
    pub fn is_held(&self) -> bool {
        self.pinned || self.expiry_ms > self.now_ms
    }

    /// How long the lease still runs by the database's clock (zero when expired).
    pub fn remaining(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.expiry_ms - self.now_ms).unwrap_or(0))
    }
}

/// A lease this caller holds, and until when by its own monotonic clock: an instant no later
/// than the expiry as the database sees it (the clock was read before the write was sent,
/// or before the read that confirmed it). Stop acting before it, minus a margin for the
/// controllers' clock rates and the leader's clock against the previous leader's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub token: Token,
    pub until: Instant,
}

/// The outcome of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This caller holds the lease.
    Held(Held),
    /// The claim did not apply: the row as read after it (`None`: no row), whose grant may
    /// be claimed after `remaining()` unless pinned.
    Taken(Option<Lease>),
}

/// Why a lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("cannot {operation} lease {key}: {source}")]
    Write {
        operation: &'static str,
        key: Box<LeaseKey>,
        #[source]
        source: Box<ClientError>,
    },
    #[error("cannot read lease {key}: {source}")]
    Read {
        key: Box<LeaseKey>,
        #[source]
        source: Box<ClientError>,
    },
    #[error("cannot read the leases: {0}")]
    List(#[source] Box<ClientError>),
    #[error("a lease row read back is malformed: {0:?}")]
    Malformed(Vec<Value>),
    #[error("a lease duration of {0:?} is out of range")]
    Duration(Duration),
}

fn millis(duration: Duration) -> Result<i64, LeaseError> {
    i64::try_from(duration.as_millis())
        .ok()
        .filter(|ms| *ms > 0)
        .ok_or(LeaseError::Duration(duration))
}

/// Claims `key` for `holder` for `duration` if nobody holds it (no row, or an expired,
/// unpinned one). The grant's start is read back, as is the outcome of a claim whose
/// outcome is unknown.
pub async fn claim(
    client: &mut impl Transport,
    key: &LeaseKey,
    holder: &str,
    duration: Duration,
) -> Result<Claim, LeaseError> {
    let sql = format!(
        "INSERT INTO lease (type, model, name, holder, start_ms, expiry_ms, pinned) \
         VALUES (?1, ?2, ?3, ?4, {NOW_MS}, {NOW_MS} + ?5, 0) \
         ON CONFLICT (type, model, name) DO UPDATE SET \
           holder = excluded.holder, \
           start_ms = MAX(excluded.start_ms, lease.start_ms + 1), \
           expiry_ms = excluded.expiry_ms, \
           pinned = 0 \
         WHERE lease.expiry_ms <= {NOW_MS} AND lease.pinned = 0"
    );
    let [kind, model, name] = key.params();
    let params = [
        kind,
        model,
        name,
        Value::Text(holder.to_owned()),
        Value::Integer(millis(duration)?),
    ];
    let sent = Instant::now();
    let certain = match client.exec(DATABASE, &sql, &params).await {
        Ok(result) => Some(result.rows_affected == 1),
        Err(e) if e.outcome_unknown() => {
            log::warn!("claim of lease {key} by {holder}: {e}; reading it back");
            None
        }
        Err(source) => {
            return Err(LeaseError::Write {
                operation: "claim",
                key: Box::new(key.clone()),
                source: Box::new(source),
            })
        }
    };
    if certain == Some(false) {
        // Not applied: somebody's grant holds (perhaps a previous incarnation of this
        // holder's, which is not this caller's to use).
        return Ok(Claim::Taken(read(client, key).await?));
    }
    // The start is the database's: read it back (and the outcome, when unknown). A row
    // under this holder's name that holds is this claim's grant, or, after an unknown
    // outcome only, a grant of an earlier claim under the same name, which the data dir
    // lock makes this process's or a dead one's: either way this caller's to use, until
    // the expiry the read shows.
    let read_sent = Instant::now();
    let lease = read(client, key).await?;
    match lease {
        Some(lease) if lease.token.holder == holder && lease.is_held() && !lease.pinned => {
            let mut until = read_sent + lease.remaining();
            if certain == Some(true) {
                until = until.min(sent + duration);
            }
            Ok(Claim::Held(Held {
                token: lease.token,
                until,
            }))
        }
        other => Ok(Claim::Taken(other)),
    }
}

/// Claims `key` for `holder`, or extends it when `holder` already holds it (Juju's
/// `ClaimLeadership`: a unit asks again and again and stays leader while it does). The
/// holder's name is its identity here: a unit is one agent, so its grant is its own to
/// extend, whichever process of it asks.
pub async fn claim_or_extend(
    client: &mut impl Transport,
    key: &LeaseKey,
    holder: &str,
    duration: Duration,
) -> Result<Claim, LeaseError> {
    if let Some(lease) = read(client, key).await? {
        if lease.token.holder == holder && lease.is_held() && !lease.pinned {
            if let Some(held) = extend(client, key, &lease.token, duration).await? {
                return Ok(Claim::Held(held));
            }
            // It lapsed between the read and the extension: claim afresh.
        }
    }
    claim(client, key, holder, duration).await
}

/// Extends the grant `token` of `key` to `duration` from the database's now, if it still
/// holds. `Ok(None)`: the grant is gone (expired, revoked, taken over).
pub async fn extend(
    client: &mut impl Transport,
    key: &LeaseKey,
    token: &Token,
    duration: Duration,
) -> Result<Option<Held>, LeaseError> {
    let sql = format!(
        "UPDATE lease SET expiry_ms = {NOW_MS} + ?6 \
         WHERE type = ?1 AND model = ?2 AND name = ?3 AND holder = ?4 AND start_ms = ?5 \
           AND (expiry_ms > {NOW_MS} OR pinned = 1)"
    );
    let [kind, model, name] = key.params();
    let params = [
        kind,
        model,
        name,
        Value::Text(token.holder.clone()),
        Value::Integer(token.start_ms),
        Value::Integer(millis(duration)?),
    ];
    let sent = Instant::now();
    match client.exec(DATABASE, &sql, &params).await {
        Ok(result) if result.rows_affected == 1 => Ok(Some(Held {
            token: token.clone(),
            until: sent + duration,
        })),
        Ok(_) => Ok(None),
        Err(e) if e.outcome_unknown() => {
            log::warn!("extension of lease {key} ({token}): {e}; reading it back");
            let read_sent = Instant::now();
            Ok(read(client, key).await?.and_then(|lease| {
                (lease.token == *token && lease.is_held() && !lease.pinned).then(|| Held {
                    token: token.clone(),
                    until: (read_sent + lease.remaining()).min(sent + duration),
                })
            }))
        }
        Err(source) => Err(LeaseError::Write {
            operation: "extend",
            key: Box::new(key.clone()),
            source: Box::new(source),
        }),
    }
}

/// Ends the grant `token` of `key` now (its row stays, expired, so that the next start is
/// still greater). `Ok(false)`: it had already ended. Idempotent, so an unknown outcome is
/// settled by sending it again.
pub async fn revoke(
    client: &mut impl Transport,
    key: &LeaseKey,
    token: &Token,
) -> Result<bool, LeaseError> {
    let sql = format!(
        "UPDATE lease SET expiry_ms = {NOW_MS}, pinned = 0 \
         WHERE type = ?1 AND model = ?2 AND name = ?3 AND holder = ?4 AND start_ms = ?5 \
           AND (expiry_ms > {NOW_MS} OR pinned = 1)"
    );
    let [kind, model, name] = key.params();
    let params = [
        kind,
        model,
        name,
        Value::Text(token.holder.clone()),
        Value::Integer(token.start_ms),
    ];
    write_idempotent(client, key, "revoke", &sql, &params).await
}

/// Removes `key`'s row if it has expired and is not pinned (housekeeping; a claim does not
/// need it). `Ok(false)`: no such row.
pub async fn expire(client: &mut impl Transport, key: &LeaseKey) -> Result<bool, LeaseError> {
    let sql = format!(
        "DELETE FROM lease WHERE type = ?1 AND model = ?2 AND name = ?3 \
           AND expiry_ms <= {NOW_MS} AND pinned = 0"
    );
    write_idempotent(client, key, "expire", &sql, &key.params()).await
}

/// Pins (`true`) or unpins `key`: a pinned lease does not expire, so nobody can claim it
/// and its holder's fenced writes still pass. Only a lease that holds can be pinned.
/// `Ok(false)`: nothing changed (not held, or already so).
pub async fn set_pinned(
    client: &mut impl Transport,
    key: &LeaseKey,
    pinned: bool,
) -> Result<bool, LeaseError> {
    let sql = if pinned {
        format!(
            "UPDATE lease SET pinned = 1 WHERE type = ?1 AND model = ?2 AND name = ?3 \
               AND pinned = 0 AND expiry_ms > {NOW_MS}"
        )
    } else {
        "UPDATE lease SET pinned = 0 WHERE type = ?1 AND model = ?2 AND name = ?3 AND pinned = 1"
            .to_owned()
    };
    let operation = if pinned { "pin" } else { "unpin" };
    write_idempotent(client, key, operation, &sql, &key.params()).await
}

/// A write whose repetition is harmless: sent again once when its outcome is unknown (the
/// second answer then says where the row is; `false` after a first try that committed).
async fn write_idempotent(
    client: &mut impl Transport,
    key: &LeaseKey,
    operation: &'static str,
    sql: &str,
    params: &[Value],
) -> Result<bool, LeaseError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match client.exec(DATABASE, sql, params).await {
            Ok(result) => return Ok(result.rows_affected > 0),
            Err(e) if e.outcome_unknown() && tries < 3 => {
                log::warn!("{operation} of lease {key}: {e}; sending it again");
            }
            Err(source) => {
                return Err(LeaseError::Write {
                    operation,
                    key: Box::new(key.clone()),
                    source: Box::new(source),
                })
            }
        }
    }
}

const SELECT_LEASE: &str = "SELECT type, model, name, holder, start_ms, expiry_ms, pinned";

fn lease_from_row(row: Vec<Value>) -> Result<Lease, LeaseError> {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let parsed = if let [kind, model, name, holder, start, expiry, pinned, now] = row.as_slice() {
        (|| {
            Some(Lease {
                key: LeaseKey {
                    kind: text(kind)?,
                    model: text(model)?,
                    name: text(name)?,
                },
                token: Token {
                    holder: text(holder)?,
                    start_ms: start.as_i64()?,
                },
                expiry_ms: expiry.as_i64()?,
                pinned: pinned.as_i64()? != 0,
                now_ms: now.as_i64()?,
            })
        })()
    } else {
        None
    };
    parsed.ok_or(LeaseError::Malformed(row))
}

/// `key`'s row with the database's now, if there is one.
pub async fn read(
    client: &mut impl Transport,
    key: &LeaseKey,
) -> Result<Option<Lease>, LeaseError> {
    let sql =
        format!("{SELECT_LEASE}, {NOW_MS} FROM lease WHERE type = ?1 AND model = ?2 AND name = ?3");
    let rows = client
        .query(DATABASE, &sql, &key.params())
        .await
        .map_err(|source| LeaseError::Read {
            key: Box::new(key.clone()),
            source: Box::new(source),
        })?;
    rows.rows.into_iter().next().map(lease_from_row).transpose()
}

/// Every lease row, in key order, with the database's now.
pub async fn list(client: &mut impl Transport) -> Result<Vec<Lease>, LeaseError> {
    let sql = format!("{SELECT_LEASE}, {NOW_MS} FROM lease ORDER BY type, model, name");
    let rows = client
        .query(DATABASE, &sql, &[])
        .await
        .map_err(|e| LeaseError::List(Box::new(e)))?;
    rows.rows.into_iter().map(lease_from_row).collect()
}

/// The database's clock now (milliseconds since the epoch).
pub async fn database_now(client: &mut impl Transport) -> Result<i64, LeaseError> {
    let rows = client
        .query(DATABASE, &format!("SELECT {NOW_MS}"), &[])
        .await
        .map_err(|e| LeaseError::List(Box::new(e)))?;
    match rows.rows.first().map(Vec::as_slice) {
        Some([now]) => now
            .as_i64()
            .ok_or_else(|| LeaseError::Malformed(vec![now.clone()])),
        _ => Err(LeaseError::Malformed(Vec::new())),
    }
}

/// The outcome of a fenced write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fenced {
    /// Committed, with the grant still holding when it ran.
    Done,
    /// Refused: the token no longer holds the lease.
    Stale,
}

/// Why a fenced write failed.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("fenced action {seq} of {token}: {source}")]
    Write {
        token: Token,
        seq: i64,
        #[source]
        source: ClientError,
    },
    #[error("fenced action {seq} of {token}: cannot read it back: {source}")]
    Read {
        token: Token,
        seq: i64,
        #[source]
        source: ClientError,
    },
    #[error("fenced statement of {token}: {source}")]
    Statement {
        token: Token,
        #[source]
        source: ClientError,
    },
    #[error("fenced statement of {token}: cannot read the lease: {source}")]
    Check {
        token: Token,
        #[source]
        source: LeaseError,
    },
}

/// The outcome of [`exec_fenced`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FencedWrite {
    /// Committed while the grant held, changing this many rows (0: the statement's own
    /// condition matched nothing; the state it writes was already there, say).
    Applied(u64),
    /// Refused: the token no longer holds the lease.
    Stale,
}

/// Runs one statement of a singular worker, fenced: `sql` must carry [`holds_condition`]
/// in its `WHERE` (parameters `?1..?5`: the key and `token`), its own parameters being
/// `?6` on (`params`). Changed rows mean the grant held when it ran. No changed row is told
/// apart by reading the lease: still held by `token`, the statement's own condition
/// matched nothing ([`FencedWrite::Applied`]`(0)`); not held, [`FencedWrite::Stale`].
///
/// `sql` must be idempotent (a state it moves rows to, a delete): an unknown outcome is
/// settled by sending it again, and the answer to the resend is the outcome.
pub async fn exec_fenced(
    client: &mut impl Transport,
    key: &LeaseKey,
    token: &Token,
    sql: &str,
    params: &[Value],
) -> Result<FencedWrite, FenceError> {
    let [kind, model, name] = key.params();
    let mut all = vec![
        kind,
        model,
        name,
        Value::Text(token.holder.clone()),
        Value::Integer(token.start_ms),
    ];
    all.extend_from_slice(params);
    let mut tries = 0;
    let changed = loop {
        tries += 1;
        match client.exec(DATABASE, sql, &all).await {
            Ok(result) => break result.rows_affected,
            Err(e) if e.outcome_unknown() && tries < 3 => {
                log::warn!("fenced statement of {token} on {key}: {e}; sending it again");
            }
            Err(source) => {
                return Err(FenceError::Statement {
                    token: token.clone(),
                    source,
                })
            }
        }
    };
    if changed > 0 {
        return Ok(FencedWrite::Applied(changed));
    }
    let lease = read(client, key)
        .await
        .map_err(|source| FenceError::Check {
            token: token.clone(),
            source,
        })?;
    Ok(match lease {
        Some(lease) if lease.token == *token && lease.is_held() => FencedWrite::Applied(0),
        _ => FencedWrite::Stale,
    })
}

/// The SQL condition (for a `WHERE`) that `?1..?5` (type, model, name, holder, start) is a
/// grant that holds now: what every fenced write carries.
pub fn holds_condition() -> String {
    format!(
        "EXISTS (SELECT 1 FROM lease WHERE type = ?1 AND model = ?2 AND name = ?3 \
           AND holder = ?4 AND start_ms = ?5 AND (expiry_ms > {NOW_MS} OR pinned = 1))"
    )
}

/// Records fenced action `seq` (unique per token, chosen by the caller) in `fencing_log`,
/// only if `token` still holds `key` when the statement runs, with the database's time. An
/// unknown outcome is read back by (token, seq).
pub async fn log_fenced(
    client: &mut impl Transport,
    key: &LeaseKey,
    token: &Token,
    seq: i64,
    action: &str,
) -> Result<Fenced, FenceError> {
    let sql = format!(
        "INSERT INTO fencing_log (lease_type, model, lease_name, holder, lease_start_ms, seq, action, at_ms) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, {NOW_MS} WHERE {}",
        holds_condition()
    );
    let [kind, model, name] = key.params();
    let params = [
        kind,
        model,
        name,
        Value::Text(token.holder.clone()),
        Value::Integer(token.start_ms),
        Value::Integer(seq),
        Value::Text(action.to_owned()),
    ];
    match client.exec(DATABASE, &sql, &params).await {
        Ok(result) if result.rows_affected == 1 => Ok(Fenced::Done),
        Ok(_) => Ok(Fenced::Stale),
        Err(e) if e.outcome_unknown() => {
            let rows = client
                .query(
                    DATABASE,
                    "SELECT 1 FROM fencing_log WHERE holder = ? AND lease_start_ms = ? AND seq = ?",
                    &[
                        Value::Text(token.holder.clone()),
                        Value::Integer(token.start_ms),
                        Value::Integer(seq),
                    ],
                )
                .await
                .map_err(|source| FenceError::Read {
                    token: token.clone(),
                    seq,
                    source,
                })?;
            // Not there: it did not commit. Not resent: the caller's next action carries
            // its own sequence number.
            Ok(if rows.rows.is_empty() {
                Fenced::Stale
            } else {
                Fenced::Done
            })
        }
        Err(source) => Err(FenceError::Write {
            token: token.clone(),
            seq,
            source,
        }),
    }
}

/// One row of `fencing_log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FencedAction {
    pub id: i64,
    pub token: Token,
    pub seq: i64,
    pub action: String,
    pub at_ms: i64,
}

/// Whether the fenced actions, in commit (`id`) order, show one holder at a time: each
/// token's actions form one unbroken run, and runs follow each other in time (a run's first
/// action after the previous run's last, by the database's clock). `Err` names the first
/// overlap.
pub fn check_no_overlap(actions: &[FencedAction]) -> Result<usize, String> {
    check_runs(actions, true)
}

/// The commit-order half of [`check_no_overlap`]: each token's actions form one unbroken
/// run, and a later grant's token has a later start. The database's clock is not compared
/// across runs: when the Dqlite leader moves to a controller whose wall clock is behind,
/// the next run's times can be earlier than the last ones, which is no overlap (the commit
/// order is the proof).
pub fn check_commit_order(actions: &[FencedAction]) -> Result<usize, String> {
    check_runs(actions, false)
}

fn check_runs(actions: &[FencedAction], by_time: bool) -> Result<usize, String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut runs: Vec<(&Token, i64, i64)> = Vec::new();
    for action in actions {
        match runs.last_mut() {
            Some((token, _, last)) if **token == action.token => *last = action.at_ms,
            _ => {
                if !seen.insert(&action.token) {
                    return Err(format!(
                        "{} acted again (action {}) after another holder had",
                        action.token, action.id
                    ));
                }
                if let Some((previous, _, last)) = runs.last() {
                    if by_time && action.at_ms < *last {
                        return Err(format!(
                            "{} acted at {} before {}'s last action at {}",
                            action.token, action.at_ms, previous, last
                        ));
                    }
                    if !by_time && action.token.start_ms <= previous.start_ms {
                        return Err(format!(
                            "{} (action {}) follows {} but did not start later",
                            action.token, action.id, previous
                        ));
                    }
                }
                runs.push((&action.token, action.at_ms, action.at_ms));
            }
        }
    }
    Ok(runs.len())
}

/// Every fenced action in commit order, from id `after` on.
pub async fn fencing_log(
    client: &mut impl Transport,
    after: i64,
) -> Result<Vec<FencedAction>, ClientError> {
    let rows = client
        .query(
            DATABASE,
            "SELECT id, holder, lease_start_ms, seq, action, at_ms FROM fencing_log \
             WHERE id > ? ORDER BY id",
            &[Value::Integer(after)],
        )
        .await?;
    Ok(rows
        .rows
        .into_iter()
        .filter_map(|row| match row.as_slice() {
            [id, holder, start, seq, action, at] => Some(FencedAction {
                id: id.as_i64()?,
                token: Token {
                    holder: holder.as_str()?.to_owned(),
                    start_ms: start.as_i64()?,
                },
                seq: seq.as_i64()?,
                action: action.as_str()?.to_owned(),
                at_ms: at.as_i64()?,
            }),
            _ => None,
        })
        .collect())
}

/// Deletes fenced actions older than `keep` by the database's clock (the log would grow
/// without end). Idempotent.
pub async fn prune_fencing_log(
    client: &mut impl Transport,
    keep: Duration,
) -> Result<u64, ClientError> {
    let keep = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    let result = client
        .exec(
            DATABASE,
            &format!("DELETE FROM fencing_log WHERE at_ms < {NOW_MS} - ?"),
            &[Value::Integer(keep)],
        )
        .await?;
    Ok(result.rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(id: i64, holder: &str, start: i64, at: i64) -> FencedAction {
        FencedAction {
            id,
            token: Token {
                holder: holder.into(),
                start_ms: start,
            },
            seq: id,
            action: "beat".into(),
            at_ms: at,
        }
    }

    #[test]
    fn overlap_table() {
        let check = |actions: &[FencedAction], expected: Result<usize, &str>| {
            let got = check_no_overlap(actions);
            match expected {
                Ok(runs) => assert_eq!(got, Ok(runs), "{actions:?}"),
                Err(word) => {
                    let message = got.expect_err("an overlap");
                    assert!(message.contains(word), "{message}");
                }
            }
        };
        check(&[], Ok(0));
        check(&[action(1, "a", 10, 11), action(2, "a", 10, 12)], Ok(1));
        // A handover, then the same controller again with a new grant.
        check(
            &[
                action(1, "a", 10, 11),
                action(2, "b", 20, 21),
                action(3, "a", 30, 31),
            ],
            Ok(3),
        );
        // Interleaved grants: two holders at once.
        check(
            &[
                action(1, "a", 10, 11),
                action(2, "b", 20, 21),
                action(3, "a", 10, 22),
            ],
            Err("acted again"),
        );
        // The next holder's first action before the previous one's last (by db time).
        check(
            &[action(1, "a", 10, 15), action(2, "b", 20, 14)],
            Err("before"),
        );
        // By commit order only, that is no overlap; a later grant with an earlier start is.
        let later_run_earlier_clock = [action(1, "a", 10, 15), action(2, "b", 20, 14)];
        assert_eq!(check_commit_order(&later_run_earlier_clock), Ok(2));
        let earlier_start = [action(1, "a", 10, 15), action(2, "b", 9, 16)];
        assert!(check_commit_order(&earlier_start)
            .expect_err("a token's start goes back")
            .contains("did not start later"));
        let interleaved = [
            action(1, "a", 10, 11),
            action(2, "b", 20, 21),
            action(3, "a", 10, 22),
        ];
        assert!(check_commit_order(&interleaved)
            .expect_err("interleaved")
            .contains("acted again"));
    }

    #[test]
    fn durations_are_positive_milliseconds() {
        assert_eq!(millis(Duration::from_secs(3)).ok(), Some(3000));
        assert!(millis(Duration::ZERO).is_err());
        assert!(millis(Duration::from_micros(10)).is_err());
    }
}
