//! The append-only local journal: where logged events go when the database cannot take
//! them, and where a restarted host finds them again.
//!
//! A journal is a directory of segment files `<seq>.seg` read in `seq` order, plus a
//! `LOCK` file held with `flock` while an instance owns the journal (so two instances,
//! or two hosts, never interleave their writes). A segment is a sequence of records:
//!
//! ```text
//! u32 LE payload length | u32 LE CRC-32 of the payload | payload (a LogRow as JSON)
//! ```
//!
//! Invariants:
//! * Records are only appended to the last segment; a segment past
//!   `segment_bytes` is closed and a new one started, so consumed data can be deleted
//!   segment by segment.
//! * [`Journal::prepend`] writes a new segment *before* the first one (a batch that was
//!   in flight when the journal took over is older than everything in it), so the
//!   journal is always in the order events were accepted.
//! * Reading never consumes: [`Journal::read`] returns rows and a [`Position`];
//!   only [`Journal::commit`] (after the database committed them) advances, deleting
//!   segments fully consumed. Offsets inside a segment are not persisted: after a crash
//!   the first segment is replayed from its start, and the database's unique key on
//!   the event id turns the repeats into no-ops.
//! * Each append is one `write(2)` of whole records, so a process killed with SIGKILL
//!   leaves whole records in the page cache. A torn record at a segment's end (power
//!   loss) fails its length or CRC check on open and is cut off, with a warning that
//!   says how many bytes were dropped.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    os::unix::io::AsRawFd,
    path::{Path, PathBuf},
};

use crate::row::LogRow;

/// The first segment number; prepends count down from here.
const FIRST_SEQ: u64 = 1 << 40;
/// A record header: length + CRC.
const HEADER: usize = 8;
/// Larger records are refused (a sane row is far smaller); on open such a length means
/// a torn or corrupt header.
const MAX_RECORD: u32 = 64 << 20;

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

fn io<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        path: path.to_owned(),
        what,
        source,
    }
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    /// Bytes of whole records.
    len: u64,
    /// Offset of the first unconsumed record.
    start: u64,
    /// Unconsumed records.
    unread: u64,
}

/// Where a read ended; hand it to [`Journal::commit`] once the rows are in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    seq: u64,
    offset: u64,
    records: u64,
}

/// What [`Journal::open`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Records waiting to be replayed.
    pub records: u64,
    /// Bytes cut off torn or corrupt segment ends.
    pub dropped_bytes: u64,
}

/// An open, locked journal.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    /// Held for the life of the journal; the `flock` goes with the descriptor on drop.
    _lock: File,
    segments: VecDeque<Segment>,
    tail: Option<File>,
    segment_bytes: u64,
    /// Records not yet read and committed.
    pending: u64,
    /// Bytes on disk.
    bytes: u64,
    /// Records whose payload did not decode (skipped).
    undecodable: u64,
}

fn encode(rows: &[LogRow], out: &mut Vec<u8>) {
    for row in rows {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER]);
        // Serializing a struct of strings and integers into a Vec cannot fail.
        if serde_json::to_writer(&mut *out, row).is_err() {
            out.truncate(start);
            continue;
        }
        let payload = &out[start + HEADER..];
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let crc = crc32fast::hash(payload);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Walks the whole records of `bytes`: `(payload, end offset)` each; stops at the first
/// torn or corrupt one.
fn records(bytes: &[u8]) -> impl Iterator<Item = (&[u8], usize)> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let header = bytes.get(at..at + HEADER)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD {
            return None;
        }
        let end = at + HEADER + len as usize;
        let payload = bytes.get(at + HEADER..end)?;
        if crc32fast::hash(payload) != crc {
            return None;
        }
        at = end;
        Some((payload, end))
    })
}

fn lock(file: &File) -> bool {
    // SAFETY: flock on a descriptor we own; no memory is passed.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

impl Journal {
    /// Opens (creating if needed) and locks the journal in `dir`, validating every
    /// segment and cutting torn ends.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(Journal, Recovery), JournalError> {
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
        let mut recovery = Recovery::default();
        let mut segments = VecDeque::new();
        let mut bytes_total = 0;
        for (seq, path) in seqs {
            let bytes = fs::read(&path).map_err(io(&path, "cannot read a segment"))?;
            let (mut count, mut good) = (0u64, 0usize);
            for (_, end) in records(&bytes) {
                count += 1;
                good = end;
            }
            if good < bytes.len() {
                recovery.dropped_bytes += (bytes.len() - good) as u64;
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io(&path, "cannot open a segment to cut its torn end"))?;
                f.set_len(good as u64)
                    .map_err(io(&path, "cannot cut a segment's torn end"))?;
            }
            if count == 0 {
                let _ = fs::remove_file(&path);
                continue;
            }
            recovery.records += count;
            bytes_total += good as u64;
            segments.push_back(Segment {
                seq,
                path,
                len: good as u64,
                start: 0,
                unread: count,
            });
        }
        let journal = Journal {
            dir: dir.to_owned(),
            _lock: lock_file,
            segments,
            tail: None,
            segment_bytes: segment_bytes.max(4096),
            pending: recovery.records,
            bytes: bytes_total,
            undecodable: 0,
        };
        Ok((journal, recovery))
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

    fn new_segment(&mut self, seq: u64) -> Result<(PathBuf, File), JournalError> {
        let path = self.dir.join(format!("{seq:020}.seg"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path, "cannot create a segment"))?;
        Ok((path, file))
    }

    /// Appends rows at the end, in one write.
    pub fn append(&mut self, rows: &[LogRow]) -> Result<(), JournalError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(rows.len() * 512);
        encode(rows, &mut buf);
        // A segment found on open is never appended to (its tail handle is gone): new
        // rows start a new segment after it.
        let roll = match self.segments.back() {
            None => true,
            Some(s) => s.len >= self.segment_bytes || self.tail.is_none(),
        };
        if roll {
            if let Some(t) = self.tail.take() {
                let _ = t.sync_data();
            }
            let seq = self.segments.back().map_or(FIRST_SEQ, |s| s.seq + 1);
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
            return Ok(());
        };
        if let Err(e) = tail.write_all(&buf) {
            // Cut what a short write left, so the segment holds whole records only.
            let _ = tail.set_len(seg.len);
            return Err(JournalError::Io {
                path: seg.path.clone(),
                what: "cannot append",
                source: e,
            });
        }
        seg.len += buf.len() as u64;
        seg.unread += rows.len() as u64;
        self.pending += rows.len() as u64;
        self.bytes += buf.len() as u64;
        Ok(())
    }

    /// Writes rows in a new segment before all others (they are older than anything in
    /// the journal).
    pub fn prepend(&mut self, rows: &[LogRow]) -> Result<(), JournalError> {
        if rows.is_empty() {
            return Ok(());
        }
        let Some(first) = self.segments.front().map(|s| s.seq) else {
            return self.append(rows);
        };
        let seq = first - 1;
        let mut buf = Vec::with_capacity(rows.len() * 512);
        encode(rows, &mut buf);
        let (path, mut file) = self.new_segment(seq)?;
        let written = file.write_all(&buf).and_then(|()| file.sync_data());
        if let Err(e) = written {
            let _ = fs::remove_file(&path);
            return Err(JournalError::Io {
                path,
                what: "cannot write a prepended segment",
                source: e,
            });
        }
        self.segments.push_front(Segment {
            seq,
            path,
            len: buf.len() as u64,
            start: 0,
            unread: rows.len() as u64,
        });
        self.pending += rows.len() as u64;
        self.bytes += buf.len() as u64;
        Ok(())
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
            for (payload, end) in records(&bytes) {
                records_read += 1;
                match serde_json::from_slice::<LogRow>(payload) {
                    Ok(row) => rows.push(row),
                    Err(_) => self.undecodable += 1,
                }
                pos = Some(Position {
                    seq: seg.seq,
                    offset: seg.start + end as u64,
                    records: records_read,
                });
                if rows.len() >= max {
                    break;
                }
            }
        }
        Ok((rows, pos))
    }

    /// Consumes everything up to `pos` (read earlier), deleting segments fully consumed.
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
                seg.start = pos.offset;
                seg.unread = seg.unread.saturating_sub(consumed);
                self.pending = self.pending.saturating_sub(consumed);
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

    /// Flushes the last segment to disk.
    pub fn sync(&mut self) {
        if let Some(t) = &self.tail {
            let _ = t.sync_data();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: usize) -> LogRow {
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

    #[test]
    fn rows_come_back_in_order_and_commits_delete_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, rec) = Journal::open(dir.path(), 4096).unwrap();
        assert_eq!(rec, Recovery::default());
        let rows: Vec<LogRow> = (0..100).map(row).collect();
        for r in &rows {
            j.append(std::slice::from_ref(r)).unwrap();
        }
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
    fn reading_does_not_consume_and_prepend_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), 1 << 20).unwrap();
        j.append(&[row(2), row(3)]).unwrap();
        let (first, _) = j.read(10).unwrap();
        assert_eq!(ids(&first), vec!["id00002", "id00003"]);
        j.prepend(&[row(0), row(1)]).unwrap();
        j.append(&[row(4)]).unwrap();
        let (all, _) = j.read(10).unwrap();
        assert_eq!(
            ids(&all),
            (0..5).map(|i| format!("id{i:05}")).collect::<Vec<_>>()
        );
        let (part, pos3) = j.read(3).unwrap();
        assert_eq!(part.len(), 3);
        j.commit(pos3.unwrap());
        assert_eq!(j.pending(), 2);
        let (rest, _) = j.read(10).unwrap();
        assert_eq!(ids(&rest), vec!["id00003", "id00004"]);
    }

    #[test]
    fn a_reopened_journal_replays_and_cuts_a_torn_end() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut j, _) = Journal::open(dir.path(), 1 << 20).unwrap();
            j.append(&[row(0), row(1), row(2)]).unwrap();
        }
        // A torn record: a header promising more bytes than follow.
        let seg = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        let good = fs::metadata(&seg).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{']).unwrap();
        drop(f);
        let (mut j, rec) = Journal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(rec.records, 3);
        assert_eq!(rec.dropped_bytes, 9);
        assert_eq!(fs::metadata(&seg).unwrap().len(), good);
        let (rows, _) = j.read(10).unwrap();
        assert_eq!(ids(&rows), vec!["id00000", "id00001", "id00002"]);
        // New rows go after the replayed ones.
        j.append(&[row(3)]).unwrap();
        let (rows, _) = j.read(10).unwrap();
        assert_eq!(rows.len(), 4);
    }

    #[test]
    fn a_corrupt_record_stops_the_segment_there() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut j, _) = Journal::open(dir.path(), 1 << 20).unwrap();
            j.append(&[row(0), row(1)]).unwrap();
        }
        let seg = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        let mut bytes = fs::read(&seg).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff;
        fs::write(&seg, &bytes).unwrap();
        let (_, rec) = Journal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(rec.records, 1);
        assert!(rec.dropped_bytes > 0);
    }

    #[test]
    fn a_second_instance_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path(), 1 << 20).unwrap();
        let err = Journal::open(dir.path(), 1 << 20).unwrap_err();
        assert!(matches!(err, JournalError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("journal_dir"));
        drop(j);
        Journal::open(dir.path(), 1 << 20).unwrap();
    }
}
