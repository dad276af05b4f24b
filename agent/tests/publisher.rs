//! The API address publisher against a real node: each controller's rows replaced when its
//! machine's addresses change, the others' left alone, nothing published before the
//! database is available. And the singular controller-member clean-up: departed
//! controllers' rows removed by the lease holder only, a member's rows kept.

mod support;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::cleanup;
use agent::host::Stop;
use agent::lease::{self, Claim, LeaseKey};
use agent::publisher::{self, Settings};
use agent::schema::DATABASE;
use agent::singular::Fence;
use dbaccessor::Database;
use dqlite::client::Client;
use dqlite::wire::Value;

type Rows = Vec<(String, String, String, bool)>;

async fn rows(client: &mut Client) -> Rows {
    let result = client
        .query(
            DATABASE,
            "SELECT controller_id, value, scope, is_agent FROM controller_api_address ORDER BY controller_id, value",
            &[],
        )
        .await;
    let Ok(result) = result else {
        return Vec::new();
    };
    result
        .rows
        .into_iter()
        .map(|row| match row.as_slice() {
            [Value::Text(id), Value::Text(value), Value::Text(scope), Value::Boolean(agent)] => {
                (id.clone(), value.clone(), scope.clone(), *agent)
            }
            other => panic!("unexpected row {other:?}"),
        })
        .collect()
}

async fn wait_for_rows(client: &mut Client, expected: &Rows) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = rows(client).await;
        if now == *expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rows {now:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn row(id: &str, value: &str, scope: &str, agent: bool) -> (String, String, String, bool) {
    (id.into(), value.into(), scope.into(), agent)
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|ip| ip.parse().expect("test ip")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_controller_replaces_only_its_own_rows_when_its_addresses_change() {
    let cluster = support::Cluster::start(2, 1).await;
    let database = Database {
        node_id: cluster.apps[0].id(),
        own_address: cluster.addresses[0].clone(),
        members: cluster.addresses.clone(),
        tls: None,
    };
    let (available_tx, available) = tokio::sync::watch::channel(None);

    let machine0 = Arc::new(Mutex::new(ips(&["10.0.0.10", "127.0.0.1", "fe80::10"])));
    let source0 = machine0.clone();
    let settings = |id: &str, source: publisher::AddressSource| Settings {
        controller_id: id.into(),
        api_port: 17070,
        poll: Duration::from_millis(50),
        source,
    };
    let (stop0_tx, stop0) = Stop::new();
    let (stop1_tx, stop1) = Stop::new();
    let first = tokio::spawn(publisher::run(
        settings(
            "0",
            Arc::new(move || Ok(source0.lock().expect("lock").clone())),
        ),
        available.clone(),
        stop0,
    ));
    let second = tokio::spawn(publisher::run(
        settings("1", Arc::new(|| Ok(ips(&["10.0.0.11"])))),
        available.clone(),
        stop1,
    ));
    // Nothing happens before the dbaccessor says the database is available: the schema is
    // not even there.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut client = cluster.client().await;
    assert!(client
        .query(DATABASE, "SELECT * FROM controller_api_address", &[])
        .await
        .is_err());
    available_tx.send_replace(Some(database));

    wait_for_rows(
        &mut client,
        &vec![
            row("0", "10.0.0.10:17070", "local-cloud", true),
            row("0", "127.0.0.1:17070", "local-machine", false),
            row("0", "[fe80::10]:17070", "link-local", false),
            row("1", "10.0.0.11:17070", "local-cloud", true),
        ],
    )
    .await;

    // Machine 0 gets a new address and loses one: only its rows change.
    *machine0.lock().expect("lock") = ips(&["10.0.0.20", "127.0.0.1"]);
    wait_for_rows(
        &mut client,
        &vec![
            row("0", "10.0.0.20:17070", "local-cloud", true),
            row("0", "127.0.0.1:17070", "local-machine", false),
            row("1", "10.0.0.11:17070", "local-cloud", true),
        ],
    )
    .await;

    let nodes = client
        .query(
            DATABASE,
            "SELECT controller_id, bind_address FROM controller_node ORDER BY controller_id",
            &[],
        )
        .await
        .expect("controller_node");
    assert_eq!(nodes.rows.len(), 2);

    stop0_tx.send_replace(true);
    stop1_tx.send_replace(true);
    first.await.expect("task").expect("stops cleanly");
    second.await.expect("task").expect("stops cleanly");
    cluster.stop().await;
}

/// The controller ids of `controller_node`.
async fn node_ids(client: &mut Client) -> Vec<String> {
    let nodes = client
        .query(
            DATABASE,
            "SELECT controller_id FROM controller_node ORDER BY controller_id",
            &[],
        )
        .await
        .expect("controller_node");
    nodes
        .rows
        .iter()
        .filter_map(|row| match row.first() {
            Some(Value::Text(id)) => Some(id.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn departed_controllers_rows_go_by_the_lease_holder_only() {
    let cluster = support::Cluster::start(6, 1).await;
    let database = Database {
        node_id: cluster.apps[0].id(),
        own_address: cluster.addresses[0].clone(),
        members: cluster.addresses.clone(),
        tls: None,
    };
    let (_available_tx, available) = tokio::sync::watch::channel(Some(database));
    let mut client = cluster.client().await;
    agent::schema::migrate(&mut client, "test", Duration::from_secs(30))
        .await
        .expect("schema");
    let key = LeaseKey::singular_controller();
    let token = match lease::claim(&mut client, &key, "controller-0", Duration::from_secs(60))
        .await
        .expect("claim")
    {
        Claim::Held(held) => held.token,
        Claim::Taken(other) => panic!("taken: {other:?}"),
    };
    let fence = Fence {
        key: key.clone(),
        token: token.clone(),
    };
    let (stop_tx, stop) = Stop::new();
    let worker = tokio::spawn(cleanup::run(
        fence,
        Duration::from_millis(50),
        available,
        stop,
    ));

    // Controller 9's node left the Dqlite configuration: the holder's clean-up sweeps its
    // rows away. A row naming a member's node id stays, whoever wrote it.
    let member = cluster.apps[0].id() as i64;
    client
        .exec(
            DATABASE,
            &format!(
                "BEGIN;
                 INSERT INTO controller_node VALUES ('9', 987654321, '10.0.0.19:17666');
                 INSERT INTO controller_api_address VALUES ('9', '10.0.0.19:17070', 'local-cloud', '', 1);
                 INSERT INTO controller_node VALUES ('8', {member}, '10.0.0.18:17666');
                 INSERT INTO controller_api_address VALUES ('8', '10.0.0.18:17070', 'local-cloud', '', 1);
                 COMMIT;"
            ),
            &[],
        )
        .await
        .expect("rows of controllers 8 and 9");
    wait_for_rows(
        &mut client,
        &vec![row("8", "10.0.0.18:17070", "local-cloud", true)],
    )
    .await;
    assert_eq!(node_ids(&mut client).await, ["8"]);

    // The grant ends (revoked: another controller may hold it now): the worker's next
    // delete is refused and it acts no more; a departed controller's rows stay for the
    // next holder.
    assert!(lease::revoke(&mut client, &key, &token)
        .await
        .expect("revoke"));
    client
        .exec(
            DATABASE,
            "BEGIN;
             INSERT INTO controller_node VALUES ('7', 123456789, '10.0.0.17:17666');
             INSERT INTO controller_api_address VALUES ('7', '10.0.0.17:17070', 'local-cloud', '', 1);
             COMMIT;",
            &[],
        )
        .await
        .expect("rows of controller 7");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(node_ids(&mut client).await, ["7", "8"]);
    assert_eq!(rows(&mut client).await.len(), 2);
    assert!(!worker.is_finished(), "a stale worker waits to be stopped");
    stop_tx.send_replace(true);
    worker.await.expect("task").expect("stops cleanly");
    cluster.stop().await;
}
