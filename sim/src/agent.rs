//! The simulated machine agent: a detached supervisor process (`juju-sim machine-agent`) that
//! runs the real controller agent (`jujud-controller`, whose workers are the dbaccessor, the
//! API address publisher and the API server) inside its machine's namespace, restarts it with back-off when
//! it dies (as systemd restarts jujud), and stops it with SIGTERM when told to stop. Also the
//! CLI's side: starting a supervisor, waiting for its reload socket, stopping it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use controller_backoff::Backoff;
use rustix::process::{kill_process, Pid, Signal};

/// The restart delays: from 100 ms, doubling up to 5 s, again from 100 ms after a healthy run.
const RESTART_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// A dbaccessor that ran this long was healthy: its next restart starts from the first delay.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
/// How long a dbaccessor gets to hand over and stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often the supervisor looks at its child and its stop flag.
const POLL: Duration = Duration::from_millis(20);

/// Why the supervisor or the CLI's agent handling failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot install the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        source: std::io::Error,
    },
    #[error("cannot open log {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot wait for the dbaccessor: {0}")]
    Wait(std::io::Error),
    #[error("the machine agent of machine {machine} did not open {socket} within {seconds} s (see {log})")]
    NotUp {
        machine: u32,
        socket: PathBuf,
        seconds: u64,
        log: PathBuf,
    },
}

/// What a machine agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSpec {
    /// The model dir: the agent ends by itself once its `world.json` is gone.
    pub model_dir: PathBuf,
    /// The machine id, which is the controller agent id.
    pub machine: u32,
    /// The machine's network namespace.
    pub namespace: String,
    /// The controller agent binary (`jujud-controller`): the dbaccessor's flags and
    /// sockets, with the API address publisher and the API server beside it.
    pub controller_agent: PathBuf,
    /// The machine's `/var/lib/juju`.
    pub data_dir: PathBuf,
    /// `--network-latency-ms`.
    pub network_latency_ms: u64,
    /// `--quorum-timeout-ms`.
    pub quorum_timeout_ms: u64,
    /// A workload machine: the agent runs with `--machine-agent` (the API caller only).
    pub workload: bool,
}

impl AgentSpec {
    /// The machine's dir (`<model>/machines/<id>`), holding the logs and the pid file.
    pub fn machine_dir(&self) -> PathBuf {
        machine_dir(&self.model_dir, self.machine)
    }

    /// The arguments `juju-sim machine-agent` takes for this spec.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "machine-agent".into(),
            "--model-dir".into(),
            self.model_dir.display().to_string(),
            "--machine".into(),
            self.machine.to_string(),
            "--namespace".into(),
            self.namespace.clone(),
            "--controller-agent".into(),
            self.controller_agent.display().to_string(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
            "--network-latency-ms".into(),
            self.network_latency_ms.to_string(),
            "--quorum-timeout-ms".into(),
            self.quorum_timeout_ms.to_string(),
        ];
        if self.workload {
            args.push("--workload".into());
        }
        args
    }
}

/// `<model>/machines/<id>`.
pub fn machine_dir(model_dir: &Path, machine: u32) -> PathBuf {
    model_dir.join("machines").join(machine.to_string())
}

/// The file the supervisor keeps the running dbaccessor's pid in.
pub fn dbaccessor_pid_file(model_dir: &Path, machine: u32) -> PathBuf {
    machine_dir(model_dir, machine).join("dbaccessor.pid")
}

/// The machine agent's log (the supervisor's lines and the dbaccessor's output).
pub fn agent_log(model_dir: &Path, machine: u32) -> PathBuf {
    machine_dir(model_dir, machine).join("agent.log")
}

fn open_log(path: &Path) -> Result<File, AgentError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| AgentError::Log {
            path: path.to_owned(),
            source,
        })
}

/// Runs the supervisor until SIGTERM or SIGINT (or until the model is destroyed): starts the
/// dbaccessor, restarts it with back-off whenever it exits, and on the stop signal forwards
/// SIGTERM to it and waits for its clean stop.
pub fn supervise(spec: &AgentSpec) -> Result<(), AgentError> {
    let stop = Arc::new(AtomicBool::new(false));
    for (signal, name) in [
        (signal_hook::consts::SIGTERM, "SIGTERM"),
        (signal_hook::consts::SIGINT, "SIGINT"),
    ] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(|source| {
            AgentError::Signal {
                signal: name,
                source,
            }
        })?;
    }
    let log_path = agent_log(&spec.model_dir, spec.machine);
    let mut model = ModelWatch::new(spec);
    let mut backoff = RESTART_BACKOFF;
    let say = |line: &str| {
        if let Ok(mut log) = open_log(&log_path) {
            // A lost log line must not stop the agent.
            let _ = writeln!(log, "machine-agent {}: {line}", spec.machine);
        }
    };
    // What the child is, in the log: a controller's agent runs the dbaccessor.
    let what = if spec.workload {
        "machine agent (jujud-controller --machine-agent)"
    } else {
        "dbaccessor"
    };
    say("starting");
    while !stop.load(Ordering::SeqCst) && model.alive() {
        let mut child = spawn_dbaccessor(spec, &log_path)?;
        let started = Instant::now();
        let _ = fs::write(
            dbaccessor_pid_file(&spec.model_dir, spec.machine),
            child.id().to_string(),
        );
        say(&format!("{what} started, pid {}", child.id()));
        let status = loop {
            if stop.load(Ordering::SeqCst) || !model.alive() {
                say(&format!("stopping the {what} (SIGTERM)"));
                terminate(&mut child);
                let _ = fs::remove_file(dbaccessor_pid_file(&spec.model_dir, spec.machine));
                say("stopped");
                return Ok(());
            }
            match child.try_wait().map_err(AgentError::Wait)? {
                Some(status) => break status,
                None => std::thread::sleep(POLL),
            }
        };
        if started.elapsed() >= HEALTHY_RUN {
            backoff.reset();
        }
        let pause = backoff.next_delay();
        say(&format!(
            "{what} exited ({status}); restarting in {} ms",
            pause.as_millis()
        ));
        let until = Instant::now() + pause;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(POLL);
        }
    }
    say("stopped");
    Ok(())
}

/// Tells whether the agent's model still exists: its `world.json` is there and names the
/// prefix of the agent's namespace (a model destroyed by deleting its dir, or replaced by a
/// new model in the same dir, must not keep an old agent running on the new data dir).
struct ModelWatch {
    world: PathBuf,
    wanted: String,
    checked: Instant,
    alive: bool,
}

impl ModelWatch {
    /// How often the world file is read.
    const EVERY: Duration = Duration::from_millis(500);

    fn new(spec: &AgentSpec) -> Self {
        let prefix = crate::netns::prefix_of(&spec.namespace).unwrap_or_default();
        Self {
            world: spec.model_dir.join("world.json"),
            wanted: format!("\"prefix\": \"{prefix}\""),
            checked: Instant::now() - Self::EVERY,
            alive: true,
        }
    }

    fn alive(&mut self) -> bool {
        if self.checked.elapsed() >= Self::EVERY {
            self.checked = Instant::now();
            self.alive = match fs::read_to_string(&self.world) {
                Ok(text) => text.contains(&self.wanted),
                // Replaced by rename at this instant: look again next time.
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => self.alive,
                Err(_) => false,
            };
        }
        self.alive
    }
}

fn spawn_dbaccessor(spec: &AgentSpec, log_path: &Path) -> Result<Child, AgentError> {
    let stdout = open_log(log_path)?;
    let stderr = open_log(log_path)?;
    fs::create_dir_all(&spec.data_dir).map_err(|source| AgentError::Log {
        path: spec.data_dir.clone(),
        source,
    })?;
    crate::mounts::ensure_mount_point().map_err(|source| AgentError::Log {
        path: crate::mounts::JUJU_DATA_DIR.into(),
        source,
    })?;
    // `ip netns exec` enters the namespace and execs, so the child's pid is the controller
    // agent's, the process that runs the dbaccessor.
    // Inside the namespace, /var/lib/juju is the machine's data dir (crate::mounts).
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &spec.namespace])
        .args(crate::mounts::bind_prefix(&spec.data_dir))
        .arg(&spec.controller_agent);
    if spec.workload {
        command.arg("--machine-agent");
    } else {
        // The compute provisioner reaches the simulated cloud through this executable.
        let juju_sim = std::env::current_exe().map_err(|source| AgentError::Spawn {
            program: PathBuf::from("juju-sim"),
            source,
        })?;
        command
            .arg("--cloud-command")
            .arg(juju_sim)
            .arg("--cloud-arg=--model-dir")
            .arg(format!("--cloud-arg={}", spec.model_dir.display()))
            .arg("--cloud-arg=cloud");
        let skew = clock_skew_ms(spec);
        if skew != 0 {
            match libfaketime() {
                Some(library) => {
                    command.envs(skew_env(&library, skew));
                }
                None => {
                    return Err(AgentError::Spawn {
                        program: PathBuf::from("libfaketime"),
                        source: std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "a clock skew needs libfaketime (apt-get install libfaketime)",
                        ),
                    })
                }
            }
        }
    }
    command
        .arg("--agent-id")
        .arg(spec.machine.to_string())
        .arg("--data-dir")
        .arg(&spec.data_dir)
        .arg("--network-latency-ms")
        .arg(spec.network_latency_ms.to_string())
        .arg("--quorum-timeout-ms")
        .arg(spec.quorum_timeout_ms.to_string())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|source| AgentError::Spawn {
            program: spec.controller_agent.clone(),
            source,
        })
}

/// Where libfaketime's multi-threaded library may be.
const LIBFAKETIME: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
];

/// libfaketime's library, if it is installed.
pub fn libfaketime() -> Option<PathBuf> {
    LIBFAKETIME.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// The environment that runs a program with its wall clock `skew_ms` off (libfaketime's
/// relative offset; the monotonic clock, which the lease deadlines use, stays true).
pub fn skew_env(library: &Path, skew_ms: i64) -> Vec<(String, String)> {
    let sign = if skew_ms < 0 { '-' } else { '+' };
    let abs = skew_ms.unsigned_abs();
    vec![
        ("LD_PRELOAD".into(), library.display().to_string()),
        (
            "FAKETIME".into(),
            format!("{sign}{}.{:03}", abs / 1000, abs % 1000),
        ),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ]
}

/// The clock skew the world gives machine `spec.machine` now (0 without one, or when the
/// world cannot be read).
fn clock_skew_ms(spec: &AgentSpec) -> i64 {
    fs::read_to_string(spec.model_dir.join("world.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<crate::world::World>(&text).ok())
        .and_then(|world| world.clock_skew_ms.get(&spec.machine).copied())
        .unwrap_or(0)
}

/// SIGTERM, then SIGKILL after the grace period; reaps the child.
fn terminate(child: &mut Child) {
    signal(child.id(), Signal::TERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(POLL);
    }
    // The grace period is over: the process is stuck, so it is killed.
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends `signal` to `pid`; a process already gone is fine.
pub fn signal(pid: u32, signal: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(pid, signal);
    }
}

/// Whether `pid` is a live process (a zombie is not).
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The dbaccessor pid the supervisor of `machine` recorded, if it is alive.
pub fn dbaccessor_pid(model_dir: &Path, machine: u32) -> Option<u32> {
    fs::read_to_string(dbaccessor_pid_file(model_dir, machine))
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .filter(|pid| alive(*pid))
}

/// Starts a detached supervisor (its own session, so the CLI's exit or Ctrl-C leaves it
/// running) and returns its pid.
pub fn start(juju_sim: &Path, spec: &AgentSpec) -> Result<u32, AgentError> {
    fs::create_dir_all(spec.machine_dir()).map_err(|source| AgentError::Log {
        path: spec.machine_dir(),
        source,
    })?;
    let log_path = agent_log(&spec.model_dir, spec.machine);
    let stdout = open_log(&log_path)?;
    let stderr = open_log(&log_path)?;
    // setsid(1) execs in place when its caller is not a group leader (a spawned child is not),
    // so the pid below is the supervisor's. Descriptors this process inherited without
    // close-on-exec (a `flock` wrapper's lock, say) are closed on the way: the supervisor
    // outlives the command and would hold them, and such a lock, for the model's whole life.
    // bash's `exec` closes them and execs in place too.
    let inherited = inherited_descriptors();
    let mut command = Command::new("setsid");
    if !inherited.is_empty() {
        let closes: Vec<String> = inherited.iter().map(|fd| format!("{fd}>&-")).collect();
        command
            .args(["bash", "-c"])
            .arg(format!("exec \"$0\" \"$@\" {}", closes.join(" ")));
    }
    let child = command
        .arg(juju_sim)
        .args(spec.to_args())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|source| AgentError::Spawn {
            program: juju_sim.to_owned(),
            source,
        })?;
    Ok(child.id())
}

/// The descriptors above stderr this process holds without close-on-exec (from
/// `/proc/self/fdinfo`): what it inherited and would pass on to every child.
fn inherited_descriptors() -> Vec<u32> {
    /// `O_CLOEXEC` as the `flags:` line of fdinfo shows it (octal).
    const CLOSE_ON_EXEC: u32 = 0o2000000;
    let Ok(entries) = fs::read_dir("/proc/self/fdinfo") else {
        return Vec::new();
    };
    let mut fds: Vec<u32> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|fd| *fd > 2)
        .filter(|fd| {
            // The listing's own descriptor is gone (or close-on-exec) by now: skipped.
            fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
                .ok()
                .and_then(|info| {
                    info.lines()
                        .find_map(|line| line.strip_prefix("flags:"))
                        .and_then(|flags| u32::from_str_radix(flags.trim(), 8).ok())
                })
                .is_some_and(|flags| flags & CLOSE_ON_EXEC == 0)
        })
        .collect();
    fds.sort_unstable();
    fds
}

/// Waits until the reload socket of the machine answers a connection.
pub fn wait_until_up(spec: &AgentSpec, timeout: Duration) -> Result<(), AgentError> {
    let socket = controller_contract::paths::reload_socket(&spec.data_dir);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if UnixStream::connect(&socket).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(AgentError::NotUp {
        machine: spec.machine,
        socket,
        seconds: timeout.as_secs(),
        log: agent_log(&spec.model_dir, spec.machine),
    })
}

/// Stops the supervisor `pid` (which stops its dbaccessor cleanly); kills both if they are
/// still there after the grace period.
pub fn stop(model_dir: &Path, machine: u32, pid: u32) {
    let dbaccessor = dbaccessor_pid(model_dir, machine);
    signal(pid, Signal::TERM);
    let deadline = Instant::now() + STOP_GRACE + Duration::from_secs(2);
    while Instant::now() < deadline && alive(pid) {
        std::thread::sleep(POLL);
    }
    if alive(pid) {
        signal(pid, Signal::KILL);
    }
    if let Some(dbaccessor) = dbaccessor.filter(|p| alive(*p)) {
        signal(dbaccessor, Signal::KILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_env_table() {
        let check = |skew_ms: i64, expected: &str| {
            let env = skew_env(Path::new("/lib/f.so"), skew_ms);
            assert_eq!(env[0], ("LD_PRELOAD".to_owned(), "/lib/f.so".to_owned()));
            assert_eq!(env[1], ("FAKETIME".to_owned(), expected.to_owned()));
            assert_eq!(env[2].0, "FAKETIME_DONT_FAKE_MONOTONIC");
        };
        check(6000, "+6.000");
        check(-6000, "-6.000");
        check(1500, "+1.500");
        check(-5, "-0.005");
    }
}
