//! What the event logger writes: [`LogRow`] (one `event_log` row, extracted from an
//! event), and [`Rules`] (which events become rows).

use daz_plugin_api::Event;
use serde::{Deserialize, Serialize};

use crate::config::Rule;

/// One row of `event_log`. Owned (events are lent for one call), serializable (the
/// journal stores it), and already sanitized for PostgreSQL: no NUL characters in text
/// and none escaped in the raw JSON, so a batch can never be refused for its content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    /// Envelope id.
    pub id: String,
    /// Subject.
    pub subject: String,
    /// Room.
    pub room: Option<String>,
    /// Event name.
    pub event: String,
    /// User the event is about.
    pub user: Option<String>,
    /// Message text.
    pub message: Option<String>,
    /// Media id.
    pub media_id: Option<String>,
    /// Media type (`yt`, `vi`, …).
    pub media_type: Option<String>,
    /// Media title.
    pub media_title: Option<String>,
    /// Media length in seconds.
    pub media_seconds: Option<i64>,
    /// Priority 0–3.
    pub priority: i16,
    /// Tags.
    pub tags: Vec<String>,
    /// The payload as JSON text (valid JSON; `null` if the payload was not JSON).
    pub raw: String,
    /// The server's timestamp, epoch ms.
    pub server_time_ms: Option<i64>,
    /// When the host published the event, epoch ms.
    pub received_ms: i64,
}

fn clean(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{fffd}")
    } else {
        s.to_owned()
    }
}

fn text(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(clean(s)),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int(v: Option<&serde_json::Value>) -> Option<i64> {
    match v? {
        serde_json::Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl LogRow {
    /// The key that makes a chat line one row however often the server sends it (live,
    /// and in the chat backlog replayed on every join): the SHA-256, in hex, of its
    /// room, user, server time (epoch ms) and text, separated by a control character
    /// none of them carries. `None` for other events, and for a chat line without a
    /// server time (it could not be told apart from a later identical line).
    pub fn line_key(&self) -> Option<String> {
        use sha2::{Digest, Sha256};
        if self.event != "chatMsg" {
            return None;
        }
        let (room, user, time, text) = (
            self.room.as_deref()?,
            self.user.as_deref()?,
            self.server_time_ms?,
            self.message.as_deref()?,
        );
        let mut h = Sha256::new();
        for part in [
            room.as_bytes(),
            user.as_bytes(),
            time.to_string().as_bytes(),
            text.as_bytes(),
        ] {
            h.update(part);
            h.update([0x1f]);
        }
        Some(hex::encode(h.finalize()))
    }

    /// Extracts a row from an event. Never fails: a payload that is not JSON, or JSON of
    /// an unexpected shape, still gives a row (with the fields it could read).
    pub fn from_event(event: &Event<'_>) -> LogRow {
        let subject = event.subject();
        let tokens: Vec<&str> = subject.split('.').collect();
        // cytube.in.<room>.<event>: the room is in the subject even if the envelope
        // does not name it.
        let (subject_room, name) = match tokens.as_slice() {
            ["cytube", _, room, rest @ ..] if !rest.is_empty() => {
                (Some((*room).to_owned()), rest.join("."))
            }
            _ => (None, tokens.last().copied().unwrap_or("").to_owned()),
        };
        let room = event.room().map(clean).or(subject_room);
        let mut row = LogRow {
            id: event.id().to_owned(),
            subject: clean(subject),
            room,
            event: clean(&name),
            user: None,
            message: None,
            media_id: None,
            media_type: None,
            media_title: None,
            media_seconds: None,
            priority: i16::from(event.priority().as_u8()),
            tags: event.tags().map(clean).collect(),
            raw: String::new(),
            server_time_ms: None,
            received_ms: event.timestamp_ms(),
        };
        let payload = event.payload();
        // The fast path reads only the fields a row needs, borrowing from the payload,
        // and keeps the payload's own text as the raw JSON. Payloads of another shape
        // (not an object, duplicate keys, …) take the general path through a `Value`.
        match serde_json::from_slice::<Fields<'_>>(payload) {
            Ok(f) => {
                row.fill_fast(&name, f);
                row.raw = raw_text(payload);
            }
            Err(_) => match serde_json::from_slice::<serde_json::Value>(payload) {
                Ok(v) => {
                    if let Some(obj) = v.as_object() {
                        row.fill(&name, obj);
                    }
                    row.raw = raw_text(payload);
                }
                Err(_) => row.raw = "null".to_owned(),
            },
        }
        row
    }

    fn fill(&mut self, name: &str, obj: &serde_json::Map<String, serde_json::Value>) {
        let media = |row: &mut LogRow, m: &serde_json::Map<String, serde_json::Value>| {
            row.media_id = text(m.get("id"));
            row.media_type = text(m.get("type"));
            row.media_title = text(m.get("title"));
            row.media_seconds = int(m.get("seconds"));
        };
        match name {
            "changeMedia" | "setCurrent" => media(self, obj),
            "queue" => {
                if let Some(item) = obj.get("item").and_then(|i| i.as_object()) {
                    self.user = text(item.get("queueby"));
                    if let Some(m) = item.get("media").and_then(|m| m.as_object()) {
                        media(self, m);
                    }
                }
            }
            _ => {
                self.user = text(obj.get("username")).or_else(|| text(obj.get("name")));
                self.message = text(obj.get("msg"));
                self.server_time_ms = int(obj.get("time")).filter(|t| *t > 0);
            }
        }
    }

    fn fill_fast(&mut self, name: &str, f: Fields<'_>) {
        let media = |row: &mut LogRow, m: MediaFields<'_>| {
            row.media_id = m.id.and_then(Scalar::text);
            row.media_type = m.kind.and_then(Scalar::text);
            row.media_title = m.title.and_then(Scalar::text);
            row.media_seconds = m.seconds.and_then(Scalar::int);
        };
        match name {
            "changeMedia" | "setCurrent" => media(
                self,
                MediaFields {
                    id: f.id,
                    kind: f.kind,
                    title: f.title,
                    seconds: f.seconds,
                },
            ),
            "queue" => {
                if let Some(item) = f.item {
                    self.user = item.queueby.and_then(Scalar::text);
                    if let Some(m) = item.media {
                        media(self, m);
                    }
                }
            }
            _ => {
                self.user = f
                    .username
                    .and_then(Scalar::text)
                    .or_else(|| f.name.and_then(Scalar::text));
                self.message = f.msg.and_then(Scalar::text);
                self.server_time_ms = f.time.and_then(Scalar::int).filter(|t| *t > 0);
            }
        }
    }

    /// Approximate heap size, for queue accounting.
    pub fn weight(&self) -> usize {
        self.raw.len() + self.subject.len() + self.id.len() + 128
    }
}

/// The payload as raw JSON text for the `raw` column: the payload itself (already known
/// to be valid JSON), with the `\u0000` escape jsonb refuses replaced.
fn raw_text(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    if text.contains("\\u0000") {
        text.replace("\\u0000", "\\ufffd")
    } else {
        text.into_owned()
    }
}

/// A JSON value read leniently: text and numbers are kept, anything else is skipped.
enum Scalar<'a> {
    Text(std::borrow::Cow<'a, str>),
    Int(i64),
    Float(f64),
    Other,
}

impl Scalar<'_> {
    fn text(self) -> Option<String> {
        match self {
            Scalar::Text(s) => Some(clean(&s)),
            Scalar::Int(n) => Some(n.to_string()),
            Scalar::Float(f) => Some(f.to_string()),
            Scalar::Other => None,
        }
    }

    fn int(self) -> Option<i64> {
        match self {
            Scalar::Int(n) => Some(n),
            Scalar::Float(f) if f.is_finite() => Some(f as i64),
            Scalar::Text(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Scalar<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Text(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Text(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Text(std::borrow::Cow::Owned(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar<'a>, E> {
                Ok(i64::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Other)
            }
            fn visit_unit<E>(self) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Scalar<'a>, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Scalar<'a>, A::Error> {
                while a
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The fields of a Cytube payload that become columns.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    username: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    name: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    msg: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    time: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    id: Option<Scalar<'a>>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    title: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    seconds: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    item: Option<ItemFields<'a>>,
}

#[derive(Deserialize)]
struct ItemFields<'a> {
    #[serde(borrow, default)]
    queueby: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    media: Option<MediaFields<'a>>,
}

#[derive(Deserialize)]
struct MediaFields<'a> {
    #[serde(borrow, default)]
    id: Option<Scalar<'a>>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    title: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    seconds: Option<Scalar<'a>>,
}

/// The logger's rules, compiled.
#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<(Vec<String>, Rule)>,
}

/// Whether `pattern` matches `subject` (NATS grammar).
pub fn pattern_matches(pattern: &[String], subject: &str) -> bool {
    let mut s = subject.split('.');
    for (i, p) in pattern.iter().enumerate() {
        match (p.as_str(), s.next()) {
            (">", Some(_)) => return i == pattern.len() - 1,
            ("*", Some(_)) => {}
            (p, Some(t)) if p == t => {}
            _ => return false,
        }
    }
    s.next().is_none()
}

impl Rules {
    /// Compiles the enabled rules.
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            rules: rules
                .into_iter()
                .filter(|r| r.enabled)
                .map(|r| (r.subject.split('.').map(str::to_owned).collect(), r))
                .collect(),
        }
    }

    /// The patterns to subscribe to: those of the rules that log.
    pub fn subscriptions(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (_, r) in &self.rules {
            if r.log && !out.contains(&r.subject) {
                out.push(r.subject.clone());
            }
        }
        out
    }

    /// Whether an event is logged: the first rule whose subject and tags match decides.
    pub fn logs(&self, event: &Event<'_>) -> bool {
        let subject = event.subject();
        for (pattern, rule) in &self.rules {
            if pattern_matches(pattern, subject) && rule.tags.iter().all(|t| event.has_tag(t)) {
                return rule.log;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use daz_plugin_api::{OwnedEvent, Priority};

    fn ev(subject: &str, payload: serde_json::Value, tags: &[&str]) -> OwnedEvent {
        OwnedEvent {
            id: "01HZZZZZZZZZZZZZZZZZZZZZZZ".into(),
            subject: subject.into(),
            source: "cytube:lobby".into(),
            priority: Priority::High,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            timestamp_ms: 1_700_000_000_000,
            payload: serde_json::to_vec(&payload).unwrap(),
            ..OwnedEvent::default()
        }
    }

    #[test]
    fn chat_rows_carry_user_message_and_server_time() {
        let e = ev(
            "cytube.in.lobby.chatMsg",
            serde_json::json!({"username": "alice", "msg": "hi\u{0}there", "time": 1_699_999_999_000i64, "meta": {}}),
            &["backlog"],
        );
        let row = e.with_event(|e| LogRow::from_event(&e));
        assert_eq!(row.room.as_deref(), Some("lobby"));
        assert_eq!(row.event, "chatMsg");
        assert_eq!(row.user.as_deref(), Some("alice"));
        assert_eq!(row.message.as_deref(), Some("hi\u{fffd}there"));
        assert_eq!(row.server_time_ms, Some(1_699_999_999_000));
        assert_eq!(row.priority, 1);
        assert_eq!(row.tags, vec!["backlog"]);
        assert!(!row.raw.contains("\\u0000"));
        let _: serde_json::Value = serde_json::from_str(&row.raw).unwrap();
    }

    #[test]
    fn media_rows_carry_the_media() {
        let e = ev(
            "cytube.in.lobby.changeMedia",
            serde_json::json!({"id": "abc", "type": "yt", "title": "Song", "seconds": 212, "duration": "03:32"}),
            &[],
        );
        let row = e.with_event(|e| LogRow::from_event(&e));
        assert_eq!(
            (
                row.media_id.as_deref(),
                row.media_type.as_deref(),
                row.media_title.as_deref(),
                row.media_seconds
            ),
            (Some("abc"), Some("yt"), Some("Song"), Some(212))
        );
        let e = ev(
            "cytube.in.lobby.queue",
            serde_json::json!({"item": {"media": {"id": "x", "type": "vi", "title": "T", "seconds": 5}, "uid": 3, "queueby": "bob"}, "after": 2}),
            &[],
        );
        let row = e.with_event(|e| LogRow::from_event(&e));
        assert_eq!(row.user.as_deref(), Some("bob"));
        assert_eq!(row.media_id.as_deref(), Some("x"));
    }

    #[test]
    fn a_payload_that_is_not_json_still_gives_a_row() {
        let mut e = ev("cytube.in.lobby.chatMsg", serde_json::json!(null), &[]);
        e.payload = b"{not json".to_vec();
        let row = e.with_event(|e| LogRow::from_event(&e));
        assert_eq!(row.raw, "null");
        assert_eq!(row.user, None);
    }

    #[test]
    fn first_matching_rule_decides() {
        let rules = Rules::new(vec![
            Rule {
                subject: "cytube.in.*.mediaUpdate".into(),
                tags: vec![],
                log: false,
                enabled: true,
            },
            Rule {
                subject: "cytube.in.>".into(),
                tags: vec![],
                log: true,
                enabled: true,
            },
            Rule {
                subject: "other.x".into(),
                tags: vec!["keep".into()],
                log: true,
                enabled: true,
            },
            Rule {
                subject: "off.x".into(),
                tags: vec![],
                log: true,
                enabled: false,
            },
        ]);
        let logs = |s: &str, tags: &[&str]| {
            ev(s, serde_json::json!({}), tags).with_event(|e| rules.logs(&e))
        };
        assert!(!logs("cytube.in.lobby.mediaUpdate", &[]));
        assert!(logs("cytube.in.lobby.chatMsg", &[]));
        assert!(!logs("other.x", &[]));
        assert!(logs("other.x", &["keep", "more"]));
        assert!(!logs("off.x", &[]));
        assert_eq!(rules.subscriptions(), vec!["cytube.in.>", "other.x"]);
    }

    #[test]
    fn patterns_follow_nats_grammar() {
        let p = |s: &str| s.split('.').map(str::to_owned).collect::<Vec<_>>();
        assert!(pattern_matches(&p("a.*.c"), "a.b.c"));
        assert!(!pattern_matches(&p("a.*.c"), "a.b.c.d"));
        assert!(pattern_matches(&p("a.>"), "a.b.c"));
        assert!(!pattern_matches(&p("a.>"), "a"));
        assert!(!pattern_matches(&p("a.b"), "a"));
    }
}
