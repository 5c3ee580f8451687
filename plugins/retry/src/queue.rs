//! The retry queue and the dead letters, free of I/O: failures in, operations to redo
//! and [`Change`]s for the database out.
//!
//! An operation is known by its idempotency key: the id of the original request (and
//! the part, for one part of a split chat message). The key is the row id in
//! `retry_queue` and `dead_letters`, and the correlation id of every redo, so the
//! failure report of a redo finds its entry again. A failure whose key is already
//! waiting, in flight or dead is a duplicate and changes nothing.
//!
//! Life of an entry: `Waiting` until its attempt is due → redone, `InFlight` → either a
//! failure report comes back (`Waiting` again with the next delay, or dead once the
//! attempts are spent or the failure is permanent) or none comes within the confirm
//! window and the operation counts as delivered (the entry is deleted). The host's
//! governor reports every outbound failure, including requests that expired waiting,
//! so silence past its time-to-live means success.

use std::collections::BTreeMap;

use daz_cytube_proto::flood;
use daz_plugin_api::Priority;
use serde::{Deserialize, Serialize};

use crate::policy::Policy;

/// What to redo: a message to publish again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    /// The subject it was published on.
    pub subject: String,
    /// Its payload.
    pub payload: serde_json::Value,
    /// Its room.
    #[serde(default)]
    pub room: Option<String>,
    /// The priority to publish it with.
    #[serde(default)]
    pub priority: Priority,
}

/// Where an entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for its next attempt.
    Waiting,
    /// Redone; waiting to hear it failed (or not).
    InFlight,
}

/// An operation in the retry queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Idempotency key.
    pub key: String,
    /// Kind (the Cytube event, or the subject's last token): selects the policy.
    pub kind: String,
    /// What to redo.
    pub op: Operation,
    /// Attempts made by this plugin.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// When the next attempt is due (waiting) or the confirm window ends (in flight).
    pub next_ms: i64,
    /// The last failure, in words.
    pub last_error: String,
    /// When the operation first failed.
    pub created_ms: i64,
    /// Where it stands.
    pub phase: Phase,
}

/// An operation that failed for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dead {
    /// Idempotency key.
    pub key: String,
    /// Kind.
    pub kind: String,
    /// What it was.
    pub op: Operation,
    /// Attempts made.
    pub attempts: u32,
    /// Why it failed, in words.
    pub reason: String,
    /// When it died.
    pub failed_ms: i64,
    /// When an admin replayed it.
    pub replayed_ms: Option<i64>,
}

/// A failure report, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Idempotency key.
    pub key: String,
    /// Kind.
    pub kind: String,
    /// What to redo.
    pub op: Operation,
    /// Why it failed.
    pub reason: String,
    /// Stable code, if the reporter gives one.
    pub code: String,
    /// A failure of one of this plugin's own redos.
    pub ours: bool,
}

/// What to write to the database.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Insert or update a `retry_queue` row.
    Upsert(Entry),
    /// Delete a `retry_queue` row.
    Delete(String),
    /// Insert or update a `dead_letters` row (and delete the queue row).
    Died(Dead),
    /// A dead letter was replayed.
    Replayed {
        /// Key.
        key: String,
        /// When.
        at: i64,
    },
}

/// Decodes a failure report. Returns `None` for a payload without an original
/// operation to redo (it cannot be retried; the caller logs it).
///
/// The report: `{original: {subject, payload, event?, id, source, correlation_id?},
/// reason, code?, part?, parts?}` — the shape of the host's `cytube.out.<room>.failed`,
/// which any plugin may reuse for its own `<…>.failed` reports.
pub fn decode(report: &serde_json::Value, me: &str, room: Option<&str>) -> Option<Failure> {
    let original = report.get("original")?;
    let subject = original.get("subject")?.as_str()?.to_owned();
    if subject.ends_with(".failed") || subject.is_empty() {
        return None;
    }
    let kind = original
        .get("event")
        .and_then(|e| e.as_str())
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| subject.rsplit('.').next().unwrap_or_default().to_owned());
    let source = original
        .get("source")
        .and_then(|s| s.as_str())
        .unwrap_or("");
    let ours = source == me;
    let correlation = original
        .get("correlation_id")
        .and_then(|c| c.as_str())
        .filter(|c| !c.is_empty());
    let id = original
        .get("id")
        .and_then(|c| c.as_str())
        .filter(|c| !c.is_empty());
    let mut payload = original
        .get("payload")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let part = report.get("part").and_then(|p| p.as_u64()).unwrap_or(1);
    let parts = report.get("parts").and_then(|p| p.as_u64()).unwrap_or(1);
    let mut key = if ours {
        // Our redo carried the key as its correlation id.
        correlation.or(id)?.to_owned()
    } else {
        id.or(correlation)?.to_owned()
    };
    if parts > 1 && matches!(kind.as_str(), "chatMsg" | "pm") {
        // Only this part failed: redo exactly its text (the others were delivered).
        let text = payload.get("msg").and_then(|m| m.as_str()).unwrap_or("");
        let pieces = flood::split_message(text, flood::MAX_CHAT_LEN);
        let index = usize::try_from(part.saturating_sub(1)).unwrap_or(usize::MAX);
        if let Some(piece) = pieces.get(index) {
            payload["msg"] = serde_json::Value::String(piece.clone());
        }
        if !ours {
            key = format!("{key}#{part}");
        }
    }
    let room = room.map(str::to_owned).or_else(|| {
        let t: Vec<&str> = subject.split('.').collect();
        match t.as_slice() {
            ["cytube", "out", room, _] => Some((*room).to_owned()),
            _ => None,
        }
    });
    let priority = if matches!(kind.as_str(), "chatMsg" | "pm") {
        Priority::High
    } else {
        Priority::Normal
    };
    Some(Failure {
        key,
        kind,
        op: Operation {
            subject,
            payload,
            room,
            priority,
        },
        reason: report
            .get("reason")
            .and_then(|r| r.as_str())
            .unwrap_or("no reason given")
            .to_owned(),
        code: report
            .get("code")
            .and_then(|c| c.as_str())
            .unwrap_or("")
            .to_owned(),
        ours,
    })
}

/// The queue and the dead letters; also the state handed to the next version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Queue {
    /// Entries by key.
    pub entries: BTreeMap<String, Entry>,
    /// Dead letters by key (the most recent, bounded; the database has all).
    pub dead: BTreeMap<String, Dead>,
}

fn describe(f: &Failure) -> String {
    if f.code.is_empty() {
        f.reason.clone()
    } else {
        format!("{}: {}", f.code, f.reason)
    }
}

impl Queue {
    fn die(&mut self, entry: Entry, reason: String, now: i64) -> Change {
        self.entries.remove(&entry.key);
        let dead = Dead {
            key: entry.key.clone(),
            kind: entry.kind,
            op: entry.op,
            attempts: entry.attempts,
            reason,
            failed_ms: now,
            replayed_ms: None,
        };
        self.dead.insert(dead.key.clone(), dead.clone());
        Change::Died(dead)
    }

    /// Takes a failure report. `permanent`: its code says retrying cannot help.
    pub fn on_failure(
        &mut self,
        f: Failure,
        policy: &Policy,
        permanent: bool,
        now: i64,
    ) -> Vec<Change> {
        let why = describe(&f);
        match self.entries.get(&f.key).cloned() {
            Some(mut e) if f.ours => {
                if e.phase != Phase::InFlight {
                    // A second report of the same attempt.
                    return Vec::new();
                }
                e.last_error = why.clone();
                if permanent || e.attempts >= e.max_attempts {
                    let reason = if permanent {
                        why
                    } else {
                        format!("{why} (gave up after {} attempts)", e.attempts)
                    };
                    return vec![self.die(e, reason, now)];
                }
                e.phase = Phase::Waiting;
                let delay = policy.delay_ms(&e.key, e.attempts + 1);
                e.next_ms = now + i64::try_from(delay).unwrap_or(i64::MAX / 2);
                self.entries.insert(e.key.clone(), e.clone());
                vec![Change::Upsert(e)]
            }
            // Already known: a duplicate of the original report.
            Some(_) => Vec::new(),
            None if self
                .dead
                .get(&f.key)
                .is_some_and(|d| d.replayed_ms.is_none()) =>
            {
                Vec::new()
            }
            None => {
                let entry = Entry {
                    key: f.key.clone(),
                    kind: f.kind.clone(),
                    op: f.op,
                    attempts: 0,
                    max_attempts: policy.max_attempts,
                    next_ms: now
                        + i64::try_from(policy.delay_ms(&f.key, 1)).unwrap_or(i64::MAX / 2),
                    last_error: why.clone(),
                    created_ms: now,
                    phase: Phase::Waiting,
                };
                if permanent || policy.max_attempts == 0 {
                    return vec![self.die(entry, why, now)];
                }
                self.entries.insert(entry.key.clone(), entry.clone());
                vec![Change::Upsert(entry)]
            }
        }
    }

    /// Entries whose time has come: operations to redo now (each counted as an
    /// attempt and put in flight for `confirm_ms`), and in-flight entries that heard no
    /// failure within their window (delivered: deleted).
    pub fn due(&mut self, now: i64, confirm_ms: i64) -> (Vec<(String, Operation)>, Vec<Change>) {
        let mut redo = Vec::new();
        let mut changes = Vec::new();
        let keys: Vec<String> = self
            .entries
            .values()
            .filter(|e| e.next_ms <= now)
            .map(|e| e.key.clone())
            .collect();
        for key in keys {
            let Some(e) = self.entries.get_mut(&key) else {
                continue;
            };
            match e.phase {
                Phase::Waiting => {
                    e.attempts += 1;
                    e.phase = Phase::InFlight;
                    e.next_ms = now + confirm_ms;
                    redo.push((key.clone(), e.op.clone()));
                    changes.push(Change::Upsert(e.clone()));
                }
                Phase::InFlight => {
                    self.entries.remove(&key);
                    changes.push(Change::Delete(key));
                }
            }
        }
        (redo, changes)
    }

    /// Dead letters whose key ends with `id` (all of them for `all`) that were not
    /// replayed yet, most recent first.
    pub fn find_dead(&self, id: &str) -> Vec<&Dead> {
        let mut found: Vec<&Dead> = self
            .dead
            .values()
            .filter(|d| d.replayed_ms.is_none())
            .filter(|d| id == "all" || d.key.ends_with(id))
            .collect();
        found.sort_by(|a, b| b.failed_ms.cmp(&a.failed_ms).then(a.key.cmp(&b.key)));
        found
    }

    /// Puts dead letters back in the queue, due now, with fresh attempts.
    pub fn replay(
        &mut self,
        keys: &[String],
        policy_of: impl Fn(&str) -> Policy,
        now: i64,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        for key in keys {
            let Some(d) = self.dead.get_mut(key) else {
                continue;
            };
            if d.replayed_ms.is_some() {
                continue;
            }
            d.replayed_ms = Some(now);
            let entry = Entry {
                key: d.key.clone(),
                kind: d.kind.clone(),
                op: d.op.clone(),
                attempts: 0,
                max_attempts: policy_of(&d.kind).max_attempts.max(1),
                next_ms: now,
                last_error: format!("replayed after: {}", d.reason),
                created_ms: now,
                phase: Phase::Waiting,
            };
            changes.push(Change::Replayed {
                key: key.clone(),
                at: now,
            });
            self.entries.insert(key.clone(), entry.clone());
            changes.push(Change::Upsert(entry));
        }
        changes
    }

    /// Keeps at most `max` dead letters in memory (the most recent).
    pub fn trim_dead(&mut self, max: usize) {
        if self.dead.len() <= max {
            return;
        }
        let mut times: Vec<i64> = self.dead.values().map(|d| d.failed_ms).collect();
        times.sort_unstable();
        let cutoff = times[times.len() - max];
        self.dead.retain(|_, d| d.failed_ms >= cutoff);
    }

    /// When the next entry is due.
    pub fn next_due(&self) -> Option<i64> {
        self.entries.values().map(|e| e.next_ms).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, source: &str, code: &str) -> serde_json::Value {
        serde_json::json!({
            "original": {"event": "chatMsg", "subject": "cytube.out.lobby.chatMsg",
                         "payload": {"msg": "hello", "meta": {}}, "source": source, "id": id,
                         "correlation_id": if source == "retry" { id } else { "" }},
            "reason": "the server dropped it", "code": code, "part": 1, "parts": 1
        })
    }

    fn policy() -> Policy {
        Policy {
            max_attempts: 2,
            initial_delay_ms: 100,
            max_delay_ms: 1_000,
            multiplier: 2.0,
            jitter: 0.0,
        }
    }

    #[test]
    fn a_report_decodes_into_an_operation_to_redo() {
        let f = decode(&report("01A", "builtins", "cooldown"), "retry", None).unwrap();
        assert_eq!((f.key.as_str(), f.kind.as_str()), ("01A", "chatMsg"));
        assert_eq!(f.op.subject, "cytube.out.lobby.chatMsg");
        assert_eq!(f.op.room.as_deref(), Some("lobby"));
        assert_eq!(f.op.payload["msg"], "hello");
        assert_eq!(f.op.priority, Priority::High);
        assert!(!f.ours);
        assert_eq!(f.code, "cooldown");
        // Nothing to redo, or a report about a report: not decoded.
        assert!(decode(&serde_json::json!({"reason": "x"}), "retry", None).is_none());
        let mut loopy = report("01B", "x", "");
        loopy["original"]["subject"] = "cytube.out.lobby.failed".into();
        assert!(decode(&loopy, "retry", None).is_none());
    }

    #[test]
    fn only_the_failed_part_of_a_split_message_is_redone() {
        let long = format!("{} {}", "a".repeat(300), "b".repeat(100));
        let mut r = report("01C", "builtins", "cooldown");
        r["original"]["payload"]["msg"] = long.into();
        r["part"] = 2.into();
        r["parts"] = 2.into();
        let f = decode(&r, "retry", None).unwrap();
        assert_eq!(f.key, "01C#2");
        assert_eq!(f.op.payload["msg"], "b".repeat(100));
    }

    #[test]
    fn an_operation_is_retried_then_dies_after_its_attempts() {
        let mut q = Queue::default();
        let f = decode(&report("01A", "builtins", "cooldown"), "retry", None).unwrap();
        let c = q.on_failure(f.clone(), &policy(), false, 0);
        assert!(matches!(&c[0], Change::Upsert(e) if e.next_ms == 100));
        // The same report again (forwarded twice): nothing new.
        assert!(q.on_failure(f, &policy(), false, 0).is_empty());
        assert!(q.due(99, 5_000).0.is_empty());
        let (redo, _) = q.due(100, 5_000);
        assert_eq!(redo.len(), 1);
        assert_eq!(redo[0].0, "01A");
        // Our redo failed too: wait 200 ms (second attempt).
        let ours = decode(&report("01A", "retry", "cooldown"), "retry", None).unwrap();
        assert!(ours.ours);
        let c = q.on_failure(ours.clone(), &policy(), false, 150);
        assert!(matches!(&c[0], Change::Upsert(e) if e.next_ms == 350 && e.attempts == 1));
        assert_eq!(q.due(350, 5_000).0.len(), 1);
        let c = q.on_failure(ours, &policy(), false, 400);
        let Change::Died(d) = &c[0] else {
            panic!("{c:?}")
        };
        assert_eq!(d.attempts, 2);
        assert!(
            d.reason.contains("gave up after 2 attempts"),
            "{}",
            d.reason
        );
        assert!(q.entries.is_empty());
        assert_eq!(q.find_dead("1A").len(), 1);
    }

    #[test]
    fn silence_after_a_redo_means_delivered() {
        let mut q = Queue::default();
        let f = decode(&report("01A", "builtins", "expired"), "retry", None).unwrap();
        q.on_failure(f, &policy(), false, 0);
        q.due(100, 5_000);
        let (redo, changes) = q.due(5_100, 5_000);
        assert!(redo.is_empty());
        assert_eq!(changes, vec![Change::Delete("01A".into())]);
        assert!(q.next_due().is_none());
    }

    #[test]
    fn permanent_failures_die_at_once_and_replays_start_over() {
        let mut q = Queue::default();
        let f = decode(&report("01A", "builtins", "too_large"), "retry", None).unwrap();
        let c = q.on_failure(f.clone(), &policy(), true, 7);
        assert!(
            matches!(&c[0], Change::Died(d) if d.attempts == 0 && d.reason.starts_with("too_large"))
        );
        // A duplicate report of a dead operation stays dead.
        assert!(q.on_failure(f, &policy(), true, 8).is_empty());
        let keys: Vec<String> = q.find_dead("all").iter().map(|d| d.key.clone()).collect();
        let c = q.replay(&keys, |_| policy(), 50);
        assert_eq!(c.len(), 2);
        assert!(q.find_dead("all").is_empty());
        let (redo, _) = q.due(50, 5_000);
        assert_eq!(redo[0].1.payload["msg"], "hello");
        // Replaying again does nothing: it is not dead any more.
        assert!(q.replay(&keys, |_| policy(), 60).is_empty());
    }

    #[test]
    fn dead_letter_memory_is_bounded() {
        let mut q = Queue::default();
        for i in 0..10 {
            let f = decode(&report(&format!("k{i}"), "p", "refused"), "retry", None).unwrap();
            q.on_failure(f, &policy(), true, i);
        }
        q.trim_dead(4);
        assert_eq!(q.dead.len(), 4);
        assert!(q.dead.contains_key("k9"));
    }
}
