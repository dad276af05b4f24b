//! Binding the daemon's unix sockets: stale socket files go, the new socket is mode 0600.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use tokio::net::UnixListener;

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
