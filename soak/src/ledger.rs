//! The accounting that decides "lost" and "duplicated".
//!
//! Two ledgers are compared at the end of a run:
//!
//! * [`Ledger`]: what the host published. A probe subscriber on the host's bus sees every
//!   event on the logged subjects, exactly as the storage plugin's mailbox does; it keeps
//!   each envelope id, and for the soak's own chat lines (`soak <seq>`) how often each
//!   sequence number arrived live and as join backlog.
//! * [`LogTally`]: what is in the `event_log` table, read back once the host has stopped
//!   (its storage plugin flushes on stop).
//!
//! Lost = published ids missing from the table; duplicated = ids present more than once
//! (the primary key makes that impossible unless the schema is wrong, so it is counted
//! straight from the rows rather than assumed); unexpected = rows whose id was never
//! published. Live chat lines are also checked by sequence number: a line the server
//! replays on a rejoin must come back tagged `backlog`, so no sequence number may be
//! logged live twice.

use std::sync::Arc;

use daz_bus::Envelope;

/// What the probe saw the host publish.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Envelope ids of every event on a logged subject, in arrival order.
    pub ids: Vec<u128>,
    /// Per soak sequence number: how many times it arrived live / as backlog.
    pub live: Counts,
    /// Same, for the join backlog replays.
    pub backlog: Counts,
    /// Events per Cytube event name (last subject token).
    pub by_event: std::collections::BTreeMap<String, u64>,
}

/// The sequence number of a soak chat line (`soak <seq>`).
pub fn seq_of(msg: &str) -> Option<u64> {
    msg.strip_prefix("soak ")?.parse().ok()
}

/// The chat text carrying `seq`.
pub fn line(seq: u64) -> String {
    format!("soak {seq}")
}

impl Ledger {
    /// Records one published event.
    ///
    /// A backlog copy of a line already seen (live or in an earlier backlog) is not
    /// expected in the event log: the storage plugin keeps one row per chat line.
    pub fn record(&mut self, env: &Arc<Envelope>) {
        let event = env.subject.rsplit('.').next().unwrap_or_default();
        *self.by_event.entry(event.to_owned()).or_default() += 1;
        let mut expected = true;
        if event == "chatMsg"
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&env.payload)
            && let Some(seq) = v.get("msg").and_then(|m| m.as_str()).and_then(seq_of)
        {
            if env.has_tag("backlog") {
                expected = self.live.get(seq) == 0 && self.backlog.get(seq) == 0;
                self.backlog.bump(seq);
            } else {
                self.live.bump(seq);
            }
        }
        if expected {
            self.ids.push(u128::from(env.id));
        }
    }

    /// Bytes the ledger holds (it grows with the run; the RSS budget allows for it).
    pub fn heap_bytes(&self) -> u64 {
        (self.ids.capacity() * 16 + self.live.capacity() + self.backlog.capacity()) as u64
    }
}

/// Per-index counts, saturating at 255.
#[derive(Debug, Default, Clone)]
pub struct Counts(Vec<u8>);

impl Counts {
    /// Adds one at `i`.
    pub fn bump(&mut self, i: u64) {
        let i = i as usize;
        if i >= self.0.len() {
            self.0.resize(i + 1, 0);
        }
        self.0[i] = self.0[i].saturating_add(1);
    }

    /// The count at `i`.
    pub fn get(&self, i: u64) -> u8 {
        self.0.get(i as usize).copied().unwrap_or(0)
    }

    /// Indexes with a count of at least one.
    pub fn nonzero(&self) -> u64 {
        self.0.iter().filter(|c| **c > 0).count() as u64
    }

    /// Indexes counted more than once.
    pub fn more_than_once(&self) -> u64 {
        self.0.iter().filter(|c| **c > 1).count() as u64
    }

    /// Allocated bytes.
    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }

    /// Largest index + 1.
    pub fn len(&self) -> u64 {
        self.0.len() as u64
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What the event log holds, read back after the run.
#[derive(Debug, Default)]
pub struct LogTally {
    /// Rows.
    pub rows: u64,
    /// Row ids (parsed ULIDs), sorted.
    pub ids: Vec<u128>,
    /// Rows whose id is not a ULID (never expected).
    pub bad_ids: u64,
    /// Per soak sequence number: rows logged live (without the `backlog` tag).
    pub live: Counts,
}

/// The comparison of the two ledgers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Events the host published on logged subjects.
    pub published: u64,
    /// Rows in the event log.
    pub logged: u64,
    /// Published, not in the log.
    pub lost: u64,
    /// Ids present more than once in the log.
    pub duplicated_ids: u64,
    /// Live chat lines logged live more than once.
    pub duplicated_lines: u64,
    /// Rows never published (or with an id that is not a ULID).
    pub unexpected: u64,
    /// A few lost ids, for the report.
    pub lost_sample: Vec<String>,
}

impl Verdict {
    /// Compares what was published with what was logged.
    pub fn compare(ledger: &Ledger, log: &LogTally) -> Verdict {
        let mut published = ledger.ids.clone();
        published.sort_unstable();
        let published_n = published.len() as u64;
        published.dedup();
        let mut logged = log.ids.clone();
        logged.sort_unstable();
        let before = logged.len();
        logged.dedup();
        let duplicated_ids = (before - logged.len()) as u64;
        let (mut lost, mut unexpected) = (0u64, log.bad_ids);
        let mut lost_sample = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < published.len() || j < logged.len() {
            match (published.get(i), logged.get(j)) {
                (Some(p), Some(l)) if p == l => {
                    i += 1;
                    j += 1;
                }
                (Some(p), l) if l.is_none_or(|l| p < l) => {
                    lost += 1;
                    if lost_sample.len() < 5 {
                        lost_sample.push(ulid::Ulid(*p).to_string());
                    }
                    i += 1;
                }
                _ => {
                    unexpected += 1;
                    j += 1;
                }
            }
        }
        Verdict {
            published: published_n,
            logged: log.rows,
            lost,
            duplicated_ids,
            duplicated_lines: log.live.more_than_once(),
            unexpected,
            lost_sample,
        }
    }

    /// Nothing lost, duplicated or unexpected.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated_ids == 0
            && self.duplicated_lines == 0
            && self.unexpected == 0
    }
}

/// Reads the event log back: ids, and per soak sequence number the live rows.
pub async fn read_log(db_url: &str) -> anyhow::Result<LogTally> {
    use anyhow::Context;
    use futures_util::StreamExt;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(db_url)
        .await
        .context("connecting to the soak database to read the event log")?;
    let mut tally = LogTally::default();
    {
        let mut rows = sqlx::query_as::<_, (String, String, Option<String>, bool)>(
            "SELECT id, event, message, 'backlog' = ANY(tags) FROM event_log",
        )
        .fetch(&pool);
        while let Some(row) = rows.next().await {
            let (id, event, message, backlog) = row.context("reading event_log")?;
            tally.rows += 1;
            match ulid::Ulid::from_string(&id) {
                Ok(u) => tally.ids.push(u128::from(u)),
                Err(_) => tally.bad_ids += 1,
            }
            if event == "chatMsg"
                && !backlog
                && let Some(seq) = message.as_deref().and_then(seq_of)
            {
                tally.live.bump(seq);
            }
        }
    }
    pool.close().await;
    tally.ids.sort_unstable();
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(ids: &[u128]) -> Ledger {
        Ledger {
            ids: ids.to_vec(),
            ..Ledger::default()
        }
    }

    fn log(ids: &[u128]) -> LogTally {
        LogTally {
            rows: ids.len() as u64,
            ids: ids.to_vec(),
            ..LogTally::default()
        }
    }

    #[test]
    fn equal_sets_are_clean() {
        let v = Verdict::compare(&ledger(&[3, 1, 2]), &log(&[1, 2, 3]));
        assert!(v.clean(), "{v:?}");
        assert_eq!((v.published, v.logged), (3, 3));
    }

    #[test]
    fn a_missing_row_is_lost_and_an_extra_one_unexpected() {
        let v = Verdict::compare(&ledger(&[1, 2, 3]), &log(&[1, 3, 9]));
        assert_eq!((v.lost, v.unexpected, v.duplicated_ids), (1, 1, 0));
        assert_eq!(v.lost_sample, vec![ulid::Ulid(2).to_string()]);
        assert!(!v.clean());
    }

    #[test]
    fn a_repeated_id_is_a_duplicate() {
        let v = Verdict::compare(&ledger(&[1, 2]), &log(&[1, 2, 2]));
        assert_eq!((v.lost, v.unexpected, v.duplicated_ids), (0, 0, 1));
    }

    #[test]
    fn a_line_logged_live_twice_is_a_duplicate_line() {
        let mut l = log(&[1, 2]);
        l.live.bump(7);
        l.live.bump(7);
        l.live.bump(8);
        let v = Verdict::compare(&ledger(&[1, 2]), &l);
        assert_eq!(v.duplicated_lines, 1);
        assert!(!v.clean());
    }

    #[test]
    fn sequence_numbers_round_trip_through_the_chat_text() {
        assert_eq!(seq_of(&line(42)), Some(42));
        assert_eq!(seq_of("soak x"), None);
        assert_eq!(seq_of("hello"), None);
    }
}
