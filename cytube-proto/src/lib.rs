//! The Cytube wire protocol, pure: no I/O, no async runtime.
//!
//! Shared by the host's Cytube client, the Cytube simulator and the plugin SDK.
//! Ground truth is `shared/docs/CYTUBE.md` and the captures beside it.
//!
//! # Layout
//!
//! - [`frame`]: Engine.IO 4 / Socket.IO 4 text frames — zero-copy parsing
//!   ([`frame::parse`]) and encoders for every packet a client or server sends.
//! - [`events`]: typed payloads of every Cytube event, both directions;
//!   [`events::ServerEvent`] / [`events::ClientEvent`] with `decode`, `name` and
//!   `to_frame`; [`events::unescape_chat`] for chat HTML.
//! - [`room`]: [`room::RoomState`], the channel state machine fed with
//!   `ServerEvent`s (users, playlist as a uid-linked list, media, options, …).
//! - [`flood`]: the server's rate limiter mirrored exactly
//!   ([`flood::RateLimiter`]), [`flood::split_message`] and
//!   [`flood::echo_text`] (the server's own 320-unit rule and echo) for the outbound
//!   governor.
//!
//! # Guarantees
//!
//! - Nothing here panics on input from the network: every parser returns a
//!   `Result` whose error says what was wrong.
//! - Parsing a frame is one serde_json pass; payloads stay borrowed and raw until
//!   someone decodes them.
//! - Every time-dependent computation takes the time as an argument.
//! - Unknown event names decode to `Unknown`, never to an error, so a newer
//!   server cannot break a client built from this crate.

pub mod events;
pub mod flood;
pub mod frame;
pub mod room;
