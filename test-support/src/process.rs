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

/// CPU time (user and system, all threads, reaped children not included) the live process
/// `pid` has used so far, from `/proc/<pid>/stat`; in clock ticks, so to 10 ms on a 100 Hz
/// kernel. Benchmarks read it before and after a run to report CPU per operation.
pub fn cpu_time(pid: u32) -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| {
            Duration::from_secs_f64(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
        })
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("/proc/{pid}/stat has no utime and stime fields"),
            )
        })
}

/// utime + stime of a `/proc/<pid>/stat` line. The command name may hold spaces and
/// parentheses, so the fields are counted from its last `)`: field 3 (state) comes first
/// there, utime is field 14 and stime field 15. Pure.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 500 0 0 0 37 5 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(42));
        assert_eq!(parse_cpu_ticks("4242 (cut short) S 1 2"), None);
        assert_eq!(parse_cpu_ticks("no parenthesis at all"), None);
    }

    #[test]
    fn a_busy_child_shows_cpu_time_and_a_gone_one_an_error() {
        let mut guard = ChildGuard::spawn(
            "sh",
            Command::new("sh").args([
                "-c",
                "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo done; sleep 30",
            ]),
        );
        guard.wait_for_line("done", Duration::from_secs(60));
        let used = cpu_time(guard.child.id()).expect("a live child's stat is readable");
        assert!(
            used >= Duration::from_millis(20),
            "a 200000-step shell loop used {used:?}"
        );
        let pid = guard.child.id();
        drop(guard);
        assert!(cpu_time(pid).is_err(), "a reaped child still has a stat");
    }

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
