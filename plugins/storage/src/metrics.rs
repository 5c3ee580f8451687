//! The plugin's metrics and log lines, through the host (`daz_plugin_storage_*` in the
//! host's Prometheus registry). Without a host (unit tests of the pieces) they go
//! nowhere.
//!
//! Metric failures are ignored: a metric the host refuses must never stop the logger.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use daz_plugin_api::{Host, Level};

/// Metrics and logging for the storage plugin.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    host: Option<Host>,
}

impl Metrics {
    /// Reports through `host`.
    pub fn new(host: Host) -> Self {
        Self { host: Some(host) }
    }

    /// Reports nowhere.
    pub fn none() -> Self {
        Self { host: None }
    }

    fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)], by: f64) {
        if let Some(h) = &self.host {
            let _ = h.counter_add(name, help, labels, by);
        }
    }

    fn gauge(&self, name: &str, help: &str, value: f64) {
        if let Some(h) = &self.host {
            let _ = h.gauge_set(name, help, &[], value);
        }
    }

    fn observe(&self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        if let Some(h) = &self.host {
            let _ = h.observe(name, help, labels, value);
        }
    }

    /// A batch was committed.
    pub fn batch(
        &self,
        rows: u64,
        inserted: u64,
        duplicates: u64,
        took: Duration,
        oldest_age: Option<Duration>,
    ) {
        self.counter(
            "storage_rows_written_total",
            "Event log rows written",
            &[],
            inserted as f64,
        );
        if duplicates > 0 {
            self.counter(
                "storage_rows_duplicate_total",
                "Event log rows skipped because the database already had them (replays)",
                &[],
                duplicates as f64,
            );
        }
        self.observe(
            "storage_batch_rows",
            "Rows per event log batch",
            &[],
            rows as f64,
        );
        self.observe(
            "storage_batch_write_seconds",
            "Time to write one event log batch",
            &[],
            took.as_secs_f64(),
        );
        if let Some(age) = oldest_age {
            self.observe(
                "storage_flush_latency_seconds",
                "Time from accepting an event to committing it (oldest row of each batch)",
                &[],
                age.as_secs_f64(),
            );
        }
    }

    /// Queue depths.
    pub fn queue(&self, memory: usize, journal_rows: u64, journal_bytes: u64) {
        self.gauge(
            "storage_queue_depth",
            "Events waiting in memory for the database",
            memory as f64,
        );
        self.gauge(
            "storage_journal_rows",
            "Events waiting in the journal for the database",
            journal_rows as f64,
        );
        self.gauge(
            "storage_journal_bytes",
            "Bytes in the journal",
            journal_bytes as f64,
        );
    }

    /// A database (or journal) error of a kind (`unreachable`, `write`, `journal`,
    /// `query`).
    pub fn db_error(&self, kind: &str) {
        self.counter(
            "storage_db_errors_total",
            "Database and journal errors by kind",
            &[("kind", kind)],
            1.0,
        );
    }

    /// Events lost: neither memory nor the journal could hold them.
    pub fn lost(&self, n: u64) {
        self.counter(
            "storage_events_lost_total",
            "Events the logger lost because neither memory nor the journal could hold them",
            &[],
            n as f64,
        );
    }

    /// Events accepted by the logger (appended to the journal, or kept in memory when
    /// the journal cannot be written).
    pub fn accepted(&self, n: u64) {
        self.counter(
            "storage_events_accepted_total",
            "Events the logger accepted (each is in the journal when counted, unless storage_events_not_journaled_total says otherwise)",
            &[],
            n as f64,
        );
    }

    /// Journal records found unreadable when the journal was opened, by cause
    /// (`damaged`, `torn`).
    pub fn journal_records_lost(&self, n: u64, cause: &str) {
        self.counter(
            "storage_journal_records_lost_total",
            "Journal records that could not be read back (damaged segments, torn ends)",
            &[("cause", cause)],
            n as f64,
        );
    }

    /// An event the database refused for its content.
    pub fn rejected(&self) {
        self.counter(
            "storage_events_rejected_total",
            "Events the database refused for their content",
            &[],
            1.0,
        );
    }

    /// One SQL service request of `kind` (query, exec, batch, migrate, state) and its
    /// outcome.
    pub fn request(&self, kind: &str, ok: bool, took: Duration) {
        self.observe(
            "storage_query_seconds",
            "SQL service request latency by kind",
            &[("kind", kind)],
            took.as_secs_f64(),
        );
        self.counter(
            "storage_requests_total",
            "SQL service requests by kind and outcome",
            &[("kind", kind), ("outcome", if ok { "ok" } else { "error" })],
            1.0,
        );
    }

    fn log(&self, level: Level, message: &str) {
        if let Some(h) = &self.host {
            h.log(level, message, &[]);
        }
    }

    /// Logs at INFO.
    pub fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }

    /// Logs at WARN.
    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message);
    }

    /// Logs at ERROR.
    pub fn error(&self, message: &str) {
        self.log(Level::Error, message);
    }
}

/// Lets a repeated log line through at most once per interval and counts the ones it
/// held back, so a failure that repeats per event cannot flood the log.
#[derive(Debug)]
pub struct RateLimited {
    every: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl RateLimited {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be logged at `now`: `Some(suppressed since the last line)`,
    /// or `None` (and the occurrence is counted).
    pub fn allow(&self, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }

    /// The occurrences held back since the last line (and starts counting anew; the
    /// next occurrence is logged at once).
    pub fn take_suppressed(&self) -> u64 {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.suppressed.swap(0, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_line_is_let_through_once_per_interval_with_the_count_held_back() {
        let r = RateLimited::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(r.allow(t0), Some(0));
        for i in 1..=15_840u64 {
            assert_eq!(r.allow(t0 + Duration::from_micros(i * 500)), None);
        }
        assert_eq!(r.allow(t0 + Duration::from_secs(10)), Some(15_840));
        assert_eq!(r.allow(t0 + Duration::from_secs(11)), None);
        assert_eq!(r.take_suppressed(), 1);
        assert_eq!(r.allow(t0 + Duration::from_secs(12)), Some(0));
    }
}
