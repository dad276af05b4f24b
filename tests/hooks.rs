//! The compiled `dispatch` run under the hook-tool emulator with Juju's exact environment:
//! each test is a scenario on a model of controller units.

mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;

use juju_sim::Invocation;
use serde_json::json;
use support::{new_unit_hooks, unit, Model, RELATION};

fn status(kind: &str, message: &str) -> (String, String) {
    (kind.to_owned(), message.to_owned())
}

#[test]
fn single_controller_lifecycle_publishes_and_writes_the_conf() {
    let mut model = Model::new(1);
    model.start_agent(0);
    for invocation in new_unit_hooks(true) {
        model.hook(0, invocation);
    }
    assert_eq!(
        model.status(0),
        status("active", "db bind address 10.0.0.5 (1 controller)")
    );
    let bag = model.unit_bag(0);
    assert_eq!(
        bag.get("db-bind-address").map(String::as_str),
        Some("10.0.0.5")
    );
    assert_eq!(bag.get("agent-id").map(String::as_str), Some("0"));
    assert_eq!(model.published().as_deref(), Some(r#"{"0":"10.0.0.5"}"#));
    assert_eq!(
        model.conf(0).as_deref(),
        Some("db-bind-addresses:\n  '0': 10.0.0.5\n")
    );
    assert_eq!(
        fs::metadata(model.conf_path(0)).expect("conf").mode() & 0o777,
        0o600
    );
    // Written once, reloaded once: the later hooks found it converged.
    assert_eq!(model.agent(0).reloads(), 1);
    let state = model.state();
    assert_eq!(
        state.units[&unit(0)].workload_version.as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(state.history.iter().all(|h| h.exit_code == Some(0)));
}

#[test]
fn leader_aggregates_and_non_leaders_copy() {
    let mut model = Model::new(3);
    for n in 0..3 {
        model.start_agent(n);
        for invocation in new_unit_hooks(n == 0) {
            model.hook(n, invocation);
        }
    }
    model.settle(3, 2);
    let three = r#"{"0":"10.0.0.5","1":"10.0.0.6","2":"10.0.0.7"}"#;
    assert_eq!(model.published().as_deref(), Some(three));
    let conf = "db-bind-addresses:\n  '0': 10.0.0.5\n  '1': 10.0.0.6\n  '2': 10.0.0.7\n";
    for n in 0..3 {
        assert_eq!(model.conf(n).as_deref(), Some(conf), "controller {n}");
        let address = format!("10.0.0.{}", 5 + n);
        assert_eq!(
            model.status(n),
            status(
                "active",
                &format!("db bind address {address} (3 controllers)")
            )
        );
    }
    // Non-leaders never write the app bag (the emulator would fail the hook if they tried).
    let state = model.state();
    for call in state.calls.iter().filter(|c| c.tool == "relation-set") {
        if call.args.contains(&"--app".to_owned()) {
            assert!(call.context_id.starts_with("controller/0-"), "{call:?}");
        }
    }
}

#[test]
fn a_non_leader_waits_for_the_leader() {
    let mut model = Model::new(2);
    model.start_agent(1);
    model.hook(1, Invocation::hook("config-changed"));
    assert_eq!(
        model.status(1),
        status(
            "waiting",
            "waiting for the leader to publish db-bind-addresses"
        )
    );
    assert_eq!(
        model.unit_bag(1).get("db-bind-address").map(String::as_str),
        Some("10.0.0.6")
    );
    assert_eq!(
        model.conf(1),
        None,
        "no map from the leader, no controller.conf"
    );
}

/// Three converged controllers with reload sockets.
fn converged_three() -> Model {
    let mut model = Model::new(3);
    for n in 0..3 {
        model.start_agent(n);
        model.hook(n, Invocation::hook("config-changed"));
    }
    model.settle(3, 2);
    model
}

/// Relation hooks take the options and the binding from the last non-relation hook (Juju
/// fires `config-changed` when either changes) and set the status only when it changes;
/// every non-relation hook reads both afresh, `update-status` always sets the status, and a
/// corrupt memo is as if there were none.
#[test]
fn relation_hooks_skip_the_tool_calls_their_event_makes_unnecessary() {
    let model = converged_three();
    let changed = |remote: usize| Invocation::relation("changed", RELATION, Some(&unit(remote)));
    let reads = ["is-leader", "relation-get", "relation-get", "relation-list"];
    // The leader uses every peer's bag (their claims make the map) but reads only the remote
    // unit's: the others are as its last hook read them (see the next test).
    let leader = model.tools_called(0, changed(1));
    assert_eq!(leader, [&reads[..], &["relation-get"]].concat());
    // A non-leader reads no bag the leader's record covers.
    assert_eq!(model.tools_called(1, changed(2)), reads);
    // Non-relation hooks read the options and the binding afresh.
    for hook in ["config-changed", "leader-settings-changed", "start"] {
        let called = model.tools_called(1, Invocation::hook(hook));
        for tool in ["config-get", "network-get"] {
            assert!(called.iter().any(|t| t == tool), "{hook}: {called:?}");
        }
        assert!(
            !called.iter().any(|t| t == "status-set"),
            "{hook}: {called:?}"
        );
    }
    let called = model.tools_called(1, Invocation::hook("update-status"));
    assert!(called.iter().any(|t| t == "status-set"), "{called:?}");

    // A changed status is set by a relation hook too: the leader's map loses nothing, but
    // controller 1's address becomes ambiguous and config-changed says so ...
    model.set_addresses(
        1,
        &[("eth0", &["10.0.0.6/24"]), ("eth1", &["10.0.0.16/24"])],
    );
    let called = model.tools_called(1, Invocation::hook("config-changed"));
    assert!(called.iter().any(|t| t == "status-set"), "{called:?}");
    assert_eq!(model.status(1).0, "blocked");
    // ... and a relation hook, using what config-changed read, keeps that status unset.
    let called = model.tools_called(1, changed(0));
    assert!(
        !called
            .iter()
            .any(|t| t == "status-set" || t == "network-get"),
        "{called:?}"
    );
    assert_eq!(model.status(1).0, "blocked");

    // A corrupt memo: everything is read afresh and set, and the memo is rewritten.
    model.set_addresses(1, &[("eth0", &["10.0.0.6/24"])]);
    let memo = model.charm_dir(1).join(controller_charm::memo::FILE_NAME);
    fs::write(&memo, "{\"version\": 1, \"options\": [").expect("corrupt the memo");
    let called = model.tools_called(1, changed(0));
    for tool in ["config-get", "network-get", "status-set"] {
        assert!(called.iter().any(|t| t == tool), "{tool}: {called:?}");
    }
    assert_eq!(
        model.status(1),
        status("active", "db bind address 10.0.0.6 (3 controllers)")
    );
    let text = fs::read_to_string(&memo).expect("memo rewritten");
    assert!(text.contains("\"status\":[\"active\""), "{text}");
    assert_eq!(model.tools_called(1, changed(0)), reads);
}

/// The bags `relation-get` read in these calls, by owner (`controller/1`, or `controller`
/// for the application bag).
fn bags_read(calls: &[juju_sim::model::ToolCall]) -> Vec<String> {
    calls
        .iter()
        .filter(|call| call.tool == "relation-get")
        .filter_map(|call| {
            let at = call.args.iter().position(|arg| arg == "-")?;
            call.args.get(at + 1).cloned()
        })
        .collect()
}

/// A peer's bag changes only when that peer writes it, and Juju then fires
/// `-relation-changed` for it on every other unit: a relation hook re-reads the remote
/// unit's bag and takes the others from its last hook. A bag it never read, a hook of
/// another relation id, and every non-relation hook read them afresh.
#[test]
fn relation_hooks_read_the_remote_units_bag_and_remember_the_others() {
    let model = converged_three();
    let changed = |remote: usize| Invocation::relation("changed", RELATION, Some(&unit(remote)));
    let own_and_app = ["controller/0", "controller"];
    let calls = model.calls_made(0, changed(1));
    assert_eq!(
        bags_read(&calls),
        [&own_and_app[..], &["controller/1"]].concat()
    );

    // Controller 2 moves; its own hook writes its bag ...
    model.set_addresses(2, &[("eth0", &["10.0.0.17/24"])]);
    model.hook(2, Invocation::hook("config-changed"));
    assert_eq!(
        model.unit_bag(2).get("db-bind-address").map(String::as_str),
        Some("10.0.0.17")
    );
    // ... and Juju tells the leader with controller 2's -relation-changed, which reads it.
    let calls = model.calls_made(0, changed(2));
    assert_eq!(
        bags_read(&calls),
        [&own_and_app[..], &["controller/2"]].concat()
    );
    assert_eq!(
        model.published().as_deref(),
        Some(r#"{"0":"10.0.0.5","1":"10.0.0.6","2":"10.0.0.17"}"#)
    );
    // The app-bag -changed (no remote unit) re-reads no peer bag.
    let calls = model.calls_made(0, Invocation::relation("changed", RELATION, None));
    assert_eq!(bags_read(&calls), own_and_app);

    // Every non-relation hook reads every bag afresh.
    let all = [&own_and_app[..], &["controller/1", "controller/2"]].concat();
    for hook in ["update-status", "config-changed", "leader-elected", "start"] {
        let calls = model.calls_made(0, Invocation::hook(hook));
        assert_eq!(bags_read(&calls), all, "{hook}");
    }
    // A memo that cannot be read remembers nothing.
    let memo = model.charm_dir(0).join(controller_charm::memo::FILE_NAME);
    fs::write(&memo, "{\"version\": 2, \"peers\": 7}").expect("corrupt the memo");
    let calls = model.calls_made(0, changed(1));
    assert_eq!(bags_read(&calls), all);
}

/// The agent id never changes for a machine: relation hooks take it from the memo, every
/// other hook asks the reload socket, and a relation hook that changes the map still finds
/// a stopped agent when it asks it to reload.
#[test]
fn relation_hooks_take_the_agent_id_from_the_memo() {
    let mut model = converged_three();
    let agent_id_requests = |model: &Model| {
        model
            .agent(0)
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == controller_contract::reload::AGENT_ID_PATH)
            .count()
    };
    model.agent(0).clear();
    model.hook(0, Invocation::relation("changed", RELATION, Some(&unit(1))));
    assert_eq!(agent_id_requests(&model), 0);
    model.hook(0, Invocation::hook("update-status"));
    assert_eq!(agent_id_requests(&model), 1);

    // The agent stops; controller 2 moves and the leader hears of it in a relation hook.
    model.stop_agent(0);
    model.set_addresses(2, &[("eth0", &["10.0.0.17/24"])]);
    model.hook(2, Invocation::hook("config-changed"));
    model.hook(0, Invocation::relation("changed", RELATION, Some(&unit(2))));
    assert!(
        model.conf(0).is_some_and(|conf| conf.contains("10.0.0.17")),
        "the map is written for the agent to read when it starts"
    );
    let (kind, message) = model.status(0);
    assert_eq!(kind, "waiting");
    assert!(
        message.contains("controller.conf updated but the agent was not told"),
        "{message}"
    );
}

#[test]
fn a_departed_unit_leaves_the_map() {
    let model = converged_three();
    model.update(|state| state.leave_relation(RELATION, &unit(2)));
    model.agent(0).clear();
    model.hook(0, Invocation::departed(RELATION, &unit(2), &unit(2)));
    let two = r#"{"0":"10.0.0.5","1":"10.0.0.6"}"#;
    assert_eq!(model.published().as_deref(), Some(two));
    assert_eq!(
        model.conf(0).as_deref(),
        Some("db-bind-addresses:\n  '0': 10.0.0.5\n  '1': 10.0.0.6\n")
    );
    assert_eq!(model.agent(0).reloads(), 1);
    model.hook(1, Invocation::relation("changed", RELATION, None));
    assert_eq!(model.conf(1).as_deref(), model.conf(0).as_deref());
    assert_eq!(
        model.status(1),
        status("active", "db bind address 10.0.0.6 (2 controllers)")
    );
}

#[test]
fn the_departing_unit_itself_writes_nothing() {
    let model = converged_three();
    let before = model.state().relations[RELATION].clone();
    let conf = model.conf(2);
    model.hook(2, Invocation::departed(RELATION, &unit(0), &unit(2)));
    model.hook(2, Invocation::relation("broken", RELATION, None));
    assert_eq!(model.state().relations[RELATION], before);
    assert_eq!(
        model.conf(2),
        conf,
        "a leaving unit never shrinks its own map"
    );
    assert_eq!(model.status(2).0, "maintenance");
}

#[test]
fn a_new_leader_continues_the_map_without_the_old_one() {
    let model = converged_three();
    model.update(|state| {
        state.leave_relation(RELATION, &unit(0));
        state.leaders.insert("controller".into(), unit(1));
    });
    model.hook(1, Invocation::hook("leader-elected"));
    assert_eq!(
        model.published().as_deref(),
        Some(r#"{"1":"10.0.0.6","2":"10.0.0.7"}"#)
    );
    model.hook(2, Invocation::relation("changed", RELATION, None));
    assert_eq!(
        model.conf(2).as_deref(),
        Some("db-bind-addresses:\n  '1': 10.0.0.6\n  '2': 10.0.0.7\n")
    );
}

#[test]
fn an_ambiguous_address_removes_the_stale_one_keeps_the_entry_and_says_why() {
    let model = converged_three();
    model.set_addresses(
        1,
        &[
            ("eth0", &["10.0.0.6/24"]),
            ("eth1", &["192.168.1.5/24", "fe80::1/64"]),
        ],
    );
    model.hook(1, Invocation::hook("config-changed"));
    assert_eq!(
        model.status(1),
        status(
            "blocked",
            "multiple possible db bind addresses (10.0.0.6, 192.168.1.5); bind the db-cluster \
             endpoint to a space or set bind-cidr"
        )
    );
    assert_eq!(
        model.unit_bag(1).get("db-bind-address"),
        None,
        "stale address removed"
    );
    // Unknown is not gone: the leader keeps controller 1's last known entry, and no
    // controller.conf loses it.
    let three = r#"{"0":"10.0.0.5","1":"10.0.0.6","2":"10.0.0.7"}"#;
    let conf = "db-bind-addresses:\n  '0': 10.0.0.5\n  '1': 10.0.0.6\n  '2': 10.0.0.7\n";
    model.hook(0, Invocation::relation("changed", RELATION, Some(&unit(1))));
    model.hook(2, Invocation::relation("changed", RELATION, None));
    assert_eq!(model.published().as_deref(), Some(three));
    for n in 0..3 {
        assert_eq!(model.conf(n).as_deref(), Some(conf), "controller {n}");
    }
    // The operator restricts the candidates: the unit converges again.
    model.update(|state| {
        let config = &mut state
            .applications
            .get_mut("controller")
            .expect("app")
            .config;
        config.insert("bind-cidr".into(), json!("192.168.0.0/16"));
    });
    model.hook(1, Invocation::hook("config-changed"));
    assert_eq!(
        model.unit_bag(1).get("db-bind-address").map(String::as_str),
        Some("192.168.1.5")
    );
}

#[test]
fn install_never_writes_controller_conf() {
    let mut model = Model::new(1);
    let path = model.conf_path(0);
    fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    let original = "api-port: 17070\ndb-bind-addresses:\n  '0': 10.0.0.5\n";
    fs::write(&path, original).expect("seed conf");
    // The agent is not up yet during install: nothing touches the file.
    model.hook(0, Invocation::hook("install"));
    assert_eq!(fs::read_to_string(&path).expect("conf"), original);
    // Even with the agent up and a changed map, install leaves the file alone ...
    model.set_addresses(0, &[("eth0", &["10.0.0.9/24"])]);
    model.start_agent(0);
    model.hook(0, Invocation::hook("install"));
    assert_eq!(fs::read_to_string(&path).expect("conf"), original);
    assert_eq!(model.agent(0).reloads(), 0);
    // ... and the next hook writes the map, keeping the other keys.
    model.hook(0, Invocation::hook("config-changed"));
    assert_eq!(
        fs::read_to_string(&path).expect("conf"),
        "api-port: 17070\ndb-bind-addresses:\n  '0': 10.0.0.9\n"
    );
}

#[test]
fn a_hook_removes_a_killed_writers_temp_file() {
    let mut model = Model::new(1);
    model.start_agent(0);
    model.hook(0, Invocation::hook("config-changed"));
    let dir = model.conf_path(0).parent().expect("dir").to_owned();
    // The writer's one temp file name (conffile::TEMP_NAME).
    fs::write(dir.join(".controller.conf.new"), "db-bind-add").expect("leftover");
    // Converged: nothing to write, and the leftover still goes.
    model.hook(0, Invocation::hook("update-status"));
    let names: Vec<String> = fs::read_dir(&dir)
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["controller.conf"]);
    assert_eq!(model.agent(0).reloads(), 1);
}

#[test]
fn an_unchanged_conf_is_neither_rewritten_nor_reloaded() {
    let mut model = Model::new(1);
    model.start_agent(0);
    let outcome = model.hook(0, Invocation::hook("config-changed"));
    assert!(
        outcome.stdout.contains("writing "),
        "the decision is logged: {outcome:?}"
    );
    assert_eq!(model.agent(0).reloads(), 1);
    let inode = fs::metadata(model.conf_path(0)).expect("conf").ino();
    let calls = model.state().calls.len();
    model.hook(0, Invocation::hook("update-status"));
    model.hook(0, Invocation::relation("changed", RELATION, None));
    assert_eq!(model.agent(0).reloads(), 1, "no reload without a change");
    assert_eq!(fs::metadata(model.conf_path(0)).expect("conf").ino(), inode);
    let state = model.state();
    assert!(
        !state.calls[calls..]
            .iter()
            .any(|c| c.tool == "relation-set"),
        "a converged unit writes no relation data"
    );
}

#[test]
fn an_absent_or_refusing_socket_means_waiting_and_exit_0() {
    let mut model = Model::new(1);
    model.hook(0, Invocation::hook("install"));
    let socket = controller_contract::paths::reload_socket(&model.data_dir(0));
    let (kind, message) = model.status(0);
    assert_eq!(kind, "waiting");
    assert!(
        message.contains("reload socket") && message.contains(&socket.display().to_string()),
        "{message}"
    );
    assert_eq!(model.conf(0), None);
    // The address is still published so the leader can include this unit later.
    assert_eq!(
        model.unit_bag(0).get("db-bind-address").map(String::as_str),
        Some("10.0.0.5")
    );
    // A socket file nobody listens on.
    model.start_agent(0);
    let listener_gone = std::os::unix::net::UnixListener::bind(model.dir.path().join("x.socket"));
    drop(listener_gone);
    model.stop_agent(0);
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("stale socket file"));
    model.hook(0, Invocation::hook("update-status"));
    assert_eq!(model.status(0).0, "waiting");
    // The next hook after the agent comes up converges.
    model.start_agent(0);
    model.hook(0, Invocation::hook("update-status"));
    assert_eq!(
        model.status(0),
        status("active", "db bind address 10.0.0.5 (1 controller)")
    );
}

#[test]
fn a_torn_conf_is_left_alone_and_a_missing_one_is_written() {
    let mut model = Model::new(1);
    model.start_agent(0);
    let path = model.conf_path(0);
    fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    fs::write(&path, "db-bind-addresses:\n  '0': 10.0.").expect("torn conf");
    let outcome = model.hook(0, Invocation::hook("config-changed"));
    assert!(outcome.stderr.is_empty(), "{}", outcome.stderr);
    let (kind, message) = model.status(0);
    assert_eq!(kind, "blocked");
    assert!(
        message.contains("is unreadable") && message.contains("move it aside"),
        "{message}"
    );
    assert_eq!(
        fs::read_to_string(&path).expect("conf"),
        "db-bind-addresses:\n  '0': 10.0."
    );
    assert_eq!(model.agent(0).reloads(), 0);
    fs::remove_file(&path).expect("operator moves it aside");
    model.hook(0, Invocation::hook("update-status"));
    assert_eq!(
        model.conf(0).as_deref(),
        Some("db-bind-addresses:\n  '0': 10.0.0.5\n")
    );
    // An empty file (what a truncating writer leaves) holds nothing to keep: rewritten.
    fs::write(&path, "").expect("empty conf");
    model.hook(0, Invocation::hook("update-status"));
    assert_eq!(
        model.conf(0).as_deref(),
        Some("db-bind-addresses:\n  '0': 10.0.0.5\n")
    );
}

#[test]
fn an_unusable_binding_blocks_with_a_clear_status() {
    let check = |raw: &str, expected: &str| {
        let mut model = Model::new(1);
        model.start_agent(0);
        model.hook(0, Invocation::hook("config-changed"));
        let conf = model.conf(0);
        let published = model.published();
        model.set_raw_network(0, raw);
        let outcome = model.hook(0, Invocation::hook("config-changed"));
        assert!(!outcome.stderr.contains("panicked"), "{}", outcome.stderr);
        let (kind, message) = model.status(0);
        assert_eq!(kind, "blocked", "{raw:.80}");
        assert!(message.contains(expected), "{raw:.80}: {message}");
        assert_eq!(
            model.unit_bag(0).get("db-bind-address"),
            None,
            "stale address removed"
        );
        assert_eq!(model.published(), published, "the map keeps the entry");
        assert_eq!(model.conf(0), conf, "controller.conf untouched");
    };
    check(
        "{}",
        "no usable db bind address on the db-cluster binding (the binding has no addresses)",
    );
    check(
        r#"{"bind-addresses":[{"interface-name":"eth0"}]}"#,
        "the binding has no addresses",
    );
    check(
        r#"{"bind-addresses":[{"addresses":[{"value":"ten.0.0.5"}]}],"ingress-addresses":["127.0.0.1"]}"#,
        "dropped ten.0.0.5 (not an IP address), 127.0.0.1 (loopback)",
    );
    // A control character inside an address string that parses: quoted in the status
    // (status-set cannot take a NUL byte), never the reason the hook fails.
    check(
        r#"{"ingress-addresses":["10.0.0.5\u0000"]}"#,
        "dropped 10.0.0.5\\u{0} (not an IP address)",
    );
    let oversized = format!(
        "{{\"ingress-addresses\":[{}]}}",
        vec!["\"10.0.0.1\""; 200_000].join(",")
    );
    check(&oversized, "more than the");
}

/// Malformed `network-get` output is a failed tool: the hook exits non-zero, Juju retries
/// it, and nothing of it is committed: the leader's map, its bag and controller.conf stay.
#[test]
fn malformed_network_get_output_fails_the_leaders_hook_and_commits_nothing() {
    for raw in [
        "{\"bind-addresses\": [",
        "{\"ingress-addresses\":[\"10.0.0.5\"]}\0",
        "\0",
        "not json at all",
        r#"{"ingress-addresses":[42]}"#,
    ] {
        let model = converged_three();
        let relation = model.state().relations[RELATION].clone();
        let conf = model.conf(0);
        let status = model.status(0);
        let reloads = model.agent(0).reloads();
        model.set_raw_network(0, raw);
        let outcome = model.run(0, Invocation::hook("config-changed"));
        assert_eq!(outcome.exit_code, Some(1), "{raw:?}: {outcome:?}");
        assert!(!outcome.committed, "{raw:?}");
        assert!(
            outcome
                .stderr
                .contains("network-get printed malformed JSON"),
            "{raw:?}: {}",
            outcome.stderr
        );
        assert!(!outcome.stderr.contains("panicked"), "{}", outcome.stderr);
        let state = model.state();
        assert_eq!(state.relations[RELATION], relation, "{raw:?}");
        assert_eq!(model.conf(0), conf, "{raw:?}");
        assert_eq!(model.agent(0).reloads(), reloads, "{raw:?}: no reload");
        assert_eq!(model.status(0), status, "{raw:?}: no status change");
    }
}

/// Three converged controllers, then the leader's options become invalid or its
/// `bind-cidr` matches nothing: blocked, and the map keeps every entry.
#[test]
fn invalid_options_on_the_leader_block_and_keep_the_map() {
    for (option, value, expected) in [
        (
            "run-dbaccessor",
            json!("yes"),
            "invalid config: run-dbaccessor",
        ),
        (
            "bind-cidr",
            json!("172.16.0.0/12"),
            "no usable db bind address on the db-cluster binding",
        ),
    ] {
        let model = converged_three();
        let published = model.published();
        let conf = model.conf(0);
        model.update(|state| {
            state
                .applications
                .get_mut("controller")
                .expect("app")
                .config
                .insert(option.into(), value.clone());
        });
        model.hook(0, Invocation::hook("config-changed"));
        let (kind, message) = model.status(0);
        assert_eq!(kind, "blocked", "{option}");
        assert!(message.starts_with(expected), "{option}: {message}");
        assert_eq!(model.published(), published, "{option}");
        assert_eq!(model.conf(0), conf, "{option}");
        // The followers' controller.conf keep it too.
        model.hook(1, Invocation::relation("changed", RELATION, None));
        assert_eq!(model.conf(1), conf, "{option}");
    }
}

/// A peer whose bag is momentarily empty keeps its entry; a peer that departs loses it.
#[test]
fn an_empty_peer_bag_keeps_the_entry_and_a_departure_removes_it() {
    let model = converged_three();
    let three = model.published();
    model.update(|state| {
        state
            .relations
            .get_mut(RELATION)
            .expect("relation")
            .unit_bags
            .insert(unit(2), Default::default());
    });
    model.hook(0, Invocation::relation("changed", RELATION, Some(&unit(2))));
    assert_eq!(model.published(), three);
    model.update(|state| state.leave_relation(RELATION, &unit(2)));
    model.hook(0, Invocation::departed(RELATION, &unit(2), &unit(2)));
    assert_eq!(
        model.published().as_deref(),
        Some(r#"{"0":"10.0.0.5","1":"10.0.0.6"}"#)
    );
    model.hook(1, Invocation::relation("changed", RELATION, None));
    assert_eq!(
        model.conf(1).as_deref(),
        Some("db-bind-addresses:\n  '0': 10.0.0.5\n  '1': 10.0.0.6\n")
    );
}

#[test]
fn a_failing_hook_tool_fails_the_hook_and_commits_nothing() {
    let model = Model::new(1);
    model.hook(0, Invocation::hook("install"));
    let before = model.state().relations[RELATION].clone();
    model.set_addresses(0, &[("eth0", &["10.0.0.9/24"])]);
    model.update(|state| {
        state.units.get_mut(&unit(0)).expect("unit").network.clear();
    });
    let outcome = model.run(0, Invocation::hook("config-changed"));
    assert_eq!(outcome.exit_code, Some(1));
    assert!(
        outcome
            .stderr
            .contains("no network config found for binding \"db-cluster\""),
        "{}",
        outcome.stderr
    );
    assert!(!outcome.committed);
    assert_eq!(model.state().relations[RELATION], before);
}

#[test]
fn invalid_config_blocks_naming_the_value() {
    let model = Model::new(1);
    model.update(|state| {
        let config = &mut state
            .applications
            .get_mut("controller")
            .expect("app")
            .config;
        config.insert("address-family".into(), json!("ipv5"));
    });
    model.hook(0, Invocation::hook("config-changed"));
    assert_eq!(
        model.status(0),
        status(
            "blocked",
            "invalid config: address-family \"ipv5\" is not one of auto, ipv4, ipv6"
        )
    );
}

#[test]
fn ipv6_only_controllers_form_a_map() {
    let mut model = Model::new(2);
    model.set_addresses(0, &[("eth0", &["fd00::5/64", "10.0.0.5/24"])]);
    model.set_addresses(1, &[("eth0", &["fd00::6/64", "10.0.0.6/24"])]);
    model.update(|state| {
        let config = &mut state
            .applications
            .get_mut("controller")
            .expect("app")
            .config;
        config.insert("address-family".into(), json!("ipv6"));
    });
    for n in 0..2 {
        model.start_agent(n);
        model.hook(n, Invocation::hook("config-changed"));
    }
    model.settle(2, 2);
    assert_eq!(
        model.published().as_deref(),
        Some(r#"{"0":"fd00::5","1":"fd00::6"}"#)
    );
    assert_eq!(
        model.conf(1).as_deref(),
        Some("db-bind-addresses:\n  '0': fd00::5\n  '1': fd00::6\n")
    );
}

#[test]
fn unknown_hooks_exit_0_after_a_debug_log() {
    let model = Model::new(1);
    let outcome = model.hook(0, Invocation::hook("stop"));
    assert_eq!(outcome.exit_code, Some(0));
    let state = model.state();
    let log = state.juju_log.last().expect("a log line");
    assert_eq!(log.level, "DEBUG");
    assert!(log.message.contains("stop"), "{}", log.message);
    assert!(state.units[&unit(0)].status.is_none(), "no status change");
}

#[test]
fn bind_candidates_action_lists_candidates_and_drops() {
    let model = Model::new(1);
    model.set_addresses(
        0,
        &[
            ("lo", &["127.0.0.1/8"]),
            ("eth0", &["10.0.0.5/24", "fd00::5/64"]),
            ("eth1", &["192.168.9.9/24"]),
        ],
    );
    let outcome = model.hook(0, Invocation::action("bind-candidates", json!({})));
    assert_eq!(outcome.exit_code, Some(0));
    let state = model.state();
    let record = state.actions.last().expect("action record");
    assert_eq!(record.outcome, "completed");
    assert_eq!(
        serde_json::to_value(&record.action.results).expect("json"),
        json!({
            "result": "ambiguous",
            "candidates": "10.0.0.5 192.168.9.9",
            "dropped": "127.0.0.1 (loopback); fd00::5 (IPv6, an IPv4 address in the same tier exists)",
            "addresses": {
                "0": {"address": "10.0.0.5", "scope": "local-cloud", "subnet": "10.0.0.0/24",
                      "verdict": "kept", "reason": "a candidate in the best tier, as good as the others"},
                "1": {"address": "192.168.9.9", "scope": "local-cloud", "subnet": "192.168.9.0/24",
                      "verdict": "kept", "reason": "a candidate in the best tier, as good as the others"},
                "2": {"address": "127.0.0.1", "scope": "loopback", "subnet": "127.0.0.0/8",
                      "verdict": "dropped", "reason": "loopback"},
                "3": {"address": "fd00::5", "scope": "local-cloud", "subnet": "fd00::/64",
                      "verdict": "dropped", "reason": "IPv6, an IPv4 address in the same tier exists"},
            },
            "fix": "juju bind controller db-cluster=<space of the network to use> \
                    (or, without spaces: juju config controller bind-cidr=10.0.0.0/24)",
        })
    );
}

#[test]
fn cluster_status_action_reports_what_the_charm_knows() {
    let model = converged_three();
    model.hook(1, Invocation::action("cluster-status", json!({})));
    let state = model.state();
    let results = &state.actions.last().expect("action record").action.results;
    let get = |key: &str| {
        results
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(get("agent-id"), "1");
    assert_eq!(get("juju-leader"), "false");
    let nested = |outer: &str, key: &str| {
        results
            .get(outer)
            .and_then(|v| v.get(key))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(nested("bind-address", "address"), "10.0.0.6");
    assert_eq!(
        nested("bind-address", "how"),
        "the only local-cloud address of the db-cluster binding left after dropping nothing"
    );
    assert_eq!(
        get("published-addresses"),
        r#"{"0":"10.0.0.5","1":"10.0.0.6","2":"10.0.0.7"}"#
    );
    assert_eq!(get("in-sync"), "true");
    assert_eq!(get("peers"), "controller/0 controller/2");
    // No dbaccessor runs in this model: the action reports what the charm knows and fails.
    assert_eq!(nested("dbaccessor", "state"), "unavailable");
    let record = state.actions.last().expect("action record");
    assert_eq!(record.outcome, "failed");
    let failed = record.action.failed.clone().unwrap_or_default();
    assert!(
        failed.starts_with("the dbaccessor does not answer: status socket "),
        "{failed}"
    );
}

#[test]
fn an_unknown_action_fails_the_action_not_the_unit() {
    let model = Model::new(1);
    model.hook(0, Invocation::action("no-such-action", json!({})));
    let state = model.state();
    let record = state.actions.last().expect("action record");
    assert_eq!(record.outcome, "failed");
    assert_eq!(
        record.action.failed.as_deref(),
        Some("unknown action \"no-such-action\"")
    );
}

#[test]
fn hook_shims_run_the_same_binary_for_agents_without_dispatch() {
    let mut model = Model::new(1);
    model.start_agent(0);
    let charm_dir = model.state().units[&unit(0)].charm_dir.clone();
    let hooks = charm_dir.join("hooks");
    fs::create_dir_all(&hooks).expect("hooks dir");
    let shim = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks/config-changed");
    fs::copy(&shim, hooks.join("config-changed")).expect("copy shim");
    // An old agent runs hooks/<name> with Juju's environment but no JUJU_DISPATCH_PATH.
    let prepared = model
        .runner
        .prepare(&unit(0), &Invocation::hook("config-changed"))
        .expect("prepare")
        .expect("the charm has dispatch");
    let mut command = std::process::Command::new(hooks.join("config-changed"));
    command.current_dir(&charm_dir).env_clear();
    for (name, value) in prepared.command.get_envs() {
        if let (Some(value), false) = (value, name == "JUJU_DISPATCH_PATH") {
            command.env(name, value);
        }
    }
    let output = command.output().expect("run the shim");
    let outcome = model
        .runner
        .finish(
            &prepared,
            output.status,
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
        .expect("finish");
    assert!(outcome.success(), "{outcome:?}");
    assert_eq!(
        model.status(0),
        status("active", "db bind address 10.0.0.5 (1 controller)")
    );
    assert_eq!(
        model.conf(0).as_deref(),
        Some("db-bind-addresses:\n  '0': 10.0.0.5\n")
    );
}

/// dispatch started with fds 0-2 closed (no supervisor should, but nothing stops one) still
/// converges, and controller.conf and the memo hold nothing but their own content. (dispatch
/// opens `/dev/null` in their place, as std's start-up does, so that no file opened later can
/// become its stdout; today no file is open while it prints, so this also passes without.)
#[test]
fn a_hook_started_without_standard_fds_converges() {
    let mut model = Model::new(1);
    model.start_agent(0);
    let prepared = model
        .runner
        .prepare(&unit(0), &Invocation::hook("config-changed"))
        .expect("prepare")
        .expect("the charm has dispatch");
    let program = prepared.command.get_program().to_owned();
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", "exec 0<&- 1>&- 2>&- \"$0\""])
        .arg(&program)
        .env_clear();
    if let Some(dir) = prepared.command.get_current_dir() {
        command.current_dir(dir);
    }
    for (name, value) in prepared.command.get_envs() {
        if let Some(value) = value {
            command.env(name, value);
        }
    }
    let exit = command.status().expect("run dispatch");
    let outcome = model
        .runner
        .finish(&prepared, exit, String::new(), String::new())
        .expect("finish");
    assert!(outcome.success(), "{outcome:?}");
    assert_eq!(
        model.conf(0).as_deref(),
        Some("db-bind-addresses:\n  '0': 10.0.0.5\n")
    );
    let memo = fs::read_to_string(model.charm_dir(0).join(controller_charm::memo::FILE_NAME))
        .expect("memo");
    assert!(
        serde_json::from_str::<serde_json::Value>(&memo).is_ok(),
        "the memo is JSON and nothing else: {memo}"
    );
    assert_eq!(
        model.status(0),
        status("active", "db bind address 10.0.0.5 (1 controller)")
    );
}

#[test]
fn run_dbaccessor_blocks_when_the_service_cannot_be_set_up() {
    let mut model = Model::new(1);
    model.start_agent(0);
    model.update(|state| {
        state
            .applications
            .get_mut("controller")
            .expect("application")
            .config
            .insert("run-dbaccessor".into(), json!(true));
    });
    model.hook(0, Invocation::hook("config-changed"));
    let (kind, message) = model.status(0);
    assert_eq!(kind, "blocked");
    // Without systemd (this test machine) it says so; on a systemd host the test's charm
    // dir has no bin/dbaccessor. Either way nothing is written under /etc/systemd.
    assert!(
        message.starts_with("run-dbaccessor: systemd is not running on this machine")
            || message.starts_with("run-dbaccessor: ")
                && message.ends_with("bin/dbaccessor is missing from the charm"),
        "{message}"
    );
    // The rest of the hook still converged: the address is published.
    assert_eq!(
        model.unit_bag(0).get("db-bind-address").map(String::as_str),
        Some("10.0.0.5")
    );
}

/// Every hook tool whose output the charm parses, made to print what Juju never prints:
/// the hook fails (exit 1, not a panic, the tool named), commits nothing and leaves
/// controller.conf, the status and the agent alone, and the `cluster-status` action fails
/// with the reason as its message. An answer too big to read is the same
/// failure, except from network-get, where it is a fact about the binding: blocked, saying
/// so, with the map and controller.conf kept. Put back, the next hook restores the model.
#[test]
fn malformed_output_of_any_parsed_hook_tool_fails_the_hook_and_commits_nothing() {
    let model = converged_three();
    let deep = "[".repeat(100_000);
    let huge = format!("{{\"k\":\"{}\"}}", "x".repeat(2 << 20));
    // The too-big answer last: network-get takes it as a fact (see below).
    let outputs: [&[u8]; 10] = [
        b"",
        b"{",
        b"[\"controller/1\"",
        b"42",
        b"\"a string\"",
        b"{}{}",
        b"null\0",
        b"\xff\xfe\xfd",
        deep.as_bytes(),
        huge.as_bytes(),
    ];
    let relation = model.state().relations[RELATION].clone();
    let published = model.published();
    let conf = model.conf(0);
    let status = model.status(0);
    let reloads = model.agent(0).reloads();
    let tools = model.runner.tools_dir().to_owned();
    let garbage = model.dir.path().join("garbage");
    for tool in [
        "is-leader",
        "config-get",
        "network-get",
        "relation-ids",
        "relation-get",
        "relation-list",
    ] {
        let link = tools.join(tool);
        let target = fs::read_link(&link).expect("the emulator's link");
        fs::remove_file(&link).expect("remove the link");
        fs::write(&link, format!("#!/bin/sh\ncat '{}'\n", garbage.display())).expect("script");
        fs::set_permissions(&link, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        for output in outputs {
            fs::write(&garbage, output).expect("garbage");
            // config-changed on the leader calls every one of these tools.
            let outcome = model.run(0, Invocation::hook("config-changed"));
            let case = format!(
                "{tool} printing {} bytes {:?}",
                output.len(),
                String::from_utf8_lossy(&output[..output.len().min(20)])
            );
            assert!(!outcome.stderr.contains("panicked"), "{case}: {outcome:?}");
            assert_eq!(model.published(), published, "{case}");
            assert_eq!(model.conf(0), conf, "{case}");
            assert_eq!(model.agent(0).reloads(), reloads, "{case}");
            if tool == "network-get" && output.len() == huge.len() {
                assert_eq!(outcome.exit_code, Some(0), "{case}: {outcome:?}");
                let (kind, message) = model.status(0);
                assert_eq!(kind, "blocked", "{case}");
                assert!(
                    message.contains("network-get printed more than"),
                    "{case}: {message}"
                );
                // The last case: the model is put back below.
                continue;
            }
            assert_eq!(outcome.exit_code, Some(1), "{case}: {outcome:?}");
            assert!(outcome.stderr.contains(tool), "{case}: {}", outcome.stderr);
            // One line, each cause in it once.
            let line = outcome
                .stderr
                .lines()
                .find(|line| line.starts_with("ERROR "))
                .unwrap_or_else(|| panic!("{case}: no ERROR line in {}", outcome.stderr));
            let parts: Vec<&str> = line.split(": ").collect();
            let distinct: std::collections::BTreeSet<&str> = parts.iter().copied().collect();
            assert_eq!(distinct.len(), parts.len(), "{case}: repeats: {line}");
            assert!(!outcome.committed, "{case}");
            assert_eq!(model.state().relations[RELATION], relation, "{case}");
            assert_eq!(model.status(0), status, "{case}");
            // An action that meets the same tool fails (exit 1) with the reason as its
            // message. (cluster-status reports a bad network-get answer in its results
            // instead; without a dbaccessor here it fails for that.)
            let outcome = model.run(0, Invocation::action("cluster-status", json!({})));
            assert!(!outcome.stderr.contains("panicked"), "{case}: {outcome:?}");
            let state = model.state();
            let record = state.actions.last().expect("action record");
            assert_eq!(record.outcome, "failed", "{case}: {outcome:?}");
            let message = record.action.failed.clone().unwrap_or_default();
            if tool == "network-get" {
                assert!(message.contains("dbaccessor"), "{case}: {message:?}");
            } else {
                assert_eq!(outcome.exit_code, Some(1), "{case}: {outcome:?}");
                assert!(message.contains(tool), "{case}: {message:?}");
            }
        }
        fs::remove_file(&link).expect("remove the script");
        std::os::unix::fs::symlink(&target, &link).expect("put the link back");
        // The next hook repairs whatever the last case left (network-get's blocked status
        // and the address it took out of this unit's bag).
        model.hook(0, Invocation::hook("config-changed"));
        assert_eq!(
            model.state().relations[RELATION],
            relation,
            "{tool} put back"
        );
        assert_eq!(model.status(0), status, "{tool} put back");
        assert_eq!(model.conf(0), conf, "{tool} put back");
    }
}
