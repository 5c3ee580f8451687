//! What a simulator is started with: server limits, accounts, channels and the
//! media catalog. Defaults are the real server's (CYTUBE.md); tests shrink the
//! timing values.

use std::net::SocketAddr;
use std::time::Duration;

use daz_cytube_proto::flood::FloodParams;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Everything [`crate::Simulator::start`] needs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where to listen; port 0 picks a free port. Default `127.0.0.1:0`.
    pub bind: SocketAddr,
    /// Engine.IO ping interval announced and used by the server (25 s).
    pub ping_interval: Duration,
    /// How long the server waits for a pong before closing (120 s).
    pub ping_timeout: Duration,
    /// Media playback speed: 1.0 is real time, 10.0 plays ten times faster.
    /// Scales the 1 s playback tick, `mediaUpdate` spacing and the 2 s gap
    /// between items, not flood limits or throttles.
    pub time_scale: f64,
    /// Socket.IO connects allowed per client IP in a burst (5).
    pub connect_burst: u32,
    /// One connect token comes back per this interval (10 s).
    pub connect_refill: Duration,
    /// Concurrent sockets per client IP before new ones get `kick` (10).
    pub max_sockets_per_ip: usize,
    /// Channels that exist up front (registered ones keep their state).
    pub channels: Vec<ChannelConfig>,
    /// Registered accounts.
    pub accounts: Vec<Account>,
    /// Media the fake "metadata lookup" knows for `queue` (any type). Live
    /// types (`tw`, `li`, `hl`, `rt`, ...) and custom ones (`fi`, `cm`) do not
    /// need an entry; a `yt` id missing here fails the way a server without a
    /// YouTube API key fails.
    pub media: Vec<MediaSpec>,
    /// One guest login per IP per this interval (60 s).
    pub guest_login_interval: Duration,
    /// `usercount` goes out at most once per this interval per channel (10 s).
    pub usercount_interval: Duration,
    /// A socket that has not sent `40` within this closes (45 s, Socket.IO's default).
    pub connect_timeout: Duration,
    /// Take the client IP from `X-Forwarded-For` when the peer is loopback
    /// (the real deployment sits behind a trusted proxy). Default true; actors
    /// use it to appear from distinct addresses.
    pub trust_forwarded_for: bool,
    /// Most frames kept per socket for [`crate::SimHandle::frames_sent_to`]
    /// (100 000); older ones are dropped first. 0 keeps none, for long runs
    /// (a soak) where the log would only cost memory.
    pub frame_log_cap: usize,
    /// The per-socket chat/PM floor every user is held to, whatever the channel's
    /// antiflood settings ([`FloodParams::CHAT`]: burst 20, 10 per second). Load tests
    /// raise it so a few users can stand for a crowd.
    pub chat_floor: FloodParams,
    /// How far the server's processing lags the socket under a burst (the real
    /// server: 30–110 ms). Default none.
    pub processing_lag: ProcessingLag,
}

/// The server processes a client's frames in order, but under a burst it falls
/// behind the socket: a frame that arrives within `burst_gap` of the previous one
/// from the same socket is processed `min..=max` later (drawn at random), never
/// before the frame ahead of it. Everything time-dependent (the flood limiters,
/// the `time` of a chat line) uses the processing time, as on the real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcessingLag {
    /// Smallest lag of a frame in a burst.
    pub min: Duration,
    /// Largest lag of a frame in a burst.
    pub max: Duration,
    /// Frames closer than this to the previous one are a burst.
    pub burst_gap: Duration,
}

impl ProcessingLag {
    /// The real server's: 30–110 ms for frames within 50 ms of each other.
    pub const REAL: ProcessingLag = ProcessingLag {
        min: Duration::from_millis(30),
        max: Duration::from_millis(110),
        burst_gap: Duration::from_millis(50),
    };

    /// Whether any lag is configured.
    pub fn is_none(&self) -> bool {
        self.max.is_zero()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(120),
            time_scale: 1.0,
            connect_burst: 5,
            connect_refill: Duration::from_secs(10),
            max_sockets_per_ip: 10,
            channels: Vec::new(),
            accounts: Vec::new(),
            media: Vec::new(),
            guest_login_interval: Duration::from_secs(60),
            usercount_interval: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(45),
            trust_forwarded_for: true,
            frame_log_cap: 100_000,
            chat_floor: FloodParams::CHAT,
            processing_lag: ProcessingLag::default(),
        }
    }
}

/// A registered account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// Login name (case is kept for display; lookups ignore case).
    pub name: String,
    /// Password checked by `login {name, pw}`.
    pub password: String,
    /// Site-wide rank: 1 for a normal account, 255 for a site admin.
    #[serde(default = "one")]
    pub global_rank: f64,
}

fn one() -> f64 {
    1.0
}

impl Account {
    /// A normal account (global rank 1).
    pub fn new(name: impl Into<String>, password: impl Into<String>) -> Self {
        Account {
            name: name.into(),
            password: password.into(),
            global_rank: 1.0,
        }
    }

    /// Same, with a global rank.
    pub fn with_rank(mut self, global_rank: f64) -> Self {
        self.global_rank = global_rank;
        self
    }
}

/// A channel known up front.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelConfig {
    /// Channel name (1–30 of `[A-Za-z0-9_-]`, stored lowercased).
    pub name: String,
    /// Registered channels keep state while empty, lock their playlist by
    /// default and have the full permission set; unregistered ones are created
    /// on first join and forgotten when the last socket leaves.
    #[serde(default)]
    pub registered: bool,
    /// Channel password (`opts.password`); `None` for none.
    #[serde(default)]
    pub password: Option<String>,
    /// Channel ranks of registered users: `(name, rank)`, e.g. `("chanboss", 5.0)`.
    #[serde(default)]
    pub ranks: Vec<(String, f64)>,
    /// Overrides merged into the default `channelOpts` (same keys and types).
    #[serde(default)]
    pub opts: Value,
    /// Overrides merged into the default permission thresholds.
    #[serde(default)]
    pub permissions: Value,
    /// Initial MOTD (sanitized like `setMotd`).
    #[serde(default)]
    pub motd: String,
    /// Initial playlist, in order; the first item starts playing when the
    /// channel is created.
    #[serde(default)]
    pub playlist: Vec<MediaSpec>,
}

impl ChannelConfig {
    /// A registered channel with default settings.
    pub fn registered(name: impl Into<String>) -> Self {
        ChannelConfig {
            registered: true,
            ..ChannelConfig::unregistered(name)
        }
    }

    /// An unregistered channel with default settings (a template re-applied
    /// every time the channel is created).
    pub fn unregistered(name: impl Into<String>) -> Self {
        ChannelConfig {
            name: name.into(),
            registered: false,
            password: None,
            ranks: Vec::new(),
            opts: Value::Null,
            permissions: Value::Null,
            motd: String::new(),
            playlist: Vec::new(),
        }
    }

    /// Adds a channel rank.
    pub fn rank(mut self, name: impl Into<String>, rank: f64) -> Self {
        self.ranks.push((name.into(), rank));
        self
    }

    /// Adds a playlist item.
    pub fn media(mut self, media: MediaSpec) -> Self {
        self.playlist.push(media);
        self
    }
}

/// One piece of media: a playlist item or a catalog entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaSpec {
    /// Provider id (`dQw4w9WgXcQ`, `cytube_test_stream_a`).
    pub id: String,
    /// Provider type code (`yt`, `tw`, `fi`, ...).
    #[serde(rename = "type")]
    pub media_type: String,
    /// Title shown in the playlist.
    pub title: String,
    /// Length in whole seconds (0 for live streams without a duration).
    pub seconds: u64,
}

impl MediaSpec {
    /// Any media type.
    pub fn new(
        media_type: impl Into<String>,
        id: impl Into<String>,
        title: impl Into<String>,
        seconds: u64,
    ) -> Self {
        MediaSpec {
            id: id.into(),
            media_type: media_type.into(),
            title: title.into(),
            seconds,
        }
    }

    /// A YouTube video.
    pub fn yt(id: impl Into<String>, title: impl Into<String>, seconds: u64) -> Self {
        MediaSpec::new("yt", id, title, seconds)
    }
}
