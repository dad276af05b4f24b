//! The controller schema on a real 3-node cluster: three appliers at once apply every
//! migration exactly once, and a late applier finds nothing to do.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use agent::schema::{self, DATABASE};
use dqlite::wire::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_appliers_at_once_apply_every_migration_exactly_once() {
    let cluster = support::Cluster::start(1, 3).await;
    let mut tasks = Vec::new();
    for controller in 0..3 {
        // Each applier with its own client, as three agents would be.
        let mut client = cluster.client().await;
        tasks.push(tokio::spawn(async move {
            let name = format!("controller-{controller}");
            let applied = schema::migrate(&mut client, &name, Duration::from_secs(30)).await;
            (name, applied)
        }));
    }
    let mut by_me = Vec::new();
    for task in tasks {
        let (name, applied) = task.await.expect("applier task");
        let applied = applied.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(applied.version, schema::latest_version(), "{name}");
        by_me.extend(applied.by_me.iter().map(|v| (*v, name.clone())));
    }
    // Each version committed by exactly one applier (a version committed twice would have
    // failed its second CREATE TABLE, or shown up twice here).
    let versions: Vec<i64> = by_me.iter().map(|(v, _)| *v).collect();
    let distinct: BTreeSet<i64> = versions.iter().copied().collect();
    assert_eq!(versions.len(), distinct.len(), "{by_me:?}");
    assert_eq!(
        distinct,
        (1..=schema::latest_version()).collect::<BTreeSet<i64>>()
    );

    let mut client = cluster.client().await;
    let recorded = schema::versions(&mut client).await.expect("versions");
    let mut expected = by_me.clone();
    expected.sort();
    assert_eq!(recorded, expected);
    // Migration 1's seed row exists once.
    let rows = client
        .query(DATABASE, "SELECT key, value FROM controller_config", &[])
        .await
        .expect("controller_config");
    assert_eq!(
        rows.rows,
        vec![vec![
            Value::Text("juju-mgmt-space".into()),
            Value::Text(String::new())
        ]]
    );
    // A late applier (a restarted agent) finds the schema current and applies nothing.
    let late = schema::migrate(&mut client, "controller-3", Duration::from_secs(5))
        .await
        .expect("late applier");
    assert!(late.by_me.is_empty());
    assert_eq!(late.version, schema::latest_version());
    cluster.stop().await;
}
