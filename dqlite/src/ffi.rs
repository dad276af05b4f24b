//! Raw `extern "C"` declarations of libdqlite 1.11 and the private owner of the node pointer:
//! the only unsafe code in the workspace.
//!
//! The declarations cover exactly the node API the crate needs (see
//! `/usr/include/dqlite.h`), so that a newer libdqlite with its gateway fixes can be swapped
//! in. Above them sit two owners with safe methods: [`CreatedNode`] (a node that exists but
//! has no bind address: it can be configured, recovered or bound) and [`BoundNode`] (the
//! only one that can start). Starting a node without a bind address aborts the process in
//! 1.11, so the type that can start is the type that has bound: that rule holds by
//! construction, not by a check.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr};
use std::os::fd::{BorrowedFd, IntoRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

/// The opaque `dqlite_node` of `dqlite.h`; only ever used behind a pointer.
#[repr(C)]
pub struct dqlite_node {
    _opaque: [u8; 0],
}

/// `dqlite_node_id`: `unsigned long long`.
pub type dqlite_node_id = c_ulonglong;

/// `struct dqlite_node_info_ext` of `dqlite.h`: four 64-bit words, the address a `char *`
/// carried as a `u64`.
#[repr(C)]
pub struct dqlite_node_info_ext {
    pub size: u64,
    pub id: u64,
    pub address: u64,
    pub dqlite_role: u64,
}

/// `DQLITE_NODE_INFO_EXT_SZ_ORIG`: the size a 1.11 library expects in `size`.
pub const DQLITE_NODE_INFO_EXT_SZ_ORIG: u64 = 32;

/// `int (*f)(void *arg, const char *address, int *fd)` of `dqlite_node_set_connect_func`.
pub type dqlite_connect_func =
    Option<unsafe extern "C" fn(arg: *mut c_void, address: *const c_char, fd: *mut c_int) -> c_int>;

extern "C" {
    pub fn dqlite_node_create(
        id: dqlite_node_id,
        address: *const c_char,
        data_dir: *const c_char,
        n: *mut *mut dqlite_node,
    ) -> c_int;
    pub fn dqlite_node_destroy(n: *mut dqlite_node);
    pub fn dqlite_node_set_bind_address(n: *mut dqlite_node, address: *const c_char) -> c_int;
    pub fn dqlite_node_set_connect_func(
        n: *mut dqlite_node,
        f: dqlite_connect_func,
        arg: *mut c_void,
    ) -> c_int;
    pub fn dqlite_node_set_network_latency_ms(n: *mut dqlite_node, milliseconds: c_uint) -> c_int;
    pub fn dqlite_node_set_failure_domain(n: *mut dqlite_node, code: c_ulonglong) -> c_int;
    pub fn dqlite_node_set_snapshot_params(
        n: *mut dqlite_node,
        snapshot_threshold: c_uint,
        snapshot_trailing: c_uint,
    ) -> c_int;
    pub fn dqlite_node_start(n: *mut dqlite_node) -> c_int;
    pub fn dqlite_node_stop(n: *mut dqlite_node) -> c_int;
    pub fn dqlite_node_recover_ext(
        n: *mut dqlite_node,
        infos: *mut dqlite_node_info_ext,
        n_info: c_int,
    ) -> c_int;
    pub fn dqlite_node_errmsg(n: *mut dqlite_node) -> *const c_char;
    pub fn dqlite_generate_node_id(address: *const c_char) -> dqlite_node_id;
}

/// A failed libdqlite call: its return code and the node's error message, copied at once
/// because `dqlite_node_errmsg` points into the node and dies with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CError {
    pub code: i32,
    pub message: String,
}

/// One member for [`CreatedNode::recover`]: the address as a C string the caller keeps alive.
pub struct RecoverMember<'a> {
    pub id: u64,
    pub address: &'a CStr,
    pub role_code: u64,
}

/// `RAFT_NOCONNECTION` of libraft 0.15's `raft.h`: what a connect function returns when it
/// has no connection (libdqlite 1.11 treats any non-zero return the same way).
const RAFT_NOCONNECTION: c_int = 16;

/// A node's raft connect function: the member's address as libdqlite passes it, and a
/// connected socket in the mode libdqlite expects (blocking; the caller writes the dqlite
/// handshake), or `None` for no connection. Called from libuv's worker threads, several at
/// once, hence `Send + Sync`.
pub type RaftConnectFn = dyn Fn(&CStr) -> Option<OwnedFd> + Send + Sync;

/// Exclusive owner of a `dqlite_node *` that was created and not destroyed.
///
/// Invariant: `ptr` is non-null, was set by `dqlite_node_create` (successful or not: a
/// failed create that allocated the node still needs `dqlite_node_destroy`, as go-dqlite
/// does it), and is destroyed exactly once, by `Drop`.
struct Owner {
    ptr: *mut dqlite_node,
    /// The connect function libdqlite holds a pointer to (its `arg`), once installed. Boxed
    /// twice so that the pointer is thin and its target never moves; freed only after
    /// `dqlite_node_destroy` (fields drop after `Drop::drop`), by which time
    /// `dqlite_node_stop` has waited for every queued connect to finish.
    connect: Option<Box<Box<RaftConnectFn>>>,
}

// SAFETY: libdqlite keeps no thread-local state for a node: every node call may come from
// any thread as long as calls do not overlap (go-dqlite calls them from goroutines that
// migrate between threads). `Owner` is not `Sync` and every call that touches the node takes
// `&mut self` or `self`, so calls through it never overlap.
unsafe impl Send for Owner {}

impl Owner {
    /// Copies the node's current error message, empty when there is none.
    fn errmsg(&mut self) -> String {
        // SAFETY: `self.ptr` is a live node (the `Owner` invariant).
        let message = unsafe { dqlite_node_errmsg(self.ptr) };
        if message.is_null() {
            return String::new();
        }
        // SAFETY: a non-null errmsg is a NUL-terminated string owned by the live node; it is
        // copied here before any other call on the node can change or free it.
        unsafe { CStr::from_ptr(message) }
            .to_string_lossy()
            .into_owned()
    }

    /// Turns a return code into a result, copying the error message on failure.
    fn check(&mut self, code: c_int) -> Result<(), CError> {
        if code == 0 {
            Ok(())
        } else {
            let message = self.errmsg();
            Err(CError {
                code,
                message: if message.is_empty() {
                    "no error message".to_owned()
                } else {
                    message
                },
            })
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // SAFETY: `self.ptr` came from `dqlite_node_create` and is destroyed only here,
        // once. A started node is stopped first by `BoundNode::drop`, which runs before the
        // `Owner` field is dropped.
        unsafe { dqlite_node_destroy(self.ptr) }
    }
}

/// A created libdqlite node with no bind address: it can be configured, recovered offline,
/// or bound (which is the only way to get a node that can start).
pub struct CreatedNode {
    owner: Owner,
}

impl CreatedNode {
    /// `dqlite_node_create`. The data dir must exist already (1.11 fails with rc 19 and no
    /// message otherwise).
    pub fn create(id: u64, address: &CStr, data_dir: &CStr) -> Result<CreatedNode, CError> {
        let mut node: *mut dqlite_node = ptr::null_mut();
        // SAFETY: `address` and `data_dir` are NUL-terminated strings that outlive the call
        // (libdqlite copies both); `node` is a valid out-pointer.
        let code =
            unsafe { dqlite_node_create(id, address.as_ptr(), data_dir.as_ptr(), &mut node) };
        if node.is_null() {
            return Err(CError {
                code: if code == 0 { 1 } else { code },
                message: "no node was created and no error message given".to_owned(),
            });
        }
        // From here the node is owned, so it is destroyed even when create failed (as
        // dqlite.h asks).
        let mut owner = Owner {
            ptr: node,
            connect: None,
        };
        owner.check(code)?;
        Ok(CreatedNode { owner })
    }

    /// `dqlite_node_set_network_latency_ms`.
    pub fn set_network_latency_ms(&mut self, milliseconds: u32) -> Result<(), CError> {
        // SAFETY: the node is live and not started (a `CreatedNode` never starts).
        let code = unsafe { dqlite_node_set_network_latency_ms(self.owner.ptr, milliseconds) };
        self.owner.check(code)
    }

    /// `dqlite_node_set_failure_domain`.
    pub fn set_failure_domain(&mut self, code: u64) -> Result<(), CError> {
        // SAFETY: the node is live and not started.
        let rc = unsafe { dqlite_node_set_failure_domain(self.owner.ptr, code) };
        self.owner.check(rc)
    }

    /// `dqlite_node_set_snapshot_params`.
    pub fn set_snapshot_params(&mut self, threshold: u32, trailing: u32) -> Result<(), CError> {
        // SAFETY: the node is live and not started.
        let code = unsafe { dqlite_node_set_snapshot_params(self.owner.ptr, threshold, trailing) };
        self.owner.check(code)
    }

    /// `dqlite_node_set_connect_func`: from now on the node opens its outgoing raft
    /// connections with `connect` instead of libdqlite's default. Once per node: a second
    /// call is refused (`DQLITE_MISUSE`), so no installed function is ever freed early.
    pub fn set_connect_func(&mut self, connect: Box<RaftConnectFn>) -> Result<(), CError> {
        if self.owner.connect.is_some() {
            return Err(CError {
                code: DQLITE_MISUSE,
                message: "a connect function is already installed".to_owned(),
            });
        }
        // Stored before libdqlite sees the pointer, and never replaced (checked above).
        let connect = self.owner.connect.insert(Box::new(connect));
        let arg = ptr::from_ref::<Box<RaftConnectFn>>(&**connect)
            .cast_mut()
            .cast::<c_void>();
        // SAFETY: the node is live and not started (a `CreatedNode` never starts).
        // `raft_connect_trampoline` matches `dqlite_connect_func` and only reads `arg` as a
        // `&Box<RaftConnectFn>`; `arg` points into the heap allocation held by
        // `self.owner.connect`, which moves with the owner without moving its target, is
        // never replaced, and is freed only after the node is destroyed (see
        // `Owner::connect`).
        let code = unsafe {
            dqlite_node_set_connect_func(self.owner.ptr, Some(raft_connect_trampoline), arg)
        };
        self.owner.check(code)
    }

    /// `dqlite_node_recover_ext`: appends a forced configuration to the (stopped) node's log.
    pub fn recover(&mut self, members: &[RecoverMember<'_>]) -> Result<(), CError> {
        let mut infos: Vec<dqlite_node_info_ext> = members
            .iter()
            .map(|member| dqlite_node_info_ext {
                size: DQLITE_NODE_INFO_EXT_SZ_ORIG,
                id: member.id,
                address: member.address.as_ptr() as u64,
                dqlite_role: member.role_code,
            })
            .collect();
        let count = c_int::try_from(infos.len()).map_err(|_| CError {
            code: 2,
            message: format!("too many members: {}", infos.len()),
        })?;
        // SAFETY: the node is live and was never started; `infos` holds `count` structs with
        // `size` 32, and each `address` points into a `CStr` borrowed from `members`, which
        // outlives this call (libdqlite copies the configuration before returning).
        let code = unsafe { dqlite_node_recover_ext(self.owner.ptr, infos.as_mut_ptr(), count) };
        self.owner.check(code)
    }

    /// `dqlite_node_set_bind_address`: binds the listening socket at once. On failure the
    /// node is handed back with the error so that the caller decides whether to drop it.
    pub fn bind(mut self, address: &CStr) -> Result<BoundNode, (CreatedNode, CError)> {
        // SAFETY: the node is live and not started; `address` is NUL-terminated and
        // outlives the call (libdqlite copies it).
        let code = unsafe { dqlite_node_set_bind_address(self.owner.ptr, address.as_ptr()) };
        match self.owner.check(code) {
            Ok(()) => Ok(BoundNode {
                owner: self.owner,
                state: RunState::NotStarted,
            }),
            Err(error) => Err((self, error)),
        }
    }
}

/// A node with a bind address: the only node that can start, once. Dropping it stops it
/// (when running) and then destroys it.
pub struct BoundNode {
    // Dropped after `BoundNode::drop` has stopped the node.
    owner: Owner,
    state: RunState,
}

/// Where a bound node is in its one life: libdqlite 1.11 cannot restart a stopped node
/// (its raft instance is closed), so `Stopped` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    NotStarted,
    /// `dqlite_node_start` succeeded and `dqlite_node_stop` has not run since.
    Running,
    Stopped,
}

/// `DQLITE_MISUSE` of `dqlite.h`, for a call this layer refuses before it reaches C.
const DQLITE_MISUSE: i32 = 2;

impl BoundNode {
    /// `dqlite_node_start`: starts the node's own libuv thread. Blocks until the node has
    /// opened its raft log.
    pub fn start(&mut self) -> Result<(), CError> {
        match self.state {
            RunState::Running => return Ok(()),
            RunState::Stopped => {
                return Err(CError {
                    code: DQLITE_MISUSE,
                    message: "a stopped node cannot start again".to_owned(),
                })
            }
            RunState::NotStarted => {}
        }
        // SAFETY: the node is live, has a bind address (the only way to get a `BoundNode`
        // is `CreatedNode::bind` succeeding) and has never started.
        let code = unsafe { dqlite_node_start(self.owner.ptr) };
        self.owner.check(code)?;
        self.state = RunState::Running;
        Ok(())
    }

    /// `dqlite_node_stop`: blocks until the node's thread has ended. Does nothing on a node
    /// that is not running.
    pub fn stop(&mut self) -> Result<(), CError> {
        if self.state != RunState::Running {
            return Ok(());
        }
        // SAFETY: the node is live and running (`Running` is set only after a successful
        // start and left here), so stop runs at most once, after a start.
        let code = unsafe { dqlite_node_stop(self.owner.ptr) };
        // Whatever the outcome, a node is never stopped twice nor started again.
        self.state = RunState::Stopped;
        self.owner.check(code)
    }

    /// Whether the node's thread is running.
    pub fn is_running(&self) -> bool {
        self.state == RunState::Running
    }

    /// Sets `FD_CLOEXEC` on `fd`, a socket that appeared while this node bound (its
    /// listener), so that child processes do not inherit it. Returns whether it did.
    pub fn set_close_on_exec(&mut self, fd: i32) -> bool {
        // SAFETY: `fd` names the listener libdqlite opened during this node's bind, which
        // the node keeps open while it lives (it is live here: `&mut self`). Were it closed
        // meanwhile, fcntl on the stale number fails with EBADF or marks another descriptor
        // close-on-exec; neither touches memory of ours. The borrow ends with this call.
        let listener = unsafe { BorrowedFd::borrow_raw(fd) };
        rustix::io::fcntl_getfd(listener)
            .and_then(|flags| {
                rustix::io::fcntl_setfd(listener, flags | rustix::io::FdFlags::CLOEXEC)
            })
            .is_ok()
    }

    /// Sets `TCP_NODELAY` on `fd`, the TCP listener that appeared while this node bound, so
    /// that every connection it accepts inherits it (Linux copies the option from the
    /// listener to each accepted socket). Returns whether it did (`false` for the unix
    /// listener of an `@abstract` address).
    pub fn set_tcp_nodelay(&mut self, fd: i32) -> bool {
        // SAFETY: `fd` names the listener libdqlite opened during this node's bind, which
        // the node keeps open while it lives (it is live here: `&mut self`). Were it closed
        // meanwhile, setsockopt on the stale number fails with EBADF or sets an option on
        // another socket; neither touches memory of ours. The borrow ends with this call.
        let listener = unsafe { BorrowedFd::borrow_raw(fd) };
        rustix::net::sockopt::set_tcp_nodelay(listener, true).is_ok()
    }

    /// Whether the node ran and was stopped (it cannot start again).
    pub fn is_stopped(&self) -> bool {
        self.state == RunState::Stopped
    }
}

impl Drop for BoundNode {
    fn drop(&mut self) {
        // A stop error cannot be reported from drop; destroy follows either way.
        let _ = self.stop();
    }
}

/// The `dqlite_connect_func` installed by [`CreatedNode::set_connect_func`]: calls the
/// node's [`RaftConnectFn`] and hands its socket to libdqlite. A panic in it (which must not
/// unwind into C) and a null pointer are "no connection".
///
/// # Safety
///
/// `arg` is the pointer `set_connect_func` installed, live for the node's whole life;
/// `address` is null or a NUL-terminated string and `fd` null or writable, as libdqlite's
/// `connect_work_cb` passes them (its connect request's address and descriptor).
unsafe extern "C" fn raft_connect_trampoline(
    arg: *mut c_void,
    address: *const c_char,
    fd: *mut c_int,
) -> c_int {
    if arg.is_null() || address.is_null() || fd.is_null() {
        return RAFT_NOCONNECTION;
    }
    // SAFETY: `arg` is the `Box<RaftConnectFn>` that `set_connect_func` installed and
    // `Owner::connect` keeps alive until after `dqlite_node_destroy` (the caller's contract);
    // it is only read, and `RaftConnectFn` is `Sync`, so concurrent calls may share it.
    let connect = unsafe { &*arg.cast_const().cast::<Box<RaftConnectFn>>() };
    // SAFETY: a non-null `address` is NUL-terminated and lives for this call (the caller's
    // contract: libdqlite's connect request owns it until the request completes).
    let address = unsafe { CStr::from_ptr(address) };
    match catch_unwind(AssertUnwindSafe(|| connect(address))) {
        Ok(Some(socket)) => {
            // SAFETY: `fd` is non-null and points to the request's `int fd` (the caller's
            // contract); ownership of the descriptor passes to libdqlite, which closes it.
            unsafe { fd.write(socket.into_raw_fd()) };
            0
        }
        Ok(None) | Err(_) => RAFT_NOCONNECTION,
    }
}

/// `dqlite_generate_node_id`: a random id seeded with the address.
pub fn generate_node_id(address: &CStr) -> u64 {
    // SAFETY: `address` is NUL-terminated and outlives the call; the function reads it and
    // keeps nothing.
    unsafe { dqlite_generate_node_id(address.as_ptr()) }
}
