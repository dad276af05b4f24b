//! The controller-member clean-up: a singular worker (only the `singular-controller` lease
//! holder runs it) that removes the control-plane rows (`controller_node`,
//! `controller_api_address`) of controllers that left the Dqlite cluster.
//!
//! Unknown is not gone: a controller's rows go only when its `controller_node` row names a
//! Dqlite node id that is no longer in the cluster configuration. That is positive
//! knowledge (the dbaccessor removes a node only when its controller departed the peer
//! relation or the model removed it). The rows are read before the configuration, and
//! each delete is conditional on the node id read, so a controller that joined (or
//! re-joined with a new node id) meanwhile keeps its rows. Every delete is fenced by the
//! lease token, so a former holder cannot remove anything.
//!
//! Not here: removing departed members from the Dqlite configuration itself, which the
//! dbaccessor does on the Dqlite leader (it needs the raft configuration change, and it
//! runs before the controller agent's database is even available).

use std::time::Duration;

use controller_contract::describe_error;
use dbaccessor::Database;
use dqlite::client::Client;
use dqlite::wire::Value;
use tokio::sync::watch;

use crate::database;
use crate::host::{Stop, WorkerSpec};
use crate::lease::{self, FencedWrite};
use crate::schema::DATABASE;
use crate::singular::Fence;

/// The worker's name.
pub const NAME: &str = "controller-cleanup";

/// The `(controller id, Dqlite node id)` rows of `controller_node` whose node id is not
/// among `members` (the cluster configuration's node ids).
pub fn departed(rows: &[(String, i64)], members: &[u64]) -> Vec<(String, i64)> {
    rows.iter()
        // The node id is stored as the bits of the u64 (see `publisher::replace_text`).
        .filter(|(_, node_id)| !members.contains(&(*node_id as u64)))
        .cloned()
        .collect()
}

/// The fenced statements that remove one departed controller's rows, in order (addresses
/// first: the node row is what a retry finds them by), each only while its
/// `controller_node` row still names the departed node id. Parameters: `?6` the controller
/// id, `?7` the node id.
pub fn sweep_statements() -> [String; 2] {
    let holds = lease::holds_condition();
    [
        format!(
            "DELETE FROM controller_api_address WHERE controller_id = ?6 AND EXISTS \
               (SELECT 1 FROM controller_node WHERE controller_id = ?6 AND dqlite_node_id = ?7) \
             AND {holds}"
        ),
        format!(
            "DELETE FROM controller_node WHERE controller_id = ?6 AND dqlite_node_id = ?7 \
             AND {holds}"
        ),
    ]
}

/// What one sweep did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sweep {
    /// These controllers' rows were removed (perhaps none).
    Removed(Vec<String>),
    /// The database refused the token: this grant is over.
    Stale,
}

/// Removes the rows of controllers whose node left the cluster configuration.
pub async fn sweep(client: &mut Client, fence: &Fence) -> anyhow::Result<Sweep> {
    // Rows first, configuration second: see the module doc.
    let rows: Vec<(String, i64)> = client
        .query(
            DATABASE,
            "SELECT controller_id, dqlite_node_id FROM controller_node",
            &[],
        )
        .await?
        .rows
        .into_iter()
        .filter_map(|row| match row.as_slice() {
            [Value::Text(id), Value::Integer(node_id)] => Some((id.clone(), *node_id)),
            _ => None,
        })
        .collect();
    let members: Vec<u64> = client.cluster().await?.iter().map(|n| n.id).collect();
    let mut removed = Vec::new();
    for (controller_id, node_id) in departed(&rows, &members) {
        let params = [Value::Text(controller_id.clone()), Value::Integer(node_id)];
        for sql in sweep_statements() {
            match lease::exec_fenced(client, &fence.key, &fence.token, &sql, &params).await? {
                FencedWrite::Applied(_) => {}
                FencedWrite::Stale => return Ok(Sweep::Stale),
            }
        }
        removed.push(controller_id);
    }
    Ok(Sweep::Removed(removed))
}

/// The clean-up as a singular worker of one grant, sweeping every `every`.
pub fn worker(
    fence: Fence,
    every: Duration,
    available: watch::Receiver<Option<Database>>,
) -> WorkerSpec {
    WorkerSpec::new(NAME, &[], move |stop| {
        run(fence.clone(), every, available.clone(), stop)
    })
}

/// Sweeps until told to stop, or until the database refuses the token.
pub async fn run(
    fence: Fence,
    every: Duration,
    mut available: watch::Receiver<Option<Database>>,
    mut stop: Stop,
) -> anyhow::Result<()> {
    let who = format!("{NAME} of {}", fence.token);
    let Some(mut client) = database::open(&mut available, &mut stop, &who).await? else {
        return Ok(());
    };
    loop {
        let swept = tokio::select! {
            swept = sweep(&mut client, &fence) => swept,
            () = stop.requested() => return Ok(()),
        };
        match swept {
            Ok(Sweep::Removed(gone)) if gone.is_empty() => {}
            Ok(Sweep::Removed(gone)) => log::info!(
                "{who}: removed the rows of departed controllers {}",
                gone.join(", ")
            ),
            Ok(Sweep::Stale) => {
                log::warn!("{who}: the database refused the token; acting no more");
                stop.requested().await;
                return Ok(());
            }
            // Whatever happened, the next round reads again; nothing is removed on doubt.
            Err(e) => log::warn!(
                "{who}: cannot sweep departed controllers: {}",
                describe_error(e.as_ref())
            ),
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

    #[test]
    fn departed_table() {
        let check = |rows: &[(&str, i64)], members: &[u64], expected: &[(&str, i64)]| {
            let rows: Vec<(String, i64)> = rows.iter().map(|(i, n)| ((*i).into(), *n)).collect();
            let expected: Vec<(String, i64)> =
                expected.iter().map(|(i, n)| ((*i).into(), *n)).collect();
            assert_eq!(departed(&rows, members), expected, "{rows:?} {members:?}");
        };
        check(&[], &[1], &[]);
        check(&[("0", 1), ("1", 22)], &[1, 22], &[]);
        check(&[("0", 1), ("1", 22), ("2", 33)], &[1, 33], &[("1", 22)]);
        // A node id above i64::MAX is stored as its bits and still matches.
        check(&[("3", -2)], &[u64::MAX - 1], &[]);
        check(&[("3", -2)], &[], &[("3", -2)]);
    }

    #[test]
    fn each_delete_is_fenced_and_bound_to_the_departed_node_id() {
        let [addresses, node] = sweep_statements();
        for sql in [&addresses, &node] {
            assert!(sql.contains(&lease::holds_condition()), "{sql}");
            assert!(sql.contains("dqlite_node_id = ?7"), "{sql}");
        }
        assert!(addresses.starts_with("DELETE FROM controller_api_address"));
        assert!(node.starts_with("DELETE FROM controller_node"));
    }
}
