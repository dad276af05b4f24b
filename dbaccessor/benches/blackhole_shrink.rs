//! Issue 13: shrink to one with black-holed peers, measured over several runs with real
//! `dbaccessor` processes (`tests/support/shrink.rs`, the same scenario the `blackhole`
//! test asserts a 20 s bound on). Each run forms a cluster of `1 + peers` controllers in a
//! network namespace this bench makes, kills the peers and black-holes their addresses,
//! waits 2 s, reduces the survivor's map to itself and sends `POST /reload`; it prints the
//! time to the first write the survivor accepts. Target: under 5 s in every run, with the
//! simulator's 3 s quorum timeout (the survivor must look for a leader that long before it
//! may shrink). Needs root and `ip`; serialize with other network tests:
//!
//! `DBACCESSOR_SHRINK_RUNS=10 DBACCESSOR_SHRINK_PEERS=2 flock /tmp/net-tests.lock cargo bench
//! -p dbaccessor --bench blackhole_shrink`
#![forbid(unsafe_code)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

/// Set in the copy of this bench that runs inside the namespace.
const INNER: &str = "DBACCESSOR_SHRINK_BENCH_INNER";
/// The target for every run.
const TARGET: Duration = Duration::from_secs(5);

fn main() {
    let runs: usize = env_number("DBACCESSOR_SHRINK_RUNS", 10);
    let peers: usize = env_number("DBACCESSOR_SHRINK_PEERS", 2);
    if std::env::var_os(INNER).is_none() {
        let namespace = support::shrink::namespace(&format!("dbacc-shb-{}", std::process::id()));
        let exe = std::env::current_exe().expect("the bench binary knows its path");
        let status = Command::new("ip")
            .args(["netns", "exec", &namespace.name])
            .arg(exe)
            .env(INNER, "1")
            .status()
            .expect("ip netns exec starts");
        drop(namespace);
        std::process::exit(status.code().unwrap_or(1));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    println!(
        "black-hole shrink: {} controllers, {peers} killed and black-holed, the survivor's map \
         reduced to itself {} s later; quorum timeout {} ms, network latency {} ms; {runs} runs",
        peers + 1,
        support::shrink::BLACKHOLED_BEFORE_RELOAD.as_secs(),
        support::shrink::QUORUM_TIMEOUT_MS,
        support::LATENCY_MS,
    );
    println!("run  first write after POST /reload  membership rewritten  failed attempts");
    let mut times = Vec::new();
    for run in 1..=runs {
        let shrink = runtime.block_on(support::shrink::run_once(peers));
        println!(
            "{run:>3}  {:>27} ms  {:>17} ms  {:>15}",
            shrink.first_write.as_millis(),
            shrink
                .rewritten
                .map_or("?".to_owned(), |d| d.as_millis().to_string()),
            shrink.attempts
        );
        times.push(shrink.first_write);
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let within = times.iter().filter(|t| **t < TARGET).count();
    println!(
        "distribution over {runs} runs (s): min {:.2}  median {:.2}  p90 {:.2}  max {:.2}; \
         {within} of {runs} under the {} s target",
        times[0].as_secs_f64(),
        at(0.5).as_secs_f64(),
        at(0.9).as_secs_f64(),
        times[times.len() - 1].as_secs_f64(),
        TARGET.as_secs()
    );
    println!(
        "anchor: before the bounded connect (issue 13, simulator) 4 to 122 s, median about 27 s"
    );
    println!(
        "summary: black-hole shrink, s from POST /reload to first write (max of {runs}) | {:.2} | \
         4-122 before (issue 13) | target < {} s every run ({within}/{runs})",
        times[times.len() - 1].as_secs_f64(),
        TARGET.as_secs()
    );
    println!(
        "summary: black-hole shrink, s from POST /reload to first write (median of {runs}) | \
         {:.2} | 27 before (issue 13) | target < {} s",
        at(0.5).as_secs_f64(),
        TARGET.as_secs()
    );
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
