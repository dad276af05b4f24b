//! Network namespaces a test creates for itself (needs root and `ip`), deleted on drop.

use std::process::Command;

/// A named network namespace with loopback up. Deleted on drop (its processes must be gone
/// by then: every daemon is a `Controller`, killed on its own drop).
pub struct Namespace {
    pub name: String,
    /// Whether this value made the namespace (and deletes it on drop).
    owned: bool,
}

impl Namespace {
    pub fn create(name: &str) -> Namespace {
        // A namespace left by a killed earlier run of this pid: start clean.
        let _ = Command::new("ip").args(["netns", "del", name]).status();
        run(&["ip", "netns", "add", name]);
        let namespace = Namespace {
            name: name.to_owned(),
            owned: true,
        };
        namespace.ip(&["link", "set", "lo", "up"]);
        namespace
    }

    /// A namespace another process made (and deletes): a child re-run inside it.
    pub fn existing(name: &str) -> Namespace {
        Namespace {
            name: name.to_owned(),
            owned: false,
        }
    }

    /// `ip -n <name> <args>`; panics when it fails.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        run(&full);
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a command to completion; panics when it cannot start or fails.
pub fn run(args: &[&str]) {
    let status = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|error| panic!("{args:?} cannot start: {error}"));
    assert!(status.success(), "{args:?} failed: {status}");
}

/// Runs a command and ignores how it ends (clean-up of what may not exist).
pub fn run_quietly(args: &[&str]) {
    let _ = Command::new(args[0])
        .args(&args[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}
