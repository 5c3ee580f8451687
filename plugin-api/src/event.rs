//! Events as plugin code sees them, and messages as plugin code builds them.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};
use abi_stable::std_types::{RSlice, RStr};
use daz_plugin_abi::{EventView, OutMessage};

/// Delivery priority. Mailboxes serve higher priorities first and, when full, drop the
/// lowest first; `Critical` is never dropped silently (the publisher gets an error).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// The default.
    #[default]
    Normal,
    /// Chat, PMs, logins.
    High,
    /// Time-sensitive control.
    Urgent,
    /// Never dropped silently.
    Critical,
}

impl Priority {
    /// The wire value (0–3).
    pub fn as_u8(self) -> u8 {
        match self {
            Priority::Normal => 0,
            Priority::High => 1,
            Priority::Urgent => 2,
            Priority::Critical => 3,
        }
    }

    /// Decodes a wire value; out-of-range values saturate to `Critical`.
    pub fn from_u8(value: u8) -> Self {
        match value {
            0 => Priority::Normal,
            1 => Priority::High,
            2 => Priority::Urgent,
            _ => Priority::Critical,
        }
    }
}

/// Tag set on Cytube chat messages replayed from the channel's backlog on join.
pub const TAG_BACKLOG: &str = "backlog";
/// Tag set on Cytube events caused by the bot itself (its own chat echoed back).
pub const TAG_SELF: &str = "self";
/// Tag set on a Cytube event the server repeats on every (re)join of the bot about
/// something the bot has already seen: the `changeMedia` of the play still in progress
/// (for live media at `currentTime` 0 again, as if it had just started). It is not a
/// new play: count plays without it.
pub const TAG_REPEAT: &str = "repeat";

/// One event, borrowed from the host for the duration of a handler call.
///
/// Copy what you need to keep (`to_owned` on the strings, [`Event::json`] into an owned
/// type): the memory belongs to the host and is reused after the call returns.
#[derive(Clone, Copy)]
pub struct Event<'a> {
    view: EventView<'a>,
}

impl<'a> Event<'a> {
    /// Wraps a raw view (used by the SDK's adapter and harness).
    pub(crate) fn from_view(view: EventView<'a>) -> Self {
        Self { view }
    }

    /// Unique, sortable id.
    pub fn id(&self) -> &'a str {
        self.view.id.as_str()
    }

    /// The subject it was published on.
    pub fn subject(&self) -> &'a str {
        self.view.subject.as_str()
    }

    /// The subject's tokens.
    pub fn tokens(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.view.subject.as_str().split('.')
    }

    /// The Cytube room it concerns, if any.
    pub fn room(&self) -> Option<&'a str> {
        non_empty(self.view.room)
    }

    /// Who published it (`host`, `cytube:<room>`, a plugin name).
    pub fn source(&self) -> &'a str {
        self.view.source.as_str()
    }

    /// Its priority.
    pub fn priority(&self) -> Priority {
        Priority::from_u8(self.view.priority)
    }

    /// Its tags.
    pub fn tags(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.view.tags.as_slice().iter().map(|t| t.as_str())
    }

    /// Whether it carries a tag.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags().any(|t| t == tag)
    }

    /// A chat message replayed from the channel backlog on join: never react to it.
    pub fn is_backlog(&self) -> bool {
        self.has_tag(TAG_BACKLOG)
    }

    /// Caused by the bot itself (its own chat message echoed back).
    pub fn is_self(&self) -> bool {
        self.has_tag(TAG_SELF)
    }

    /// Repeated by the server on the bot's rejoin about something already seen (the
    /// media still playing): not news, not a new play.
    pub fn is_repeat(&self) -> bool {
        self.has_tag(TAG_REPEAT)
    }

    /// The correlation id, if any.
    pub fn correlation_id(&self) -> Option<&'a str> {
        non_empty(self.view.correlation_id)
    }

    /// Where a reply goes, if this is a request.
    pub fn reply_to(&self) -> Option<&'a str> {
        non_empty(self.view.reply_to)
    }

    /// Publish time, unix epoch milliseconds.
    pub fn timestamp_ms(&self) -> i64 {
        self.view.timestamp_ms
    }

    /// The raw JSON payload.
    pub fn payload(&self) -> &'a [u8] {
        self.view.payload.as_slice()
    }

    /// Decodes the payload.
    pub fn json<T: Deserialize<'a>>(&self) -> Result<T> {
        serde_json::from_slice(self.payload()).map_err(|e| {
            Error::msg(format!(
                "payload of {} is not the expected JSON: {e}",
                self.subject()
            ))
        })
    }

    /// The raw view (for the SDK's harness).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn view(&self) -> EventView<'a> {
        self.view
    }
}

impl std::fmt::Debug for Event<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("id", &self.id())
            .field("subject", &self.subject())
            .field("room", &self.room())
            .field("source", &self.source())
            .field("priority", &self.priority())
            .field("payload", &String::from_utf8_lossy(self.payload()))
            .finish()
    }
}

fn non_empty(s: RStr<'_>) -> Option<&str> {
    let s = s.as_str();
    (!s.is_empty()).then_some(s)
}

/// A message to publish, send or request.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub(crate) subject: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) room: Option<String>,
    pub(crate) priority: Priority,
    pub(crate) tags: Vec<String>,
    pub(crate) correlation_id: Option<String>,
}

impl Message {
    /// A message with a JSON payload.
    pub fn new(subject: impl Into<String>, payload: &impl Serialize) -> Result<Self> {
        let payload = serde_json::to_vec(payload)
            .map_err(|e| Error::msg(format!("cannot encode the payload as JSON: {e}")))?;
        Ok(Self::raw(subject, payload))
    }

    /// A message with raw JSON bytes as its payload.
    pub fn raw(subject: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            subject: subject.into(),
            payload: payload.into(),
            room: None,
            priority: Priority::Normal,
            tags: Vec::new(),
            correlation_id: None,
        }
    }

    /// Sets the room.
    pub fn room(mut self, room: impl Into<String>) -> Self {
        self.room = Some(room.into());
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// The subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Lends the message to the host as a borrowed ABI view; `tags` is scratch space
    /// for the tag views.
    pub(crate) fn with_view<R>(&self, f: impl FnOnce(OutMessage<'_>) -> R) -> R {
        let tags: Vec<RStr<'_>> = self.tags.iter().map(|t| RStr::from_str(t)).collect();
        f(OutMessage {
            subject: RStr::from_str(&self.subject),
            payload: RSlice::from_slice(&self.payload),
            room: RStr::from_str(self.room.as_deref().unwrap_or("")),
            priority: self.priority.as_u8(),
            tags: RSlice::from_slice(&tags),
            correlation_id: RStr::from_str(self.correlation_id.as_deref().unwrap_or("")),
        })
    }
}

/// Owned copy of an event, for the testing harness and for plugins that queue events.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OwnedEvent {
    /// Unique id.
    pub id: String,
    /// Subject.
    pub subject: String,
    /// Room, empty for none.
    pub room: String,
    /// Publisher.
    pub source: String,
    /// Priority.
    pub priority: Priority,
    /// Tags.
    pub tags: Vec<String>,
    /// Correlation id, empty for none.
    pub correlation_id: String,
    /// Reply subject, empty for none.
    pub reply_to: String,
    /// Epoch ms.
    pub timestamp_ms: i64,
    /// JSON bytes.
    pub payload: Vec<u8>,
}

impl OwnedEvent {
    /// Copies a borrowed event.
    pub fn from_event(event: &Event<'_>) -> Self {
        Self {
            id: event.id().to_owned(),
            subject: event.subject().to_owned(),
            room: event.room().unwrap_or("").to_owned(),
            source: event.source().to_owned(),
            priority: event.priority(),
            tags: event.tags().map(str::to_owned).collect(),
            correlation_id: event.correlation_id().unwrap_or("").to_owned(),
            reply_to: event.reply_to().unwrap_or("").to_owned(),
            timestamp_ms: event.timestamp_ms(),
            payload: event.payload().to_vec(),
        }
    }

    /// Lends a borrowed view of this event to `f`.
    pub fn with_event<R>(&self, f: impl FnOnce(Event<'_>) -> R) -> R {
        let tags: Vec<RStr<'_>> = self.tags.iter().map(|t| RStr::from_str(t)).collect();
        let view = EventView {
            id: RStr::from_str(&self.id),
            subject: RStr::from_str(&self.subject),
            room: RStr::from_str(&self.room),
            source: RStr::from_str(&self.source),
            priority: self.priority.as_u8(),
            tags: RSlice::from_slice(&tags),
            correlation_id: RStr::from_str(&self.correlation_id),
            reply_to: RStr::from_str(&self.reply_to),
            timestamp_ms: self.timestamp_ms,
            payload: RSlice::from_slice(&self.payload),
        };
        f(Event::from_view(view))
    }
}
