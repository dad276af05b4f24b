//! The size of libuv's thread pool, which libdqlite 1.11 shares between raft's outgoing
//! connects and raft's disk work; set from `main` before anything can start the pool.
//!
//! libdqlite runs each raft connect on libuv's pool (4 threads unless `UV_THREADPOOL_SIZE`
//! says otherwise), and raft redials an unreachable member about once a second. A member
//! whose machine is gone (its address blackholed, as on a cloud or in the simulator's
//! namespaces) keeps one pool thread busy for as long as a connect may take: libdqlite's own
//! blocking connect waited for the kernel's SYN retries (about 2 minutes), stalling raft's
//! segment preparation and closing, which run there too, and so every statement needing a
//! barrier or an append. The node's connect function (`dqlite::node::raft_connect`) now
//! gives up after 500 ms, but five dead members still take all 4 threads for each 500 ms
//! round of dials: in `tests/blackhole.rs` the first write after a restart waits 534 ms
//! and the slowest write of the next 3 s about 500 ms with 4 threads, against 34-48 ms and
//! at most 14 ms with this size. A larger pool leaves threads for the disk work: at most one
//! connect per configured peer is pending at a time, and a controller cluster has at most a
//! few dozen members.

use std::ffi::OsStr;

/// The variable libuv reads once, when its pool first starts.
pub const VARIABLE: &str = "UV_THREADPOOL_SIZE";

/// Pool threads: room for a connect stuck on every member of a large cluster and still
/// threads for the disk work. Idle threads cost a parked stack each.
pub const SIZE: u32 = 64;

/// The value to set `UV_THREADPOOL_SIZE` to, given its current value: [`SIZE`] unless the
/// operator chose a size of at least [`SIZE`] (a smaller or unreadable one is raised).
pub fn wanted(current: Option<&OsStr>) -> Option<String> {
    let chosen = current
        .and_then(OsStr::to_str)
        .and_then(|value| value.trim().parse::<u32>().ok());
    match chosen {
        Some(size) if size >= SIZE => None,
        _ => Some(SIZE.to_string()),
    }
}

/// Sets `UV_THREADPOOL_SIZE` for this process. Call at the start of `main`, while it is the
/// only thread (changing the environment races with threads reading it) and before the
/// node starts (libuv reads the variable once).
pub fn configure() {
    if let Some(size) = wanted(std::env::var_os(VARIABLE).as_deref()) {
        std::env::set_var(VARIABLE, size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_raised_to_at_least_its_size() {
        fn check(current: Option<&str>, expected: Option<&str>) {
            assert_eq!(
                wanted(current.map(OsStr::new)).as_deref(),
                expected,
                "with {current:?}"
            );
        }
        check(None, Some("64"));
        check(Some("4"), Some("64"));
        check(Some(""), Some("64"));
        check(Some("lots"), Some("64"));
        check(Some("64"), None);
        check(Some(" 128 "), None);
    }
}
