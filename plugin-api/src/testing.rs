//! A fake host for unit-testing a plugin in-process, without building a `.so`.
//!
//! [`Harness`] creates the plugin through the same adapter the real host uses (so panics
//! are caught the same way and state crosses in the same envelope), feeds it events,
//! records what it publishes, sends and replies, answers its requests from responders you
//! register, and fires its timers on a fake clock you advance.
//!
//! ```
//! use daz_plugin_api::prelude::*;
//! use daz_plugin_api::testing::Harness;
//!
//! struct Echo { host: Host }
//! impl Plugin for Echo {
//!     const NAME: &'static str = "echo";
//!     type Config = NoConfig;
//!     type State = NoState;
//!     fn create(host: Host, _: NoConfig, _: Option<NoState>) -> Result<Self> {
//!         host.subscribe("echo.in")?;
//!         Ok(Echo { host })
//!     }
//!     fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
//!         self.host.publish(Message::raw("echo.out", event.payload()))?;
//!         Ok(())
//!     }
//! }
//!
//! let mut h = Harness::<Echo>::new(serde_json::json!({})).unwrap();
//! assert_eq!(h.subscriptions(), vec!["echo.in".to_string()]);
//! h.publish("echo.in", &serde_json::json!({"n": 1})).unwrap();
//! assert_eq!(h.published()[0].subject, "echo.out");
//! ```

use std::{
    collections::BTreeMap,
    marker::PhantomData,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, ROption, RResult, RSlice, RStr, RString, RVec},
};
use daz_plugin_abi::{
    AbiError, ERROR_KIND_HOST, HostBox, HostObj, HostObj_TO, KeyValue, MetricOp, OutMessage,
    PluginBox, PublishOutcome, ReplyData,
};
use serde::Serialize;

use crate::{Error, Plugin, Priority, Result, event::OwnedEvent, export::create, plugin::Manifest};

/// A message the plugin published or sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// `Some(name)` for a direct send.
    pub to: Option<String>,
    /// The subject.
    pub subject: String,
    /// The room, if any.
    pub room: Option<String>,
    /// The priority.
    pub priority: Priority,
    /// The tags.
    pub tags: Vec<String>,
    /// The payload as JSON (or a JSON string if it was not valid JSON).
    pub payload: serde_json::Value,
}

/// A reply the plugin gave to a request.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedReply {
    /// The request's reply subject.
    pub reply_to: String,
    /// The payload.
    pub payload: serde_json::Value,
    /// Whether it was an error reply.
    pub is_error: bool,
}

/// A log line the plugin wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedLog {
    /// One of the `abi::LOG_*` levels.
    pub level: u8,
    /// The message.
    pub message: String,
    /// The fields.
    pub fields: Vec<(String, String)>,
}

type Responder = Box<dyn FnMut(&serde_json::Value) -> Result<serde_json::Value> + Send>;

struct Timer {
    id: u64,
    subject: String,
    payload: Vec<u8>,
    due_ms: i64,
    repeat_ms: u64,
}

#[derive(Default)]
struct Recorder {
    plugin: String,
    now_ms: i64,
    published: Vec<Recorded>,
    replies: Vec<RecordedReply>,
    logs: Vec<RecordedLog>,
    metrics: BTreeMap<String, f64>,
    subscriptions: Vec<String>,
    responders: Vec<(String, Responder)>,
    timers: Vec<Timer>,
    next_timer: u64,
    rooms: BTreeMap<String, serde_json::Value>,
    /// Calls of the whole-room `room_state` and of the keyed lookups, for tests that
    /// check which one a plugin uses per event.
    room_state_reads: u64,
    room_lookups: u64,
}

/// The fake host's callback table.
#[derive(Clone)]
struct FakeHost {
    rec: Arc<Mutex<Recorder>>,
}

impl FakeHost {
    fn lock(&self) -> MutexGuard<'_, Recorder> {
        // A panicking plugin cannot poison this lock while holding it (no plugin code
        // runs under it), so recover the guard rather than propagate.
        self.rec.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn record(to: Option<&str>, m: &OutMessage<'_>) -> Recorded {
    let payload = serde_json::from_slice(m.payload.as_slice()).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(m.payload.as_slice()).into_owned())
    });
    Recorded {
        to: to.map(str::to_owned),
        subject: m.subject.as_str().to_owned(),
        room: (!m.room.is_empty()).then(|| m.room.as_str().to_owned()),
        priority: Priority::from_u8(m.priority),
        tags: m.tags.iter().map(|t| t.as_str().to_owned()).collect(),
        payload,
    }
}

fn host_error(msg: impl Into<RString>) -> AbiError {
    AbiError::new(ERROR_KIND_HOST, msg)
}

fn pattern_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl HostObj for FakeHost {
    fn plugin_name(&self) -> RString {
        RString::from(self.lock().plugin.as_str())
    }

    fn publish(&self, message: OutMessage<'_>) -> RResult<PublishOutcome, AbiError> {
        self.lock().published.push(record(None, &message));
        RResult::ROk(PublishOutcome {
            delivered: 1,
            dropped: 0,
        })
    }

    fn send(&self, to: RStr<'_>, message: OutMessage<'_>) -> RResult<PublishOutcome, AbiError> {
        self.lock()
            .published
            .push(record(Some(to.as_str()), &message));
        RResult::ROk(PublishOutcome {
            delivered: 1,
            dropped: 0,
        })
    }

    fn request(&self, message: OutMessage<'_>, _timeout_ms: u64) -> RResult<ReplyData, AbiError> {
        let recorded = record(None, &message);
        let mut rec = self.lock();
        rec.published.push(recorded.clone());
        let Some((_, responder)) = rec
            .responders
            .iter_mut()
            .find(|(p, _)| pattern_matches(p, &recorded.subject))
        else {
            return RResult::RErr(host_error(format!(
                "no responder for {} (register one with Harness::respond)",
                recorded.subject
            )));
        };
        let (payload, is_error) = match responder(&recorded.payload) {
            Ok(v) => (v, false),
            Err(e) => (serde_json::json!({ "error": e.message() }), true),
        };
        RResult::ROk(ReplyData {
            payload: RVec::from(serde_json::to_vec(&payload).unwrap_or_default()),
            is_error,
            source: RString::from("test-responder"),
        })
    }

    fn reply(
        &self,
        reply_to: RStr<'_>,
        payload: RSlice<'_, u8>,
        is_error: bool,
    ) -> RResult<(), AbiError> {
        let payload = serde_json::from_slice(payload.as_slice()).unwrap_or(serde_json::Value::Null);
        self.lock().replies.push(RecordedReply {
            reply_to: reply_to.as_str().to_owned(),
            payload,
            is_error,
        });
        RResult::ROk(())
    }

    fn subscribe(&self, pattern: RStr<'_>) -> RResult<(), AbiError> {
        let p = pattern.as_str();
        if p.is_empty() || p.split('.').any(str::is_empty) {
            return RResult::RErr(host_error(format!("invalid subject pattern {p:?}")));
        }
        let mut rec = self.lock();
        if !rec.subscriptions.iter().any(|s| s == p) {
            rec.subscriptions.push(p.to_owned());
        }
        RResult::ROk(())
    }

    fn unsubscribe(&self, pattern: RStr<'_>) -> RResult<bool, AbiError> {
        let mut rec = self.lock();
        let before = rec.subscriptions.len();
        rec.subscriptions.retain(|s| s != pattern.as_str());
        RResult::ROk(rec.subscriptions.len() != before)
    }

    fn set_timer(
        &self,
        subject: RStr<'_>,
        payload: RSlice<'_, u8>,
        delay_ms: u64,
        repeat_ms: u64,
    ) -> RResult<u64, AbiError> {
        let mut rec = self.lock();
        rec.next_timer += 1;
        let id = rec.next_timer;
        let due_ms = rec.now_ms + i64::try_from(delay_ms).unwrap_or(i64::MAX / 2);
        rec.timers.push(Timer {
            id,
            subject: subject.as_str().to_owned(),
            payload: payload.as_slice().to_vec(),
            due_ms,
            repeat_ms,
        });
        RResult::ROk(id)
    }

    fn cancel_timer(&self, id: u64) -> RResult<bool, AbiError> {
        let mut rec = self.lock();
        let before = rec.timers.len();
        rec.timers.retain(|t| t.id != id);
        RResult::ROk(rec.timers.len() != before)
    }

    fn log(&self, level: u8, message: RStr<'_>, fields: RSlice<'_, KeyValue<'_>>) {
        self.lock().logs.push(RecordedLog {
            level,
            message: message.as_str().to_owned(),
            fields: fields
                .iter()
                .map(|kv| (kv.key.as_str().to_owned(), kv.value.as_str().to_owned()))
                .collect(),
        });
    }

    fn metric(&self, op: MetricOp<'_>) -> RResult<(), AbiError> {
        let mut key = op.name.as_str().to_owned();
        for kv in op.labels.iter() {
            key.push_str(&format!(",{}={}", kv.key.as_str(), kv.value.as_str()));
        }
        let mut rec = self.lock();
        let slot = rec.metrics.entry(key).or_insert(0.0);
        match op.kind {
            daz_plugin_abi::METRIC_GAUGE_SET | daz_plugin_abi::METRIC_HISTOGRAM_OBSERVE => {
                *slot = op.value
            }
            _ => *slot += op.value,
        }
        RResult::ROk(())
    }

    fn room_state(&self, room: RStr<'_>) -> RResult<RString, AbiError> {
        let mut rec = self.lock();
        rec.room_state_reads += 1;
        match rec.rooms.get(room.as_str()) {
            Some(v) => RResult::ROk(RString::from(v.to_string())),
            None => RResult::RErr(host_error(format!("unknown room {}", room.as_str()))),
        }
    }

    // The keyed lookups answer from the same JSON `set_room_state` stored, so a test
    // sets one room and every lookup agrees with it.
    fn room_user(&self, room: RStr<'_>, name: RStr<'_>) -> RResult<ROption<RString>, AbiError> {
        let mut rec = self.lock();
        rec.room_lookups += 1;
        let Some(state) = rec.rooms.get(room.as_str()) else {
            return RResult::RErr(host_error(format!("unknown room {}", room.as_str())));
        };
        let user = state["state"]["users"].as_array().and_then(|users| {
            users.iter().find(|u| {
                u["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name.as_str()))
            })
        });
        RResult::ROk(user.map(|u| RString::from(u.to_string())).into())
    }

    fn room_me(&self, room: RStr<'_>) -> RResult<RString, AbiError> {
        let mut rec = self.lock();
        rec.room_lookups += 1;
        match rec.rooms.get(room.as_str()) {
            Some(state) => {
                let me = match &state["state"]["me"] {
                    serde_json::Value::Null => serde_json::json!({}),
                    me => me.clone(),
                };
                RResult::ROk(RString::from(me.to_string()))
            }
            None => RResult::RErr(host_error(format!("unknown room {}", room.as_str()))),
        }
    }

    fn now_ms(&self) -> i64 {
        self.lock().now_ms
    }
}

/// Runs one plugin in-process against a fake host.
pub struct Harness<P: Plugin> {
    instance: PluginBox,
    host: FakeHost,
    config: serde_json::Value,
    next_id: u64,
    _plugin: PhantomData<fn() -> P>,
}

impl<P: Plugin> Harness<P> {
    /// Creates the plugin with a configuration table (as JSON).
    pub fn new(config: serde_json::Value) -> Result<Self> {
        let host = FakeHost {
            rec: Arc::new(Mutex::new(Recorder {
                plugin: P::NAME.to_owned(),
                now_ms: 1_700_000_000_000,
                ..Recorder::default()
            })),
        };
        let instance = Self::create_instance(&host, &config, None)?;
        Ok(Self {
            instance,
            host,
            config,
            next_id: 0,
            _plugin: PhantomData,
        })
    }

    fn create_instance(
        host: &FakeHost,
        config: &serde_json::Value,
        state: Option<&[u8]>,
    ) -> Result<PluginBox> {
        let host_box: HostBox = HostObj_TO::from_ptr(RArc::new(host.clone()), TD_Opaque);
        let config_json = config.to_string();
        let previous = match state {
            Some(bytes) => ROption::RSome(RSlice::from_slice(bytes)),
            None => ROption::RNone,
        };
        create::<P>(host_box, RStr::from_str(&config_json), previous)
            .into_result()
            .map_err(|e| Error::from_abi(&e))
    }

    /// Simulates a hot reload: exports the state, shuts the instance down and creates a
    /// new one from the state (with the same fake host, so recordings continue).
    pub fn reload(&mut self) -> Result<()> {
        let state = self.export_state()?;
        self.instance
            .shutdown()
            .into_result()
            .map_err(|e| Error::from_abi(&e))?;
        self.host.lock().subscriptions.clear();
        self.instance = Self::create_instance(&self.host, &self.config, Some(&state))?;
        Ok(())
    }

    /// The state the plugin would hand to its next version (raw envelope bytes; empty if
    /// none).
    pub fn export_state(&mut self) -> Result<Vec<u8>> {
        self.instance
            .export_state()
            .into_result()
            .map(|v| v.to_vec())
            .map_err(|e| Error::from_abi(&e))
    }

    /// Calls `shutdown`.
    pub fn shutdown(&mut self) -> Result<()> {
        self.instance
            .shutdown()
            .into_result()
            .map_err(|e| Error::from_abi(&e))
    }

    /// Feeds one event; returns what `on_event` returned.
    pub fn feed(&mut self, event: &OwnedEvent) -> Result<()> {
        event.with_event(|ev| {
            self.instance
                .on_event(ev.view())
                .into_result()
                .map_err(|e| Error::from_abi(&e))
        })
    }

    /// Builds an event with a fresh id and the fake clock's time.
    pub fn event(&mut self, subject: &str, payload: &impl Serialize) -> OwnedEvent {
        self.next_id += 1;
        OwnedEvent {
            id: format!("test-{:020}", self.next_id),
            subject: subject.to_owned(),
            source: "test".to_owned(),
            timestamp_ms: self.now_ms(),
            payload: serde_json::to_vec(payload).unwrap_or_default(),
            ..OwnedEvent::default()
        }
    }

    /// Feeds an event on `subject` if the plugin is subscribed to it (as the real bus
    /// would), returning whether it was delivered.
    pub fn publish(&mut self, subject: &str, payload: &impl Serialize) -> Result<bool> {
        let subscribed = self
            .subscriptions()
            .iter()
            .any(|p| pattern_matches(p, subject));
        if !subscribed {
            return Ok(false);
        }
        let ev = self.event(subject, payload);
        self.feed(&ev)?;
        Ok(true)
    }

    /// Feeds a Cytube chat message from `user` in `room`, as the host publishes it.
    pub fn chat(&mut self, room: &str, user: &str, msg: &str) -> Result<()> {
        let time = self.now_ms();
        let mut ev = self.event(
            &format!("cytube.in.{room}.chatMsg"),
            &serde_json::json!({ "username": user, "msg": msg, "meta": {}, "time": time }),
        );
        ev.room = room.to_owned();
        ev.priority = Priority::High;
        ev.source = format!("cytube:{room}");
        self.feed(&ev)
    }

    /// Feeds a request event and returns the plugin's reply to it, if it gave one.
    pub fn request(
        &mut self,
        subject: &str,
        payload: &impl Serialize,
    ) -> Result<Option<RecordedReply>> {
        let mut ev = self.event(subject, payload);
        let inbox = format!("_INBOX.test.{}", self.next_id);
        ev.reply_to = inbox.clone();
        ev.correlation_id = inbox.clone();
        self.feed(&ev)?;
        Ok(self
            .host
            .lock()
            .replies
            .iter()
            .rev()
            .find(|r| r.reply_to == inbox)
            .cloned())
    }

    /// Registers a responder for the plugin's requests on subjects matching `pattern`.
    pub fn respond(
        &mut self,
        pattern: &str,
        f: impl FnMut(&serde_json::Value) -> Result<serde_json::Value> + Send + 'static,
    ) {
        self.host
            .lock()
            .responders
            .push((pattern.to_owned(), Box::new(f)));
    }

    /// How often the plugin read a whole room ([`crate::Host::room_state`]) and how often
    /// it used a keyed lookup ([`crate::Host::room_user`], [`crate::Host::room_me`]).
    pub fn room_reads(&self) -> (u64, u64) {
        let rec = self.host.lock();
        (rec.room_state_reads, rec.room_lookups)
    }

    /// Sets the room state [`crate::Host::room_state`] returns (the shape of
    /// `GET /api/rooms/<room>`: `{"state": {"users": […], "me": {…}, …}, …}`); the keyed
    /// lookups answer from it too.
    pub fn set_room_state(&mut self, room: &str, state: serde_json::Value) {
        self.host.lock().rooms.insert(room.to_owned(), state);
    }

    /// Advances the fake clock and fires every timer that falls due, in order.
    /// Returns how many fired.
    pub fn advance(&mut self, by: Duration) -> Result<usize> {
        let target = self.now_ms() + i64::try_from(by.as_millis()).unwrap_or(i64::MAX / 2);
        let mut fired = 0;
        loop {
            let due = {
                let mut rec = self.host.lock();
                let next = rec
                    .timers
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.due_ms <= target)
                    .min_by_key(|(_, t)| (t.due_ms, t.id))
                    .map(|(i, _)| i);
                match next {
                    None => None,
                    Some(i) => {
                        let t = &mut rec.timers[i];
                        let ev = (t.subject.clone(), t.payload.clone(), t.due_ms);
                        if t.repeat_ms == 0 {
                            rec.timers.remove(i);
                        } else {
                            t.due_ms += i64::try_from(t.repeat_ms).unwrap_or(i64::MAX / 2);
                        }
                        rec.now_ms = rec.now_ms.max(ev.2);
                        Some(ev)
                    }
                }
            };
            let Some((subject, payload, at)) = due else {
                break;
            };
            self.next_id += 1;
            let ev = OwnedEvent {
                id: format!("test-{:020}", self.next_id),
                subject,
                source: "host".to_owned(),
                timestamp_ms: at,
                payload,
                ..OwnedEvent::default()
            };
            self.feed(&ev)?;
            fired += 1;
        }
        self.host.lock().now_ms = target;
        Ok(fired)
    }

    /// The fake clock.
    pub fn now_ms(&self) -> i64 {
        self.host.lock().now_ms
    }

    /// Everything published or sent so far.
    pub fn published(&self) -> Vec<Recorded> {
        self.host.lock().published.clone()
    }

    /// Takes and clears the recorded publishes.
    pub fn take_published(&mut self) -> Vec<Recorded> {
        std::mem::take(&mut self.host.lock().published)
    }

    /// The chat lines the plugin asked the host to say (`cytube.out.*.chatMsg`), in order.
    pub fn chat_replies(&self) -> Vec<String> {
        self.host
            .lock()
            .published
            .iter()
            .filter(|r| pattern_matches("cytube.out.*.chatMsg", &r.subject))
            .filter_map(|r| {
                r.payload
                    .get("msg")
                    .and_then(|m| m.as_str())
                    .map(str::to_owned)
            })
            .collect()
    }

    /// Replies the plugin gave.
    pub fn replies(&self) -> Vec<RecordedReply> {
        self.host.lock().replies.clone()
    }

    /// Log lines the plugin wrote.
    pub fn logs(&self) -> Vec<RecordedLog> {
        self.host.lock().logs.clone()
    }

    /// Current metric values, keyed `name,label=value,…`.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        self.host.lock().metrics.clone()
    }

    /// Current subscriptions.
    pub fn subscriptions(&self) -> Vec<String> {
        self.host.lock().subscriptions.clone()
    }

    /// Pending timers as `(subject, due in ms from now)`.
    pub fn timers(&self) -> Vec<(String, i64)> {
        let rec = self.host.lock();
        rec.timers
            .iter()
            .map(|t| (t.subject.clone(), t.due_ms - rec.now_ms))
            .collect()
    }

    /// The plugin's manifest.
    pub fn manifest() -> Manifest {
        P::manifest()
    }

    /// Runs the chat examples the plugin declares ([`crate::Plugin::examples`]): for each,
    /// feeds the chat line and checks the replies. Returns a description of every
    /// failure (empty when all pass).
    ///
    /// Each example runs in a fresh harness, as raw chat on `cytube.in.testroom.chatMsg`:
    /// for a plugin that answers routed `command.<name>` events instead, use
    /// `commands::CommandHarness::check_command_examples`.
    pub fn check_chat_examples(config: serde_json::Value) -> Result<Vec<String>> {
        let mut failures = Vec::new();
        for example in P::examples() {
            let mut h = Self::new(config.clone())?;
            h.chat("testroom", &example.user, &example.chat)?;
            let replies = h.chat_replies();
            failures.extend(crate::testing::example_failure(&example, &replies));
        }
        Ok(failures)
    }

    /// The former name of [`Harness::check_chat_examples`], kept for plugins written
    /// against SDK 0.1.
    #[doc(hidden)]
    pub fn run_examples(config: serde_json::Value) -> Result<Vec<String>> {
        Self::check_chat_examples(config)
    }
}

/// Why `replies` do not satisfy `example` (`None` when they do): an example without an
/// expected text wants no reply at all, one with it wants a reply containing it.
pub(crate) fn example_failure(example: &crate::ChatExample, replies: &[String]) -> Option<String> {
    let ok = match (&example.expect, replies) {
        (None, []) => true,
        (Some(want), got) => got.iter().any(|r| r.contains(want.as_str())),
        (None, _) => false,
    };
    (!ok).then(|| {
        format!(
            "example {:?} from {}: expected {} but the plugin said {replies:?}",
            example.chat,
            example.user,
            example
                .expect
                .as_deref()
                .map_or("no reply".to_owned(), |w| format!(
                    "a reply containing {w:?}"
                )),
        )
    })
}
