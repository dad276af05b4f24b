//! The `.charm` artifact: `scripts/build-charm.sh` packs the binaries the test build already
//! made (CHARM_BINARIES, so the test does not rebuild in release), and the zip is checked
//! as Juju reads it: the files present, executables executable, and metadata.yaml,
//! config.yaml, actions.yaml and manifest.yaml valid (names, types, defaults that match
//! their types).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_yaml_ng::{Mapping, Value};

/// Builds the charm once into a temp dir and unpacks it; returns the unpacked dir.
fn unpacked() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, unpacked) = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let binaries = Path::new(env!("CARGO_BIN_EXE_dispatch"))
            .parent()
            .expect("dispatch dir")
            .to_owned();
        if !binaries.join("dbaccessor").is_file() {
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "dbaccessor"])
                .status()
                .expect("cargo build -p dbaccessor");
            assert!(status.success());
        }
        let charm = dir.path().join("controller.charm");
        let output = Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/build-charm.sh"
        ))
        .arg(&charm)
        .env("CHARM_BINARIES", &binaries)
        .env("CHARM_ALLOW_DYNAMIC_DQLITE", "1")
        .env("CHARM_STAGE", dir.path().join("stage"))
        .output()
        .expect("run build-charm.sh");
        assert!(
            output.status.success(),
            "build-charm.sh failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let unpacked = dir.path().join("unpacked");
        let status = Command::new("unzip")
            .arg("-q")
            .arg(&charm)
            .arg("-d")
            .arg(&unpacked)
            .status()
            .expect("run unzip");
        assert!(status.success(), "unzip failed");
        (dir, unpacked)
    });
    unpacked
}

fn yaml(name: &str) -> Mapping {
    let text = std::fs::read_to_string(unpacked().join(name)).expect(name);
    match serde_yaml_ng::from_str::<Value>(&text).expect(name) {
        Value::Mapping(map) => map,
        other => panic!("{name} is not a mapping: {other:?}"),
    }
}

fn string<'a>(map: &'a Mapping, key: &str) -> Option<&'a str> {
    map.get(key).and_then(Value::as_str)
}

/// Juju's charm and action names: lower case letters, digits and single hyphens, starting
/// with a letter, not ending with a hyphen.
fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !name.is_empty()
        && bytes[0].is_ascii_lowercase()
        && !name.ends_with('-')
        && !name.contains("--")
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

#[test]
fn the_zip_holds_every_file_with_the_right_modes() {
    let dir = unpacked();
    let mut expected = vec![
        ("dispatch", true),
        ("bin/dbaccessor", true),
        ("metadata.yaml", false),
        ("config.yaml", false),
        ("actions.yaml", false),
        ("manifest.yaml", false),
        ("packaging/jujud-dbaccessor.service", false),
    ];
    let hooks: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/hooks"))
        .expect("hooks dir")
        .map(|e| format!("hooks/{}", e.expect("entry").file_name().to_string_lossy()))
        .collect();
    assert!(hooks.len() >= 12, "{hooks:?}");
    expected.extend(hooks.iter().map(|h| (h.as_str(), true)));
    for (file, executable) in expected {
        let meta = std::fs::metadata(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(meta.is_file(), "{file} is a file");
        let mode = meta.permissions().mode();
        assert_eq!(mode & 0o111 == 0o111, executable, "{file} mode {mode:o}");
        assert!(mode & 0o444 == 0o444, "{file} is readable by all: {mode:o}");
    }
    // The packed dispatch is a working binary: an empty environment names no event.
    let output = Command::new(dir.join("dispatch"))
        .env_clear()
        .output()
        .expect("run dispatch");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot tell which event to handle"),
        "{output:?}"
    );
}

#[test]
fn metadata_and_manifest_are_what_juju_requires() {
    let metadata = yaml("metadata.yaml");
    assert_eq!(string(&metadata, "name"), Some("controller"));
    assert!(valid_name("controller"));
    for key in ["summary", "description"] {
        assert!(
            string(&metadata, key).is_some_and(|s| !s.trim().is_empty()),
            "metadata {key}"
        );
    }
    // Bases come from manifest.yaml; a v2 charm must not list series in metadata.
    assert!(metadata.get("series").is_none());
    let peers = metadata
        .get("peers")
        .and_then(Value::as_mapping)
        .expect("peers");
    let endpoint = peers
        .get("db-cluster")
        .and_then(Value::as_mapping)
        .expect("db-cluster peer endpoint");
    assert_eq!(string(endpoint, "interface"), Some("dbcluster"));

    let manifest = yaml("manifest.yaml");
    let bases = manifest
        .get("bases")
        .and_then(Value::as_sequence)
        .expect("bases");
    let mut seen = vec![];
    for base in bases {
        let base = base.as_mapping().expect("a base is a mapping");
        assert_eq!(string(base, "name"), Some("ubuntu"));
        let arches = base
            .get("architectures")
            .and_then(Value::as_sequence)
            .expect("architectures");
        assert_eq!(arches, &vec![Value::from("amd64")]);
        seen.push(string(base, "channel").expect("channel").to_owned());
    }
    assert_eq!(seen, ["22.04", "24.04"]);
}

#[test]
fn config_options_have_types_and_matching_defaults() {
    let config = yaml("config.yaml");
    let options = config
        .get("options")
        .and_then(Value::as_mapping)
        .expect("options");
    let mut types = BTreeMap::new();
    for (name, option) in options {
        let name = name.as_str().expect("option names are strings");
        let option = option.as_mapping().expect("an option is a mapping");
        let kind = string(option, "type").expect("type");
        assert!(
            string(option, "description").is_some_and(|d| !d.trim().is_empty()),
            "{name} has a description"
        );
        let default = option.get("default").expect("every option has a default");
        let matches = match kind {
            "string" => default.is_string(),
            "int" => default.is_i64(),
            "float" => default.is_f64() || default.is_i64(),
            "boolean" => default.is_bool(),
            other => panic!("{name}: unknown type {other}"),
        };
        assert!(matches, "{name}: default {default:?} is not a {kind}");
        types.insert(name.to_owned(), kind.to_owned());
    }
    let expected: BTreeMap<String, String> = [
        ("address-family", "string"),
        ("bind-cidr", "string"),
        ("data-dir", "string"),
        ("reload-socket", "string"),
        ("run-dbaccessor", "boolean"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(types, expected);
}

#[test]
fn actions_have_valid_names_descriptions_and_typed_params() {
    let actions = yaml("actions.yaml");
    let mut names = vec![];
    for (name, action) in &actions {
        let name = name.as_str().expect("action names are strings");
        assert!(valid_name(name), "action name {name:?}");
        let action = action.as_mapping().expect("an action is a mapping");
        assert!(
            string(action, "description").is_some_and(|d| !d.trim().is_empty()),
            "{name} has a description"
        );
        let params = action
            .get("params")
            .and_then(Value::as_mapping)
            .expect("params (may be empty)");
        for (param, schema) in params {
            let param = param.as_str().expect("param name");
            assert!(valid_name(param), "{name}.{param}");
            let schema = schema.as_mapping().expect("a param schema is a mapping");
            let kind = string(schema, "type").expect("param type");
            assert!(string(schema, "description").is_some(), "{name}.{param}");
            if let Some(default) = schema.get("default") {
                let matches = match kind {
                    "boolean" => default.is_bool(),
                    "string" => default.is_string(),
                    "integer" => default.is_i64(),
                    "number" => default.is_f64() || default.is_i64(),
                    other => panic!("{name}.{param}: unexpected type {other}"),
                };
                assert!(matches, "{name}.{param}: default {default:?} is not {kind}");
            }
        }
        names.push(name.to_owned());
    }
    names.sort();
    assert_eq!(
        names,
        ["bind-candidates", "cluster-status", "recover-cluster"]
    );
    let recover = actions
        .get("recover-cluster")
        .and_then(|a| a.get("params"))
        .and_then(Value::as_mapping)
        .expect("recover-cluster params");
    for param in ["confirm", "force"] {
        assert_eq!(
            recover
                .get(param)
                .and_then(|p| p.get("default"))
                .and_then(Value::as_bool),
            Some(false),
            "{param} defaults to false"
        );
    }
}
