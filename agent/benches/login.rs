//! The login benchmark: one controller's API server (the agent's own worker, in this
//! process) over a real single-node Dqlite cluster on loopback (127.61.0.0/24), dialled by
//! the `juju-client` library as a real client dials: a new TCP and TLS connection, then
//! `POST /login` (a password check and two database reads on the server), for the admin
//! user (Argon2id) and for an agent (its random secret's HMAC-SHA256).
//!
//! Prints login latency p50/p99 of sequential logins, logins/s with several clients at
//! once, both for the user and for the agent, and the latency of `GET /status` on a
//! logged-in connection. Asserts no timing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::apiserver::{self, Limits, Settings};
use agent::host::Stop;
use agent::publisher;
use controller_contract::api::LoginRequest;
use dbaccessor::Database;
use dqlite::app::{App, AppConfig};
use juju_client::DialOptions;

const SEQUENTIAL: usize = 200;
const CONCURRENT_CLIENTS: usize = 8;
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(5);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench());
}

/// Sequential logins (each a new TCP and TLS connection), then logins/s with several
/// clients at once, of one `who`; prints both and returns (p50 ms, logins/s).
async fn logins(
    who: &str,
    endpoints: &[String],
    ca: &str,
    request: &LoginRequest,
    options: &DialOptions,
) -> (f64, f64) {
    let mut latencies = Vec::with_capacity(SEQUENTIAL);
    for _ in 0..SEQUENTIAL {
        let began = Instant::now();
        juju_client::dial_endpoints(endpoints, ca, request, options)
            .await
            .expect("login");
        latencies.push(began.elapsed());
    }
    latencies.sort();
    println!(
        "login latency of {who} over {SEQUENTIAL} sequential logins (new TLS connection each): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().expect("latencies"))
    );
    let began = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENT_CLIENTS {
        let (endpoints, ca, request, options) = (
            endpoints.to_vec(),
            ca.to_owned(),
            request.clone(),
            options.clone(),
        );
        clients.spawn(async move {
            let mut done = 0usize;
            let mut failed = 0usize;
            while began.elapsed() < THROUGHPUT_WINDOW {
                match juju_client::dial_endpoints(&endpoints, &ca, &request, &options).await {
                    Ok(_) => done += 1,
                    Err(_) => failed += 1,
                }
            }
            (done, failed)
        });
    }
    let (mut done, mut failed) = (0, 0);
    while let Some(joined) = clients.join_next().await {
        let (d, f) = joined.expect("client");
        done += d;
        failed += f;
    }
    let elapsed = began.elapsed().as_secs_f64();
    let rate = done as f64 / elapsed;
    println!(
        "throughput of {who} with {CONCURRENT_CLIENTS} concurrent clients: {rate:.1} logins/s ({done} in {elapsed:.1} s, {failed} failed)"
    );
    (ms(percentile(&latencies, 0.5)), rate)
}

async fn bench() {
    let data = tempfile::tempdir().expect("tempdir");
    let node_address = "127.61.0.1:17666".to_owned();
    let mut config = AppConfig::new(data.path(), node_address.clone());
    config.role_interval = Duration::from_millis(100);
    let app = App::start(config).await.expect("the node starts");
    app.ready(Duration::from_secs(20))
        .await
        .expect("the node is ready");
    let available = tokio::sync::watch::Sender::new(Some(Database {
        node_id: app.id(),
        own_address: node_address.clone(),
        members: vec![node_address],
        // Plain Dqlite connections: the node here has no certificate (production runs with
        // --dqlite-tls; `dqlite --bench tls_cost` measures what TLS adds to a query).
        tls: None,
    }));

    let dir = tempfile::tempdir().expect("tempdir");
    let ip: IpAddr = "127.61.0.10".parse().expect("ip");
    let address = SocketAddr::new(ip, apiserver::API_PORT);
    let source: publisher::AddressSource = Arc::new(move || Ok(vec![ip]));
    let (stop_tx, stop) = Stop::new();
    let settings = Settings {
        controller_id: "0".into(),
        listen: address,
        dir: dir.path().to_path_buf(),
        source: source.clone(),
        limits: Limits::default(),
        addresses: Arc::new(tokio::sync::watch::Sender::new(None)),
    };
    let publisher = publisher::Settings {
        controller_id: "0".into(),
        api_port: apiserver::API_PORT,
        poll: Duration::from_secs(5),
        source,
    };
    let server = tokio::spawn(apiserver::run(
        settings,
        available.subscribe(),
        stop.clone(),
    ));
    let publishing = tokio::spawn(publisher::run(publisher, available.subscribe(), stop));

    // Wait for the admin password (written before the server listens) and a first login.
    let endpoints = vec![address.to_string()];
    let options = DialOptions {
        timeout: Duration::from_secs(10),
        ..DialOptions::default()
    };
    let started = Instant::now();
    let (ca, request) = loop {
        let ca = std::fs::read_to_string(dir.path().join("ca.pem"));
        let password = std::fs::read_to_string(dir.path().join("admin-password"));
        if let (Ok(ca), Ok(password)) = (ca, password) {
            let request = LoginRequest {
                user: Some("admin".into()),
                tag: None,
                password: password.trim().to_owned(),
            };
            if juju_client::dial_endpoints(&endpoints, &ca, &request, &options)
                .await
                .is_ok()
            {
                break (ca, request);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // An agent's credential as the controller agent registers a unit's: a random secret,
    // hashed with the agents' HMAC (identity::hash_credential).
    let secret = agent::identity::new_password();
    let mut db = dqlite::client::Client::connect_leader(
        &[app.address().to_owned()],
        dqlite::client::Options::default(),
    )
    .await
    .expect("a database client");
    agent::identity::ensure_agent_credential(&mut db, "unit-bench-0", &secret)
        .await
        .expect("register the agent");
    let agent_request = LoginRequest {
        user: None,
        tag: Some("unit-bench-0".into()),
        password: secret,
    };

    let user = logins("the admin (Argon2id)", &endpoints, &ca, &request, &options).await;
    let agent = logins(
        "an agent (HMAC-SHA256)",
        &endpoints,
        &ca,
        &agent_request,
        &options,
    )
    .await;
    println!(
        // No anchor runs here (Juju's API server is not in this tree): the row sets our
        // agent login against our own user login, and says so.
        "summary: login p50 ms, agent (HMAC) | {:.1} | - (no anchor here; our admin, Argon2id: {:.1}) | {:.2}x of the admin's",
        agent.0,
        user.0,
        agent.0 / user.0
    );
    println!(
        "summary: logins/s with {CONCURRENT_CLIENTS} clients, agent (HMAC) | {:.0} | - (no anchor here; our admin, Argon2id: {:.0}) | {:.1}x of the admin's",
        agent.1,
        user.1,
        agent.1 / user.1
    );
    let latencies_p50 = user.0;

    // A read on a logged-in connection: no TLS handshake, no password check.
    let mut connection = juju_client::dial_endpoints(&endpoints, &ca, &request, &options)
        .await
        .expect("login");
    let mut reads = Vec::new();
    for _ in 0..SEQUENTIAL {
        let began = Instant::now();
        connection
            .status(Duration::from_secs(10))
            .await
            .expect("status");
        reads.push(began.elapsed());
    }
    reads.sort();
    println!(
        "GET /status on a logged-in connection: p50 {:.2} ms, p99 {:.2} ms",
        ms(percentile(&reads, 0.5)),
        ms(percentile(&reads, 0.99))
    );
    println!(
        "ratio: a user's login costs {:.0}x a status read on an open connection",
        latencies_p50 / ms(percentile(&reads, 0.5)).max(0.001)
    );

    drop(connection);
    stop_tx.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(15), server).await;
    let _ = tokio::time::timeout(Duration::from_secs(15), publishing).await;
    let _ = app.stop().await;
}
