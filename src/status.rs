//! What the charm shows and says: workload statuses, log levels, and the one way to make
//! peer-supplied text safe to print. Pure.

/// A workload status kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    Maintenance,
    Blocked,
    Waiting,
    Active,
}

impl StatusKind {
    /// The word `status-set` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusKind::Maintenance => "maintenance",
            StatusKind::Blocked => "blocked",
            StatusKind::Waiting => "waiting",
            StatusKind::Active => "active",
        }
    }
}

/// A workload status with the message that tells the operator what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub kind: StatusKind,
    pub message: String,
}

impl Status {
    pub fn new(kind: StatusKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// `juju-log` levels the charm uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warning,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
        }
    }
}

/// `text` with every control character (NUL, newlines, escapes, C1 codes) written as a
/// `\u{..}` escape: what a status message or log line may carry when it quotes a peer's
/// data or a tool's output, so that the tool can never refuse it and it cannot forge lines.
pub fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}
