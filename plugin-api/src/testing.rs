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

use crate::{
    Error, Plugin, Priority, Result, SavedState, event::OwnedEvent, export::create_instance,
    plugin::Manifest,
};

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

/// The real bus's matching rule (`*` one token, `>` one or more trailing tokens).
fn pattern_matches(pattern: &str, subject: &str) -> bool {
    daz_bus::matches(pattern, subject)
}

/// The room of a Cytube subject (`cytube.in.<room>.…`, `cytube.out.<room>.…`), as the
/// host sets it on the events it publishes.
fn room_of(subject: &str) -> Option<&str> {
    let mut tokens = subject.split('.');
    match (tokens.next(), tokens.next(), tokens.next()) {
        (Some("cytube"), Some("in" | "out"), Some(room)) => Some(room),
        _ => None,
    }
}

impl HostObj for FakeHost {
    fn plugin_name(&self) -> RString {
        RString::from(self.lock().plugin.as_str())
    }

    fn publish(&self, message: OutMessage<'_>) -> RResult<PublishOutcome, AbiError> {
        if let Err(e) = daz_bus::validate_subject(message.subject.as_str()) {
            return RResult::RErr(host_error(format!("cannot publish: {e}")));
        }
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
        // Exactly the real bus's grammar, so a pattern the host would refuse (`a.>.b`,
        // spaces, over-long) fails here too.
        if let Err(e) = daz_bus::validate_pattern(p) {
            return RResult::RErr(host_error(format!("cannot subscribe: {e}")));
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

    /// Creates the plugin as a new version would be created on a hot reload or a restart:
    /// with the state a previous version exported. `previous` may be an older schema
    /// (a [`SavedState`] with a lower version, written by hand) to test
    /// [`crate::StateSchema::migrate`].
    pub fn with_state(config: serde_json::Value, previous: &SavedState) -> Result<Self> {
        let host = FakeHost {
            rec: Arc::new(Mutex::new(Recorder {
                plugin: P::NAME.to_owned(),
                now_ms: 1_700_000_000_000,
                ..Recorder::default()
            })),
        };
        let bytes = previous.to_bytes()?;
        let instance = Self::create_instance(&host, &config, Some(&bytes))?;
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
        create_instance::<P>(host_box, RStr::from_str(&config_json), previous)
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

    /// Builds an event with a fresh id and the fake clock's time. On a Cytube subject
    /// (`cytube.in.<room>.…`) the room and source are set as the host sets them.
    pub fn event(&mut self, subject: &str, payload: &impl Serialize) -> OwnedEvent {
        self.next_id += 1;
        let room = room_of(subject).unwrap_or_default().to_owned();
        OwnedEvent {
            id: format!("test-{:020}", self.next_id),
            subject: subject.to_owned(),
            source: if room.is_empty() {
                "test".to_owned()
            } else {
                format!("cytube:{room}")
            },
            room,
            timestamp_ms: self.now_ms(),
            payload: serde_json::to_vec(payload).unwrap_or_default(),
            ..OwnedEvent::default()
        }
    }

    /// A user joins `room` (`cytube.in.<room>.addUser`, as the server sends it) with a
    /// Cytube rank (0 guest, 1 registered, 2 moderator, 3 admin…). Delivered if the plugin
    /// subscribes to it; returns whether it was.
    pub fn add_user(&mut self, room: &str, name: &str, rank: f64) -> Result<bool> {
        self.publish(
            &format!("cytube.in.{room}.addUser"),
            &serde_json::json!({
                "name": name,
                "rank": rank,
                "profile": { "image": "", "text": "" },
                "meta": { "afk": false, "muted": false, "smuted": false, "aliases": [] },
            }),
        )
    }

    /// A user leaves `room` (`cytube.in.<room>.userLeave`). Delivered if the plugin
    /// subscribes to it; returns whether it was.
    pub fn user_leave(&mut self, room: &str, name: &str) -> Result<bool> {
        self.publish(
            &format!("cytube.in.{room}.userLeave"),
            &serde_json::json!({ "name": name }),
        )
    }

    /// Sets this harness's fake clock (unix ms). Every harness has its own clock, which
    /// starts at 2023-11-14 22:13:20 UTC; nothing else moves it but [`Harness::advance`]
    /// and this.
    pub fn set_clock(&mut self, now_ms: i64) {
        self.host.lock().now_ms = now_ms;
    }

    /// Runs a multi-step chat scenario: each step is fed as chat in order, and the replies
    /// the plugin said in chat since the previous step are checked against the step's
    /// expectation. Returns a description of every failure (empty when all pass).
    pub fn run_scenario(&mut self, scenario: &ChatScenario) -> Result<Vec<String>> {
        let mut failures = Vec::new();
        for (i, step) in scenario.steps.iter().enumerate() {
            let before = self.chat_replies().len();
            match &step.action {
                ScenarioAction::Say(line) => self.chat(&scenario.room, &step.user, line)?,
                ScenarioAction::Join(rank) => {
                    self.add_user(&scenario.room, &step.user, *rank)?;
                }
                ScenarioAction::Leave => {
                    self.user_leave(&scenario.room, &step.user)?;
                }
            }
            let replies = self.chat_replies().split_off(before);
            if let Some(f) = step_failure(&step.expect, &replies) {
                failures.push(format!(
                    "step {} ({} {}): {f}",
                    i + 1,
                    step.user,
                    step.action
                ));
            }
        }
        Ok(failures)
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

    /// The private messages the plugin asked the host to send (`cytube.out.*.pm`), in
    /// order.
    pub fn pm_replies(&self) -> Vec<String> {
        self.host
            .lock()
            .published
            .iter()
            .filter(|r| pattern_matches("cytube.out.*.pm", &r.subject))
            .filter_map(|r| {
                r.payload
                    .get("msg")
                    .and_then(|m| m.as_str())
                    .map(str::to_owned)
            })
            .collect()
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
    /// `routing::testing::check_command_examples`.
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

/// One step of a [`ChatScenario`].
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioStep {
    /// Who acts.
    pub user: String,
    /// What they do.
    pub action: ScenarioAction,
    /// What the plugin must say in chat in answer: `Some(text)` a line containing it,
    /// `None` nothing at all.
    pub expect: Option<String>,
}

/// What a user does in a scenario step.
#[derive(Debug, Clone, PartialEq)]
pub enum ScenarioAction {
    /// Types a chat line.
    Say(String),
    /// Joins the room with this rank.
    Join(f64),
    /// Leaves the room.
    Leave,
}

impl std::fmt::Display for ScenarioAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScenarioAction::Say(line) => write!(f, "says {line:?}"),
            ScenarioAction::Join(rank) => write!(f, "joins with rank {rank}"),
            ScenarioAction::Leave => f.write_str("leaves"),
        }
    }
}

/// Several users talking to the plugin in one room, in order, each line with the answer
/// expected — for behaviour one line cannot show (`!tell bob hi`, then bob joins and is
/// told). Run it with [`Harness::run_scenario`].
///
/// ```
/// use daz_plugin_api::testing::ChatScenario;
/// let s = ChatScenario::new("lobby")
///     .say("alice", "!tell bob hi", "I'll tell bob")
///     .join("bob", 1.0, "bob, alice said: hi")
///     .say_silent("bob", "thanks");
/// assert_eq!(s.steps.len(), 3);
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatScenario {
    /// The room it happens in.
    pub room: String,
    /// The steps, in order.
    pub steps: Vec<ScenarioStep>,
}

impl ChatScenario {
    /// An empty scenario in `room`.
    pub fn new(room: impl Into<String>) -> Self {
        Self {
            room: room.into(),
            steps: Vec::new(),
        }
    }

    fn step(mut self, user: &str, action: ScenarioAction, expect: Option<String>) -> Self {
        self.steps.push(ScenarioStep {
            user: user.to_owned(),
            action,
            expect,
        });
        self
    }

    /// `user` says `line`; the plugin answers with a line containing `expect`.
    pub fn say(self, user: &str, line: &str, expect: impl Into<String>) -> Self {
        self.step(
            user,
            ScenarioAction::Say(line.to_owned()),
            Some(expect.into()),
        )
    }

    /// `user` says `line`; the plugin says nothing.
    pub fn say_silent(self, user: &str, line: &str) -> Self {
        self.step(user, ScenarioAction::Say(line.to_owned()), None)
    }

    /// `user` joins with `rank`; the plugin answers with a line containing `expect`.
    pub fn join(self, user: &str, rank: f64, expect: impl Into<String>) -> Self {
        self.step(user, ScenarioAction::Join(rank), Some(expect.into()))
    }

    /// `user` joins with `rank`; the plugin says nothing.
    pub fn join_silent(self, user: &str, rank: f64) -> Self {
        self.step(user, ScenarioAction::Join(rank), None)
    }

    /// `user` leaves; the plugin says nothing.
    pub fn leave(self, user: &str) -> Self {
        self.step(user, ScenarioAction::Leave, None)
    }
}

fn step_failure(expect: &Option<String>, replies: &[String]) -> Option<String> {
    match (expect, replies) {
        (None, []) => None,
        (Some(want), got) if got.iter().any(|r| r.contains(want.as_str())) => None,
        (None, got) => Some(format!("expected no reply but the plugin said {got:?}")),
        (Some(want), got) => Some(format!(
            "expected a reply containing {want:?} but the plugin said {got:?}"
        )),
    }
}

/// The command contract, checked on a created instance: the router delivers every
/// command a plugin declares as `command.<name>`, by chat AND by PM when the scope
/// allows both, so a plugin that declares a command must subscribe to that subject. One
/// that reads raw chat instead answers in chat only and leaves a PM (which `help` lists
/// as usable) unanswered. Returns one failure per declared command nobody receives.
pub(crate) fn undelivered_commands<P: Plugin>(h: &Harness<P>) -> Vec<String> {
    let subs = h.subscriptions();
    P::manifest()
        .commands
        .iter()
        .filter(|spec| {
            let subject = crate::routing::subject(&spec.name);
            !subs.iter().any(|p| pattern_matches(p, &subject))
        })
        .map(|spec| {
            format!(
                "{} declares the command {:?} but does not subscribe to {}: the router delivers it only there (by chat and by PM); subscribe in create and answer with routing::reply",
                P::NAME,
                spec.name,
                crate::routing::subject(&spec.name)
            )
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, Host, NoConfig, StateSchema};
    use serde::Deserialize;

    /// Remembers `!tell <user> <text>` and says it when the user joins; counts joins.
    struct Teller {
        host: Host,
        pending: Vec<(String, String, String)>,
        joins: u64,
        rooms_seen: Vec<String>,
    }

    #[derive(Serialize, Deserialize)]
    struct Joins {
        joins: u64,
    }
    impl StateSchema for Joins {
        const VERSION: u32 = 2;
        fn migrate(from: u32, data: serde_json::Value) -> Result<Self> {
            // Schema 1 called the count "seen".
            match (from, data.get("seen").and_then(serde_json::Value::as_u64)) {
                (1, Some(seen)) => Ok(Joins { joins: seen }),
                _ => Err(Error::state(format!("cannot read schema {from}"))),
            }
        }
    }

    impl Plugin for Teller {
        const NAME: &'static str = "teller";
        type Config = NoConfig;
        type State = Joins;

        fn create(host: Host, _: NoConfig, previous: Option<Joins>) -> Result<Self> {
            host.subscribe("cytube.in.*.chatMsg")?;
            host.subscribe("cytube.in.*.addUser")?;
            host.subscribe("cytube.in.*.userLeave")?;
            Ok(Teller {
                host,
                pending: Vec::new(),
                joins: previous.map_or(0, |p| p.joins),
                rooms_seen: Vec::new(),
            })
        }

        fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
            let room = event.room().unwrap_or("?").to_owned();
            self.rooms_seen.push(room.clone());
            let v: serde_json::Value = event.json()?;
            if event.subject().ends_with(".addUser") {
                self.joins += 1;
                let name = v["name"].as_str().unwrap_or_default().to_owned();
                let mine: Vec<_> = self
                    .pending
                    .iter()
                    .filter(|p| p.1 == name)
                    .cloned()
                    .collect();
                self.pending.retain(|p| p.1 != name);
                for (from, to, text) in mine {
                    self.host
                        .chat(&room, &format!("{to}, {from} said: {text}"))?;
                }
            } else if event.subject().ends_with(".chatMsg") {
                let msg = v["msg"].as_str().unwrap_or_default();
                if let Some(rest) = msg.strip_prefix("!tell ") {
                    let (to, text) = rest.split_once(' ').unwrap_or((rest, ""));
                    let from = v["username"].as_str().unwrap_or_default().to_owned();
                    self.pending.push((from, to.to_owned(), text.to_owned()));
                    self.host
                        .chat(&room, &format!("I'll tell {to} in {room}"))?;
                } else if msg == "!joins" {
                    self.host.chat(&room, &format!("{} joins", self.joins))?;
                }
            }
            Ok(())
        }

        fn export_state(&mut self) -> Result<Option<Joins>> {
            Ok(Some(Joins { joins: self.joins }))
        }
    }

    #[test]
    fn patterns_the_bus_refuses_are_refused_by_the_harness_too() {
        struct Sub;
        impl Plugin for Sub {
            const NAME: &'static str = "sub";
            type Config = String;
            type State = crate::NoState;
            fn create(host: Host, pattern: String, _: Option<crate::NoState>) -> Result<Self> {
                host.subscribe(&pattern)?;
                Ok(Sub)
            }
        }
        let long = format!("a.{}", "b".repeat(daz_bus::subject::MAX_SUBJECT_LEN));
        for bad in ["a.>.b", "a b.c", "a..b", long.as_str()] {
            let err = Harness::<Sub>::new(serde_json::json!(bad)).err().unwrap();
            assert!(err.message().contains("cannot subscribe"), "{bad}: {err}");
        }
        assert!(Harness::<Sub>::new(serde_json::json!("a.*.b.>")).is_ok());
    }

    #[test]
    fn a_multi_step_scenario_with_joins_runs_in_order() {
        let mut h = Harness::<Teller>::new(serde_json::json!({})).unwrap();
        let ok = ChatScenario::new("lobby")
            .say("alice", "!tell bob hi there", "I'll tell bob in lobby")
            .join_silent("carol", 0.0)
            .join("bob", 1.0, "bob, alice said: hi there")
            .leave("bob")
            .join_silent("bob", 1.0)
            .say("dave", "!joins", "3 joins");
        assert_eq!(h.run_scenario(&ok).unwrap(), Vec::<String>::new());
        // The room comes from the subject, for chat and for joins alike.
        let wrong = ChatScenario::new("attic").say_silent("erin", "!tell x y");
        let failures = h.run_scenario(&wrong).unwrap();
        assert_eq!(failures.len(), 1);
        assert!(
            failures[0].contains("step 1 (erin says \"!tell x y\")")
                && failures[0].contains("I'll tell x in attic"),
            "{failures:?}"
        );
    }

    #[test]
    fn joins_and_leaves_carry_the_room_of_their_subject() {
        let mut h = Harness::<Teller>::new(serde_json::json!({})).unwrap();
        assert!(h.add_user("cellar", "bob", 0.0).unwrap());
        assert!(h.user_leave("cellar", "bob").unwrap());
        let ev = h.event("cytube.in.cellar.addUser", &serde_json::json!({}));
        assert_eq!(
            (ev.room.as_str(), ev.source.as_str()),
            ("cellar", "cytube:cellar")
        );
        let ev = h.event("teller.other", &serde_json::json!({}));
        assert_eq!((ev.room.as_str(), ev.source.as_str()), ("", "test"));
    }

    #[test]
    fn a_harness_created_with_an_older_state_schema_migrates_it() {
        let old = SavedState {
            plugin: "teller".into(),
            version: 1,
            data: serde_json::json!({"seen": 41}),
        };
        let mut h = Harness::<Teller>::with_state(serde_json::json!({}), &old).unwrap();
        h.add_user("lobby", "zed", 0.0).unwrap();
        h.chat("lobby", "zed", "!joins").unwrap();
        assert_eq!(h.chat_replies(), vec!["42 joins"]);
        let newer = SavedState {
            plugin: "teller".into(),
            version: 3,
            data: serde_json::json!({}),
        };
        let err = Harness::<Teller>::with_state(serde_json::json!({}), &newer)
            .err()
            .unwrap();
        assert!(err.message().contains("refuses to downgrade"), "{err}");
    }

    #[test]
    fn every_harness_has_its_own_clock() {
        let mut a = Harness::<Teller>::new(serde_json::json!({})).unwrap();
        let b = Harness::<Teller>::new(serde_json::json!({})).unwrap();
        a.set_clock(5_000);
        a.advance(Duration::from_secs(1)).unwrap();
        assert_eq!(a.now_ms(), 6_000);
        assert_eq!(b.now_ms(), 1_700_000_000_000);
        assert_eq!(a.event("x.y", &()).timestamp_ms, 6_000);
    }
}
