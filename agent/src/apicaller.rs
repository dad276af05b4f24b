//! The API caller of a machine agent (`jujud-controller --machine-agent`): logs in to a
//! controller as the agent's tag and keeps the agent's `apiaddresses` current over that
//! connection.
//!
//! Each connection reads `agent.conf` afresh, shuffles its addresses ([`dial_order`]: random
//! within a tier, cloud-local first) and dials them with `juju-client`'s staggered,
//! CA-verified dial, so that the agents spread over the controllers and an unreachable one
//! only means another answers. On the connection it follows the address watch
//! (`GET /api-addresses?after=<version>`, a long poll) and writes every change through
//! [`crate::addresses::apply`]. When the connection drops (the controller died, the long
//! poll failed or timed out) it dials again after 100 ms, in a new order; a dial that finds
//! no controller doubles the pause up to 10 s ([`pause_after`]). The pause starts over at
//! every login: an agent that lost one controller after a short connection must not wait as
//! if the controllers were down (the host's own back-off, reset only by a run of 10 s,
//! made agents moved by several controller deaths in a row wait up to 10 s).
//!
//! The caller writes `<agent dir>/api-connection.json` (`contract::agentaddr::ApiConnection`)
//! at every change: which controller it is logged in to, or that it is dialing and why the
//! last connection ended.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use controller_backoff::Backoff;
use controller_contract::agentaddr::{agent_tier, parse_agent_conf, ApiConnection};
use controller_contract::api::LoginRequest;
use juju_client::DialOptions;
use rand::rngs::{SmallRng, SysRng};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::addresses;
use crate::host::{Stop, WorkerSpec};

/// The worker's name.
pub const NAME: &str = "api-caller";

/// The caller's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `<data-dir>/agents/machine-<id>`: `agent.conf` and `api-connection.json`.
    pub agent_dir: PathBuf,
    /// The staggered dial's pace and overall timeout.
    pub dial: DialOptions,
    /// How long one address watch request may take before the connection counts as lost:
    /// the server's long poll plus a margin.
    pub watch_timeout: Duration,
}

impl Settings {
    /// The agent's `agent.conf`.
    pub fn conf(&self) -> PathBuf {
        self.agent_dir.join("agent.conf")
    }

    /// The connection-status file.
    pub fn status_file(&self) -> PathBuf {
        self.agent_dir
            .join(controller_contract::agentaddr::API_CONNECTION_NAME)
    }
}

/// A random generator seeded from the OS (the time, should that fail).
pub fn new_rng() -> SmallRng {
    use rand::TryRng as _;
    let seed = SysRng.try_next_u64().unwrap_or_else(|_| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default()
            ^ u64::from(std::process::id())
    });
    SmallRng::seed_from_u64(seed)
}

/// The order one connection dials `addresses` in: shuffled, then (stably) cloud-local
/// before fan before public; text that is no `ip:port` last.
pub fn dial_order<R: rand::Rng + ?Sized>(addresses: &[String], rng: &mut R) -> Vec<String> {
    let mut order = addresses.to_vec();
    order.shuffle(rng);
    order.sort_by_key(|text| {
        text.parse::<std::net::SocketAddr>()
            .ok()
            .and_then(|address| agent_tier(address.ip()))
            .map_or(u8::MAX, |tier| tier as u8)
    });
    order
}

/// The caller as a worker; `connections` counts the logins across restarts.
pub fn worker(settings: Settings) -> WorkerSpec {
    let connections = Arc::new(AtomicU64::new(0));
    let last_error = Arc::new(std::sync::Mutex::new(String::new()));
    WorkerSpec::new(NAME, &[], move |stop| {
        run(
            settings.clone(),
            connections.clone(),
            last_error.clone(),
            stop,
        )
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// One connection: dial, log in, follow the address watch until it fails or the stop.
/// The first pause before dialling again, and the longest.
pub const FIRST_PAUSE: Duration = Duration::from_millis(100);
pub const MAX_PAUSE: Duration = Duration::from_secs(10);

/// The pause before the next dial: back to [`FIRST_PAUSE`] after a connection that logged
/// in (losing a controller is no reason to wait long for another), doubled up to
/// [`MAX_PAUSE`] after a dial that found none.
pub fn pause_after(backoff: &mut Backoff, logged_in: bool) -> Duration {
    if logged_in {
        backoff.reset();
    }
    backoff.next_delay()
}

/// How one connection ended without an error of the dial.
enum Ended {
    /// The stop was requested.
    Stopped,
    /// It had logged in, then the connection was lost.
    Lost,
}

/// Connects again and again until the stop: after a lost connection at once (after
/// [`FIRST_PAUSE`]), after a failed dial with a doubling pause ([`pause_after`]). Errors
/// other than the dial's (an unreadable agent.conf, a file that cannot be written) end the
/// run, and the host restarts it after its own back-off.
async fn run(
    settings: Settings,
    connections: Arc<AtomicU64>,
    last_error: Arc<std::sync::Mutex<String>>,
    mut stop: Stop,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::new(FIRST_PAUSE, MAX_PAUSE);
    loop {
        let logged_in = match connection(&settings, &connections, &last_error, &mut stop).await? {
            Ok(Ended::Stopped) => return Ok(()),
            Ok(Ended::Lost) => true,
            Err(why) => {
                log::warn!("{why}");
                false
            }
        };
        let pause = pause_after(&mut backoff, logged_in);
        log::info!("dialing again in {} ms", pause.as_millis());
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.requested() => return Ok(()),
        }
    }
}

/// One connection: dial, log in, follow the address watch until it is lost or the stop.
/// The outer error ends the run; the inner one is a dial that found no controller.
async fn connection(
    settings: &Settings,
    connections: &AtomicU64,
    last_error: &std::sync::Mutex<String>,
    stop: &mut Stop,
) -> anyhow::Result<Result<Ended, String>> {
    let conf_path = settings.conf();
    let text = std::fs::read_to_string(&conf_path)
        .with_context(|| format!("cannot read {}", conf_path.display()))?;
    let conf = parse_agent_conf(&text).with_context(|| format!("in {}", conf_path.display()))?;
    let order = dial_order(&conf.api_addresses, &mut new_rng());
    let status = |state: &str, endpoint: &str| ApiConnection {
        tag: conf.tag.clone(),
        state: state.into(),
        endpoint: endpoint.into(),
        first_dial: order.first().cloned().unwrap_or_default(),
        connections: connections.load(Ordering::SeqCst),
        since_ms: now_ms(),
        last_error: last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
    };
    let failed = |why: String| -> String {
        *last_error.lock().unwrap_or_else(|e| e.into_inner()) = why.clone();
        let _ = write_status(settings, &status("dialing", ""));
        why
    };
    write_status(settings, &status("dialing", ""))?;
    log::info!("dialing the controllers in the order {}", order.join(" "));
    let login = LoginRequest {
        user: None,
        tag: Some(conf.tag.clone()),
        password: conf.api_password.clone(),
    };
    let dialed = tokio::select! {
        dialed = juju_client::dial_endpoints(&order, &conf.ca_cert, &login, &settings.dial) => dialed,
        () = stop.requested() => return Ok(Ok(Ended::Stopped)),
    };
    let mut connection = match dialed {
        Ok(connection) => connection,
        Err(e) => return Ok(Err(failed(format!("cannot log in: {e}")))),
    };
    connections.fetch_add(1, Ordering::SeqCst);
    log::info!("logged in as {} through {}", conf.tag, connection.endpoint);
    write_status(settings, &status("connected", &connection.endpoint))?;
    let mut version = None;
    loop {
        let answer = tokio::select! {
            answer = connection.api_addresses(version, settings.watch_timeout) => answer,
            () = stop.requested() => {
                write_status(settings, &status("stopped", ""))?;
                return Ok(Ok(Ended::Stopped));
            }
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                log::warn!("{}", failed(format!("connection lost: {e}")));
                return Ok(Ok(Ended::Lost));
            }
        };
        if version != Some(answer.version) {
            addresses::apply(&conf_path, &answer)?;
            version = Some(answer.version);
        }
    }
}

fn write_status(settings: &Settings, status: &ApiConnection) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(status).expect("plain data serializes");
    addresses::write_atomically(&settings.status_file(), &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// First-dial choices over many connections are spread over every controller: 3000
    /// shuffles of three addresses, each first about 1000 times. The bound is a chi-square
    /// statistic (2 degrees of freedom) below 27.6, which a fair shuffle exceeds with
    /// probability 1e-6; a shuffle that favours one address by 10% exceeds it almost surely.
    #[test]
    fn first_dials_are_spread_over_all_controllers() {
        let addresses: Vec<String> = ["10.0.0.10:17070", "10.0.0.11:17070", "10.0.0.12:17070"]
            .map(str::to_owned)
            .to_vec();
        let draws = 3000;
        let mut counts = [0u32; 3];
        for _ in 0..draws {
            // A generator per connection, as the caller makes one.
            let order = dial_order(&addresses, &mut new_rng());
            let first = addresses
                .iter()
                .position(|a| a == &order[0])
                .expect("the first is one of them");
            counts[first] += 1;
            assert_eq!(order.len(), 3);
        }
        let expected = f64::from(draws) / 3.0;
        let chi_square: f64 = counts
            .iter()
            .map(|&c| (f64::from(c) - expected).powi(2) / expected)
            .sum();
        assert!(
            chi_square < 27.6,
            "counts {counts:?}, chi-square {chi_square}"
        );
        assert!(counts.iter().all(|&c| c >= 800), "counts {counts:?}");
    }

    #[test]
    fn pause_table() {
        // Each run: whether each connection logged in, and the pauses that follow.
        let check = |logged_in: &[bool], expected: &[u64]| {
            let mut backoff = Backoff::new(FIRST_PAUSE, MAX_PAUSE);
            let pauses: Vec<u64> = logged_in
                .iter()
                .map(|&logged_in| pause_after(&mut backoff, logged_in).as_millis() as u64)
                .collect();
            assert_eq!(pauses, expected, "{logged_in:?}");
        };
        check(&[false, false, false], &[100, 200, 400]);
        check(
            &[false; 9],
            &[100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000],
        );
        // A connection that logged in resets the pause, however long it lasted.
        let failed_then_logged_in = [false, false, false, false, false, false, false, false, true];
        check(
            &failed_then_logged_in,
            &[100, 200, 400, 800, 1600, 3200, 6400, 10_000, 100],
        );
        check(&[true, false, true, true], &[100, 200, 100, 100]);
    }

    #[test]
    fn cloud_local_addresses_come_first_in_any_order() {
        let addresses: Vec<String> = ["8.8.8.8:17070", "10.0.0.1:17070", "junk", "10.0.0.2:17070"]
            .map(str::to_owned)
            .to_vec();
        let mut firsts = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let order = dial_order(&addresses, &mut new_rng());
            assert!(order[0].starts_with("10.0.0."), "{order:?}");
            assert!(order[1].starts_with("10.0.0."), "{order:?}");
            assert_eq!(order[2], "8.8.8.8:17070");
            assert_eq!(order[3], "junk");
            firsts.insert(order[0].clone());
        }
        assert_eq!(
            firsts.len(),
            2,
            "both cloud-local addresses lead some orders"
        );
    }
}
