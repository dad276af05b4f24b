//! The size of libuv's thread pool, which libdqlite 1.11 shares between raft's outgoing
//! connects and raft's disk work; set from `main` before anything can start the pool.
//!
//! libdqlite opens each raft connection with a blocking `connect()` run on libuv's pool
//! (4 threads unless `UV_THREADPOOL_SIZE` says otherwise), with no timeout of its own. A
//! member whose machine is gone (its address blackholed, as on a cloud or in the
//! simulator's namespaces) keeps one pool thread in SYN-SENT until the kernel gives up
//! (`tcp_syn_retries`, about 2 minutes by default), even after it left the configuration.
//! Four such members take the whole pool: raft's segment preparation and closing, which
//! run there too, then wait, so the leader answers LEADER (no raft work) but hangs on every
//! statement needing a barrier or an append (SELECT, INSERT, CREATE) until connects time out.
//! A larger pool leaves threads for the disk work: at most one connect per configured peer
//! is pending at a time, and a controller cluster has at most a few dozen members.

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
