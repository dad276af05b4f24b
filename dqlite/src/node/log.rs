//! The last log position of a stopped node, read from raft's on-disk files (libraft 0.15's
//! uv layout), for choosing the most up-to-date member before an offline recovery.
//!
//! What libraft 0.15 keeps in a data dir, and what this module reads of it:
//! - `metadata1`/`metadata2`: the current term and vote. Not read: the current term says
//!   nothing about which entries the log holds.
//! - closed segments `<first>-<last>` (zero-padded decimal, both inclusive): entries
//!   `first..=last`; the name gives the indexes, the last batch header the last term.
//! - open segments `open-<counter>`: preallocated, zero-filled files being appended to. Their
//!   entries continue where the closed segments (or the snapshot) end, in counter order; a
//!   batch whose checksums fail ends the segment, as libraft truncates it at load.
//! - snapshots `snapshot-<term>-<index>-<timestamp>` with a `.meta` beside them: the most
//!   recent (greatest term, index, timestamp) with a non-empty data file counts.
//!
//! A segment file is the u64 disk format (1) followed by batches: u32 header CRC, u32 data
//! CRC, u64 entry count n, n entry headers (u64 term, u8 type, 3 unused bytes, u32 data
//! length), then the entries' data (each a multiple of 8 bytes). All little-endian; the
//! CRC is the non-reflected CRC-32 (polynomial 0x04c11db7, initial value 0, no final xor).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::NodeError;

/// Where a node's raft log ends: the term and index of its last entry. Positions order the
/// way raft's election rule does (term first, then index), so the greatest position among
/// a majority of the members holds every committed entry.
///
/// The position counts every entry on disk, committed or not: an uncommitted tail can only
/// make a member look more up to date than it is, never hide committed entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogPosition {
    /// The term of the last entry (0 for an empty log).
    pub term: u64,
    /// The index of the last entry (0 for an empty log).
    pub index: u64,
}

/// A raft file name in the data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentName {
    /// `<first>-<last>`: a closed segment holding entries `first..=last`.
    Closed { first: u64, last: u64 },
    /// `open-<counter>`: a segment being written, its entries found only by reading it.
    Open { counter: u64 },
    /// `snapshot-<term>-<index>-<timestamp>.meta`: a snapshot's metadata file (the
    /// snapshot data file has the same name without `.meta`).
    SnapshotMeta {
        term: u64,
        index: u64,
        timestamp: u64,
    },
}

/// Recognises a raft file name, `None` for any other file (metadata, `info.yaml`, a
/// snapshot's data file, ...). Pure.
pub fn parse_segment_name(name: &str) -> Option<SegmentName> {
    if let Some(counter) = name.strip_prefix("open-") {
        return Some(SegmentName::Open {
            counter: parse_decimal(counter)?,
        });
    }
    if let Some(rest) = name.strip_prefix("snapshot-") {
        let rest = rest.strip_suffix(".meta")?;
        let mut parts = rest.split('-');
        let term = parse_decimal(parts.next()?)?;
        let index = parse_decimal(parts.next()?)?;
        let timestamp = parse_decimal(parts.next()?)?;
        if parts.next().is_some() {
            return None;
        }
        return Some(SegmentName::SnapshotMeta {
            term,
            index,
            timestamp,
        });
    }
    let (first, last) = name.split_once('-')?;
    let (first, last) = (parse_decimal(first)?, parse_decimal(last)?);
    if first == 0 || first > last {
        return None;
    }
    Some(SegmentName::Closed { first, last })
}

/// Digits only: libraft writes plain decimal, and anything else is not its file.
fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// What a segment's bytes hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentScan {
    /// Entries in the valid batches.
    pub entries: u64,
    /// The term of the last of them, `None` when there are none.
    pub last_term: Option<u64>,
    /// Whether the valid batches end exactly at the end of the bytes. An open segment ends
    /// in zeros (preallocated space) or a torn batch; a closed one must be complete.
    pub complete: bool,
}

/// The disk format libraft 0.15 writes first in every segment.
const DISK_FORMAT: u64 = 1;
/// The most entries a batch can claim (libraft's own bound: 8 MiB of 32-byte entries).
const MAX_BATCH_ENTRIES: u64 = 8 * 1024 * 1024 / 32;

/// Reads the batches of a segment, stopping at the first one that is not whole and valid.
/// A file of zeros (an open segment never written) holds no entries. Pure.
pub fn scan_segment(bytes: &[u8]) -> Result<SegmentScan, String> {
    let empty = SegmentScan {
        entries: 0,
        last_term: None,
        complete: bytes.is_empty(),
    };
    let Some(format) = read_u64(bytes, 0) else {
        return Ok(empty);
    };
    if format == 0 && bytes.iter().all(|&byte| byte == 0) {
        return Ok(empty);
    }
    if format != DISK_FORMAT {
        return Err(format!("unknown segment format {format}"));
    }
    let mut scan = SegmentScan {
        entries: 0,
        last_term: None,
        complete: false,
    };
    let mut offset = 8;
    while offset < bytes.len() {
        match scan_batch(bytes, offset) {
            Some((entries, last_term, next)) => {
                scan.entries += entries;
                scan.last_term = Some(last_term);
                offset = next;
            }
            None => return Ok(scan),
        }
    }
    scan.complete = true;
    Ok(scan)
}

/// One batch at `offset`: its entry count, its last entry's term and the offset after it,
/// or `None` when the bytes there are not a whole batch with matching checksums.
fn scan_batch(bytes: &[u8], offset: usize) -> Option<(u64, u64, usize)> {
    let header_crc = read_u32(bytes, offset)?;
    let data_crc = read_u32(bytes, offset + 4)?;
    let header_start = offset + 8;
    let count = read_u64(bytes, header_start)?;
    if count == 0 || count > MAX_BATCH_ENTRIES {
        return None;
    }
    let count_usize = usize::try_from(count).ok()?;
    let header_end = header_start.checked_add(8 + 16 * count_usize)?;
    let header = bytes.get(header_start..header_end)?;
    if crc32(0, header) != header_crc {
        return None;
    }
    let mut data_len: usize = 0;
    let mut last_term = 0;
    for entry in 0..count_usize {
        let at = 8 + 16 * entry;
        last_term = read_u64(header, at)?;
        let len = usize::try_from(read_u32(header, at + 12)?).ok()?;
        data_len = data_len.checked_add(len)?;
    }
    let data_end = header_end.checked_add(data_len)?;
    let data = bytes.get(header_end..data_end)?;
    if crc32(0, data) != data_crc {
        return None;
    }
    Some((count, last_term, data_end))
}

fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    let word = bytes.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_le_bytes(word.try_into().ok()?))
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let word = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(word.try_into().ok()?))
}

/// libraft's CRC-32: polynomial 0x04c11db7, most significant bit first, no reflection and
/// no final xor, chained through `crc`.
pub(crate) fn crc32(mut crc: u32, bytes: &[u8]) -> u32 {
    for &byte in bytes {
        crc = (crc << 8) ^ CRC_TABLE[usize::from(((crc >> 24) as u8) ^ byte)];
    }
    crc
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut index = 0;
    while index < 256 {
        let mut value = (index as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            value = if value & 0x8000_0000 != 0 {
                (value << 1) ^ 0x04c1_1db7
            } else {
                value << 1
            };
            bit += 1;
        }
        table[index] = value;
        index += 1;
    }
    table
};

/// The raft files of a data dir, as listed (no contents yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftFiles {
    /// Closed segments as `(first, last)`.
    pub closed: Vec<(u64, u64)>,
    /// Open segment counters.
    pub open: Vec<u64>,
    /// Snapshots whose data file exists and is not empty, as `(term, index, timestamp)`.
    pub snapshots: Vec<(u64, u64, u64)>,
}

/// Which files to read, decided from the names alone the way libraft 0.15 loads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadPlan {
    /// The snapshot position libraft starts from, if any.
    pub snapshot: Option<LogPosition>,
    /// The index of the first entry in the segments that follow.
    pub start_index: u64,
    /// The closed segments libraft keeps, in order, contiguous from `start_index`.
    pub closed: Vec<(u64, u64)>,
    /// The open segments, in counter order, continuing after the closed ones.
    pub open: Vec<u64>,
}

/// Decides which segments count, as libraft 0.15's load does: the most recent snapshot,
/// then the most recent contiguous run of closed segments (dropped when all of it lies
/// behind the snapshot and no open segment follows), then the open segments. Pure.
pub fn plan_load(files: &RaftFiles) -> Result<LoadPlan, String> {
    let snapshot = files
        .snapshots
        .iter()
        .max()
        .map(|&(term, index, _)| LogPosition { term, index });
    let mut closed = files.closed.clone();
    closed.sort_unstable();
    let mut open = files.open.clone();
    open.sort_unstable();

    if let Some(snapshot) = snapshot {
        if let Some(&(_, newest_last)) = closed.last() {
            if newest_last < snapshot.index && open.is_empty() {
                closed.clear();
            } else {
                // Keep the newest contiguous run only.
                let mut first_kept = closed.len() - 1;
                while first_kept > 0 && closed[first_kept - 1].1 + 1 == closed[first_kept].0 {
                    first_kept -= 1;
                }
                closed.drain(..first_kept);
                if closed[0].0 > snapshot.index + 1 {
                    return Err(format!(
                        "closed segment {}-{} is past the snapshot at index {}",
                        closed[0].0, closed[0].1, snapshot.index
                    ));
                }
            }
        }
    }
    let start_index = match (closed.first(), snapshot) {
        (Some(&(first, _)), _) => first,
        (None, Some(snapshot)) => snapshot.index + 1,
        (None, None) => 1,
    };
    let mut next_index = start_index;
    for &(first, last) in &closed {
        if first != next_index {
            return Err(format!(
                "closed segment {first}-{last} leaves a gap: expected it to start at {next_index}"
            ));
        }
        next_index = last + 1;
    }
    Ok(LoadPlan {
        snapshot,
        start_index,
        closed,
        open,
    })
}

/// A segment file's identity and last change, as `stat` tells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    fn of(metadata: &fs::Metadata) -> FileStamp {
        let ns = |secs: i64, nanos: i64| i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        FileStamp {
            dev: metadata.dev(),
            ino: metadata.ino(),
            len: metadata.len(),
            mtime_ns: ns(metadata.mtime(), metadata.mtime_nsec()),
            ctime_ns: ns(metadata.ctime(), metadata.ctime_nsec()),
        }
    }
}

/// How long a segment must have been left unchanged before its scan is reused. File
/// timestamps move in clock ticks (a few milliseconds), so a write in the same tick as the
/// last one may leave them as they were; once a file's last change is this far in the past,
/// any later write gives it a newer time.
const SETTLED: Duration = Duration::from_secs(1);

/// The scans of segments that had settled when they were read, by path. Reading and
/// checksumming whole segments (libraft preallocates open ones: 8 MiB each, mostly zeros)
/// every progress report was about a fifth of an idle controller agent's CPU.
static SCANS: Mutex<Option<HashMap<PathBuf, (FileStamp, SegmentScan)>>> = Mutex::new(None);

/// The scans kept at most (a node has a handful of segments; several nodes may share a
/// process): beyond this the cache starts afresh.
const MAX_SCANS: usize = 1024;

/// The part of the open segment at `path` that its batches' lengths cover: the format word,
/// then batch after batch as far as each one's header says, stopping at the first header
/// that claims no entries (libraft preallocates open segments with zeros, 8 MiB each) or
/// runs past the end of the file. [`scan_segment`] checks every checksum on these bytes and
/// finds the same entries and last term as in the whole file; only `complete` may differ,
/// which says nothing about an open segment. A segment whose format word is zero (unused,
/// or corrupt) is read whole, so that the scan can tell which.
fn read_open_segment(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = fs::File::open(path)?;
    let mut bytes = Vec::new();
    // Appends up to `n` more bytes; whether all `n` were there.
    let mut more = |bytes: &mut Vec<u8>, n: usize| -> io::Result<bool> {
        let before = bytes.len();
        let wanted = u64::try_from(n).unwrap_or(u64::MAX);
        (&mut file).take(wanted).read_to_end(bytes)?;
        Ok(bytes.len() - before == n)
    };
    if !more(&mut bytes, 8)? {
        return Ok(bytes);
    }
    if read_u64(&bytes, 0) == Some(0) {
        file.read_to_end(&mut bytes)?;
        return Ok(bytes);
    }
    loop {
        let offset = bytes.len();
        // Two checksums and the entry count.
        if !more(&mut bytes, 16)? {
            return Ok(bytes);
        }
        let count = read_u64(&bytes, offset + 8).unwrap_or(0);
        let Some(count) = (1..=MAX_BATCH_ENTRIES)
            .contains(&count)
            .then(|| usize::try_from(count).ok())
            .flatten()
        else {
            return Ok(bytes);
        };
        // Each entry's term, type and data length.
        if !more(&mut bytes, 16 * count)? {
            return Ok(bytes);
        }
        let mut data_len: usize = 0;
        for entry in 0..count {
            let len = read_u32(&bytes, offset + 16 + 16 * entry + 12).unwrap_or(0);
            data_len = data_len.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
        }
        if !more(&mut bytes, data_len)? {
            return Ok(bytes);
        }
    }
}

/// [`scan_segment`] of the file at `path` (an open segment when `open`, see
/// [`read_open_segment`]), reusing the last scan of it when the file has
/// not changed since and had settled (see [`SETTLED`]) when it was read. `Err`: the file
/// cannot be read; `Ok(Err)`: its bytes are not a segment.
fn scan_segment_file(path: &Path, open: bool) -> io::Result<Result<SegmentScan, String>> {
    let before = FileStamp::of(&fs::metadata(path)?);
    let cached = {
        let scans = SCANS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        scans
            .as_ref()
            .and_then(|scans| scans.get(path))
            .filter(|(stamp, _)| *stamp == before)
            .map(|(_, scan)| *scan)
    };
    if let Some(scan) = cached {
        return Ok(Ok(scan));
    }
    let bytes = if open {
        read_open_segment(path)?
    } else {
        fs::read(path)?
    };
    let scan = match scan_segment(&bytes) {
        Ok(scan) => scan,
        Err(reason) => return Ok(Err(reason)),
    };
    let metadata = fs::metadata(path)?;
    let changed = metadata
        .modified()
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok());
    // Kept only when nothing changed while it was read and the last change is old enough.
    if FileStamp::of(&metadata) == before && changed.is_some_and(|age| age >= SETTLED) {
        let mut scans = SCANS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let scans = scans.get_or_insert_with(HashMap::new);
        if scans.len() >= MAX_SCANS {
            scans.clear();
        }
        scans.insert(path.to_owned(), (before, scan));
    }
    Ok(Ok(scan))
}

/// Reads the log position of the stopped node in `data_dir`.
pub(crate) fn read_log_position(data_dir: &Path) -> Result<LogPosition, NodeError> {
    let read_error = |path: &Path, source: io::Error| NodeError::ReadLog {
        path: path.to_owned(),
        source,
    };
    let mut files = RaftFiles::default();
    let listing = fs::read_dir(data_dir).map_err(|source| read_error(data_dir, source))?;
    for entry in listing {
        let entry = entry.map_err(|source| read_error(data_dir, source))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        match parse_segment_name(&name) {
            Some(SegmentName::Closed { first, last }) => files.closed.push((first, last)),
            Some(SegmentName::Open { counter }) => files.open.push(counter),
            Some(SegmentName::SnapshotMeta {
                term,
                index,
                timestamp,
            }) => {
                // Like libraft, a snapshot counts only once its data file is written.
                let data = data_dir.join(name.trim_end_matches(".meta"));
                match fs::metadata(&data) {
                    Ok(metadata) if metadata.len() > 0 => {
                        files.snapshots.push((term, index, timestamp))
                    }
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => return Err(read_error(&data, source)),
                }
            }
            None => {}
        }
    }
    let plan = plan_load(&files).map_err(|reason| NodeError::ParseLog {
        path: data_dir.to_owned(),
        reason,
    })?;

    let parse_error = |path: &Path, reason: String| NodeError::ParseLog {
        path: path.to_owned(),
        reason,
    };
    let mut last: Option<LogPosition> = None;
    let mut next_index = plan.start_index;
    if let Some(&(first, end)) = plan.closed.last() {
        let path = data_dir.join(format!("{first:016}-{end:016}"));
        let scan = scan_segment_file(&path, false)
            .map_err(|source| read_error(&path, source))?
            .map_err(|reason| parse_error(&path, reason))?;
        let expected = end - first + 1;
        if !scan.complete || scan.entries != expected {
            return Err(parse_error(
                &path,
                format!(
                    "holds {} valid entries, its name says {expected}",
                    scan.entries
                ),
            ));
        }
        let term = scan
            .last_term
            .expect("a closed segment has at least one entry");
        last = Some(LogPosition { term, index: end });
        next_index = end + 1;
    }
    for counter in &plan.open {
        let path = data_dir.join(format!("open-{counter}"));
        let scan = scan_segment_file(&path, true)
            .map_err(|source| read_error(&path, source))?
            .map_err(|reason| parse_error(&path, reason))?;
        if let Some(term) = scan.last_term {
            next_index += scan.entries;
            last = Some(LogPosition {
                term,
                index: next_index - 1,
            });
        }
    }
    Ok(match (last, plan.snapshot) {
        (Some(last), Some(snapshot)) if snapshot.index > last.index => snapshot,
        (Some(last), _) => last,
        (None, Some(snapshot)) => snapshot,
        (None, None) => LogPosition::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes one batch the way libraft 0.15 writes it: `(term, data length)` per entry.
    fn batch(entries: &[(u64, u32)]) -> Vec<u8> {
        let mut header = Vec::new();
        header.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        let mut data = Vec::new();
        for (position, &(term, len)) in entries.iter().enumerate() {
            header.extend_from_slice(&term.to_le_bytes());
            header.extend_from_slice(&[1, 0, 0, 0]);
            header.extend_from_slice(&len.to_le_bytes());
            data.extend(std::iter::repeat_n(position as u8 + 1, len as usize));
        }
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&crc32(0, &header).to_le_bytes());
        bytes.extend_from_slice(&crc32(0, &data).to_le_bytes());
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&data);
        bytes
    }

    fn segment(batches: &[Vec<u8>], trailing_zeros: usize) -> Vec<u8> {
        let mut bytes = DISK_FORMAT.to_le_bytes().to_vec();
        for one in batches {
            bytes.extend_from_slice(one);
        }
        bytes.extend(std::iter::repeat_n(0, trailing_zeros));
        bytes
    }

    #[test]
    fn crc_table_is_libraft_s() {
        // The first entries of libraft's table (byte.c) and a known check value of the
        // MSB-first, unreflected, unxored CRC-32 ("123456789" -> 0x89a1897f).
        assert_eq!(&CRC_TABLE[..4], &[0, 0x04c1_1db7, 0x0982_3b6e, 0x0d43_26d9]);
        assert_eq!(CRC_TABLE[255], 0xb1f7_40b4);
        assert_eq!(crc32(0, b"123456789"), 0x89a1_897f);
    }

    #[test]
    fn segment_names() {
        let check = |name: &str, expected: Option<SegmentName>| {
            assert_eq!(parse_segment_name(name), expected, "{name}");
        };
        check(
            "0000000000000001-0000000000000004",
            Some(SegmentName::Closed { first: 1, last: 4 }),
        );
        check(
            "12-12",
            Some(SegmentName::Closed {
                first: 12,
                last: 12,
            }),
        );
        check("open-3", Some(SegmentName::Open { counter: 3 }));
        check(
            "snapshot-2-1024-1700000000000.meta",
            Some(SegmentName::SnapshotMeta {
                term: 2,
                index: 1024,
                timestamp: 1_700_000_000_000,
            }),
        );
        check("snapshot-2-1024-1700000000000", None);
        check("snapshot-2-1024.meta", None);
        check("snapshot-2-1024-5-6.meta", None);
        check("0000000000000005-0000000000000004", None);
        check("0-4", None);
        check("open-", None);
        check("open-x", None);
        check("+1-2", None);
        check("metadata1", None);
        check("info.yaml", None);
        check("dqlite-node.lock", None);
    }

    #[test]
    fn segment_scans() {
        let check = |bytes: Vec<u8>, expected: Result<SegmentScan, String>| {
            assert_eq!(scan_segment(&bytes), expected);
        };
        let scan = |entries, last_term, complete| {
            Ok(SegmentScan {
                entries,
                last_term,
                complete,
            })
        };
        check(Vec::new(), scan(0, None, true));
        check(vec![0; 4096], scan(0, None, false));
        check(segment(&[batch(&[(1, 8)])], 0), scan(1, Some(1), true));
        check(
            segment(&[batch(&[(1, 8), (1, 16)]), batch(&[(2, 8)])], 0),
            scan(3, Some(2), true),
        );
        // An open segment: valid batches, then preallocated zeros.
        check(
            segment(&[batch(&[(3, 8)]), batch(&[(3, 24), (4, 8)])], 4096),
            scan(3, Some(4), false),
        );
        // A torn last batch (cut in its data) ends the valid entries.
        let mut torn = segment(&[batch(&[(1, 8)]), batch(&[(2, 64)])], 0);
        torn.truncate(torn.len() - 8);
        check(torn, scan(1, Some(1), false));
        // A flipped data byte fails the data checksum.
        let mut flipped = segment(&[batch(&[(1, 8)]), batch(&[(2, 8)])], 0);
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        check(flipped, scan(1, Some(1), false));
        // A header claiming absurdly many entries is not a batch.
        let mut huge = segment(&[], 0);
        huge.extend_from_slice(&[0; 8]);
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        check(huge, scan(0, None, false));
        check(
            7u64.to_le_bytes().to_vec(),
            Err("unknown segment format 7".to_owned()),
        );
        // Fewer than 8 bytes cannot even hold the format.
        check(vec![1, 0, 0], scan(0, None, false));
    }

    #[test]
    fn load_plans() {
        let check = |files: RaftFiles, expected: Result<LoadPlan, String>| {
            assert_eq!(plan_load(&files), expected);
        };
        let files =
            |closed: &[(u64, u64)], open: &[u64], snapshots: &[(u64, u64, u64)]| RaftFiles {
                closed: closed.to_vec(),
                open: open.to_vec(),
                snapshots: snapshots.to_vec(),
            };
        let plan =
            |snapshot: Option<(u64, u64)>, start_index, closed: &[(u64, u64)], open: &[u64]| {
                Ok(LoadPlan {
                    snapshot: snapshot.map(|(term, index)| LogPosition { term, index }),
                    start_index,
                    closed: closed.to_vec(),
                    open: open.to_vec(),
                })
            };
        check(files(&[], &[], &[]), plan(None, 1, &[], &[]));
        check(files(&[], &[2, 1], &[]), plan(None, 1, &[], &[1, 2]));
        check(
            files(&[(5, 9), (1, 4)], &[3], &[]),
            plan(None, 1, &[(1, 4), (5, 9)], &[3]),
        );
        check(
            files(&[(1, 4), (6, 9)], &[], &[]),
            Err("closed segment 6-9 leaves a gap: expected it to start at 5".to_owned()),
        );
        // With a snapshot: the newest contiguous run of closed segments that reaches it.
        check(
            files(
                &[(1, 4), (6, 9), (10, 12)],
                &[7],
                &[(2, 8, 100), (2, 7, 200)],
            ),
            plan(Some((2, 8)), 6, &[(6, 9), (10, 12)], &[7]),
        );
        // All closed segments behind the snapshot and nothing open: start after it.
        check(
            files(&[(1, 4)], &[], &[(3, 10, 1)]),
            plan(Some((3, 10)), 11, &[], &[]),
        );
        check(
            files(&[(1, 4)], &[2], &[(3, 10, 1)]),
            plan(Some((3, 10)), 1, &[(1, 4)], &[2]),
        );
        check(
            files(&[(20, 30)], &[], &[(3, 10, 1)]),
            Err("closed segment 20-30 is past the snapshot at index 10".to_owned()),
        );
        check(
            files(&[], &[4], &[(1, 2, 5), (3, 1, 5)]),
            plan(Some((3, 1)), 2, &[], &[4]),
        );
    }

    /// Reading an open segment only as far as its batches' lengths go finds what reading it
    /// whole finds: entries, last term, and errors.
    #[test]
    fn open_segments_read_as_far_as_their_batches_scan_as_whole_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        let two = batch(&[(1, 8), (1, 24)]);
        let mut torn = batch(&[(2, 16)]);
        torn.truncate(torn.len() - 3);
        let mut bad_crc = batch(&[(2, 8)]);
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 0xff;
        let mut nonzero_unused = vec![0u8; 4096];
        nonzero_unused[100] = 7;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("short", vec![1, 0, 0]),
            ("unused", vec![0; 64 * 1024]),
            ("format 0 with bytes", nonzero_unused),
            ("unknown format", vec![9; 64]),
            (
                "two batches, zero tail",
                segment(&[two.clone(), batch(&[(2, 8)])], 64 * 1024),
            ),
            ("no tail", segment(std::slice::from_ref(&two), 0)),
            ("torn last batch", {
                let mut bytes = segment(std::slice::from_ref(&two), 0);
                bytes.extend_from_slice(&torn);
                bytes
            }),
            (
                "bad checksum",
                segment(&[two.clone(), bad_crc, batch(&[(3, 8)])], 512),
            ),
            ("huge count", {
                let mut bytes = segment(&[two], 0);
                bytes.extend_from_slice(&[0; 8]);
                bytes.extend_from_slice(&u64::MAX.to_le_bytes());
                bytes
            }),
        ];
        for (name, bytes) in cases {
            let path = dir.path().join(name);
            fs::write(&path, &bytes).expect("write");
            let whole = scan_segment(&bytes);
            let read = read_open_segment(&path).expect("readable");
            assert!(read.len() <= bytes.len(), "{name}");
            let prefix = scan_segment(&read);
            let summary = |scan: &Result<SegmentScan, String>| {
                scan.as_ref()
                    .map(|s| (s.entries, s.last_term))
                    .map_err(Clone::clone)
            };
            assert_eq!(summary(&prefix), summary(&whole), "{name}");
        }
        // The zeros after the batches are not read.
        let bytes = segment(&[batch(&[(1, 8)])], 1 << 20);
        let path = dir.path().join("preallocated");
        fs::write(&path, &bytes).expect("write");
        assert!(read_open_segment(&path).expect("readable").len() < 1024);
    }

    /// A segment left unchanged for a while is scanned once; any write to it (a newer
    /// modification time, another length) is read again; a fresh one is never kept.
    #[test]
    fn settled_segments_are_scanned_once_and_changed_ones_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("open-1");
        let cached = |path: &Path| {
            SCANS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .and_then(|scans| scans.get(path).map(|(_, scan)| *scan))
        };
        let write_aged = |bytes: Vec<u8>, age: Duration| {
            fs::write(&path, bytes).expect("write segment");
            let file = fs::File::options()
                .write(true)
                .open(&path)
                .expect("open segment");
            file.set_modified(SystemTime::now() - age)
                .expect("set mtime");
        };
        let scan = |path: &Path| {
            scan_segment_file(path, true)
                .expect("readable")
                .expect("a segment")
        };
        // Fresh: scanned, not kept.
        write_aged(segment(&[batch(&[(1, 8)])], 4096), Duration::ZERO);
        assert_eq!(scan(&path).entries, 1);
        assert_eq!(cached(&path), None);
        // Settled: kept.
        write_aged(
            segment(&[batch(&[(1, 8)]), batch(&[(2, 8)])], 4096),
            SETTLED * 2,
        );
        let first = scan(&path);
        assert_eq!((first.entries, first.last_term), (2, Some(2)));
        assert_eq!(cached(&path), Some(first));
        // The kept scan is what the next read answers, without reading the file: a marked
        // scan put in its place comes back.
        let marked = SegmentScan {
            entries: 99,
            ..first
        };
        {
            let mut scans = SCANS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((_, scan)) = scans.as_mut().and_then(|scans| scans.get_mut(&path)) {
                *scan = marked;
            }
        }
        assert_eq!(scan(&path), marked);
        // Written again (same length, older time than now but a different one): read again.
        write_aged(
            segment(&[batch(&[(3, 8)]), batch(&[(3, 8)])], 4096),
            SETTLED * 3,
        );
        let second = scan(&path);
        assert_eq!((second.entries, second.last_term), (2, Some(3)));
        assert_eq!(cached(&path), Some(second));
    }

    #[test]
    fn positions_read_from_a_dir() {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, bytes: Vec<u8>| {
            fs::write(dir.path().join(name), bytes).expect("write raft file");
        };
        let position = || read_log_position(dir.path()).expect("log position");
        assert_eq!(position(), LogPosition::default());
        write("metadata1", vec![0; 32]);
        write("open-1", vec![0; 4096]);
        assert_eq!(position(), LogPosition::default());
        write(
            "0000000000000001-0000000000000003",
            segment(&[batch(&[(1, 8), (1, 8)]), batch(&[(2, 8)])], 0),
        );
        assert_eq!(position(), LogPosition { term: 2, index: 3 });
        write("open-2", segment(&[batch(&[(2, 8), (3, 8)])], 1024));
        assert_eq!(position(), LogPosition { term: 3, index: 5 });
        // A snapshot ahead of every entry (entries lost) is where the log ends.
        write("snapshot-4-9-1.meta", vec![1; 8]);
        write("snapshot-4-9-1", vec![1; 8]);
        assert_eq!(position(), LogPosition { term: 4, index: 9 });
        // A closed segment whose entries disagree with its name is an error, not a guess.
        write(
            "0000000000000010-0000000000000012",
            segment(&[batch(&[(4, 8)])], 0),
        );
        let error = read_log_position(dir.path()).expect_err("short closed segment");
        assert!(
            error
                .to_string()
                .contains("holds 1 valid entries, its name says 3"),
            "{error}"
        );
    }
}
