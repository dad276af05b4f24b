//! Client benchmark against dqlite-benchmark (filled in below).

fn main() {}
