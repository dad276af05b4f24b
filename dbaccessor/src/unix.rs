//! The daemon's unix sockets: binding (stale socket files go, the new socket is mode 0600)
//! and the one accept loop both sockets use.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// How many connections one socket serves at once; further clients wait in the backlog.
/// The charm's hooks and actions make one at a time per unit.
pub const MAX_CONNECTIONS: usize = 32;

/// How long a stopping socket waits for the connections it is serving before it drops
/// them (a `recover` request may take a minute; shutdown must not).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The first pause after a failed accept (EMFILE, ENFILE, ENOBUFS...), doubled while it
/// keeps failing, up to [`ACCEPT_BACKOFF_MAX`]: a failing accept must not spin and flood
/// the log.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accepts connections on `listener` until `stop` turns true, each handled by `handle` in a
/// task of its own: at most `max` at once (accepting waits for a free slot); failed accepts
/// back off, logged once per run of failures; on stop, the connections being served get
/// [`SHUTDOWN_GRACE`] to finish and are then dropped.
pub async fn serve_connections<F, Fut>(
    name: &'static str,
    listener: UnixListener,
    max: usize,
    mut stop: watch::Receiver<bool>,
    handle: F,
) where
    F: Fn(UnixStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max.max(1)));
    let mut connections = JoinSet::new();
    let mut backoff = controller_backoff::Backoff::new(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
    let mut failing = false;
    loop {
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    if !failing {
                        log::warn!("{name}: accept failed: {e}; retrying with back-off");
                    }
                    failing = true;
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = stop.changed() => break,
                    }
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        if failing {
            log::info!("{name}: accepting again");
            failing = false;
            backoff.reset();
        }
        let work = handle(stream);
        connections.spawn(async move {
            work.await;
            drop(slot);
        });
    }
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        log::info!("{name}: dropping the connections still open at shutdown");
        connections.abort_all();
    }
}

/// Binds `path`, first removing a socket file a previous run left behind. A path that
/// exists but is not a socket is left alone and reported: it is not ours to delete. A
/// socket someone still answers on is not stale: a second daemon for the same data dir
/// must not steal the first one's sockets.
pub fn bind_private(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process is serving this socket",
                ));
            }
            std::fs::remove_file(path)?
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let listener = UnixListener::bind(path)?;
    // Only root (the charm's hooks) may ask for reloads or read the status.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Removes a socket file at shutdown; a missing file is fine.
pub fn remove_socket(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("cannot remove socket {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn serves_at_most_max_connections_and_waits_for_them_on_stop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.socket");
        let listener = bind_private(&path).expect("bind");
        let (stop_tx, stop) = watch::channel(false);
        let running = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Notify::new());
        let server = {
            let (running, finished, release) = (running.clone(), finished.clone(), release.clone());
            tokio::spawn(serve_connections(
                "test socket",
                listener,
                2,
                stop,
                move |_stream| {
                    let (running, finished, release) =
                        (running.clone(), finished.clone(), release.clone());
                    async move {
                        running.fetch_add(1, Ordering::SeqCst);
                        release.notified().await;
                        finished.fetch_add(1, Ordering::SeqCst);
                    }
                },
            ))
        };
        let mut clients = vec![];
        for _ in 0..3 {
            clients.push(UnixStream::connect(&path).await.expect("connect"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            running.load(Ordering::SeqCst),
            2,
            "the third waits for a slot"
        );
        release.notify_one();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(finished.load(Ordering::SeqCst), 1);
        assert_eq!(
            running.load(Ordering::SeqCst),
            3,
            "a freed slot serves the third"
        );
        // Stop: the two still running finish within the grace, and the loop ends after them.
        stop_tx.send(true).expect("stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!server.is_finished(), "it waits for the open connections");
        release.notify_waiters();
        tokio::time::timeout(Duration::from_secs(1), server)
            .await
            .expect("the loop ends once its connections have")
            .expect("no panic");
        assert_eq!(finished.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn replaces_a_stale_socket_and_refuses_a_regular_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.socket");
        let first = bind_private(&path).expect("first bind");
        // A live socket is not stale.
        let err = bind_private(&path).expect_err("a served socket is not replaced");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(first);
        // The file is still there (a crashed daemon leaves it): binding again replaces it.
        assert!(path.exists());
        let _second = bind_private(&path).expect("second bind over the stale socket");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, "keep me").expect("write");
        let err = bind_private(&file).expect_err("a regular file is not replaced");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "keep me");
    }
}
