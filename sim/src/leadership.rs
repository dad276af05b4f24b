//! Who leads an application, as the units' leadership trackers know it: each unit on a
//! controller machine has a tracker (in that machine's `jujud-controller`) that claims the
//! `application-leadership` lease through the API and writes the unit's `leadership.json`
//! ([`controller_contract::leadership`]): leader until a deadline on `CLOCK_MONOTONIC`.
//!
//! The rule: an application is *lease-governed* once any of its units has that file (its
//! tracker has been answered); from then on a unit leads only while its own file says so
//! and its deadline has not passed (unknown is not leader), whatever
//! [`State::leaders`] says. Before that (no controller API yet: the first unit while the
//! first controller bootstraps; applications on workload machines, whose agents have no
//! trackers) the simulator's fixed pick, [`State::leaders`], stands.
//!
//! [`State::leaders`] stays the leader the uniter last saw: [`notice`] moves it when the
//! lease's leader changed and queues `leader-elected` on the new leader and
//! `leader-settings-changed` on the others, as Juju's uniter does.

use std::path::PathBuf;

use controller_contract::leadership::{UnitLeadership, MAX_BYTES};

use crate::model::State;

/// Milliseconds on `CLOCK_MONOTONIC`, the clock the trackers' deadlines are on.
pub fn monotonic_ms() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(now.tv_sec).unwrap_or(0) * 1000
        + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000_000
}

/// Unit `unit`'s `leadership.json`, if it has a data dir.
pub fn file_of(state: &State, unit: &str) -> Option<PathBuf> {
    let data_dir = state.units.get(unit)?.data_dir.as_ref()?;
    Some(controller_contract::paths::unit_leadership(data_dir, unit))
}

/// What `unit`'s tracker last wrote (`None`: no file, or one that cannot be read).
pub fn read(state: &State, unit: &str) -> Option<UnitLeadership> {
    let path = file_of(state, unit)?;
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_BYTES), &mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The units of `app` in the model.
fn units_of<'a>(state: &'a State, app: &'a str) -> impl Iterator<Item = &'a String> + 'a {
    state
        .units
        .keys()
        .filter(move |unit| State::app_of(unit) == app)
}

/// `Some(leader)` when `app` is lease-governed (the leader by the files at `now_ms`, none in
/// a hand-over), `None` when the fixed pick stands.
pub fn lease_leader(state: &State, app: &str, now_ms: u64) -> Option<Option<String>> {
    let mut governed = false;
    let mut leader = None;
    for unit in units_of(state, app) {
        if let Some(file) = read(state, unit) {
            governed = true;
            if file.leads_at(now_ms) && file.unit == *unit {
                leader = Some(unit.clone());
            }
        }
    }
    governed.then_some(leader)
}

/// Whether `unit` leads its application now: by its tracker's file when the application is
/// lease-governed, else by the fixed pick.
pub fn is_leader(state: &State, unit: &str) -> bool {
    let app = State::app_of(unit);
    match lease_leader(state, app, monotonic_ms()) {
        Some(leader) => leader.as_deref() == Some(unit),
        None => state.is_leader(unit),
    }
}

/// The lease-governed applications whose lease leader differs from the one the uniter last
/// saw: `(application, new leader)`. [`State::leaders`] is set to the new leader here; the
/// caller queues the hooks.
pub fn changed_leaders(state: &mut State) -> Vec<(String, String)> {
    let now = monotonic_ms();
    let apps: std::collections::BTreeSet<String> = state
        .units
        .keys()
        .map(|unit| State::app_of(unit).to_owned())
        .collect();
    let mut changed = Vec::new();
    for app in apps {
        if let Some(Some(leader)) = lease_leader(state, &app, now) {
            if state.leaders.get(&app) != Some(&leader) {
                state.leaders.insert(app.clone(), leader.clone());
                changed.push((app, leader));
            }
        }
    }
    changed
}

/// The statement that ends `unit`'s grant of `app`'s leadership now (the controller's part
/// of removing a unit, as Juju revokes a removed leader's lease), so that another unit
/// claims at once rather than after the expiry.
pub fn revoke_statement(app: &str, unit: &str) -> String {
    let quote = |text: &str| format!("'{}'", text.replace('\'', "''"));
    format!(
        "UPDATE lease SET expiry_ms = CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) \
         WHERE type = 'application-leadership' AND model = 'controller' AND name = {} \
           AND holder = {} AND pinned = 0 \
           AND expiry_ms > CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        quote(app),
        quote(unit)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Unit;

    #[test]
    fn files_decide_once_any_unit_has_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut state = State::default();
        for unit in ["app/0", "app/1"] {
            state.units.insert(
                unit.into(),
                Unit {
                    data_dir: Some(dir.path().join(unit.replace('/', "-"))),
                    ..Unit::default()
                },
            );
        }
        state.leaders.insert("app".into(), "app/0".into());
        // No file: the fixed pick.
        assert!(is_leader(&state, "app/0"));
        assert!(!is_leader(&state, "app/1"));
        assert_eq!(lease_leader(&state, "app", monotonic_ms()), None);
        let path_of_1 = file_of(&state, "app/1").expect("a data dir");
        let write = |unit: &str, file: &UnitLeadership| {
            assert_eq!(unit, "app/1");
            let path = &path_of_1;
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(path, serde_json::to_vec(file).expect("json")).expect("write");
        };
        // app/1's tracker leads: app/0 (no file) does not, whatever the fixed pick says.
        let until = monotonic_ms() + 60_000;
        write(
            "app/1",
            &UnitLeadership {
                unit: "app/1".into(),
                leader: true,
                until_monotonic_ms: until,
                ..UnitLeadership::default()
            },
        );
        assert!(!is_leader(&state, "app/0"));
        assert!(is_leader(&state, "app/1"));
        assert_eq!(
            changed_leaders(&mut state),
            [("app".to_owned(), "app/1".to_owned())]
        );
        assert!(changed_leaders(&mut state).is_empty(), "seen once");
        // Its deadline passed: nobody leads, and nothing changes for the uniter.
        write(
            "app/1",
            &UnitLeadership {
                unit: "app/1".into(),
                leader: true,
                until_monotonic_ms: monotonic_ms().saturating_sub(1),
                ..UnitLeadership::default()
            },
        );
        assert!(!is_leader(&state, "app/1"));
        assert_eq!(lease_leader(&state, "app", monotonic_ms()), Some(None));
        assert!(changed_leaders(&mut state).is_empty());
    }

    #[test]
    fn the_revocation_quotes_its_names() {
        let sql = revoke_statement("it's", "it's/0");
        assert!(sql.contains("name = 'it''s'"), "{sql}");
        assert!(sql.contains("holder = 'it''s/0'"), "{sql}");
    }
}
