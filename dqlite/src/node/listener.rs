//! Keeps the node's listening socket out of child processes.
//!
//! libdqlite 1.11 opens the socket of `dqlite_node_set_bind_address` without `O_CLOEXEC`,
//! so every process this one spawns (a shell command, a test's child) inherits a copy of the
//! listener and keeps the address bound after the node is gone: a new node on the same
//! address then fails with "address in use" until that child exits. The socket is not
//! listening yet after the bind (so `/proc/net/tcp` does not show it), but it is the socket
//! that appears in `/proc/self/fd` during the bind call: the crate lists the sockets before
//! and after, and sets `FD_CLOEXEC` on the new ones. Sockets opened meanwhile by other
//! threads through std already have `FD_CLOEXEC`, so setting it again changes nothing. A
//! fork in another thread between the bind and this fix can still inherit the listener;
//! only upstream can close that window.

use std::fs;

use crate::ffi;

/// A socket descriptor of this process: its number and its inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketFd {
    pub fd: i32,
    pub inode: u64,
}

/// The sockets open in this process, from `/proc/self/fd`; empty without `/proc`.
pub(crate) fn sockets() -> Vec<SocketFd> {
    let Ok(descriptors) = fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    descriptors
        .flatten()
        .filter_map(|entry| {
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let link = fs::read_link(entry.path()).ok()?;
            let inode = socket_inode(link.to_str()?)?;
            Some(SocketFd { fd, inode })
        })
        .collect()
}

/// Marks close-on-exec every socket now open that was not in `before` (the bind's
/// listener), and with `nodelay` sets `TCP_NODELAY` on it too: Linux copies that option
/// from a listener to every socket it accepts, and libuv sets it on none (the accepted
/// handles are fresh `uv_tcp_t`s), so this is the only hook for the node's accepted
/// connections. Returns how many sockets it marked close-on-exec.
pub(crate) fn protect_new(node: &mut ffi::BoundNode, before: &[SocketFd], nodelay: bool) -> usize {
    new_sockets(before, &sockets())
        .into_iter()
        .filter(|&fd| {
            if nodelay {
                // Fails for the unix listener of an `@abstract` address: nothing to tune.
                node.set_tcp_nodelay(fd);
            }
            node.set_close_on_exec(fd)
        })
        .count()
}

/// The descriptors in `after` whose socket was not open `before`. Pure.
pub(crate) fn new_sockets(before: &[SocketFd], after: &[SocketFd]) -> Vec<i32> {
    after
        .iter()
        .filter(|socket| !before.contains(socket))
        .map(|socket| socket.fd)
        .collect()
}

/// The inode in a `/proc/self/fd` link `socket:[12345]`, `None` for anything else. Pure.
pub(crate) fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_links() {
        let check = |link: &str, expected: Option<u64>| {
            assert_eq!(socket_inode(link), expected, "{link}");
        };
        check("socket:[58972]", Some(58972));
        check("pipe:[58972]", None);
        check("socket:[]", None);
        check("/tmp/socket:[1]", None);
    }

    #[test]
    fn new_sockets_are_those_not_open_before() {
        let socket = |fd, inode| SocketFd { fd, inode };
        let check = |before: &[SocketFd], after: &[SocketFd], expected: &[i32]| {
            assert_eq!(new_sockets(before, after), expected);
        };
        check(&[], &[socket(11, 500)], &[11]);
        check(&[socket(11, 500)], &[socket(11, 500)], &[]);
        check(
            &[socket(3, 100), socket(11, 500)],
            &[socket(3, 100), socket(11, 500), socket(12, 501)],
            &[12],
        );
        // A descriptor number reused for another socket is a new socket.
        check(&[socket(11, 500)], &[socket(11, 502)], &[11]);
        // A socket closed during the bind is simply gone.
        check(&[socket(3, 100)], &[], &[]);
    }
}
