//! Benchmark: the compiled `dispatch` handling `db-cluster-relation-changed` as the leader
//! with two peers, under the hook-tool emulator. Prints the median wall time, CPU time and
//! peak RSS of the hook process tree (from wait4), the hook-tool processes' share (each
//! recorded tool call replayed alone under wait4), and the charm's own share, against the
//! issue's targets. Run: `cargo build --release -p juju-sim && cargo bench -p controller-charm
//! --bench hook`.
//!
//! wait4(2) reports a child's usage including the children it waited for, and its peak RSS
//! as the largest of them, so the tools' share is measured apart by replaying their calls.
//! The charm's own CPU time is not that difference (two noisy sums on a busy machine): each
//! run's dispatch reads its own `CLOCK_PROCESS_CPUTIME_ID` at exit (every thread of it,
//! none of the tools) into the file `CONTROLLER_CHARM_CPU_FILE` names. Its wall share is
//! still the tree's wall time less the replayed tools'.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use juju_sim::model::{Application, Unit};
use juju_sim::responder::Responder;
use juju_sim::{locate_hook_tool, Invocation, NetworkInfo, Runner, State, Store};
use serde_json::json;
use wait4::Wait4;

const RUNS: usize = 30;
const RELATION: &str = "db-cluster:0";

/// One measured process (or process tree).
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    wall: Duration,
    cpu: Duration,
    maxrss: u64,
}

/// The CPU one spawn of `/bin/true` (stdout and stderr piped and read to the end, then
/// waited for) costs this thread: the median over 200 spawns, from the thread's own clock.
fn spawn_cost() -> Duration {
    let thread_cpu = || {
        let time = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        Duration::new(
            u64::try_from(time.tv_sec).unwrap_or(0),
            u32::try_from(time.tv_nsec).unwrap_or(0),
        )
    };
    let costs = (0..200)
        .map(|_| {
            let before = thread_cpu();
            let output = Command::new("/bin/true")
                .stdin(Stdio::null())
                .output()
                .expect("spawn /bin/true");
            assert!(output.status.success(), "/bin/true failed");
            thread_cpu() - before
        })
        .collect();
    median(costs)
}

/// This machine's CPU time so far and the part of it the hypervisor gave to others (steal),
/// in ticks, from `/proc/stat`'s first line; `None` where it cannot be read.
fn cpu_ticks() -> Option<(u64, u64)> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = text
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let steal = *fields.get(7)?;
    Some((fields.iter().take(8).sum(), steal))
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn measure(mut command: Command) -> Usage {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let start = Instant::now();
    let child = command.spawn().expect("spawn the measured process");
    let used = child.wait4().expect("wait4");
    Usage {
        wall: start.elapsed(),
        cpu: used.rusage.utime + used.rusage.stime,
        maxrss: used.rusage.maxrss,
    }
}

/// The dispatch measured: `CONTROLLER_CHARM_DISPATCH` when set (scripts/bench.sh sets it to
/// the statically linked build that scripts/build-charm.sh packs), else cargo's own build.
fn dispatch_path() -> PathBuf {
    std::env::var_os("CONTROLLER_CHARM_DISPATCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_dispatch")))
}

/// Whether the ELF file at `path` is linked statically (no `PT_INTERP` program header: no
/// dynamic loader runs before it) or dynamically.
fn linkage(path: &Path) -> &'static str {
    const PT_INTERP: u32 = 3;
    let Ok(elf) = fs::read(path) else {
        return "unreadable";
    };
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // ELF64, little-endian: e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38.
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) || elf.get(4) != Some(&2) {
        return "not an ELF64 file";
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return "not an ELF64 file";
    };
    let interp = (0..usize::from(phnum)).any(|i| {
        let at = usize::try_from(phoff).unwrap_or(usize::MAX) + i * usize::from(phentsize);
        u32_at(at) == Some(PT_INTERP)
    });
    if interp {
        "dynamic"
    } else {
        "static"
    }
}

fn main() {
    let dispatch = dispatch_path();
    let linked = linkage(&dispatch);
    let hook_tool = match locate_hook_tool() {
        Ok(path) => path,
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(1);
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::new(dir.path().join("model.json"));
    let runner = Runner::new(store.clone(), &hook_tool, &dir.path().join("tools")).expect("runner");

    // Three controllers; the two peers published their addresses, controller/2 a new one.
    let mut state = State::default();
    state.applications.insert(
        "controller".into(),
        Application {
            config: [
                ("data-dir", json!("")),
                ("reload-socket", json!("")),
                ("bind-cidr", json!("")),
                ("address-family", json!("auto")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            status: None,
        },
    );
    state
        .leaders
        .insert("controller".into(), "controller/0".into());
    state.add_relation("db-cluster");
    for n in 0..3 {
        let charm_dir = dir
            .path()
            .join(format!("m{n}/agents/unit-controller-{n}/charm"));
        fs::create_dir_all(&charm_dir).expect("charm dir");
        std::os::unix::fs::symlink(&dispatch, charm_dir.join("dispatch")).expect("dispatch link");
        let address = format!("10.0.0.{}/24", 5 + n);
        state.units.insert(
            format!("controller/{n}"),
            Unit {
                machine: n.to_string(),
                charm_dir,
                network: [(
                    "db-cluster".to_owned(),
                    NetworkInfo::from_interfaces(&[("eth0", &[address.as_str()])]).to_value(),
                )]
                .into(),
                ..Unit::default()
            },
        );
        state.join_relation(RELATION, &format!("controller/{n}"));
        let bag = state
            .relations
            .get_mut(RELATION)
            .expect("relation")
            .unit_bags
            .entry(format!("controller/{n}"))
            .or_default();
        bag.insert("agent-id".into(), n.to_string());
        bag.insert("db-bind-address".into(), format!("10.0.0.{}", 5 + n));
    }
    let old_map = r#"{"0":"10.0.0.5","1":"10.0.0.6","2":"10.0.0.9"}"#;
    state
        .relations
        .get_mut(RELATION)
        .expect("relation")
        .app_bags
        .insert(
            "controller".into(),
            [
                ("db-bind-addresses".to_owned(), old_map.to_owned()),
                (
                    "db-agent-ids".to_owned(),
                    r#"{"controller/0":"0","controller/1":"1","controller/2":"2"}"#.to_owned(),
                ),
            ]
            .into(),
        );
    let data_dir = dir.path().join("m0");
    let conf_path = controller_contract::paths::controller_conf(&data_dir, "0");
    fs::create_dir_all(conf_path.parent().expect("conf dir")).expect("conf dir");
    let old_conf = "db-bind-addresses:\n  '0': 10.0.0.5\n  '1': 10.0.0.6\n  '2': 10.0.0.9\n";
    let agent = Responder::start(&controller_contract::paths::reload_socket(&data_dir), "0")
        .expect("reload responder");

    // What the leader's last non-relation hook left in its charm dir (the memo of the options,
    // the binding and the status shown): relation hooks in a running model always find one.
    let charm_dir = state.units["controller/0"].charm_dir.clone();
    let memo_path = controller_charm::memo::path(&charm_dir);
    store.save(&state).expect("model");
    let mut settled = state.clone();
    settled
        .relations
        .get_mut(RELATION)
        .expect("relation")
        .app_bags
        .insert(
            "controller".into(),
            [(
                "db-bind-addresses".to_owned(),
                r#"{"0":"10.0.0.5","1":"10.0.0.6","2":"10.0.0.7"}"#.to_owned(),
            )]
            .into(),
        );
    store.save(&settled).expect("model");
    // The tools each kind of hook calls on the leader: a unit's first hooks (no memo), the
    // 5-minute update-status, and (below) relation-changed. Counted from the calls log.
    let called = |hook: &str| -> Vec<String> {
        let before = store.load().expect("model").calls.len();
        let outcome = runner
            .run("controller/0", &Invocation::hook(hook))
            .expect("run the hook");
        assert!(outcome.success(), "{hook} failed: {outcome:?}");
        let calls = store.load().expect("model").calls;
        calls[before..]
            .iter()
            .map(|call| call.tool.clone())
            .collect()
    };
    let _ = fs::remove_file(&memo_path);
    let per_hook: Vec<(&str, Vec<String>)> = ["install", "config-changed", "update-status"]
        .into_iter()
        .map(|hook| (hook, called(hook)))
        .collect();
    let memo = fs::read(&memo_path).expect("the hooks leave a memo");

    println!("hook-tool calls per hook, leader with two peers (each a process, and in Juju an");
    println!("RPC to the unit agent):");
    for (hook, tools) in &per_hook {
        println!("  {hook:<15} {:>2}: {}", tools.len(), tools.join(" "));
        println!(
            "summary: leader {hook}, 2 peers: tool calls | {} | - | -",
            tools.len()
        );
    }
    println!();
    println!("benchmark: dispatch for db-cluster-relation-changed as leader with two peers");
    println!("            {RUNS} runs per scenario, release build, under the hook-tool emulator");
    println!(
        "            dispatch: {} ({linked}ally linked)",
        dispatch.display()
    );
    let ticks_before = cpu_ticks();
    let mut serial = 0;
    for (scenario, changed, with_memo) in [
        ("map changes (rewrite + reload)", true, true),
        ("steady state (no writes)", false, true),
        (
            "map changes, no memo (first hook of a unit, or a lost memo)",
            true,
            false,
        ),
    ] {
        let mut tree = Vec::new();
        let mut tools = Vec::new();
        let mut own_measured: Vec<Duration> = Vec::new();
        let mut tool_calls = 0;
        let mut tool_names = Vec::new();
        let mut tool_rss = 0;
        let mut tree_rss = 0;
        for _ in 0..RUNS {
            let mut fresh = state.clone();
            // A context id of its own (the runner numbers them from the state's counter):
            // the calls log outlives the state reset below, and this run's calls are told
            // apart by that id.
            serial += 1;
            fresh.next_id += serial;
            if !changed {
                let new_map = r#"{"0":"10.0.0.5","1":"10.0.0.6","2":"10.0.0.7"}"#;
                fresh
                    .relations
                    .get_mut(RELATION)
                    .expect("relation")
                    .app_bags
                    .entry("controller".into())
                    .or_default()
                    .insert("db-bind-addresses".to_owned(), new_map.to_owned());
            }
            store.save(&fresh).expect("reset model");
            if with_memo {
                fs::write(&memo_path, &memo).expect("reset memo");
            } else {
                let _ = fs::remove_file(&memo_path);
            }
            let conf = if changed {
                old_conf.to_owned()
            } else {
                old_conf.replace("10.0.0.9", "10.0.0.7")
            };
            fs::write(&conf_path, conf).expect("reset conf");
            let invocation = Invocation::relation("changed", RELATION, Some("controller/2"));
            let mut prepared = runner
                .prepare("controller/0", &invocation)
                .expect("prepare")
                .expect("dispatch exists");
            // The replay model: the state as the hook's first tool call saw it.
            let replay = dir.path().join("replay.json");
            fs::copy(store.path(), &replay).expect("replay copy");
            let cpu_file = dir.path().join("dispatch-cpu");
            let _ = fs::remove_file(&cpu_file);
            prepared
                .command
                .env("CONTROLLER_CHARM_CPU_FILE", &cpu_file)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let start = Instant::now();
            let child = prepared.command.spawn().expect("spawn dispatch");
            let used = child.wait4().expect("wait4");
            let usage = Usage {
                wall: start.elapsed(),
                cpu: used.rusage.utime + used.rusage.stime,
                maxrss: used.rusage.maxrss,
            };
            let outcome = runner
                .finish(&prepared, used.status, String::new(), String::new())
                .expect("finish");
            assert!(outcome.success(), "the hook failed: {outcome:?}");
            tree_rss = tree_rss.max(usage.maxrss);
            tree.push(usage);
            // dispatch's own CPU time, all its threads and none of its children, as it read
            // it at exit (CLOCK_PROCESS_CPUTIME_ID).
            let nanos: u64 = fs::read_to_string(&cpu_file)
                .expect("dispatch wrote its CPU time")
                .trim()
                .parse()
                .expect("nanoseconds");
            own_measured.push(Duration::from_nanos(nanos));

            let after = store.load().expect("model");
            let calls: Vec<_> = after
                .calls
                .iter()
                .filter(|c| c.context_id == prepared.context_id)
                .cloned()
                .collect();
            // A run's calls are about ten; more means calls of other runs matched its id.
            assert!(
                calls.len() <= 20,
                "{} calls carry this run's context id {}: the calls log mixes runs",
                calls.len(),
                prepared.context_id
            );
            tool_calls = calls.len();
            tool_names = calls.iter().map(|c| c.tool.clone()).collect();
            let mut sum = Usage::default();
            for call in calls {
                let mut command = Command::new(runner.tools_dir().join(&call.tool));
                command
                    .arg0(&call.tool)
                    .args(&call.args)
                    .env("JUJU_SIM_STATE", &replay)
                    .env("JUJU_CONTEXT_ID", &prepared.context_id)
                    .env("JUJU_UNIT_NAME", "controller/0");
                let one = measure(command);
                sum.wall += one.wall;
                sum.cpu += one.cpu;
                sum.maxrss = sum.maxrss.max(one.maxrss);
            }
            tool_rss = tool_rss.max(sum.maxrss);
            tools.push(sum);
        }
        let tree_wall = median(tree.iter().map(|u| u.wall).collect());
        let tree_cpu = median(tree.iter().map(|u| u.cpu).collect());
        let tool_wall = median(tools.iter().map(|u| u.wall).collect());
        let tool_cpu = median(tools.iter().map(|u| u.cpu).collect());
        let own_wall = tree_wall.saturating_sub(tool_wall);
        let own_cpu = median(own_measured.clone());
        println!();
        println!("scenario: {scenario}");
        println!(
            "  hook process tree      wall {:>10}  cpu {:>10}  peak RSS {}",
            ms(tree_wall),
            ms(tree_cpu),
            mib(tree_rss)
        );
        println!("  hook tools called: {}", tool_names.join(" "));
        println!("  hook tools ({tool_calls:>2} calls)  wall {:>10}  cpu {:>10}  peak RSS {} (largest tool process)", ms(tool_wall), ms(tool_cpu), mib(tool_rss));
        let own_rss = if tree_rss > tool_rss {
            format!("{} (the tree's peak is dispatch's own)", mib(tree_rss))
        } else {
            format!("<= {} (a tool process peaked higher)", mib(tree_rss))
        };
        println!(
            "  charm's own work       wall {:>10}  cpu {:>10} (its own clock)  peak RSS {own_rss}",
            ms(own_wall),
            ms(own_cpu)
        );
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        println!(
            "summary: leader relation-changed, 2 peers, {scenario}, {linked} dispatch: tool calls | {tool_calls} | - | -"
        );
        println!(
            "summary: leader relation-changed, 2 peers, {scenario}, {linked} dispatch: dispatch's own CPU ms | {:.2} | - | target <= 2 ms",
            own_cpu.as_secs_f64() * 1e3
        );
        println!(
            "  targets: own work < 2 ms: {} (cpu {}); peak RSS < 5 MB: {}",
            verdict(own_cpu < Duration::from_millis(2)),
            ms(own_cpu),
            verdict(tree_rss < 5_000_000)
        );
    }
    // On a VM, time the hypervisor runs other guests still counts as this guest's CPU time
    // in part, so a busy host inflates every figure above; say how busy it was.
    if let (Some((total0, steal0)), Some((total1, steal1))) = (ticks_before, cpu_ticks()) {
        let share = (steal1 - steal0) as f64 * 100.0 / (total1 - total0).max(1) as f64;
        println!();
        println!(
            "host steal during the scenarios: {share:.0}% of this machine's CPU time (above a few \
             per cent, expect every figure above to be inflated; rerun when the host is quiet)"
        );
    }
    // The fixed cost of starting the binary at all: dispatch with no hook environment exits
    // at once (with an error), so this is exec, dynamic loading and Rust start-up.
    let startup: Vec<Usage> = (0..RUNS)
        .map(|_| {
            let mut command = Command::new(&dispatch);
            command.env_clear();
            measure(command)
        })
        .collect();
    println!();
    println!(
        "process start-up alone ({linked} dispatch exiting at once): wall {}  cpu {}  peak RSS {}",
        ms(median(startup.iter().map(|u| u.wall).collect())),
        ms(median(startup.iter().map(|u| u.cpu).collect())),
        mib(startup.iter().map(|u| u.maxrss).max().unwrap_or_default())
    );
    // The floors on this machine, for reading the figures above: any process's start-up,
    // and what one spawn of a tool costs the process that spawns it.
    let floor: Vec<Usage> = (0..RUNS)
        .map(|_| measure(Command::new("/bin/true")))
        .collect();
    println!(
        "process start-up of /bin/true (the floor for any process here): cpu {}",
        ms(median(floor.iter().map(|u| u.cpu).collect()))
    );
    println!(
        "one spawn of /bin/true, its output piped and read, costs the spawning thread: cpu {}",
        ms(spawn_cost())
    );
    println!("the charm's own work includes spawning and waiting for each hook tool (pipes, poll,");
    println!("posix_spawn) besides parsing, deciding and writing.");
    println!();
    println!(
        "reloads answered: {} (one per changing run)",
        agent.reloads()
    );
    println!("anchor: the upstream Python charm cannot run here (no Juju agent, no ops library),");
    println!("        so these are absolute numbers against the issue's targets, not a ratio.");
}
