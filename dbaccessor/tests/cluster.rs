//! End-to-end scenarios with real `dbaccessor` processes on loopback addresses
//! (127.21.N.M, N per test): bootstrap, join, re-bind, departure, shrink to one, and bad
//! configuration. The test plays the charm: it writes controller.conf and calls POST /reload.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use controller_contract::status::{NodeState, Role, Status, Verdict};
use dqlite::NodeRole;
use support::{insert_rows, read_rows, shell_cluster, Controller};

fn addresses(controllers: &[&Controller]) -> Vec<String> {
    controllers.iter().map(|c| c.address()).collect()
}

/// Starts three controllers the way Juju grows a controller set: the first bootstraps
/// alone, then the map grows to three and the other two join.
async fn three_controllers(net: u8) -> Vec<Controller> {
    let ips: Vec<String> = (1..=3).map(|m| format!("127.21.{net}.{m}")).collect();
    let mut controllers: Vec<Controller> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| Controller::new(&i.to_string(), ip))
        .collect();
    controllers[0].write_map(&[("0", &ips[0])]);
    controllers[0].start().await;
    controllers[0].wait_voters(1).await;
    let map: Vec<(&str, &str)> = vec![("0", &ips[0]), ("1", &ips[1]), ("2", &ips[2])];
    for controller in &mut controllers[1..] {
        controller.write_map(&map);
        controller.start().await;
    }
    controllers[0].set_map(&map).await;
    for controller in &controllers {
        controller.wait_voters(3).await;
    }
    controllers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_bootstraps_two_join_and_the_go_shell_sees_them() {
    let controllers = three_controllers(1).await;
    let status = controllers[0].status().await;
    assert_eq!(status.agent_id, "0");
    assert_eq!(status.node_id, Some(1), "the bootstrap node has id 1");
    assert_eq!(status.bind_address.as_deref(), Some("127.21.1.1:17666"));
    let mut seen: Vec<&str> = status.members.iter().map(|m| m.address.as_str()).collect();
    seen.sort();
    assert_eq!(
        seen,
        ["127.21.1.1:17666", "127.21.1.2:17666", "127.21.1.3:17666"]
    );
    let config = status.config.expect("a config was read");
    assert_eq!(
        config.bind_addresses.expect("a usable map").len(),
        3,
        "the status shows the map it read"
    );

    let all = addresses(&controllers.iter().collect::<Vec<_>>());
    insert_rows(&all, 0, 10).await;
    assert_eq!(read_rows(&all).await, (0..10).collect::<Vec<_>>());
    let mode = std::fs::metadata(controllers[1].data_dir().join("dqlite"))
        .expect("the dqlite data dir exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the dqlite data dir is private");

    // An independent client, go-dqlite's shell, sees the same three voters.
    let shell = shell_cluster("127.21.1.2:17666");
    for address in &all {
        assert!(
            shell.contains(address.as_str()),
            "{address} missing in:\n{shell}"
        );
    }
    assert_eq!(shell.matches("voter").count(), 3, "{shell}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_bootstrapped_node_rebinds_and_keeps_its_data() {
    // Bootstrapped alone on one loopback address (as Juju bootstraps on 127.0.0.1) ...
    let mut first = Controller::new("0", "127.21.2.1");
    first.write_map(&[("0", "127.21.2.1")]);
    first.start().await;
    first.wait_voters(1).await;
    insert_rows(&[first.address()], 0, 5).await;

    // ... then the map gives it its real address and names a peer.
    let mut second = Controller::new("1", "127.21.2.3");
    let map = [("0", "127.21.2.2"), ("1", "127.21.2.3")];
    second.write_map(&map);
    second.start().await;
    first.set_map(&map).await;

    let status = first
        .wait_for("re-bound to 127.21.2.2", Duration::from_secs(30), |s| {
            s.state == NodeState::Member && s.bind_address.as_deref() == Some("127.21.2.2:17666")
        })
        .await;
    assert_eq!(status.node_id, Some(1), "the same node, moved");
    assert!(decided(&status, None, "re-bind"), "{:#?}", status.decisions);
    let second_status = second
        .wait_for(
            "a member of the re-bound cluster",
            Duration::from_secs(30),
            |s| s.state == NodeState::Member && s.members.len() == 2 && s.leader_id.is_some(),
        )
        .await;
    assert!(second_status
        .members
        .iter()
        .any(|m| m.address == "127.21.2.2:17666"));
    let both = vec!["127.21.2.2:17666".to_owned(), second.address()];
    assert_eq!(read_rows(&both).await, (0..5).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departed_controller_leaves_a_healthy_cluster() {
    let mut controllers = three_controllers(3).await;
    let all = addresses(&controllers.iter().collect::<Vec<_>>());
    insert_rows(&all, 0, 10).await;

    // Controller 2 goes: its daemon stops cleanly (hand-over first), the map loses it.
    assert_eq!(controllers[2].terminate(), Some(0), "SIGTERM exits 0");
    assert!(
        !controllers[2].status_socket().exists() && !controllers[2].reload_socket().exists(),
        "the sockets are removed on shutdown"
    );
    let map = [("0", "127.21.3.1"), ("1", "127.21.3.2")];
    for controller in &controllers[..2] {
        controller.set_map(&map).await;
    }
    // The remaining two keep a leader, accept writes, and drop the departed member.
    for controller in &controllers[..2] {
        controller
            .wait_for("rid of the departed member", Duration::from_secs(30), |s| {
                // Two members; the role loop keeps an odd number of voters (one voter and
                // one stand-by), as two voters tolerate no more failures than one.
                s.state == NodeState::Member
                    && s.leader_id.is_some()
                    && s.members.len() == 2
                    && s.members.iter().any(|m| m.role == Role::Voter)
            })
            .await;
    }
    let two = all[..2].to_vec();
    insert_rows(&two, 10, 20).await;
    assert_eq!(read_rows(&two).await, (0..20).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_killed_and_the_map_reduced_shrinks_to_one_with_every_row() {
    let mut controllers = three_controllers(4).await;
    let all = addresses(&controllers.iter().collect::<Vec<_>>());
    insert_rows(&all, 0, 50).await;

    controllers[1].kill();
    controllers[2].kill();
    let survivor = &controllers[0];
    survivor.set_map(&[("0", "127.21.4.1")]).await;

    let status = survivor
        .wait_for("alone in its cluster", Duration::from_secs(30), |s| {
            s.state == NodeState::Member && s.members.len() == 1 && s.leader_id == s.node_id
        })
        .await;
    assert_eq!(status.members[0].address, "127.21.4.1:17666");
    assert_eq!(status.members[0].role, Role::Voter);
    assert!(
        decided(&status, None, "shrink to one"),
        "{:#?}",
        status.decisions
    );
    let alone = vec![survivor.address()];
    assert_eq!(read_rows(&alone).await, (0..50).collect::<Vec<_>>());
    insert_rows(&alone, 50, 51).await;
    assert_eq!(read_rows(&alone).await.len(), 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reduced_map_while_quorum_holds_does_not_recover() {
    let controllers = three_controllers(5).await;
    let all = addresses(&controllers.iter().collect::<Vec<_>>());
    insert_rows(&all, 0, 5).await;

    // A stale or wrong map naming controller 0 alone, while the other two are alive.
    controllers[0].set_map(&[("0", "127.21.5.1")]).await;
    let status = controllers[0]
        .wait_for("past its quorum probe", Duration::from_secs(30), |s| {
            s.reason.contains("a leader answers")
        })
        .await;
    assert_eq!(status.state, NodeState::Member);
    assert_eq!(status.members.len(), 3, "{status:#?}");
    assert!(
        !decided(&status, None, "shrink to one"),
        "{:#?}",
        status.decisions
    );
    for controller in &controllers[1..] {
        controller.wait_voters(3).await;
    }
    insert_rows(&all, 5, 6).await;
    assert_eq!(read_rows(&all).await, (0..6).collect::<Vec<_>>());

    // Once the other two really die, the same map does lead to recovery, without another
    // reload: the health check sees the leader gone and the round probes the voters.
    // (The file watch also answers that write; wait for its round so that only the
    // health check is left to notice the deaths.)
    controllers[0]
        .wait_for(
            "the file watch's round past its quorum probe",
            Duration::from_secs(10),
            |s| {
                s.decisions
                    .iter()
                    .any(|d| d.trigger == "file watch" && d.reason.contains("a leader answers"))
            },
        )
        .await;
    let mut controllers = controllers;
    controllers[1].kill();
    controllers[2].kill();
    let status = controllers[0]
        .wait_for("alone after its peers died", Duration::from_secs(30), |s| {
            s.state == NodeState::Member && s.members.len() == 1 && s.leader_id == s.node_id
        })
        .await;
    assert_eq!(status.members[0].role, Role::Voter);
    assert!(
        status.decisions.iter().any(|d| d.trigger == "node failed"),
        "{:#?}",
        status.decisions
    );
    let alone = vec![controllers[0].address()];
    assert_eq!(read_rows(&alone).await, (0..6).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_maps_are_reported_and_change_nothing() {
    let mut member = Controller::new("0", "127.21.6.1");
    member.write_map(&[("0", "127.21.6.1")]);
    member.start().await;
    member.wait_voters(1).await;
    let alone = vec![member.address()];
    insert_rows(&alone, 0, 3).await;

    // (what is written, words the status reason must carry)
    let cases: [(&str, &str); 7] = [
        ("{{{ not yaml", "not valid YAML"),
        ("", "empty"),
        ("db-bind-addresses:\n  '0': 127.21", "not an IP"),
        ("api-port: 17070\n", "no db-bind-addresses key"),
        (
            "db-bind-addresses:\n  '5': 127.21.6.5\n",
            "no db-bind-addresses entry for agent 0",
        ),
        (
            "db-bind-addresses:\n  '0': 192.0.2.1\n",
            "no interface of this host",
        ),
        // IPv6 is judged like IPv4: by the host's interfaces.
        (
            "db-bind-addresses:\n  '0': fc00::1\n",
            "gives this controller fc00::1, which no interface of this host has",
        ),
    ];
    for (text, expected) in cases {
        member.write_conf(text);
        member.reload().await;
        let status = member
            .wait_for(expected, Duration::from_secs(10), |s| {
                s.reason.contains(expected)
            })
            .await;
        assert_eq!(
            status.state,
            NodeState::Member,
            "{text:?}: the node keeps running"
        );
        assert_eq!(status.bind_address.as_deref(), Some("127.21.6.1:17666"));
        assert!(member.is_running(), "{text:?} crashed the daemon");
    }
    // An unreadable file: a directory where the file should be.
    std::fs::remove_file(member.conf_path()).expect("remove conf");
    std::fs::create_dir(member.conf_path()).expect("dir in place of conf");
    member.reload().await;
    member
        .wait_for(
            "reporting the unreadable file",
            Duration::from_secs(10),
            |s| {
                s.reason
                    .contains("controller.conf is a directory, not a regular file")
            },
        )
        .await;
    assert!(member.is_running());
    assert_eq!(read_rows(&alone).await, (0..3).collect::<Vec<_>>());
    assert!(
        member.log().contains("is a directory"),
        "the log says why too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_controller_waits_for_a_usable_map() {
    let mut fresh = Controller::new("3", "127.21.7.1");
    fresh.start().await;
    let dqlite_dir = fresh.data_dir().join("dqlite");
    let cases: [(Option<&str>, &str, NodeState); 5] = [
        (None, "does not exist", NodeState::Waiting),
        (Some("- a list\n"), "not a YAML mapping", NodeState::Waiting),
        (
            Some("db-bind-addresses:\n  '0': 127.21.7.9\n"),
            "no db-bind-addresses entry for agent 3",
            NodeState::Waiting,
        ),
        (
            Some("db-bind-addresses:\n  '3': 192.0.2.7\n"),
            "no interface of this host",
            NodeState::Waiting,
        ),
        (
            Some("db-bind-addresses:\n  '3': fc00::7\n"),
            "gives this controller fc00::7, which no interface of this host has",
            NodeState::Waiting,
        ),
    ];
    for (text, expected, state) in cases {
        if let Some(text) = text {
            fresh.write_conf(text);
            fresh.reload().await;
        }
        let status = fresh
            .wait_for(expected, Duration::from_secs(10), |s| {
                s.reason.contains(expected)
            })
            .await;
        assert_eq!(status.state, state, "{text:?}");
        assert_eq!(status.node_id, None);
        assert!(!dqlite_dir.exists(), "{text:?}: no node was created");
    }
    // The fallback file watch: no POST /reload, yet the new map is picked up.
    fresh.write_map(&[("3", "127.21.7.1")]);
    fresh.wait_voters(1).await;
    assert_eq!(fresh.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_data_dir_refuses_to_start() {
    let mut first = Controller::new("0", "127.21.8.1");
    first.write_map(&[("0", "127.21.8.1")]);
    first.start().await;
    first.wait_voters(1).await;
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_dbaccessor"))
        .args(["--agent-id", "0"])
        .arg("--data-dir")
        .arg(first.data_dir())
        .output()
        .expect("run a second dbaccessor");
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another process is serving this socket"),
        "{stderr}"
    );
    // The first one is untouched.
    assert!(first.is_running());
    first.wait_voters(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_restarted_after_its_peers_died_recovers_on_start() {
    let mut controllers = three_controllers(9).await;
    let all = addresses(&controllers.iter().collect::<Vec<_>>());
    insert_rows(&all, 0, 7).await;
    controllers[1].kill();
    controllers[2].kill();
    // The survivor's daemon is stopped without a quorum (the hand-over cannot happen, the
    // stop must still be clean), then the map is reduced while it is down.
    assert_eq!(controllers[0].terminate(), Some(0));
    controllers[0].write_map(&[("0", "127.21.9.1")]);
    controllers[0].start().await;
    let status = controllers[0]
        .wait_for("alone after a restart", Duration::from_secs(30), |s| {
            s.state == NodeState::Member && s.members.len() == 1 && s.leader_id == s.node_id
        })
        .await;
    assert_eq!(status.node_id, Some(1));
    assert!(
        decided(&status, Some("start-up"), "shrink to one"),
        "{:#?}",
        status.decisions
    );
    let alone = vec![controllers[0].address()];
    assert_eq!(read_rows(&alone).await, (0..7).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_to_one_by_stopping_the_leader_keeps_every_row() {
    let mut first = Controller::new("0", "127.21.10.1");
    first.write_map(&[("0", "127.21.10.1")]);
    first.start().await;
    first.wait_voters(1).await;
    let mut second = Controller::new("1", "127.21.10.2");
    let two = [("0", "127.21.10.1"), ("1", "127.21.10.2")];
    second.write_map(&two);
    second.start().await;
    first.set_map(&two).await;
    second
        .wait_for("a member of two", Duration::from_secs(30), |s| {
            s.members.len() == 2 && s.leader_id.is_some()
        })
        .await;
    let both = vec![first.address(), second.address()];
    insert_rows(&both, 0, 8).await;

    // The machine of the first (the bootstrap node, the voter and leader) is removed: its
    // daemon stops cleanly, then the charm tells the survivor it is alone.
    assert_eq!(first.terminate(), Some(0));
    second.set_map(&[("1", "127.21.10.2")]).await;
    let status = second
        .wait_for("alone and leading", Duration::from_secs(30), |s| {
            s.state == NodeState::Member && s.members.len() == 1 && s.leader_id == s.node_id
        })
        .await;
    assert_eq!(status.members[0].role, Role::Voter);
    let alone = vec![second.address()];
    assert_eq!(read_rows(&alone).await, (0..8).collect::<Vec<_>>());
    insert_rows(&alone, 8, 9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_daemon_restarts_and_rejoins() {
    let mut controllers = three_controllers(11).await;
    let all = addresses(&controllers.iter().collect::<Vec<_>>());
    insert_rows(&all, 0, 4).await;
    controllers[2].kill();
    // Its stale sockets are still there; the new daemon replaces them.
    assert!(controllers[2].reload_socket().exists());
    insert_rows(&all[..2], 4, 6).await;
    controllers[2].start().await;
    let status = controllers[2].wait_voters(3).await;
    assert!(
        decided(&status, Some("start-up"), "restart"),
        "{:#?}",
        status.decisions
    );
    assert_eq!(status.bind_address.as_deref(), Some("127.21.11.3:17666"));
    assert_eq!(read_rows(&all).await, (0..6).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_joining_at_once_make_three_voters_and_departures_never_leave_fewer() {
    let ips: Vec<String> = (1..=5).map(|m| format!("127.21.12.{m}")).collect();
    let mut controllers: Vec<Controller> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| Controller::new(&i.to_string(), ip))
        .collect();
    controllers[0].write_map(&[("0", &ips[0])]);
    controllers[0].start().await;
    controllers[0].wait_voters(1).await;
    let ids: Vec<String> = (0..5).map(|i| i.to_string()).collect();
    let map: Vec<(&str, &str)> = ids
        .iter()
        .zip(&ips)
        .map(|(id, ip)| (id.as_str(), ip.as_str()))
        .collect();
    // Concurrent joins collide ("a configuration change is already in progress") and are
    // retried until all are in.
    for controller in &mut controllers[1..] {
        controller.write_map(&map);
        controller.start().await;
    }
    controllers[0].set_map(&map).await;
    let status = controllers[0]
        .wait_for("five members, three voting", Duration::from_secs(30), |s| {
            s.members.len() == 5
                && s.members.iter().filter(|m| m.role == Role::Voter).count() == 3
                && s.members.iter().filter(|m| m.role == Role::StandBy).count() == 2
        })
        .await;
    assert!(status.leader_id.is_some());
    // Every daemon sees the leader, stand-bys included: libdqlite 1.11.1 stand-bys answer
    // LEADER with "unknown", so the daemon asks the other members too. (The go-dqlite
    // shell pointed at a stand-by alone retries forever; it is pointed at a voter.)
    for controller in &controllers {
        controller
            .wait_for("seeing the leader", Duration::from_secs(10), |s| {
                s.leader_id == status.leader_id
            })
            .await;
    }
    let voter = status
        .members
        .iter()
        .find(|m| m.role == Role::Voter && Some(m.id) != status.leader_id)
        .expect("a voter that does not lead");
    let shell = shell_cluster(&voter.address);
    assert_eq!(shell.lines().count(), 5, "{shell}");

    // Departures, a voter and then the leader: each hands its vote over before it goes, so
    // the configuration, sampled every 20 ms by a client of its own, never holds fewer than
    // three voters, and ends with three voters and the rest stand-bys.
    let all = ips
        .iter()
        .map(|ip| format!("{ip}:17666"))
        .collect::<Vec<_>>();
    insert_rows(&all, 0, 5).await;
    let leader_address = status
        .members
        .iter()
        .find(|m| Some(m.id) == status.leader_id)
        .expect("the leader is a member")
        .address
        .clone();
    let mut remaining: Vec<usize> = (0..5).collect();
    for departing_address in [voter.address.clone(), leader_address] {
        let departing = remaining
            .iter()
            .position(|i| controllers[*i].address() == departing_address)
            .map(|at| remaining.remove(at))
            .expect("a running controller at that address");
        let watched: Vec<String> = remaining
            .iter()
            .map(|i| controllers[*i].address())
            .collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = tokio::spawn(sample_voters(watched.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            controllers[departing].terminate(),
            Some(0),
            "SIGTERM exits 0"
        );
        let map: Vec<(&str, &str)> = remaining
            .iter()
            .map(|i| (ids[*i].as_str(), ips[*i].as_str()))
            .collect();
        for i in &remaining {
            controllers[*i].set_map(&map).await;
        }
        let left = remaining.len();
        for i in &remaining {
            controllers[*i]
                .wait_for(
                    "without the departed member",
                    Duration::from_secs(30),
                    |s| {
                        s.members.len() == left
                            && !s.members.iter().any(|m| m.address == departing_address)
                            && s.members.iter().filter(|m| m.role == Role::Voter).count() == 3
                            && s.members.iter().filter(|m| m.role == Role::StandBy).count()
                                == left - 3
                    },
                )
                .await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let samples = sampler.await.expect("the sampler ends");
        let answered: Vec<usize> = samples.iter().flatten().copied().collect();
        assert!(
            answered.len() >= 10,
            "{departing_address} leaving: too few answers: {samples:?}"
        );
        assert!(
            answered.iter().all(|voters| *voters >= 3),
            "{departing_address} leaving: fewer than 3 voters at some point: {samples:?}"
        );
        assert_eq!(answered.last(), Some(&3), "{samples:?}");
        assert_eq!(read_rows(&watched).await, (0..5).collect::<Vec<_>>());
    }
}

/// Counts the voters in the configuration every 20 ms until `stop`; `None` where the
/// cluster did not answer (a leader change under way).
async fn sample_voters(
    addresses: Vec<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Option<usize>> {
    let options = dqlite::client::Options {
        retry_timeout: Duration::from_millis(500),
        ..dqlite::client::Options::default()
    };
    let mut client = None;
    let mut samples = vec![];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if client.is_none() {
            client = dqlite::client::Client::connect_leader(&addresses, options.clone())
                .await
                .ok();
        }
        let voters = match client.as_mut() {
            Some(c) => match c.cluster().await {
                Ok(nodes) => Some(nodes.iter().filter(|n| n.role == NodeRole::Voter).count()),
                Err(_) => {
                    client = None;
                    None
                }
            },
            None => None,
        };
        samples.push(voters);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_verdict_counts_connected_caught_up_voters_and_names_missing_ones() {
    let mut controllers = three_controllers(13).await;
    let healthy = |s: &controller_contract::status::Status| {
        s.health
            .as_ref()
            .is_some_and(|h| h.verdict == Verdict::Healthy)
    };
    let status = controllers[0]
        .wait_for("healthy", Duration::from_secs(20), healthy)
        .await;
    let health = status.health.expect("a verdict");
    assert_eq!(
        (health.voters, health.ready_voters, health.survives),
        (3, 3, 1)
    );
    assert!(
        health.summary.contains("survives 1 more voter failure"),
        "{}",
        health.summary
    );

    // A voter that stops: not connected, no spare failure; never healthy meanwhile.
    controllers[2].kill();
    let status = controllers[0]
        .wait_for("degraded", Duration::from_secs(20), |s| {
            s.health
                .as_ref()
                .is_some_and(|h| h.verdict == Verdict::Degraded)
        })
        .await;
    let health = status.health.expect("a verdict");
    assert_eq!(health.survives, 0, "{}", health.summary);
    assert!(
        health.summary.contains("not connected"),
        "{}",
        health.summary
    );

    // Back: healthy again once it has reported and caught up.
    controllers[2].start().await;
    controllers[0]
        .wait_for("healthy again", Duration::from_secs(30), healthy)
        .await;

    // A controller the map names that is not in the configuration: degraded, named.
    let map = [
        ("0", "127.21.13.1"),
        ("1", "127.21.13.2"),
        ("2", "127.21.13.3"),
        ("3", "127.21.13.4"),
    ];
    controllers[0].set_map(&map).await;
    let status = controllers[0]
        .wait_for(
            "naming the missing controller",
            Duration::from_secs(20),
            |s| {
                s.health.as_ref().is_some_and(|h| {
                    h.verdict == Verdict::Degraded && h.missing.iter().any(|m| m.agent_id == "3")
                })
            },
        )
        .await;
    let summary = status.health.expect("a verdict").summary;
    assert!(
        summary.contains("controller 3 (127.21.13.4:17666) is named by controller.conf"),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_behind_its_back_rejoins_as_a_new_member() {
    let mut controllers = three_controllers(14).await;
    let all = addresses(&controllers.iter().collect::<Vec<_>>());
    insert_rows(&all, 0, 5).await;
    let before = controllers[2].status().await;
    let old_id = before.node_id.expect("an id");

    // Removed while running, the map unchanged: it notices, sets its data aside and
    // joins again with a new id; the cluster is back to three voters.
    let mut client = support::client(&all[..2]).await;
    client.remove(old_id).await.expect("remove the member");
    let rejoined = controllers[2]
        .wait_for("rejoined with a new id", Duration::from_secs(30), |s| {
            s.state == NodeState::Member
                && s.node_id.is_some_and(|id| id != old_id)
                && s.members.iter().filter(|m| m.role == Role::Voter).count() == 3
        })
        .await;
    let new_id = rejoined.node_id.expect("an id");
    assert!(
        decided(&rejoined, None, "set aside and rejoin"),
        "{:#?}",
        rejoined.decisions
    );
    let aside: Vec<String> = std::fs::read_dir(controllers[2].data_dir())
        .expect("list the data dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("dqlite.removed-"))
        .collect();
    assert_eq!(aside.len(), 1, "the old data is kept aside: {aside:?}");
    insert_rows(&all, 5, 8).await;
    assert_eq!(read_rows(&all).await, (0..8).collect::<Vec<_>>());

    // Removed while down (kill -9, then removed): on restart it finds itself outside the
    // configuration and rejoins; it never reports `member` with the old identity.
    controllers[2].kill();
    let mut client = support::client(&all[..2]).await;
    client.remove(new_id).await.expect("remove the member");
    controllers[2].start().await;
    controllers[2]
        .wait_for("rejoined again", Duration::from_secs(30), |s| {
            s.state == NodeState::Member
                && s.node_id.is_some_and(|id| id != new_id && id != old_id)
                && s.members.iter().filter(|m| m.role == Role::Voter).count() == 3
        })
        .await;
    controllers[0].wait_voters(3).await;
    assert_eq!(read_rows(&all).await, (0..8).collect::<Vec<_>>());
}

/// A map that lacks a live member is not a departure the member has made: the member still
/// answers, so it stays through the departure watch and many health ticks; only a member
/// that is also unreachable goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_member_missing_from_the_map_is_never_removed() {
    let controllers = three_controllers(15).await;
    let all = addresses(&controllers.iter().collect::<Vec<_>>());
    let map = [("0", "127.21.15.1"), ("1", "127.21.15.2")];
    for controller in &controllers[..2] {
        controller.set_map(&map).await;
    }
    // The departure watch lasts two quorum timeouts; wait out three, plus a few ticks.
    let quorum_timeout: u64 = support::QUORUM_TIMEOUT_MS.parse().expect("a number");
    tokio::time::sleep(Duration::from_millis(3 * quorum_timeout + 2_000)).await;
    for controller in &controllers {
        let status = controller.status().await;
        assert_eq!(
            status.members.len(),
            3,
            "controller {}: {:?}",
            controller.agent_id,
            status.members
        );
        assert!(
            !controller.log().contains("removed departed member"),
            "controller {}:\n{}",
            controller.agent_id,
            controller.log()
        );
    }
    insert_rows(&all, 0, 5).await;
    assert_eq!(read_rows(&all).await, (0..5).collect::<Vec<_>>());
}

/// Whether the daemon decided `action` (in a round `trigger` started, when given), as its
/// status lists its recent decisions.
fn decided(status: &Status, trigger: Option<&str>, action: &str) -> bool {
    status
        .decisions
        .iter()
        .any(|d| d.action == action && trigger.is_none_or(|t| d.trigger == t))
}
