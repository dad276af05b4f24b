//! Reading the small files one process writes and another reads (controller.conf, the
//! charm's memo, the agent's lease status) without blocking and without reading without
//! end: the file is opened non-blocking, must be a regular file (a FIFO, device, socket or
//! directory in its place is refused, never waited on) and is read through a cap of one
//! byte more than its limit. Something else in a file's place is an operator's or a
//! fault's doing, and its reader says so instead of hanging or filling its memory.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What reading a file found.
#[derive(Debug, PartialEq, Eq)]
pub enum Contents {
    /// No file.
    Missing,
    /// The file's bytes, at most the cap.
    Bytes(Vec<u8>),
    /// Not something to parse, with why (named as `name`).
    Refused(String),
}

/// Reads the file at `path`, `name` naming it in a refusal.
pub fn read_capped(path: &Path, max: u64, name: &str) -> std::io::Result<Contents> {
    // O_NONBLOCK: opening a FIFO with no writer would otherwise wait for one. O_NOCTTY: a
    // terminal device never becomes this process's controlling terminal.
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Contents::Missing),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
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
        return Ok(Contents::Refused(format!(
            "{name} is {what}, not a regular file"
        )));
    }
    if meta.len() > max {
        return Ok(Contents::Refused(format!(
            "{name} is {} bytes, more than the {max} it can be",
            meta.len()
        )));
    }
    // The size can grow after fstat: read one byte more than allowed to notice.
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Ok(Contents::Refused(format!(
            "{name} is more than the {max} bytes it can be"
        )));
    }
    Ok(Contents::Bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_read_and_what_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        let read = |path: &Path| read_capped(path, 8, "f").expect("read");
        assert_eq!(read(&path), Contents::Missing);
        std::fs::write(&path, "12345678").expect("write");
        assert_eq!(read(&path), Contents::Bytes(b"12345678".to_vec()));
        std::fs::write(&path, "123456789").expect("write");
        assert_eq!(
            read(&path),
            Contents::Refused("f is 9 bytes, more than the 8 it can be".into())
        );
        assert_eq!(
            read(dir.path()),
            Contents::Refused("f is a directory, not a regular file".into())
        );
        assert_eq!(
            read(Path::new("/dev/null")),
            Contents::Refused("f is a device, not a regular file".into())
        );
        // A FIFO with no writer, read on a thread so that a regression fails the test
        // instead of hanging it.
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(status.success());
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || sender.send(read_capped(&fifo, 8, "f").expect("read")));
        assert_eq!(
            receiver
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("a FIFO is refused at once"),
            Contents::Refused("f is a FIFO, not a regular file".into())
        );
    }
}
