//! The controller agent (`jujud-controller`): one process per controller machine hosting
//! named workers under a small dependency engine.
//!
//! - [`host`]: the worker host: dependency order, restart with back-off, stop in reverse.
//! - [`addresses`]: the API address updater (`apiaddresses` in `agent.conf`).
//! - [`apicaller`]: a machine agent's API connection: shuffled staggered dial, address
//!   watch, reconnect.
//! - [`apiserver`]: HTTPS on :17070, `POST /login` with the current API addresses, the
//!   address watch.
//! - [`ca`]: the controller CA and the certificates it signs (the dbaccessor's module,
//!   since its Dqlite node needs the CA before the API server runs).
//! - [`cleanup`]: the controller-member clean-up, a singular worker that removes departed
//!   controllers' rows (fenced; only on positive knowledge: their node left the cluster).
//! - [`database`]: a worker's way to the database: wait for "available", connect, migrate.
//! - [`identity`]: the CA, the controller UUID and the bootstrap admin, each written once.
//! - [`leadership`]: application leadership for this machine's units: a tracker per unit
//!   claims and extends the `application-leadership` lease through the API and writes the
//!   unit's `leadership.json` (leader until a monotonic deadline).
//! - [`lease`]: the lease store (claim, extend, revoke, expire, pin) on the database's
//!   clock, and fenced writes.
//! - [`provisioner`]: the compute provisioner, a singular worker that starts and stops
//!   workload machines' instances through the cloud command, every write fenced.
//! - [`publisher`]: this controller's API addresses into `controller_api_address`.
//! - [`schema`]: the controller database's tables, by migrations applied exactly once.
//! - [`singular`]: the lease manager and singular runner (the `singular-controller`
//!   lease, its deadline) and the fenced singular heartbeat worker.
//! - [`workers`]: the agent's workers: the dbaccessor (the Dqlite node; it alone hands
//!   out the database, once the node is a member).
#![forbid(unsafe_code)]

pub mod addresses;
pub mod apicaller;
pub mod apiserver;
pub use dbaccessor::ca;
pub mod cleanup;
pub mod database;
pub mod host;
pub mod identity;
pub mod leadership;
pub mod lease;
pub mod provisioner;
pub mod publisher;
pub mod schema;
pub mod singular;
pub mod workers;
