//! The [`Envelope`] every bus event travels in, its [`Priority`], and the process-wide
//! monotonic id generator. The payload is raw JSON bytes: the bus never parses it, decoding is
//! the receiver's choice.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use ulid::{Generator, Ulid};

use crate::error::SubjectError;
use crate::subject::validate_subject;

/// Delivery priority. Mailboxes serve higher priorities first and, when full, drop the lowest
/// priority first. `Critical` events are never evicted.
#[repr(u8)]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    #[default]
    Normal = 0,
    High = 1,
    Urgent = 2,
    Critical = 3,
}

impl Priority {
    /// All priorities, lowest first; `ALL[p as usize] == p`.
    pub const ALL: [Priority; 4] = [
        Priority::Normal,
        Priority::High,
        Priority::Urgent,
        Priority::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
            Priority::Critical => "critical",
        }
    }

    /// Index into per-priority arrays (0 = normal … 3 = critical).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A priority name that is not one of `normal`, `high`, `urgent`, `critical`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority `{0}`: use one of normal, high, urgent, critical")]
pub struct ParsePriorityError(pub String);

impl FromStr for Priority {
    type Err = ParsePriorityError;

    /// Accepts the lowercase names (as serde writes them), ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParsePriorityError(s.to_owned()))
    }
}

/// One event on the bus. Shared between subscribers as `Arc<Envelope>`; nobody mutates it
/// after publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Unique and sortable: ids from [`Envelope::new_id`] increase strictly within a process.
    pub id: Ulid,
    pub subject: Arc<str>,
    pub room: Option<Arc<str>>,
    /// Who published: `"host"`, `"cytube:<room>"`, a plugin name.
    pub source: Arc<str>,
    pub priority: Priority,
    pub tags: SmallVec<[Arc<str>; 2]>,
    pub correlation_id: Option<Arc<str>>,
    /// Set by the bus on requests: where [`crate::Bus::reply`] sends the answer.
    pub reply_to: Option<Arc<str>>,
    /// Unix epoch milliseconds at build time.
    pub timestamp_ms: i64,
    /// Raw JSON bytes, never parsed by the bus.
    pub payload: Arc<[u8]>,
}

static ID_GENERATOR: Mutex<Generator> = Mutex::new(Generator::new());

impl Envelope {
    /// Starts an envelope; [`EnvelopeBuilder::build`] validates the subject and stamps the id
    /// and timestamp.
    pub fn builder(subject: impl Into<Arc<str>>, payload: impl Into<Arc<[u8]>>) -> EnvelopeBuilder {
        EnvelopeBuilder {
            subject: subject.into(),
            payload: payload.into(),
            room: None,
            source: None,
            priority: Priority::Normal,
            tags: SmallVec::new(),
            correlation_id: None,
            reply_to: None,
        }
    }

    /// Like [`builder`](Self::builder) with a payload serialized from `value`.
    pub fn builder_json<T: Serialize + ?Sized>(
        subject: impl Into<Arc<str>>,
        value: &T,
    ) -> Result<EnvelopeBuilder, serde_json::Error> {
        Ok(Self::builder(subject, serde_json::to_vec(value)?))
    }

    /// A new process-wide unique id, strictly greater than every id handed out before.
    pub fn new_id() -> Ulid {
        let mut generator = ID_GENERATOR.lock();
        match generator.generate() {
            Ok(id) => id,
            // The random part overflowed within one millisecond (needs ~2^80 ids, or a random
            // start very close to the top): continue in the next millisecond, which starts a
            // fresh random part. If even that fails (clock far behind the last id), fall back
            // to a plain random id: still unique, just not ordered.
            Err(_) => generator
                .generate_from_datetime(SystemTime::now() + Duration::from_millis(1))
                .unwrap_or_else(|_| Ulid::new()),
        }
    }

    /// The payload as UTF-8 text, if it is.
    pub fn payload_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.payload).ok()
    }

    /// Deserializes the JSON payload.
    pub fn payload_json<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| &**t == tag)
    }
}

/// Builder returned by [`Envelope::builder`].
#[derive(Debug, Clone)]
pub struct EnvelopeBuilder {
    subject: Arc<str>,
    payload: Arc<[u8]>,
    room: Option<Arc<str>>,
    source: Option<Arc<str>>,
    priority: Priority,
    tags: SmallVec<[Arc<str>; 2]>,
    correlation_id: Option<Arc<str>>,
    reply_to: Option<Arc<str>>,
}

impl EnvelopeBuilder {
    pub fn room(mut self, room: impl Into<Arc<str>>) -> Self {
        self.room = Some(room.into());
        self
    }

    /// Who publishes; defaults to `"host"`.
    pub fn source(mut self, source: impl Into<Arc<str>>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    pub fn tag(mut self, tag: impl Into<Arc<str>>) -> Self {
        self.tags.push(tag.into());
        self
    }

    pub fn correlation_id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Normally left unset: [`crate::Bus::request`] sets it.
    pub fn reply_to(mut self, inbox: impl Into<Arc<str>>) -> Self {
        self.reply_to = Some(inbox.into());
        self
    }

    /// Validates the subject, then stamps a fresh id and the current time.
    pub fn build(self) -> Result<Envelope, SubjectError> {
        validate_subject(&self.subject)?;
        let timestamp_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Ok(Envelope {
            id: Envelope::new_id(),
            subject: self.subject,
            room: self.room,
            source: self.source.unwrap_or_else(|| Arc::from("host")),
            priority: self.priority,
            tags: self.tags,
            correlation_id: self.correlation_id,
            reply_to: self.reply_to,
            timestamp_ms,
            payload: self.payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_order_names_and_parse() {
        assert!(Priority::Normal < Priority::High);
        assert!(Priority::High < Priority::Urgent);
        assert!(Priority::Urgent < Priority::Critical);
        for p in Priority::ALL {
            assert_eq!(p.as_str().parse::<Priority>(), Ok(p));
            assert_eq!(Priority::ALL[p.index()], p);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
            assert_eq!(serde_json::from_str::<Priority>(&json).unwrap(), p);
        }
        assert_eq!("URGENT".parse::<Priority>(), Ok(Priority::Urgent));
        let err = "loud".parse::<Priority>().unwrap_err();
        assert!(err.to_string().contains("normal, high, urgent, critical"));
        assert!(serde_json::from_str::<Priority>("\"loud\"").is_err());
    }

    #[test]
    fn builder_validates_and_stamps() {
        let env = Envelope::builder("cytube.in.r.chatMsg", &b"{\"msg\":\"hi\"}"[..])
            .room("r")
            .source("cytube:r")
            .priority(Priority::High)
            .tag("chat")
            .tag("log")
            .correlation_id("c1")
            .build()
            .unwrap();
        assert_eq!(&*env.subject, "cytube.in.r.chatMsg");
        assert_eq!(env.room.as_deref(), Some("r"));
        assert_eq!(&*env.source, "cytube:r");
        assert_eq!(env.priority, Priority::High);
        assert!(env.has_tag("log") && !env.has_tag("x"));
        assert_eq!(env.correlation_id.as_deref(), Some("c1"));
        assert!(env.timestamp_ms > 1_600_000_000_000);
        assert_eq!(env.payload_str(), Some("{\"msg\":\"hi\"}"));
        let v: serde_json::Value = env.payload_json().unwrap();
        assert_eq!(v["msg"], "hi");

        let default = Envelope::builder("a", Vec::new()).build().unwrap();
        assert_eq!(&*default.source, "host");
        assert_eq!(default.priority, Priority::Normal);

        assert!(Envelope::builder("a.*", Vec::new()).build().is_err());
        assert!(Envelope::builder("", Vec::new()).build().is_err());
    }

    #[test]
    fn builder_json() {
        let env = Envelope::builder_json("x", &serde_json::json!({"n": 1}))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(env.payload_str(), Some("{\"n\":1}"));
    }

    #[test]
    fn ids_are_strictly_increasing_across_threads() {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| (0..2000).map(|_| Envelope::new_id()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            let ids = h.join().unwrap();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "monotonic per thread");
            all.extend(ids);
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "unique");
    }
}
