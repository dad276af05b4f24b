//! What the last hook read and showed, kept in the charm dir so that the next hook can skip
//! hook-tool calls the event makes unnecessary. Every tool call is a process plus an RPC to
//! the unit agent, and most hooks are relation hooks that cannot change the options or the
//! machine's addresses:
//!
//! - Juju fires `config-changed` whenever an option *or a machine address* changes, so a
//!   relation hook may take the options and the binding's `network-get` answer from the last
//!   non-relation hook. Every non-relation hook (`update-status` every 5 minutes included)
//!   reads both afresh. The same goes for the controller agent's id (`GET /agent-id`), which
//!   never changes for a machine; a relation hook that changes the map still meets the agent
//!   when it asks it to reload.
//! - `status-set` runs only when the status differs from the one last set, except in
//!   `update-status`, which always sets it (a periodic repair if anything else set one).
//! - A peer's bag changes only when that peer writes it, and then Juju fires
//!   `-relation-changed` for that peer on every other unit. So a relation hook of the same
//!   relation re-reads only the remote unit's bag (and any listed unit's it never read) and
//!   takes the others from the last hook ([`Memo::reusable_bags`]); every non-relation hook
//!   reads them all afresh. The leader of seven controllers reads one peer bag per
//!   `-relation-changed` instead of six. Only bags read are remembered: what was read stays
//!   true even if the hook that read it fails, unlike what a hook writes (Juju discards a
//!   failed hook's `relation-set`), so this unit's own bag and the application bag are read
//!   in every hook.
//!
//! The memo is a cache, never a source of truth: a missing, unreadable, corrupt or
//! other-version file is as if there were none (everything is read afresh) and is rewritten;
//! a failed write is a warning. A hook that fails after it changed the status forgets the
//! memo, so that the next hook sets its status whatever it is.
//!
//! **Architecture Invariant:** only [`may_reuse_inputs`], [`must_set_status`] and
//! [`Memo::reusable_bags`] decide (pure, table-tested); `load`, `save` and `forget` are the IO.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use controller_contract::files::{self, Contents};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::conffile::{self, Durability};
use crate::event::{Event, Hook, RelationKind};
use crate::plan::Bag;
use crate::status::Status;

/// The memo's file name in the charm dir.
pub const FILE_NAME: &str = ".controller-charm-memo.json";

/// The memo's format; a file of another version is ignored.
const VERSION: u32 = 2;

/// The most bytes of memo read; a larger file is ignored.
const MAX_BYTES: u64 = 1024 * 1024;

/// What a hook read and showed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Memo {
    version: u32,
    /// `config-get`'s answer, when it was read.
    pub options: Option<Map<String, Value>>,
    /// `network-get <peer endpoint>`'s raw answer, when it was read and fitted the limits.
    pub network: Option<String>,
    /// The status last set, as (kind, message).
    pub status: Option<(String, String)>,
    /// The controller agent's id, as the reload socket last gave it.
    pub agent_id: Option<String>,
    /// The peer bags the last hook read or reused, when it observed the peer relation.
    pub peers: Option<PeerBags>,
}

/// Peer bags as read, with the relation they were read from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerBags {
    /// The relation id (`db-cluster:0`); a relation made anew has another.
    pub relation: String,
    /// Each unit's bag, by unit name: only units whose bag was read, never a placeholder.
    pub bags: BTreeMap<String, Bag>,
}

impl Memo {
    /// An empty memo of the current version.
    pub fn new() -> Self {
        Self {
            version: VERSION,
            ..Self::default()
        }
    }

    /// Records `status` as the one shown.
    pub fn set_status(&mut self, status: &Status) {
        self.status = Some((status.kind.as_str().to_owned(), status.message.clone()));
    }

    /// The remembered peer bags `event` may use instead of reading them: in a `-joined`,
    /// `-changed` or `-departed` hook of the relation they were read from, every one but the
    /// remote unit's (its change is what fired the hook). Nothing for any other event.
    pub fn reusable_bags(&self, event: &Event) -> BTreeMap<String, Bag> {
        let (Event::Relation(relation), Some(peers)) = (event, &self.peers) else {
            return BTreeMap::new();
        };
        let reusable_kind = matches!(
            relation.kind,
            RelationKind::Joined | RelationKind::Changed | RelationKind::Departed
        );
        if !reusable_kind || peers.relation != relation.relation_id {
            return BTreeMap::new();
        }
        peers
            .bags
            .iter()
            .filter(|(unit, _)| relation.remote_unit.as_deref() != Some(unit.as_str()))
            .map(|(unit, bag)| (unit.clone(), bag.clone()))
            .collect()
    }

    /// Whether `status` is the one last set.
    pub fn shows(&self, status: &Status) -> bool {
        self.status.as_ref().is_some_and(|(kind, message)| {
            kind == status.kind.as_str() && message == &status.message
        })
    }
}

/// Whether the event may take the options and the binding's addresses from the memo: only
/// relation hooks, since any change to either fires `config-changed`.
pub fn may_reuse_inputs(event: &Event) -> bool {
    matches!(event, Event::Relation(_))
}

/// Whether the event sets `status` even when the memo shows it set already.
pub fn must_set_status(event: &Event) -> bool {
    matches!(event, Event::Hook(Hook::UpdateStatus))
}

/// The memo's path.
pub fn path(charm_dir: &Path) -> PathBuf {
    charm_dir.join(FILE_NAME)
}

/// The memo, or an empty one when the file is missing, unreadable, too large, corrupt or of
/// another version.
pub fn load(charm_dir: &Path) -> Memo {
    let read = || -> Option<Memo> {
        match files::read_capped(&path(charm_dir), MAX_BYTES, FILE_NAME).ok()? {
            Contents::Bytes(bytes) => serde_json::from_slice::<Memo>(&bytes)
                .ok()
                .filter(|memo| memo.version == VERSION),
            Contents::Missing | Contents::Refused(_) => None,
        }
    };
    read().unwrap_or_else(Memo::new)
}

/// Writes the memo (temp file, rename: [`conffile::replace`]). Not fsynced: a torn file
/// after a crash is ignored. One write: serde_json writes each token on its own to an
/// unbuffered writer, which was about 150 system calls of a byte or two for one memo.
pub fn save(charm_dir: &Path, memo: &Memo) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(memo)?;
    conffile::replace(&path(charm_dir), &bytes, Durability::Cached)
}

/// Removes the memo (a missing file is fine).
pub fn forget(charm_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path(charm_dir)) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{RelationEvent, RelationKind};
    use crate::status::StatusKind;

    fn relation(kind: RelationKind) -> Event {
        Event::Relation(RelationEvent {
            kind,
            relation_id: "db-cluster:0".into(),
            remote_unit: Some("controller/1".into()),
            departing_unit: None,
        })
    }

    #[test]
    fn which_events_reuse_and_which_always_set_the_status() {
        // (event, may reuse options and addresses, always sets the status)
        let table = [
            (Event::Hook(Hook::Install), false, false),
            (Event::Hook(Hook::Start), false, false),
            (Event::Hook(Hook::ConfigChanged), false, false),
            (Event::Hook(Hook::LeaderElected), false, false),
            (Event::Hook(Hook::LeaderSettingsChanged), false, false),
            (Event::Hook(Hook::UpgradeCharm), false, false),
            (Event::Hook(Hook::UpdateStatus), false, true),
            (relation(RelationKind::Created), true, false),
            (relation(RelationKind::Joined), true, false),
            (relation(RelationKind::Changed), true, false),
            (relation(RelationKind::Departed), true, false),
            (relation(RelationKind::Broken), true, false),
            (Event::Action("cluster-status".into()), false, false),
        ];
        for (event, reuse, always) in table {
            assert_eq!(may_reuse_inputs(&event), reuse, "{event:?}");
            assert_eq!(must_set_status(&event), always, "{event:?}");
        }
    }

    #[test]
    fn only_relation_hooks_of_the_same_relation_reuse_bags_and_never_the_remote_units() {
        let bag = |address: &str| Bag::from([("db-bind-address".to_owned(), address.to_owned())]);
        let mut memo = Memo::new();
        memo.peers = Some(PeerBags {
            relation: "db-cluster:0".into(),
            bags: BTreeMap::from([
                ("controller/1".to_owned(), bag("10.0.0.6")),
                ("controller/2".to_owned(), bag("10.0.0.7")),
            ]),
        });
        let on = |kind, relation_id: &str, remote: Option<&str>| {
            Event::Relation(RelationEvent {
                kind,
                relation_id: relation_id.into(),
                remote_unit: remote.map(str::to_owned),
                departing_unit: None,
            })
        };
        let both: &[&str] = &["controller/1", "controller/2"];
        // (event, the units whose remembered bags it may use)
        let table: Vec<(Event, &[&str])> = vec![
            (
                on(RelationKind::Changed, "db-cluster:0", Some("controller/1")),
                &["controller/2"],
            ),
            (
                on(RelationKind::Joined, "db-cluster:0", Some("controller/2")),
                &["controller/1"],
            ),
            (
                on(RelationKind::Departed, "db-cluster:0", Some("controller/2")),
                &["controller/1"],
            ),
            (
                on(RelationKind::Changed, "db-cluster:0", Some("controller/3")),
                both,
            ),
            // The application bag's -changed: no unit's bag changed.
            (on(RelationKind::Changed, "db-cluster:0", None), both),
            // Another relation id: a relation made anew.
            (
                on(RelationKind::Changed, "db-cluster:7", Some("controller/1")),
                &[],
            ),
            (on(RelationKind::Created, "db-cluster:0", None), &[]),
            (on(RelationKind::Broken, "db-cluster:0", None), &[]),
            (Event::Hook(Hook::UpdateStatus), &[]),
            (Event::Hook(Hook::ConfigChanged), &[]),
            (Event::Hook(Hook::LeaderElected), &[]),
            (Event::Action("cluster-status".into()), &[]),
        ];
        let remembered = memo.peers.clone().expect("peers").bags;
        for (event, expected) in table {
            let reusable = memo.reusable_bags(&event);
            let units: Vec<&str> = reusable.keys().map(String::as_str).collect();
            assert_eq!(units, expected, "{event:?}");
            for (unit, reused) in &reusable {
                assert_eq!(Some(reused), remembered.get(unit), "{unit}");
            }
        }
        assert!(Memo::new()
            .reusable_bags(&on(RelationKind::Changed, "db-cluster:0", None))
            .is_empty());
    }

    #[test]
    fn a_saved_memo_loads_back_and_a_bad_one_is_empty() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(load(dir.path()), Memo::new(), "missing file");

        let mut memo = Memo::new();
        memo.options = Some(Map::from_iter([("bind-cidr".to_owned(), Value::from(""))]));
        memo.network = Some("{\"bind-addresses\":[]}".into());
        let status = Status::new(
            StatusKind::Active,
            "db bind address 10.0.0.5 (1 controller)",
        );
        memo.set_status(&status);
        memo.peers = Some(PeerBags {
            relation: "db-cluster:0".into(),
            bags: BTreeMap::from([(
                "controller/1".to_owned(),
                Bag::from([("agent-id".to_owned(), "1".to_owned())]),
            )]),
        });
        save(dir.path(), &memo).expect("save");
        let loaded = load(dir.path());
        assert_eq!(loaded, memo);
        assert!(loaded.shows(&status));
        assert!(!loaded.shows(&Status::new(StatusKind::Waiting, status.message.clone())));
        // No temp file is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)]);

        for bad in [
            "",
            "{",
            "null",
            "{\"version\":99,\"options\":null,\"network\":null,\"status\":null}",
            "{\"version\":2,\"options\":7}",
            "{\"version\":2,\"peers\":{\"relation\":\"db-cluster:0\",\"bags\":[]}}",
            // The first version had no peer bags.
            "{\"version\":1,\"options\":null,\"network\":null,\"status\":null}",
        ] {
            std::fs::write(path(dir.path()), bad).expect("write");
            assert_eq!(load(dir.path()), Memo::new(), "{bad:?}");
        }
        std::fs::write(path(dir.path()), vec![b' '; MAX_BYTES as usize + 10]).expect("write");
        assert_eq!(load(dir.path()), Memo::new(), "oversized");

        forget(dir.path()).expect("forget");
        forget(dir.path()).expect("forget twice");
        assert!(!path(dir.path()).exists());

        // A directory in its place is ignored, not read.
        std::fs::create_dir(path(dir.path())).expect("dir in place");
        assert_eq!(load(dir.path()), Memo::new());
    }

    /// What a hook killed mid-save, or anything else, left in the way.
    #[test]
    fn a_fifo_in_place_is_not_waited_on_and_a_leftover_temp_is_replaced() {
        let dir = tempfile::tempdir().expect("dir");
        let mkfifo = |at: &Path| {
            let status = std::process::Command::new("mkfifo")
                .arg(at)
                .status()
                .expect("run mkfifo");
            assert!(status.success());
        };
        // A FIFO with no writer as the memo (controller_contract::files refuses it without waiting).
        mkfifo(&path(dir.path()));
        assert_eq!(load(dir.path()), Memo::new());
        forget(dir.path()).expect("forget the FIFO");

        // A FIFO, then a symlink to a file that is not ours, as the temp file: saving
        // replaces it and writes nothing through it.
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "not ours").expect("outside");
        let mut memo = Memo::new();
        memo.network = Some("{}".into());
        for plant in ["fifo", "symlink"] {
            let temp = conffile::temp_path(&path(dir.path()));
            if plant == "fifo" {
                mkfifo(&temp);
            } else {
                std::os::unix::fs::symlink(&outside, &temp).expect("symlink");
            }
            save(dir.path(), &memo).expect("saved");
            assert_eq!(load(dir.path()), memo, "{plant}");
            assert!(!temp.exists(), "{plant}: the temp file is renamed");
        }
        assert_eq!(
            std::fs::read_to_string(&outside).expect("outside"),
            "not ours"
        );
    }
}
