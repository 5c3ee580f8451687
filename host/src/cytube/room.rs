//! What the host knows about each room, shared read-only with plugins and the HTTP API:
//! the channel state ([`RoomState`], kept by the room's client from server events) and
//! the connection status ([`RoomStatus`]).
//!
//! The [`RoomRegistry`] is the host's [`RoomDirectory`]: `Host::room_state(room)` in a
//! plugin and `GET /api/rooms/<room>` both return [`RoomShared::to_json`]. Writers are
//! the room's own task only; readers take a short read lock and serialize.
//!
//! Nothing here holds a credential: the configured user name is public (it is the bot's
//! name in the channel), passwords live in the client only while it connects.

use std::{collections::BTreeMap, sync::Arc};

use daz_cytube_proto::room::RoomState;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use crate::plugins::host_api::RoomDirectory;

/// Where a room's connection stands. Each transition is published as
/// `host.room.<room>.<state>` and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnState {
    /// Not started yet.
    Idle,
    /// Discovery, websocket and Socket.IO handshake in progress.
    Connecting,
    /// Socket.IO connected; joining and logging in.
    Connected,
    /// In the channel (join burst received). The final state of an anonymous bot.
    Joined,
    /// Logged in and in the channel: outbound messages flow.
    LoggedIn,
    /// Lost the connection; a reconnect is scheduled.
    Disconnected,
    /// Stopped for a reason only an operator can fix (see the last error).
    Failed,
    /// Stopped on purpose (host shutdown, room disabled).
    Stopped,
}

impl ConnState {
    /// The token used in `host.room.<room>.<state>` and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::Idle => "idle",
            ConnState::Connecting => "connecting",
            ConnState::Connected => "connected",
            ConnState::Joined => "joined",
            ConnState::LoggedIn => "logged_in",
            ConnState::Disconnected => "disconnected",
            ConnState::Failed => "failed",
            ConnState::Stopped => "stopped",
        }
    }

    /// The numeric code of the `daz_cytube_connection_state` gauge.
    pub fn code(self) -> i64 {
        self as i64
    }
}

/// The last error, as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorInfo {
    /// Stable kind (`RoomError::kind`).
    pub kind: String,
    /// The message.
    pub message: String,
    /// When (unix ms).
    pub at_ms: i64,
}

/// A room's connection status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoomStatus {
    /// Current state.
    pub state: ConnState,
    /// Since when (unix ms).
    pub since_ms: i64,
    /// Connect attempts so far.
    pub connects: u64,
    /// Sessions that reached the channel.
    pub sessions: u64,
    /// When the next connect attempt is due (unix ms), while disconnected.
    pub retry_at_ms: Option<i64>,
    /// The most recent error.
    pub last_error: Option<ErrorInfo>,
    /// Outbound requests waiting in the governor.
    pub outbound_queued: usize,
}

impl Default for RoomStatus {
    fn default() -> Self {
        RoomStatus {
            state: ConnState::Idle,
            since_ms: crate::now_ms(),
            connects: 0,
            sessions: 0,
            retry_at_ms: None,
            last_error: None,
            outbound_queued: 0,
        }
    }
}

/// One room as the host knows it.
pub struct RoomShared {
    /// Bus name.
    pub name: Arc<str>,
    /// Channel.
    pub channel: String,
    /// Site base URL.
    pub site: String,
    /// Configured bot name (public).
    pub username: Option<String>,
    /// Channel state, written by the room's client.
    pub state: RwLock<RoomState>,
    /// Connection status.
    pub status: Mutex<RoomStatus>,
}

#[derive(Serialize)]
struct RoomJson<'a> {
    room: &'a str,
    channel: &'a str,
    site: &'a str,
    username: Option<&'a str>,
    status: &'a RoomStatus,
    state: &'a RoomState,
}

/// One line of `GET /api/rooms`.
#[derive(Debug, Clone, Serialize)]
pub struct RoomSummary {
    /// Bus name.
    pub room: String,
    /// Channel.
    pub channel: String,
    /// Site.
    pub site: String,
    /// Connection state.
    pub state: ConnState,
    /// The bot's name in the channel, once logged in.
    pub me: Option<String>,
    /// The bot's rank.
    pub rank: f64,
    /// Listed users.
    pub users: usize,
    /// Sockets in the channel (anonymous included).
    pub usercount: u64,
    /// Playlist length.
    pub playlist: usize,
    /// Outbound requests waiting.
    pub outbound_queued: usize,
    /// The most recent error.
    pub last_error: Option<ErrorInfo>,
}

impl RoomShared {
    /// A room with empty state.
    pub fn new(name: &str, channel: &str, site: &str, username: Option<String>) -> Arc<Self> {
        Arc::new(RoomShared {
            name: Arc::from(name),
            channel: channel.to_owned(),
            site: site.to_owned(),
            username,
            state: RwLock::new(RoomState::default()),
            status: Mutex::new(RoomStatus::default()),
        })
    }

    /// The whole room as JSON (plugins' `room_state`, `GET /api/rooms/<room>`).
    pub fn to_json(&self) -> String {
        let status = self.status.lock().clone();
        let state = self.state.read();
        let json = RoomJson {
            room: &self.name,
            channel: &self.channel,
            site: &self.site,
            username: self.username.as_deref(),
            status: &status,
            state: &state,
        };
        // RoomState and RoomStatus hold only strings, numbers and maps with string
        // keys, which always serialize.
        serde_json::to_string(&json).unwrap_or_else(|e| {
            format!(
                "{{\"room\":{:?},\"error\":\"cannot serialize the room state: {e}\"}}",
                &*self.name
            )
        })
    }

    /// The short form for `GET /api/rooms`.
    pub fn summary(&self) -> RoomSummary {
        let status = self.status.lock().clone();
        let state = self.state.read();
        RoomSummary {
            room: self.name.to_string(),
            channel: self.channel.clone(),
            site: self.site.clone(),
            state: status.state,
            me: state.me.name.clone(),
            rank: state.me.rank,
            users: state.users.len(),
            usercount: state.usercount,
            playlist: state.playlist.len(),
            outbound_queued: status.outbound_queued,
            last_error: status.last_error,
        }
    }

    /// The current connection state.
    pub fn conn_state(&self) -> ConnState {
        self.status.lock().state
    }
}

/// Every room of the host, by name.
#[derive(Default)]
pub struct RoomRegistry {
    rooms: RwLock<BTreeMap<String, Arc<RoomShared>>>,
}

impl RoomRegistry {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds (or replaces) a room.
    pub fn insert(&self, room: Arc<RoomShared>) {
        self.rooms.write().insert(room.name.to_string(), room);
    }

    /// Removes a room.
    pub fn remove(&self, name: &str) {
        self.rooms.write().remove(name);
    }

    /// A room by name.
    pub fn get(&self, name: &str) -> Option<Arc<RoomShared>> {
        self.rooms.read().get(name).cloned()
    }

    /// Every room, by name.
    pub fn all(&self) -> Vec<Arc<RoomShared>> {
        self.rooms.read().values().cloned().collect()
    }

    /// Summaries of every room.
    pub fn summaries(&self) -> Vec<RoomSummary> {
        self.all().iter().map(|r| r.summary()).collect()
    }
}

impl RoomDirectory for RoomRegistry {
    fn room_state_json(&self, room: &str) -> Option<String> {
        self.get(room).map(|r| r.to_json())
    }

    fn room_user_json(&self, room: &str, name: &str) -> Option<Option<String>> {
        let room = self.get(room)?;
        let state = room.state.read();
        // A `User` holds strings, numbers and string-keyed maps only: it always serializes.
        Some(state.user(name).and_then(|u| serde_json::to_string(u).ok()))
    }

    fn room_me_json(&self, room: &str) -> Option<String> {
        let room = self.get(room)?;
        let state = room.state.read();
        serde_json::to_string(&state.me).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_serves_state_and_status() {
        let reg = RoomRegistry::new();
        let room = RoomShared::new("lobby", "Lobby", "http://x", Some("bot".into()));
        room.state.write().usercount = 4;
        room.status.lock().state = ConnState::LoggedIn;
        reg.insert(room);
        let json: serde_json::Value =
            serde_json::from_str(&reg.room_state_json("lobby").unwrap()).unwrap();
        assert_eq!(json["room"], "lobby");
        assert_eq!(json["status"]["state"], "logged_in");
        assert_eq!(json["state"]["usercount"], 4);
        assert!(reg.room_state_json("nope").is_none());
        let s = reg.summaries();
        assert_eq!((s.len(), s[0].usercount), (1, 4));
    }

    #[test]
    fn state_tokens_are_valid_subject_tokens() {
        for s in [
            ConnState::Idle,
            ConnState::Connecting,
            ConnState::Connected,
            ConnState::Joined,
            ConnState::LoggedIn,
            ConnState::Disconnected,
            ConnState::Failed,
            ConnState::Stopped,
        ] {
            daz_bus::validate_subject(&format!("host.room.r.{}", s.as_str())).unwrap();
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::from(s.as_str())
            );
        }
    }
}
