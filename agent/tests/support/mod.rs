//! Test support: a real Dqlite cluster of the `dqlite` crate's nodes in this process, each
//! on its own loopback address in the agent tests' range (127.60.0.0/16, one /24 per
//! scenario), and clients of it.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::time::Duration;

use dqlite::app::{App, AppConfig};
use dqlite::client::{Client, Options};

/// Node `host`'s address in scenario `scenario`: 127.60.<scenario>.<host>:17666.
pub fn address(scenario: u8, host: u8) -> String {
    format!("127.60.{scenario}.{host}:17666")
}

/// A running cluster; its nodes stop (without hand-over) when it is dropped.
pub struct Cluster {
    pub apps: Vec<App>,
    pub addresses: Vec<String>,
    /// Holds the data dirs.
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    /// Bootstraps node 1 and joins the others through it; returns once every node is ready.
    pub async fn start(scenario: u8, size: u8) -> Cluster {
        let mut apps = Vec::new();
        let mut dirs = Vec::new();
        let mut addresses = Vec::new();
        for host in 1..=size {
            let dir = tempfile::tempdir().expect("tempdir");
            let address = address(scenario, host);
            let mut config = AppConfig::new(dir.path(), address.clone());
            config.peers = addresses.first().cloned().into_iter().collect();
            config.role_interval = Duration::from_millis(100);
            config.join_timeout = Duration::from_secs(20);
            let app = App::start(config).await.expect("node starts");
            app.ready(Duration::from_secs(20))
                .await
                .expect("node ready");
            apps.push(app);
            dirs.push(dir);
            addresses.push(address);
        }
        Cluster {
            apps,
            addresses,
            _dirs: dirs,
        }
    }

    /// A client of its own, connected to the leader.
    pub async fn client(&self) -> Client {
        Client::connect_leader(&self.addresses, Options::default())
            .await
            .expect("a leader is found")
    }

    /// Stops every node with a hand-over.
    pub async fn stop(self) {
        for app in self.apps {
            let _ = app.stop().await;
        }
    }
}
