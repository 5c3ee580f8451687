//! The event logger's write-ahead log: every event the logger accepts is appended here
//! at once, and stays until the database has committed it; a restarted host finds
//! what the database did not get and replays it.
//!
//! A journal is a directory of segment files `<seq>.seg`, named after the sequence
//! number of their first record and read in that order, plus a `LOCK` file held with
//! `flock` while an instance owns the journal (two instances, or two hosts, never
//! interleave their writes). A segment is a sequence of records, framed as
//! PostgreSQL's WAL frames its records, so that a reader can find them again past
//! damage:
//!
//! ```text
//! marker "\xFEdzJ" | u32 LE payload length | u64 LE record seq | u32 LE CRC-32 | payload
//! ```
//!
//! The CRC covers the length, the sequence number and the payload (a `LogRow` as
//! JSON). The marker's first byte never occurs in UTF-8 text, so it never occurs in a
//! payload; a marker found by chance in a header still needs a matching CRC. Record
//! sequence numbers grow by one per record across segments.
//!
//! # Reading a damaged journal
//!
//! [`Journal::open`] reads every segment as PostgreSQL's WAL reader does: a record
//! whose frame does not verify starts an unreadable byte range; the reader scans
//! forward for the next marker whose length and CRC verify and carries on from there,
//! so one bad byte costs one record, not the rest of the segment. Each unreadable
//! range is reported with the number of records it held: exactly (the sequence numbers
//! on both sides of it, or the next segment's name, say how many are missing), or, for
//! a range that runs to the journal's very end, by counting the markers it holds.
//!
//! * A range at the very end of the last segment that is one record cut short (its
//!   header promises more bytes than the file has) is a torn write: the process died
//!   inside `write(2)`, before the event was accepted. It is cut off (`set_len`), and
//!   reported as a warning.
//! * Any other unreadable range is damage: the segment is renamed aside to
//!   `<seq>.seg.damaged-<epoch ms>` (kept for inspection, never deleted), its valid
//!   records are written to a fresh segment, and the damage is reported (one
//!   [`Damage`] per segment, which the pipeline logs as one ERROR line and counts in
//!   `daz_plugin_storage_journal_records_lost_total`).
//!
//! # Invariants
//!
//! * Records are only appended to the last segment; a segment past `segment_bytes` is
//!   closed and a new one started, so consumed data can be deleted segment by segment.
//! * The journal is in the order events were accepted.
//! * Reading never consumes: [`Journal::read`] returns rows and a [`Position`]; only
//!   [`Journal::commit`] (after the database committed them) advances, deleting
//!   segments fully consumed. Offsets inside a segment are not persisted: after a crash
//!   the first segment is replayed from its start, and the database's unique key on the
//!   event id turns the repeats into no-ops.
//! * Each append is one `write(2)` of whole records. A process killed with SIGKILL
//!   therefore leaves every record whose `write` returned in the page cache, which the
//!   kernel writes out on its own; [`Fsync`] decides when the journal also asks the
//!   disk to make them durable against a power loss.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    os::unix::io::AsRawFd,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::Deserialize;

use crate::row::LogRow;

/// A record's frame marker. `0xFE` never occurs in UTF-8, so never in a payload.
pub const MARKER: [u8; 4] = [0xFE, b'd', b'z', b'J'];
/// A record header: marker, length, seq, CRC.
pub const HEADER: usize = 20;
/// Larger records are refused (a sane row is far smaller); on open such a length means
/// a torn or corrupt header.
const MAX_RECORD: u32 = 16 << 20;

/// When the journal asks the disk to make appended records durable (`fdatasync`).
/// The three settings and their names are Redis's `appendfsync`; an append is always
/// one `write(2)` into the page cache when the event is accepted, so a *process* crash
/// (SIGKILL, OOM kill, panic abort) never loses an accepted event whatever the
/// setting: the setting only decides what a *power loss or kernel crash* can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Never: the kernel writes the page cache out when it likes (typically within
    /// 30 s). The cheapest.
    No,
    /// At most once a second, by the writer task, when something was appended since
    /// the last sync: a power loss takes about the last second. The default, as in
    /// Redis.
    #[default]
    Everysec,
    /// After every append, before the event counts as accepted (and the directory when
    /// a segment is created): a power loss takes nothing accepted. Costs one
    /// `fdatasync` per accepted event.
    Always,
}

/// Why the journal could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Another instance (this host's or another process's) holds the journal.
    #[error(
        "the journal {dir} is in use by another storage instance (its LOCK file is held); \
         give each host its own journal_dir"
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// A file operation failed.
    #[error("journal {path}: {what}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },
}

impl JournalError {
    /// A short, bounded name of the cause (for rate-limited logging and metrics).
    pub fn kind(&self) -> String {
        match self {
            JournalError::Locked { .. } => "locked".to_owned(),
            JournalError::Io { what, source, .. } => format!("{what}: {:?}", source.kind()),
        }
    }
}

fn io<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        path: path.to_owned(),
        what,
        source,
    }
}

#[derive(Debug)]
struct Segment {
    /// The sequence number of its first record (its file name).
    seq: u64,
    path: PathBuf,
    /// Bytes of whole records.
    len: u64,
    /// Offset of the first unconsumed record.
    start: u64,
    /// Unconsumed records.
    unread: u64,
}

/// Where a read or an append ended; hand it to [`Journal::commit`] once the rows up to
/// it are in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The segment.
    seq: u64,
    /// Offset just past the last record.
    offset: u64,
    /// Records between the previous commit point and this position.
    pub records: u64,
}

impl Position {
    /// The same place, covering `records` records since the previous commit point.
    pub fn covering(self, records: u64) -> Position {
        Position { records, ..self }
    }
}

/// One segment [`Journal::open`] found damaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment as it was named.
    pub segment: PathBuf,
    /// Where the damaged file was kept (renamed aside); `None` for a torn end, which
    /// is cut off.
    pub kept_as: Option<PathBuf>,
    /// Unreadable byte ranges.
    pub ranges: u64,
    /// Unreadable bytes.
    pub bytes: u64,
    /// Records those ranges held.
    pub records_lost: u64,
    /// Whether `records_lost` is exact (sequence numbers on both sides of every range)
    /// rather than counted by the markers in a range at the journal's end.
    pub exact: bool,
    /// Only a torn end: a write cut short at the end of the last segment.
    pub torn_end: bool,
    /// Valid records recovered from the segment.
    pub records_kept: u64,
}

/// What [`Journal::open`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Records waiting to be replayed.
    pub records: u64,
    /// Damaged segments, one entry each.
    pub damaged: Vec<Damage>,
}

impl Recovery {
    /// Records lost in all damaged segments.
    pub fn records_lost(&self) -> u64 {
        self.damaged.iter().map(|d| d.records_lost).sum()
    }

    /// Unreadable bytes in all damaged segments.
    pub fn bytes_lost(&self) -> u64 {
        self.damaged.iter().map(|d| d.bytes).sum()
    }
}

/// An open, locked journal.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    /// Held for the life of the journal; the `flock` goes with the descriptor on drop.
    _lock: File,
    segments: VecDeque<Segment>,
    /// The last segment, open for appending; `None` until the first append after
    /// opening (segments found on open are never appended to) or after the last
    /// segment was consumed and deleted.
    tail: Option<File>,
    segment_bytes: u64,
    fsync: Fsync,
    /// The sequence number of the next record appended.
    next_seq: u64,
    /// Appended since the last `fdatasync`.
    dirty: bool,
    /// Records not yet read and committed.
    pending: u64,
    /// Bytes on disk.
    bytes: u64,
    /// Records whose payload did not decode (skipped).
    undecodable: u64,
}

/// Appends one framed record.
fn frame(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len.to_le_bytes());
    crc.update(&seq.to_le_bytes());
    crc.update(payload);
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

/// Frames rows from `seq` on; returns how many were framed (a row that does not
/// serialize, which a struct of strings and integers never fails to, is skipped).
fn encode(rows: &[LogRow], seq: u64, out: &mut Vec<u8>) -> u64 {
    let mut n = 0;
    let mut payload = Vec::with_capacity(512);
    for row in rows {
        payload.clear();
        if serde_json::to_writer(&mut payload, row).is_err() {
            continue;
        }
        frame(seq + n, &payload, out);
        n += 1;
    }
    n
}

/// Why a frame at an offset does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bad {
    /// A record cut short: a plausible header (or the start of one) runs past the end.
    Torn,
    /// Anything else.
    Corrupt,
}

/// A verified record inside a buffer.
#[derive(Debug, Clone, Copy)]
struct Rec {
    seq: u64,
    start: usize,
    end: usize,
}

impl Rec {
    fn payload<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        &bytes[self.start + HEADER..self.end]
    }
}

fn parse_at(bytes: &[u8], at: usize) -> Result<Rec, Bad> {
    let rest = &bytes[at..];
    if rest.len() < HEADER {
        let n = rest.len().min(MARKER.len());
        return Err(if rest[..n] == MARKER[..n] {
            Bad::Torn
        } else {
            Bad::Corrupt
        });
    }
    if rest[..4] != MARKER {
        return Err(Bad::Corrupt);
    }
    let len = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if len > MAX_RECORD {
        return Err(Bad::Corrupt);
    }
    let end = HEADER + len as usize;
    if rest.len() < end {
        return Err(Bad::Torn);
    }
    let seq = u64::from_le_bytes(rest[8..16].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes([rest[16], rest[17], rest[18], rest[19]]);
    let mut h = crc32fast::Hasher::new();
    h.update(&rest[4..16]);
    h.update(&rest[HEADER..end]);
    if h.finalize() != crc {
        return Err(Bad::Corrupt);
    }
    Ok(Rec {
        seq,
        start: at,
        end: at + end,
    })
}

fn find_marker(bytes: &[u8], from: usize) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(MARKER.len())
        .position(|w| w == MARKER)
        .map(|i| from + i)
}

fn count_markers(bytes: &[u8]) -> u64 {
    bytes.windows(MARKER.len()).filter(|w| *w == MARKER).count() as u64
}

/// A buffer read as records: the valid ones, and the unreadable ranges between them.
#[derive(Debug, Default)]
struct Scan {
    records: Vec<Rec>,
    /// `(start, end)` byte ranges that hold no verifiable record.
    damaged: Vec<(usize, usize)>,
    /// The last range runs to the end and starts with a record cut short.
    torn_end: bool,
}

/// Reads `bytes` as a WAL reader does: record after record; at a frame that does not
/// verify, scan for the next marker whose length and CRC verify and resume there.
fn scan(bytes: &[u8]) -> Scan {
    let mut s = Scan::default();
    let mut at = 0;
    while at < bytes.len() {
        match parse_at(bytes, at) {
            Ok(r) => {
                s.records.push(r);
                at = r.end;
            }
            Err(bad) => {
                let mut from = at + 1;
                let next = loop {
                    match find_marker(bytes, from) {
                        Some(m) if parse_at(bytes, m).is_ok() => break Some(m),
                        Some(m) => from = m + 1,
                        None => break None,
                    }
                };
                match next {
                    Some(m) => {
                        s.damaged.push((at, m));
                        at = m;
                    }
                    None => {
                        s.damaged.push((at, bytes.len()));
                        s.torn_end = bad == Bad::Torn;
                        break;
                    }
                }
            }
        }
    }
    s
}

fn lock(file: &File) -> bool {
    // SAFETY: flock on a descriptor we own; no memory is passed.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.seg"))
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "cannot sync the directory"))
}

/// A segment found on open, scanned.
struct Found {
    seq: u64,
    path: PathBuf,
    bytes: Vec<u8>,
    scan: Scan,
}

impl Journal {
    /// Opens (creating if needed) and locks the journal in `dir`, reading every
    /// segment: torn ends are cut, damaged segments are kept aside and their valid
    /// records carried over (see the module doc).
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        fsync: Fsync,
    ) -> Result<(Journal, Recovery), JournalError> {
        fs::create_dir_all(dir).map_err(io(dir, "cannot create the directory"))?;
        let lock_path = dir.join("LOCK");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path, "cannot open the lock file"))?;
        if !lock(&lock_file) {
            return Err(JournalError::Locked {
                dir: dir.to_owned(),
            });
        }
        let mut seqs: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir).map_err(io(dir, "cannot list the directory"))? {
            let entry = entry.map_err(io(dir, "cannot list the directory"))?;
            let path = entry.path();
            let seq = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(seq) = seq {
                seqs.push((seq, path));
            }
        }
        seqs.sort();
        let mut found = Vec::with_capacity(seqs.len());
        for (seq, path) in seqs {
            let bytes = fs::read(&path).map_err(io(&path, "cannot read a segment"))?;
            let scan = scan(&bytes);
            found.push(Found {
                seq,
                path,
                bytes,
                scan,
            });
        }
        let mut recovery = Recovery::default();
        let mut segments = VecDeque::new();
        let mut bytes_total = 0;
        let mut next_seq = 1;
        for i in 0..found.len() {
            let next_first = found.get(i + 1).map(|f| f.seq);
            let f = &found[i];
            let last = i + 1 == found.len();
            next_seq = next_seq.max(f.seq);
            if let Some(r) = f.scan.records.last() {
                next_seq = next_seq.max(r.seq + 1);
            }
            let segment = if f.scan.damaged.is_empty() {
                if f.scan.records.is_empty() {
                    // An empty segment (created, never written): nothing to keep.
                    let _ = fs::remove_file(&f.path);
                    continue;
                }
                Some(Segment {
                    seq: f.seq,
                    path: f.path.clone(),
                    len: f.bytes.len() as u64,
                    start: 0,
                    unread: f.scan.records.len() as u64,
                })
            } else {
                let (damage, segment) = Self::repair(dir, f, next_first, last, fsync)?;
                recovery.damaged.push(damage);
                segment
            };
            if let Some(s) = segment {
                recovery.records += s.unread;
                bytes_total += s.len;
                segments.push_back(s);
            }
        }
        let journal = Journal {
            dir: dir.to_owned(),
            _lock: lock_file,
            segments,
            tail: None,
            segment_bytes: segment_bytes.max(4096),
            fsync,
            next_seq,
            dirty: false,
            pending: recovery.records,
            bytes: bytes_total,
            undecodable: 0,
        };
        Ok((journal, recovery))
    }

    /// Deals with a segment that has unreadable ranges: a torn end is cut; any other
    /// damage renames the file aside and writes its valid records to a fresh segment.
    fn repair(
        dir: &Path,
        f: &Found,
        next_first: Option<u64>,
        last: bool,
        fsync: Fsync,
    ) -> Result<(Damage, Option<Segment>), JournalError> {
        let recs = &f.scan.records;
        let mut records_lost = 0u64;
        let mut exact = true;
        let mut bytes = 0u64;
        for &(start, end) in &f.scan.damaged {
            bytes += (end - start) as u64;
            // The records on both sides of the range say how many are missing.
            let before = recs
                .iter()
                .rev()
                .find(|r| r.end <= start)
                .map_or(f.seq.saturating_sub(1), |r| r.seq);
            let after = recs
                .iter()
                .find(|r| r.start >= end)
                .map(|r| r.seq)
                .or(next_first);
            match after {
                Some(after) => records_lost += after.saturating_sub(before + 1),
                None => {
                    exact = false;
                    records_lost += count_markers(&f.bytes[start..end]);
                }
            }
        }
        let only_torn_end = last && f.scan.torn_end && f.scan.damaged.len() == 1;
        let kept = recs.len() as u64;
        if only_torn_end {
            let good = f.scan.damaged[0].0 as u64;
            let file = OpenOptions::new()
                .write(true)
                .open(&f.path)
                .map_err(io(&f.path, "cannot open a segment to cut its torn end"))?;
            file.set_len(good)
                .map_err(io(&f.path, "cannot cut a segment's torn end"))?;
            let damage = Damage {
                segment: f.path.clone(),
                kept_as: None,
                ranges: 1,
                bytes,
                records_lost,
                exact,
                torn_end: true,
                records_kept: kept,
            };
            let segment = (kept > 0).then(|| Segment {
                seq: f.seq,
                path: f.path.clone(),
                len: good,
                start: 0,
                unread: kept,
            });
            if kept == 0 {
                let _ = fs::remove_file(&f.path);
            }
            return Ok((damage, segment));
        }
        // Keep the damaged file as it is, for inspection.
        let name = f
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("segment.seg");
        let mut aside = dir.join(format!("{name}.damaged-{}", now_ms()));
        let mut n = 1;
        while aside.exists() {
            aside = dir.join(format!("{name}.damaged-{}-{n}", now_ms()));
            n += 1;
        }
        fs::rename(&f.path, &aside).map_err(io(&f.path, "cannot rename a damaged segment"))?;
        let damage = Damage {
            segment: f.path.clone(),
            kept_as: Some(aside),
            ranges: f.scan.damaged.len() as u64,
            bytes,
            records_lost,
            exact,
            torn_end: false,
            records_kept: kept,
        };
        let Some(first) = recs.first() else {
            return Ok((damage, None));
        };
        // The valid records, as they were, in a fresh segment named after the first.
        let mut out = Vec::with_capacity(f.bytes.len());
        for r in recs {
            out.extend_from_slice(&f.bytes[r.start..r.end]);
        }
        let path = segment_path(dir, first.seq);
        let tmp = path.with_extension("seg.tmp");
        let written = File::create(&tmp).and_then(|mut t| {
            t.write_all(&out)?;
            t.sync_data()
        });
        written.map_err(io(&tmp, "cannot write a repaired segment"))?;
        fs::rename(&tmp, &path).map_err(io(&tmp, "cannot rename a repaired segment"))?;
        if fsync != Fsync::No {
            sync_dir(dir)?;
        }
        Ok((
            damage,
            Some(Segment {
                seq: first.seq,
                path,
                len: out.len() as u64,
                start: 0,
                unread: kept,
            }),
        ))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records waiting to be replayed.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records skipped because their payload did not decode.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// The fsync policy.
    pub fn fsync(&self) -> Fsync {
        self.fsync
    }

    fn new_segment(&mut self, seq: u64) -> Result<(PathBuf, File), JournalError> {
        let path = segment_path(&self.dir, seq);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path, "cannot create a segment"))?;
        if self.fsync == Fsync::Always {
            sync_dir(&self.dir)?;
        }
        Ok((path, file))
    }

    /// Appends rows at the end, in one write (and, with [`Fsync::Always`], one
    /// `fdatasync`); returns the position after them, covering `rows.len()` records.
    pub fn append(&mut self, rows: &[LogRow]) -> Result<Position, JournalError> {
        let mut buf = Vec::with_capacity(rows.len() * 512);
        let n = encode(rows, self.next_seq, &mut buf);
        // A segment found on open is never appended to (its tail handle is gone): new
        // rows start a new segment after it.
        let roll = match self.segments.back() {
            None => true,
            Some(s) => s.len >= self.segment_bytes || self.tail.is_none(),
        };
        if roll {
            if let Some(t) = self.tail.take()
                && self.fsync != Fsync::No
            {
                let _ = t.sync_data();
            }
            let seq = self.next_seq;
            let (path, file) = self.new_segment(seq)?;
            self.segments.push_back(Segment {
                seq,
                path,
                len: 0,
                start: 0,
                unread: 0,
            });
            self.tail = Some(file);
        }
        let (Some(tail), Some(seg)) = (self.tail.as_mut(), self.segments.back_mut()) else {
            // A tail segment was just ensured above.
            return Err(JournalError::Io {
                path: self.dir.clone(),
                what: "no segment to append to",
                source: std::io::Error::other("no tail segment"),
            });
        };
        let written = tail.write_all(&buf).and_then(|()| {
            if self.fsync == Fsync::Always {
                tail.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // Cut what a short write left, so the segment holds whole records only.
            let _ = tail.set_len(seg.len);
            return Err(JournalError::Io {
                path: seg.path.clone(),
                what: "cannot append",
                source: e,
            });
        }
        self.dirty = self.fsync != Fsync::Always;
        self.next_seq += n;
        seg.len += buf.len() as u64;
        seg.unread += n;
        self.pending += n;
        self.bytes += buf.len() as u64;
        Ok(Position {
            seq: seg.seq,
            offset: seg.len,
            records: n,
        })
    }

    /// Reads up to `max` rows from the oldest unconsumed record, without consuming them.
    pub fn read(&mut self, max: usize) -> Result<(Vec<LogRow>, Option<Position>), JournalError> {
        let mut rows = Vec::new();
        let mut pos = None;
        let mut records_read = 0u64;
        for seg in self.segments.iter() {
            if rows.len() >= max {
                break;
            }
            if seg.start >= seg.len {
                continue;
            }
            let mut file = File::open(&seg.path).map_err(io(&seg.path, "cannot open a segment"))?;
            file.seek(SeekFrom::Start(seg.start))
                .map_err(io(&seg.path, "cannot seek in a segment"))?;
            let mut bytes = Vec::new();
            file.take(seg.len - seg.start)
                .read_to_end(&mut bytes)
                .map_err(io(&seg.path, "cannot read a segment"))?;
            // Segments were verified on open and are written by this instance only;
            // should one be damaged since, the scan still skips to the next good
            // record rather than stopping the replay.
            let s = scan(&bytes);
            for r in &s.records {
                records_read += 1;
                match serde_json::from_slice::<LogRow>(r.payload(&bytes)) {
                    Ok(row) => rows.push(row),
                    Err(_) => self.undecodable += 1,
                }
                pos = Some(Position {
                    seq: seg.seq,
                    offset: seg.start + r.end as u64,
                    records: records_read,
                });
                if rows.len() >= max {
                    break;
                }
            }
        }
        Ok((rows, pos))
    }

    /// Consumes everything up to `pos` (read or appended earlier), deleting segments
    /// fully consumed.
    pub fn commit(&mut self, pos: Position) {
        let mut consumed = pos.records;
        while let Some(seg) = self.segments.front_mut() {
            if seg.seq < pos.seq {
                consumed = consumed.saturating_sub(seg.unread);
                self.pending = self.pending.saturating_sub(seg.unread);
                self.bytes = self.bytes.saturating_sub(seg.len);
                let _ = fs::remove_file(&seg.path);
                self.segments.pop_front();
                if self.segments.is_empty() {
                    self.tail = None;
                }
                continue;
            }
            if seg.seq == pos.seq {
                seg.start = seg.start.max(pos.offset);
                let n = consumed.min(seg.unread);
                seg.unread -= n;
                self.pending = self.pending.saturating_sub(n);
                if seg.start >= seg.len {
                    self.bytes = self.bytes.saturating_sub(seg.len);
                    let _ = fs::remove_file(&seg.path);
                    self.segments.pop_front();
                    if self.segments.is_empty() {
                        self.tail = None;
                    }
                }
            }
            break;
        }
    }

    /// Whether records were appended since the last [`Journal::sync`].
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// A second handle on the last segment, to `fdatasync` it without holding the
    /// journal (the dirty flag is cleared: a failed sync is reported by the caller).
    pub fn sync_handle(&mut self) -> Option<(File, PathBuf)> {
        let (t, seg) = (self.tail.as_ref()?, self.segments.back()?);
        let f = t.try_clone().ok()?;
        self.dirty = false;
        Some((f, seg.path.clone()))
    }

    /// Makes the last segment durable (`fdatasync`).
    pub fn sync(&mut self) -> Result<(), JournalError> {
        if let (Some(t), Some(seg)) = (&self.tail, self.segments.back()) {
            t.sync_data()
                .map_err(io(&seg.path, "cannot sync a segment"))?;
        }
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn row(i: usize) -> LogRow {
        LogRow {
            id: format!("id{i:05}"),
            subject: "cytube.in.lobby.chatMsg".into(),
            room: Some("lobby".into()),
            event: "chatMsg".into(),
            user: Some("alice".into()),
            message: Some(format!("message {i}")),
            media_id: None,
            media_type: None,
            media_title: None,
            media_seconds: None,
            priority: 1,
            tags: vec![],
            raw: "{}".into(),
            server_time_ms: None,
            received_ms: i as i64,
        }
    }

    fn ids(rows: &[LogRow]) -> Vec<String> {
        rows.iter().map(|r| r.id.clone()).collect()
    }

    fn open(dir: &Path) -> (Journal, Recovery) {
        Journal::open(dir, 1 << 20, Fsync::No).unwrap()
    }

    fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(suffix))
            .collect();
        v.sort();
        v
    }

    /// A journal of `n` rows in one segment, appended one per write as the logger
    /// does; returns the segment and each record's byte range.
    fn journal_of(dir: &Path, n: usize) -> (PathBuf, Vec<(usize, usize)>) {
        {
            let (mut j, _) = open(dir);
            for i in 0..n {
                j.append(&[row(i)]).unwrap();
            }
        }
        let seg = files(dir, ".seg").remove(0);
        let bytes = fs::read(&seg).unwrap();
        let ranges = scan(&bytes)
            .records
            .iter()
            .map(|r| (r.start, r.end))
            .collect();
        (seg, ranges)
    }

    fn damage(seg: &Path, f: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = fs::read(seg).unwrap();
        f(&mut bytes);
        fs::write(seg, &bytes).unwrap();
    }

    /// Reopens, reads everything, and checks the recovered ids are `expected` (in
    /// order) and the loss reported is `lost`.
    fn recovered(dir: &Path, expected: &[usize], lost: u64) -> Recovery {
        let (mut j, rec) = open(dir);
        let (rows, _) = j.read(usize::MAX).unwrap();
        let want: Vec<String> = expected.iter().map(|&i| row(i).id).collect();
        // The figure the tests stand for (the test thread is named after the case).
        eprintln!(
            "{}: {} of {N} records recovered, {} reported lost",
            std::thread::current().name().unwrap_or("journal"),
            rows.len(),
            rec.records_lost()
        );
        assert_eq!(ids(&rows), want);
        assert_eq!(rec.records, expected.len() as u64, "{rec:?}");
        assert_eq!(rec.records_lost(), lost, "{rec:?}");
        rec
    }

    const N: usize = 100;

    #[test]
    fn a_flipped_byte_in_the_first_record_loses_that_record_only() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, recs) = journal_of(dir.path(), N);
        damage(&seg, |b| b[recs[0].0 + HEADER + 3] ^= 0x20);
        let rec = recovered(dir.path(), &(1..N).collect::<Vec<_>>(), 1);
        // 99 of 100 recovered; the damaged file is kept aside, not deleted.
        let d = &rec.damaged[0];
        assert!(d.exact && !d.torn_end && d.records_kept == 99, "{d:?}");
        let kept = d.kept_as.clone().unwrap();
        assert!(kept.exists(), "{kept:?}");
        assert_eq!(files(dir.path(), ".damaged").len(), 1);
        // The next open finds a clean journal.
        let (_, again) = open(dir.path());
        assert_eq!(again.records, 99);
        assert!(again.damaged.is_empty());
    }

    #[test]
    fn a_flipped_byte_in_a_middle_record_loses_that_record_only() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, recs) = journal_of(dir.path(), N);
        damage(&seg, |b| b[recs[50].1 - 2] ^= 0x01);
        let want: Vec<usize> = (0..N).filter(|&i| i != 50).collect();
        let rec = recovered(dir.path(), &want, 1);
        assert!(rec.damaged[0].exact);
    }

    #[test]
    fn a_flipped_byte_in_the_last_record_loses_that_record_only() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, recs) = journal_of(dir.path(), N);
        damage(&seg, |b| b[recs[N - 1].0 + HEADER + 1] ^= 0x40);
        let rec = recovered(dir.path(), &(0..N - 1).collect::<Vec<_>>(), 1);
        // Nothing follows it, so the count comes from its marker.
        let d = &rec.damaged[0];
        assert!(!d.exact && !d.torn_end && d.kept_as.is_some(), "{d:?}");
    }

    #[test]
    fn a_corrupt_length_field_loses_that_record_only() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, recs) = journal_of(dir.path(), N);
        // A length that points into the middle of the next record, and one past the
        // end of the file.
        damage(&seg, |b| {
            b[recs[30].0 + 4] = b[recs[30].0 + 4].wrapping_add(7);
            b[recs[70].0 + 6] = 0x7f;
        });
        let want: Vec<usize> = (0..N).filter(|&i| i != 30 && i != 70).collect();
        let rec = recovered(dir.path(), &want, 2);
        assert_eq!(rec.damaged.len(), 1, "one report per segment");
        assert_eq!(rec.damaged[0].ranges, 2);
        assert!(rec.damaged[0].exact);
    }

    #[test]
    fn a_record_truncated_at_the_end_is_cut_as_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, recs) = journal_of(dir.path(), N);
        let cut = recs[N - 1].0 + (recs[N - 1].1 - recs[N - 1].0) / 2;
        damage(&seg, |b| b.truncate(cut));
        let rec = recovered(dir.path(), &(0..N - 1).collect::<Vec<_>>(), 1);
        let d = &rec.damaged[0];
        assert!(d.torn_end && d.kept_as.is_none(), "{d:?}");
        assert_eq!(fs::metadata(&seg).unwrap().len(), recs[N - 1].0 as u64);
        assert!(files(dir.path(), ".damaged").is_empty());
    }

    #[test]
    fn a_record_truncated_in_the_middle_loses_that_record_only() {
        // A segment that lost bytes from the middle (not a torn end): the record that
        // lost them fails its CRC; the reader resynchronises on the next marker.
        let dir = tempfile::tempdir().unwrap();
        let (seg, recs) = journal_of(dir.path(), N);
        damage(&seg, |b| {
            b.drain(recs[40].0 + 30..recs[40].1);
        });
        let want: Vec<usize> = (0..N).filter(|&i| i != 40).collect();
        recovered(dir.path(), &want, 1);
    }

    #[test]
    fn a_zero_filled_page_loses_the_records_it_touches() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, recs) = journal_of(dir.path(), N);
        let page = 4096..8192;
        damage(&seg, |b| b[page.clone()].fill(0));
        let hit: Vec<usize> = (0..N)
            .filter(|&i| recs[i].0 < page.end && recs[i].1 > page.start)
            .collect();
        assert!(hit.len() > 10, "{hit:?}");
        let want: Vec<usize> = (0..N).filter(|i| !hit.contains(i)).collect();
        let rec = recovered(dir.path(), &want, hit.len() as u64);
        assert!(rec.damaged[0].exact);
    }

    #[test]
    fn a_damaged_segment_end_is_counted_by_the_next_segments_name() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut j, _) = Journal::open(dir.path(), 4096, Fsync::No).unwrap();
            for i in 0..N {
                j.append(&[row(i)]).unwrap();
            }
        }
        let segs = files(dir.path(), ".seg");
        assert!(segs.len() > 3);
        let first_of_second = scan(&fs::read(&segs[1]).unwrap()).records[0].seq;
        // Wipe the last 40 bytes of the first segment (the end of its last record).
        damage(&segs[0], |b| {
            let n = b.len();
            b[n - 40..].fill(0xAA);
        });
        let (mut j, rec) = Journal::open(dir.path(), 4096, Fsync::No).unwrap();
        assert_eq!(rec.records_lost(), 1, "{rec:?}");
        assert!(rec.damaged[0].exact);
        let (rows, _) = j.read(usize::MAX).unwrap();
        // Record seqs start at 1: the first segment's last record is row seq - 2.
        let lost = first_of_second as usize - 2;
        let want: Vec<String> = (0..N).filter(|&i| i != lost).map(|i| row(i).id).collect();
        eprintln!(
            "a damaged segment end: {} of {N} records recovered, {} reported lost",
            rows.len(),
            rec.records_lost()
        );
        assert_eq!(ids(&rows), want);
    }

    #[test]
    fn rows_come_back_in_order_and_commits_delete_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, rec) = Journal::open(dir.path(), 4096, Fsync::Everysec).unwrap();
        assert_eq!(rec, Recovery::default());
        let rows: Vec<LogRow> = (0..100).map(row).collect();
        for r in &rows {
            j.append(std::slice::from_ref(r)).unwrap();
        }
        assert!(j.dirty());
        j.sync().unwrap();
        assert!(!j.dirty());
        assert_eq!(j.pending(), 100);
        let segs = fs::read_dir(dir.path()).unwrap().count() - 1;
        assert!(segs > 2, "small segments roll: {segs}");
        let mut got = Vec::new();
        loop {
            let (batch, pos) = j.read(7).unwrap();
            let Some(pos) = pos else { break };
            got.extend(batch);
            j.commit(pos);
        }
        assert_eq!(ids(&got), ids(&rows));
        assert!(j.is_empty());
        assert_eq!(j.bytes(), 0);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only LOCK left"
        );
    }

    #[test]
    fn appended_positions_commit_what_they_cover() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), 4096, Fsync::Always).unwrap();
        let mut last = None;
        for i in 0..60 {
            last = Some(j.append(&[row(i)]).unwrap());
        }
        // The first 40 are committed by the position of the 40th... covering 40.
        let (_, pos40) = j.read(40).unwrap();
        j.commit(pos40.unwrap());
        assert_eq!(j.pending(), 20);
        // …and the rest by the last append's position, covering 20.
        j.commit(last.unwrap().covering(20));
        assert!(j.is_empty());
        // Appending after everything was consumed starts a new segment.
        j.append(&[row(60)]).unwrap();
        let (rows, _) = j.read(10).unwrap();
        assert_eq!(ids(&rows), vec!["id00060"]);
    }

    #[test]
    fn a_reopened_journal_replays_and_appends_after() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut j, _) = open(dir.path());
            j.append(&[row(0), row(1), row(2)]).unwrap();
        }
        let (mut j, rec) = open(dir.path());
        assert_eq!(rec.records, 3);
        j.append(&[row(3)]).unwrap();
        let (rows, _) = j.read(10).unwrap();
        assert_eq!(ids(&rows), vec!["id00000", "id00001", "id00002", "id00003"]);
    }

    #[test]
    fn a_second_instance_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = open(dir.path());
        let err = Journal::open(dir.path(), 1 << 20, Fsync::No).unwrap_err();
        assert!(matches!(err, JournalError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("journal_dir"));
        drop(j);
        open(dir.path());
    }
}
