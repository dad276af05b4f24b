//! Reading and writing `controller.conf` on disk. Writes are atomic (a temp file in the same
//! dir, fsync, rename, fsync of the dir), mode 0600, and skipped when the content is already
//! there, so the agent never sees a torn or truncated file and is not reloaded for nothing.
//! Reads never block and never read without end ([`controller_contract::files`]): a FIFO,
//! device or directory in its place is refused, and so is a file of more than [`MAX_CONF`]
//! bytes. [`replace`] is the charm's one way to replace a file (the memo's too).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use controller_contract::conf::{ConfError, ControllerConf};
use controller_contract::files::{self, Contents};

use crate::plan::OnDisk;

/// The largest controller.conf read; a bigger one is not ours to parse.
pub const MAX_CONF: u64 = controller_contract::conf::MAX_BYTES;

/// Why controller.conf could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfFileError {
    #[error("cannot read {path}: {source}")]
    Read {
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
    let read = files::read_capped(path, MAX_CONF, "controller.conf").map_err(|source| {
        ConfFileError::Read {
            path: path.to_owned(),
            source,
        }
    })?;
    let text = match read {
        Contents::Missing => return Ok(OnDisk::Missing),
        Contents::Refused(why) => return Ok(OnDisk::Unreadable(why)),
        Contents::Bytes(bytes) => bytes,
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

/// The temp file [`replace`] writes beside `path`: `.<name>.new`, one fixed name, so that
/// a leftover of a hook killed between create and rename is found without listing the dir.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.new"))
}

/// Removes what a hook killed between creating its temp file and renaming it left beside
/// `path`, whatever it is (file, symlink, FIFO). A missing one is the usual case and fine.
pub fn remove_leftover(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(temp_path(path)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// How a replaced file reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The file fsynced before the rename and its dir after it: controller.conf.
    Synced,
    /// Left to the page cache: the memo, a cache whose torn copy after a crash is ignored.
    Cached,
}

/// Replaces `path` with `bytes`, mode 0600, through [`temp_path`] and a rename, so a reader
/// sees the old file or the new one, never a part. A leftover temp file goes first; O_EXCL
/// then creates a new inode (never following a symlink or opening a FIFO that appeared in
/// its place). The dir (0700) is made only when the create finds it missing.
///
/// One fixed temp name is safe because the charm is the only writer and Juju runs one hook
/// or action at a time on a machine; a writer that can race another must not use it.
pub fn replace(path: &Path, bytes: &[u8], durability: Durability) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let temp = temp_path(path);
    remove_leftover(path)?;
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
    };
    let mut file = match create() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            create()?
        }
        created => created?,
    };
    let synced = durability == Durability::Synced;
    // The umask may have taken bits off the create mode; the agent expects exactly 0600.
    let written = file
        .set_permissions(fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| if synced { file.sync_all() } else { Ok(()) })
        .and_then(|()| fs::rename(&temp, path));
    if let Err(error) = written {
        drop(file);
        let _ = fs::remove_file(&temp);
        return Err(error);
    }
    if synced {
        // The rename is durable only once the dir entry is.
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Writes `content` to `path` atomically ([`replace`], synced), unless `current` (what this
/// hook read from `path`, see [`read`]) holds exactly that already. Returns whether it
/// wrote. Never writes over a file read as [`OnDisk::Unreadable`]: that is the operator's.
///
/// No second read: one hook runs at a time on a machine and only hooks write the
/// `db-bind-addresses` block, so what [`read`] found earlier in the hook is still there.
pub fn write_if_changed(
    path: &Path,
    content: &str,
    current: &OnDisk,
) -> Result<bool, ConfFileError> {
    let write_error = |source| ConfFileError::Write {
        path: path.to_owned(),
        source,
    };
    match current {
        OnDisk::Parsed(conf) if conf.text() == content => return Ok(false),
        OnDisk::Unreadable(why) => return Err(write_error(std::io::Error::other(why.clone()))),
        OnDisk::Missing | OnDisk::Parsed(_) => {}
    }
    replace(path, content.as_bytes(), Durability::Synced).map_err(write_error)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    #[test]
    fn write_is_atomic_private_and_skipped_when_unchanged() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("agents/controller-0/controller.conf");
        assert_eq!(read(&path).expect("read"), OnDisk::Missing);
        // The first write also makes the dir, private.
        assert!(write_if_changed(&path, "a: 1\n", &OnDisk::Missing).expect("first write"));
        assert_eq!(fs::read_to_string(&path).expect("read back"), "a: 1\n");
        assert_eq!(fs::metadata(&path).expect("meta").mode() & 0o777, 0o600);
        let parent = path.parent().expect("dir");
        assert_eq!(fs::metadata(parent).expect("meta").mode() & 0o777, 0o700);
        let inode = fs::metadata(&path).expect("meta").ino();
        let current = read(&path).expect("read");
        assert!(!write_if_changed(&path, "a: 1\n", &current).expect("same content"));
        assert_eq!(
            fs::metadata(&path).expect("meta").ino(),
            inode,
            "unchanged file untouched"
        );
        assert!(write_if_changed(&path, "a: 2\n", &current).expect("changed"));
        assert_eq!(fs::read_to_string(&path).expect("read back"), "a: 2\n");
        assert_ne!(
            fs::metadata(&path).expect("meta").ino(),
            inode,
            "replaced by rename"
        );
        let leftovers: Vec<_> = fs::read_dir(parent)
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
    fn non_regular_and_oversized_files_are_unreadable_and_never_written_over() {
        // How each is refused without blocking is controller_contract::files' to test; here,
        // what the hook sees (the name in the reason) and that it writes nothing over them.
        let dir = tempfile::tempdir().expect("temp dir");
        let fifo = dir.path().join("fifo.conf");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(status.success());
        assert_eq!(
            unreadable(&fifo),
            "controller.conf is a FIFO, not a regular file"
        );
        assert_eq!(
            unreadable(dir.path()),
            "controller.conf is a directory, not a regular file"
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
        for path in [&fifo, &big] {
            let current = read(path).expect("read");
            assert!(write_if_changed(path, "a: 1\n", &current).is_err());
        }
        assert!(fs::symlink_metadata(&fifo)
            .expect("still there")
            .file_type()
            .is_fifo());
        assert_eq!(fs::metadata(&big).expect("still there").len(), MAX_CONF + 1);
    }

    #[test]
    fn a_killed_writers_leftover_is_removed_or_replaced_whatever_it_is() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("controller.conf");
        let temp = dir.path().join(".controller.conf.new");
        assert_eq!(temp_path(&path), temp);
        fs::write(&path, "a: 1\n").expect("write");
        fs::write(dir.path().join("agent.conf"), "keep").expect("other file");
        let names = || {
            let mut names: Vec<String> = fs::read_dir(dir.path())
                .expect("list")
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        // A hook that does not write removes what a killed writer left.
        fs::write(&temp, "torn").expect("leftover");
        remove_leftover(&path).expect("removed");
        assert_eq!(names(), ["agent.conf", "controller.conf"]);
        remove_leftover(&path).expect("nothing to remove is fine");
        // A writer replaces it, even a FIFO or a symlink to a file that is not ours: the
        // new temp file is a new inode and nothing is written through the link.
        let outside = dir.path().join("outside");
        fs::write(&outside, "not ours").expect("outside");
        for plant in ["fifo", "symlink"] {
            if plant == "fifo" {
                let status = std::process::Command::new("mkfifo")
                    .arg(&temp)
                    .status()
                    .expect("run mkfifo");
                assert!(status.success());
            } else {
                std::os::unix::fs::symlink(&outside, &temp).expect("symlink");
            }
            let current = read(&path).expect("read");
            let content = format!("a: {plant}\n");
            assert!(write_if_changed(&path, &content, &current).expect("written"));
            assert_eq!(fs::read_to_string(&path).expect("read back"), content);
            assert_eq!(
                names(),
                ["agent.conf", "controller.conf", "outside"],
                "{plant}"
            );
        }
        assert_eq!(fs::read_to_string(&outside).expect("outside"), "not ours");
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
        let current = read(&path).expect("read");
        assert!(write_if_changed(&path, conf.text(), &current).expect("write"));
        assert_eq!(
            fs::read_to_string(&path).expect("read back"),
            format!("{head}db-bind-addresses:\n  '0': 10.0.0.5\n  '1': 10.0.0.6\n{tail}")
        );
    }
}
