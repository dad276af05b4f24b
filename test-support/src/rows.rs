//! The rows the cluster tests write and read back: table `t (n INTEGER PRIMARY KEY)` in
//! database `test`, through the workspace's dqlite client.

use dqlite::client::{Client, Rows};
use dqlite::wire::Value;

/// Creates the test table when it does not exist yet.
pub async fn create_table(client: &mut Client) {
    client
        .exec(
            "test",
            "CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY)",
            &[],
        )
        .await
        .expect("the test table exists");
}

/// Creates the test table and inserts rows `range`, each once (a row already there fails
/// the test).
pub async fn insert(client: &mut Client, range: std::ops::Range<i64>) {
    create_table(client).await;
    for n in range {
        client
            .exec("test", "INSERT INTO t (n) VALUES (?)", &[Value::Integer(n)])
            .await
            .unwrap_or_else(|e| panic!("row {n} is not inserted: {e:?}"));
    }
}

/// Every `n` in the test table, in order.
pub async fn read(client: &mut Client) -> Vec<i64> {
    let rows = client
        .query("test", "SELECT n FROM t ORDER BY n", &[])
        .await
        .expect("the test table reads");
    integers(&rows)
}

/// The first column of `rows`, as integers.
pub fn integers(rows: &Rows) -> Vec<i64> {
    rows.rows
        .iter()
        .map(|row| row[0].as_i64().expect("an integer column"))
        .collect()
}
