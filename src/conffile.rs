//! Reading and writing `controller.conf` on disk. Writes are atomic (a temp file in the same
//! dir, fsync, rename, fsync of the dir), mode 0600, and skipped when the content is already
//! there, so the agent never sees a torn or truncated file and is not reloaded for nothing.
//! Reads never block and never read without end: the file is opened non-blocking, must be a
//! regular file (a FIFO, device or directory is refused) and at most [`MAX_CONF`] bytes.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use controller_contract::conf::{ConfError, ControllerConf};

use crate::plan::OnDisk;

/// The largest controller.conf read; a bigger one is not ours to parse.
pub const MAX_CONF: u64 = 1024 * 1024;

/// The name prefix of this writer's temp files, beside controller.conf.
const TEMP_PREFIX: &str = ".controller.conf.";

/// Why controller.conf could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
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

/// What reading the file's bytes found.
enum Bytes {
    Missing,
    Content(Vec<u8>),
    /// Not something to parse, with why.
    Refused(String),
}

/// Reads the file's bytes without blocking on a FIFO or device and without reading more
/// than [`MAX_CONF`] + 1 bytes.
fn read_bytes(path: &Path) -> Result<Bytes, ConfFileError> {
    let read_error = |source| ConfFileError::Read {
        path: path.to_owned(),
        source,
    };
    // O_NONBLOCK: opening a FIFO with no writer would otherwise wait for one. O_NOCTTY: a
    // terminal device never becomes this process's controlling terminal.
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Bytes::Missing),
        Err(e) => return Err(read_error(e)),
    };
    let meta = file.metadata().map_err(read_error)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_block_device() || kind.is_char_device() {
            "a device"
        } else {
            "not a regular file"
        };
        return Ok(Bytes::Refused(format!(
            "controller.conf is {what}, not a regular file"
        )));
    }
    if meta.len() > MAX_CONF {
        return Ok(Bytes::Refused(format!(
            "controller.conf is {} bytes, more than the {MAX_CONF} it can be",
            meta.len()
        )));
    }
    // The size can grow after fstat: read one byte more than allowed to notice.
    let mut bytes = Vec::new();
    file.take(MAX_CONF + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_CONF {
        return Ok(Bytes::Refused(format!(
            "controller.conf is more than the {MAX_CONF} bytes it can be"
        )));
    }
    Ok(Bytes::Content(bytes))
}

/// Reads controller.conf.
pub fn read(path: &Path) -> Result<OnDisk, ConfFileError> {
    let text = match read_bytes(path)? {
        Bytes::Missing => return Ok(OnDisk::Missing),
        Bytes::Refused(why) => return Ok(OnDisk::Unreadable(why)),
        Bytes::Content(bytes) => bytes,
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

/// Removes this writer's temp files left in `dir` by a hook killed between creating one
/// and renaming it. Only regular files and symlinks named `.controller.conf.*` go; one hook
/// runs at a time on a unit, so none of them belongs to a live writer.
pub fn remove_leftovers(dir: &Path) -> Result<usize, ConfFileError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(ConfFileError::Read {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_file() || kind.is_symlink() {
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(ConfFileError::Write { path, source }),
            }
        }
    }
    Ok(removed)
}

/// Writes `content` to `path` atomically with mode 0600, unless the file already holds
/// exactly that. Returns whether it wrote.
pub fn write_if_changed(path: &Path, content: &str) -> Result<bool, ConfFileError> {
    let write_error = |source| ConfFileError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    remove_leftovers(dir)?;
    match read_bytes(path)? {
        Bytes::Content(current) if current == content.as_bytes() => return Ok(false),
        Bytes::Refused(why) => {
            // The plan never writes over such a file; refuse rather than replace it.
            return Err(write_error(std::io::Error::other(why)));
        }
        Bytes::Missing | Bytes::Content(_) => {}
    }
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
        .prefix(TEMP_PREFIX)
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

    fn unreadable(path: &Path) -> String {
        match read(path).expect("read") {
            OnDisk::Unreadable(why) => why,
            other => panic!("{} read as {other:?}", path.display()),
        }
    }

    #[test]
    fn non_regular_and_oversized_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A FIFO with no writer: a blocking open would wait for one for ever. The read runs
        // on a thread so that a regression fails the test instead of hanging it.
        let fifo = dir.path().join("fifo.conf");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(status.success());
        let (sender, receiver) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || sender.send(unreadable(&path)));
        let why = receiver
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading a FIFO returns at once");
        assert_eq!(why, "controller.conf is a FIFO, not a regular file");
        assert_eq!(
            unreadable(dir.path()),
            "controller.conf is a directory, not a regular file"
        );
        assert_eq!(
            unreadable(Path::new("/dev/null")),
            "controller.conf is a device, not a regular file"
        );
        let big = dir.path().join("big.conf");
        fs::write(&big, vec![b'#'; MAX_CONF as usize + 1]).expect("write");
        assert_eq!(
            unreadable(&big),
            format!(
                "controller.conf is {} bytes, more than the {MAX_CONF} it can be",
                MAX_CONF + 1
            )
        );
        // Nothing is ever written over such a file.
        assert!(write_if_changed(&fifo, "a: 1\n").is_err());
        assert!(fs::symlink_metadata(&fifo)
            .expect("still there")
            .file_type()
            .is_fifo());
    }

    #[test]
    fn leftover_temp_files_are_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("controller.conf");
        fs::write(&path, "a: 1\n").expect("write");
        // What a writer killed between create and rename leaves, and what is not ours.
        fs::write(dir.path().join(".controller.conf.Ab12Cd"), "torn").expect("leftover");
        fs::write(dir.path().join(".controller.conf.x"), "").expect("leftover");
        fs::create_dir(dir.path().join(".controller.conf.dir")).expect("a dir");
        fs::write(dir.path().join("agent.conf"), "keep").expect("other file");
        // Even a write skipped as unchanged cleans up.
        assert!(!write_if_changed(&path, "a: 1\n").expect("unchanged"));
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .expect("list")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [".controller.conf.dir", "agent.conf", "controller.conf"]
        );
    }

    #[test]
    fn a_rewrite_keeps_the_agents_keys_byte_for_byte() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("controller.conf");
        let head = "# managed by jujud\nmode: 0644\nbig: 340282366920938463463374607431768211455\n\
                    custom: !agent-tag {x: 1}\n";
        let tail = "# after\napi-port: 17070 # comment\n";
        fs::write(
            &path,
            format!("{head}db-bind-addresses:\n  '0': 10.0.0.5\n{tail}"),
        )
        .expect("seed");
        let OnDisk::Parsed(mut conf) = read(&path).expect("read") else {
            panic!("the seeded file parses");
        };
        let map: controller_contract::conf::BindAddresses = [
            ("0".to_owned(), "10.0.0.5".parse().expect("ip")),
            ("1".to_owned(), "10.0.0.6".parse().expect("ip")),
        ]
        .into();
        conf.set_bind_addresses(map).expect("replaceable");
        assert!(write_if_changed(&path, &conf.render()).expect("write"));
        assert_eq!(
            fs::read_to_string(&path).expect("read back"),
            format!("{head}db-bind-addresses:\n  '0': 10.0.0.5\n  '1': 10.0.0.6\n{tail}")
        );
    }
}
