//! Child processes that are killed (SIGKILL) and reaped when dropped, so that no test leaves
//! one behind, and waiting for the line a process prints once it is ready.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A child process killed and reaped on drop.
pub struct ChildGuard {
    pub child: Child,
    /// What the process is, for failure messages.
    pub name: String,
}

impl ChildGuard {
    /// Guards a child started elsewhere.
    pub fn new(name: &str, child: Child) -> ChildGuard {
        ChildGuard {
            child,
            name: name.to_owned(),
        }
    }

    /// Starts `command` with stdin and stdout piped (a node stops when its stdin closes, so
    /// the pipe stays open for the process's life) and stderr inherited.
    pub fn spawn(name: &str, command: &mut Command) -> ChildGuard {
        Self::spawn_with_stderr(name, command, Stdio::inherit())
    }

    /// [`spawn`](Self::spawn) with stderr sent to `stderr`.
    pub fn spawn_with_stderr(name: &str, command: &mut Command, stderr: Stdio) -> ChildGuard {
        let child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ChildGuard::new(name, child)
    }

    /// Waits up to `limit` for the process's first line on stdout that starts with
    /// `prefix` (earlier lines are skipped) and returns the rest of it; fails the test when
    /// none comes.
    pub fn wait_for_line(&mut self, prefix: &str, limit: Duration) -> String {
        let stdout = self.child.stdout.take().expect("stdout is piped");
        let lines = forward_lines(stdout);
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.to_owned();
                    }
                }
                Err(_) => panic!("{} printed no {prefix:?} line within {limit:?}", self.name),
            }
        }
    }

    /// Whether the process has exited (for example crashed).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, as `kill -9` does, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `stdout` line by line on a thread of its own (which ends with the process or when
/// nobody listens any more) and hands the lines over.
fn forward_lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    received
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_line_is_found_after_other_lines() {
        let mut guard = ChildGuard::spawn(
            "sh",
            Command::new("sh").args(["-c", "echo starting; echo 'ready 7'; sleep 30"]),
        );
        assert_eq!(guard.wait_for_line("ready ", Duration::from_secs(10)), "7");
        assert!(!guard.has_exited());
        let pid = guard.child.id();
        drop(guard);
        // Reaped on drop: the pid no longer names our child (kill -0 fails).
        let alive = Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .expect("kill runs");
        assert!(!alive.success(), "process {pid} outlived its guard");
    }
}
