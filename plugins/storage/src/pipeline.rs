//! The event logger's pipeline: every accepted row is appended to the journal (the
//! write-ahead log) at once, kept in a memory queue, written to the database in
//! batches, and only then consumed from the journal.
//!
//! The FIFO has three parts, oldest first: the batch in flight (being written), the
//! memory queue, and the journal, which holds every row of the other two as well as
//! whatever memory let go of. Invariants:
//!
//! * Acceptance is durability: [`Pipeline::push`] returns only after the row's record
//!   is in the journal (one `write(2)`; with `journal_fsync = "always"` also on disk).
//!   A process killed at any moment after that loses nothing it accepted; the restart
//!   replays the journal and the database's unique key on the event id turns rows
//!   already written into no-ops.
//! * `spilled` ⇔ the journal holds rows that memory no longer does. While spilled, new
//!   rows go to the journal only, and the writer reads the journal, so the order in
//!   which rows were accepted is the order in which they reach the database.
//! * The memory queue holds at most `memory_queue` rows. When the database has been
//!   unreachable for `spill_after`, or memory is full, memory lets go of its copies
//!   (they are in the journal already) and the pipeline is spilled.
//! * A row leaves the journal only when the database committed it (or refused it as
//!   invalid, which sanitized rows never are: then it is counted and logged).
//! * If the journal cannot be written (disk full, I/O error), rows stay in memory up to
//!   `memory_queue` (not durable: a crash then takes them) and beyond it are lost; both
//!   are counted, and the error is logged once and then at most every
//!   [`JOURNAL_ERROR_EVERY`] with the number of failures in between.
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
    journal::{Fsync, Journal, JournalError, Position, Recovery},
    metrics::{Metrics, RateLimited},
    row::LogRow,
};

/// The least time between two log lines about a failing journal; the failures in
/// between are counted, and the next line says how many there were.
pub const JOURNAL_ERROR_EVERY: Duration = Duration::from_secs(10);

/// Batching and fallback settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Rows per batch.
    pub batch_size: usize,
    /// Oldest row's max wait before a batch is written.
    pub flush_interval: Duration,
    /// Memory queue bound.
    pub memory_queue: usize,
    /// Outage length after which memory lets go of its copies of journaled rows.
    pub spill_after: Duration,
    /// Where the journal lives.
    pub journal_dir: PathBuf,
    /// Journal segment size.
    pub segment_bytes: u64,
    /// When the journal is made durable against a power loss.
    pub fsync: Fsync,
    /// Max time of one batch write.
    pub write_timeout: Duration,
    /// How PostgreSQL batches are written.
    pub pg_write: PgWrite,
}

struct Pending {
    row: LogRow,
    at: Instant,
    /// Where the row's record ends in the journal, and the journal's generation then;
    /// `None` when the journal could not take it.
    journaled: Option<(u64, Position)>,
}

struct Queue {
    mem: VecDeque<Pending>,
    journal: Option<Journal>,
    /// Bumped on every (re)open of the journal: positions of an older generation mean
    /// nothing to the new one (which replays everything it holds anyway).
    generation: u64,
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
    /// Rows accepted while the journal could not be written (kept in memory only).
    pub not_journaled: AtomicU64,
    /// Journal records found unreadable on open (damage and torn ends).
    pub journal_records_lost: AtomicU64,
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
    /// Journal write failures: logged once, then at most every [`JOURNAL_ERROR_EVERY`].
    journal_errors: RateLimited,
    /// The journal failed last time it was written (a line says when it works again).
    journal_failing: AtomicBool,
}

/// Asks the writer to flush.
pub struct FlushRequest {
    /// Give up writing to the database at this instant; what is left stays in the
    /// journal.
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
    /// Rows put in the journal (during the flush: rows the journal could not take when
    /// they were accepted).
    pub journaled: u64,
    /// Rows waiting in the journal afterwards.
    pub journal_pending: u64,
}

/// Logs what [`Journal::open`] found wrong: one line per damaged segment (ERROR for
/// damage, WARN for a torn end), and the records lost in the metric.
fn report_recovery(metrics: &Metrics, stats: &Stats, recovery: &Recovery) {
    for d in &recovery.damaged {
        let count = if d.exact {
            format!("{} records lost", d.records_lost)
        } else {
            format!(
                "{} records lost (counted by their frame markers: a record whose marker is gone cannot be counted)",
                d.records_lost
            )
        };
        stats
            .journal_records_lost
            .fetch_add(d.records_lost, Ordering::Relaxed);
        if d.torn_end {
            metrics.journal_records_lost(d.records_lost, "torn");
            metrics.warn(&format!(
                "journal segment {}: a torn end ({} bytes, a write cut short by a crash before its events were accepted) was cut; {count}; {} records before it are replayed",
                d.segment.display(),
                d.bytes,
                d.records_kept
            ));
        } else {
            metrics.journal_records_lost(d.records_lost, "damaged");
            metrics.error(&format!(
                "journal segment {} is damaged: {} unreadable byte ranges ({} bytes), {count}; {} valid records recovered and replayed; the damaged file is kept as {}",
                d.segment.display(),
                d.ranges,
                d.bytes,
                d.records_kept,
                d.kept_as
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |p| p.display().to_string())
            ));
        }
    }
}

impl Pipeline {
    /// Creates the pipeline, opening the journal (whose rows, if any, are replayed
    /// before anything new).
    pub fn new(settings: Settings, metrics: Metrics) -> (Arc<Pipeline>, Result<u64, JournalError>) {
        let stats = Stats::default();
        let opened = Journal::open(
            &settings.journal_dir,
            settings.segment_bytes,
            settings.fsync,
        );
        let (journal, result) = match opened {
            Ok((j, recovery)) => {
                report_recovery(&metrics, &stats, &recovery);
                (Some(j), Ok(recovery.records))
            }
            Err(e) => (None, Err(e)),
        };
        let spilled = journal.as_ref().is_some_and(|j| !j.is_empty());
        let pipeline = Arc::new(Pipeline {
            queue: Mutex::new(Queue {
                mem: VecDeque::new(),
                journal,
                generation: 0,
                released: false,
                spilled,
                outage_since: None,
                flushing: false,
            }),
            wake: Notify::new(),
            settings,
            stats,
            metrics,
            db_ready: AtomicBool::new(false),
            ready_wake: Notify::new(),
            control_wake: Notify::new(),
            lost_logged: AtomicU64::new(0),
            journal_errors: RateLimited::new(JOURNAL_ERROR_EVERY),
            journal_failing: AtomicBool::new(false),
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

    /// Accepts a row: appends it to the journal, then queues it for the database.
    /// Never blocks on the database.
    pub fn push(&self, row: LogRow) {
        let mut q = self.lock();
        let journaled = self.journal_append(&mut q, std::slice::from_ref(&row));
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        if journaled.is_none() {
            self.stats.not_journaled.fetch_add(1, Ordering::Relaxed);
        }
        if q.spilled && journaled.is_some() {
            // The writer reads it from the journal, after what is there already.
            drop(q);
            self.wake.notify_one();
            return;
        }
        if q.mem.len() >= self.settings.memory_queue {
            if journaled.is_some() {
                // Memory is full: let go of the copies of journaled rows; the writer
                // reads the journal from here on. Rows the journal could not take stay
                // in memory (written before the journal's, duplicates being no-ops).
                q.mem.retain(|p| p.journaled.is_none());
                q.spilled = true;
                drop(q);
                self.wake.notify_one();
                return;
            }
            drop(q);
            self.lose(
                1,
                "the memory queue is full and the journal cannot be written",
            );
            return;
        }
        let first = q.mem.is_empty();
        q.mem.push_back(Pending {
            row,
            at: Instant::now(),
            journaled,
        });
        let full = q.mem.len() >= self.settings.batch_size;
        drop(q);
        if first || full {
            self.wake.notify_one();
        }
    }

    /// Appends rows to the journal (opening it again after a hand-over); the position
    /// after them, or `None` if the journal cannot take them (logged, rate-limited).
    fn journal_append(&self, q: &mut Queue, rows: &[LogRow]) -> Option<(u64, Position)> {
        if q.journal.is_none() {
            match Journal::open(
                &self.settings.journal_dir,
                self.settings.segment_bytes,
                self.settings.fsync,
            ) {
                Ok((j, recovery)) => {
                    report_recovery(&self.metrics, &self.stats, &recovery);
                    q.spilled |= !j.is_empty();
                    q.journal = Some(j);
                    q.generation += 1;
                    q.released = false;
                }
                Err(e) => {
                    self.journal_failed(&e);
                    return None;
                }
            }
        }
        let j = q.journal.as_mut()?;
        match j.append(rows) {
            Ok(pos) => {
                self.stats
                    .journaled
                    .fetch_add(rows.len() as u64, Ordering::Relaxed);
                if self.journal_failing.swap(false, Ordering::Relaxed) {
                    let failed = self.journal_errors.take_suppressed();
                    self.metrics.info(&format!(
                        "the journal can be written again ({failed} more failed writes since the last line)"
                    ));
                }
                Some((q.generation, pos))
            }
            Err(e) => {
                self.journal_failed(&e);
                None
            }
        }
    }

    fn journal_failed(&self, e: &JournalError) {
        self.metrics.db_error("journal");
        self.journal_failing.store(true, Ordering::Relaxed);
        if let Some(suppressed) = self.journal_errors.allow(Instant::now()) {
            let also = if suppressed > 0 {
                format!(" ({suppressed} more failed writes since the last line)")
            } else {
                String::new()
            };
            self.metrics.error(&format!(
                "cannot write the journal: {e}{also}; events are kept in memory (not durable) up to memory_queue and counted as lost beyond it; this line repeats at most every {}s",
                JOURNAL_ERROR_EVERY.as_secs()
            ));
        }
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

    /// Makes the journal durable if something was appended since the last sync (the
    /// `everysec` policy's tick); the `fdatasync` runs outside the queue's lock.
    pub fn sync_journal(&self) {
        let file = {
            let mut q = self.lock();
            match q.journal.as_mut() {
                Some(j) if j.dirty() => j.sync_handle(),
                _ => None,
            }
        };
        if let Some((f, path)) = file
            && let Err(e) = f.sync_data()
        {
            self.journal_failed(&JournalError::Io {
                path,
                what: "cannot sync a segment",
                source: e,
            });
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
    /// Where each row's journal record ends (memory batches).
    journaled: Vec<Option<(u64, Position)>>,
}

impl Batch {
    fn from_mem(q: &mut Queue, n: usize) -> Batch {
        let mut b = Batch {
            rows: Vec::with_capacity(n),
            source: Source::Mem,
            accepted: Vec::with_capacity(n),
            journaled: Vec::with_capacity(n),
        };
        for p in q.mem.drain(..n) {
            b.rows.push(p.row);
            b.accepted.push(p.at);
            b.journaled.push(p.journaled);
        }
        b
    }

    /// The journal position that consumes this memory batch's records (those of the
    /// journal's current generation).
    fn commit_point(&self, generation: u64) -> Option<Position> {
        let mut mine = self
            .journaled
            .iter()
            .filter_map(|j| j.filter(|(g, _)| *g == generation).map(|(_, p)| p));
        let count = mine.clone().count() as u64;
        mine.next_back().map(|p| p.covering(count))
    }
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
                // The plugin is gone without a stop: what is left stays in the journal.
                w.flush(Instant::now()).await;
                return;
            }
        };
        let report = w.flush(req.deadline).await;
        if req.release_journal || req.stop {
            let mut q = w.p.lock();
            if let Some(mut j) = q.journal.take()
                && let Err(e) = j.sync()
            {
                drop(q);
                w.p.journal_failed(&e);
                q = w.p.lock();
            }
            q.released = true;
        }
        let _ = req.done.send(report);
        if req.stop {
            return;
        }
    }
}

/// The journal's periodic duties, once a second until the runtime stops: the
/// `everysec` fsync, and the accepted-events counter in the host's metrics.
pub async fn run_ticker(pipeline: Arc<Pipeline>) {
    let mut reported = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let accepted = pipeline.stats.accepted.load(Ordering::Relaxed);
        if accepted > reported {
            pipeline.metrics.accepted(accepted - reported);
            reported = accepted;
        }
        if pipeline.settings.fsync == Fsync::Everysec {
            let p = pipeline.clone();
            let _ = tokio::task::spawn_blocking(move || p.sync_journal()).await;
        }
    }
}

/// Lets memory go of the rows the journal holds (the batch in flight, if it came from
/// memory, and the memory queue); rows the journal could not take when they were
/// accepted are appended now. From then on the writer reads the journal. If the
/// journal still cannot take them, nothing changes.
fn spill(p: &Pipeline, inflight: &mut Option<Batch>, q: &mut Queue) {
    let mut late: Vec<LogRow> = Vec::new();
    if let Some(b) = inflight.as_ref()
        && matches!(b.source, Source::Mem)
    {
        late.extend(
            b.rows
                .iter()
                .zip(&b.journaled)
                .filter(|(_, j)| j.is_none())
                .map(|(r, _)| r.clone()),
        );
    }
    late.extend(
        q.mem
            .iter()
            .filter(|m| m.journaled.is_none())
            .map(|m| m.row.clone()),
    );
    let mem_batch = inflight
        .as_ref()
        .is_some_and(|b| matches!(b.source, Source::Mem));
    if q.mem.is_empty() && !mem_batch {
        return;
    }
    if !late.is_empty() && p.journal_append(q, &late).is_none() {
        return;
    }
    if mem_batch {
        *inflight = None;
    }
    q.mem.clear();
    q.spilled = true;
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
                return Ok(Batch::from_mem(&mut q, n));
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
                        journaled: Vec::new(),
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
            let point = match batch.source {
                Source::Journal(pos) => Some(pos),
                Source::Mem => batch.commit_point(q.generation),
            };
            if let (Some(pos), Some(j)) = (point, q.journal.as_mut())
                && matches!(batch.source, Source::Mem)
            {
                j.commit(pos);
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
                "cannot write the event log: {why}; accepted events stay in the journal (and in memory up to memory_queue) until the database is back"
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
                        // The rest keeps every position: the journal consumes the
                        // whole batch's records once the rest is committed.
                        let rest = Batch {
                            rows: batch.rows[i..].to_vec(),
                            source: Source::Mem,
                            accepted: batch.accepted.get(i..).unwrap_or_default().to_vec(),
                            journaled: batch.journaled.clone(),
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
                Batch::from_mem(&mut q, n)
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
            if let Some(j) = q.journal.as_mut()
                && let Err(e) = j.sync()
            {
                drop(q);
                self.p.journal_failed(&e);
                q = self.p.lock();
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
