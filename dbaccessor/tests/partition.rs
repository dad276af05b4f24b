//! Issue 13's partition scenario with real `dbaccessor` processes, each in a network
//! namespace the test makes (`support::partition`; 10.222.0.0/24 inside them, nothing on
//! the host's network): of three controllers, a follower is cut off for 30 s and healed,
//! then the other follower is cut. The healed follower must catch up with the leader's log
//! (as it was at the heal) and writes must go on after the second cut, each within
//! `BOUND` (generous: the targets are 2 s, which `cargo bench -p dbaccessor --bench
//! partition` measures). The test re-runs itself inside the hub namespace, where its
//! client is. Needs root and `ip`; serialize with `flock /tmp/net-tests.lock`. About 45 s.
//! `DBACCESSOR_PARTITION_KEEP_LOGS=<dir>` keeps the three daemons' logs there (with
//! `LIBRAFT_TRACE=1`, raft's trace too: `ip netns exec` and the test pass the environment on).
#![forbid(unsafe_code)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Set (to the namespaces' prefix) in the child that runs inside the hub.
const INNER: &str = "DBACCESSOR_PARTITION_INNER";
const PASSED: &str = "partition: passed";
/// How long the first follower stays cut (the 30 s).
const CUT_FOR: Duration = Duration::from_secs(30);
/// Generous bound on the catch-up and on the writes' pause (the targets are 2 s).
const BOUND: Duration = Duration::from_secs(10);

#[test]
fn a_healed_follower_catches_up_and_writes_go_on_when_the_other_is_cut() {
    const NAME: &str = "a_healed_follower_catches_up_and_writes_go_on_when_the_other_is_cut";
    if let Ok(prefix) = std::env::var(INNER) {
        let network = support::partition::Network::attach(&prefix);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime starts");
        let run = runtime.block_on(support::partition::run_once(&network, CUT_FOR));
        println!(
            "partition: leader node {}, node {} cut for {} s ({} writes meanwhile), caught up \
             {} ms after the heal; node {} cut: writes resumed after {} ms, longest pause {} ms",
            run.leader,
            run.first_cut,
            CUT_FOR.as_secs(),
            run.writes_while_cut,
            run.catch_up.as_millis(),
            run.second_cut,
            run.resume.as_millis(),
            run.stall.as_millis()
        );
        assert!(run.catch_up < BOUND, "catch-up took {:?}", run.catch_up);
        assert!(run.resume < BOUND, "writes resumed after {:?}", run.resume);
        assert!(run.stall < BOUND, "writes paused for {:?}", run.stall);
        println!("{PASSED}");
        return;
    }
    let prefix = format!("dbacc-pt-{}", std::process::id());
    let network = support::partition::Network::create(&prefix);
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &network.hub.name, "timeout", "300"])
        .arg(exe)
        .args([NAME, "--exact", "--nocapture"])
        .env(INNER, &prefix)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("ip netns exec starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let passed = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .inspect(|line| println!("{line}"))
        .any(|line| line == PASSED);
    let _ = child.wait();
    drop(network);
    assert!(passed, "the inner test failed (its output is above)");
}
