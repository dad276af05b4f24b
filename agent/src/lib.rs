//! The controller agent (`jujud-controller`): one process per controller machine hosting
//! named workers under a small dependency engine.
//!
//! - [`host`]: the worker host: dependency order, restart with back-off, stop in reverse.
//! - [`ca`]: the controller CA and the server certificates it signs.
//! - [`database`]: a worker's way to the database: wait for "available", connect, migrate.
//! - [`publisher`]: this controller's API addresses into `controller_api_address`.
//! - [`schema`]: the controller database's tables, by migrations applied exactly once.
//! - [`workers`]: the agent's workers: the dbaccessor (the Dqlite node; it alone hands
//!   out the database, once the node is a member).
#![forbid(unsafe_code)]

pub mod ca;
pub mod database;
pub mod host;
pub mod publisher;
pub mod schema;
pub mod workers;
