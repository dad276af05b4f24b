//! The API address publisher: this controller's API addresses (its machine's IPs with the
//! API port, each with Juju's scope and whether agents may use it) written into
//! `controller_api_address`, at start and whenever they change. Only this controller's rows
//! are replaced; its `controller_node` row (node id, Dqlite bind address) is kept too.
//!
//! The host's addresses are polled (a fixed interval); netlink would be quicker to notice.
//!
//! The rows of controllers that left are removed by the singular controller-member
//! clean-up ([`crate::cleanup`]), not here: one controller does it, fenced by its lease.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use controller_contract::scope::scope;
use dbaccessor::Database;
use tokio::sync::watch;

use crate::database;
use crate::host::{Stop, WorkerSpec};
use crate::schema::{quote, DATABASE};
use crate::workers::DBACCESSOR;

/// The worker's name.
pub const NAME: &str = "api-address-publisher";

/// One row of `controller_api_address` for this controller.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiAddress {
    /// `host:port`, IPv6 bracketed.
    pub value: String,
    /// Juju's scope name (`local-cloud`, `public`, `local-machine`, ...).
    pub scope: &'static str,
    /// The space; empty while the agent does not know its machine's spaces.
    pub space: String,
    /// Whether agents may dial it: machine-local and link-local are for local clients only.
    pub is_agent: bool,
}

/// The rows for a machine's IPs: every unicast address once, sorted, classified.
pub fn api_addresses(ips: &[IpAddr], port: u16) -> Vec<ApiAddress> {
    let ips: BTreeSet<IpAddr> = ips.iter().map(|ip| ip.to_canonical()).collect();
    ips.into_iter()
        .filter(|ip| !ip.is_unspecified() && !ip.is_multicast())
        .map(|ip| {
            let scope = scope(ip);
            ApiAddress {
                value: controller_contract::ip_port(ip, port),
                scope: scope.juju_name(),
                space: String::new(),
                is_agent: scope.usable_by_agents(),
            }
        })
        .collect()
}

/// The one transaction that replaces this controller's rows (and nobody else's).
pub fn replace_text(controller_id: &str, database: &Database, rows: &[ApiAddress]) -> String {
    let id = quote(controller_id);
    let mut text =
        format!("BEGIN;\nDELETE FROM controller_api_address WHERE controller_id = {id};\n");
    for row in rows {
        text.push_str(&format!(
            "INSERT INTO controller_api_address (controller_id, value, scope, space, is_agent) VALUES ({id}, {}, {}, {}, {});\n",
            quote(&row.value),
            quote(row.scope),
            quote(&row.space),
            i64::from(row.is_agent)
        ));
    }
    text.push_str(&format!(
        "INSERT OR REPLACE INTO controller_node (controller_id, dqlite_node_id, bind_address) VALUES ({id}, {}, {});\nCOMMIT;",
        // SQLite integers are signed 64-bit; a raft id above that is stored as its bits.
        database.node_id as i64,
        quote(&database.own_address)
    ));
    text
}

/// Where the machine's addresses come from (the real host, or a test's script).
pub type AddressSource = Arc<dyn Fn() -> std::io::Result<Vec<IpAddr>> + Send + Sync>;

/// The machine's interface addresses.
pub fn host_addresses() -> std::io::Result<Vec<IpAddr>> {
    Ok(if_addrs::get_if_addrs()?
        .into_iter()
        .map(|interface| interface.ip())
        .collect())
}

/// The publisher's settings.
#[derive(Clone)]
pub struct Settings {
    /// This controller's id (the agent id).
    pub controller_id: String,
    /// The API server's port (17070).
    pub api_port: u16,
    /// How often the machine's addresses are read again.
    pub poll: Duration,
    /// The machine's addresses.
    pub source: AddressSource,
}

/// The publisher as a worker of the host, after the dbaccessor.
pub fn worker(settings: Settings, available: watch::Receiver<Option<Database>>) -> WorkerSpec {
    WorkerSpec::new(NAME, &[DBACCESSOR], move |stop| {
        run(settings.clone(), available.clone(), stop)
    })
}

/// Publishes until told to stop; a database error ends the run (the host restarts it).
pub async fn run(
    settings: Settings,
    mut available: watch::Receiver<Option<Database>>,
    mut stop: Stop,
) -> anyhow::Result<()> {
    let who = format!("controller-{}", settings.controller_id);
    let Some(mut client) = database::open(&mut available, &mut stop, &who).await? else {
        return Ok(());
    };
    let mut published: Option<(Vec<ApiAddress>, Database)> = None;
    loop {
        let database = available.borrow().clone();
        let Some(database) = database else {
            anyhow::bail!("the database is no longer available");
        };
        match (settings.source)() {
            Ok(ips) => {
                let rows = api_addresses(&ips, settings.api_port);
                let now = (rows, database);
                if published.as_ref() != Some(&now) {
                    let text = replace_text(&settings.controller_id, &now.1, &now.0);
                    match client.exec(DATABASE, &text, &[]).await {
                        Ok(_) => {
                            log::info!(
                                "published API addresses {}",
                                now.0
                                    .iter()
                                    .map(|a| format!("{} ({})", a.value, a.scope))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            );
                            published = Some(now);
                        }
                        // Replacing one's own rows is idempotent: whatever happened, the
                        // next round writes them again (the client found the leader anew).
                        Err(e) if e.outcome_unknown() => {
                            log::warn!("publishing API addresses may not have committed: {e}");
                            published = None;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            // Unknown is not gone: the rows already published stay.
            Err(e) => log::warn!("cannot read this machine's addresses: {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(settings.poll) => {}
            () = stop.requested() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ips: &[&str], expected: &[(&str, &str, bool)]) {
        let ips: Vec<IpAddr> = ips.iter().map(|ip| ip.parse().expect("test ip")).collect();
        let got: Vec<(String, &str, bool)> = api_addresses(&ips, 17070)
            .into_iter()
            .map(|a| (a.value, a.scope, a.is_agent))
            .collect();
        let expected: Vec<(String, &str, bool)> = expected
            .iter()
            .map(|(v, s, a)| ((*v).to_owned(), *s, *a))
            .collect();
        assert_eq!(got, expected, "{ips:?}");
    }

    #[test]
    fn api_addresses_table() {
        check(&[], &[]);
        check(
            &["10.0.0.5", "127.0.0.1", "::1", "fe80::1", "203.0.113.9"],
            &[
                ("10.0.0.5:17070", "local-cloud", true),
                ("127.0.0.1:17070", "local-machine", false),
                ("203.0.113.9:17070", "public", true),
                ("[::1]:17070", "local-machine", false),
                ("[fe80::1]:17070", "link-local", false),
            ],
        );
        // Duplicates (an IPv4-mapped IPv6 form too) once; unspecified and multicast never.
        check(
            &[
                "10.0.0.5",
                "::ffff:10.0.0.5",
                "0.0.0.0",
                "224.0.0.1",
                "169.254.3.4",
            ],
            &[
                ("10.0.0.5:17070", "local-cloud", true),
                ("169.254.3.4:17070", "link-local", false),
            ],
        );
    }

    #[test]
    fn the_replacement_touches_only_this_controllers_rows() {
        let database = Database {
            node_id: 42,
            own_address: "10.0.0.5:17666".into(),
            members: vec!["10.0.0.5:17666".into()],
            tls: None,
        };
        let rows = api_addresses(&["10.0.0.5".parse().expect("ip")], 17070);
        let text = replace_text("1", &database, &rows);
        assert!(text
            .starts_with("BEGIN;\nDELETE FROM controller_api_address WHERE controller_id = '1';"));
        assert!(text.contains("VALUES ('1', '10.0.0.5:17070', 'local-cloud', '', 1);"));
        assert!(text.contains("VALUES ('1', 42, '10.0.0.5:17666');"));
        assert!(text.ends_with("COMMIT;"));
    }
}
