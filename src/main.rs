//! The charm's `dispatch` entry point (placeholder until the charm lands).
fn main() {}
