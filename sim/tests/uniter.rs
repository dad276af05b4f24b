//! Hooks run as Juju's unit agents run them: the hooks of different units at the same time,
//! each unit's one at a time and in the uniter's order. A shell charm whose every hook takes
//! a while is deployed on three units, then one of its machines is removed; the model's hook
//! history (each run with its unit, remote unit and start and end time) shows the overlap
//! and the order. Needs root (namespaces) and the workspace's binaries built.

use std::collections::BTreeMap;
use std::path::Path;

use juju_sim::model::{HookRecord, State};
use juju_sim::store::Store;
use test_support::sim::Model as SimModel;

const JUJU_SIM: &str = env!("CARGO_BIN_EXE_juju-sim");

test_support::sim_model!(
    /// A model destroyed on drop.
    Model
);

impl Model {
    fn new() -> Self {
        Self(SimModel::new(JUJU_SIM, "jsim-uniter-"))
    }

    fn state(&self) -> State {
        Store::new(self.path().join("state.json"))
            .load()
            .expect("state file")
    }
}

/// A charm with a peer relation whose every hook sleeps long enough for the hooks of other
/// units to start meanwhile, and writes its unit's bag when the relation is created (so that
/// the others get `-relation-changed` for it).
fn write_charm(dir: &Path) {
    std::fs::create_dir_all(dir).expect("charm dir");
    std::fs::write(
        dir.join("metadata.yaml"),
        "name: slow\nsummary: Slow hooks.\ndescription: Every hook sleeps.\n\
         peers:\n  ring:\n    interface: slow_ring\n",
    )
    .expect("metadata.yaml");
    let dispatch = dir.join("dispatch");
    std::fs::write(
        &dispatch,
        "#!/bin/sh\n\
         sleep 0.25\n\
         case \"$JUJU_DISPATCH_PATH\" in\n\
         hooks/ring-relation-created) relation-set -r \"$JUJU_RELATION_ID\" unit=\"$JUJU_UNIT_NAME\" ;;\n\
         esac\n",
    )
    .expect("dispatch");
    let mut permissions = std::fs::metadata(&dispatch)
        .expect("dispatch")
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&dispatch, permissions).expect("chmod dispatch");
}

/// The hook's name (`install`, `ring-relation-joined`) with its remote unit, if any.
fn label(record: &HookRecord) -> String {
    let name = record.dispatch_path.trim_start_matches("hooks/");
    match &record.remote_unit {
        Some(remote) => format!("{name}({remote})"),
        None => name.to_owned(),
    }
}

/// Each unit's runs, in the order they ran.
fn by_unit(history: &[HookRecord]) -> BTreeMap<String, Vec<&HookRecord>> {
    let mut units: BTreeMap<String, Vec<&HookRecord>> = BTreeMap::new();
    for record in history {
        units.entry(record.unit.clone()).or_default().push(record);
    }
    for runs in units.values_mut() {
        runs.sort_by_key(|r| r.span.started_ms);
    }
    units
}

/// Where `label` first ran in `labels`.
fn position(labels: &[String], label: &str) -> usize {
    labels
        .iter()
        .position(|l| l == label)
        .unwrap_or_else(|| panic!("{label} never ran: {labels:?}"))
}

/// `N` of the command's `settled in X s (N hooks)` line.
fn settled_hooks(output: &str) -> usize {
    let line = output
        .lines()
        .find(|l| l.starts_with("settled in "))
        .unwrap_or_else(|| panic!("no settled line in {output}"));
    let (_, rest) = line.split_once(" s (").expect("settled in X s (N hooks)");
    rest.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no hook count in {line:?}"))
}

#[test]
fn units_run_their_hooks_side_by_side_each_one_at_a_time_in_jujus_order() {
    let model = Model::new();
    let charm = model.dir().join("slow");
    write_charm(&charm);
    let output = model.ok(&["deploy", charm.to_str().expect("utf-8 path"), "-n", "3"]);
    let state = model.state();
    let history = state.history.clone();
    assert_eq!(settled_hooks(&output), history.len(), "{output}");
    for record in &history {
        assert_eq!(record.exit_code, Some(0), "{record:?}");
        assert!(
            record.span.started_ms > 0 && record.span.started_ms <= record.span.ended_ms,
            "{record:?}"
        );
    }
    let units = by_unit(&history);
    assert_eq!(
        units.keys().collect::<Vec<_>>(),
        ["slow/0", "slow/1", "slow/2"]
    );

    // Hooks of different units were under way at the same time; one unit's never were.
    let overlapping = history.iter().any(|a| {
        history
            .iter()
            .any(|b| a.unit != b.unit && a.span.overlaps(&b.span))
    });
    assert!(overlapping, "no two units' hooks overlapped: {history:#?}");
    for (unit, runs) in &units {
        for pair in runs.windows(2) {
            assert!(
                !pair[0].span.overlaps(&pair[1].span),
                "{unit}: {:?} overlaps {:?}",
                pair[0],
                pair[1]
            );
        }
    }

    // Each unit in the uniter's order: its own hooks up to start, then for every other
    // unit -joined before -changed.
    for (unit, runs) in &units {
        let labels: Vec<String> = runs.iter().map(|r| label(r)).collect();
        let leader_hook = if state.is_leader(unit) {
            "leader-elected"
        } else {
            "leader-settings-changed"
        };
        assert_eq!(
            labels[..5],
            [
                "install",
                "ring-relation-created",
                leader_hook,
                "config-changed",
                "start"
            ],
            "{unit}: {labels:?}"
        );
        for other in units.keys().filter(|o| *o != unit) {
            let joined = position(&labels, &format!("ring-relation-joined({other})"));
            let changed = position(&labels, &format!("ring-relation-changed({other})"));
            assert!(4 < joined && joined < changed, "{unit}: {labels:?}");
        }
    }

    // Removing a machine: its unit departs from each remaining unit before its own -broken,
    // stop and remove; the others see it depart after they saw it join.
    let leaving = units
        .keys()
        .find(|u| !state.is_leader(u))
        .expect("a unit that does not lead")
        .clone();
    let machine = state.units[&leaving].machine.clone();
    let before = history.len();
    let output = model.ok(&["remove-machine", &machine]);
    let history = model.state().history;
    assert_eq!(settled_hooks(&output), history.len() - before, "{output}");
    let units = by_unit(&history);
    let labels: Vec<String> = units[&leaving].iter().map(|r| label(r)).collect();
    let departures: Vec<usize> = units
        .keys()
        .filter(|u| **u != leaving)
        .map(|other| position(&labels, &format!("ring-relation-departed({other})")))
        .collect();
    let broken = position(&labels, "ring-relation-broken");
    assert!(departures.iter().all(|d| *d < broken), "{labels:?}");
    assert_eq!(
        labels[broken..],
        ["ring-relation-broken", "stop", "remove"],
        "{labels:?}"
    );
    for (unit, runs) in units.iter().filter(|(u, _)| **u != leaving) {
        let labels: Vec<String> = runs.iter().map(|r| label(r)).collect();
        let joined = position(&labels, &format!("ring-relation-joined({leaving})"));
        let departed = position(&labels, &format!("ring-relation-departed({leaving})"));
        assert!(joined < departed, "{unit}: {labels:?}");
    }
}
