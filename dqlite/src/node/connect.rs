//! The function a node opens its outgoing raft connections with, installed through
//! `dqlite_node_set_connect_func` in place of libdqlite 1.11's own.
//!
//! libdqlite 1.11.1's default (`default_connect` in `src/transport.c`) parses `host[:port]`
//! (the port defaults to 8080; the host must be an IPv4 literal), opens an `AF_INET` stream
//! socket without `SOCK_CLOEXEC`, and calls a blocking `connect()` with no timeout and no
//! `TCP_NODELAY`. Its caller (`connect_work_cb`, on libuv's worker pool) then writes the
//! dqlite handshake itself with plain blocking `write()`s (the protocol word, then a CONNECT
//! request carrying the node's id and address) and hands the descriptor to libuv
//! (`uv_tcp_open`, which makes it non-blocking). So a connect function returns a *connected,
//! blocking* socket and writes nothing; any non-zero return is "no connection" (the caller
//! closes nothing then: the function must not leak the socket).
//!
//! This one keeps that contract and changes five things:
//! - the connect is non-blocking and bounded by a timeout, so an address that drops SYNs
//!   holds a pool thread (shared with raft's disk work) for the timeout, not the kernel's
//!   two minutes of SYN retries, and `dqlite_node_stop` no longer waits those out; within
//!   the bound a fresh SYN goes every [`RESEND_EVERY`], so a peer whose network heals is
//!   reached at once rather than at raft's next attempt;
//! - `TCP_NODELAY` is set: raft sends a few small messages per commit and waits for the
//!   answers, so Nagle's algorithm against the peer's delayed ACK (40 ms on Linux) would
//!   hold most commits of a multi-node cluster back by tens of milliseconds;
//! - `TCP_USER_TIMEOUT` ([`RAFT_USER_TIMEOUT`]) ends a connection whose peer stopped
//!   acknowledging, so raft redials (boundedly) instead of waiting out the kernel's
//!   retransmission back-off after a network cut heals;
//! - the socket is close-on-exec, like every descriptor std opens;
//! - IPv6 members (`[ip]:port`) are dialled too, since a node can listen on IPv6 through the
//!   crate's forwarding listener (`node::forward`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};

/// How long a raft connect may take before it counts as failed (raft tries again about a
/// second later). A LAN connect takes well under a millisecond and a continental round
/// trip under 200 ms; a lost SYN is only resent after 1 s, so such an attempt fails and
/// the next one (a second later) usually succeeds.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// How long data sent on a raft connection may stay unacknowledged before the kernel
/// closes the connection (`TCP_USER_TIMEOUT`). Raft keeps a connection until it fails and
/// then redials about once a second; without this, a connection to a peer whose network
/// was cut stays open through the kernel's retransmissions, whose back-off doubles from
/// 200 ms, so after a 30 s cut the next retransmission (the first the healed peer hears
/// from its leader) came up to 26 s after the heal (`dbaccessor/tests/partition.rs`).
/// With 2 s the longest retransmission gap is 0.8 s and a cut connection is replaced by a
/// fresh (bounded) connect. A live peer's kernel acknowledges at once whatever its process
/// is doing, so only a dead or unreachable peer meets this bound.
pub const RAFT_USER_TIMEOUT: Duration = Duration::from_secs(2);

/// The port libdqlite 1.11 dials when a raft address has none.
pub const LIBDQLITE_DEFAULT_PORT: u16 = 8080;

/// How a node opens its outgoing raft connections (and tunes the sockets it accepts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftConnect {
    /// This crate's [`raft_connect`]: non-blocking connect bounded by `timeout`,
    /// `TCP_NODELAY`, close-on-exec; the node's listener also gets `TCP_NODELAY`, which
    /// Linux passes on to every socket it accepts (clients' and peers' connections).
    Bounded {
        /// From 1 ms to one hour.
        timeout: Duration,
    },
    /// libdqlite 1.11's own connect (blocking, no timeout, Nagle on) and an untouched
    /// listener: only for comparisons (`benches/cluster_sizes.rs`).
    Libdqlite,
}

impl Default for RaftConnect {
    fn default() -> Self {
        RaftConnect::Bounded {
            timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// Why [`raft_connect`] gave no connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid raft address {address:?}: expected `ipv4[:port]` or `[ipv6]:port`")]
    Address { address: String },
    #[error("cannot open a socket to dial {address}")]
    Socket {
        address: SocketAddr,
        source: io::Error,
    },
    #[error("cannot connect to {address}")]
    Connect {
        address: SocketAddr,
        source: io::Error,
    },
    #[error("no connection to {address} within {timeout:?}")]
    Timeout {
        address: SocketAddr,
        timeout: Duration,
    },
    #[error("TLS handshake with {address} failed")]
    Tls {
        address: SocketAddr,
        source: io::Error,
    },
    #[error("cannot forward the connection to {address}")]
    Forward {
        address: SocketAddr,
        source: io::Error,
    },
    #[error("cannot set {option} on the connection to {address}")]
    SetOption {
        option: &'static str,
        address: SocketAddr,
        source: io::Error,
    },
}

/// The socket address of a raft member's address: an IPv4 literal read as libdqlite 1.11
/// reads it (optionally `:port`, 8080 when absent), or a bracketed IPv6 literal with a port
/// (`[fd00::3]:17666`, as `SocketAddr` prints it; no zone). `None` for anything else (host
/// names, `@abstract` sockets, IPv6 without brackets or port). Pure.
pub fn parse_raft_address(address: &str) -> Option<SocketAddr> {
    if address.starts_with('[') {
        return match address.parse::<SocketAddr>().ok()? {
            SocketAddr::V6(v6) if v6.scope_id() == 0 => Some(SocketAddr::V6(v6)),
            _ => None,
        };
    }
    let (host, port) = match address.split_once(':') {
        Some((host, port)) => (host, port.parse().ok()?),
        None => (address, LIBDQLITE_DEFAULT_PORT),
    };
    let ip: Ipv4Addr = host.parse().ok()?;
    Some(SocketAddr::new(IpAddr::V4(ip), port))
}

/// How often, while a raft connect waits, a fresh attempt (a new socket, a new SYN) joins
/// the ones under way. The kernel resends a lost SYN only after 1 s, longer than a whole
/// [`DEFAULT_CONNECT_TIMEOUT`]: without fresh attempts, a peer whose network heals while an
/// attempt waits is not reached by that attempt at all, and raft waits a fixed second before
/// the next one, so the healed peer hears from its leader up to 1.5 s after the heal
/// (`dbaccessor/tests/partition.rs`). With a SYN every 100 ms it is reached within about
/// 100 ms of a heal during an attempt. A live peer answers the first SYN, so only an
/// unreachable one sees more than one (at most `timeout / RESEND_EVERY` per attempt).
pub const RESEND_EVERY: Duration = Duration::from_millis(100);

/// Connects to the raft member at `address` within `timeout` and returns the connected
/// socket as libdqlite expects it: blocking, with `TCP_NODELAY` and `FD_CLOEXEC`, nothing
/// written yet. Blocks the calling thread (a libuv pool thread, when libdqlite calls it)
/// for at most about `timeout`. While no attempt has ended, a fresh one starts every
/// [`RESEND_EVERY`]; the first to connect wins and the others are closed. An attempt that
/// fails outright (refused: the host is up but nothing listens) ends the connect at once.
pub fn raft_connect(address: &str, timeout: Duration) -> Result<OwnedFd, ConnectError> {
    let target = parse_raft_address(address).ok_or_else(|| ConnectError::Address {
        address: address.to_owned(),
    })?;
    let started = Instant::now();
    let deadline = started + timeout;
    let connect_error = |errno: Errno| ConnectError::Connect {
        address: target,
        source: errno.into(),
    };
    let mut pending: Vec<OwnedFd> = Vec::new();
    let mut next_attempt = started;
    let socket = loop {
        let now = Instant::now();
        if now >= next_attempt {
            next_attempt = now + RESEND_EVERY;
            match start_connect(target)? {
                Attempt::Connected(socket) => break socket,
                Attempt::Pending(socket) => pending.push(socket),
                Attempt::Failed(errno) => return Err(connect_error(errno)),
            }
        }
        let wake = next_attempt.min(deadline);
        match wait_any_writable(&pending, wake).map_err(connect_error)? {
            Some(index) => {
                let socket = pending.swap_remove(index);
                // Writable means the handshake ended, well or not: SO_ERROR says which.
                sockopt::socket_error(&socket)
                    .map_err(connect_error)?
                    .map_err(connect_error)?;
                break socket;
            }
            None if Instant::now() >= deadline => {
                return Err(ConnectError::Timeout {
                    address: target,
                    timeout,
                })
            }
            None => {}
        }
    };
    // The attempts still under way close here, unanswered.
    drop(pending);
    let set_option = |option: &'static str| {
        move |errno: Errno| ConnectError::SetOption {
            option,
            address: target,
            source: errno.into(),
        }
    };
    sockopt::set_tcp_nodelay(&socket, true).map_err(set_option("TCP_NODELAY"))?;
    let user_timeout = u32::try_from(RAFT_USER_TIMEOUT.as_millis()).unwrap_or(u32::MAX);
    sockopt::set_tcp_user_timeout(&socket, user_timeout).map_err(set_option("TCP_USER_TIMEOUT"))?;
    // libdqlite writes its handshake with plain `write()`s right after this returns.
    rustix::io::ioctl_fionbio(&socket, false).map_err(set_option("blocking mode"))?;
    Ok(socket)
}

/// One non-blocking connect, as it stands right after `connect()`.
enum Attempt {
    Connected(OwnedFd),
    Pending(OwnedFd),
    Failed(Errno),
}

/// Opens a non-blocking, close-on-exec socket and starts connecting it to `target`.
fn start_connect(target: SocketAddr) -> Result<Attempt, ConnectError> {
    let family = match target {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let socket = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|errno| ConnectError::Socket {
        address: target,
        source: errno.into(),
    })?;
    Ok(match rustix::net::connect(&socket, &target) {
        Ok(()) => Attempt::Connected(socket),
        Err(Errno::INPROGRESS) => Attempt::Pending(socket),
        Err(errno) => Attempt::Failed(errno),
    })
}

/// Waits until one of `sockets` is writable (its connect ended, well or not: the index) or
/// `until` passes (`None`).
fn wait_any_writable(sockets: &[OwnedFd], until: Instant) -> Result<Option<usize>, Errno> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        // A timeout beyond `Timespec`'s range cannot happen (at most an hour is accepted).
        let wait = Timespec::try_from(left).map_err(|_| Errno::INVAL)?;
        let mut fds: Vec<PollFd<'_>> = sockets
            .iter()
            .map(|socket| PollFd::new(socket, PollFlags::OUT))
            .collect();
        match poll(&mut fds, Some(&wait)) {
            // Writable, or an error or hang-up: SO_ERROR tells which.
            Ok(ready) if ready > 0 => {
                return Ok(fds.iter().position(|fd| !fd.revents().is_empty()));
            }
            Ok(_) | Err(Errno::INTR) => continue,
            Err(errno) => return Err(errno),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that drops SYNs and then takes them again is reached by a fresh attempt well
    /// before the kernel's first SYN retransmission (1 s). The SYNs are dropped by a full
    /// accept queue (a listener with backlog 0 holding one connection nobody accepted),
    /// which the test empties 150 ms in.
    #[test]
    fn a_peer_that_starts_answering_mid_connect_is_reached_by_a_fresh_attempt() {
        let listener = rustix::net::socket_with(
            AddressFamily::INET,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .expect("socket");
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        rustix::net::bind(&listener, &loopback).expect("bind");
        rustix::net::listen(&listener, 0).expect("listen");
        let Some(SocketAddr::V4(bound)) = rustix::net::getsockname(&listener)
            .ok()
            .and_then(|a| SocketAddr::try_from(a).ok())
        else {
            panic!("the listener has no IPv4 address");
        };
        let address = format!("127.0.0.1:{}", bound.port());
        // Fills the accept queue: from now on the listener drops SYNs.
        let _filler = std::net::TcpStream::connect(bound).expect("first connection");
        let listener = std::net::TcpListener::from(listener);
        let began = Instant::now();
        let freer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            let accepted = listener.accept().expect("accept the filler");
            (listener, accepted)
        });
        let socket = raft_connect(&address, Duration::from_secs(3)).expect("connected");
        let took = began.elapsed();
        let _keep = freer.join().expect("the freer thread");
        drop(socket);
        // The kernel would resend the first SYN only after 1 s; a fresh attempt goes every
        // 100 ms, so the connect ends well before.
        assert!(
            took < Duration::from_millis(900),
            "connected after {took:?}: no fresh attempt reached the peer"
        );
    }

    #[test]
    fn raft_addresses_are_read_as_libdqlite_reads_them() {
        fn check(address: &str, expected: Option<&str>) {
            let expected = expected.map(|text| text.parse::<SocketAddr>().expect("valid"));
            assert_eq!(parse_raft_address(address), expected, "{address:?}");
        }
        check("127.0.0.1:9001", Some("127.0.0.1:9001"));
        check("10.0.0.7", Some("10.0.0.7:8080"));
        check("10.0.0.7:", None);
        check("10.0.0.7:65536", None);
        check("10.0.0.7:x", None);
        check("[::1]:9001", Some("[::1]:9001"));
        check("[fd00::3]:17666", Some("[fd00::3]:17666"));
        check("[fe80::1%2]:9001", None);
        check("[::1]", None);
        check("[::1]:", None);
        check("[127.0.0.1]:9001", None);
        check("::1", None);
        check("::1:9001", None);
        check("@dqlite", None);
        check("localhost:9001", None);
        check("", None);
    }
}
