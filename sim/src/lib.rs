//! The Juju model simulator (placeholder).
