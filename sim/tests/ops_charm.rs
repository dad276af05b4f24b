//! Any charm runs in juju-sim unchanged, as Juju would run it: the `ops` charm in
//! `tests/fixtures/ops-charm` (a peer relation named `replicas`, a config option, an action,
//! statuses), packed the way charmcraft packs it (the charm's files plus a `venv/` of its
//! Python dependencies, here pip's `ops` installed by this test into a venv under the target
//! dir), deployed in a 3-unit model. Its hooks succeed, its relation data converges, `run`
//! returns its action's result, its hooks reach `/var/lib/juju` as their machine's data dir
//! and never the host's. Needs root (namespaces), network access to PyPI the first time (the
//! venv is kept in the target dir), and the workspace's binaries built.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use juju_sim::report::StatusReport;
use serde_json::Value;

const JUJU_SIM: &str = env!("CARGO_BIN_EXE_juju-sim");

/// The fixture charm's source.
fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ops-charm")
}

/// The target dir (`target/`), where the venv is kept between runs.
fn target_dir() -> PathBuf {
    Path::new(JUJU_SIM)
        .parent()
        .and_then(Path::parent)
        .expect("juju-sim lives in target/<profile>")
        .to_owned()
}

fn run_ok(command: &mut Command) -> Output {
    let output = command.output().expect("command runs");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A venv with `ops` from PyPI (made once, then reused), and its site-packages dir.
fn ops_site_packages() -> PathBuf {
    let venv = target_dir().join("ops-venv");
    let python = venv.join("bin/python3");
    let has_ops = python.is_file()
        && Command::new(&python)
            .args(["-c", "import ops"])
            .status()
            .is_ok_and(|s| s.success());
    if !has_ops {
        run_ok(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run_ok(Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "ops",
        ]));
    }
    let output = run_ok(Command::new(&python).args([
        "-c",
        "import sysconfig; print(sysconfig.get_paths()['purelib'])",
    ]));
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// The charm as charmcraft would pack it: the fixture's files and `venv/`.
fn pack_charm(into: &Path) -> PathBuf {
    let charm = into.join("tiny");
    run_ok(Command::new("cp").arg("-r").arg(fixture()).arg(&charm));
    std::os::unix::fs::symlink(ops_site_packages(), charm.join("venv")).expect("link venv");
    charm
}

/// A model dir whose model is destroyed on drop.
struct Model {
    dir: tempfile::TempDir,
}

impl Model {
    fn path(&self) -> PathBuf {
        self.dir.path().join("model")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(JUJU_SIM)
            .args(args)
            .env("JUJU_SIM_MODEL", self.path())
            .output()
            .expect("juju-sim runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let log = std::fs::read_to_string(self.path().join("hooks.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        assert!(
            output.status.success(),
            "juju-sim {args:?} failed:\n{stdout}\n{}\nhooks.log tail (newest first):\n{}",
            String::from_utf8_lossy(&output.stderr),
            tail.join("\n")
        );
        stdout
    }

    fn state(&self) -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(self.path().join("state.json")).expect("state file"),
        )
        .expect("state JSON")
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        if self.path().join("world.json").exists() {
            let _ = self.run(&["destroy"]);
        }
    }
}

#[test]
fn an_ops_charm_runs_unchanged_in_a_three_unit_model() {
    let target = Path::new(JUJU_SIM).parent().expect("target dir");
    for needed in ["dispatch", "jujud-controller", "juju-hook-tool"] {
        assert!(
            target.join(needed).is_file(),
            "{needed} is missing: run `cargo build --workspace --bins` first"
        );
    }
    let host_markers = || -> Vec<String> {
        std::fs::read_dir("/var/lib/juju")
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with("tiny-installed-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let host_before = host_markers();
    let work = tempfile::Builder::new()
        .prefix("jsim-ops-")
        .tempdir()
        .expect("temp dir");
    let charm = pack_charm(work.path());
    let model = Model {
        dir: tempfile::Builder::new()
            .prefix("jsim-test-")
            .tempdir()
            .expect("temp dir"),
    };
    let charm_arg = charm.display().to_string();
    model.ok(&["deploy", &charm_arg, "-n", "3"]);

    // Every hook succeeded, in Juju's order on each unit: install first, the unit's own
    // hooks up to start before any -joined.
    let state = model.state();
    let history = state["history"].as_array().expect("history");
    assert!(!history.is_empty());
    for record in history {
        assert_eq!(record["exit_code"], Value::from(0), "{record}");
    }
    for unit in ["tiny/0", "tiny/1", "tiny/2"] {
        let hooks: Vec<&str> = history
            .iter()
            .filter(|r| r["unit"] == unit)
            .filter_map(|r| r["dispatch_path"].as_str())
            .collect();
        assert_eq!(hooks.first(), Some(&"hooks/install"), "{unit}: {hooks:?}");
        let start = hooks
            .iter()
            .position(|h| *h == "hooks/start")
            .expect("start ran");
        let joined = hooks
            .iter()
            .position(|h| *h == "hooks/replicas-relation-joined")
            .expect("joined ran");
        assert!(start < joined, "{unit}: {hooks:?}");
        assert!(
            hooks.contains(&"hooks/replicas-relation-created"),
            "{unit}: {hooks:?}"
        );
    }

    // The relation data converged: every unit's greeting, the leader's count of them.
    let relation = state["relations"]
        .as_object()
        .expect("relations")
        .values()
        .find(|r| r["endpoint"] == "replicas")
        .expect("the peer relation");
    for unit in ["tiny/0", "tiny/1", "tiny/2"] {
        assert_eq!(
            relation["unit_bags"][unit]["greeting"],
            Value::from(format!("hello from {unit}")),
            "{relation}"
        );
    }
    assert_eq!(
        relation["app_bags"]["tiny"]["greeted"],
        Value::from("tiny/0,tiny/1,tiny/2")
    );
    let status: StatusReport =
        serde_json::from_str(&model.ok(&["status", "--format", "json"])).expect("status JSON");
    let units: Vec<(String, String, String)> = status
        .units
        .iter()
        .map(|u| (u.name.clone(), u.workload.clone(), u.message.clone()))
        .collect();
    assert_eq!(
        units,
        ["tiny/0", "tiny/1", "tiny/2"]
            .map(|u| (
                u.to_owned(),
                "active".to_owned(),
                "hello; peers: 2".to_owned()
            ))
            .to_vec()
    );

    // Config: a known option changes every unit's bag; an unknown one is refused.
    model.ok(&["config", "tiny", "greeting=hi"]);
    let state = model.state();
    let relation = state["relations"]
        .as_object()
        .expect("relations")
        .values()
        .find(|r| r["endpoint"] == "replicas")
        .expect("the peer relation");
    assert_eq!(
        relation["unit_bags"]["tiny/2"]["greeting"],
        Value::from("hi from tiny/2")
    );
    let refused = model.run(&["config", "tiny", "colour=red"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("unknown option \"colour\""),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // The action, with a parameter and with its default.
    let result = model.ok(&["run", "tiny/1", "greet", "name=sim", "--format", "json"]);
    let result: Value = serde_json::from_str(&result).expect("run JSON");
    let task = &result["tiny/1"];
    assert_eq!(task["status"], "completed", "{result}");
    assert_eq!(task["results"]["message"], "hi, sim", "{result}");
    assert_eq!(task["results"]["peers"], "2", "{result}");
    let result = model.ok(&["run", "tiny/0", "greet"]);
    assert!(result.contains("message: hi, world"), "{result}");
    let missing = model.run(&["run", "tiny/0", "wave"]);
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("action \"wave\" not defined on unit \"tiny/0\""),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );

    // /var/lib/juju in a hook is the machine's data dir, never the host's.
    for machine in &status.workload {
        let data_dir = model
            .path()
            .join("machines")
            .join(machine.id.to_string())
            .join("var/lib/juju");
        let markers: Vec<String> = std::fs::read_dir(&data_dir)
            .expect("machine data dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("tiny-installed-"))
            .collect();
        assert_eq!(markers.len(), 1, "{}: {markers:?}", data_dir.display());
        let conf = std::fs::read_to_string(
            std::fs::read_dir(data_dir.join("agents"))
                .expect("agents dir")
                .flatten()
                .find(|e| e.file_name().to_string_lossy().starts_with("unit-tiny-"))
                .expect("the unit's agent dir")
                .path()
                .join("agent.conf"),
        )
        .expect("the unit's agent.conf");
        assert!(conf.contains("tag: unit-tiny-"), "{conf}");
    }
    assert_eq!(status.workload.len(), 3);
    assert_eq!(
        host_markers(),
        host_before,
        "a hook wrote the host's /var/lib/juju"
    );

    // debug-log, filtered by unit.
    let log = model.ok(&["debug-log", "--include", "tiny/1"]);
    assert!(log.contains("ran \"install\" hook"), "{log}");
    assert!(log.lines().all(|l| l.starts_with("unit-tiny-1: ")), "{log}");

    model.ok(&["destroy"]);
    assert!(!model.path().exists());
}
