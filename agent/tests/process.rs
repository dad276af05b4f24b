//! The `jujud-controller` binary as a whole: it keeps the dbaccessor's contract
//! (controller.conf, the reload and status sockets), bootstraps the controller's identity,
//! serves logins with its own published addresses, and on SIGTERM stops its workers in
//! reverse dependency order and exits 0 with its sockets removed.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use agent::apiserver::LoginResult;
use controller_contract::paths;
use controller_contract::status::NodeState;
use support::ApiClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_keeps_the_dbaccessor_contract_serves_logins_and_stops_in_order() {
    let data = tempfile::tempdir().expect("tempdir");
    let conf = paths::controller_conf(data.path(), "0");
    let controller_dir = conf.parent().expect("conf dir").to_path_buf();
    std::fs::create_dir_all(&controller_dir).expect("controller dir");
    std::fs::write(&conf, "db-bind-addresses:\n  '0': 127.60.5.1\n").expect("conf");
    let log_path = data.path().join("agent.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut child = Command::new(env!("CARGO_BIN_EXE_jujud-controller"))
        .args(["--agent-id", "0", "--data-dir"])
        .arg(data.path())
        .args(["--network-latency-ms", "20", "--quorum-timeout-ms", "1500"])
        .args([
            "--api-listen",
            "127.60.5.1:17070",
            "--address-poll-ms",
            "200",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn jujud-controller");

    let reload_socket = paths::reload_socket(data.path());
    let status_path = paths::status_socket(data.path());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let member = test_support::status::status(&status_path, Duration::from_secs(5))
            .await
            .is_ok_and(|s| s.state == NodeState::Member);
        if member && controller_dir.join("admin-password").exists() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no member with an admin password within 30 s:\n{}",
            read_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, id) = test_support::reload::request(&reload_socket, hyper::Method::GET, "/agent-id")
        .await
        .expect("reload socket");
    assert_eq!((code, id.as_str()), (200, "0"));

    let ca_pem = std::fs::read_to_string(controller_dir.join("ca.pem")).expect("ca.pem");
    let password = std::fs::read_to_string(controller_dir.join("admin-password"))
        .expect("password")
        .trim()
        .to_owned();
    let mut client = ApiClient::new(&ca_pem, "127.60.5.1:17070".parse().expect("address"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let result = loop {
        if let Ok((200, body)) = client
            .request(
                "POST",
                "/login",
                serde_json::json!({"user": "admin", "password": password})
                    .to_string()
                    .into_bytes(),
            )
            .await
        {
            let result: LoginResult = serde_json::from_slice(&body).expect("login result");
            if !result.servers.is_empty() {
                break result;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no login within 20 s:\n{}",
            read_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The machine's own addresses, published by the agent: loopback is there, for local
    // clients only.
    assert_eq!(result.servers.len(), 1);
    assert!(
        result.servers[0]
            .iter()
            .any(|h| h.value == "127.0.0.1" && h.port == 17070 && h.scope == "local-machine"),
        "{result:?}"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("try_wait") {
            break exit;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("ignored SIGTERM:\n{}", read_log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = read_log();
    assert_eq!(exit.code(), Some(0), "{log}");
    assert!(!reload_socket.exists() && !status_path.exists(), "{log}");
    let position = |line: &str| {
        log.find(line)
            .unwrap_or_else(|| panic!("{line:?} not in the log:\n{log}"))
    };
    // Users of the database stop before the dbaccessor does.
    assert!(position("stopping worker apiserver") < position("stopping worker dbaccessor"));
    assert!(
        position("stopping worker api-address-publisher") < position("stopping worker dbaccessor")
    );
    assert!(position("stopping worker dbaccessor") < position("stopped cleanly"));
}
