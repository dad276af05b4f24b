//! How a worker reaches the controller database: only through what the dbaccessor worker
//! publishes ("database available", while its node is a member), with the schema brought
//! up to date before first use.

use std::time::Duration;

use dbaccessor::Database;
use dqlite::client::{Client, Options};
use tokio::sync::watch;

use crate::host::Stop;
use crate::schema;

/// Waits until the database is available (or the worker is told to stop: `Ok(None)`), then
/// connects to the leader and brings the schema up to date. `applied_by` names the caller
/// in `schema_version`.
pub async fn open(
    available: &mut watch::Receiver<Option<Database>>,
    stop: &mut Stop,
    applied_by: &str,
) -> anyhow::Result<Option<Client>> {
    let (members, tls) = tokio::select! {
        database = available.wait_for(Option::is_some) => match database {
            Ok(database) => database
                .as_ref()
                .map(|d| (d.members.clone(), d.tls.clone()))
                .unwrap_or_default(),
            Err(_) => anyhow::bail!("the dbaccessor is gone"),
        },
        () = stop.requested() => return Ok(None),
    };
    // Finding the leader and migrating can take a while on a sick cluster: a stop request
    // must not wait for them.
    let connect = async {
        let options = Options { tls, ..options() };
        let mut client = Client::connect_leader(&members, options).await?;
        schema::migrate(&mut client, applied_by, Duration::from_secs(60)).await?;
        anyhow::Ok(client)
    };
    tokio::select! {
        client = connect => client.map(Some),
        () = stop.requested() => Ok(None),
    }
}

/// Client options for the agent's workers: a failed request is reported within seconds
/// (the worker then restarts with back-off), rather than after the default 30 s.
pub fn options() -> Options {
    Options {
        retry_timeout: Duration::from_secs(10),
        ..Options::default()
    }
}
