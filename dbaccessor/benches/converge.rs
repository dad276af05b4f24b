//! Convergence benchmark (placeholder until the dqlite crate lands).
fn main() {}
