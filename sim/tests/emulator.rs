//! The hook-tool emulator and runner as a charm sees them: the exact environment, Juju's
//! output formats and exit codes, relation writes committed only on exit 0, and a state file
//! that concurrent tool processes do not corrupt.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use juju_sim::model::{Application, Unit};
use juju_sim::{Invocation, NetworkInfo, Runner, State, Store};
use serde_json::json;

const HOOK_TOOL: &str = env!("CARGO_BIN_EXE_juju-hook-tool");

/// A model with two units of `controller` in a peer relation, controller/0 leading, and a
/// runner whose unit 0 runs `dispatch` (a script, or a link to a program).
struct Fixture {
    dir: tempfile::TempDir,
    runner: Runner,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::new(dir.path().join("model.json"));
        let runner =
            Runner::new(store, Path::new(HOOK_TOOL), &dir.path().join("tools")).expect("runner");
        let mut state = State::default();
        state.applications.insert(
            "controller".into(),
            Application {
                config: [("address-family".to_owned(), json!("auto"))].into(),
                status: None,
            },
        );
        state
            .leaders
            .insert("controller".into(), "controller/0".into());
        let id = state.add_relation("db-cluster");
        for n in 0..2 {
            let charm_dir = dir
                .path()
                .join(format!("m{n}/agents/unit-controller-{n}/charm"));
            fs::create_dir_all(&charm_dir).expect("charm dir");
            let address = format!("10.0.0.{}/24", 5 + n);
            state.units.insert(
                format!("controller/{n}"),
                Unit {
                    machine: n.to_string(),
                    charm_dir,
                    network: [(
                        "db-cluster".to_owned(),
                        NetworkInfo::from_interfaces(&[
                            ("eth0", &[address.as_str()]),
                            ("eth1", &["fd00::1/64"]),
                        ])
                        .to_value(),
                    )]
                    .into(),
                    ..Unit::default()
                },
            );
            state.join_relation(&id, &format!("controller/{n}"));
        }
        runner.store().save(&state).expect("save");
        Self { dir, runner }
    }

    fn charm_dir(&self, n: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("m{n}/agents/unit-controller-{n}/charm"))
    }

    /// Makes unit n's dispatch a shell script.
    fn script(&self, n: usize, body: &str) {
        let path = self.charm_dir(n).join("dispatch");
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write dispatch");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    fn state(&self) -> State {
        self.runner.store().load().expect("load")
    }
}

fn env_names(stdout: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name.to_owned()))
        .collect()
}

const ALWAYS: &[&str] = &[
    "PATH",
    "JUJU_DISPATCH_PATH",
    "JUJU_HOOK_NAME",
    "JUJU_UNIT_NAME",
    "JUJU_CHARM_DIR",
    "CHARM_DIR",
    "JUJU_CONTEXT_ID",
    "JUJU_MODEL_NAME",
    "JUJU_MODEL_UUID",
    "JUJU_MACHINE_ID",
    "JUJU_API_ADDRESSES",
    "JUJU_VERSION",
    "JUJU_AGENT_SOCKET_ADDRESS",
    "JUJU_AGENT_SOCKET_NETWORK",
    "JUJU_PRINCIPAL_UNIT",
    "JUJU_AVAILABILITY_ZONE",
    "CLOUD_API_VERSION",
    "JUJU_CHARM_HTTP_PROXY",
    "JUJU_CHARM_HTTPS_PROXY",
    "JUJU_CHARM_FTP_PROXY",
    "JUJU_CHARM_NO_PROXY",
    "LANG",
    "DEBIAN_FRONTEND",
    "APT_LISTCHANGES_FRONTEND",
];

#[test]
fn the_environment_is_exactly_jujus() {
    let fixture = Fixture::new();
    // `env` as dispatch prints the environment and adds nothing of its own.
    std::os::unix::fs::symlink("/usr/bin/env", fixture.charm_dir(0).join("dispatch"))
        .expect("link env");
    let check = |invocation: Invocation, extra: &[&str], values: &[(&str, &str)]| {
        let outcome = fixture
            .runner
            .run("controller/0", &invocation)
            .expect("run");
        assert_eq!(outcome.exit_code, Some(0), "{outcome:?}");
        let mut want: BTreeSet<String> = ALWAYS.iter().map(|s| s.to_string()).collect();
        want.extend(extra.iter().map(|s| s.to_string()));
        assert_eq!(env_names(&outcome.stdout), want, "{invocation:?}");
        for (name, value) in values {
            assert!(
                outcome
                    .stdout
                    .lines()
                    .any(|l| l == format!("{name}={value}")),
                "{name}={value} in\n{}",
                outcome.stdout
            );
        }
        let tools = fixture.dir.path().join("tools");
        assert!(
            outcome
                .stdout
                .lines()
                .any(|l| l.starts_with(&format!("PATH={}:", tools.display()))),
            "tools dir first on PATH"
        );
    };
    let charm_dir = fixture.charm_dir(0).display().to_string();
    check(
        Invocation::hook("install"),
        &[],
        &[
            ("JUJU_DISPATCH_PATH", "hooks/install"),
            ("JUJU_HOOK_NAME", "install"),
            ("JUJU_UNIT_NAME", "controller/0"),
            ("JUJU_CHARM_DIR", &charm_dir),
            ("CHARM_DIR", &charm_dir),
            ("JUJU_MACHINE_ID", "0"),
            ("JUJU_AGENT_SOCKET_NETWORK", "unix"),
            ("JUJU_PRINCIPAL_UNIT", ""),
            ("CLOUD_API_VERSION", ""),
            ("JUJU_CHARM_HTTP_PROXY", ""),
            ("LANG", "C.UTF-8"),
            ("DEBIAN_FRONTEND", "noninteractive"),
        ],
    );
    check(
        Invocation::relation("changed", "db-cluster:0", Some("controller/1")),
        &[
            "JUJU_RELATION",
            "JUJU_RELATION_ID",
            "JUJU_REMOTE_UNIT",
            "JUJU_REMOTE_APP",
        ],
        &[
            ("JUJU_RELATION", "db-cluster"),
            ("JUJU_RELATION_ID", "db-cluster:0"),
            ("JUJU_REMOTE_UNIT", "controller/1"),
            ("JUJU_REMOTE_APP", "controller"),
        ],
    );
    check(
        Invocation::relation("created", "db-cluster:0", None),
        &[
            "JUJU_RELATION",
            "JUJU_RELATION_ID",
            "JUJU_REMOTE_UNIT",
            "JUJU_REMOTE_APP",
        ],
        &[("JUJU_REMOTE_UNIT", "")],
    );
    check(
        Invocation::departed("db-cluster:0", "controller/1", "controller/1"),
        &[
            "JUJU_RELATION",
            "JUJU_RELATION_ID",
            "JUJU_REMOTE_UNIT",
            "JUJU_REMOTE_APP",
            "JUJU_DEPARTING_UNIT",
        ],
        &[("JUJU_DEPARTING_UNIT", "controller/1")],
    );
    check(
        Invocation::action("bind-candidates", json!({})),
        &["JUJU_ACTION_NAME", "JUJU_ACTION_UUID", "JUJU_ACTION_TAG"],
        &[
            ("JUJU_DISPATCH_PATH", "actions/bind-candidates"),
            ("JUJU_HOOK_NAME", ""),
        ],
    );
}

#[test]
fn relation_writes_commit_only_on_exit_0() {
    let fixture = Fixture::new();
    let check = |exit: i32, committed: bool| {
        fixture.script(
            0,
            &format!(
                "relation-set -r db-cluster:0 k{exit}=v || exit 9\n\
                 relation-set -r 0 --app a{exit}=v || exit 9\n\
                 test \"$(relation-get -r db-cluster:0 --format json k{exit} controller/0)\" = '\"v\"' || exit 8\n\
                 exit {exit}"
            ),
        );
        let outcome = fixture
            .runner
            .run("controller/0", &Invocation::hook("update-status"))
            .expect("run");
        assert_eq!(outcome.exit_code, Some(exit), "{outcome:?}");
        assert_eq!(outcome.committed, committed);
        let state = fixture.state();
        let relation = &state.relations["db-cluster:0"];
        assert_eq!(
            relation.unit_bags["controller/0"].contains_key(&format!("k{exit}")),
            committed
        );
        assert_eq!(
            relation
                .app_bags
                .get("controller")
                .is_some_and(|b| b.contains_key(&format!("a{exit}"))),
            committed
        );
        assert!(
            state.running.is_empty(),
            "the context is gone after the hook"
        );
    };
    check(0, true);
    check(1, false);
    // Another unit never sees uncommitted writes; an empty value deletes.
    fixture.script(0, "relation-set -r 0 k0= && relation-set -r 0 pending=x");
    let outcome = fixture
        .runner
        .run("controller/0", &Invocation::hook("update-status"))
        .expect("run");
    assert_eq!(outcome.exit_code, Some(0));
    let bag = fixture.state().relations["db-cluster:0"].unit_bags["controller/0"].clone();
    assert!(
        !bag.contains_key("k0") && bag.contains_key("pending"),
        "{bag:?}"
    );
}

/// Runs a tool by hand as unit 0 outside any hook.
fn tool(fixture: &Fixture, args: &[&str]) -> (String, String, i32) {
    let output = Command::new(HOOK_TOOL)
        .args(args)
        .env("JUJU_SIM_STATE", fixture.runner.store().path())
        .env("JUJU_UNIT_NAME", "controller/0")
        .env_remove("JUJU_CONTEXT_ID")
        .output()
        .expect("run juju-hook-tool");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        output.status.code().unwrap_or(-1),
    )
}

#[test]
fn tool_output_and_errors_are_jujus() {
    let fixture = Fixture::new();
    let check = |args: &[&str], stdout: &str, stderr: &str, code: i32| {
        assert_eq!(
            tool(&fixture, args),
            (stdout.to_owned(), stderr.to_owned(), code),
            "{args:?}"
        );
    };
    check(
        &["network-get", "db-cluster", "--format", "json"],
        "{\"bind-addresses\":[{\"addresses\":[{\"cidr\":\"10.0.0.5/24\",\"hostname\":\"\",\"value\":\"10.0.0.5\"}],\"interface-name\":\"eth0\",\"mac-address\":\"00:16:3e:00:00:00\"},{\"addresses\":[{\"cidr\":\"fd00::1/64\",\"hostname\":\"\",\"value\":\"fd00::1\"}],\"interface-name\":\"eth1\",\"mac-address\":\"00:16:3e:00:00:01\"}],\"egress-subnets\":[\"10.0.0.5/24\",\"fd00::1/64\"],\"ingress-addresses\":[\"10.0.0.5\",\"fd00::1\"]}\n",
        "",
        0,
    );
    check(
        &[
            "network-get",
            "db-cluster",
            "--ingress-address",
            "--format=json",
        ],
        "\"10.0.0.5\"\n",
        "",
        0,
    );
    check(
        &["network-get", "nope", "--format", "json"],
        "",
        "ERROR no network config found for binding \"nope\"\n",
        1,
    );
    check(&["network-get"], "", "ERROR no arguments specified\n", 2);
    check(
        &["relation-ids", "db-cluster", "--format", "json"],
        "[\"db-cluster:0\"]\n",
        "",
        0,
    );
    check(
        &["relation-list", "-r", "db-cluster:0", "--format", "json"],
        "[\"controller/1\"]\n",
        "",
        0,
    );
    check(
        &["relation-list", "-r", "7", "--format", "json"],
        "",
        "ERROR invalid value \"7\" for option -r: relation not found\n",
        2,
    );
    check(
        &["relation-get", "-r", "0", "--format", "json", "-", "controller/1"],
        "{\"egress-subnets\":\"10.0.0.6/24,fd00::1/64\",\"ingress-address\":\"10.0.0.6\",\"private-address\":\"10.0.0.6\"}\n",
        "",
        0,
    );
    check(
        &["relation-get", "-r", "0", "-", "controller/9"],
        "",
        "ERROR cannot read settings for unit \"controller/9\" in relation \"db-cluster:0\": unit \"controller/9\": settings not found\n",
        1,
    );
    check(&["is-leader", "--format", "json"], "true\n", "", 0);
    check(
        &["config-get", "--format", "json"],
        "{\"address-family\":\"auto\"}\n",
        "",
        0,
    );
    check(
        &["config-get", "missing", "--format", "json"],
        "null\n",
        "",
        0,
    );
    check(
        &["status-set", "sleeping", "x"],
        "",
        "ERROR invalid status \"sleeping\", expected one of [maintenance blocked waiting active]\n",
        2,
    );
    check(
        &["is-leader", "--bogus"],
        "",
        "ERROR flag provided but not defined: --bogus\n",
        2,
    );
    check(
        &["juju-log", "-l", "INFO", "--", "hello", "world"],
        "",
        "",
        0,
    );
    check(
        &["action-get", "--format", "json"],
        "",
        "ERROR no hook context running\n",
        1,
    );
    // Juju's forms: flags after positionals, `--flag=value` booleans, the three formats.
    check(&["is-leader"], "True\n", "", 0);
    check(&["is-leader", "--format=yaml"], "true\n", "", 0);
    check(
        &["relation-ids", "--format=yaml", "db-cluster"],
        "- db-cluster:0\n",
        "",
        0,
    );
    check(
        &[
            "relation-list",
            "--app=false",
            "-r",
            "0",
            "--format",
            "json",
        ],
        "[\"controller/1\"]\n",
        "",
        0,
    );
    check(
        &["relation-list", "-r", "0", "--app=True"],
        "controller\n",
        "",
        0,
    );
    check(
        &["relation-list", "-r", "0", "--app=maybe"],
        "",
        "ERROR invalid boolean value \"maybe\" for --app: parse error\n",
        2,
    );
    check(&["config-get", "address-family"], "auto\n", "", 0);
    check(&["config-get", "missing"], "", "", 0);
    check(&["config-get"], "address-family: auto\n", "", 0);
    check(&["status-get"], "unknown\n", "", 0);
    check(
        &["status-get", "--include-data", "--format=json"],
        "{\"message\":\"\",\"status\":\"unknown\",\"status-data\":{}}\n",
        "",
        0,
    );
    check(
        &["status-get", "--include-data", "--format=json", "--application=true"],
        "{\"application-status\":{\"message\":\"\",\"status\":\"unknown\",\"status-data\":{},\"units\":{\"controller/0\":{\"message\":\"\",\"status\":\"unknown\",\"status-data\":{}},\"controller/1\":{\"message\":\"\",\"status\":\"unknown\",\"status-data\":{}}}}}\n",
        "",
        0,
    );
    check(
        &[
            "status-set",
            "--application=False",
            "active",
            "--",
            "-dashed",
        ],
        "",
        "",
        0,
    );
    check(&["status-get", "--format=json"], "\"active\"\n", "", 0);
    check(&["storage-list", "--format=json"], "[]\n", "", 0);
    check(
        &["storage-get"],
        "",
        "ERROR no storage instance specified\n",
        2,
    );
    check(&["secret-ids", "--format=json"], "[]\n", "", 0);
    check(
        &["secret-get", "secret:abc"],
        "",
        "ERROR secret \"secret:abc\" not found\n",
        1,
    );
    check(&["leader-get", "--format=json"], "{}\n", "", 0);
    check(&["opened-ports"], "", "", 0);
    check(
        &["open-port", "http"],
        "",
        "ERROR invalid port range \"http\"\n",
        2,
    );
    check(&["unit-get", "private-address"], "10.0.0.5\n", "", 0);
    let state = fixture.state();
    assert_eq!(
        state.units["controller/0"]
            .status
            .as_ref()
            .map(|s| s.message.as_str()),
        Some("-dashed")
    );
    assert_eq!(
        state.juju_log.last().map(|l| l.message.as_str()),
        Some("hello world")
    );
    assert!(state
        .calls
        .iter()
        .any(|c| c.tool == "status-set" && c.exit_code == 2));
}

#[test]
fn relation_set_reads_yaml_from_stdin_and_files() {
    let fixture = Fixture::new();
    let file = fixture.dir.path().join("settings.yaml");
    std::fs::write(&file, "from-file: \"1\"\nnumber: 7\ngone:\n").expect("write");
    fixture.script(
        0,
        &format!(
            "printf 'a: one\\nb: \"two words\"\\n' | relation-set -r 0 --file - c=three && \
             relation-set -r 0 --file {} && \
             echo '{{\"app-key\": \"v\"}}' | relation-set --app=True -r db-cluster:0 --file=- && \
             relation-set -r 0 --file - < /dev/null && \
             leader-set --file - <<EOF\nlead: x\nEOF\n\
             open-port 8080 && open-port 1000-2000/udp && test \"$(opened-ports --format=json)\" = '[\"1000-2000/udp\",\"8080/tcp\"]'",
            file.display()
        ),
    );
    let outcome = fixture
        .runner
        .run("controller/0", &Invocation::hook("update-status"))
        .expect("run");
    assert_eq!(outcome.exit_code, Some(0), "{outcome:?}");
    let state = fixture.state();
    let relation = &state.relations["db-cluster:0"];
    let bag = &relation.unit_bags["controller/0"];
    assert_eq!(bag.get("a").map(String::as_str), Some("one"));
    assert_eq!(bag.get("b").map(String::as_str), Some("two words"));
    assert_eq!(bag.get("c").map(String::as_str), Some("three"));
    assert_eq!(bag.get("from-file").map(String::as_str), Some("1"));
    assert_eq!(bag.get("number").map(String::as_str), Some("7"));
    assert_eq!(
        relation.app_bags["controller"]
            .get("app-key")
            .map(String::as_str),
        Some("v")
    );
    assert_eq!(
        state.leader_settings["controller"]
            .get("lead")
            .map(String::as_str),
        Some("x")
    );
    assert_eq!(
        state.units["controller/0"]
            .opened_ports
            .iter()
            .collect::<Vec<_>>(),
        ["1000-2000/udp", "8080/tcp"]
    );
}

#[test]
fn non_leaders_cannot_write_the_app_bag() {
    let fixture = Fixture::new();
    fixture.script(1, "relation-set -r 0 --app x=y");
    let outcome = fixture
        .runner
        .run("controller/1", &Invocation::hook("update-status"))
        .expect("run");
    assert_eq!(outcome.exit_code, Some(1));
    assert_eq!(outcome.stderr, "ERROR cannot write relation settings\n");
}

#[test]
fn actions_collect_nested_results_and_failures() {
    let fixture = Fixture::new();
    fixture.script(
        0,
        "p=$(action-get --format json) && action-set got=\"$p\" a.b=c a.d=e && action-log working",
    );
    fixture
        .runner
        .run("controller/0", &Invocation::action("try", json!({"n": 1})))
        .expect("run");
    fixture.script(0, "action-set BAD=1; action-fail \"no luck\"");
    fixture
        .runner
        .run("controller/0", &Invocation::action("try", json!({})))
        .expect("run");
    let state = fixture.state();
    let [done, failed] = &state.actions[..] else {
        panic!("two actions expected: {:?}", state.actions)
    };
    assert_eq!(done.outcome, "completed");
    assert_eq!(
        serde_json::to_value(&done.action.results).expect("json"),
        json!({"got": "{\"n\":1}", "a": {"b": "c", "d": "e"}})
    );
    assert_eq!(done.action.log, vec!["working".to_owned()]);
    assert_eq!(failed.outcome, "failed");
    assert_eq!(failed.action.failed.as_deref(), Some("no luck"));
    assert!(failed.action.results.is_empty());
}

#[test]
fn concurrent_tool_processes_lose_nothing() {
    let fixture = Fixture::new();
    let children: Vec<_> = (0..24)
        .map(|i| {
            Command::new(HOOK_TOOL)
                .args(["juju-log", &format!("line {i}")])
                .env("JUJU_SIM_STATE", fixture.runner.store().path())
                .env("JUJU_UNIT_NAME", "controller/0")
                .spawn()
                .expect("spawn")
        })
        .collect();
    for mut child in children {
        assert!(child.wait().expect("wait").success());
    }
    let lines: BTreeSet<String> = fixture
        .state()
        .juju_log
        .into_iter()
        .map(|l| l.message)
        .collect();
    assert_eq!(lines.len(), 24, "{lines:?}");
}

/// The tools that only read run under the shared lock and never rewrite the state file
/// (its inode stays, where any write renames a new file in), yet every call is logged; a
/// tool that changes the state still rewrites it.
#[test]
fn reading_tools_never_rewrite_the_state_and_every_call_is_logged() {
    let fixture = Fixture::new();
    let state_file = fixture.runner.store().path().display().to_string();
    let reads = [
        "relation-ids db-cluster",
        "relation-list -r db-cluster:0",
        "relation-get -r db-cluster:0 - controller/1",
        "relation-get -r db-cluster:0 --app - controller",
        "is-leader",
        "config-get",
        "status-get",
        "leader-get",
        "goal-state",
        "opened-ports",
        "network-get db-cluster",
        "unit-get private-address",
        "relation-model-get -r db-cluster:0",
        "storage-list",
    ];
    let body: String = reads
        .iter()
        .map(|read| format!("{read} >/dev/null 2>&1\n"))
        .collect();
    fixture.script(
        0,
        &format!(
            "before=$(stat -c %i {state_file})\n{body}\
             test \"$(stat -c %i {state_file})\" = \"$before\" || exit 7\n\
             status-set active changed\n\
             test \"$(stat -c %i {state_file})\" != \"$before\" || exit 8"
        ),
    );
    let calls_before = fixture.state().calls.len();
    let outcome = fixture
        .runner
        .run("controller/0", &Invocation::hook("update-status"))
        .expect("run");
    assert_eq!(
        outcome.exit_code,
        Some(0),
        "7: a reading tool rewrote the state; 8: status-set did not: {outcome:?}"
    );
    let state = fixture.state();
    let logged: Vec<String> = state.calls[calls_before..]
        .iter()
        .map(|call| [&[call.tool.clone()][..], &call.args].concat().join(" "))
        .collect();
    let mut expected: Vec<String> = reads.iter().map(|read| (*read).to_owned()).collect();
    expected.push("status-set active changed".to_owned());
    assert_eq!(logged, expected);
    for tool in reads
        .iter()
        .map(|read| read.split(' ').next().expect("a tool"))
    {
        assert!(juju_sim::tools::is_read_only(tool), "{tool}");
    }
    assert!(!juju_sim::tools::is_read_only("status-set"));
    assert!(!juju_sim::tools::is_read_only("relation-set"));
}

/// Readers (shared lock) and writers (exclusive) side by side: every write lands, every
/// call is logged once and whole.
#[test]
fn concurrent_readers_and_writers_lose_no_write_and_no_call() {
    let fixture = Fixture::new();
    let before = fixture.state().calls.len();
    let children: Vec<_> = (0..32)
        .map(|i| {
            let args: Vec<String> = if i % 2 == 0 {
                vec!["juju-log".into(), format!("line {i}")]
            } else {
                vec!["relation-list".into(), "-r".into(), "db-cluster:0".into()]
            };
            Command::new(HOOK_TOOL)
                .args(&args)
                .env("JUJU_SIM_STATE", fixture.runner.store().path())
                .env("JUJU_UNIT_NAME", "controller/0")
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for mut child in children {
        assert!(child.wait().expect("wait").success());
    }
    let state = fixture.state();
    assert_eq!(state.juju_log.len(), 16, "{:?}", state.juju_log);
    let calls = &state.calls[before..];
    assert_eq!(calls.len(), 32, "{calls:?}");
    assert_eq!(
        calls.iter().filter(|c| c.tool == "relation-list").count(),
        16
    );
}

#[test]
fn a_missing_hook_is_skipped_and_a_missing_action_fails() {
    let fixture = Fixture::new();
    let outcome = fixture
        .runner
        .run("controller/0", &Invocation::hook("install"))
        .expect("run");
    assert!(outcome.skipped && outcome.success());
    let error = fixture
        .runner
        .run("controller/0", &Invocation::action("nope", json!({})));
    assert!(error.is_err(), "{error:?}");
    assert!(
        fixture.state().running.is_empty(),
        "an action that never ran leaves no context"
    );
}
