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
//! The HA simulator on top (the `juju-sim` binary):
//! - [`charm`]: a charm's endpoints, options and actions (metadata.yaml or charmcraft.yaml,
//!   config.yaml, actions.yaml) and Juju's rules for config values and action parameters.
//! - [`mounts`]: each machine's private mount namespace, `/var/lib/juju` its data dir.
//! - [`world`]: spaces, machines, NICs, bindings, hook queues; the pure decisions (addresses,
//!   `network-get` answers, `enable-ha` rules, which hooks fire).
//! - [`netns`]: the network namespaces (a cloud namespace with a bridge per space, one per
//!   machine, one for the API client with a NIC in the default space).
//! - [`agent`]: the machine agent supervising each machine's `dbaccessor`.
//! - [`cloud`]: the simulated cloud the controllers' compute provisioner starts and stops
//!   workload machines through (fenced by the lease token, idempotent per machine).
//! - [`simulation`]: a model dir and the operator's changes to it.
//! - [`engine`]: runs the queued hooks until the model settles.
//! - [`leadership`]: who leads an application: the units' trackers' `leadership.json`
//!   (the `application-leadership` lease) once they report, the fixed pick until then.
//! - [`cluster`]: the dbaccessors' status sockets, convergence, the `dqlite` shell.
//! - [`report`]: `status` and `juju run` output.
//! - [`client`]: the API client commands (`login`, `controllers`, `show-controller`, the API
//!   half of `status`) on the `juju-client` crate, dialling from the client namespace.
//! - [`commands`]: the command line.
//!
//! The `juju-hook-tool` binary is the tools' process: one executable answering under each
//! tool's name.
#![forbid(unsafe_code)]

pub mod agent;
pub mod charm;
pub mod client;
pub mod cloud;
pub mod cluster;
pub mod commands;
pub mod engine;
pub mod leadership;
pub mod model;
pub mod mounts;
pub mod netns;
pub mod report;
pub mod responder;
pub mod runner;
pub mod simulation;
pub mod store;
pub mod tools;
pub mod world;

pub use model::{NetworkInfo, State};
pub use runner::{locate_hook_tool, Invocation, Outcome, Runner};
pub use store::Store;
