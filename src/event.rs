//! Which event this process handles, read from the environment exactly as Juju sets it
//! (`JUJU_DISPATCH_PATH`, `JUJU_HOOK_NAME`, `JUJU_ACTION_NAME`, the relation variables).
//!
//! **Architecture Invariant:** no IO: the environment arrives as a lookup function.

use std::path::PathBuf;

/// The peer endpoint this charm handles.
pub const PEER_ENDPOINT: &str = "db-cluster";

/// The hooks and actions, as a closed set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A hook that converges the unit (every handled hook does the same work).
    Hook(Hook),
    /// A `db-cluster` relation hook.
    Relation(RelationEvent),
    /// An action by name.
    Action(String),
    /// A hook this charm does not handle: exit 0 after a debug log.
    Unhandled(String),
}

/// The non-relation hooks the charm handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Install,
    Start,
    ConfigChanged,
    LeaderElected,
    LeaderSettingsChanged,
    UpgradeCharm,
    UpdateStatus,
}

impl Hook {
    /// Every handled hook with its name, for parsing and for the `hooks/` shims.
    pub const ALL: [(&'static str, Hook); 7] = [
        ("install", Hook::Install),
        ("start", Hook::Start),
        ("config-changed", Hook::ConfigChanged),
        ("leader-elected", Hook::LeaderElected),
        ("leader-settings-changed", Hook::LeaderSettingsChanged),
        ("upgrade-charm", Hook::UpgradeCharm),
        ("update-status", Hook::UpdateStatus),
    ];
}

/// What happened on the relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationKind {
    Created,
    Joined,
    Changed,
    Departed,
    Broken,
}

/// A `db-cluster-relation-*` hook with its variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationEvent {
    /// Which relation hook.
    pub kind: RelationKind,
    /// `JUJU_RELATION_ID`.
    pub relation_id: String,
    /// `JUJU_REMOTE_UNIT` (absent for -created, -broken and app-bag -changed).
    pub remote_unit: Option<String>,
    /// `JUJU_DEPARTING_UNIT` (-departed only).
    pub departing_unit: Option<String>,
}

/// The event plus the unit facts every handler needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookEnv {
    /// The event.
    pub event: Event,
    /// The event's name as Juju gave it (`db-cluster-relation-changed`, `bind-candidates`).
    pub name: String,
    /// `JUJU_UNIT_NAME` (`controller/0`).
    pub unit: String,
    /// `JUJU_CHARM_DIR`.
    pub charm_dir: PathBuf,
}

impl HookEnv {
    /// The application's name, from the unit's (`controller/0` -> `controller`).
    pub fn application(&self) -> &str {
        self.unit
            .split_once('/')
            .map_or(self.unit.as_str(), |(app, _)| app)
    }
}

/// Why the environment does not describe an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("{0} is not set: this program runs as a Juju hook")]
    Missing(&'static str),
    #[error("JUJU_DISPATCH_PATH {0:?} is neither hooks/<name> nor actions/<name>")]
    BadDispatchPath(String),
    #[error("relation hook {hook} has no JUJU_RELATION_ID")]
    NoRelationId { hook: String },
}

/// Reads the event. `argv0` names the hook when an old agent runs a `hooks/<name>` shim
/// without `JUJU_DISPATCH_PATH`.
pub fn from_env(
    lookup: impl Fn(&str) -> Option<String>,
    argv0: &str,
) -> Result<HookEnv, EventError> {
    let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
    let unit = get("JUJU_UNIT_NAME").ok_or(EventError::Missing("JUJU_UNIT_NAME"))?;
    let charm_dir = get("JUJU_CHARM_DIR")
        .or_else(|| get("CHARM_DIR"))
        .ok_or(EventError::Missing("JUJU_CHARM_DIR"))?;
    let (is_action, name) = if let Some(path) = get("JUJU_DISPATCH_PATH") {
        match path.split_once('/') {
            Some(("hooks", name)) if !name.is_empty() => (false, name.to_owned()),
            Some(("actions", name)) if !name.is_empty() => (true, name.to_owned()),
            _ => return Err(EventError::BadDispatchPath(path)),
        }
    } else if let Some(action) = get("JUJU_ACTION_NAME") {
        (true, action)
    } else if let Some(hook) = get("JUJU_HOOK_NAME") {
        (false, hook)
    } else {
        let base = argv0.rsplit('/').next().unwrap_or_default();
        if base.is_empty() || base == "dispatch" {
            return Err(EventError::Missing("JUJU_DISPATCH_PATH"));
        }
        (false, base.to_owned())
    };
    let event = if is_action {
        Event::Action(name.clone())
    } else if let Some((_, hook)) = Hook::ALL.iter().find(|(n, _)| *n == name) {
        Event::Hook(*hook)
    } else if let Some(kind) = relation_kind(&name) {
        let relation_id = get("JUJU_RELATION_ID")
            .ok_or_else(|| EventError::NoRelationId { hook: name.clone() })?;
        Event::Relation(RelationEvent {
            kind,
            relation_id,
            remote_unit: get("JUJU_REMOTE_UNIT"),
            departing_unit: get("JUJU_DEPARTING_UNIT"),
        })
    } else {
        Event::Unhandled(name.clone())
    };
    Ok(HookEnv {
        event,
        name,
        unit,
        charm_dir: PathBuf::from(charm_dir),
    })
}

/// The relation hook kind of `db-cluster-relation-<kind>`; other endpoints are not handled.
fn relation_kind(name: &str) -> Option<RelationKind> {
    let kind = name
        .strip_prefix(PEER_ENDPOINT)?
        .strip_prefix("-relation-")?;
    Some(match kind {
        "created" => RelationKind::Created,
        "joined" => RelationKind::Joined,
        "changed" => RelationKind::Changed,
        "departed" => RelationKind::Departed,
        "broken" => RelationKind::Broken,
        _ => return None,
    })
}

/// Every hook name the charm handles (the `hooks/` shims).
pub fn handled_hook_names() -> Vec<String> {
    let mut names: Vec<String> = Hook::ALL.iter().map(|(n, _)| (*n).to_owned()).collect();
    for kind in ["created", "joined", "changed", "departed", "broken"] {
        names.push(format!("{PEER_ENDPOINT}-relation-{kind}"));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn parse(vars: &[(&str, &str)], argv0: &str) -> Result<Event, EventError> {
        let mut env: BTreeMap<&str, &str> = [
            ("JUJU_UNIT_NAME", "controller/0"),
            (
                "JUJU_CHARM_DIR",
                "/var/lib/juju/agents/unit-controller-0/charm",
            ),
        ]
        .into();
        env.extend(vars.iter().copied());
        from_env(|name| env.get(name).map(|v| v.to_string()), argv0).map(|e| e.event)
    }

    #[test]
    fn event_table() {
        let check = |vars: &[(&str, &str)], argv0: &str, expected: Result<Event, EventError>| {
            assert_eq!(parse(vars, argv0), expected, "{vars:?} {argv0}");
        };
        check(
            &[
                ("JUJU_DISPATCH_PATH", "hooks/install"),
                ("JUJU_HOOK_NAME", "install"),
            ],
            "./dispatch",
            Ok(Event::Hook(Hook::Install)),
        );
        check(
            &[("JUJU_DISPATCH_PATH", "hooks/update-status")],
            "dispatch",
            Ok(Event::Hook(Hook::UpdateStatus)),
        );
        check(
            &[
                ("JUJU_DISPATCH_PATH", "hooks/db-cluster-relation-departed"),
                ("JUJU_RELATION_ID", "db-cluster:3"),
                ("JUJU_REMOTE_UNIT", "controller/2"),
                ("JUJU_DEPARTING_UNIT", "controller/2"),
            ],
            "dispatch",
            Ok(Event::Relation(RelationEvent {
                kind: RelationKind::Departed,
                relation_id: "db-cluster:3".into(),
                remote_unit: Some("controller/2".into()),
                departing_unit: Some("controller/2".into()),
            })),
        );
        // Juju sets JUJU_REMOTE_UNIT empty for -created: that is no remote unit.
        check(
            &[
                ("JUJU_DISPATCH_PATH", "hooks/db-cluster-relation-created"),
                ("JUJU_RELATION_ID", "db-cluster:0"),
                ("JUJU_REMOTE_UNIT", ""),
            ],
            "dispatch",
            Ok(Event::Relation(RelationEvent {
                kind: RelationKind::Created,
                relation_id: "db-cluster:0".into(),
                remote_unit: None,
                departing_unit: None,
            })),
        );
        check(
            &[("JUJU_DISPATCH_PATH", "hooks/db-cluster-relation-joined")],
            "dispatch",
            Err(EventError::NoRelationId {
                hook: "db-cluster-relation-joined".into(),
            }),
        );
        check(
            &[
                ("JUJU_DISPATCH_PATH", "actions/bind-candidates"),
                ("JUJU_HOOK_NAME", ""),
                ("JUJU_ACTION_NAME", "bind-candidates"),
            ],
            "dispatch",
            Ok(Event::Action("bind-candidates".into())),
        );
        check(
            &[("JUJU_DISPATCH_PATH", "hooks/stop")],
            "dispatch",
            Ok(Event::Unhandled("stop".into())),
        );
        check(
            &[("JUJU_DISPATCH_PATH", "hooks/other-relation-joined")],
            "dispatch",
            Ok(Event::Unhandled("other-relation-joined".into())),
        );
        check(
            &[("JUJU_DISPATCH_PATH", "x")],
            "dispatch",
            Err(EventError::BadDispatchPath("x".into())),
        );
        // An old agent running hooks/<name> without JUJU_DISPATCH_PATH.
        check(
            &[("JUJU_HOOK_NAME", "start")],
            "hooks/start",
            Ok(Event::Hook(Hook::Start)),
        );
        check(
            &[],
            "/charm/hooks/config-changed",
            Ok(Event::Hook(Hook::ConfigChanged)),
        );
        check(
            &[],
            "./dispatch",
            Err(EventError::Missing("JUJU_DISPATCH_PATH")),
        );
        let no_unit = from_env(|_| None, "dispatch");
        assert_eq!(no_unit, Err(EventError::Missing("JUJU_UNIT_NAME")));
    }
}
