//! Convergence benchmark with real `dbaccessor` processes on loopback (127.21.100+):
//! time from `POST /reload` with a grown map to the new node being a voter (target under
//! 300 ms), and time from the shrink-to-one decision to the node accepting writes alone
//! (target under 1 s). Prints medians over several runs; asserts no timing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dqlite::client::{Client, Connection, Options};
use dqlite::wire::Value;
use dqlite::NodeRole;
use support::Controller;

const RUNS: u8 = 5;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        println!(
            "dbaccessor convergence on loopback, network latency {} ms, quorum timeout {} ms, {RUNS} runs",
            support::LATENCY_MS,
            support::QUORUM_TIMEOUT_MS
        );
        let mut joins = Vec::new();
        let mut shrinks = Vec::new();
        let mut shrink_totals = Vec::new();
        for run in 0..RUNS {
            let join = join_to_voter(100 + run).await;
            let (shrink, total) = shrink_to_writable(110 + run).await;
            println!(
                "run {run}: reload->voter {:>4} ms | shrink decision->writable {:>4} ms (reload->writable {:>5} ms)",
                join.as_millis(),
                shrink.as_millis(),
                total.as_millis()
            );
            joins.push(join);
            shrinks.push(shrink);
            shrink_totals.push(total);
        }
        println!(
            "median POST /reload with a grown map -> new node a voter: {} ms (target < 300 ms)",
            median(&mut joins).as_millis()
        );
        println!(
            "median shrink-to-one decision -> node accepting writes alone: {} ms (target < 1000 ms)",
            median(&mut shrinks).as_millis()
        );
        println!(
            "median POST /reload with the reduced map -> writes accepted: {} ms (includes the {} ms quorum probe)",
            median(&mut shrink_totals).as_millis(),
            support::QUORUM_TIMEOUT_MS
        );
    });
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// Two controllers run (one voter, one stand-by); a third daemon waits without a map. The
/// grown map is written and the third is told by `POST /reload`: how long until it votes?
async fn join_to_voter(net: u8) -> Duration {
    let ips: Vec<String> = (1..=3).map(|m| format!("127.21.{net}.{m}")).collect();
    let mut controllers: Vec<Controller> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| Controller::new(&i.to_string(), ip))
        .collect();
    controllers[0].write_map(&[("0", &ips[0])]);
    controllers[0].start().await;
    controllers[0].wait_voters(1).await;
    let two = [("0", ips[0].as_str()), ("1", ips[1].as_str())];
    controllers[1].write_map(&two);
    controllers[1].start().await;
    controllers[0].set_map(&two).await;
    controllers[1]
        .wait_for("a member of two", Duration::from_secs(30), |s| {
            s.members.len() == 2 && s.leader_id.is_some()
        })
        .await;
    controllers[2].start().await;

    let three = [
        ("0", ips[0].as_str()),
        ("1", ips[1].as_str()),
        ("2", ips[2].as_str()),
    ];
    for controller in &controllers {
        controller.write_map(&three);
    }
    let newcomer = controllers[2].address();
    let started = Instant::now();
    controllers[2].reload().await;
    for controller in &controllers[..2] {
        controller.reload().await;
    }
    let options = Options {
        connect_timeout: Duration::from_millis(200),
        request_timeout: Duration::from_millis(500),
        ..Options::default()
    };
    loop {
        if let Ok(mut connection) = Connection::connect(&controllers[0].address(), &options).await {
            while let Ok(members) = connection.cluster().await {
                if members
                    .iter()
                    .any(|m| m.address == newcomer && m.role == NodeRole::Voter)
                {
                    return started.elapsed();
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "no voter after 30 s"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Three controllers, two killed with -9, the map reduced to the survivor. Returns the
/// time from the daemon's shrink decision (its log line) to the first accepted write, and
/// from `POST /reload` to that write.
async fn shrink_to_writable(net: u8) -> (Duration, Duration) {
    let ips: Vec<String> = (1..=3).map(|m| format!("127.21.{net}.{m}")).collect();
    let mut controllers: Vec<Controller> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| Controller::new(&i.to_string(), ip))
        .collect();
    controllers[0].write_map(&[("0", &ips[0])]);
    controllers[0].start().await;
    controllers[0].wait_voters(1).await;
    let three = [
        ("0", ips[0].as_str()),
        ("1", ips[1].as_str()),
        ("2", ips[2].as_str()),
    ];
    for controller in &mut controllers[1..] {
        controller.write_map(&three);
        controller.start().await;
    }
    controllers[0].set_map(&three).await;
    for controller in &controllers {
        controller.wait_voters(3).await;
    }
    let all: Vec<String> = controllers.iter().map(Controller::address).collect();
    support::insert_rows(&all, 0, 20).await;

    controllers[1].kill();
    controllers[2].kill();
    let started = Instant::now();
    controllers[0].set_map(&[("0", ips[0].as_str())]).await;
    let options = Options {
        connect_timeout: Duration::from_millis(100),
        request_timeout: Duration::from_millis(200),
        retry_timeout: Duration::from_millis(50),
        ..Options::default()
    };
    let alone = [controllers[0].address()];
    // A write sent before the recovery may sit uncommitted in the survivor's log and be
    // committed by the recovered one-voter cluster: every attempt inserts a new row.
    let mut attempt = 1000;
    let written_at = loop {
        let insert = "INSERT INTO t (n) VALUES (?)";
        attempt += 1;
        let last_error = match Client::connect_leader(&alone, options.clone()).await {
            Ok(mut client) => match client
                .exec("test", insert, &[Value::Integer(attempt)])
                .await
            {
                Ok(_) => break SystemTime::now(),
                Err(e) => format!("insert: {e}"),
            },
            Err(e) => format!("connect: {e}"),
        };
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no write accepted within 30 s (last error {last_error}):\n{}",
            controllers[0].log()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let total = started.elapsed();
    let log = controllers[0].log();
    if std::env::var_os("DBACCESSOR_BENCH_LOG").is_some() {
        println!("survivor's log:\n{log}");
    }
    let decided_at = log
        .lines()
        .find(|line| line.contains("decided shrink to one"))
        .and_then(log_time)
        .unwrap_or_else(|| panic!("no shrink decision in the log:\n{log}"));
    let since_decision = written_at.duration_since(decided_at).unwrap_or_default();
    (since_decision, total)
}

/// The time of an env_logger line, `[2026-11-30T11:08:49.047Z ...`.
fn log_time(line: &str) -> Option<SystemTime> {
    let stamp = line.strip_prefix('[')?.get(..24)?;
    let number = |range: std::ops::Range<usize>| stamp.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second, milli) = (
        number(11..13)?,
        number(14..16)?,
        number(17..19)?,
        number(20..23)?,
    );
    let days = days_from_civil(year, month, day);
    let millis = (((days * 24 + hour) * 60 + minute) * 60 + second) * 1000 + milli;
    Some(UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}
