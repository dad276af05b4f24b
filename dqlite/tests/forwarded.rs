//! Nodes behind the crate's forwarding listener (`node::forward`): IPv6 addresses, which
//! libdqlite 1.11 cannot bind, and mutual TLS. Three nodes form a cluster, replicate and
//! fail over; with TLS, clients and nodes holding another CA's certificate, and plaintext
//! connections, are refused, and go-dqlite's shell reads and writes only with a certificate.
//! Addresses: [::1] ports 41101-41103, 127.11.121.0/24 and 127.11.122.0/24.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dqlite::client::{Client, Connection, Options};
use dqlite::node::{generate_node_id, Node, NodeOptions, BOOTSTRAP_ID};
use dqlite::tls::Tls;
use dqlite::NodeRole;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The DNS name every node certificate of a test cluster carries first: go-dqlite's shell
/// checks the server against the first DNS name of its own certificate.
const CLUSTER_NAME: &str = "dqlite-test";

/// A test CA: its PEM certificate and its issuer.
struct TestCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::default();
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, name);
        params.distinguished_name = subject;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A node (or client) certificate naming `ips`: the chain PEM (leaf, CA) and the key PEM.
    fn issue(&self, ips: &[IpAddr]) -> (String, String) {
        let key = KeyPair::generate().expect("node key");
        let mut params = CertificateParams::new(vec![CLUSTER_NAME.to_owned()]).expect("params");
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (
            format!("{}{}", cert.pem(), self.cert_pem),
            key.serialize_pem(),
        )
    }

    fn tls(&self, ips: &[IpAddr]) -> Tls {
        let (chain, key) = self.issue(ips);
        Tls::from_pem(self.cert_pem.as_bytes(), chain.as_bytes(), key.as_bytes()).expect("tls")
    }
}

fn ip_of(address: &str) -> IpAddr {
    address
        .parse::<std::net::SocketAddr>()
        .expect("socket address")
        .ip()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn client_options(tls: Option<Tls>) -> Options {
    Options {
        retry_timeout: Duration::from_secs(20),
        tls,
        ..Options::default()
    }
}

/// Starts one node per address (the first bootstraps), each with its own options.
fn start_nodes(dir: &Path, addresses: &[String], options: &[NodeOptions]) -> Vec<Option<Node>> {
    addresses
        .iter()
        .zip(options)
        .enumerate()
        .map(|(index, (address, options))| {
            let id = if index == 0 {
                BOOTSTRAP_ID
            } else {
                generate_node_id(address)
            };
            let dir = dir.join(format!("n{}", index + 1));
            let mut node = Node::new(id, address, &dir, options).expect("create a node");
            node.start().expect("start a node");
            Some(node)
        })
        .collect()
}

/// Makes the first node's cluster of all `nodes` (voters), writes a row, stops the leader,
/// and reads the row back from the new leader with a second write: replication and
/// fail-over through the forwarding listener.
fn form_replicate_and_fail_over(
    runtime: &tokio::runtime::Runtime,
    nodes: &mut [Option<Node>],
    addresses: &[String],
    options: &Options,
) {
    runtime.block_on(async {
        let mut client = Client::connect_leader(&addresses[..1], options.clone())
            .await
            .expect("the bootstrapped node leads");
        for node in nodes[1..].iter().flatten() {
            client.add(node.id(), node.address()).await.expect("add");
            client
                .assign(node.id(), NodeRole::Voter)
                .await
                .expect("promote to voter (the leader reached the node)");
        }
        let members = client.cluster().await.expect("members");
        assert_eq!(
            members
                .iter()
                .filter(|member| member.role == NodeRole::Voter)
                .count(),
            3,
            "{members:?}"
        );
        client
            .exec("test", "CREATE TABLE t (n INTEGER)", &[])
            .await
            .expect("create a table");
        client
            .exec("test", "INSERT INTO t VALUES (1)", &[])
            .await
            .expect("first write");
    });
    let leader = runtime
        .block_on(async {
            let mut client = Client::connect_leader(addresses, options.clone()).await?;
            client.leader().await
        })
        .expect("a leader");
    let leader_index = addresses
        .iter()
        .position(|address| *address == leader.address)
        .expect("the leader is one of ours");
    drop(nodes[leader_index].take());
    let survivors: Vec<String> = addresses
        .iter()
        .filter(|address| **address != leader.address)
        .cloned()
        .collect();
    let rows = runtime.block_on(async {
        let mut client = Client::connect_leader(&survivors, options.clone())
            .await
            .expect("a new leader among the survivors");
        client
            .exec("test", "INSERT INTO t VALUES (2)", &[])
            .await
            .expect("a write after the fail-over");
        client
            .query("test", "SELECT n FROM t ORDER BY n", &[])
            .await
            .expect("read back")
    });
    assert_eq!(rows.rows.len(), 2, "{rows:?}");
}

#[test]
fn three_ipv6_nodes_form_a_cluster_replicate_and_fail_over() {
    let runtime = runtime();
    let temp = tempfile::tempdir().expect("temp dir");
    let addresses: Vec<String> = (41101..=41103)
        .map(|port| format!("[::1]:{port}"))
        .collect();
    let options = vec![NodeOptions::default(); 3];
    let mut nodes = start_nodes(temp.path(), &addresses, &options);
    form_replicate_and_fail_over(&runtime, &mut nodes, &addresses, &client_options(None));
}

/// Whether a dqlite request over `options` gets an answer from the node at `address`.
fn answers(runtime: &tokio::runtime::Runtime, address: &str, options: &Options) -> bool {
    runtime.block_on(async {
        let options = Options {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(3),
            ..options.clone()
        };
        match Connection::connect(address, &options).await {
            Ok(mut connection) => connection.leader().await.is_ok(),
            Err(_) => false,
        }
    })
}

#[test]
fn three_tls_nodes_form_a_cluster_and_refuse_foreign_and_plaintext_peers() {
    let runtime = runtime();
    let temp = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("test CA");
    let foreign_ca = TestCa::new("another CA");
    let addresses: Vec<String> = (1..=3)
        .map(|host| format!("127.11.121.{host}:9001"))
        .collect();
    let options: Vec<NodeOptions> = addresses
        .iter()
        .map(|address| NodeOptions {
            tls: Some(ca.tls(&[ip_of(address)])),
            ..NodeOptions::default()
        })
        .collect();
    let mut nodes = start_nodes(temp.path(), &addresses, &options);
    let client_ip: IpAddr = "127.11.121.200".parse().expect("ip");
    let client_tls = ca.tls(&[client_ip]);
    let right = client_options(Some(client_tls.clone()));

    // A client of the CA is served; plaintext, a client of another CA, and a client that
    // trusts the right CA but presents another CA's certificate are not.
    assert!(answers(&runtime, &addresses[0], &right));
    assert!(!answers(&runtime, &addresses[0], &client_options(None)));
    assert!(!answers(
        &runtime,
        &addresses[0],
        &client_options(Some(foreign_ca.tls(&[client_ip])))
    ));
    let (foreign_chain, foreign_key) = foreign_ca.issue(&[client_ip]);
    let wrong_certificate = Tls::from_pem(
        ca.cert_pem.as_bytes(),
        foreign_chain.as_bytes(),
        foreign_key.as_bytes(),
    )
    .expect("tls");
    assert!(!answers(
        &runtime,
        &addresses[0],
        &client_options(Some(wrong_certificate))
    ));
    // Raw plaintext bytes (the protocol word and a LEADER request) get no answer.
    let mut raw = TcpStream::connect(&addresses[0]).expect("tcp connect");
    raw.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut request = 1u64.to_le_bytes().to_vec();
    request.extend([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let _ = raw.write_all(&request);
    let mut answer = [0u8; 64];
    let read = raw.read(&mut answer);
    assert!(
        !matches!(read, Ok(n) if n >= 8 && answer[4] == 1),
        "a plaintext LEADER request got a SERVER answer: {read:?}"
    );

    form_replicate_and_fail_over(&runtime, &mut nodes, &addresses[..], &right);

    // A node whose certificate comes from another CA cannot take part in either direction:
    // the leader refuses its certificate when it dials in, and it refuses the leader's, so
    // it never catches up to become a voter. (A lone leader of its own: the promotion
    // stays in progress and would hold the cluster above.)
    let lone_address = "127.11.121.10:9001".to_owned();
    let lone_options = vec![NodeOptions {
        tls: Some(ca.tls(&[ip_of(&lone_address)])),
        ..NodeOptions::default()
    }];
    let _lone = start_nodes(
        &temp.path().join("lone"),
        std::slice::from_ref(&lone_address),
        &lone_options,
    );
    let foreign_address = "127.11.121.4:9001".to_owned();
    let foreign_options = NodeOptions {
        tls: Some(foreign_ca.tls(&[ip_of(&foreign_address)])),
        ..NodeOptions::default()
    };
    let foreign_id = generate_node_id(&foreign_address);
    let mut foreign = Node::new(
        foreign_id,
        &foreign_address,
        &temp.path().join("foreign"),
        &foreign_options,
    )
    .expect("create the foreign node");
    foreign.start().expect("start the foreign node");
    runtime.block_on(async {
        let mut client = Client::connect_leader(std::slice::from_ref(&lone_address), right.clone())
            .await
            .expect("the lone node leads");
        client
            .add(foreign_id, &foreign_address)
            .await
            .expect("add the foreign node as a spare (only the configuration changes)");
        let started = Instant::now();
        let promoted = tokio::time::timeout(
            Duration::from_secs(5),
            client.assign(foreign_id, NodeRole::Voter),
        )
        .await;
        assert!(
            !matches!(promoted, Ok(Ok(()))),
            "the foreign node caught up as a voter after {:?}",
            started.elapsed()
        );
    });
    drop(foreign);
}

#[test]
fn the_go_dqlite_shell_needs_a_certificate_of_the_ca() {
    let runtime = runtime();
    let temp = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("test CA");
    let address = "127.11.122.1:9001".to_owned();
    let options = vec![NodeOptions {
        tls: Some(ca.tls(&[ip_of(&address)])),
        ..NodeOptions::default()
    }];
    let _nodes = start_nodes(temp.path(), std::slice::from_ref(&address), &options);
    let (chain, key) = ca.issue(&[]);
    let cert_file = temp.path().join("client.pem");
    let key_file = temp.path().join("client.key");
    std::fs::write(&cert_file, chain).expect("write cert");
    std::fs::write(&key_file, key).expect("write key");
    let shell = |tls: bool, sql: &str| {
        let mut command = Command::new("timeout");
        command.args(["10", "dqlite", "-s", &address]);
        if tls {
            command
                .arg("--cert")
                .arg(&cert_file)
                .arg("--key")
                .arg(&key_file);
        }
        command.args(["test", sql]);
        command.output().expect("run the dqlite shell")
    };
    let created = shell(true, "CREATE TABLE t (n INTEGER)");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let inserted = shell(true, "INSERT INTO t VALUES (42)");
    assert!(inserted.status.success(), "{inserted:?}");
    let read = shell(true, "SELECT n FROM t");
    assert!(read.status.success(), "{read:?}");
    assert!(
        String::from_utf8_lossy(&read.stdout).contains("42"),
        "{read:?}"
    );
    let without = shell(false, "SELECT n FROM t");
    assert!(
        !without.status.success() && !String::from_utf8_lossy(&without.stdout).contains("42"),
        "{without:?}"
    );
    // Our client reads the shell's row.
    let rows = runtime.block_on(async {
        let mut client = Client::connect_leader(
            std::slice::from_ref(&address),
            client_options(Some(ca.tls(&[]))),
        )
        .await
        .expect("leader");
        client
            .query("test", "SELECT n FROM t", &[])
            .await
            .expect("read")
    });
    assert_eq!(rows.rows.len(), 1, "{rows:?}");
}
