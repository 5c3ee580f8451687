//! Read-only views of simulator state for assertions
//! ([`crate::SimHandle::channel`]).

use serde::Serialize;
use serde_json::Value;

/// A channel as it stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelSnapshot {
    /// Lowercase channel name.
    pub name: String,
    /// Registered channels keep their state while empty.
    pub registered: bool,
    /// Logged-in users, join order.
    pub users: Vec<UserSnapshot>,
    /// Sockets in the channel that never logged in.
    pub anonymous: usize,
    /// The playlist in order.
    pub playlist: Vec<ItemSnapshot>,
    /// uid of the playing item.
    pub current: Option<u64>,
    /// Playback position of the current item, seconds (negative = lead-in).
    pub position: f64,
    /// Whether playback is paused (true during the lead-in).
    pub paused: bool,
    /// The leader's name.
    pub leader: Option<String>,
    /// Playlist locked.
    pub locked: bool,
    /// `channelOpts` as last sent.
    pub opts: Value,
    /// `setPermissions` as last sent.
    pub permissions: Value,
    /// Sanitized MOTD.
    pub motd: String,
    /// The chat backlog new joiners get (at most 15 `chatMsg` payloads).
    pub backlog: Vec<Value>,
    /// The open poll (`newPoll` payload with real counts).
    pub poll: Option<Value>,
    /// `drinkCount`.
    pub drink_count: u64,
}

impl ChannelSnapshot {
    /// The user called `name` (case-insensitive).
    pub fn user(&self, name: &str) -> Option<&UserSnapshot> {
        self.users
            .iter()
            .find(|u| u.name.eq_ignore_ascii_case(name))
    }

    /// `usercount` as the server counts it (anonymous sockets included).
    pub fn usercount(&self) -> usize {
        self.users.len() + self.anonymous
    }
}

/// A user in a channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserSnapshot {
    /// Display name.
    pub name: String,
    /// Effective rank.
    pub rank: f64,
    /// AFK flag.
    pub afk: bool,
    /// Muted (shadow mutes included, as the real server reports them).
    pub muted: bool,
    /// Shadow-muted.
    pub smuted: bool,
}

/// A playlist item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemSnapshot {
    /// Playlist uid.
    pub uid: u64,
    /// Media id.
    pub id: String,
    /// Media type code.
    pub media_type: String,
    /// Title.
    pub title: String,
    /// Length in seconds.
    pub seconds: u64,
    /// Removed after it plays.
    pub temp: bool,
    /// Who queued it.
    pub queueby: String,
}
