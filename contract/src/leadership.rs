//! `<data-dir>/agents/unit-<app>-<n>/leadership.json`: what a unit's leadership tracker
//! (in the agent of the unit's machine) knows of its `application-leadership` lease, read
//! by whatever answers `is-leader` for the unit (the simulator's hook tools).
//!
//! Time: the tracker's deadline is on `CLOCK_MONOTONIC` (milliseconds), which every process
//! of the host shares (network and mount namespaces do not change it, and libfaketime is told
//! to leave it alone), so a reader in another process compares it with its own reading of
//! that clock. The deadline is the local instant taken before the claim was sent, plus the
//! grant, minus a margin: the unit stops being leader by it whether or not the tracker is
//! still alive to say so. Unknown is not leader.

use serde::{Deserialize, Serialize};

/// The file's name in the unit's agent dir.
pub const FILE_NAME: &str = "leadership.json";

/// The file's largest accepted size: a reader refuses more.
pub const MAX_BYTES: u64 = 64 * 1024;

/// How many grants [`UnitLeadership::grants`] keeps.
pub const KEEP_GRANTS: usize = 32;

/// What the file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UnitLeadership {
    /// `controller`.
    pub application: String,
    /// `controller/0`.
    pub unit: String,
    /// Whether the unit led when the file was written (see [`Self::leads_at`]: only until
    /// `until_monotonic_ms`).
    pub leader: bool,
    /// The deadline of the unit's leadership on `CLOCK_MONOTONIC`, in milliseconds (0: not
    /// leader).
    #[serde(rename = "until-monotonic-ms")]
    pub until_monotonic_ms: u64,
    /// The leader as the controller last answered (`None`: nobody, or not asked yet).
    #[serde(rename = "leader-unit")]
    pub leader_unit: Option<String>,
    /// This unit's grants as the tracker held them, oldest first (at most [`KEEP_GRANTS`]):
    /// the record a test checks for two leaders at once.
    pub grants: Vec<HeldGrant>,
    /// The last error of a claim (empty: the last claim was answered).
    pub error: String,
    /// The writer's wall clock at the write, to tell how old the file is.
    #[serde(rename = "written-unix-ms")]
    pub written_unix_ms: u64,
}

/// One grant of the lease as this unit's tracker held it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeldGrant {
    /// The grant's start by the database's clock: with the unit, the lease token.
    #[serde(rename = "start-ms")]
    pub start_ms: i64,
    /// When the tracker learnt it led (`CLOCK_MONOTONIC` ms, at the answer).
    #[serde(rename = "from-monotonic-ms")]
    pub from_monotonic_ms: u64,
    /// Until when it led: the deadline, or the instant it learnt it no longer did, if sooner.
    #[serde(rename = "until-monotonic-ms")]
    pub until_monotonic_ms: u64,
}

impl UnitLeadership {
    /// Whether the unit leads at `monotonic_ms` (`CLOCK_MONOTONIC`, milliseconds).
    pub fn leads_at(&self, monotonic_ms: u64) -> bool {
        self.leader && monotonic_ms < self.until_monotonic_ms
    }
}

/// Whether any two grants of different units were held at once (by `CLOCK_MONOTONIC`), or
/// a later grant carries an earlier start. `grants` are `(unit, grant)` of every unit of one
/// application; `Err` names the first overlap.
pub fn check_one_leader(grants: &[(String, HeldGrant)]) -> Result<usize, String> {
    for (i, (unit_a, a)) in grants.iter().enumerate() {
        for (unit_b, b) in &grants[i + 1..] {
            if unit_a == unit_b {
                continue;
            }
            let overlap = a.from_monotonic_ms < b.until_monotonic_ms
                && b.from_monotonic_ms < a.until_monotonic_ms;
            if overlap {
                return Err(format!(
                    "{unit_b} led from {} to {} while {unit_a} led from {} to {} (monotonic ms)",
                    b.from_monotonic_ms,
                    b.until_monotonic_ms,
                    a.from_monotonic_ms,
                    a.until_monotonic_ms
                ));
            }
            // Held one after the other: the later one's grant must have started later by the
            // database's clock (the lease store's commit order).
            let (first, then) = if a.from_monotonic_ms <= b.from_monotonic_ms {
                ((unit_a, a), (unit_b, b))
            } else {
                ((unit_b, b), (unit_a, a))
            };
            if then.1.start_ms <= first.1.start_ms {
                return Err(format!(
                    "{}@{} follows {}@{} but did not start later",
                    then.0, then.1.start_ms, first.0, first.1.start_ms
                ));
            }
        }
    }
    Ok(grants.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(start: i64, from: u64, until: u64) -> HeldGrant {
        HeldGrant {
            start_ms: start,
            from_monotonic_ms: from,
            until_monotonic_ms: until,
        }
    }

    #[test]
    fn leads_only_before_the_deadline() {
        let file = UnitLeadership {
            leader: true,
            until_monotonic_ms: 1000,
            ..UnitLeadership::default()
        };
        assert!(file.leads_at(999));
        assert!(!file.leads_at(1000));
        let not = UnitLeadership {
            leader: false,
            until_monotonic_ms: 1000,
            ..UnitLeadership::default()
        };
        assert!(!not.leads_at(0));
    }

    #[test]
    fn one_leader_table() {
        let check = |grants: &[(&str, HeldGrant)], expected: Result<usize, &str>| {
            let grants: Vec<(String, HeldGrant)> = grants
                .iter()
                .map(|(u, g)| ((*u).to_owned(), g.clone()))
                .collect();
            match (check_one_leader(&grants), expected) {
                (Ok(n), Ok(m)) => assert_eq!(n, m, "{grants:?}"),
                (Err(e), Err(word)) => assert!(e.contains(word), "{e}"),
                (got, want) => panic!("{grants:?}: got {got:?}, want {want:?}"),
            }
        };
        check(&[], Ok(0));
        check(
            &[("a/0", grant(10, 100, 200)), ("a/1", grant(20, 250, 400))],
            Ok(2),
        );
        // The same unit's grant again (a restarted agent extending it) is no overlap.
        check(
            &[("a/0", grant(10, 100, 200)), ("a/0", grant(10, 150, 300))],
            Ok(2),
        );
        check(
            &[("a/0", grant(10, 100, 300)), ("a/1", grant(20, 250, 400))],
            Err("while a/0 led"),
        );
        // A long grant overlapping a later one with a short grant of its own unit between.
        check(
            &[
                ("a/0", grant(10, 100, 1000)),
                ("a/0", grant(10, 150, 200)),
                ("a/1", grant(20, 300, 400)),
            ],
            Err("while a/0 led"),
        );
        check(
            &[("a/0", grant(10, 100, 200)), ("a/1", grant(5, 250, 400))],
            Err("did not start later"),
        );
    }

    #[test]
    fn the_file_round_trips_through_json_with_jujus_spelling() {
        let file = UnitLeadership {
            application: "controller".into(),
            unit: "controller/1".into(),
            leader: true,
            until_monotonic_ms: 5000,
            leader_unit: Some("controller/1".into()),
            grants: vec![grant(1, 2, 3)],
            error: String::new(),
            written_unix_ms: 7,
        };
        let json = serde_json::to_string(&file).expect("serializes");
        assert!(json.contains("\"until-monotonic-ms\":5000"), "{json}");
        assert!(json.contains("\"start-ms\":1"), "{json}");
        let back: UnitLeadership = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, file);
    }
}
