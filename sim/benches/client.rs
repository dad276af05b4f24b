//! The client benchmark on real processes (release build, as root): after `enable-ha -n 3`
//! has settled (hooks run, three voters), how long until a logged-in client's store holds
//! every controller's address (logins back to back from the client namespace, each a real
//! `juju-sim login`: process start, namespace entry, TLS, Argon2 check). Also the time of
//! one `juju-sim login` once settled. The median of a few runs; prints numbers, asserts no
//! timing.

use std::time::{Duration, Instant};
use test_support::sim::Model as SimModel;

const JUJU_SIM: &str = env!("CARGO_BIN_EXE_juju-sim");
const RUNS: usize = 3;

test_support::sim_model!(
    /// A model destroyed on drop.
    Model
);

impl Model {
    fn new() -> Self {
        Self(SimModel::new(JUJU_SIM, "jsim-bench-client-"))
    }

    /// The stored endpoints after a login (empty when the login failed).
    fn login(&self) -> Vec<String> {
        let output = self.run(&["login"]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        stdout
            .lines()
            .find_map(|line| line.strip_prefix("api-endpoints: "))
            .map(|list| list.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    let mut until_all = Vec::new();
    let mut one_login = Vec::new();
    for _ in 0..RUNS {
        let model = Model::new();
        model.ok(&["bootstrap", "--quorum-timeout-ms", "2000"]);
        assert_eq!(model.login().len(), 1, "the bootstrap controller's login");
        model.ok(&["enable-ha", "-n", "3"]);
        let settled = Instant::now();
        let mut logins = 0;
        while model.login().len() < 3 {
            logins += 1;
            assert!(
                settled.elapsed() < Duration::from_secs(120),
                "the store never held three addresses"
            );
        }
        until_all.push(settled.elapsed());
        println!(
            "run: store held all 3 addresses {:.0} ms after enable-ha settled ({} logins before)",
            settled.elapsed().as_secs_f64() * 1000.0,
            logins
        );
        let began = Instant::now();
        model.login();
        one_login.push(began.elapsed());
    }
    println!(
        "median over {RUNS} runs: enable-ha settled -> store holds every address: {:.0} ms",
        median(until_all).as_secs_f64() * 1000.0
    );
    println!(
        "median over {RUNS} runs: one `juju-sim login` (process, netns, TLS, Argon2): {:.0} ms",
        median(one_login).as_secs_f64() * 1000.0
    );
}
