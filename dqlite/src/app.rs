//! The cluster application layer: bootstrap, join, restart, roles, hand-over, recovery.
