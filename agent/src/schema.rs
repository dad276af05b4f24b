//! The controller database's schema: versioned migrations applied exactly once however
//! many controllers start together.
//!
//! Each migration runs as one SQL text, `BEGIN; INSERT INTO schema_version ...; <DDL>;
//! COMMIT`: the version row comes first, and its primary key lets only one applier's
//! transaction commit. A second applier's transaction fails at that insert (or is refused
//! with "busy" while the first one holds the write lock), and the connection it ran on is
//! dropped, which rolls it back. Whatever the error, including
//! `dqlite::client::Error::OutcomeUnknown` (the transaction may have committed), the
//! applier never resends blindly: it reads `schema_version` again and carries on from
//! what is there.

use std::time::Duration;

use controller_backoff::Backoff;
use dqlite::client::{Client, Error as ClientError};
use dqlite::wire::Value;
use tokio::time::Instant;

/// The database every controller table lives in.
pub const DATABASE: &str = "controller";

/// One schema change.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// 1, 2, 3, ...: applied in order, each exactly once.
    pub version: i64,
    /// What it does, kept in `schema_version`.
    pub description: &'static str,
    /// The statements; no transaction control (the applier wraps them).
    pub sql: &'static str,
}

/// Every migration, in order. Never edit one that has shipped: add another.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "controller nodes, API addresses and controller config",
        sql: "
CREATE TABLE controller_node (
    controller_id TEXT PRIMARY KEY,
    dqlite_node_id INTEGER NOT NULL,
    bind_address TEXT NOT NULL
);
CREATE TABLE controller_api_address (
    controller_id TEXT NOT NULL,
    value TEXT NOT NULL,
    scope TEXT NOT NULL,
    space TEXT NOT NULL,
    is_agent BOOLEAN NOT NULL,
    PRIMARY KEY (controller_id, value)
);
CREATE TABLE controller_config (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO controller_config (key, value) VALUES ('juju-mgmt-space', '');
",
    },
    Migration {
        version: 2,
        description: "credentials and the controller CA",
        sql: "
CREATE TABLE credential (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL
);
CREATE TABLE controller_ca (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    cert_pem TEXT NOT NULL,
    key_pem TEXT NOT NULL,
    created_by TEXT NOT NULL
);
",
    },
    Migration {
        version: 3,
        description: "leases and the fencing log",
        sql: "
CREATE TABLE lease (
    type TEXT NOT NULL,
    model TEXT NOT NULL,
    name TEXT NOT NULL,
    holder TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    expiry_ms INTEGER NOT NULL,
    pinned INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1)),
    PRIMARY KEY (type, model, name)
);
CREATE TABLE fencing_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    lease_type TEXT NOT NULL,
    model TEXT NOT NULL,
    lease_name TEXT NOT NULL,
    holder TEXT NOT NULL,
    lease_start_ms INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    action TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    UNIQUE (holder, lease_start_ms, seq)
);
CREATE INDEX fencing_log_at ON fencing_log (at_ms);
",
    },
    Migration {
        version: 4,
        description: "spaces and their subnets",
        sql: "
CREATE TABLE space (
    name TEXT NOT NULL,
    cidr TEXT NOT NULL,
    PRIMARY KEY (name, cidr)
);
",
    },
    Migration {
        version: 5,
        description: "workload machines for the compute provisioner",
        sql: "
CREATE TABLE machine (
    id INTEGER PRIMARY KEY,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'provisioning', 'started', 'dying')),
    spaces TEXT NOT NULL DEFAULT '',
    instance_id TEXT NOT NULL DEFAULT '',
    addresses TEXT NOT NULL DEFAULT '',
    provisioned_by TEXT NOT NULL DEFAULT ''
);
",
    },
];

/// The newest schema version this build knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("cannot create the schema_version table: {0}")]
    CreateVersionTable(#[source] ClientError),
    #[error("cannot read the schema version: {0}")]
    ReadVersion(#[source] ClientError),
    #[error("the database is at schema version {found}, newer than this agent's {known}")]
    Newer { found: i64, known: i64 },
    #[error("migration {version} did not apply within {waited:?}; last error: {last}")]
    Stuck {
        version: i64,
        waited: Duration,
        last: String,
    },
}

/// What one applier saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The versions whose transaction this applier committed.
    pub by_me: Vec<i64>,
    /// The version the database is at now.
    pub version: i64,
}

/// A SQL string literal: `text` in single quotes, quotes doubled. Used where a multi-
/// statement text cannot carry parameters.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The one SQL text that applies `migration` and records it, or fails as a whole.
pub fn migration_text(migration: &Migration, applied_by: &str) -> String {
    format!(
        "BEGIN;\nINSERT INTO schema_version (version, description, applied_by) VALUES ({}, {}, {});\n{}\nCOMMIT;",
        migration.version,
        quote(migration.description),
        quote(applied_by),
        migration.sql.trim()
    )
}

/// The schema version and who applied each version.
pub async fn versions(client: &mut Client) -> Result<Vec<(i64, String)>, ClientError> {
    let rows = client
        .query(
            DATABASE,
            "SELECT version, applied_by FROM schema_version ORDER BY version",
            &[],
        )
        .await?;
    Ok(rows
        .rows
        .into_iter()
        .filter_map(|row| match row.as_slice() {
            [Value::Integer(version), Value::Text(by)] => Some((*version, by.clone())),
            _ => None,
        })
        .collect())
}

/// Brings the controller database to [`latest_version`], applying each missing migration
/// at most once across every controller. `applied_by` names this applier in
/// `schema_version`, which is how an outcome-unknown commit is recognised as one's own.
pub async fn migrate(
    client: &mut Client,
    applied_by: &str,
    give_up_after: Duration,
) -> Result<Applied, SchemaError> {
    // Idempotent and one statement: safe to send again whatever happened.
    client
        .exec(
            DATABASE,
            "CREATE TABLE IF NOT EXISTS schema_version (
                version INTEGER PRIMARY KEY,
                description TEXT NOT NULL,
                applied_by TEXT NOT NULL,
                applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
            )",
            &[],
        )
        .await
        .map_err(SchemaError::CreateVersionTable)?;
    let known = latest_version();
    let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
    let mut stuck_since: Option<(i64, Instant)> = None;
    loop {
        let applied = versions(client).await.map_err(SchemaError::ReadVersion)?;
        let current = applied.last().map_or(0, |(v, _)| *v);
        if current > known {
            return Err(SchemaError::Newer {
                found: current,
                known,
            });
        }
        if current == known {
            let by_me = applied
                .iter()
                .filter(|(_, by)| by == applied_by)
                .map(|(v, _)| *v)
                .collect();
            return Ok(Applied {
                by_me,
                version: current,
            });
        }
        let next = MIGRATIONS
            .iter()
            .find(|m| m.version == current + 1)
            .expect("migrations are numbered 1, 2, 3, ... without gaps");
        match stuck_since {
            Some((version, _)) if version == next.version => {}
            _ => {
                stuck_since = Some((next.version, Instant::now()));
                backoff.reset();
            }
        }
        match client
            .exec(DATABASE, &migration_text(next, applied_by), &[])
            .await
        {
            Ok(_) => {
                log::info!(
                    "applied schema migration {} ({})",
                    next.version,
                    next.description
                );
            }
            Err(error) => {
                // Another applier's transaction won, holds the lock, or ours may have
                // committed: the version table says which, never a resend.
                log::debug!(
                    "schema migration {} not applied by this call: {error}",
                    next.version
                );
                let (_, since) = stuck_since.expect("set above");
                if since.elapsed() >= give_up_after {
                    return Err(SchemaError::Stuck {
                        version: next.version,
                        waited: since.elapsed(),
                        last: error.to_string(),
                    });
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_without_gaps() {
        for (i, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, i as i64 + 1, "{}", migration.description);
            let upper = migration.sql.to_uppercase();
            // The applier owns the transaction; a migration that opens or ends one would
            // commit half of itself.
            for word in ["BEGIN", "COMMIT", "ROLLBACK"] {
                assert!(
                    !upper.contains(word),
                    "migration {} uses {word}",
                    migration.version
                );
            }
        }
        assert_eq!(latest_version(), MIGRATIONS.len() as i64);
    }

    #[test]
    fn the_version_row_comes_before_the_changes() {
        let text = migration_text(&MIGRATIONS[0], "controller-0's");
        let insert = text
            .find("INSERT INTO schema_version")
            .expect("version insert");
        let create = text.find("CREATE TABLE").expect("changes");
        assert!(text.starts_with("BEGIN;"));
        assert!(insert < create);
        assert!(text.ends_with("COMMIT;"));
        assert!(text.contains("'controller-0''s'"), "{text}");
    }

    #[test]
    fn quote_table() {
        let check = |input: &str, expected: &str| assert_eq!(quote(input), expected);
        check("", "''");
        check("10.0.0.1:17070", "'10.0.0.1:17070'");
        check("it's", "'it''s'");
        check("''", "''''''");
    }
}
