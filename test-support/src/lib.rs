//! Helpers the workspace's test binaries and benchmarks share, so that each test reads as a
//! scenario and none carries its own copy: child processes that die with the test and
//! announce readiness on a line, the socket clients the daemon itself has no use for, rows
//! written and read through Dqlite, and (feature `sim`) a simulated model destroyed on drop.
//!
//! A dev-dependency only: nothing here reaches a release binary.
#![forbid(unsafe_code)]

pub mod process;
pub mod reload;
pub mod rows;
#[cfg(feature = "sim")]
pub mod sim;
pub mod status;
