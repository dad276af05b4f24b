//! A local stand-in for the parts of Juju a charm talks to. Today: the hook-tool emulator and
//! the hook runner; the model simulator (machines, spaces, many units, dbaccessors) grows
//! from the same model and runner.
//!
//! - [`model`]: the model a hook sees (units, leadership, relation bags, network info,
//!   config, statuses, actions, logs), plain serde data.
//! - [`store`]: the model's JSON file, locked against concurrent tool processes.
//! - [`tools`]: the hook tools (`network-get`, `relation-get`, ...) answered from the model
//!   with Juju's output formats, error texts and exit codes.
//! - [`runner`]: runs a unit's `dispatch` with Juju's exact environment and commits or
//!   discards its relation writes.
//! - [`responder`]: a stand-in for the controller agent's reload socket.
//!
//! The `juju-hook-tool` binary is the tools' process: one executable answering under each
//! tool's name.
#![forbid(unsafe_code)]

pub mod model;
pub mod responder;
pub mod runner;
pub mod store;
pub mod tools;

pub use model::{NetworkInfo, State};
pub use runner::{locate_hook_tool, Invocation, Outcome, Runner};
pub use store::Store;
