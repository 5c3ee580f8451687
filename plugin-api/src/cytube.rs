//! Typed Cytube events: every server → client event of the Cytube protocol as a Rust
//! struct, and the [`ServerEvent`] enum that [`Event::cytube_event`] decodes the host's
//! `cytube.in.<room>.<event>` events into. Also the client → server payloads
//! ([`ClientEvent`], [`ChatMsgOut`], [`QueueOut`], …) for what a plugin publishes on
//! `cytube.out.<room>.<event>`.
//!
//! The types are the ones the host itself parses with (from `daz-cytube-proto`), so a
//! plugin sees exactly what the host saw: user ids accept numbers or strings
//! ([`Uid`]), ranks are `f64`, absent optional fields have defaults. An event the
//! protocol does not know (a newer server) decodes to [`ServerEvent::Unknown`] with its
//! raw payload; only a *known* event whose payload does not fit is an error.
//!
//! ```
//! use daz_plugin_api::cytube::{ServerEvent, User};
//! use daz_plugin_api::prelude::*;
//!
//! /// Greets everyone who joins, by name and rank.
//! struct Greeter { host: Host }
//! impl Plugin for Greeter {
//!     const NAME: &'static str = "greeter";
//!     type Config = NoConfig;
//!     type State = NoState;
//!     fn create(host: Host, _: NoConfig, _: Option<NoState>) -> Result<Self> {
//!         host.subscribe("cytube.in.*.addUser")?;
//!         host.subscribe("cytube.in.*.kick")?;
//!         Ok(Greeter { host })
//!     }
//!     fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
//!         let room = event.room().unwrap_or_default();
//!         match event.cytube_event()? {
//!             ServerEvent::AddUser(User { name, rank, .. }) => {
//!                 self.host.chat(room, &format!("welcome {name} (rank {rank})"))?;
//!             }
//!             ServerEvent::Unknown { name, .. } => {
//!                 self.host.log(Level::Debug, "an event this SDK does not know", &[("event", &name)]);
//!             }
//!             _ => {}
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # use daz_plugin_api::testing::Harness;
//! let mut h = Harness::<Greeter>::new(serde_json::json!({})).unwrap();
//! let mut join = h.event("cytube.in.lobby.addUser", &serde_json::json!({"name": "alice", "rank": 2}));
//! join.room = "lobby".into();
//! h.feed(&join).unwrap();
//! assert_eq!(h.chat_replies(), vec!["welcome alice (rank 2)".to_string()]);
//! ```
//!
//! A single payload type can also be decoded on its own with [`Event::cytube`]:
//! `event.cytube::<ChatMsg>()`.

pub use daz_cytube_proto::events::*;
pub use daz_cytube_proto::room::Me;

use crate::{Error, Event, Result};

/// The prefix of the host's inbound Cytube subjects.
pub const INBOUND_PREFIX: &str = "cytube.in.";

impl<'a> Event<'a> {
    /// The Cytube event name of a `cytube.in.<room>.<event>` event (`chatMsg`,
    /// `addUser`, …); `None` for any other subject.
    pub fn cytube_name(&self) -> Option<&'a str> {
        let rest = self.subject().strip_prefix(INBOUND_PREFIX)?;
        let (room, name) = rest.split_once('.')?;
        (!room.is_empty() && !name.is_empty() && !name.contains('.')).then_some(name)
    }

    /// Decodes a `cytube.in.<room>.<event>` event into its typed form. Unknown event
    /// names give [`ServerEvent::Unknown`] with the raw payload; an error means the
    /// subject is not an inbound Cytube event or a known event's payload does not fit
    /// its type (the message names the event and the mismatch).
    pub fn cytube_event(&self) -> Result<ServerEvent> {
        let name = self.cytube_name().ok_or_else(|| {
            Error::msg(format!(
                "{} is not a Cytube event (cytube.in.<room>.<event>)",
                self.subject()
            ))
        })?;
        let raw: Option<&serde_json::value::RawValue> = if self.payload().is_empty() {
            None
        } else {
            Some(serde_json::from_slice(self.payload()).map_err(|e| {
                Error::msg(format!("payload of {} is not JSON: {e}", self.subject()))
            })?)
        };
        // The host publishes `null` for an event that came without a payload.
        let raw = raw.filter(|r| r.get() != "null");
        ServerEvent::decode(name, raw).map_err(|e| Error::msg(format!("{}: {e}", self.subject())))
    }

    /// Decodes the payload as one Cytube payload type, e.g. `event.cytube::<ChatMsg>()`
    /// on `cytube.in.*.chatMsg` — the same as [`Event::json`], named for the intent.
    pub fn cytube<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(self.payload()).map_err(|e| {
            Error::msg(format!(
                "payload of {} is not a {}: {e}",
                self.subject(),
                std::any::type_name::<T>()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OwnedEvent;

    fn ev(subject: &str, payload: &str) -> OwnedEvent {
        OwnedEvent {
            subject: subject.to_owned(),
            payload: payload.as_bytes().to_vec(),
            ..OwnedEvent::default()
        }
    }

    #[test]
    fn every_kind_of_payload_decodes() {
        let e = ev(
            "cytube.in.lobby.chatMsg",
            r#"{"username":"alice","msg":"hi &amp; bye","meta":{},"time":1700000000000}"#,
        );
        e.with_event(|e| match e.cytube_event().unwrap() {
            ServerEvent::ChatMsg(c) => {
                assert_eq!(c.username, "alice");
                assert_eq!(unescape_chat(&c.msg), "hi & bye");
            }
            other => panic!("{other:?}"),
        });
        e.with_event(|e| assert_eq!(e.cytube::<ChatMsg>().unwrap().username, "alice"));
        let e = ev("cytube.in.lobby.rank", "2");
        e.with_event(|e| {
            assert!(matches!(e.cytube_event().unwrap(), ServerEvent::Rank(r) if r == 2.0))
        });
        let e = ev("cytube.in.lobby.closePoll", "null");
        e.with_event(|e| assert!(matches!(e.cytube_event().unwrap(), ServerEvent::ClosePoll)));
        let e = ev(
            "cytube.in.lobby.userlist",
            r#"[{"name":"bob","rank":1},{"name":"eve","rank":0.5}]"#,
        );
        e.with_event(|e| match e.cytube_event().unwrap() {
            ServerEvent::Userlist(users) => assert_eq!(users.len(), 2),
            other => panic!("{other:?}"),
        });
    }

    #[test]
    fn unknown_events_pass_through_raw_and_bad_payloads_are_errors() {
        let e = ev("cytube.in.lobby.brandNewThing", r#"{"x":[1,2]}"#);
        e.with_event(|e| match e.cytube_event().unwrap() {
            ServerEvent::Unknown { name, payload } => {
                assert_eq!(name, "brandNewThing");
                assert_eq!(payload.unwrap().get(), r#"{"x":[1,2]}"#);
            }
            other => panic!("{other:?}"),
        });
        let e = ev("cytube.in.lobby.addUser", r#"{"rank":1}"#);
        let err = e.with_event(|e| e.cytube_event().unwrap_err());
        assert!(err.message().contains("addUser"), "{}", err.message());
        let e = ev("cytube.in.lobby.addUser", "not json");
        assert!(e.with_event(|e| e.cytube_event()).is_err());
        let e = ev("command.ping", "{}");
        e.with_event(|e| {
            assert_eq!(e.cytube_name(), None);
            assert!(
                e.cytube_event()
                    .unwrap_err()
                    .message()
                    .contains("not a Cytube event")
            );
        });
        let e = ev("cytube.in.lobby.a.b", "{}");
        e.with_event(|e| assert_eq!(e.cytube_name(), None));
    }
}
