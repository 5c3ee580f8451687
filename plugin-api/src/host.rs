//! [`Host`]: the services the host offers a plugin, in plain Rust types.
//!
//! Every call copies what it is given into host memory before it returns (see the memory
//! rule in [`daz_plugin_abi`]), so arguments may be temporaries.

use std::time::Duration;

use abi_stable::std_types::{RSlice, RStr};
use daz_plugin_abi::{self as abi, HostBox, KeyValue, MetricOp};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    Error, Result,
    error::ErrorKind,
    event::{Event, Message},
};

/// What happened to a published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Published {
    /// How many mailboxes received it.
    pub delivered: u32,
    /// How many deliveries were dropped because a mailbox was full.
    pub dropped: u32,
}

/// A reply to a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// JSON bytes.
    pub payload: Vec<u8>,
    /// Who answered.
    pub source: String,
}

impl Reply {
    /// Decodes the payload.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            Error::msg(format!(
                "reply from {} is not the expected JSON: {e}",
                self.source
            ))
        })
    }
}

/// A timer, as returned by [`Host::timer_once`] and [`Host::timer_every`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(pub u64);

/// Log level for [`Host::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// An operator must act.
    Error,
    /// Something unexpected that the plugin handled.
    Warn,
    /// Normal operation.
    Info,
    /// Detail for debugging.
    Debug,
    /// Even more detail.
    Trace,
}

/// The host's services for one plugin. Cheap to clone; keep it for as long as the plugin
/// instance lives.
#[derive(Clone)]
pub struct Host {
    inner: HostBox,
    name: String,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("plugin", &self.name).finish()
    }
}

fn host_err(e: &abi::AbiError) -> Error {
    Error::from_abi(e)
}

impl Host {
    /// Wraps the raw callback table (used by the SDK and the testing harness).
    pub(crate) fn from_abi(inner: HostBox) -> Self {
        let name = inner.plugin_name().into_string();
        Self { inner, name }
    }

    /// The name of this plugin.
    pub fn plugin_name(&self) -> &str {
        &self.name
    }

    /// Publishes a message to every subscriber of its subject.
    pub fn publish(&self, message: Message) -> Result<Published> {
        let out = message.with_view(|view| self.inner.publish(view));
        out.into_result()
            .map(|o| Published {
                delivered: o.delivered,
                dropped: o.dropped,
            })
            .map_err(|e| host_err(&e))
    }

    /// Publishes a JSON payload on a subject with normal priority.
    pub fn publish_json(&self, subject: &str, payload: &impl Serialize) -> Result<Published> {
        self.publish(Message::new(subject, payload)?)
    }

    /// Sends a message to exactly the named plugin.
    pub fn send(&self, to: &str, message: Message) -> Result<Published> {
        let out = message.with_view(|view| self.inner.send(RStr::from_str(to), view));
        out.into_result()
            .map(|o| Published {
                delivered: o.delivered,
                dropped: o.dropped,
            })
            .map_err(|e| host_err(&e))
    }

    /// Sends a request to one responder of the subject and waits for the reply.
    ///
    /// Fails at once if nobody can answer; fails with a timeout error after `timeout`.
    /// An error reply comes back as `Err` with the responder's message.
    pub fn request(&self, message: Message, timeout: Duration) -> Result<Reply> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let out = message.with_view(|view| self.inner.request(view, timeout_ms));
        match out.into_result() {
            Ok(reply) => {
                let payload = reply.payload.as_slice().to_vec();
                let source = reply.source.as_str().to_owned();
                if reply.is_error {
                    let text = serde_json::from_slice::<serde_json::Value>(&payload)
                        .ok()
                        .and_then(|v| {
                            v.get("error")
                                .and_then(|e| e.as_str().map(str::to_owned))
                                .or_else(|| v.as_str().map(str::to_owned))
                        })
                        .unwrap_or_else(|| String::from_utf8_lossy(&payload).into_owned());
                    Err(Error::msg(format!(
                        "{source} answered with an error: {text}"
                    )))
                } else {
                    Ok(Reply { payload, source })
                }
            }
            Err(e) => Err(host_err(&e)),
        }
    }

    /// Answers a request event with a JSON payload. Does nothing (and returns `Ok`) if the
    /// event is not a request.
    pub fn reply(&self, event: &Event<'_>, payload: &impl Serialize) -> Result<()> {
        let Some(reply_to) = event.reply_to() else {
            return Ok(());
        };
        let bytes = serde_json::to_vec(payload)
            .map_err(|e| Error::msg(format!("cannot encode the reply as JSON: {e}")))?;
        self.reply_raw(reply_to, &bytes, false)
    }

    /// Answers a request event with an error message (`{"error": "..."}`).
    pub fn reply_error(&self, event: &Event<'_>, message: &str) -> Result<()> {
        let Some(reply_to) = event.reply_to() else {
            return Ok(());
        };
        let bytes = serde_json::to_vec(&serde_json::json!({ "error": message }))
            .map_err(|e| Error::msg(e.to_string()))?;
        self.reply_raw(reply_to, &bytes, true)
    }

    /// Answers a request given its reply subject and raw JSON bytes.
    pub fn reply_raw(&self, reply_to: &str, payload: &[u8], is_error: bool) -> Result<()> {
        self.inner
            .reply(
                RStr::from_str(reply_to),
                RSlice::from_slice(payload),
                is_error,
            )
            .into_result()
            .map_err(|e| host_err(&e))
    }

    /// Subscribes to a subject pattern (`*` matches one token, `>` the rest).
    ///
    /// Subscriptions made while the plugin is being created take effect atomically when
    /// the new instance starts serving (a hot reload replaces the old set with the new).
    pub fn subscribe(&self, pattern: &str) -> Result<()> {
        self.inner
            .subscribe(RStr::from_str(pattern))
            .into_result()
            .map_err(|e| host_err(&e))
    }

    /// Removes a subscription; `false` if there was none.
    pub fn unsubscribe(&self, pattern: &str) -> Result<bool> {
        self.inner
            .unsubscribe(RStr::from_str(pattern))
            .into_result()
            .map_err(|e| host_err(&e))
    }

    /// Delivers `payload` to this plugin on `subject` once, after `delay`.
    pub fn timer_once(
        &self,
        subject: &str,
        payload: &impl Serialize,
        delay: Duration,
    ) -> Result<TimerId> {
        self.timer(subject, payload, delay, Duration::ZERO)
    }

    /// Delivers `payload` to this plugin on `subject` after `every`, then every `every`.
    pub fn timer_every(
        &self,
        subject: &str,
        payload: &impl Serialize,
        every: Duration,
    ) -> Result<TimerId> {
        if every.is_zero() {
            return Err(Error::msg("a repeating timer needs a period above zero"));
        }
        self.timer(subject, payload, every, every)
    }

    fn timer(
        &self,
        subject: &str,
        payload: &impl Serialize,
        delay: Duration,
        repeat: Duration,
    ) -> Result<TimerId> {
        let bytes = serde_json::to_vec(payload)
            .map_err(|e| Error::msg(format!("cannot encode the timer payload as JSON: {e}")))?;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.inner
            .set_timer(
                RStr::from_str(subject),
                RSlice::from_slice(&bytes),
                ms(delay),
                ms(repeat),
            )
            .into_result()
            .map(TimerId)
            .map_err(|e| host_err(&e))
    }

    /// Cancels a timer; `false` if it had already fired (once) or did not exist.
    pub fn cancel_timer(&self, id: TimerId) -> Result<bool> {
        self.inner
            .cancel_timer(id.0)
            .into_result()
            .map_err(|e| host_err(&e))
    }

    /// Logs through the host's `tracing` with this plugin's name as the target.
    pub fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        let level = match level {
            Level::Error => abi::LOG_ERROR,
            Level::Warn => abi::LOG_WARN,
            Level::Info => abi::LOG_INFO,
            Level::Debug => abi::LOG_DEBUG,
            Level::Trace => abi::LOG_TRACE,
        };
        let kvs: Vec<KeyValue<'_>> = fields
            .iter()
            .map(|(k, v)| KeyValue {
                key: RStr::from_str(k),
                value: RStr::from_str(v),
            })
            .collect();
        self.inner
            .log(level, RStr::from_str(message), RSlice::from_slice(&kvs));
    }

    /// Logs at INFO.
    pub fn info(&self, message: &str) {
        self.log(Level::Info, message, &[]);
    }

    /// Logs at WARN.
    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message, &[]);
    }

    /// Logs at ERROR: an operator must act.
    pub fn error(&self, message: &str) {
        self.log(Level::Error, message, &[]);
    }

    /// Logs at DEBUG.
    pub fn debug(&self, message: &str) {
        self.log(Level::Debug, message, &[]);
    }

    fn metric(
        &self,
        kind: u8,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) -> Result<()> {
        let kvs: Vec<KeyValue<'_>> = labels
            .iter()
            .map(|(k, v)| KeyValue {
                key: RStr::from_str(k),
                value: RStr::from_str(v),
            })
            .collect();
        self.inner
            .metric(MetricOp {
                kind,
                name: RStr::from_str(name),
                help: RStr::from_str(help),
                labels: RSlice::from_slice(&kvs),
                value,
            })
            .into_result()
            .map_err(|e| host_err(&e))
    }

    /// Adds to a counter `daz_plugin_<name>` (labelled with this plugin and `labels`).
    /// Label values must come from a small fixed set, never user names or chat text.
    pub fn counter_add(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        by: f64,
    ) -> Result<()> {
        self.metric(abi::METRIC_COUNTER_ADD, name, help, labels, by)
    }

    /// Sets a gauge `daz_plugin_<name>`.
    pub fn gauge_set(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) -> Result<()> {
        self.metric(abi::METRIC_GAUGE_SET, name, help, labels, value)
    }

    /// Adds to a gauge `daz_plugin_<name>` (negative to subtract).
    pub fn gauge_add(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        by: f64,
    ) -> Result<()> {
        self.metric(abi::METRIC_GAUGE_ADD, name, help, labels, by)
    }

    /// Observes a value into a histogram `daz_plugin_<name>`.
    pub fn observe(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) -> Result<()> {
        self.metric(abi::METRIC_HISTOGRAM_OBSERVE, name, help, labels, value)
    }

    /// The host's state of a Cytube room (users, playlist, media, options) as JSON.
    pub fn room_state(&self, room: &str) -> Result<serde_json::Value> {
        let text = self
            .inner
            .room_state(RStr::from_str(room))
            .into_result()
            .map_err(|e| host_err(&e))?;
        serde_json::from_str(text.as_str())
            .map_err(|e| Error::with_kind(ErrorKind::Host, format!("room state is not JSON: {e}")))
    }

    /// One listed user of a room (case-insensitive name), or `None` if the room lists
    /// nobody by that name. A keyed lookup: unlike [`Host::room_state`] its cost does not
    /// grow with the room's user list or playlist, so it is the one to call per event.
    ///
    /// On a host older than this method the SDK reads the whole room instead (same
    /// answer, slower).
    pub fn room_user(&self, room: &str, name: &str) -> Result<Option<crate::cytube::User>> {
        match self
            .inner
            .room_user(RStr::from_str(room), RStr::from_str(name))
            .into_result()
        {
            Ok(found) => found
                .into_option()
                .map(|json| {
                    serde_json::from_str(json.as_str()).map_err(|e| {
                        Error::with_kind(ErrorKind::Host, format!("room user is not JSON: {e}"))
                    })
                })
                .transpose(),
            Err(e) if ErrorKind::from_abi(e.kind) == ErrorKind::Unsupported => {
                let state = self.room_state(room)?;
                let users = state["state"]["users"].as_array();
                users
                    .and_then(|users| {
                        users.iter().find(|u| {
                            u["name"]
                                .as_str()
                                .is_some_and(|n| n.eq_ignore_ascii_case(name))
                        })
                    })
                    .map(|u| {
                        serde_json::from_value(u.clone()).map_err(|e| {
                            Error::with_kind(ErrorKind::Host, format!("room user: {e}"))
                        })
                    })
                    .transpose()
            }
            Err(e) => Err(host_err(&e)),
        }
    }

    /// The bot's own identity in a room: name, whether it is logged in, its rank. A
    /// keyed lookup like [`Host::room_user`].
    pub fn room_me(&self, room: &str) -> Result<crate::cytube::Me> {
        let json = match self.inner.room_me(RStr::from_str(room)).into_result() {
            Ok(json) => serde_json::from_str(json.as_str()),
            Err(e) if ErrorKind::from_abi(e.kind) == ErrorKind::Unsupported => {
                let state = self.room_state(room)?;
                serde_json::from_value(state["state"]["me"].clone())
            }
            Err(e) => return Err(host_err(&e)),
        };
        json.map_err(|e| Error::with_kind(ErrorKind::Host, format!("room identity: {e}")))
    }

    /// The bot's rank in a room (−1 until the server sends one).
    pub fn bot_rank(&self, room: &str) -> Result<f64> {
        Ok(self.room_me(room)?.rank)
    }

    /// The rank of a listed user in a room, or `None` if the room lists nobody by that
    /// name (anonymous viewers are never listed).
    pub fn user_rank(&self, room: &str, name: &str) -> Result<Option<f64>> {
        Ok(self.room_user(room, name)?.map(|u| u.rank))
    }

    /// Milliseconds since the unix epoch, by the host's clock.
    pub fn now_ms(&self) -> i64 {
        self.inner.now_ms()
    }

    /// Asks the host to say `text` in a room's chat (`cytube.out.<room>.chatMsg`). The
    /// host's governor handles flood limits and splits long text.
    pub fn chat(&self, room: &str, text: &str) -> Result<Published> {
        self.publish(
            Message::new(
                format!("cytube.out.{room}.chatMsg"),
                &serde_json::json!({ "msg": text, "meta": {} }),
            )?
            .room(room)
            .priority(crate::Priority::High),
        )
    }

    /// Asks the host to send a private message (`cytube.out.<room>.pm`).
    pub fn pm(&self, room: &str, to: &str, text: &str) -> Result<Published> {
        self.publish(
            Message::new(
                format!("cytube.out.{room}.pm"),
                &serde_json::json!({ "to": to, "msg": text, "meta": {} }),
            )?
            .room(room)
            .priority(crate::Priority::High),
        )
    }
}

#[cfg(test)]
mod tests {
    use abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{RArc, RResult, RSlice, RStr, RString},
    };

    use super::*;
    use daz_plugin_abi::{AbiError, HostObj, HostObj_TO, OutMessage, PublishOutcome, ReplyData};

    /// A host built before the keyed room lookups existed: it implements only the
    /// methods up to `now_ms`, so the appended ones run their default bodies, exactly
    /// what a new plugin meets on an old host's shorter vtable.
    #[derive(Clone)]
    struct OldHost;

    fn refused<T>() -> RResult<T, AbiError> {
        RResult::RErr(AbiError::new(abi::ERROR_KIND_HOST, "not in this test"))
    }

    impl HostObj for OldHost {
        fn plugin_name(&self) -> RString {
            "old".into()
        }
        fn publish(&self, _: OutMessage<'_>) -> RResult<PublishOutcome, AbiError> {
            refused()
        }
        fn send(&self, _: RStr<'_>, _: OutMessage<'_>) -> RResult<PublishOutcome, AbiError> {
            refused()
        }
        fn request(&self, _: OutMessage<'_>, _: u64) -> RResult<ReplyData, AbiError> {
            refused()
        }
        fn reply(&self, _: RStr<'_>, _: RSlice<'_, u8>, _: bool) -> RResult<(), AbiError> {
            refused()
        }
        fn subscribe(&self, _: RStr<'_>) -> RResult<(), AbiError> {
            refused()
        }
        fn unsubscribe(&self, _: RStr<'_>) -> RResult<bool, AbiError> {
            refused()
        }
        fn set_timer(
            &self,
            _: RStr<'_>,
            _: RSlice<'_, u8>,
            _: u64,
            _: u64,
        ) -> RResult<u64, AbiError> {
            refused()
        }
        fn cancel_timer(&self, _: u64) -> RResult<bool, AbiError> {
            refused()
        }
        fn log(&self, _: u8, _: RStr<'_>, _: RSlice<'_, KeyValue<'_>>) {}
        fn metric(&self, _: MetricOp<'_>) -> RResult<(), AbiError> {
            refused()
        }
        fn room_state(&self, room: RStr<'_>) -> RResult<RString, AbiError> {
            if room.as_str() != "lobby" {
                return refused();
            }
            RResult::ROk(
                serde_json::json!({"room": "lobby", "state": {
                    "me": {"name": "bot", "logged_in": true, "guest": false, "rank": 2.0},
                    "users": [{"name": "Alice", "rank": 3}, {"name": "bot", "rank": 2}]
                }})
                .to_string()
                .into(),
            )
        }
        fn now_ms(&self) -> i64 {
            0
        }
    }

    #[test]
    fn keyed_lookups_on_a_host_that_predates_them_fall_back_to_the_whole_room() {
        let host = Host::from_abi(HostObj_TO::from_ptr(RArc::new(OldHost), TD_Opaque));
        // The raw call answers "unsupported" instead of crashing.
        let raw = host
            .inner
            .room_user(RStr::from_str("lobby"), RStr::from_str("alice"))
            .into_result()
            .unwrap_err();
        assert_eq!(raw.kind, abi::ERROR_KIND_UNSUPPORTED);
        assert!(raw.message.as_str().contains("upgrade the host"));
        // The SDK gives the same answers as a new host would.
        let alice = host.room_user("lobby", "ALICE").unwrap().unwrap();
        assert_eq!((alice.name.as_str(), alice.rank), ("Alice", 3.0));
        assert_eq!(host.room_user("lobby", "ghost").unwrap(), None);
        assert_eq!(host.user_rank("lobby", "bot").unwrap(), Some(2.0));
        assert_eq!(host.bot_rank("lobby").unwrap(), 2.0);
        assert_eq!(host.room_me("lobby").unwrap().name.as_deref(), Some("bot"));
        assert_eq!(
            host.room_user("nowhere", "alice").unwrap_err().kind(),
            ErrorKind::Host
        );
    }
}
