//! The hook tools, through one runner (std's `Command`, both pipes polled on the calling
//! thread): every call asks for `--format json` where the tool prints something, keeps the
//! start of the tool's stderr in the error, caps what it reads, and never clears the
//! environment (the tools find the live hook context through it).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::process::{ChildStderr, ChildStdout, Command, Stdio};
use std::sync::OnceLock;

use rustix::event::{poll, PollFd, PollFlags};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::status::{printable, Level, Status};

/// The most bytes read from one tool's output; more is refused rather than parsed.
pub const MAX_OUTPUT: usize = 1024 * 1024;

/// Why a hook tool call failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: String,
        source: std::io::Error,
    },
    #[error("{tool} {args} failed ({status}): {stderr}")]
    Failed {
        tool: String,
        args: String,
        status: String,
        stderr: String,
    },
    #[error("{tool} printed more than the {MAX_OUTPUT} bytes accepted")]
    Oversized { tool: String, size: usize },
    #[error("{tool} cannot be given an argument with a NUL byte: {argument:?}")]
    NulInArgument { tool: String, argument: String },
    #[error("{tool} printed output that is not what Juju prints: {source}")]
    Parse {
        tool: String,
        source: serde_json::Error,
    },
}

/// A tool's stdin: `/dev/null`, opened once per process and duplicated for each tool (a
/// `dup` costs less than opening the path again, ~9 µs of a ~90 µs spawn here).
fn null_stdin() -> Stdio {
    static DEV_NULL: OnceLock<Option<File>> = OnceLock::new();
    DEV_NULL
        .get_or_init(|| File::open("/dev/null").ok())
        .as_ref()
        .and_then(|file| file.try_clone().ok())
        .map_or_else(Stdio::null, Stdio::from)
}

/// The hook tools of the running hook.
#[derive(Debug, Clone, Copy, Default)]
pub struct HookTools;

impl HookTools {
    /// Runs `tool args...` and returns its stdout; a non-zero exit is an error carrying stderr.
    /// Both pipes are read on this thread ([`read_output`]): stdout at most [`MAX_OUTPUT`] + 1
    /// bytes, so an oversized answer is refused without being buffered whole, and stderr
    /// drained with only its first [`STDERR_KEPT`] bytes kept.
    fn run(&self, tool: &str, args: &[&str]) -> Result<String, ToolError> {
        let spawn_error = |source| ToolError::Spawn {
            tool: tool.to_owned(),
            source,
        };
        // An argument cannot hold a NUL byte (exec takes C strings): refuse it here, by
        // name, rather than as an obscure spawn error.
        if let Some(argument) = args.iter().find(|a| a.contains('\0')) {
            return Err(ToolError::NulInArgument {
                tool: tool.to_owned(),
                argument: printable(argument),
            });
        }
        // The environment is inherited whole: the tools find the hook context through it.
        // By name: std's posix_spawnp looks it up on PATH in the child, where Juju puts the
        // hook-tool dir first, so the first exec finds it and this process stats nothing.
        let mut child = Command::new(tool)
            .args(args)
            .stdin(null_stdin())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(spawn_error(std::io::Error::other(
                "the tool's pipes are missing",
            )));
        };
        let output = match read_output(stdout, stderr) {
            Ok(output) => output,
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(spawn_error(error));
            }
        };
        if output.stdout.len() > MAX_OUTPUT {
            // Its exit status no longer matters.
            let _ = child.kill();
            let _ = child.wait();
            return Err(ToolError::Oversized {
                tool: tool.to_owned(),
                size: output.stdout.len(),
            });
        }
        let status = child.wait().map_err(spawn_error)?;
        if !status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            return Err(ToolError::Failed {
                tool: tool.to_owned(),
                args: args.join(" "),
                status: status.to_string(),
                stderr,
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn json<T: DeserializeOwned>(&self, tool: &str, args: &[&str]) -> Result<T, ToolError> {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--format", "json"]);
        let text = self.run(tool, &full)?;
        serde_json::from_str(&text).map_err(|source| ToolError::Parse {
            tool: tool.to_owned(),
            source,
        })
    }

    /// `network-get <binding> --format json`, unparsed: the address module reads it. A hook
    /// treats malformed output as a failed tool; an action reports it through action-fail.
    pub fn network_get(&self, binding: &str) -> Result<String, ToolError> {
        self.run("network-get", &[binding, "--format", "json"])
    }

    /// `relation-ids <endpoint>`, sorted by relation number.
    pub fn relation_ids(&self, endpoint: &str) -> Result<Vec<String>, ToolError> {
        let mut ids: Vec<String> = self.json("relation-ids", &[endpoint])?;
        ids.sort_by_key(|id| {
            id.rsplit_once(':')
                .and_then(|(_, n)| n.parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        });
        Ok(ids)
    }

    /// `relation-list -r <id>`: the other units in the relation.
    pub fn relation_list(&self, relation_id: &str) -> Result<Vec<String>, ToolError> {
        self.json("relation-list", &["-r", relation_id])
    }

    /// `relation-get -r <id> [--app] - <owner>`: a unit's (or, with `app`, an application's) bag.
    pub fn relation_get(
        &self,
        relation_id: &str,
        owner: &str,
        app: bool,
    ) -> Result<BTreeMap<String, String>, ToolError> {
        let mut args = vec!["-r", relation_id];
        if app {
            args.push("--app");
        }
        args.extend(["-", owner]);
        // Juju prints `null` for a bag with nothing in it in some versions.
        let bag: Option<BTreeMap<String, String>> = self.json("relation-get", &args)?;
        Ok(bag.unwrap_or_default())
    }

    /// `relation-set -r <id> [--app] key=value...`; an empty value deletes the key.
    pub fn relation_set(
        &self,
        relation_id: &str,
        app: bool,
        settings: &BTreeMap<String, String>,
    ) -> Result<(), ToolError> {
        let pairs: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = vec!["-r", relation_id];
        if app {
            args.push("--app");
        }
        args.extend(pairs.iter().map(String::as_str));
        self.run("relation-set", &args).map(drop)
    }

    /// `is-leader --format json`.
    pub fn is_leader(&self) -> Result<bool, ToolError> {
        self.json("is-leader", &[])
    }

    /// `config-get --format json`: every option, unvalidated.
    pub fn config_get(&self) -> Result<Map<String, Value>, ToolError> {
        let options: Option<Map<String, Value>> = self.json("config-get", &[])?;
        Ok(options.unwrap_or_default())
    }

    /// `status-set <kind> <message>`.
    pub fn status_set(&self, status: &Status) -> Result<(), ToolError> {
        self.run(
            "status-set",
            &[status.kind.as_str(), &printable(&status.message)],
        )
        .map(drop)
    }

    /// `juju-log -l <level> -- <message>`.
    pub fn juju_log(&self, level: Level, message: &str) -> Result<(), ToolError> {
        self.run(
            "juju-log",
            &["-l", level.as_str(), "--", &printable(message)],
        )
        .map(drop)
    }

    /// `action-get --format json`.
    pub fn action_get(&self) -> Result<Map<String, Value>, ToolError> {
        let params: Option<Map<String, Value>> = self.json("action-get", &[])?;
        Ok(params.unwrap_or_default())
    }

    /// `action-set key=value...` (keys may be dotted to nest).
    pub fn action_set(&self, results: &BTreeMap<String, String>) -> Result<(), ToolError> {
        let pairs: Vec<String> = results.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let args: Vec<&str> = pairs.iter().map(String::as_str).collect();
        self.run("action-set", &args).map(drop)
    }

    /// `action-fail <message>`.
    pub fn action_fail(&self, message: &str) -> Result<(), ToolError> {
        self.run("action-fail", &[&printable(message)]).map(drop)
    }

    /// `application-version-set <version>`.
    pub fn application_version_set(&self, version: &str) -> Result<(), ToolError> {
        self.run("application-version-set", &[version]).map(drop)
    }
}

/// How much of a failed tool's stderr is kept for its error.
pub const STDERR_KEPT: usize = 4096;

/// What a tool wrote.
struct ToolOutput {
    /// At most [`MAX_OUTPUT`] + 1 bytes: more means the tool said too much.
    stdout: Vec<u8>,
    /// The first [`STDERR_KEPT`] bytes.
    stderr: Vec<u8>,
}

/// Reads a tool's stdout and stderr together on this thread (poll(2) on both pipes, no
/// reader threads: each would cost a thread per tool call, and a hook makes several),
/// until both reach EOF or stdout exceeds [`MAX_OUTPUT`]. stderr is drained whatever its
/// size, so a tool that writes much there never blocks, but only its start is kept.
fn read_output(mut stdout: ChildStdout, mut stderr: ChildStderr) -> std::io::Result<ToolOutput> {
    let mut output = ToolOutput {
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    let (mut stdout_open, mut stderr_open) = (true, true);
    let mut buffer = [0u8; 16 * 1024];
    while stdout_open || stderr_open {
        let mut fds = Vec::with_capacity(2);
        if stdout_open {
            fds.push(PollFd::new(&stdout, PollFlags::IN));
        }
        if stderr_open {
            fds.push(PollFd::new(&stderr, PollFlags::IN));
        }
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(error) => return Err(error.into()),
        }
        let ready: Vec<bool> = fds.iter().map(|fd| !fd.revents().is_empty()).collect();
        drop(fds);
        let mut ready = ready.into_iter();
        if stdout_open && ready.next() == Some(true) {
            match stdout.read(&mut buffer) {
                Ok(0) => stdout_open = false,
                Ok(n) => {
                    output.stdout.extend_from_slice(&buffer[..n]);
                    if output.stdout.len() > MAX_OUTPUT {
                        return Ok(output);
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        if stderr_open && ready.next() == Some(true) {
            match stderr.read(&mut buffer) {
                Ok(0) => stderr_open = false,
                Ok(n) => {
                    let room = STDERR_KEPT.saturating_sub(output.stderr.len());
                    output.stderr.extend_from_slice(&buffer[..n.min(room)]);
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_table() {
        for (text, expected) in [
            ("plain text, \"quoted\"", "plain text, \"quoted\""),
            ("nul\0byte", "nul\\u{0}byte"),
            ("two\nlines\r", "two\\u{a}lines\\u{d}"),
            ("esc\u{1b}[31m", "esc\\u{1b}[31m"),
            ("c1\u{85}", "c1\\u{85}"),
            ("ünïcode fc00::1", "ünïcode fc00::1"),
        ] {
            assert_eq!(printable(text), expected, "{text:?}");
        }
    }

    #[test]
    fn both_pipes_are_read_without_blocking_and_capped() {
        let tools = HookTools;
        let sh = |script: &str| tools.run("sh", &["-c", script]);
        // Much on stderr before stdout ends: drained, so the tool never blocks; the start kept.
        let quiet = sh("head -c 3000000 /dev/zero | tr '\\0' e >&2; echo ok").expect("runs");
        assert_eq!(quiet, "ok\n");
        // A failure carries the start of its stderr, and the exit status.
        match sh("echo 'no such relation' >&2; head -c 100000 /dev/zero | tr '\\0' x >&2; exit 3") {
            Err(ToolError::Failed { stderr, status, .. }) => {
                assert!(stderr.starts_with("no such relation"), "{stderr:.80}");
                assert!(stderr.len() <= STDERR_KEPT, "{}", stderr.len());
                assert!(status.contains('3'), "{status}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        // Endless stdout: refused past the cap, and the tool is killed, not waited for.
        let started = std::time::Instant::now();
        match sh("yes") {
            // Over the cap by at most one read.
            Err(ToolError::Oversized { size, .. }) => {
                assert!(
                    size > MAX_OUTPUT && size <= MAX_OUTPUT + 16 * 1024,
                    "{size}"
                );
            }
            other => panic!("expected oversized, got {other:?}"),
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn a_nul_byte_is_refused_before_anything_runs() {
        let error = HookTools
            .run("no-such-tool-anywhere", &["a\0b"])
            .expect_err("refused");
        assert!(
            matches!(&error, ToolError::NulInArgument { argument, .. } if argument == "a\\u{0}b"),
            "{error:?}"
        );
    }
}
