//! What the host knows about each room, shared read-only with plugins and the HTTP API:
//! the channel state ([`RoomState`], kept by the room's client from server events) and
//! the connection status ([`RoomStatus`]).
//!
//! The [`RoomRegistry`] is the host's [`RoomDirectory`]. Readers come in two kinds:
//!
//! * **Whole room** (`Host::room_state(room)` in a plugin, `GET /api/rooms/<room>`): an
//!   immutable [`RoomSnapshot`] behind an `Arc`, published by swapping a pointer. Every
//!   write to the state or the status bumps a version (the write guards of
//!   [`StateCell`] and [`StatusCell`] do it on drop, so no writer can forget); the first
//!   reader after a change copies the state once under a short read lock and swaps the
//!   new snapshot in, and the snapshot serializes itself to JSON at most once, outside
//!   any lock. Readers of an unchanged room share one snapshot and one JSON string.
//!   Copying on every write instead would cost a full copy of the user list per server
//!   event, the very growth with room size this design avoids.
//! * **Keyed** (`Host::room_user`, `Host::room_me`): one hash lookup under the read lock
//!   and a few hundred bytes of JSON, whatever the room's size. The command router asks
//!   this for every command.
//!
//! Writers are the room's own task only.
//!
//! Nothing here holds a credential: the configured user name is public (it is the bot's
//! name in the channel), passwords live in the client only while it connects.

use std::{
    collections::BTreeMap,
    ops::{Deref, DerefMut},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use arc_swap::ArcSwap;
use daz_cytube_proto::room::{Limits, RoomState};
use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
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

/// The room's channel state with a version that every write bumps.
#[derive(Default)]
pub struct StateCell {
    lock: RwLock<RoomState>,
    /// Bumped when a write guard drops (still under the lock), so a reader holding the
    /// read lock sees the version that matches the state it reads.
    version: AtomicU64,
}

/// Write access to a [`StateCell`]; bumps its version on drop.
pub struct StateWriteGuard<'a> {
    guard: RwLockWriteGuard<'a, RoomState>,
    version: &'a AtomicU64,
}

impl StateCell {
    /// Shared read access (keep it short: the room's task waits for it to write).
    pub fn read(&self) -> RwLockReadGuard<'_, RoomState> {
        self.lock.read()
    }

    /// Exclusive write access; the version moves on when the guard drops.
    pub fn write(&self) -> StateWriteGuard<'_> {
        StateWriteGuard {
            guard: self.lock.write(),
            version: &self.version,
        }
    }

    /// The current version.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}

impl Deref for StateWriteGuard<'_> {
    type Target = RoomState;
    fn deref(&self) -> &RoomState {
        &self.guard
    }
}

impl DerefMut for StateWriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut RoomState {
        &mut self.guard
    }
}

impl Drop for StateWriteGuard<'_> {
    fn drop(&mut self) {
        self.version.fetch_add(1, Ordering::AcqRel);
    }
}

/// The room's connection status with a version that every lock bumps.
#[derive(Default)]
pub struct StatusCell {
    lock: Mutex<RoomStatus>,
    version: AtomicU64,
}

/// Access to a [`StatusCell`]; bumps its version on drop (any access may write).
pub struct StatusGuard<'a> {
    guard: MutexGuard<'a, RoomStatus>,
    version: &'a AtomicU64,
}

impl StatusCell {
    /// Locks the status; the version moves on when the guard drops.
    pub fn lock(&self) -> StatusGuard<'_> {
        StatusGuard {
            guard: self.lock.lock(),
            version: &self.version,
        }
    }

    /// A copy of the status (does not move the version).
    pub fn get(&self) -> RoomStatus {
        self.lock.lock().clone()
    }

    /// The current version.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}

impl Deref for StatusGuard<'_> {
    type Target = RoomStatus;
    fn deref(&self) -> &RoomStatus {
        &self.guard
    }
}

impl DerefMut for StatusGuard<'_> {
    fn deref_mut(&mut self) -> &mut RoomStatus {
        &mut self.guard
    }
}

impl Drop for StatusGuard<'_> {
    fn drop(&mut self) {
        self.version.fetch_add(1, Ordering::AcqRel);
    }
}

/// An immutable copy of one room at one version: what whole-room readers get.
pub struct RoomSnapshot {
    /// The state and status versions it was taken at.
    pub version: (u64, u64),
    /// Bus name.
    pub room: Arc<str>,
    /// Connection status.
    pub status: RoomStatus,
    /// Channel state.
    pub state: RoomState,
    /// Serialized on first use, then shared by every reader of this version.
    json: OnceLock<Arc<str>>,
    channel: String,
    site: String,
    username: Option<String>,
}

impl RoomSnapshot {
    /// The whole room as JSON (plugins' `room_state`, `GET /api/rooms/<room>`),
    /// serialized once per snapshot.
    pub fn json(&self) -> Arc<str> {
        self.json
            .get_or_init(|| {
                let json = RoomJson {
                    room: &self.room,
                    channel: &self.channel,
                    site: &self.site,
                    username: self.username.as_deref(),
                    status: &self.status,
                    state: &self.state,
                };
                // RoomState and RoomStatus hold only strings, numbers and maps with
                // string keys, which always serialize.
                Arc::from(serde_json::to_string(&json).unwrap_or_else(|e| {
                    format!(
                        "{{\"room\":{:?},\"error\":\"cannot serialize the room state: {e}\"}}",
                        &*self.room
                    )
                }))
            })
            .clone()
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
    pub state: StateCell,
    /// Connection status.
    pub status: StatusCell,
    /// The caps the state is reset with on every new session.
    limits: Limits,
    /// The latest snapshot handed to whole-room readers (possibly older than the
    /// versions: the next reader replaces it).
    snapshot: ArcSwap<RoomSnapshot>,
    /// Serializes snapshot building, so that readers racing on a changed room copy it
    /// once, not once each.
    building: Mutex<()>,
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
    /// A room with empty state and the default caps.
    pub fn new(name: &str, channel: &str, site: &str, username: Option<String>) -> Arc<Self> {
        Self::with_limits(name, channel, site, username, Limits::default())
    }

    /// A room with empty state and the given caps.
    pub fn with_limits(
        name: &str,
        channel: &str,
        site: &str,
        username: Option<String>,
        limits: Limits,
    ) -> Arc<Self> {
        let name: Arc<str> = Arc::from(name);
        let state = RoomState::with_limits(limits);
        let status = RoomStatus::default();
        // Version (0, 0): what the cells start at, so the first reader of an untouched
        // room reuses this snapshot.
        let snapshot = ArcSwap::from_pointee(RoomSnapshot {
            version: (0, 0),
            room: name.clone(),
            status: status.clone(),
            state: state.clone(),
            json: OnceLock::new(),
            channel: channel.to_owned(),
            site: site.to_owned(),
            username: username.clone(),
        });
        Arc::new(RoomShared {
            name,
            channel: channel.to_owned(),
            site: site.to_owned(),
            username,
            state: StateCell {
                lock: RwLock::new(state),
                version: AtomicU64::new(0),
            },
            status: StatusCell {
                lock: Mutex::new(status),
                version: AtomicU64::new(0),
            },
            limits,
            snapshot,
            building: Mutex::new(()),
        })
    }

    /// The caps on users and playlist items.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Empties the channel state (a new session, a lost connection), keeping the caps.
    pub fn reset_state(&self) {
        *self.state.write() = RoomState::with_limits(self.limits);
    }

    /// The room now: the current snapshot, or a new one if the state or the status
    /// changed since it was taken (see the module docs).
    pub fn snapshot(&self) -> Arc<RoomSnapshot> {
        let current = (self.state.version(), self.status.version());
        let cached = self.snapshot.load_full();
        if cached.version == current {
            return cached;
        }
        let _building = self.building.lock();
        let cached = self.snapshot.load_full();
        let current = (self.state.version(), self.status.version());
        if cached.version == current {
            return cached;
        }
        // Each version is read under its own lock, so it matches what was copied.
        let (state, state_version) = {
            let st = self.state.read();
            (st.clone(), self.state.version())
        };
        let (status, status_version) = {
            let st = self.status.lock.lock();
            (st.clone(), self.status.version())
        };
        let snap = Arc::new(RoomSnapshot {
            version: (state_version, status_version),
            room: self.name.clone(),
            status,
            state,
            json: OnceLock::new(),
            channel: self.channel.clone(),
            site: self.site.clone(),
            username: self.username.clone(),
        });
        self.snapshot.store(snap.clone());
        snap
    }

    /// The whole room as JSON (plugins' `room_state`, `GET /api/rooms/<room>`): a copy
    /// of the current snapshot's, which is serialized once per version.
    pub fn to_json(&self) -> String {
        self.snapshot().json().to_string()
    }

    /// The short form for `GET /api/rooms` (counts only: no copy of the room).
    pub fn summary(&self) -> RoomSummary {
        let status = self.status.get();
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
        self.status.lock.lock().state
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
        reg.get("lobby").unwrap().state.write().apply(
            &daz_cytube_proto::events::ServerEvent::AddUser(daz_cytube_proto::events::User {
                name: "Alice".into(),
                rank: 3.0,
                ..Default::default()
            }),
        );
        let alice: serde_json::Value =
            serde_json::from_str(&reg.room_user_json("lobby", "alice").unwrap().unwrap()).unwrap();
        assert_eq!(
            (alice["name"].as_str(), alice["rank"].as_f64()),
            (Some("Alice"), Some(3.0))
        );
        assert_eq!(reg.room_user_json("lobby", "bob"), Some(None));
        assert_eq!(reg.room_user_json("nope", "alice"), None);
        let me: serde_json::Value =
            serde_json::from_str(&reg.room_me_json("lobby").unwrap()).unwrap();
        assert_eq!(me["rank"], -1.0);
        let s = reg.summaries();
        assert_eq!((s.len(), s[0].usercount), (1, 4));
    }

    #[test]
    fn readers_share_one_snapshot_and_one_json_until_the_room_changes() {
        let room = RoomShared::new("lobby", "Lobby", "http://x", None);
        let a = room.snapshot();
        let b = room.snapshot();
        assert!(Arc::ptr_eq(&a, &b), "an unchanged room is not copied again");
        assert!(Arc::ptr_eq(&a.json(), &b.json()), "and serialized once");

        room.state.write().usercount = 7;
        let c = room.snapshot();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.state.usercount, 7);
        assert_eq!(a.state.usercount, 0, "a snapshot never changes");
        assert!(c.json().contains("\"usercount\":7"));
        assert!(Arc::ptr_eq(&c, &room.snapshot()));

        room.status.lock().state = ConnState::LoggedIn;
        let d = room.snapshot();
        assert!(!Arc::ptr_eq(&c, &d));
        assert_eq!(d.status.state, ConnState::LoggedIn);
        // Reading the status does not count as a change.
        let _ = room.status.get();
        let _ = room.summary();
        assert!(Arc::ptr_eq(&d, &room.snapshot()));
    }

    #[test]
    fn a_reset_keeps_the_rooms_caps() {
        let limits = Limits {
            max_users: 2,
            max_playlist: 5,
        };
        let room = RoomShared::with_limits("lobby", "Lobby", "http://x", None, limits);
        room.state.write().usercount = 3;
        room.reset_state();
        assert_eq!(room.state.read().limits, limits);
        assert_eq!(room.state.read().usercount, 0);
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
