//! Issue 13's partition targets, measured over several runs with real `dbaccessor`
//! processes (`tests/support/partition.rs`, the scenario `tests/partition.rs` asserts
//! generous bounds on): three controllers, each in a network namespace of its own behind a
//! bridge; a follower is cut for `DBACCESSOR_PARTITION_CUT_S` (30) seconds and healed, then
//! the other follower is cut. Prints how long the healed follower took to reach the
//! leader's log as it was at the heal, and how long writes (one every 20 ms, through a
//! client in the hub namespace) stopped after the second cut. Targets: 2 s each. Needs root
//! and `ip`; serialize with other network tests:
//!
//! `DBACCESSOR_PARTITION_RUNS=3 flock /tmp/net-tests.lock cargo bench -p dbaccessor --bench
//! partition`
#![forbid(unsafe_code)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

/// Set (to the namespaces' prefix) in the copy of this bench that runs inside the hub.
const INNER: &str = "DBACCESSOR_PARTITION_BENCH_INNER";
const TARGET: Duration = Duration::from_secs(2);

fn main() {
    let runs: u64 = env_number("DBACCESSOR_PARTITION_RUNS", 3);
    let cut_for = Duration::from_secs(env_number("DBACCESSOR_PARTITION_CUT_S", 30));
    let Ok(prefix) = std::env::var(INNER) else {
        let prefix = format!("dbacc-pb-{}", std::process::id());
        let network = support::partition::Network::create(&prefix);
        let exe = std::env::current_exe().expect("the bench binary knows its path");
        let status = Command::new("ip")
            .args(["netns", "exec", &network.hub.name])
            .arg(exe)
            .env(INNER, &prefix)
            .status()
            .expect("ip netns exec starts");
        drop(network);
        std::process::exit(status.code().unwrap_or(1));
    };
    let network = support::partition::Network::attach(&prefix);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    println!(
        "partition: 3 controllers (network latency {} ms, quorum timeout 3000 ms), a follower \
         cut for {} s and healed, then the other follower cut; writes every 20 ms; {runs} runs",
        support::LATENCY_MS,
        cut_for.as_secs()
    );
    println!(
        "run  writes while cut  catch-up after heal  writes resumed after 2nd cut  longest pause"
    );
    let (mut catch_ups, mut resumes, mut stalls) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        let measured = runtime.block_on(support::partition::run_once(&network, cut_for));
        println!(
            "{run:>3}  {:>15}  {:>16} ms  {:>25} ms  {:>10} ms",
            measured.writes_while_cut,
            measured.catch_up.as_millis(),
            measured.resume.as_millis(),
            measured.stall.as_millis()
        );
        catch_ups.push(measured.catch_up);
        resumes.push(measured.resume);
        stalls.push(measured.stall);
    }
    let max = |v: &[Duration]| v.iter().max().copied().unwrap_or_default().as_secs_f64();
    println!(
        "anchor: before (issue 13, libdqlite's connect): writes stalled 6 to 25 s after the \
         second cut; a follower healed after an 8 s cut caught up in 10.8 s"
    );
    println!(
        "summary: partition, s from heal to caught up (max of {runs}, {} s cut) | {:.2} | 10.8 \
         before (8 s cut) | target < {} s",
        cut_for.as_secs(),
        max(&catch_ups),
        TARGET.as_secs()
    );
    println!(
        "summary: partition, s of write pause after the 2nd cut (max of {runs}) | {:.2} | 6-25 \
         before | target < {} s",
        max(&stalls),
        TARGET.as_secs()
    );
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
