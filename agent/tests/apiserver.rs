//! The API server over real TLS against a real node: login answers the published
//! addresses; wrong passwords, malformed and oversized bodies are refused with the right
//! status; a client trusting another CA is refused by TLS; a second controller serves with
//! the first one's CA (read from the database); thousands of generated malformed bodies
//! never crash or wedge the server; application leadership claimed, extended, lapsed and
//! read through `/leadership`.

mod support;

use support::ApiClient;

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agent::apiserver::{
    self, ApiAddressesResult, LeadershipResult, Limits, LoginResult, Settings, StatusResult,
};
use agent::ca::Ca;
use agent::host::Stop;
use agent::publisher;
use dbaccessor::Database;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use tokio::sync::watch;

/// One controller's API server (and publisher) running in this process.
struct Controller {
    dir: tempfile::TempDir,
    address: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Controller {
    fn start(id: &str, ip: &str, available: &watch::Receiver<Option<Database>>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ip: IpAddr = ip.parse().expect("ip");
        let source: publisher::AddressSource = Arc::new(move || Ok(vec![ip]));
        let (stop_tx, stop) = Stop::new();
        let settings = Settings {
            controller_id: id.into(),
            listen: SocketAddr::new(ip, apiserver::API_PORT),
            dir: dir.path().to_path_buf(),
            source: source.clone(),
            limits: Limits {
                request_timeout: Duration::from_secs(5),
                long_poll: Duration::from_secs(2),
                ..Limits::default()
            },
            addresses: Arc::new(watch::Sender::new(None)),
        };
        let publisher = publisher::Settings {
            controller_id: id.into(),
            api_port: apiserver::API_PORT,
            poll: Duration::from_millis(100),
            source,
        };
        let tasks = vec![
            tokio::spawn(apiserver::run(settings, available.clone(), stop.clone())),
            tokio::spawn(publisher::run(publisher, available.clone(), stop)),
        ];
        Controller {
            address: SocketAddr::new(ip, apiserver::API_PORT),
            dir,
            stop: stop_tx,
            tasks,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.path("ca.pem")).expect("ca.pem")
    }

    /// Waits until it accepts TLS connections.
    async fn wait_listening(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.path("ca.pem").exists() {
                let client = ApiClient::new(&self.ca_pem(), self.address);
                if client.tls().await.is_ok() {
                    return;
                }
            }
            for task in &self.tasks {
                assert!(
                    !task.is_finished(),
                    "a worker of {} ended early",
                    self.address
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never listened",
                self.address
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("stops within 15 s")
                .expect("task")
                .expect("worker returns cleanly");
        }
    }
}

/// TCP_NODELAY of this process's socket connected from `peer` to `local` (the server's
/// side of an accepted connection), read through a `pidfd_getfd` copy so that the server's
/// socket is never borrowed; `None` while there is no such socket.
fn accepted_nodelay(local: SocketAddr, peer: SocketAddr) -> Option<bool> {
    let me = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )
    .expect("pidfd_open on this process");
    for entry in std::fs::read_dir("/proc/self/fd").expect("list /proc/self/fd") {
        let Some(fd) = entry
            .ok()
            .and_then(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        else {
            continue;
        };
        let flags = rustix::process::PidfdGetfdFlags::empty();
        let Ok(copy) = rustix::process::pidfd_getfd(&me, fd, flags) else {
            continue;
        };
        let named = |address: rustix::io::Result<rustix::net::SocketAddrAny>| {
            address.ok().and_then(|a| SocketAddr::try_from(a).ok())
        };
        let peer_of = rustix::net::getpeername(&copy).map(|p| p.ok_or(rustix::io::Errno::NOTCONN));
        if named(rustix::net::getsockname(&copy)) == Some(local)
            && named(peer_of.and_then(|p| p)) == Some(peer)
        {
            return Some(rustix::net::sockopt::tcp_nodelay(&copy).expect("read TCP_NODELAY"));
        }
    }
    None
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("file").permissions().mode() & 0o777
}

async fn available_for(cluster: &support::Cluster) -> watch::Sender<Option<Database>> {
    watch::Sender::new(Some(Database {
        node_id: cluster.apps[0].id(),
        own_address: cluster.addresses[0].clone(),
        members: cluster.addresses.clone(),
        tls: None,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_answers_the_addresses_and_refuses_what_it_must() {
    let cluster = support::Cluster::start(3, 1).await;
    let available = available_for(&cluster).await;
    let first = Controller::start("0", "127.60.3.11", &available.subscribe());
    first.wait_listening().await;
    // The second controller starts once the first has bootstrapped the identity.
    let second = Controller::start("1", "127.60.3.12", &available.subscribe());
    second.wait_listening().await;

    // One CA: the second controller took the first one's from the database.
    assert_eq!(first.ca_pem(), second.ca_pem());
    assert_eq!(mode(&first.path("ca.key")), 0o600);
    assert_eq!(mode(&second.path("ca.key")), 0o600);
    // The bootstrap admin password exists only where it was made, 0600.
    assert_eq!(mode(&first.path("admin-password")), 0o600);
    assert!(!second.path("admin-password").exists());
    let password = std::fs::read_to_string(first.path("admin-password"))
        .expect("admin password")
        .trim()
        .to_owned();

    // A client trusting the CA logs in at either controller and learns both.
    let mut client = ApiClient::new(&first.ca_pem(), second.address);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let result = loop {
        let (status, body) = client
            .login(serde_json::json!({"user": "admin", "password": password}))
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let result: LoginResult = serde_json::from_slice(&body).expect("login result");
        if result.servers.len() == 2 || tokio::time::Instant::now() > deadline {
            break result;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(result.controller_uuid.len(), 36);
    // The server's side of a connection has Nagle off: its answers are several small TLS
    // records, and with Nagle on each later one waited for the client's delayed ACK (every
    // login took 44 ms instead of 1).
    let dialled = tokio::net::TcpStream::connect(second.address)
        .await
        .expect("dial the API");
    let ours = dialled.local_addr().expect("our address");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let nodelay = loop {
        if let Some(nodelay) = accepted_nodelay(second.address, ours) {
            break nodelay;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never accepted {ours}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(nodelay, "the API server's accepted socket has TCP_NODELAY");
    drop(dialled);
    let values: Vec<Vec<String>> = result
        .servers
        .iter()
        .map(|hosts| {
            hosts
                .iter()
                .map(|h| format!("{}:{} {} {}", h.value, h.port, h.kind, h.scope))
                .collect()
        })
        .collect();
    assert_eq!(
        values,
        vec![
            vec!["127.60.3.11:17070 ipv4 local-machine".to_owned()],
            vec!["127.60.3.12:17070 ipv4 local-machine".to_owned()],
        ]
    );

    let mut client = ApiClient::new(&first.ca_pem(), first.address);
    let check = |status: u16, body: &[u8], expected: u16, says: &str| {
        let text = String::from_utf8_lossy(body);
        assert_eq!(status, expected, "{text}");
        assert!(text.contains(says), "{text}");
    };
    let (status, body) = client
        .login(serde_json::json!({"user": "admin", "password": "wrong"}))
        .await;
    check(status, &body, 401, "invalid login");
    let (status, body) = client
        .login(serde_json::json!({"tag": "machine-7", "password": password}))
        .await;
    check(status, &body, 401, "invalid login");
    let (status, body) = client
        .request(
            "POST",
            "/login",
            b"{\"user\": \"admin\", \"password\": ".to_vec(),
        )
        .await
        .expect("answer");
    check(status, &body, 400, "malformed login");
    let (status, body) = client
        .login(serde_json::json!({"user": "admin", "tag": "machine-0", "password": "x"}))
        .await;
    check(status, &body, 400, "exactly one of user and tag");
    let (status, body) = client
        .login(serde_json::json!({"user": "admin", "password": "x", "extra": 1}))
        .await;
    check(status, &body, 400, "unknown field");
    let (status, body) = client
        .request("POST", "/login", vec![b' '; 65 * 1024])
        .await
        .expect("answer");
    check(status, &body, 413, "too large");
    // A 413 closes the connection (the rest of a body could be anything).
    client.reconnect_next();
    let (status, _) = client
        .request("GET", "/login", Vec::new())
        .await
        .expect("answer");
    assert_eq!(status, 405);
    let (status, _) = client
        .request("POST", "/nowhere", Vec::new())
        .await
        .expect("answer");
    assert_eq!(status, 404);
    // A chunked body over the limit, with no length announced, is cut off at the limit.
    let mut chunked =
        b"POST /login HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..20 {
        chunked.extend_from_slice(format!("{:x}\r\n", 8192).as_bytes());
        chunked.extend_from_slice(&[b'a'; 8192]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(client.raw(&chunked).await, Some(413));

    // A client trusting another CA does not get past the handshake.
    let stranger = ApiClient::new(&Ca::generate().expect("ca").cert_pem, first.address);
    let refused = stranger.tls().await.expect_err("another CA is refused");
    assert!(refused.contains("certificate"), "{refused}");

    // Still serving after all that.
    let (status, _) = client
        .login(serde_json::json!({"user": "admin", "password": password}))
        .await;
    assert_eq!(status, 200);

    // The login holds for its connection: the status reads on it, not on another, and a
    // failed login on it ends what the earlier one allowed.
    let (status, body) = client
        .request("GET", "/status", Vec::new())
        .await
        .expect("answer");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: StatusResult = serde_json::from_slice(&body).expect("a status");
    assert_eq!(answer.answered_by, "0");
    assert_eq!(answer.schema_version, agent::schema::latest_version());
    let ids: Vec<&str> = answer
        .controllers
        .iter()
        .map(|c| c.controller_id.as_str())
        .collect();
    assert_eq!(ids, ["0", "1"]);
    assert_eq!(answer.controllers[1].api_addresses, ["127.60.3.12:17070"]);
    assert_eq!(answer.controller_config["juju-mgmt-space"], "");

    // The address watch: at once without `after`; with the current version it waits for a
    // change (a space and juju-mgmt-space written into the database) or the long poll.
    let (status, body) = client
        .request("GET", "/api-addresses", Vec::new())
        .await
        .expect("answer");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let first_list: ApiAddressesResult = serde_json::from_slice(&body).expect("addresses");
    assert_eq!(first_list.servers.len(), 2);
    assert_eq!(first_list.mgmt_space, "");
    let began = std::time::Instant::now();
    let (status, body) = client
        .request(
            "GET",
            &format!("/api-addresses?after={}", first_list.version),
            Vec::new(),
        )
        .await
        .expect("answer");
    assert_eq!(status, 200);
    let unchanged: ApiAddressesResult = serde_json::from_slice(&body).expect("addresses");
    assert_eq!(unchanged.version, first_list.version);
    assert!(
        began.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        began.elapsed()
    );
    let mut db = cluster.client().await;
    let waiting = {
        let mut watcher = ApiClient::new(&first.ca_pem(), first.address);
        let (status, _) = watcher
            .login(serde_json::json!({"user": "admin", "password": password}))
            .await;
        assert_eq!(status, 200);
        let after = first_list.version;
        tokio::spawn(async move {
            let began = std::time::Instant::now();
            let answer = watcher
                .request("GET", &format!("/api-addresses?after={after}"), Vec::new())
                .await
                .expect("answer");
            (answer, began.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.exec(
        "controller",
        "INSERT INTO space (name, cidr) VALUES ('loop', '127.60.3.0/24'); UPDATE controller_config SET value = 'loop' WHERE key = 'juju-mgmt-space'",
        &[],
    )
    .await
    .expect("write the space");
    let ((status, body), waited) = waiting.await.expect("the watcher");
    assert_eq!(status, 200);
    assert!(
        waited < Duration::from_millis(1900),
        "woken by the change: {waited:?}"
    );
    let changed: ApiAddressesResult = serde_json::from_slice(&body).expect("addresses");
    assert_ne!(changed.version, first_list.version);
    assert_eq!(changed.mgmt_space, "loop");
    assert!(
        changed
            .servers
            .iter()
            .flatten()
            .all(|h| h.space_name == "loop"),
        "{changed:?}"
    );
    let (status, body) = client
        .request("GET", "/api-addresses?after=x", Vec::new())
        .await
        .expect("answer");
    check(status, &body, 400, "is not a version");

    // The controller config through the API: a known space is set, an unknown one refused
    // with nothing written, controller-uuid never; GET is not the way to change it.
    let (status, body) = client
        .request(
            "POST",
            "/controller-config",
            br#"{"settings": {"juju-mgmt-space": "nosuch"}}"#.to_vec(),
        )
        .await
        .expect("answer");
    check(status, &body, 400, "not found (known spaces: loop)");
    let (status, body) = client
        .request(
            "POST",
            "/controller-config",
            br#"{"settings": {"controller-uuid": "x"}}"#.to_vec(),
        )
        .await
        .expect("answer");
    check(status, &body, 400, "controller-uuid cannot be changed");
    let (status, body) = client
        .request("POST", "/controller-config", br#"{"settings": 3}"#.to_vec())
        .await
        .expect("answer");
    check(status, &body, 400, "malformed config");
    let (status, body) = client
        .request(
            "POST",
            "/controller-config",
            br#"{"settings": {"juju-mgmt-space": ""}}"#.to_vec(),
        )
        .await
        .expect("answer");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let config: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&body).expect("the config");
    assert_eq!(config["juju-mgmt-space"], "");
    assert!(config.contains_key("controller-uuid"));
    let (status, _) = client
        .request("GET", "/controller-config", Vec::new())
        .await
        .expect("answer");
    assert_eq!(status, 405);
    let mut fresh = ApiClient::new(&first.ca_pem(), first.address);
    let (status, body) = fresh
        .request("GET", "/api-addresses", Vec::new())
        .await
        .expect("answer");
    check(status, &body, 401, "not logged in");
    let mut fresh = ApiClient::new(&first.ca_pem(), first.address);
    let (status, body) = fresh
        .request("GET", "/status", Vec::new())
        .await
        .expect("answer");
    check(status, &body, 401, "not logged in");
    let (status, _) = client
        .login(serde_json::json!({"user": "admin", "password": "wrong"}))
        .await;
    assert_eq!(status, 401);
    let (status, body) = client
        .request("GET", "/status", Vec::new())
        .await
        .expect("answer");
    check(status, &body, 401, "not logged in");
    let (status, _) = client
        .request("POST", "/status", Vec::new())
        .await
        .expect("answer");
    assert_eq!(status, 405);
    second.stop().await;
    first.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_passes_over_dead_addresses_and_stores_what_worked_first() {
    let cluster = support::Cluster::start(5, 1).await;
    let available = available_for(&cluster).await;
    let controller = Controller::start("0", "127.60.5.11", &available.subscribe());
    controller.wait_listening().await;
    let password = std::fs::read_to_string(controller.path("admin-password"))
        .expect("admin password")
        .trim()
        .to_owned();
    // A controller that accepts TCP and then never speaks (hung), and one that refuses.
    let hung = std::net::TcpListener::bind("127.60.5.12:17070").expect("hung listener");
    let hung_address = hung.local_addr().expect("address").to_string();
    let refused_address = "127.60.5.13:17070".to_owned();
    let good = controller.address.to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = juju_client::Store::new(dir.path());
    let stored = vec![hung_address.clone(), refused_address.clone(), good.clone()];
    store
        .update_controllers(|c| {
            c.controllers.insert(
                "test".into(),
                juju_client::ControllerDetails {
                    api_endpoints: stored.clone(),
                    ca_cert: controller.ca_pem(),
                    ..Default::default()
                },
            );
            c.current_controller = Some("test".into());
        })
        .expect("store");
    let account = |password: &str| juju_client::Account {
        user: "admin".into(),
        password: password.into(),
        other: Default::default(),
    };
    let options = juju_client::DialOptions {
        stagger: Duration::from_millis(200),
        timeout: Duration::from_secs(10),
    };

    // A wrong password is refused by the verified controller and not stored.
    let error = juju_client::login(&store, None, Some(account("wrong")), &options)
        .await
        .expect_err("a wrong password");
    assert!(
        format!("{:#}", anyhow::Error::from(error)).contains("HTTP 401: invalid login"),
        "the 401 is named"
    );
    assert!(store.accounts().expect("accounts").controllers.is_empty());

    // The right one: the hung and the refused addresses are passed over, the controller's
    // answer is stored with the address used first. Its own addresses are loopback (for
    // local clients only), so the rest of what was stored stays behind it.
    let (name, mut connection) =
        juju_client::login(&store, None, Some(account(&password)), &options)
            .await
            .expect("login");
    assert_eq!(name, "test");
    assert_eq!(connection.endpoint, good);
    let (_, details) = store.controller(None).expect("stored");
    assert_eq!(
        details.api_endpoints,
        [good.clone(), hung_address, refused_address]
    );
    assert_eq!(details.uuid, connection.login.controller_uuid);
    assert_eq!(store.account("test").expect("account").password, password);

    // The status reads on the logged-in connection.
    let status = connection
        .status(Duration::from_secs(10))
        .await
        .expect("status");
    assert_eq!(status.controller_uuid, details.uuid);
    assert_eq!(status.controllers[0].api_addresses, ["127.60.5.11:17070"]);

    // The stored account logs in again, and the first address dialled is the good one.
    let (_, connection) = juju_client::login(&store, None, None, &options)
        .await
        .expect("login");
    assert_eq!(connection.endpoint, good);

    // Trusting another CA, every address fails and the error says why for each.
    store
        .update_controllers(|c| {
            if let Some(test) = c.controllers.get_mut("test") {
                test.ca_cert = Ca::generate().expect("ca").cert_pem;
            }
        })
        .expect("store");
    let options = juju_client::DialOptions {
        timeout: Duration::from_secs(2),
        ..options
    };
    let error = format!(
        "{:#}",
        anyhow::Error::from(
            juju_client::login(&store, None, None, &options)
                .await
                .expect_err("another CA")
        )
    );
    assert!(
        error.contains(&format!("{good}: TLS: invalid peer certificate")),
        "{error}"
    );
    assert!(
        error.contains("127.60.5.12:17070: no answer within 2s"),
        "{error}"
    );
    assert!(error.contains("127.60.5.13:17070: connect:"), "{error}");
    drop(hung);
    controller.stop().await;
    cluster.stop().await;
}

/// Bodies that are not a valid login: arbitrary bytes, JSON-ish text, and JSON values of
/// the wrong shape.
fn malformed_bodies() -> impl Strategy<Value = Vec<u8>> {
    let json_ish = "[{}\\[\\]\":,a-z0-9 \\\\.eE+-]{0,300}".prop_map(String::into_bytes);
    let bytes = proptest::collection::vec(proptest::num::u8::ANY, 0..2000);
    let leaf = proptest::prop_oneof![
        proptest::strategy::Just(serde_json::Value::Null),
        proptest::bool::ANY.prop_map(serde_json::Value::from),
        proptest::num::i64::ANY.prop_map(serde_json::Value::from),
        "[a-z]{0,8}".prop_map(serde_json::Value::from),
    ];
    let values = leaf
        .prop_recursive(3, 24, 4, |inner| {
            proptest::prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(
                    proptest::prop_oneof![
                        proptest::strategy::Just("user".to_owned()),
                        proptest::strategy::Just("password".to_owned()),
                        proptest::strategy::Just("tag".to_owned()),
                        "[a-z]{1,6}",
                    ],
                    inner,
                    0..4
                )
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            ]
        })
        .prop_map(|value| value.to_string().into_bytes());
    proptest::prop_oneof![bytes, json_ish, values]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_malformed_bodies_never_crash_or_wedge_the_server() {
    let cluster = support::Cluster::start(4, 1).await;
    let available = available_for(&cluster).await;
    let controller = Controller::start("0", "127.60.4.11", &available.subscribe());
    controller.wait_listening().await;
    let password = std::fs::read_to_string(controller.path("admin-password"))
        .expect("admin password")
        .trim()
        .to_owned();
    let mut client = ApiClient::new(&controller.ca_pem(), controller.address);

    let strategy = malformed_bodies();
    let mut runner = TestRunner::deterministic();
    let mut seen = std::collections::BTreeMap::new();
    for case in 0..3000 {
        let body = strategy
            .new_tree(&mut runner)
            .expect("a generated body")
            .current();
        let (status, answer) = client
            .request("POST", "/login", body.clone())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "case {case}: {e}; body {:?}",
                    String::from_utf8_lossy(&body)
                )
            });
        // A body that happens to be a well-formed login of an unknown name is a 401.
        assert!(
            matches!(status, 400 | 401),
            "case {case}: {status} {} for {:?}",
            String::from_utf8_lossy(&answer),
            String::from_utf8_lossy(&body)
        );
        *seen.entry(status).or_insert(0) += 1;
    }
    assert!(seen[&400] > 2000, "{seen:?}");
    for task in &controller.tasks {
        assert!(!task.is_finished(), "the server ended");
    }
    let (status, _) = client
        .login(serde_json::json!({"user": "admin", "password": password}))
        .await;
    assert_eq!(status, 200, "still serving logins");
    controller.stop().await;
    cluster.stop().await;
}

async fn leadership(
    client: &mut ApiClient,
    unit: &str,
    duration_ms: Option<u64>,
) -> (u16, Option<LeadershipResult>) {
    let mut body = serde_json::json!({"application": "my-app", "unit": unit});
    if let Some(ms) = duration_ms {
        body["duration-ms"] = ms.into();
    }
    let (status, answer) = client
        .request("POST", "/leadership", body.to_string().into_bytes())
        .await
        .expect("an answer");
    (status, serde_json::from_slice(&answer).ok())
}

async fn leader(client: &mut ApiClient) -> LeadershipResult {
    let (status, answer) = client
        .request("GET", "/leadership?application=my-app", Vec::new())
        .await
        .expect("an answer");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    serde_json::from_slice(&answer).expect("a leadership result")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_leadership_is_claimed_extended_and_lapses_through_the_api() {
    let cluster = support::Cluster::start(7, 1).await;
    let available = available_for(&cluster).await;
    let controller = Controller::start("0", "127.60.7.11", &available.subscribe());
    controller.wait_listening().await;
    let password = std::fs::read_to_string(controller.path("admin-password"))
        .expect("admin password")
        .trim()
        .to_owned();
    let mut client = ApiClient::new(&controller.ca_pem(), controller.address);
    let (status, _) = leadership(&mut client, "my-app/0", None).await;
    assert_eq!(status, 401, "not logged in");
    let (status, _) = client
        .login(serde_json::json!({"user": "admin", "password": password}))
        .await;
    assert_eq!(status, 200);

    // Nobody leads; my-app/0 claims; my-app/1 is refused while it holds.
    assert_eq!(leader(&mut client).await.leader, None);
    let (status, first) = leadership(&mut client, "my-app/0", Some(1500)).await;
    assert_eq!(status, 200);
    let first = first.expect("a result");
    assert_eq!(
        (first.leader.as_deref(), first.is_leader),
        (Some("my-app/0"), true)
    );
    let (_, other) = leadership(&mut client, "my-app/1", None).await;
    let other = other.expect("a result");
    assert_eq!(
        (other.leader.as_deref(), other.is_leader),
        (Some("my-app/0"), false)
    );
    // The leader asks again: extended (a minute now), still the leader.
    let (_, again) = leadership(&mut client, "my-app/0", Some(60_000)).await;
    let again = again.expect("a result");
    assert!(again.is_leader && again.remaining_ms > 30_000, "{again:?}");
    // An extension keeps the grant: the same token (unit + start).
    assert!(first.start_ms.is_some(), "{first:?}");
    assert_eq!(again.start_ms, first.start_ms);
    let seen = leader(&mut client).await;
    assert_eq!(seen.leader.as_deref(), Some("my-app/0"));
    assert_eq!(seen.start_ms, first.start_ms);
    assert!(!seen.is_leader, "a read names no unit");

    // A unit agent claims only for itself.
    let mut db = cluster.client().await;
    let unit_password = "unit-password";
    let hash = agent::identity::hash_password(unit_password).expect("hash");
    db.exec(
        agent::schema::DATABASE,
        "INSERT INTO credential (name, password_hash) VALUES ('unit-my-app-1', ?)",
        &[dqlite::wire::Value::Text(hash)],
    )
    .await
    .expect("credential");
    let mut unit = ApiClient::new(&controller.ca_pem(), controller.address);
    let (status, _) = unit
        .login(serde_json::json!({"tag": "unit-my-app-1", "password": unit_password}))
        .await;
    assert_eq!(status, 200);

    // A unit agent's random secret registered by its machine's controller agent: an older
    // Argon2id hash of it is replaced by the agents' HMAC once, and logins verify either.
    let secret = agent::identity::new_password();
    let old = agent::identity::hash_password(&secret).expect("hash");
    db.exec(
        agent::schema::DATABASE,
        "INSERT INTO credential (name, password_hash) VALUES ('unit-my-app-2', ?)",
        &[dqlite::wire::Value::Text(old)],
    )
    .await
    .expect("credential");
    let mut second = ApiClient::new(&controller.ca_pem(), controller.address);
    let login = serde_json::json!({"tag": "unit-my-app-2", "password": secret});
    assert_eq!(
        second.login(login.clone()).await.0,
        200,
        "the Argon2id hash"
    );
    let wrote = agent::identity::ensure_agent_credential(&mut db, "unit-my-app-2", &secret)
        .await
        .expect("register");
    assert!(wrote, "the Argon2id hash of an agent's secret is replaced");
    let stored = agent::identity::password_hash(&mut db, "unit-my-app-2")
        .await
        .expect("read")
        .expect("a hash");
    assert!(stored.starts_with("$hmac-sha256$"), "{stored}");
    let wrote = agent::identity::ensure_agent_credential(&mut db, "unit-my-app-2", &secret)
        .await
        .expect("register");
    assert!(!wrote, "a current hash that verifies is kept");
    assert_eq!(second.login(login).await.0, 200, "the HMAC");
    let wrong = serde_json::json!({"tag": "unit-my-app-2", "password": format!("{secret}x")});
    assert_eq!(second.login(wrong).await.0, 401);
    let unknown = serde_json::json!({"tag": "unit-my-app-9", "password": secret});
    assert_eq!(second.login(unknown).await.0, 401);
    let (status, _) = leadership(&mut unit, "my-app/2", None).await;
    assert_eq!(status, 403);
    let (status, own) = leadership(&mut unit, "my-app/1", Some(1000)).await;
    assert_eq!(status, 200);
    assert!(!own.expect("a result").is_leader, "my-app/0 still leads");

    // The leader stops asking: once its grant lapses (by the database's clock), another
    // unit's claim wins.
    let (_, short) = leadership(&mut client, "my-app/0", Some(1000)).await;
    assert!(short.expect("a result").is_leader);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(leader(&mut client).await.leader, None);
    let (_, taken) = leadership(&mut unit, "my-app/1", Some(1000)).await;
    let taken = taken.expect("a result");
    assert_eq!(
        (taken.leader.as_deref(), taken.is_leader),
        (Some("my-app/1"), true)
    );
    // A new grant: a later start.
    assert!(taken.start_ms > first.start_ms, "{taken:?} after {first:?}");
    // Malformed claims and reads.
    let (status, _) = leadership(&mut client, "other/0", None).await;
    assert_eq!(status, 400);
    let (status, _) = client
        .request("GET", "/leadership?app=my-app", Vec::new())
        .await
        .expect("an answer");
    assert_eq!(status, 400);
    controller.stop().await;
    cluster.stop().await;
}
