//! The soak's figures, the pass criteria and the summary table.

use std::{collections::BTreeMap, fmt, time::Duration};

use crate::ledger::Verdict;

/// Everything a run measured.
#[derive(Debug, Default)]
pub struct Report {
    /// Rooms.
    pub rooms: usize,
    /// Target chat lines per second, all rooms.
    pub target_rate: u32,
    /// Planned load duration.
    pub duration: Duration,
    /// Measured load duration, s.
    pub load_seconds: f64,
    /// The whole run, setup included.
    pub wall: Duration,
    /// Chat lines the users sent.
    pub sent: u64,
    /// Distinct soak lines the host published live.
    pub lines_live: u64,
    /// Lines the host saw only in a join backlog (sent while the bot was away).
    pub lines_backlog_only: u64,
    /// Lines the host never saw (sent while the bot was away, out of the backlog).
    pub lines_never_received: u64,
    /// Published events on logged subjects, per event name.
    pub by_event: BTreeMap<String, u64>,
    /// The event log against what was published.
    pub verdict: Verdict,
    /// Events the bus dropped for a full mailbox (any subscriber).
    pub dropped_by_bus: u64,
    /// Reloads that swapped in a new instance, and per kind (storage, file, feature).
    pub reloads_ok: u64,
    /// Reloads per kind: storage instance swap, versioned file swap, feature plugin.
    pub reloads_by_kind: [u64; 3],
    /// What went wrong with the others.
    pub reload_failures: Vec<String>,
    /// Connection drops injected.
    pub drops: u64,
    /// Bot reconnects (all rooms).
    pub bot_reconnects: u64,
    /// Chatter reconnects.
    pub chatter_reconnects: u64,
    /// PostgreSQL restarts done.
    pub pg_restarts: u32,
    /// Failures restarting it.
    pub pg_errors: Vec<String>,
    /// Deepest plugin mailbox seen.
    pub max_mailbox_depth: usize,
    /// Plugins seen stuck past their handler deadline.
    pub stuck: Vec<String>,
    /// Mailboxes that did not drain at the end.
    pub not_drained: Vec<String>,
    /// RSS when the load started, bytes.
    pub rss_load_start: u64,
    /// When the RSS baseline was taken (every fault kind seen once), into the load.
    pub baseline_at: Duration,
    /// Lowest RSS in the first quarter after the baseline, bytes.
    pub rss_start: u64,
    /// Lowest RSS in the last quarter of the load.
    pub rss_end: u64,
    /// RSS after the drain.
    pub rss_after_drain: u64,
    /// Highest RSS sampled.
    pub rss_peak: u64,
    /// Libraries the host keeps mapped after swaps, at the end.
    pub leaked_libraries: i64,
    /// Their bytes.
    pub leaked_bytes: i64,
    /// Leaked bytes added after the warm-up.
    pub leaked_bytes_during: u64,
    /// Bytes the soak's own ledger grew by after the warm-up.
    pub ledger_bytes: u64,
    /// Fixed allowance (allocator, pools, caches), bytes.
    pub rss_slack: u64,
}

impl Report {
    /// Rise of the RSS floor from just after the baseline to the end of the load.
    pub fn rss_growth(&self) -> u64 {
        self.rss_end.saturating_sub(self.rss_start)
    }

    /// What RSS may grow by: leaked libraries + the ledger + the slack.
    pub fn rss_budget(&self) -> u64 {
        self.leaked_bytes_during + self.ledger_bytes + self.rss_slack
    }

    /// Achieved rate of lines sent, per second.
    pub fn rate(&self) -> f64 {
        if self.load_seconds > 0.0 {
            self.sent as f64 / self.load_seconds
        } else {
            0.0
        }
    }

    /// Why the run failed; empty when it passed.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        let v = &self.verdict;
        if v.published == 0 {
            f.push("the host published nothing".to_owned());
        }
        if v.lost > 0 {
            f.push(format!(
                "{} published events missing from the event log (e.g. {:?})",
                v.lost, v.lost_sample
            ));
        }
        if v.duplicated_ids > 0 {
            f.push(format!(
                "{} duplicated ids in the event log",
                v.duplicated_ids
            ));
        }
        if v.duplicated_lines > 0 {
            f.push(format!(
                "{} chat lines logged live more than once",
                v.duplicated_lines
            ));
        }
        if v.unexpected > 0 {
            f.push(format!(
                "{} rows in the event log that were never published",
                v.unexpected
            ));
        }
        if !self.stuck.is_empty() {
            f.push(format!("stuck mailboxes: {:?}", self.stuck));
        }
        if !self.not_drained.is_empty() {
            f.push(format!("not drained at the end: {:?}", self.not_drained));
        }
        if !self.reload_failures.is_empty() {
            f.push(format!("reload failures: {:?}", self.reload_failures));
        }
        if !self.pg_errors.is_empty() {
            f.push(format!("PostgreSQL restart errors: {:?}", self.pg_errors));
        }
        if self.rss_growth() > self.rss_budget() {
            f.push(format!(
                "RSS grew {} MiB, over the budget of {} MiB",
                self.rss_growth() >> 20,
                self.rss_budget() >> 20
            ));
        }
        if self.drops > 0 && self.bot_reconnects < self.drops {
            f.push(format!(
                "{} drops but only {} bot reconnects",
                self.drops, self.bot_reconnects
            ));
        }
        f
    }

    /// No failures.
    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

impl fmt::Display for Report {
    /// The summary table (Markdown, so it can go in the README as printed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.verdict;
        let rows: Vec<(&str, String)> = vec![
            ("rooms", self.rooms.to_string()),
            (
                "load",
                format!(
                    "{:.0} s at {:.0} lines/s (target {})",
                    self.load_seconds,
                    self.rate(),
                    self.target_rate
                ),
            ),
            ("chat lines sent by users", self.sent.to_string()),
            ("lines the host received live", self.lines_live.to_string()),
            (
                "lines sent while the bot was away (backlog only / never seen)",
                format!(
                    "{} / {}",
                    self.lines_backlog_only, self.lines_never_received
                ),
            ),
            (
                "events published on logged subjects",
                format!(
                    "{} ({})",
                    v.published,
                    self.by_event
                        .iter()
                        .map(|(k, n)| format!("{k} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            ("rows in event_log", v.logged.to_string()),
            ("lost (published, not logged)", v.lost.to_string()),
            ("duplicated ids", v.duplicated_ids.to_string()),
            (
                "chat lines logged live twice",
                v.duplicated_lines.to_string(),
            ),
            ("rows never published", v.unexpected.to_string()),
            ("events dropped by the bus", self.dropped_by_bus.to_string()),
            (
                "plugin reloads ok / failed",
                format!(
                    "{} / {} (storage {}, file swap {}, feature {})",
                    self.reloads_ok,
                    self.reload_failures.len(),
                    self.reloads_by_kind[0],
                    self.reloads_by_kind[1],
                    self.reloads_by_kind[2]
                ),
            ),
            ("PostgreSQL restarts", self.pg_restarts.to_string()),
            (
                "connection drops / bot reconnects",
                format!("{} / {}", self.drops, self.bot_reconnects),
            ),
            ("deepest plugin mailbox", self.max_mailbox_depth.to_string()),
            (
                "stuck / undrained mailboxes",
                format!("{} / {}", self.stuck.len(), self.not_drained.len()),
            ),
            (
                "RSS at load start; floor after every fault was seen once (from s) → floor at the end; peak; after the drain",
                format!(
                    "{}; {} ({} s) → {}; {}; {}",
                    mib(self.rss_load_start),
                    mib(self.rss_start),
                    self.baseline_at.as_secs(),
                    mib(self.rss_end),
                    mib(self.rss_peak),
                    mib(self.rss_after_drain)
                ),
            ),
            (
                "RSS growth / budget",
                format!(
                    "{} / {} (leaked libraries {} + ledger {} + slack {})",
                    mib(self.rss_growth()),
                    mib(self.rss_budget()),
                    mib(self.leaked_bytes_during),
                    mib(self.ledger_bytes),
                    mib(self.rss_slack)
                ),
            ),
            (
                "leaked libraries (bytes) at the end",
                format!(
                    "{} ({})",
                    self.leaked_libraries,
                    mib(self.leaked_bytes.max(0) as u64)
                ),
            ),
            ("wall time", format!("{:.0} s", self.wall.as_secs_f64())),
            (
                "result",
                if self.passed() {
                    "PASS".to_owned()
                } else {
                    "FAIL".to_owned()
                },
            ),
        ];
        writeln!(f, "| measure | value |")?;
        writeln!(f, "| --- | --- |")?;
        for (k, val) in rows {
            writeln!(f, "| {k} | {val} |")?;
        }
        for why in self.failures() {
            writeln!(f, "FAIL: {why}")?;
        }
        Ok(())
    }
}
