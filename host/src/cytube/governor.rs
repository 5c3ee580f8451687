//! The outbound governor of one room: everything plugins ask the host to send
//! (`cytube.out.<room>.<event>`) goes through it, so plugins never need to know the
//! server's limits.
//!
//! What it does, per request:
//! - **Checks** the subject (`cytube.out.<room>.<event>`), refuses identity frames
//!   (`joinChannel`, `login`, `channelPassword`: the host owns the bot's identity),
//!   type-checks known events against `ClientEvent` (a wrongly typed payload would only
//!   earn an `errorMsg`), and refuses frames for which the server would KICK the bot at
//!   its current rank (`setMotd`, `setOptions`, `setPermissions`, CSS/JS,
//!   `assignLeader`).
//! - **Normalises and refuses** chat the server would drop SILENTLY (no echo, no
//!   `cooldown`, no error): control characters become spaces as the server makes them;
//!   a line blank after that, a chat from an anonymous bot, or a chat below the
//!   channel's `chat` permission fails at once with a clear reason.
//! - **Splits** `chatMsg` / `pm` text at word boundaries by the server's own rule: at
//!   most 320 UTF-16 units of RAW text per part (the server cuts before it escapes,
//!   `flood::split_message`).
//! - **Queues** it per priority and per plugin, bounded by `capacity`, with a deadline
//!   (`ttl_ms`). While the connection is down everything is held; an expired request is
//!   reported failed, never silently lost.
//! - **Paces** chat and PMs by the SERVER's clock. The server's limiter (burst 20,
//!   10/s, reset after 2 s idle, shared by chat and PMs; the channel's antiflood
//!   parameters for chat when `chat_antiflood` is on and the bot's rank is below 2)
//!   times a line when it PROCESSES it, which lags the socket by 30–110 ms under a
//!   burst, so write times say nothing exact about it. The governor mirrors the
//!   server's limiter from the `time` of the bot's own echoed lines, and sends:
//!   freely while the lines in flight plus the mirror's count stay within the burst
//!   (whenever the server processes them, they pass); past the burst, one line at a
//!   time, once the previous one's echo is back and the server's clock (mapped by the
//!   smallest receive-minus-`time` seen, which never overestimates it) has reached the
//!   mirror's next slot. No lag or stall can make the server drop such a line. Before
//!   the first echo, a mirror of write times (widened by `margin_ms`) stands in. The
//!   queue limiter is mirrored by write times.
//! - **Resends in order**: a `cooldown` answers the oldest line in flight (the server
//!   answers in order); the line goes back into its queue at its original place (by
//!   submission order), so resent lines and split parts keep their order.
//! - **Holds while muted** (`noflood`, or the bot's own `setUserMeta` with `muted`):
//!   chat waits until the unmute (or fails at once with `on_muted = "fail"`); PMs,
//!   which the server still delivers, go on.
//! - **Shares** fairly: among priorities by smooth weighted round robin (weights 1, 2,
//!   4, 8 for normal … critical, so a flood of high-priority requests slows normal ones
//!   down but never starves them); within a priority, round robin across plugins; FIFO
//!   within one plugin and priority (split parts stay in order).
//! - **Attributes** the server's answers: chat and PM echoes are matched by CONTENT
//!   (the predicted echo: `flood::echo_text`, or the plain text when the server added
//!   links or filters), so a line the server dropped without a word cannot shift the
//!   matching; `cooldown`, `noflood`, `spamFiltered`, `queueFail`, `channelRankFail`,
//!   `errorMsg` are matched to the oldest request sent that they can answer (the
//!   server answers in order); failures are
//!   published as `cytube.out.<room>.failed` carrying the original request (the
//!   originating plugin gets one copy whether or not it subscribes to it). Requests
//!   with no answer within [`ANSWER_WINDOW`] count as delivered.
//!
//! Pure: no I/O, no clock. The room's client feeds it envelopes, signals and the time,
//! sends what [`Governor::next`] returns and reports [`Governor::take_failures`].

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use daz_bus::{Envelope, Priority};
use daz_cytube_proto::{
    events::{ChannelOpts, ChatMsgOut, ClientEvent, Permissions, PmOut},
    flood::{self, FloodParams, MAX_CHAT_LEN, RateLimiter},
    frame,
};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::config::OutboundConfig;

use super::inbound::{Echo, Signal};

/// How long the server's answer to a sent frame may take before the frame counts as
/// delivered.
pub const ANSWER_WINDOW: Duration = Duration::from_secs(5);

/// A request waiting longer than this counts as delayed in the metrics.
const DELAYED_AFTER: Duration = Duration::from_millis(5);

/// Weights of the priorities (normal, high, urgent, critical) in the fair share.
const WEIGHTS: [i64; 4] = [1, 2, 4, 8];

/// Why a request was not (or not entirely) delivered. The `code` is stable (metrics,
/// plugins branching on it); the reason is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailCode {
    /// The request itself is wrong (subject, payload, identity frames).
    Refused,
    /// The server would kick the bot for it at its current rank.
    KickWorthy,
    /// The bot is anonymous (no user name configured) and cannot chat or PM.
    Anonymous,
    /// Too many requests waiting.
    QueueFull,
    /// It waited longer than `ttl_ms` (disconnected, or behind the flood limits).
    Expired,
    /// Dropped by the server's flood control more than `max_retries` times.
    Cooldown,
    /// The bot is muted (`noflood`).
    Muted,
    /// The bot's rank is below the channel's `chat` permission: the server would drop
    /// the line silently.
    NoPermission,
    /// Dropped by the new-account chat restriction (`spamFiltered`).
    SpamFiltered,
    /// `queueFail`.
    QueueFailed,
    /// `channelRankFail`.
    RankFailed,
    /// An `errorMsg` answered it.
    ServerError,
    /// The frame is larger than the server accepts.
    TooLarge,
    /// The room stopped (shutdown, permanent failure) with the request still waiting.
    Stopped,
}

impl FailCode {
    /// The code as text (metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            FailCode::Refused => "refused",
            FailCode::KickWorthy => "kick_worthy",
            FailCode::Anonymous => "anonymous",
            FailCode::QueueFull => "queue_full",
            FailCode::Expired => "expired",
            FailCode::Cooldown => "cooldown",
            FailCode::Muted => "muted",
            FailCode::NoPermission => "no_permission",
            FailCode::SpamFiltered => "spam_filtered",
            FailCode::QueueFailed => "queue_failed",
            FailCode::RankFailed => "rank_failed",
            FailCode::ServerError => "server_error",
            FailCode::TooLarge => "too_large",
            FailCode::Stopped => "stopped",
        }
    }
}

/// A request that failed, to be reported to its plugin.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The envelope the plugin published.
    pub original: Arc<Envelope>,
    /// The Cytube event it asked for.
    pub event: String,
    /// Stable code.
    pub code: FailCode,
    /// What happened and what to do.
    pub reason: String,
    /// Which part of a split message (1-based) and of how many.
    pub part: u32,
    /// Parts in all.
    pub parts: u32,
}

impl Failure {
    /// The plugin that asked.
    pub fn plugin(&self) -> &str {
        &self.original.source
    }

    /// The `cytube.out.<room>.failed` payload:
    /// `{original: {event, subject, payload, source, id, correlation_id}, reason, code,
    /// part, parts}`.
    pub fn to_json(&self) -> serde_json::Value {
        let payload: serde_json::Value = serde_json::from_slice(&self.original.payload)
            .unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&self.original.payload).into())
            });
        serde_json::json!({
            "original": {
                "event": self.event,
                "subject": &*self.original.subject,
                "payload": payload,
                "source": &*self.original.source,
                "id": self.original.id.to_string(),
                "correlation_id": self.original.correlation_id.as_deref(),
            },
            "reason": self.reason,
            "code": self.code,
            "part": self.part,
            "parts": self.parts,
        })
    }
}

/// A frame to send now.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The `42[…]` text.
    pub frame: String,
    /// Who asked.
    pub plugin: Arc<str>,
    /// The Cytube event.
    pub event: String,
    /// How long it waited in the governor.
    pub waited: Duration,
    /// Whether that counts as delayed.
    pub delayed: bool,
}

/// What to do next.
#[derive(Debug)]
pub enum Next {
    /// Send this frame, then ask again.
    Send(Outgoing),
    /// Nothing can go before this instant (a limiter, or the next expiry).
    At(Instant),
    /// Nothing is waiting.
    Idle,
}

/// Whether frames can go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Disconnected or still joining: hold everything.
    Down,
    /// In the channel without a login: everything but chat and PMs.
    Anonymous,
    /// Logged in and joined.
    Ready,
}

/// What the governor needs to know about the bot's standing in the channel.
#[derive(Debug, Clone, Default)]
pub struct Standing {
    /// The bot's rank (−1 until the server says otherwise).
    pub rank: f64,
    /// Channel options (antiflood).
    pub opts: Option<ChannelOpts>,
    /// Permission thresholds.
    pub perms: Permissions,
}

/// The minimum rank the server demands for a frame it KICKS for, or `None` when an
/// unauthorized frame is only ignored.
pub fn kick_threshold(event: &str, perms: &Permissions) -> Option<f64> {
    Some(match event {
        "setMotd" => perms.get("motdedit").unwrap_or(3.0),
        "setOptions" => 2.0,
        "setPermissions" | "setChannelCSS" | "setChannelJS" => 3.0,
        "assignLeader" => perms.get("leaderctl").unwrap_or(2.0),
        _ => return None,
    })
}

/// Which server limiter a request goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Chat,
    Pm,
    Queue,
    Free,
}

#[derive(Debug, Clone)]
struct Request {
    event: String,
    payload: Option<String>,
    original: Arc<Envelope>,
    plugin: Arc<str>,
    priority: Priority,
    lane: Lane,
    submitted: Instant,
    deadline: Instant,
    retries: u32,
    part: u32,
    parts: u32,
    /// A slash command other than `/me` (the server echoes nothing for it).
    silent: bool,
    /// Submission order (all requests of the room): a resent request goes back to its
    /// original place.
    seq: u64,
    /// Limiter tokens the server takes for it (`/me`, `/sp`, … run the chat pipeline
    /// twice).
    cost: u32,
    /// The text the server's echo should carry (chat and PMs).
    expect: Option<Arc<str>>,
}

impl Request {
    fn fail(&self, code: FailCode, reason: impl Into<String>) -> Failure {
        Failure {
            original: self.original.clone(),
            event: self.event.clone(),
            code,
            reason: reason.into(),
            part: self.part,
            parts: self.parts,
        }
    }
}

#[derive(Debug, Default)]
struct Class {
    queues: HashMap<Arc<str>, VecDeque<Request>>,
    /// Plugins with requests, in round-robin order.
    order: VecDeque<Arc<str>>,
    /// Smooth weighted round robin credit.
    credit: i64,
}

impl Class {
    fn push_back(&mut self, r: Request) {
        let q = self.queues.entry(r.plugin.clone()).or_default();
        if q.is_empty() {
            self.order.push_back(r.plugin.clone());
        }
        q.push_back(r);
    }

    /// Puts a request that was sent back where it was: before every request of its
    /// plugin submitted after it.
    fn requeue(&mut self, r: Request) {
        let q = self.queues.entry(r.plugin.clone()).or_default();
        if q.is_empty() {
            self.order.push_front(r.plugin.clone());
        }
        let at = q.iter().position(|x| x.seq > r.seq).unwrap_or(q.len());
        q.insert(at, r);
    }
}

#[derive(Debug)]
struct Awaiting {
    req: Request,
    sent_at: Instant,
}

/// Settings derived from `[rooms.outbound]`.
#[derive(Debug, Clone)]
pub struct GovernorConfig {
    /// Requests waiting at most.
    pub capacity: usize,
    /// Deadline of a request.
    pub ttl: Duration,
    /// Added to the server's spacing.
    pub margin: Duration,
    /// Resends after `cooldown`.
    pub max_retries: u32,
    /// Chat/PM limiter overrides.
    pub chat_burst: Option<u32>,
    /// Chat/PM sustained rate override.
    pub chat_per_second: Option<f64>,
    /// Chat/PM reset override.
    pub chat_reset: Option<Duration>,
    /// Largest frame the server accepts.
    pub max_frame: usize,
    /// While muted: hold chat until the unmute (`false`) or fail it at once (`true`).
    pub fail_when_muted: bool,
}

impl From<&OutboundConfig> for GovernorConfig {
    fn from(c: &OutboundConfig) -> Self {
        GovernorConfig {
            capacity: c.capacity,
            ttl: Duration::from_millis(c.ttl_ms),
            margin: Duration::from_millis(c.margin_ms),
            max_retries: c.max_retries,
            chat_burst: c.chat_burst,
            chat_per_second: c.chat_per_second,
            chat_reset: c.chat_reset_ms.map(Duration::from_millis),
            max_frame: frame::MAX_FRAME_BYTES,
            fail_when_muted: c.on_muted == crate::config::MutedPolicy::Fail,
        }
    }
}

/// The governor of one room. See the module docs.
#[derive(Debug)]
pub struct Governor {
    room: Arc<str>,
    prefix: String,
    cfg: GovernorConfig,
    classes: [Class; 4],
    queued: usize,
    chat: RateLimiter,
    queue: RateLimiter,
    paused_until: Option<Instant>,
    awaiting: VecDeque<Awaiting>,
    standing: Standing,
    failures: Vec<Failure>,
    /// The lane of the frame [`Governor::next`] released last, until [`Governor::sent`]
    /// stamps its limiter slot.
    unstamped: Option<Lane>,
    /// Next submission number.
    seq: u64,
    /// The server's chat/PM limiter as the echoes show it, in server time (see
    /// [`Governor::srv_instant`]).
    srv: RateLimiter,
    /// Smallest (local epoch ms at receipt − echo `time`) seen this session: local
    /// epoch − this never exceeds the server's clock. `None` before the first echo.
    offset_ms: Option<i64>,
    /// An instant and the epoch ms it stands for: local instants ↔ epoch ms.
    anchor: (Instant, i64),
    /// The bot is muted in the channel.
    muted: bool,
}

/// Server times are placed on the instant line this far after the anchor, so that
/// times before the anchor stay representable.
const SRV_SHIFT_MS: i64 = 86_400_000;

impl Governor {
    /// A governor for `room`.
    pub fn new(room: &str, cfg: GovernorConfig) -> Self {
        Governor {
            room: Arc::from(room),
            prefix: format!("cytube.out.{room}."),
            cfg,
            classes: Default::default(),
            queued: 0,
            chat: RateLimiter::chat_default(),
            queue: RateLimiter::queue_for_rank(-1.0),
            paused_until: None,
            awaiting: VecDeque::new(),
            standing: Standing {
                rank: -1.0,
                ..Standing::default()
            },
            failures: Vec::new(),
            unstamped: None,
            seq: 0,
            srv: RateLimiter::chat_default(),
            offset_ms: None,
            anchor: (Instant::now(), crate::now_ms()),
            muted: false,
        }
    }

    /// Sets which epoch ms `at` stands for (tests on a simulated clock).
    pub fn set_anchor(&mut self, at: Instant, epoch_ms: i64) {
        self.anchor = (at, epoch_ms);
    }

    /// Local epoch ms of `at`.
    fn epoch_ms(&self, at: Instant) -> i64 {
        let (i, ms) = self.anchor;
        match at.checked_duration_since(i) {
            Some(d) => ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            None => ms.saturating_sub(
                i64::try_from(i.saturating_duration_since(at).as_millis()).unwrap_or(i64::MAX),
            ),
        }
    }

    /// Server epoch ms `t` on the mirror's instant line.
    fn srv_instant(&self, t: i64) -> Instant {
        let shifted = t.saturating_sub(self.anchor.1).saturating_add(SRV_SHIFT_MS);
        self.anchor.0 + Duration::from_millis(u64::try_from(shifted).unwrap_or(0))
    }

    /// The earliest server time (epoch ms) at which a line written at `at` can be
    /// processed, if an echo has shown the server's clock.
    fn server_floor(&self, at: Instant) -> Option<i64> {
        self.offset_ms.map(|o| self.epoch_ms(at).saturating_sub(o))
    }

    /// Whether the bot is muted (chat held or failed).
    pub fn muted(&self) -> bool {
        self.muted
    }

    /// The bot was muted or unmuted in the channel.
    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
    }

    /// The frame [`Governor::next`] released was written at `at`. The limiter mirror
    /// counts it from then, not from when it was released: a write delayed by the
    /// scheduler must not shorten the spacing the server sees. Without this call the
    /// next [`Governor::next`] stamps it with its own time.
    pub fn sent(&mut self, at: Instant) {
        if let Some(lane) = self.unstamped.take() {
            self.take_slot(lane, at);
        }
    }

    /// Requests waiting.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Sent requests whose answer has not arrived yet.
    pub fn awaiting(&self) -> usize {
        self.awaiting.len()
    }

    /// Failures since the last call, to be reported.
    pub fn take_failures(&mut self) -> Vec<Failure> {
        std::mem::take(&mut self.failures)
    }

    /// The bot's standing changed (rank, options, permissions).
    pub fn set_standing(&mut self, standing: Standing) {
        self.standing = standing;
    }

    /// The current standing.
    pub fn standing(&self) -> &Standing {
        &self.standing
    }

    /// A new connection: the server starts fresh limiters for the new socket, and
    /// answers to frames sent on the old one will never come (they count as delivered).
    pub fn new_session(&mut self) {
        self.unstamped = None;
        self.chat = RateLimiter::chat_default();
        self.queue = RateLimiter::queue_for_rank(self.standing.rank);
        self.paused_until = None;
        self.awaiting.clear();
        self.srv = RateLimiter::chat_default();
        self.offset_ms = None;
        self.muted = false;
    }

    /// The server's own chat/PM parameters for `lane` (no margin): the channel's
    /// antiflood for chat when it applies, else the floor with the configured
    /// overrides.
    fn server_params(&self, lane: Lane) -> FloodParams {
        let mut p = match lane {
            Lane::Chat => flood::chat_params(self.standing.opts.as_ref(), self.standing.rank),
            _ => FloodParams::CHAT,
        };
        if p == FloodParams::CHAT {
            if let Some(b) = self.cfg.chat_burst {
                p.burst = b;
            }
            if let Some(r) = self.cfg.chat_per_second {
                p.sustained = r;
            }
            if let Some(r) = self.cfg.chat_reset {
                p.reset_after = r;
            }
        }
        p
    }

    /// Limiter tokens of chat and PM lines in flight.
    fn in_flight(&self) -> (u32, Option<Instant>) {
        let mut tokens = 0;
        let mut oldest = None;
        for a in &self.awaiting {
            if matches!(a.req.lane, Lane::Chat | Lane::Pm) {
                tokens += a.req.cost;
                oldest.get_or_insert(a.sent_at);
            }
        }
        (tokens, oldest)
    }

    /// When a chat/PM line of `cost` tokens may go, by the server's clock; `None`
    /// while it must wait for answers to the lines in flight.
    fn srv_ready_at(&self, lane: Lane, cost: u32, now: Instant) -> Option<Instant> {
        let p = self.server_params(lane);
        let (m, oldest) = self.in_flight();
        let floor = self.server_floor(now);
        // The count the server can have when the oldest line in flight (or this one)
        // is processed: the limiter resets if that is more than `reset_after` after
        // the last accepted line.
        let first = oldest.map_or(floor, |o| self.server_floor(o));
        let reset_idle = p.reset_after + Duration::from_millis(1);
        let count = match (self.srv.last(), first) {
            (None, _) => 0,
            (Some(last), Some(f))
                if self.srv_instant(f).saturating_duration_since(last) >= reset_idle =>
            {
                0
            }
            (Some(_), _) => self.srv.count(),
        };
        if count + m + cost <= p.burst {
            return Some(now);
        }
        if m > 0 {
            return None;
        }
        let floor = floor?;
        let at_srv = self.srv_instant(floor);
        let mut next = self.srv.next_allowed_with(&p, at_srv);
        if cost > 1 || p.interval().is_none() {
            // The second token of a line would find no slot right after the first:
            // wait for the reset.
            if let Some(last) = self.srv.last() {
                next = next.max(last + reset_idle);
            }
        }
        // One millisecond for the server's whole-millisecond clock.
        let wait = next.saturating_duration_since(at_srv);
        Some(if wait.is_zero() {
            now
        } else {
            now + wait + Duration::from_millis(1)
        })
    }

    /// The chat limiter's parameters for `lane`, widened by the margin.
    fn params(&self, lane: Lane) -> Option<FloodParams> {
        let mut p = match lane {
            Lane::Chat | Lane::Pm => self.server_params(lane),
            Lane::Queue => FloodParams::queue_for_rank(self.standing.rank),
            Lane::Free => return None,
        };
        if let Some(iv) = p.interval() {
            p.sustained = 1.0 / (iv + self.cfg.margin).as_secs_f64();
        }
        p.reset_after += self.cfg.margin;
        Some(p)
    }

    /// Earliest instant the head `r` may go (`None`: not before an answer arrives, or
    /// held while muted).
    fn head_ready_at(&self, r: &Request, now: Instant) -> Option<Instant> {
        if r.lane == Lane::Chat && self.muted && !self.cfg.fail_when_muted {
            return None;
        }
        if !matches!(r.lane, Lane::Chat | Lane::Pm) {
            return Some(self.ready_at(r.lane, now));
        }
        let paused = self.paused_until.unwrap_or(now).max(now);
        if self.offset_ms.is_some() {
            return self
                .srv_ready_at(r.lane, r.cost, now)
                .map(|t| t.max(paused));
        }
        // No echo yet: the burst rule needs no clock; past it, the write-time mirror.
        let (m, _) = self.in_flight();
        let p = self.server_params(r.lane);
        if self.srv.last().is_none() && m + r.cost <= p.burst {
            return Some(paused);
        }
        if m > 0 && self.srv.last().is_none() && m + r.cost > p.burst {
            return None;
        }
        Some(self.ready_at(r.lane, now))
    }

    /// Earliest instant the head of `lane` may go by the write-time mirror.
    fn ready_at(&self, lane: Lane, now: Instant) -> Instant {
        let Some(p) = self.params(lane) else {
            return now;
        };
        let limiter = if lane == Lane::Queue {
            &self.queue
        } else {
            &self.chat
        };
        let mut at = limiter.next_allowed_with(&p, now);
        if matches!(lane, Lane::Chat | Lane::Pm)
            && let Some(until) = self.paused_until
        {
            at = at.max(until);
        }
        at
    }

    fn take_slot(&mut self, lane: Lane, now: Instant) {
        let Some(p) = self.params(lane) else {
            return;
        };
        let limiter = if lane == Lane::Queue {
            &mut self.queue
        } else {
            &mut self.chat
        };
        // `ready_at` said now is allowed; a refusal here cannot happen, and would only
        // mean the mirror is more cautious than the server.
        let _ = limiter.try_acquire_with(&p, now);
    }

    /// Accepts one envelope from the bus. Refusals become failures at once.
    pub fn submit(&mut self, env: Arc<Envelope>, now: Instant, link: Link) {
        let Some(event) = env.subject.strip_prefix(self.prefix.as_str()) else {
            return;
        };
        let event = event.to_owned();
        if event == "failed" {
            // Our own reports, published on the bus (the room subscribes to its whole
            // `cytube.out.<room>.>` space).
            return;
        }
        let plugin = env.source.clone();
        let age = Duration::from_millis(
            u64::try_from(crate::now_ms().saturating_sub(env.timestamp_ms)).unwrap_or(0),
        );
        let submitted = now.checked_sub(age).unwrap_or(now);
        let base = Request {
            event: event.clone(),
            payload: None,
            original: env.clone(),
            plugin,
            priority: env.priority,
            lane: Lane::Free,
            submitted,
            deadline: submitted + self.cfg.ttl,
            retries: 0,
            part: 1,
            parts: 1,
            silent: false,
            seq: 0,
            cost: 1,
            expect: None,
        };
        let refuse = |gov: &mut Governor, code: FailCode, reason: String| {
            gov.failures.push(base.fail(code, reason));
        };
        if event.contains('.') {
            return refuse(
                self,
                FailCode::Refused,
                format!(
                    "subject {:?} has extra tokens; publish on cytube.out.{}.<event>",
                    &*env.subject, self.room
                ),
            );
        }
        if matches!(event.as_str(), "joinChannel" | "login" | "channelPassword") {
            return refuse(
                self,
                FailCode::Refused,
                format!(
                    "{event} is the host's job (the room's [[rooms]] settings decide the channel and the login); plugins cannot send it"
                ),
            );
        }
        let text = match std::str::from_utf8(&env.payload) {
            Ok(t) => t.trim(),
            Err(_) => {
                return refuse(
                    self,
                    FailCode::Refused,
                    "the payload is not UTF-8 JSON".to_owned(),
                );
            }
        };
        let raw: Option<Box<RawValue>> = if text.is_empty() || text == "null" {
            None
        } else {
            match serde_json::from_str(text) {
                Ok(r) => Some(r),
                Err(e) => {
                    return refuse(
                        self,
                        FailCode::Refused,
                        format!("the payload is not JSON: {e}"),
                    );
                }
            }
        };
        let decoded = match ClientEvent::decode(&event, raw.as_deref()) {
            Ok(ev) => ev,
            Err(e) => {
                return refuse(
                    self,
                    FailCode::Refused,
                    format!("{e}; fix the payload (the server would answer errorMsg)"),
                );
            }
        };
        if link != Link::Down
            && let Some(reason) = self.kick_reason(&event)
        {
            return refuse(self, FailCode::KickWorthy, reason);
        }
        let mut requests = Vec::new();
        match &decoded {
            ClientEvent::ChatMsg(c) => {
                if link == Link::Ready
                    && let Some(reason) = self.no_chat_permission()
                {
                    return refuse(self, FailCode::NoPermission, reason);
                }
                if self.muted && self.cfg.fail_when_muted {
                    return refuse(self, FailCode::Muted, muted_reason());
                }
                // The server turns control characters into spaces; doing it first
                // makes the split and the echo predictable.
                let msg = flood::controls_to_spaces(&c.msg);
                let parts = flood::split_message(&msg, MAX_CHAT_LEN);
                let silent = is_silent_command(&msg);
                let command = command_prefix(&msg);
                for (i, part) in parts.iter().enumerate() {
                    let out = ClientEvent::ChatMsg(ChatMsgOut {
                        msg: part.clone(),
                        meta: c.meta.clone(),
                    });
                    let mut r = base.clone();
                    r.lane = Lane::Chat;
                    r.silent = silent;
                    r.payload = out.payload_json().ok().flatten();
                    r.part = u32::try_from(i + 1).unwrap_or(u32::MAX);
                    // A split command keeps its effect on the first part only.
                    let (cost, text) = match command {
                        Some(prefix) if i == 0 => (2, part.strip_prefix(prefix).unwrap_or(part)),
                        _ => (1, part.as_str()),
                    };
                    r.cost = cost;
                    r.expect = (!silent).then(|| Arc::from(flood::echo_text(text)));
                    requests.push(r);
                }
            }
            ClientEvent::Pm(p) => {
                let msg = flood::controls_to_spaces(&p.msg);
                for (i, part) in flood::split_message(&msg, MAX_CHAT_LEN).iter().enumerate() {
                    let out = ClientEvent::Pm(PmOut {
                        to: p.to.clone(),
                        msg: part.clone(),
                        meta: p.meta.clone(),
                    });
                    let mut r = base.clone();
                    r.lane = Lane::Pm;
                    r.expect = Some(Arc::from(flood::echo_text(part)));
                    r.payload = out.payload_json().ok().flatten();
                    r.part = u32::try_from(i + 1).unwrap_or(u32::MAX);
                    requests.push(r);
                }
            }
            other => {
                let mut r = base.clone();
                r.lane = if matches!(other, ClientEvent::Queue(_)) {
                    Lane::Queue
                } else {
                    Lane::Free
                };
                r.payload = raw.as_ref().map(|p| p.get().to_owned());
                requests.push(r);
            }
        }
        if requests.is_empty() {
            return refuse(
                self,
                FailCode::Refused,
                "the message is blank once control characters become spaces; the server would drop it without a word".to_owned(),
            );
        }
        if matches!(requests[0].lane, Lane::Chat | Lane::Pm) && link == Link::Anonymous {
            return refuse(self, FailCode::Anonymous, anonymous_reason(&event));
        }
        let parts = u32::try_from(requests.len()).unwrap_or(u32::MAX);
        if self.queued + requests.len() > self.cfg.capacity {
            return refuse(
                self,
                FailCode::QueueFull,
                format!(
                    "{} requests are already waiting in room {} (capacity {}); slow down or raise [rooms.outbound] capacity",
                    self.queued, self.room, self.cfg.capacity
                ),
            );
        }
        for mut r in requests {
            r.parts = parts;
            let size = r.event.len() + r.payload.as_ref().map_or(0, String::len) + 8;
            if size > self.cfg.max_frame {
                self.failures.push(r.fail(
                    FailCode::TooLarge,
                    format!(
                        "the frame would be {size} bytes; the server accepts at most {}",
                        self.cfg.max_frame
                    ),
                ));
                continue;
            }
            self.queued += 1;
            r.seq = self.seq;
            self.seq += 1;
            self.classes[r.priority.index()].push_back(r);
        }
    }

    /// Why the server would drop the bot's chat silently for want of permission.
    fn no_chat_permission(&self) -> Option<String> {
        let needed = self.standing.perms.get("chat")?;
        (self.standing.rank < needed).then(|| {
            format!(
                "the channel lets rank {needed} and up chat and the bot's rank is {}; the server would drop the line without a word",
                self.standing.rank
            )
        })
    }

    fn kick_reason(&self, event: &str) -> Option<String> {
        let needed = kick_threshold(event, &self.standing.perms)?;
        (self.standing.rank < needed).then(|| {
            format!(
                "refused {event}: the bot's rank is {} and the server kicks for {event} below rank {needed}; promote the bot or drop the request",
                self.standing.rank
            )
        })
    }

    /// Reports requests past their deadline.
    fn expire(&mut self, now: Instant) {
        // Called before every release: nothing to scan (and nothing rebuilt) unless a
        // request is due.
        if self.earliest_deadline().is_none_or(|d| d > now) {
            return;
        }
        for class in &mut self.classes {
            let mut emptied = Vec::new();
            for (plugin, q) in &mut class.queues {
                let before = q.len();
                let mut kept = VecDeque::with_capacity(q.len());
                for r in q.drain(..) {
                    if r.deadline <= now {
                        let waited = now.saturating_duration_since(r.submitted);
                        self.failures.push(r.fail(
                            FailCode::Expired,
                            format!(
                                "not sent within {} ms (waited {} ms: the room was disconnected or the flood limits held it); it was dropped",
                                self.cfg.ttl.as_millis(),
                                waited.as_millis()
                            ),
                        ));
                    } else {
                        kept.push_back(r);
                    }
                }
                self.queued -= before - kept.len();
                *q = kept;
                if q.is_empty() {
                    emptied.push(plugin.clone());
                }
            }
            for p in emptied {
                class.queues.remove(&p);
                class.order.retain(|o| *o != p);
            }
        }
    }

    fn earliest_deadline(&self) -> Option<Instant> {
        self.classes
            .iter()
            .flat_map(|c| c.queues.values())
            .filter_map(|q| q.iter().map(|r| r.deadline).min())
            .min()
    }

    /// What to do now: a frame to send, or when to ask again.
    pub fn next(&mut self, now: Instant, link: Link) -> Next {
        self.sent(now);
        self.expire(now);
        // Oldest first (`sent_at` never decreases), so only the front can be stale: the
        // cost does not grow with the number of frames sent in the last window.
        while self
            .awaiting
            .front()
            .is_some_and(|a| now.saturating_duration_since(a.sent_at) >= ANSWER_WINDOW)
        {
            self.awaiting.pop_front();
        }
        if self.queued == 0 {
            return Next::Idle;
        }
        let deadline = self.earliest_deadline();
        if link == Link::Down {
            return deadline.map_or(Next::Idle, Next::At);
        }
        // A line waiting for answers is looked at again when the oldest answer is due.
        let deadline = match self.awaiting.front() {
            Some(a) => Some(deadline.map_or(a.sent_at + ANSWER_WINDOW, |d| {
                d.min(a.sent_at + ANSWER_WINDOW)
            })),
            None => deadline,
        };
        // Per priority: the first plugin (round robin) whose head may go now.
        let mut ready: [Option<usize>; 4] = [None; 4];
        let mut earliest: Option<Instant> = deadline;
        for (p, class) in self.classes.iter().enumerate() {
            for (i, plugin) in class.order.iter().enumerate() {
                let Some(head) = class.queues.get(plugin).and_then(VecDeque::front) else {
                    continue;
                };
                let Some(at) = self.head_ready_at(head, now) else {
                    continue;
                };
                if at <= now {
                    ready[p] = Some(i);
                    break;
                }
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
        }
        // Smooth weighted round robin among the priorities that can send.
        let total: i64 = (0..4)
            .filter(|&p| ready[p].is_some())
            .map(|p| WEIGHTS[p])
            .sum();
        if total == 0 {
            return earliest.map_or(Next::Idle, Next::At);
        }
        let mut best: Option<usize> = None;
        for p in (0..4).rev() {
            if ready[p].is_some() {
                self.classes[p].credit += WEIGHTS[p];
                if best.is_none_or(|b| self.classes[p].credit > self.classes[b].credit) {
                    best = Some(p);
                }
            }
        }
        let Some(p) = best else {
            return earliest.map_or(Next::Idle, Next::At);
        };
        self.classes[p].credit -= total;
        let Some(idx) = ready[p] else {
            return earliest.map_or(Next::Idle, Next::At);
        };
        let class = &mut self.classes[p];
        let Some(plugin) = class.order.remove(idx) else {
            return earliest.map_or(Next::Idle, Next::At);
        };
        let (req, left) = match class.queues.get_mut(&plugin) {
            Some(q) => (q.pop_front(), q.len()),
            None => (None, 0),
        };
        if left == 0 {
            class.queues.remove(&plugin);
        } else {
            class.order.push_back(plugin);
        }
        let Some(req) = req else {
            return Next::At(now);
        };
        self.queued -= 1;
        // The standing may have changed while it waited.
        if let Some(reason) = self.kick_reason(&req.event) {
            self.failures.push(req.fail(FailCode::KickWorthy, reason));
            return Next::At(now);
        }
        if matches!(req.lane, Lane::Chat | Lane::Pm) && link == Link::Anonymous {
            let reason = anonymous_reason(&req.event);
            self.failures.push(req.fail(FailCode::Anonymous, reason));
            return Next::At(now);
        }
        if req.lane == Lane::Chat {
            if let Some(reason) = self.no_chat_permission() {
                self.failures.push(req.fail(FailCode::NoPermission, reason));
                return Next::At(now);
            }
            if self.muted && self.cfg.fail_when_muted {
                self.failures
                    .push(req.fail(FailCode::Muted, muted_reason()));
                return Next::At(now);
            }
        }
        self.unstamped = Some(req.lane);
        let waited = now.saturating_duration_since(req.submitted);
        let out = Outgoing {
            frame: frame::encode_event_raw(&req.event, req.payload.as_deref()),
            plugin: req.plugin.clone(),
            event: req.event.clone(),
            waited,
            delayed: waited > DELAYED_AFTER + self.cfg.margin || req.retries > 0,
        };
        // Kept in sending order even if a caller's clock went backwards.
        let sent_at = self.awaiting.back().map_or(now, |a| a.sent_at.max(now));
        self.awaiting.push_back(Awaiting { req, sent_at });
        Next::Send(out)
    }

    /// Puts a sent request back into its queue at its original place.
    fn requeue(&mut self, r: Request) {
        self.queued += 1;
        self.classes[r.priority.index()].requeue(r);
    }

    /// The bot's own chat line or PM came back: find the line by its content (the
    /// oldest in flight with the same text; else the same plain text; else the oldest
    /// in flight), settle it and the echo-less commands sent before it, and feed the
    /// server's limiter mirror with the echo's time.
    fn on_echo(&mut self, lane: Lane, echo: &Echo, now: Instant) {
        if let Some(t) = echo.time_ms {
            let d = self.epoch_ms(now).saturating_sub(t);
            self.offset_ms = Some(self.offset_ms.map_or(d, |o| o.min(d)));
        }
        let same_lane = |a: &Awaiting| a.req.lane == lane && !a.req.silent;
        let exact = self
            .awaiting
            .iter()
            .position(|a| same_lane(a) && a.req.expect.as_deref() == Some(echo.msg.as_str()));
        let found = exact
            .or_else(|| {
                let plain = flood::echo_plain(&echo.msg);
                self.awaiting.iter().position(|a| {
                    same_lane(a)
                        && a.req
                            .expect
                            .as_deref()
                            .is_some_and(|e| flood::echo_plain(e) == plain)
                })
            })
            .or_else(|| self.awaiting.iter().position(same_lane));
        let Some(i) = found else {
            return;
        };
        // The server answers in order: chat and PM lines sent before it and still
        // unanswered were echo-less commands or dropped without a word; neither will
        // ever be answered.
        let mut settled: Vec<Request> = Vec::new();
        let mut j = 0;
        let mut idx = i;
        while j < idx {
            if matches!(self.awaiting[j].req.lane, Lane::Chat | Lane::Pm) {
                if let Some(a) = self.awaiting.remove(j) {
                    settled.push(a.req);
                }
                idx -= 1;
            } else {
                j += 1;
            }
        }
        if let Some(a) = self.awaiting.remove(idx) {
            settled.push(a.req);
        }
        if let Some(t) = echo.time_ms {
            let at = self.srv_instant(t);
            for r in &settled {
                let p = self.server_params(r.lane);
                for _ in 0..r.cost {
                    self.srv.record_accepted(&p, at);
                }
            }
        }
    }

    fn take_awaiting(&mut self, pred: impl Fn(&Request) -> bool) -> Option<Request> {
        let i = self.awaiting.iter().position(|a| pred(&a.req))?;
        self.awaiting.remove(i).map(|a| a.req)
    }

    /// The server answered something; match it to what was sent.
    pub fn on_signal(&mut self, signal: &Signal, now: Instant) {
        let chat_or_pm = |r: &Request| matches!(r.lane, Lane::Chat | Lane::Pm);
        match signal {
            Signal::SelfChat(echo) => self.on_echo(Lane::Chat, echo, now),
            Signal::SelfPm(echo) => self.on_echo(Lane::Pm, echo, now),
            Signal::SelfMuted(muted) => self.muted = *muted,
            Signal::Cooldown(ms) => {
                let pause = Duration::from_millis(*ms) + self.cfg.margin;
                self.paused_until = Some(
                    self.paused_until
                        .map_or(now + pause, |u| u.max(now + pause)),
                );
                if let Some(mut r) = self.take_awaiting(chat_or_pm) {
                    if r.retries < self.cfg.max_retries {
                        r.retries += 1;
                        self.requeue(r);
                    } else {
                        let reason = format!(
                            "dropped by the server's flood control {} times (cooldown {ms} ms); given up",
                            r.retries + 1
                        );
                        self.failures.push(r.fail(FailCode::Cooldown, reason));
                    }
                }
            }
            Signal::NoFlood(msg) => {
                // The server counted the line (its limiter runs before the mute check).
                if let Some(r) = self.take_awaiting(chat_or_pm) {
                    if let Some(floor) = self.server_floor(now) {
                        let p = self.server_params(r.lane);
                        let at = self.srv_instant(floor);
                        for _ in 0..r.cost {
                            self.srv.record_accepted(&p, at);
                        }
                    }
                    self.muted = true;
                    if self.cfg.fail_when_muted {
                        self.failures.push(r.fail(
                            FailCode::Muted,
                            format!("the server refused it (noflood): {msg}"),
                        ));
                    } else {
                        // Held until the unmute, at its original place.
                        self.requeue(r);
                    }
                }
            }
            Signal::SpamFiltered(reason) => {
                if let Some(r) = self.take_awaiting(|r| r.lane == Lane::Chat) {
                    self.failures.push(r.fail(
                        FailCode::SpamFiltered,
                        format!("dropped by the new-account chat restriction ({reason}); the account is too new to chat (or post links) here yet"),
                    ));
                }
            }
            Signal::QueueFail(msg) => {
                if let Some(r) = self.take_awaiting(|r| r.lane == Lane::Queue) {
                    self.failures
                        .push(r.fail(FailCode::QueueFailed, format!("queueFail: {msg}")));
                }
            }
            Signal::QueuedByMe => {
                self.take_awaiting(|r| r.lane == Lane::Queue);
            }
            Signal::ChannelRankFail(msg) => {
                if let Some(r) = self.take_awaiting(|r| r.event == "setChannelRank") {
                    self.failures
                        .push(r.fail(FailCode::RankFailed, format!("channelRankFail: {msg}")));
                }
            }
            Signal::UserRankChanged => {
                self.take_awaiting(|r| r.event == "setChannelRank");
            }
            Signal::ErrorMsg(msg) => self.on_error_msg(msg, now),
            _ => {}
        }
    }

    /// `errorMsg` carries no reference to the request. "Unexpected error for message
    /// <event>: …" names the event; PM errors answer the oldest PM; otherwise the most
    /// recent non-chat frame sent within two seconds is the likely cause.
    fn on_error_msg(&mut self, msg: &str, now: Instant) {
        let named = msg
            .split_once("for message ")
            .and_then(|(_, rest)| rest.split(':').next())
            .map(str::trim)
            .filter(|e| !e.is_empty());
        let req = if let Some(event) = named {
            self.take_awaiting(|r| r.event == event)
        } else if let Some(r) = self.take_awaiting(|r| r.lane == Lane::Pm) {
            Some(r)
        } else {
            let recent = self.awaiting.iter().rposition(|a| {
                a.req.lane != Lane::Chat
                    && now.saturating_duration_since(a.sent_at) < Duration::from_secs(2)
            });
            recent.and_then(|i| self.awaiting.remove(i)).map(|a| a.req)
        };
        if let Some(r) = req {
            self.failures
                .push(r.fail(FailCode::ServerError, format!("the server answered: {msg}")));
        }
    }

    /// Fails everything waiting (the room stops).
    pub fn fail_all(&mut self, code: FailCode, reason: &str) {
        for class in &mut self.classes {
            for (_, q) in class.queues.drain() {
                for r in q {
                    self.failures.push(r.fail(code, reason));
                }
            }
            class.order.clear();
        }
        self.queued = 0;
    }
}

fn muted_reason() -> String {
    "the bot is muted in this channel and [rooms.outbound] on_muted = \"fail\"; a moderator must unmute it".to_owned()
}

/// A chat command the server runs the chat pipeline twice for (`/me text` echoes
/// `text` as an action): its prefix.
fn command_prefix(msg: &str) -> Option<&'static str> {
    ["/me ", "/sp ", "/say ", "/shout ", "/rcv ", "/d "]
        .into_iter()
        .find(|p| msg.starts_with(p))
}

fn anonymous_reason(event: &str) -> String {
    format!(
        "the bot is anonymous in this room (no username configured), so the server would drop {event}; configure a username"
    )
}

/// A chat line the server turns into an action without echoing it as chat.
fn is_silent_command(msg: &str) -> bool {
    let t = msg.trim_start();
    t.starts_with('/') && !t.starts_with("/me ") && !t.starts_with("/sp ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use daz_cytube_proto::events::AntifloodParams;

    fn gov() -> Governor {
        Governor::new(
            "lobby",
            GovernorConfig {
                capacity: 1000,
                ttl: Duration::from_secs(60),
                margin: Duration::ZERO,
                max_retries: 2,
                chat_burst: None,
                chat_per_second: None,
                chat_reset: None,
                max_frame: frame::MAX_FRAME_BYTES,
                fail_when_muted: false,
            },
        )
    }

    fn env(plugin: &str, event: &str, payload: serde_json::Value, prio: Priority) -> Arc<Envelope> {
        Arc::new(
            Envelope::builder(
                format!("cytube.out.lobby.{event}"),
                serde_json::to_vec(&payload).unwrap(),
            )
            .source(plugin)
            .priority(prio)
            .build()
            .unwrap(),
        )
    }

    fn chat(plugin: &str, msg: &str) -> Arc<Envelope> {
        env(
            plugin,
            "chatMsg",
            serde_json::json!({"msg": msg, "meta": {}}),
            Priority::Normal,
        )
    }

    fn echo(msg: &str, time_ms: Option<i64>) -> Signal {
        Signal::SelfChat(Echo {
            msg: msg.to_owned(),
            time_ms,
        })
    }

    /// Sends everything possible at `now`; returns the frames.
    fn drain(g: &mut Governor, now: Instant, link: Link) -> Vec<Outgoing> {
        let mut out = Vec::new();
        loop {
            match g.next(now, link) {
                Next::Send(o) => out.push(o),
                Next::At(at) if at <= now => continue,
                _ => return out,
            }
        }
    }

    /// Runs the governor on a simulated clock until everything is sent; returns the
    /// send times relative to the start.
    fn run_clock(g: &mut Governor, t0: Instant, link: Link) -> Vec<Duration> {
        let mut now = t0;
        let mut times = Vec::new();
        for _ in 0..100_000 {
            match g.next(now, link) {
                Next::Send(_) => times.push(now - t0),
                Next::At(at) => now = at.max(now),
                Next::Idle => break,
            }
        }
        times
    }

    /// A model of the server's chat path on a virtual clock: each frame is processed
    /// at `max(write + lag, previous processing)` (under a burst — a frame written
    /// within 50 ms of the previous one — lags are drawn from `lags` in turn; else 0),
    /// plus a stall: frames written in `[stall.0, stall.1)` wait until `stall.1`),
    /// by the server's limiter at that processing time; the answer (echo with `time`,
    /// or `cooldown`) reaches the governor at the processing time.
    struct Model {
        limiter: RateLimiter,
        lags: Vec<u64>,
        stall: Option<(Duration, Duration)>,
        last_processed: Duration,
        /// (arrival at the governor, signal), in order.
        answers: VecDeque<(Duration, Signal)>,
        delivered: Vec<String>,
        cooldowns: usize,
        sends: Vec<Duration>,
        n: usize,
    }

    /// What a run gave.
    #[derive(Debug)]
    struct Run {
        delivered: Vec<String>,
        cooldowns: usize,
        sends: Vec<Duration>,
        failures: usize,
    }

    impl Model {
        fn new(lags: Vec<u64>, stall: Option<(Duration, Duration)>) -> Self {
            Model {
                limiter: RateLimiter::chat_default(),
                lags,
                stall,
                last_processed: Duration::ZERO,
                answers: VecDeque::new(),
                delivered: Vec::new(),
                cooldowns: 0,
                sends: Vec::new(),
                n: 0,
            }
        }

        fn write(&mut self, at: Duration, frame: &str, t0: Instant) {
            let burst = self
                .sends
                .last()
                .is_some_and(|prev| at.saturating_sub(*prev) < Duration::from_millis(50));
            self.sends.push(at);
            let lag = if self.lags.is_empty() || !burst {
                0
            } else {
                self.lags[self.n % self.lags.len()]
            };
            self.n += 1;
            let mut p = (at + Duration::from_millis(lag)).max(self.last_processed);
            if let Some((from, to)) = self.stall
                && at >= from
                && at < to
            {
                p = p.max(to);
            }
            // The server's clock has whole milliseconds.
            p = Duration::from_millis(u64::try_from(p.as_millis()).unwrap());
            self.last_processed = p;
            let v: serde_json::Value = serde_json::from_str(&frame[2..]).unwrap();
            let msg = v[1]["msg"].as_str().unwrap_or_default().to_owned();
            if self.limiter.try_acquire(t0 + p).is_ok() {
                self.delivered.push(msg.clone());
                let time = 1_000_000 + i64::try_from(p.as_millis()).unwrap();
                self.answers
                    .push_back((p, echo(&flood::echo_text(&msg), Some(time))));
            } else {
                self.cooldowns += 1;
                self.answers.push_back((p, Signal::Cooldown(100)));
            }
        }
    }

    /// Runs `g` against `model` until nothing is left; the governor's anchor makes
    /// `t0` epoch ms 1 000 000, the model's clock.
    fn run_model(g: &mut Governor, model: &mut Model, t0: Instant) -> Run {
        g.set_anchor(t0, 1_000_000);
        let mut now = Duration::ZERO;
        let mut failures = 0;
        for _ in 0..1_000_000 {
            while model.answers.front().is_some_and(|(at, _)| *at <= now) {
                let (_, sig) = model.answers.pop_front().unwrap();
                g.on_signal(&sig, t0 + now);
            }
            failures += g.take_failures().len();
            match g.next(t0 + now, Link::Ready) {
                Next::Send(o) => model.write(now, &o.frame, t0),
                Next::At(at) => {
                    let wake = at.saturating_duration_since(t0).max(now);
                    let answer = model.answers.front().map(|(a, _)| *a);
                    now = answer.map_or(wake, |a| a.min(wake)).max(now);
                    if answer.is_none() && wake == now && at <= t0 + now {
                        continue;
                    }
                }
                Next::Idle => match model.answers.front() {
                    Some((a, _)) => now = (*a).max(now),
                    None => break,
                },
            }
        }
        Run {
            delivered: std::mem::take(&mut model.delivered),
            cooldowns: model.cooldowns,
            sends: std::mem::take(&mut model.sends),
            failures,
        }
    }

    /// The server's lag under a burst: 30–110 ms, varying line to line.
    fn real_lags() -> Vec<u64> {
        (0..97).map(|i| 30 + (i * 37) % 81).collect()
    }

    fn lines(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("line {i:03}")).collect()
    }

    #[test]
    fn hundred_messages_go_at_the_servers_pace() {
        // No lag: the burst at once, then the server's 10 per second.
        let mut g = gov();
        let t0 = Instant::now();
        for l in lines(100) {
            g.submit(chat("ex", &l), t0, Link::Ready);
        }
        let mut model = Model::new(Vec::new(), None);
        let run = run_model(&mut g, &mut model, t0);
        assert_eq!(run.delivered, lines(100));
        assert_eq!(run.cooldowns, 0);
        assert!(run.sends[..20].iter().all(|t| t.is_zero()), "burst of 20");
        // One per 100 ms (+1 ms for the server's whole milliseconds) after the burst.
        assert!(
            run.sends[99] <= Duration::from_millis(8_100),
            "{:?}",
            run.sends[99]
        );
        assert_eq!(run.failures, 0);
    }

    #[test]
    fn a_lagging_server_gets_no_cooldown_in_bursts_of_100_and_500() {
        for n in [100, 500] {
            let mut g = gov();
            g.cfg.ttl = Duration::from_secs(600);
            let t0 = Instant::now();
            for l in lines(n) {
                g.submit(chat("ex", &l), t0, Link::Ready);
            }
            let mut model = Model::new(real_lags(), None);
            let run = run_model(&mut g, &mut model, t0);
            assert_eq!(run.cooldowns, 0, "burst of {n}");
            assert_eq!(
                run.delivered,
                lines(n),
                "burst of {n}: order, duplicates, losses"
            );
            assert_eq!(run.failures, 0);
        }
    }

    #[test]
    fn a_stall_mid_burst_loses_duplicates_and_reorders_nothing() {
        let mut g = gov();
        let t0 = Instant::now();
        for l in lines(60) {
            g.submit(chat("ex", &l), t0, Link::Ready);
        }
        // The server stops processing for 1.5 s while the burst is under way.
        let stall = (Duration::from_millis(1_000), Duration::from_millis(2_500));
        let mut model = Model::new(real_lags(), Some(stall));
        let run = run_model(&mut g, &mut model, t0);
        assert_eq!(run.cooldowns, 0);
        assert_eq!(run.delivered, lines(60));
        assert_eq!(run.failures, 0);
    }

    #[test]
    fn antiflood_applies_below_rank_two() {
        let mut g = gov();
        let opts = ChannelOpts {
            chat_antiflood: true,
            chat_antiflood_params: AntifloodParams {
                burst: 4,
                sustained: 1.0,
                cooldown: 4.0,
            },
            ..ChannelOpts::default()
        };
        g.set_standing(Standing {
            rank: 1.0,
            opts: Some(opts.clone()),
            perms: Permissions::default(),
        });
        let t0 = Instant::now();
        for i in 0..8 {
            g.submit(chat("ex", &format!("x{i}")), t0, Link::Ready);
        }
        let mut model = Model::new(Vec::new(), None);
        model.limiter = RateLimiter::new(FloodParams::from_antiflood(&AntifloodParams {
            burst: 4,
            sustained: 1.0,
            cooldown: 4.0,
        }));
        let run = run_model(&mut g, &mut model, t0);
        assert_eq!(run.cooldowns, 0);
        assert_eq!(run.delivered.len(), 8);
        assert_eq!(run.sends[3], Duration::ZERO);
        // Four at once, then one a second.
        assert!(run.sends[7] >= Duration::from_secs(4), "{:?}", run.sends);
        assert!(
            run.sends[7] <= Duration::from_millis(4_010),
            "{:?}",
            run.sends
        );
        // A moderator is not subject to it.
        let mut g = gov();
        g.set_standing(Standing {
            rank: 2.0,
            opts: Some(opts),
            perms: Permissions::default(),
        });
        for i in 0..8 {
            g.submit(chat("ex", &format!("x{i}")), t0, Link::Ready);
        }
        assert_eq!(drain(&mut g, t0, Link::Ready).len(), 8);
    }

    #[test]
    fn dropped_lines_are_resent_in_their_original_order() {
        // As seen on the real server: one echo, then 11 `cooldown 100` together.
        let mut g = gov();
        let t0 = Instant::now();
        g.set_anchor(t0, 1_000_000);
        for l in lines(12) {
            g.submit(chat("ex", &l), t0, Link::Ready);
        }
        assert_eq!(drain(&mut g, t0, Link::Ready).len(), 12);
        g.on_signal(&echo("line 000", Some(1_000_000)), t0);
        for _ in 0..11 {
            g.on_signal(&Signal::Cooldown(100), t0);
        }
        let t1 = t0 + Duration::from_millis(200);
        let again: Vec<String> = drain(&mut g, t1, Link::Ready)
            .iter()
            .map(|o| {
                serde_json::from_str::<serde_json::Value>(&o.frame[2..]).unwrap()[1]["msg"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(again, lines(12)[1..]);
        // The parts of a split message likewise.
        let mut g = gov();
        let text: String = (0..60)
            .map(|i| format!("p{i:03}{} ", "x".repeat(60)))
            .collect();
        g.submit(chat("ex", &text), t0, Link::Ready);
        let first = drain(&mut g, t0, Link::Ready);
        assert!(first.len() > 5);
        for _ in 0..first.len() {
            g.on_signal(&Signal::Cooldown(100), t0);
        }
        let again = drain(&mut g, t1, Link::Ready);
        let frames = |v: &[Outgoing]| v.iter().map(|o| o.frame.clone()).collect::<Vec<_>>();
        assert_eq!(frames(&again), frames(&first));
    }

    #[test]
    fn echoes_are_matched_by_content_not_position() {
        let mut g = gov();
        let t0 = Instant::now();
        g.set_anchor(t0, 1_000_000);
        for l in ["a <b> & c", "second", "third"] {
            g.submit(chat("ex", l), t0, Link::Ready);
        }
        assert_eq!(drain(&mut g, t0, Link::Ready).len(), 3);
        // The first got no answer at all; the second's echo settles it and the first.
        g.on_signal(&echo("second", Some(1_000_000)), t0);
        assert_eq!(g.awaiting(), 1);
        // A cooldown now answers the third, which is resent, never the second.
        g.on_signal(&Signal::Cooldown(100), t0);
        let again = drain(&mut g, t0 + Duration::from_millis(200), Link::Ready);
        assert_eq!(again.len(), 1);
        assert!(again[0].frame.contains("third"), "{}", again[0].frame);
        // The escaped echo (and a link-wrapped one) match their line.
        let mut g = gov();
        g.submit(chat("ex", "x"), t0, Link::Ready);
        g.submit(chat("ex", "a <b> & c"), t0, Link::Ready);
        g.submit(chat("ex", "see https://x.example"), t0, Link::Ready);
        assert_eq!(drain(&mut g, t0, Link::Ready).len(), 3);
        g.on_signal(&echo("a &lt;b&gt; &amp; c", Some(1)), t0);
        assert_eq!(
            g.awaiting(),
            1,
            "the echo settled its line and the one before"
        );
        g.on_signal(
            &echo(
                "see <a href=\"https://x.example\" target=\"_blank\" rel=\"noopener noreferrer\">https://x.example</a>",
                Some(2),
            ),
            t0,
        );
        assert_eq!(g.awaiting(), 0);
    }

    #[test]
    fn lines_the_server_would_drop_silently_are_refused_with_the_reason() {
        let mut g = gov();
        let t0 = Instant::now();
        // Blank once control characters are spaces.
        g.submit(chat("ex", "\u{1}\u{2}\t \u{7}"), t0, Link::Ready);
        // Control characters inside a line become spaces, as the server makes them.
        g.submit(chat("ex", "a\u{1}b"), t0, Link::Ready);
        let f = g.take_failures();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, FailCode::Refused);
        assert!(f[0].reason.contains("blank"), "{}", f[0].reason);
        let out = drain(&mut g, t0, Link::Ready);
        assert!(out[0].frame.contains(r#""a b""#), "{}", out[0].frame);
        // Not logged in.
        g.submit(chat("ex", "hello"), t0, Link::Anonymous);
        assert_eq!(g.take_failures()[0].code, FailCode::Anonymous);
        // Below the channel's chat permission.
        let mut perms = Permissions::default();
        perms.0.insert("chat".to_owned(), 1.0);
        g.set_standing(Standing {
            rank: 0.0,
            opts: None,
            perms,
        });
        g.submit(chat("ex", "hello"), t0, Link::Ready);
        let f = g.take_failures();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, FailCode::NoPermission);
        assert!(f[0].reason.contains("without a word"), "{}", f[0].reason);
    }

    #[test]
    fn a_muted_bot_holds_its_chat_until_the_unmute_or_fails_by_policy() {
        let mut g = gov();
        let t0 = Instant::now();
        g.submit(chat("ex", "one"), t0, Link::Ready);
        assert_eq!(drain(&mut g, t0, Link::Ready).len(), 1);
        g.on_signal(
            &Signal::NoFlood("You have been muted on this channel.".into()),
            t0,
        );
        assert!(g.muted());
        g.submit(chat("ex", "two"), t0, Link::Ready);
        g.submit(
            env(
                "other",
                "pm",
                serde_json::json!({"to": "x", "msg": "psst"}),
                Priority::Normal,
            ),
            t0,
            Link::Ready,
        );
        // Nothing spent while muted but the PM, which the server still delivers.
        let t1 = t0 + Duration::from_secs(3);
        let out = drain(&mut g, t1, Link::Ready);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].event, "pm");
        assert!(g.take_failures().is_empty());
        assert_eq!(g.queued(), 2);
        // Unmuted: both go, in their order.
        g.on_signal(&Signal::SelfMuted(false), t1);
        let out = drain(&mut g, t1, Link::Ready);
        assert_eq!(out.len(), 2);
        assert!(out[0].frame.contains("one") && out[1].frame.contains("two"));
        // Policy "fail": at once, with the reason.
        let mut g = gov();
        g.cfg.fail_when_muted = true;
        g.on_signal(&Signal::SelfMuted(true), t0);
        g.submit(chat("ex", "three"), t0, Link::Ready);
        let f = g.take_failures();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, FailCode::Muted);
        assert!(f[0].reason.contains("on_muted"), "{}", f[0].reason);
    }

    #[test]
    fn long_messages_split_within_the_limit_in_order() {
        let mut g = gov();
        let t0 = Instant::now();
        let text = "word <&> ".repeat(100);
        g.submit(chat("ex", &text), t0, Link::Ready);
        let out = drain(&mut g, t0, Link::Ready);
        assert!(out.len() > 1);
        let mut joined = Vec::new();
        for o in &out {
            let v: serde_json::Value = serde_json::from_str(&o.frame[2..]).unwrap();
            let msg = v[1]["msg"].as_str().unwrap().to_owned();
            assert!(flood::raw_len(&msg) <= MAX_CHAT_LEN);
            joined.push(msg);
        }
        assert_eq!(joined.join(" "), text.trim());
    }

    #[test]
    fn plugins_share_fairly_and_priorities_do_not_starve() {
        let mut g = gov();
        let t0 = Instant::now();
        for i in 0..30 {
            g.submit(chat("a", &format!("a{i}")), t0, Link::Ready);
        }
        for i in 0..5 {
            g.submit(chat("b", &format!("b{i}")), t0, Link::Ready);
        }
        let first: Vec<String> = drain(&mut g, t0, Link::Ready)
            .iter()
            .map(|o| o.plugin.to_string())
            .collect();
        // b's five come within the first ten, interleaved with a's.
        assert_eq!(
            &first[..10],
            ["a", "b", "a", "b", "a", "b", "a", "b", "a", "b"]
        );

        let mut g = gov();
        for i in 0..40 {
            g.submit(
                env(
                    "hi",
                    "chatMsg",
                    serde_json::json!({"msg": format!("h{i}")}),
                    Priority::High,
                ),
                t0,
                Link::Ready,
            );
            g.submit(chat("lo", &format!("l{i}")), t0, Link::Ready);
        }
        let sent: Vec<String> = drain(&mut g, t0, Link::Ready)
            .iter()
            .map(|o| o.plugin.to_string())
            .collect();
        let lo = sent.iter().filter(|p| *p == "lo").count();
        // 20 in the burst: high gets 2 of every 3, normal 1 of every 3.
        assert_eq!(sent.len(), 20);
        assert!((6..=7).contains(&lo), "{sent:?}");
    }

    #[test]
    fn held_while_down_then_expired_and_reported() {
        let mut g = gov();
        let t0 = Instant::now();
        g.submit(chat("ex", "hello"), t0, Link::Down);
        assert!(matches!(g.next(t0, Link::Down), Next::At(_)));
        // Reconnected before the deadline: it goes.
        assert_eq!(
            drain(&mut g, t0 + Duration::from_secs(1), Link::Ready).len(),
            1
        );
        // Not reconnected in time: reported.
        g.submit(chat("ex", "late"), t0, Link::Down);
        let _ = g.next(t0 + Duration::from_secs(61), Link::Down);
        let f = g.take_failures();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, FailCode::Expired);
        assert_eq!(f[0].to_json()["original"]["payload"]["msg"], "late");
        assert_eq!(g.queued(), 0);
    }

    #[test]
    fn kick_worthy_frames_are_refused_below_the_rank() {
        let mut g = gov();
        g.set_standing(Standing {
            rank: 1.0,
            ..Standing::default()
        });
        let t0 = Instant::now();
        for (ev, payload) in [
            ("setMotd", serde_json::json!({"motd": "x"})),
            ("setOptions", serde_json::json!({"allow_voteskip": false})),
            ("setPermissions", serde_json::json!({"chat": 0})),
            ("setChannelCSS", serde_json::json!({"css": ""})),
            ("assignLeader", serde_json::json!({"name": "x"})),
        ] {
            g.submit(env("ex", ev, payload, Priority::Normal), t0, Link::Ready);
        }
        let f = g.take_failures();
        assert_eq!(f.len(), 5);
        assert!(f.iter().all(|f| f.code == FailCode::KickWorthy));
        assert!(f[0].reason.contains("below rank 3"), "{}", f[0].reason);
        // An owner may.
        g.set_standing(Standing {
            rank: 4.0,
            ..Standing::default()
        });
        g.submit(
            env(
                "ex",
                "setMotd",
                serde_json::json!({"motd": "x"}),
                Priority::Normal,
            ),
            t0,
            Link::Ready,
        );
        assert_eq!(drain(&mut g, t0, Link::Ready).len(), 1);
    }

    #[test]
    fn wrong_requests_are_refused_with_the_reason() {
        let mut g = gov();
        let t0 = Instant::now();
        g.submit(
            env(
                "ex",
                "login",
                serde_json::json!({"name": "x"}),
                Priority::Normal,
            ),
            t0,
            Link::Ready,
        );
        g.submit(
            env(
                "ex",
                "chatMsg",
                serde_json::json!({"msg": 5}),
                Priority::Normal,
            ),
            t0,
            Link::Ready,
        );
        g.submit(chat("ex", "   "), t0, Link::Ready);
        g.submit(chat("ex", "hi"), t0, Link::Anonymous);
        let f = g.take_failures();
        let codes: Vec<FailCode> = f.iter().map(|f| f.code).collect();
        assert_eq!(
            codes,
            [
                FailCode::Refused,
                FailCode::Refused,
                FailCode::Refused,
                FailCode::Anonymous
            ]
        );
        assert!(f[1].reason.contains("chatMsg"), "{}", f[1].reason);
        // Payload-less events pass.
        g.submit(
            env("ex", "playNext", serde_json::Value::Null, Priority::Normal),
            t0,
            Link::Ready,
        );
        let out = drain(&mut g, t0, Link::Ready);
        assert_eq!(out[0].frame, r#"42["playNext"]"#);
    }

    #[test]
    fn cooldown_pauses_and_resends_then_gives_up() {
        let mut g = gov();
        let t0 = Instant::now();
        g.submit(chat("ex", "one"), t0, Link::Ready);
        assert_eq!(drain(&mut g, t0, Link::Ready).len(), 1);
        g.on_signal(&Signal::Cooldown(1000), t0);
        assert_eq!(g.queued(), 1, "put back");
        assert!(
            matches!(g.next(t0, Link::Ready), Next::At(at) if at == t0 + Duration::from_secs(1))
        );
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(drain(&mut g, t1, Link::Ready).len(), 1);
        g.on_signal(&Signal::Cooldown(100), t1);
        let t2 = t1 + Duration::from_millis(100);
        assert_eq!(drain(&mut g, t2, Link::Ready).len(), 1);
        g.on_signal(&Signal::Cooldown(100), t2);
        let f = g.take_failures();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, FailCode::Cooldown);
    }

    #[test]
    fn answers_are_matched_in_order() {
        let mut g = gov();
        let t0 = Instant::now();
        g.submit(chat("a", "first"), t0, Link::Ready);
        g.submit(chat("b", "second"), t0, Link::Ready);
        g.submit(
            env(
                "c",
                "pm",
                serde_json::json!({"to": "x", "msg": "psst"}),
                Priority::Normal,
            ),
            t0,
            Link::Ready,
        );
        g.submit(
            env(
                "d",
                "queue",
                serde_json::json!({"id": "v", "type": "yt"}),
                Priority::Normal,
            ),
            t0,
            Link::Ready,
        );
        assert_eq!(drain(&mut g, t0, Link::Ready).len(), 4);
        g.on_signal(&echo("first", None), t0);
        g.on_signal(&Signal::SpamFiltered("NEW_USER_CHAT".into()), t0);
        g.on_signal(&Signal::ErrorMsg("x is not on this channel".into()), t0);
        g.on_signal(
            &Signal::QueueFail("You are adding videos too quickly".into()),
            t0,
        );
        let f = g.take_failures();
        let who: Vec<(&str, FailCode)> = f.iter().map(|f| (f.plugin(), f.code)).collect();
        assert_eq!(
            who,
            [
                ("b", FailCode::SpamFiltered),
                ("c", FailCode::ServerError),
                ("d", FailCode::QueueFailed)
            ]
        );
        assert_eq!(g.awaiting(), 0);
    }

    #[test]
    fn unanswered_frames_count_as_delivered_after_the_window() {
        let mut g = gov();
        let t0 = Instant::now();
        for i in 0..5 {
            let queue = env(
                "d",
                "queue",
                serde_json::json!({"id": format!("v{i}"), "type": "yt"}),
                Priority::Normal,
            );
            g.submit(queue, t0, Link::Ready);
        }
        // The queue limiter below rank 2: a burst of 3, then one a second.
        let secs = Duration::from_secs;
        let sent = run_clock(&mut g, t0, Link::Ready);
        assert_eq!(sent, [secs(0), secs(0), secs(0), secs(1), secs(2)]);
        // A caller's clock that went backwards does not reorder what waits.
        g.submit(chat("a", "hi"), t0, Link::Ready);
        assert_eq!(drain(&mut g, t0, Link::Ready).len(), 1);
        assert_eq!(g.awaiting(), 6);
        // Each leaves when its own window ends, oldest first.
        g.next(t0 + ANSWER_WINDOW, Link::Ready);
        assert_eq!(g.awaiting(), 3);
        let last = t0 + secs(2) + ANSWER_WINDOW;
        g.next(last - Duration::from_millis(1), Link::Ready);
        assert_eq!(g.awaiting(), 2);
        g.next(last, Link::Ready);
        assert_eq!(g.awaiting(), 0);
        // A late answer then matches nothing and reports nothing.
        g.on_signal(&Signal::QueueFail("late".into()), last);
        assert!(g.take_failures().is_empty());
    }

    #[test]
    fn queue_limiter_follows_the_rank() {
        let mut g = gov();
        g.set_standing(Standing {
            rank: 1.0,
            ..Standing::default()
        });
        g.new_session();
        let t0 = Instant::now();
        for i in 0..5 {
            g.submit(
                env(
                    "ex",
                    "queue",
                    serde_json::json!({"id": format!("v{i}"), "type": "yt"}),
                    Priority::Normal,
                ),
                t0,
                Link::Ready,
            );
        }
        let times = run_clock(&mut g, t0, Link::Ready);
        assert_eq!(
            times,
            [0, 0, 0, 1000, 2000].map(Duration::from_millis).to_vec()
        );
    }

    #[test]
    fn capacity_is_enforced() {
        let mut g = Governor::new(
            "lobby",
            GovernorConfig {
                capacity: 2,
                ..GovernorConfig::from(&OutboundConfig::default())
            },
        );
        let t0 = Instant::now();
        for i in 0..3 {
            g.submit(chat("ex", &format!("m{i}")), t0, Link::Down);
        }
        let f = g.take_failures();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, FailCode::QueueFull);
        g.fail_all(FailCode::Stopped, "stopping");
        assert_eq!(g.take_failures().len(), 2);
        assert_eq!(g.queued(), 0);
    }
}
