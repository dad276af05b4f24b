//! Reading and writing `controller.conf` on disk. Writes are atomic (a temp file in the same
//! dir, fsync, rename, fsync of the dir), mode 0600, and skipped when the content is already
//! there, so the agent never sees a torn or truncated file and is not reloaded for nothing.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use controller_contract::conf::{ConfError, ControllerConf};

/// The largest controller.conf read; a bigger one is not ours to parse.
const MAX_CONF: u64 = 1024 * 1024;

/// What is on disk.
#[derive(Debug, Clone, PartialEq)]
pub enum OnDisk {
    /// No file (or an empty one, which holds nothing to keep).
    Missing,
    /// A valid file.
    Parsed(ControllerConf),
    /// A file the agent could not read either, with why: left untouched for the operator.
    Unreadable(String),
}

/// Why controller.conf could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is {size} bytes, more than the {MAX_CONF} a controller.conf can be")]
    TooBig { path: PathBuf, size: u64 },
    #[error("cannot create the dir {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads controller.conf.
pub fn read(path: &Path) -> Result<OnDisk, ConfFileError> {
    let read_error = |source| ConfFileError::Read {
        path: path.to_owned(),
        source,
    };
    let size = match fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OnDisk::Missing),
        Err(e) => return Err(read_error(e)),
    };
    if size > MAX_CONF {
        return Err(ConfFileError::TooBig {
            path: path.to_owned(),
            size,
        });
    }
    let text = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OnDisk::Missing),
        Err(e) => return Err(read_error(e)),
    };
    let Ok(text) = String::from_utf8(text) else {
        return Ok(OnDisk::Unreadable(
            "controller.conf is not UTF-8 text".into(),
        ));
    };
    Ok(match ControllerConf::parse(&text) {
        Ok(conf) => OnDisk::Parsed(conf),
        Err(ConfError::Empty) => OnDisk::Missing,
        Err(error) => OnDisk::Unreadable(error.to_string()),
    })
}

/// Writes `content` to `path` atomically with mode 0600, unless the file already holds
/// exactly that. Returns whether it wrote.
pub fn write_if_changed(path: &Path, content: &str) -> Result<bool, ConfFileError> {
    let write_error = |source| ConfFileError::Write {
        path: path.to_owned(),
        source,
    };
    if fs::read(path).is_ok_and(|current| current == content.as_bytes()) {
        return Ok(false);
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| ConfFileError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    // The temp file lives in the target's dir so the rename is atomic; tempfile creates it
    // with mode 0600 and removes it if anything below fails.
    let mut temp = tempfile::Builder::new()
        .prefix(".controller.conf.")
        .tempfile_in(dir)
        .map_err(write_error)?;
    temp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(write_error)?;
    temp.write_all(content.as_bytes()).map_err(write_error)?;
    temp.as_file().sync_all().map_err(write_error)?;
    temp.persist(path).map_err(|e| write_error(e.error))?;
    // The rename is durable only once the dir entry is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_error)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn write_is_atomic_private_and_skipped_when_unchanged() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("agents/controller-0/controller.conf");
        assert_eq!(read(&path).expect("read"), OnDisk::Missing);
        assert!(write_if_changed(&path, "a: 1\n").expect("first write"));
        assert_eq!(fs::read_to_string(&path).expect("read back"), "a: 1\n");
        assert_eq!(fs::metadata(&path).expect("meta").mode() & 0o777, 0o600);
        let inode = fs::metadata(&path).expect("meta").ino();
        assert!(!write_if_changed(&path, "a: 1\n").expect("same content"));
        assert_eq!(
            fs::metadata(&path).expect("meta").ino(),
            inode,
            "unchanged file untouched"
        );
        assert!(write_if_changed(&path, "a: 2\n").expect("changed"));
        assert_ne!(
            fs::metadata(&path).expect("meta").ino(),
            inode,
            "replaced by rename"
        );
        let leftovers: Vec<_> = fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| e.file_name() != "controller.conf")
            .collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    }

    #[test]
    fn read_table() {
        let dir = tempfile::tempdir().expect("temp dir");
        let check = |content: &[u8], expected: &str| {
            let path = dir.path().join("controller.conf");
            fs::write(&path, content).expect("write");
            let got = match read(&path).expect("read") {
                OnDisk::Missing => "missing".to_owned(),
                OnDisk::Parsed(conf) => format!("parsed {}", conf.bind_addresses().len()),
                OnDisk::Unreadable(e) => format!("unreadable: {e}"),
            };
            assert!(got.starts_with(expected), "{content:?}: {got}");
        };
        check(b"", "missing");
        check(b"\n", "missing");
        check(b"db-bind-addresses:\n  '0': 10.0.0.1\n", "parsed 1");
        check(
            b"db-bind-addresses:\n  '0': 10.0.",
            "unreadable: controller.conf gives agent 0",
        );
        check(
            b"db-bind-addresses: {'0': [",
            "unreadable: controller.conf is not valid YAML",
        );
        check(b"\xff\xfe", "unreadable");
    }
}
