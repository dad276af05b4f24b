//! The dbaccessor daemon (placeholder).
fn main() {}
