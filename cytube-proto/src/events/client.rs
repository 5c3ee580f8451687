//! Payload structs of client → server requests (see `shared/docs/CYTUBE.md`,
//! "Client → server events").
//!
//! These are what the host sends and what the simulator receives. Required
//! fields mirror the server's type checks: a `chatMsg` whose `msg` is not a
//! string fails to decode, as the server rejects it with `errorMsg`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::lenient::{self, Uid};
use super::types::MoveAfter;

/// `chatMsg {msg, meta}`. Slash commands (`/me`, `/afk`, `/kick name reason`, …)
/// travel as chat text.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatMsgOut {
    /// Raw text; the server cuts it to 320 characters and escapes it.
    pub msg: String,
    /// Always `{}` from a bot (the server only honours `modflair`).
    #[serde(default)]
    pub meta: Map<String, Value>,
}

/// `pm {to, msg, meta}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PmOut {
    /// Recipient; must be in the same channel.
    pub to: String,
    /// Raw text.
    pub msg: String,
    /// Always `{}` from a bot.
    #[serde(default)]
    pub meta: Map<String, Value>,
}

/// `queue.pos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueuePos {
    /// After the current item.
    Next,
    /// At the end.
    #[default]
    End,
}

/// `queue {id, type, pos, temp?, duration?, title?}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QueueOut {
    /// Provider id.
    pub id: String,
    /// Provider type (`yt`, `tw`, `cu`, …).
    #[serde(rename = "type")]
    pub media_type: String,
    /// Where.
    #[serde(default)]
    pub pos: QueuePos,
    /// Delete after playing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp: Option<bool>,
    /// Seconds, for live types only.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "lenient::opt_f64"
    )]
    pub duration: Option<f64>,
    /// Title, for custom embeds only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// `joinChannel {name, pw?}`. Only the first one on a socket counts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JoinChannel {
    /// Channel name: 1–30 of `[A-Za-z0-9_-]`.
    pub name: String,
    /// Channel password, skipping the `needPassword` prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pw: Option<String>,
}

/// `login {name, pw?}`: account login with `pw`, guest login without.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Login {
    /// User name.
    pub name: String,
    /// Account password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pw: Option<String>,
}

/// `moveMedia {from, after}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveMedia {
    /// Item to move.
    pub from: Uid,
    /// New place.
    pub after: MoveAfter,
}

/// `assignLeader {name}`; an empty name removes the leader.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AssignLeader {
    /// New leader.
    pub name: String,
}

/// `newPoll {title, opts, obscured, timeout}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NewPoll {
    /// Question.
    pub title: String,
    /// Options.
    pub opts: Vec<String>,
    /// Hide counts from non-moderators until closed.
    #[serde(default)]
    pub obscured: bool,
    /// Auto-close after this many seconds (1..=86400; the server rejects 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

/// `vote {option}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Vote {
    /// Option index.
    #[serde(with = "lenient::u64")]
    pub option: u64,
}

/// `setChannelRank {name, rank}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SetChannelRank {
    /// Whose rank.
    pub name: String,
    /// New rank.
    #[serde(with = "lenient::f64")]
    pub rank: f64,
}

/// `setMotd {motd}`; without the rank the server KICKS the sender.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SetMotd {
    /// New MOTD HTML.
    pub motd: String,
}

/// `mediaUpdate {id, currentTime, paused, type}` sent by the leader.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LeaderMediaUpdate {
    /// Media id.
    pub id: String,
    /// Position in seconds.
    #[serde(rename = "currentTime", with = "lenient::f64")]
    pub current_time: f64,
    /// Paused.
    #[serde(default)]
    pub paused: bool,
    /// Media type.
    #[serde(rename = "type", default)]
    pub media_type: String,
}
