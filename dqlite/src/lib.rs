//! Dqlite for Rust (placeholder).
