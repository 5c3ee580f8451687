//! The event logger's pipeline: a FIFO of accepted rows that is written to the database
//! in batches, and that falls back to the journal while the database cannot take them.
//!
//! The FIFO has three parts, oldest first: the batch in flight (being written), the
//! memory queue, and the journal. Invariants:
//!
//! * `spilled` ⇔ the journal holds rows that are not in the database yet. While spilled,
//!   new rows are appended to the journal, never to memory, so the order in which rows
//!   were accepted is the order in which they reach the database.
//! * The memory queue holds at most `memory_queue` rows. The writer moves it to the
//!   journal when the database has been unreachable for `spill_after`, and the producer
//!   does when it is full; a batch in flight at that moment is prepended to the journal
//!   if its write then fails.
//! * A row leaves the FIFO only when the database committed it (or it was refused as
//!   invalid, which sanitized rows never are: then it is counted and logged) — or when
//!   neither memory nor the journal can hold it: then it is counted in `lost` and an
//!   ERROR says how many.
//!
//! The producer ([`Pipeline::push`]) runs on the plugin's worker thread and never waits
//! for the database; the writer ([`run_writer`]) is a task on the plugin's runtime.

use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{Notify, oneshot};

use crate::{
    db::{Db, PgWrite, is_transient},
    journal::{Journal, JournalError, Position},
    metrics::Metrics,
    row::LogRow,
};

/// Batching and fallback settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Rows per batch.
    pub batch_size: usize,
    /// Oldest row's max wait before a batch is written.
    pub flush_interval: Duration,
    /// Memory queue bound.
    pub memory_queue: usize,
    /// Outage length after which the memory queue spills.
    pub spill_after: Duration,
    /// Where the journal lives.
    pub journal_dir: PathBuf,
    /// Journal segment size.
    pub segment_bytes: u64,
    /// Max time of one batch write.
    pub write_timeout: Duration,
    /// How PostgreSQL batches are written.
    pub pg_write: PgWrite,
}

struct Pending {
    row: LogRow,
    at: Instant,
}

struct Queue {
    mem: VecDeque<Pending>,
    journal: Option<Journal>,
    /// The journal was handed to another instance (hot swap); reopen it when needed.
    released: bool,
    spilled: bool,
    outage_since: Option<Instant>,
    /// A flush or stop is asking for everything to be written now.
    flushing: bool,
}

/// Counters shared with tests and benches (the host's metrics get the same figures).
#[derive(Debug, Default)]
pub struct Stats {
    /// Rows accepted by [`Pipeline::push`].
    pub accepted: AtomicU64,
    /// Rows the database took (new rows).
    pub written: AtomicU64,
    /// Rows the database already had (a replay).
    pub duplicates: AtomicU64,
    /// Rows lost because neither memory nor the journal could hold them.
    pub lost: AtomicU64,
    /// Rows refused by the database as invalid.
    pub rejected: AtomicU64,
    /// Rows put in the journal.
    pub journaled: AtomicU64,
    /// Failed batch writes.
    pub db_errors: AtomicU64,
    /// Accepted → committed latency of every row that went straight from memory to
    /// the database.
    pub latency: LatencyHistogram,
}

/// A lock-free histogram of latencies: buckets of 1/8 of a power of two microseconds
/// (12 % wide), from 1 µs to about 70 minutes.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: Vec<AtomicU64>,
}

const SUB_BUCKETS: u32 = 8;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: (0..32 * SUB_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl LatencyHistogram {
    fn index(micros: u64) -> usize {
        let v = micros.max(1);
        let exp = 63 - v.leading_zeros();
        let frac = if exp >= 3 {
            (v >> (exp - 3)) & 7
        } else {
            (v << (3 - exp)) & 7
        };
        ((exp * SUB_BUCKETS) as usize + frac as usize).min(32 * SUB_BUCKETS as usize - 1)
    }

    fn upper_micros(index: usize) -> u64 {
        let exp = index as u32 / SUB_BUCKETS;
        let frac = index as u64 % u64::from(SUB_BUCKETS);
        ((8 + frac + 1) << exp) >> 3
    }

    /// Records one latency.
    pub fn record(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buckets[Self::index(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// Number of recorded latencies.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The latency below which a fraction `q` (0–1) of the recorded ones fall (the
    /// upper edge of its bucket); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(Duration::from_micros(Self::upper_micros(i)));
            }
        }
        None
    }

    /// Forgets everything recorded.
    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
    }
}

/// The shared half of the pipeline.
pub struct Pipeline {
    queue: Mutex<Queue>,
    wake: Notify,
    settings: Settings,
    /// Counters.
    pub stats: Stats,
    metrics: Metrics,
    /// Whether the schema is in place (writes wait for it).
    pub db_ready: AtomicBool,
    /// Wakes the writer when the database becomes ready.
    pub ready_wake: Notify,
    /// Wakes the writer when a flush request was sent.
    pub control_wake: Notify,
    lost_logged: AtomicU64,
}

/// Asks the writer to flush.
pub struct FlushRequest {
    /// Give up writing to the database at this instant; what is left goes to the journal.
    pub deadline: Instant,
    /// Close the journal afterwards (another instance takes it over).
    pub release_journal: bool,
    /// Exit the writer afterwards.
    pub stop: bool,
    /// Told when done.
    pub done: oneshot::Sender<FlushReport>,
}

/// What a flush did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlushReport {
    /// Rows written to the database during the flush.
    pub written: u64,
    /// Rows put in the journal.
    pub journaled: u64,
    /// Rows waiting in the journal afterwards.
    pub journal_pending: u64,
}

impl Pipeline {
    /// Creates the pipeline, opening the journal (whose rows, if any, are replayed
    /// before anything new).
    pub fn new(settings: Settings, metrics: Metrics) -> (Arc<Pipeline>, Result<u64, JournalError>) {
        let opened = Journal::open(&settings.journal_dir, settings.segment_bytes);
        let (journal, result) = match opened {
            Ok((j, recovery)) => {
                if recovery.dropped_bytes > 0 {
                    metrics.warn(&format!(
                        "the journal had a torn end: {} bytes cut (a crash during a write); the records before it are replayed",
                        recovery.dropped_bytes
                    ));
                }
                (Some(j), Ok(recovery.records))
            }
            Err(e) => (None, Err(e)),
        };
        let spilled = journal.as_ref().is_some_and(|j| !j.is_empty());
        let pipeline = Arc::new(Pipeline {
            queue: Mutex::new(Queue {
                mem: VecDeque::new(),
                journal,
                released: false,
                spilled,
                outage_since: None,
                flushing: false,
            }),
            wake: Notify::new(),
            settings,
            stats: Stats::default(),
            metrics,
            db_ready: AtomicBool::new(false),
            ready_wake: Notify::new(),
            control_wake: Notify::new(),
            lost_logged: AtomicU64::new(0),
        });
        (pipeline, result)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // No code that can panic runs under this lock except journal I/O, which
        // returns errors; recover the guard rather than propagate a poison.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Rows in memory.
    pub fn mem_len(&self) -> usize {
        self.lock().mem.len()
    }

    /// Rows waiting in the journal.
    pub fn journal_pending(&self) -> u64 {
        self.lock().journal.as_ref().map_or(0, Journal::pending)
    }

    /// Accepts a row. Never blocks on the database.
    pub fn push(&self, row: LogRow) {
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let mut q = self.lock();
        // If the journal fails, the row stays in memory when there is room (it may
        // then reach the database before older journaled rows; better than losing it).
        if q.spilled && self.journal_write(&mut q, std::slice::from_ref(&row), false) {
            return;
        }
        if q.mem.len() >= self.settings.memory_queue {
            // Full: move the memory queue to the journal, then this row after it.
            let rows: Vec<LogRow> = q.mem.iter().map(|p| p.row.clone()).collect();
            if !q.spilled && self.journal_write(&mut q, &rows, false) {
                q.mem.clear();
                q.spilled = true;
                if self.journal_write(&mut q, std::slice::from_ref(&row), false) {
                    drop(q);
                    self.wake.notify_one();
                    return;
                }
            }
            if q.mem.len() >= self.settings.memory_queue {
                drop(q);
                self.lose(
                    1,
                    "the memory queue is full and the journal cannot be written",
                );
                return;
            }
        }
        let first = q.mem.is_empty();
        q.mem.push_back(Pending {
            row,
            at: Instant::now(),
        });
        let full = q.mem.len() >= self.settings.batch_size;
        drop(q);
        if first || full {
            self.wake.notify_one();
        }
    }

    /// Writes rows to the journal (opening it again after a hand-over); `false` if it
    /// cannot.
    fn journal_write(&self, q: &mut Queue, rows: &[LogRow], prepend: bool) -> bool {
        if rows.is_empty() {
            return true;
        }
        if q.journal.is_none() {
            match Journal::open(&self.settings.journal_dir, self.settings.segment_bytes) {
                Ok((j, _)) => {
                    q.spilled |= !j.is_empty();
                    q.journal = Some(j);
                    q.released = false;
                }
                Err(e) => {
                    self.journal_failed(&e);
                    return false;
                }
            }
        }
        let Some(j) = q.journal.as_mut() else {
            return false;
        };
        let r = if prepend {
            j.prepend(rows)
        } else {
            j.append(rows)
        };
        match r {
            Ok(()) => {
                self.stats
                    .journaled
                    .fetch_add(rows.len() as u64, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.journal_failed(&e);
                false
            }
        }
    }

    fn journal_failed(&self, e: &JournalError) {
        self.metrics.db_error("journal");
        self.metrics.error(&format!(
            "cannot write the journal: {e}; events are kept in memory up to memory_queue and counted as lost beyond it"
        ));
    }

    fn lose(&self, n: u64, why: &str) {
        let total = self.stats.lost.fetch_add(n, Ordering::Relaxed) + n;
        self.metrics.lost(n);
        // One ERROR per power of two lost, so a long failure cannot flood the log,
        // each with the exact running count.
        let logged = self.lost_logged.load(Ordering::Relaxed);
        if total >= logged.saturating_mul(2).max(1) {
            self.lost_logged.store(total, Ordering::Relaxed);
            self.metrics.error(&format!(
                "{total} events lost so far ({why}); see daz_plugin_storage_events_lost_total"
            ));
        }
    }
}

enum Source {
    Mem,
    Journal(Position),
}

struct Batch {
    rows: Vec<LogRow>,
    source: Source,
    /// When each row was accepted (memory batches; empty for journal batches, whose
    /// acceptance times did not survive the journal).
    accepted: Vec<Instant>,
}

/// The writer task: batches, writes, retries, spills; answers flush requests.
///
/// A batch taken from the queue is never dropped half-way: the task only looks at
/// `control` between batches and while idle, so a flush cannot cancel a write.
pub async fn run_writer(
    pipeline: Arc<Pipeline>,
    db: Db,
    mut control: tokio::sync::mpsc::UnboundedReceiver<FlushRequest>,
) {
    let mut w = Writer {
        p: pipeline,
        db,
        inflight: None,
        backoff: Duration::from_millis(50),
        write_time: Duration::ZERO,
        replay: None,
    };
    loop {
        let req = match control.try_recv() {
            Ok(req) => req,
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                w.step().await;
                continue;
            }
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                // The plugin is gone without a stop: put what is left in the journal.
                w.flush(Instant::now()).await;
                return;
            }
        };
        let report = w.flush(req.deadline).await;
        if req.release_journal || req.stop {
            let mut q = w.p.lock();
            if let Some(mut j) = q.journal.take() {
                j.sync();
            }
            q.released = true;
        }
        let _ = req.done.send(report);
        if req.stop {
            return;
        }
    }
}

/// Moves the batch in flight (if it came from memory) and the memory queue into the
/// journal, oldest first.
fn spill(p: &Pipeline, inflight: &mut Option<Batch>, q: &mut Queue) {
    if let Some(b) = inflight.as_ref()
        && matches!(b.source, Source::Mem)
    {
        // Older than anything in the journal: prepended if the journal has rows.
        let prepend = q.spilled;
        if p.journal_write(q, &b.rows, prepend) {
            *inflight = None;
            q.spilled = true;
        } else {
            return;
        }
    }
    if q.mem.is_empty() {
        return;
    }
    // Memory rows are younger than the batch in flight; while spilled they can only be
    // rows a failing journal could not take, and they go after what it holds.
    let rows: Vec<LogRow> = q.mem.iter().map(|r| r.row.clone()).collect();
    if p.journal_write(q, &rows, false) {
        q.mem.clear();
        q.spilled = true;
    }
}

struct Writer {
    p: Arc<Pipeline>,
    db: Db,
    inflight: Option<Batch>,
    backoff: Duration,
    /// Smoothed time of a batch write: an age-triggered batch starts that much before
    /// its oldest row reaches `flush_interval`, so it is *committed* within it.
    write_time: Duration,
    /// The journal being written to the database, for progress lines.
    replay: Option<ReplayProgress>,
}

/// Progress of writing the journal to the database (after an outage or a restart): a
/// line every [`ReplayProgress::EVERY`] while it lasts, and one when it is done.
#[derive(Debug)]
struct ReplayProgress {
    started: Instant,
    last_line: Instant,
    written: u64,
}

impl ReplayProgress {
    const EVERY: Duration = Duration::from_secs(5);

    fn new(now: Instant) -> ReplayProgress {
        ReplayProgress {
            started: now,
            last_line: now,
            written: 0,
        }
    }

    /// Records `n` journal rows committed with `pending` still in the journal; returns
    /// the line to log, if one is due, and whether the replay is over.
    fn committed(&mut self, n: u64, pending: u64, now: Instant) -> (Option<String>, bool) {
        self.written += n;
        let secs = now.duration_since(self.started).as_secs_f64();
        if pending == 0 {
            let line = format!(
                "journal written to the database: {} events in {secs:.1} s",
                self.written
            );
            return (Some(line), true);
        }
        if now.duration_since(self.last_line) < Self::EVERY {
            return (None, false);
        }
        self.last_line = now;
        let total = self.written + pending;
        let line = format!(
            "writing the journal to the database: {}/{total} events ({:.0} %), {secs:.0} s so far",
            self.written,
            self.written as f64 * 100.0 / total as f64
        );
        (Some(line), false)
    }
}

impl Writer {
    /// Takes the next batch, or the time to wait for one.
    fn next_batch(&mut self) -> Result<Batch, Option<Duration>> {
        if let Some(b) = self.inflight.take() {
            return Ok(b);
        }
        let s = &self.p.settings;
        let mut q = self.p.lock();
        // Never earlier than half the interval, so batches stay batches.
        let due = s
            .flush_interval
            .saturating_sub(self.write_time)
            .max(s.flush_interval / 2);
        if let Some(oldest) = q.mem.front().map(|p| p.at) {
            let age = oldest.elapsed();
            if q.flushing || q.mem.len() >= s.batch_size || age >= due {
                let n = q.mem.len().min(s.batch_size);
                let (rows, accepted) = q.mem.drain(..n).map(|p| (p.row, p.at)).unzip();
                return Ok(Batch {
                    rows,
                    source: Source::Mem,
                    accepted,
                });
            }
            return Err(Some(due - age));
        }
        if q.spilled
            && let Some(j) = q.journal.as_mut()
        {
            match j.read(s.batch_size) {
                Ok((rows, Some(pos))) => {
                    return Ok(Batch {
                        rows,
                        source: Source::Journal(pos),
                        accepted: Vec::new(),
                    });
                }
                Ok((_, None)) => {
                    q.spilled = false;
                }
                Err(e) => {
                    drop(q);
                    self.p.journal_failed(&e);
                    return Err(Some(Duration::from_secs(1)));
                }
            }
        }
        Err(None)
    }

    /// Sleeps for `wait`, or less if a flush is asked for (or, with `on_data`, rows
    /// arrive or the database becomes ready).
    async fn idle(&self, wait: Duration, on_data: bool) {
        if on_data {
            tokio::select! {
                () = self.p.control_wake.notified() => {}
                () = self.p.wake.notified() => {}
                () = self.p.ready_wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        } else {
            tokio::select! {
                () = self.p.control_wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One round: wait for work, write one batch.
    async fn step(&mut self) {
        if !self.p.db_ready.load(Ordering::Acquire) {
            // No schema yet: an outage as far as the queue is concerned.
            self.note_outage();
            tokio::select! {
                () = self.p.ready_wake.notified() => {}
                () = self.p.control_wake.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            return;
        }
        match self.next_batch() {
            Ok(batch) => self.write(batch).await,
            Err(wait) => {
                self.idle(wait.unwrap_or(Duration::from_secs(1)), true)
                    .await
            }
        }
    }

    fn note_outage(&mut self) {
        let p = self.p.clone();
        let mut q = p.lock();
        let since = *q.outage_since.get_or_insert_with(Instant::now);
        let due =
            since.elapsed() >= p.settings.spill_after || q.mem.len() >= p.settings.memory_queue;
        if due {
            spill(&p, &mut self.inflight, &mut q);
        }
    }

    async fn write(&mut self, batch: Batch) {
        let started = Instant::now();
        let timeout = self.p.settings.write_timeout;
        let result = tokio::time::timeout(
            timeout,
            self.db.write_rows(
                &batch.rows,
                self.p.settings.pg_write,
                matches!(batch.source, Source::Mem),
            ),
        )
        .await;
        match result {
            Ok(Ok(inserted)) => self.committed(&batch, inserted, started),
            Ok(Err(e)) if !is_transient(&e) => {
                self.p.stats.db_errors.fetch_add(1, Ordering::Relaxed);
                self.p.metrics.db_error("write");
                self.isolate(batch, &e).await;
            }
            Ok(Err(e)) => self.failed(batch, &e.to_string()).await,
            Err(_) => {
                self.failed(batch, &format!("the write took longer than {timeout:?}"))
                    .await;
            }
        }
    }

    fn committed(&mut self, batch: &Batch, inserted: u64, started: Instant) {
        let n = batch.rows.len() as u64;
        let dup = n.saturating_sub(inserted);
        self.p.stats.written.fetch_add(inserted, Ordering::Relaxed);
        self.p.stats.duplicates.fetch_add(dup, Ordering::Relaxed);
        self.backoff = Duration::from_millis(50);
        self.write_time = (self.write_time * 7 + started.elapsed()) / 8;
        let (mem, pending) = {
            let mut q = self.p.lock();
            if q.outage_since.take().is_some() {
                self.p
                    .metrics
                    .info("the database is reachable again; writing what queued up");
            }
            if let Source::Journal(pos) = batch.source
                && let Some(j) = q.journal.as_mut()
            {
                j.commit(pos);
                let left = j.pending();
                if j.is_empty() {
                    q.spilled = false;
                }
                let now = Instant::now();
                let progress = self.replay.get_or_insert_with(|| ReplayProgress::new(now));
                let (line, done) = progress.committed(n, left, now);
                if let Some(line) = line {
                    self.p.metrics.info(&line);
                }
                if done {
                    self.replay = None;
                }
            }
            let pending = q
                .journal
                .as_ref()
                .map_or((0, 0), |j| (j.pending(), j.bytes()));
            (q.mem.len(), pending)
        };
        for at in &batch.accepted {
            self.p.stats.latency.record(at.elapsed());
        }
        let m = &self.p.metrics;
        m.batch(
            n,
            inserted,
            dup,
            started.elapsed(),
            batch.accepted.first().map(Instant::elapsed),
        );
        m.queue(mem, pending.0, pending.1);
    }

    async fn failed(&mut self, batch: Batch, why: &str) {
        self.p.stats.db_errors.fetch_add(1, Ordering::Relaxed);
        self.p.metrics.db_error("unreachable");
        let first = {
            let q = self.p.lock();
            q.outage_since.is_none()
        };
        if first {
            self.p.metrics.warn(&format!(
                "cannot write the event log: {why}; events queue in memory and then in the journal until the database is back"
            ));
        }
        if matches!(batch.source, Source::Mem) {
            self.inflight = Some(batch);
        }
        // A journal batch needs nothing: reading did not consume it.
        self.note_outage();
        let mem = self.p.lock().mem.len();
        let pending = self
            .p
            .lock()
            .journal
            .as_ref()
            .map_or((0, 0), |j| (j.pending(), j.bytes()));
        self.p.metrics.queue(
            mem + self.inflight.as_ref().map_or(0, |b| b.rows.len()),
            pending.0,
            pending.1,
        );
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(2));
        self.idle(wait, false).await;
    }

    /// A batch the database refused for its content: write rows one by one, so only
    /// the offending rows are rejected.
    async fn isolate(&mut self, batch: Batch, e: &sqlx::Error) {
        self.p.metrics.warn(&format!(
            "the database refused a batch of {} events: {e}; writing them one by one to find the offending rows",
            batch.rows.len()
        ));
        let started = Instant::now();
        let mut inserted = 0;
        for (i, row) in batch.rows.iter().enumerate() {
            match self
                .db
                .write_rows(std::slice::from_ref(row), self.p.settings.pg_write, false)
                .await
            {
                Ok(n) => inserted += n,
                Err(e) if is_transient(&e) => {
                    // The database went away meanwhile: the rest is an ordinary outage.
                    if matches!(batch.source, Source::Mem) {
                        let rest = Batch {
                            rows: batch.rows[i..].to_vec(),
                            source: Source::Mem,
                            accepted: batch.accepted.get(i..).unwrap_or_default().to_vec(),
                        };
                        self.failed(rest, &e.to_string()).await;
                    } else {
                        self.failed(batch, &e.to_string()).await;
                    }
                    return;
                }
                Err(e) => {
                    self.p.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    self.p.metrics.rejected();
                    self.p.metrics.error(&format!(
                        "the database refused event {} ({}): {e}; it is not logged",
                        row.id, row.subject
                    ));
                }
            }
        }
        self.committed(&batch, inserted, started);
    }

    /// Writes memory to the database until `deadline`, then puts what is left in the
    /// journal.
    async fn flush(&mut self, deadline: Instant) -> FlushReport {
        let before_written = self.p.stats.written.load(Ordering::Relaxed)
            + self.p.stats.duplicates.load(Ordering::Relaxed);
        let before_journaled = self.p.stats.journaled.load(Ordering::Relaxed);
        self.p.lock().flushing = true;
        loop {
            let healthy = {
                let q = self.p.lock();
                q.outage_since.is_none() && !q.spilled
            } && self.p.db_ready.load(Ordering::Acquire);
            if !healthy || Instant::now() >= deadline {
                break;
            }
            let batch = if let Some(b) = self.inflight.take() {
                b
            } else {
                let mut q = self.p.lock();
                if q.mem.is_empty() {
                    break;
                }
                let n = q.mem.len().min(self.p.settings.batch_size);
                let (rows, accepted) = q.mem.drain(..n).map(|p| (p.row, p.at)).unzip();
                Batch {
                    rows,
                    source: Source::Mem,
                    accepted,
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(
                left,
                self.db
                    .write_rows(&batch.rows, self.p.settings.pg_write, true),
            )
            .await
            {
                Ok(Ok(inserted)) => self.committed(&batch, inserted, Instant::now()),
                Ok(Err(e)) if !is_transient(&e) => self.isolate(batch, &e).await,
                _ => {
                    self.inflight = Some(batch);
                    let mut q = self.p.lock();
                    q.outage_since.get_or_insert_with(Instant::now);
                    break;
                }
            }
        }
        let p = self.p.clone();
        let pending = {
            let mut q = p.lock();
            q.flushing = false;
            spill(&p, &mut self.inflight, &mut q);
            if let Some(b) = self.inflight.take() {
                // The journal could not take it: it is lost with the plugin.
                drop(q);
                self.p.lose(
                    b.rows.len() as u64,
                    "the journal cannot be written at shutdown",
                );
                q = self.p.lock();
            }
            let left = q.mem.len() as u64;
            if left > 0 {
                q.mem.clear();
                drop(q);
                self.p
                    .lose(left, "the journal cannot be written at shutdown");
                q = self.p.lock();
            }
            if let Some(j) = q.journal.as_mut() {
                j.sync();
            }
            q.journal.as_ref().map_or(0, Journal::pending)
        };
        let after_written = self.p.stats.written.load(Ordering::Relaxed)
            + self.p.stats.duplicates.load(Ordering::Relaxed);
        FlushReport {
            written: after_written - before_written,
            journaled: self.p.stats.journaled.load(Ordering::Relaxed) - before_journaled,
            journal_pending: pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_replay_reports_progress_and_its_end() {
        let t0 = Instant::now();
        let mut p = ReplayProgress::new(t0);
        // Within the first interval: nothing to say yet.
        assert_eq!(
            p.committed(100, 900, t0 + Duration::from_secs(1)),
            (None, false)
        );
        let (line, done) = p.committed(400, 500, t0 + ReplayProgress::EVERY);
        assert!(!done);
        assert_eq!(
            line.as_deref(),
            Some("writing the journal to the database: 500/1000 events (50 %), 5 s so far")
        );
        assert_eq!(
            p.committed(100, 400, t0 + Duration::from_secs(6)),
            (None, false)
        );
        let (line, done) = p.committed(400, 0, t0 + Duration::from_secs(7));
        assert!(done);
        assert_eq!(
            line.as_deref(),
            Some("journal written to the database: 1000 events in 7.0 s")
        );
    }

    #[test]
    fn latency_quantiles_are_within_a_bucket() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5).unwrap().as_secs_f64() * 1000.0;
        let p99 = h.quantile(0.99).unwrap().as_secs_f64() * 1000.0;
        assert!((50.0..=50.0 * 1.13).contains(&p50), "{p50}");
        assert!((99.0..=99.0 * 1.13).contains(&p99), "{p99}");
        assert_eq!(h.count(), 100);
        h.reset();
        assert_eq!(h.count(), 0);
    }
}
