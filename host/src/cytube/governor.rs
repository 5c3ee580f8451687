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
//! - **Splits** `chatMsg` / `pm` text at word boundaries so that each part stays within
//!   320 characters after the server's HTML escaping (`flood::split_message`).
//! - **Queues** it per priority and per plugin, bounded by `capacity`, with a deadline
//!   (`ttl_ms`). While the connection is down everything is held; an expired request is
//!   reported failed, never silently lost.
//! - **Paces** it with mirrors of the server's limiters (`flood::RateLimiter`): one
//!   limiter shared by chat and PMs (burst 20, 10/s, reset after 2 s idle; the channel's
//!   antiflood parameters for chat when `chat_antiflood` is on and the bot's rank is
//!   below 2) and the queue limiter by rank, each widened by a safety margin because
//!   frames arrive with network jitter. A `cooldown` frame pauses the chat limiter and
//!   puts the dropped message back at the head of its queue.
//! - **Shares** fairly: among priorities by smooth weighted round robin (weights 1, 2,
//!   4, 8 for normal … critical, so a flood of high-priority requests slows normal ones
//!   down but never starves them); within a priority, round robin across plugins; FIFO
//!   within one plugin and priority (split parts stay in order).
//! - **Attributes** the server's answers: chat and PM echoes, `cooldown`, `noflood`,
//!   `spamFiltered`, `queueFail`, `channelRankFail`, `errorMsg` are matched to the oldest
//!   request sent that they can answer (the server answers in order); failures are
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

use super::inbound::Signal;

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

    fn push_front(&mut self, r: Request) {
        let q = self.queues.entry(r.plugin.clone()).or_default();
        if q.is_empty() {
            self.order.push_front(r.plugin.clone());
        }
        q.push_front(r);
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
}

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
        }
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
    }

    /// The chat limiter's parameters for `lane`, widened by the margin.
    fn params(&self, lane: Lane) -> Option<FloodParams> {
        let base = match lane {
            Lane::Chat => flood::chat_params(self.standing.opts.as_ref(), self.standing.rank),
            Lane::Pm => FloodParams::CHAT,
            Lane::Queue => FloodParams::queue_for_rank(self.standing.rank),
            Lane::Free => return None,
        };
        let mut p = base;
        if matches!(lane, Lane::Chat | Lane::Pm) && p == FloodParams::CHAT {
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
        if let Some(iv) = p.interval() {
            p.sustained = 1.0 / (iv + self.cfg.margin).as_secs_f64();
        }
        p.reset_after += self.cfg.margin;
        Some(p)
    }

    /// Earliest instant the head of `lane` may go.
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
                let parts = flood::split_message(&c.msg, MAX_CHAT_LEN);
                let silent = is_silent_command(&c.msg);
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
                    requests.push(r);
                }
            }
            ClientEvent::Pm(p) => {
                for (i, part) in flood::split_message(&p.msg, MAX_CHAT_LEN)
                    .iter()
                    .enumerate()
                {
                    let out = ClientEvent::Pm(PmOut {
                        to: p.to.clone(),
                        msg: part.clone(),
                        meta: p.meta.clone(),
                    });
                    let mut r = base.clone();
                    r.lane = Lane::Pm;
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
                "the message is blank; the server drops blank messages".to_owned(),
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
            self.classes[r.priority.index()].push_back(r);
        }
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
        // Per priority: the first plugin (round robin) whose head may go now.
        let mut ready: [Option<usize>; 4] = [None; 4];
        let mut earliest: Option<Instant> = deadline;
        for (p, class) in self.classes.iter().enumerate() {
            for (i, plugin) in class.order.iter().enumerate() {
                let Some(head) = class.queues.get(plugin).and_then(VecDeque::front) else {
                    continue;
                };
                let at = self.ready_at(head.lane, now);
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

    fn take_awaiting(&mut self, pred: impl Fn(&Request) -> bool) -> Option<Request> {
        let i = self.awaiting.iter().position(|a| pred(&a.req))?;
        self.awaiting.remove(i).map(|a| a.req)
    }

    /// The server answered something; match it to what was sent.
    pub fn on_signal(&mut self, signal: &Signal, now: Instant) {
        let chat_or_pm = |r: &Request| matches!(r.lane, Lane::Chat | Lane::Pm);
        match signal {
            Signal::SelfChat => {
                // Commands without an echo that went before it were handled too.
                while let Some(front) = self.awaiting.iter().position(|a| a.req.lane == Lane::Chat)
                {
                    let silent = self.awaiting[front].req.silent;
                    self.awaiting.remove(front);
                    if !silent {
                        break;
                    }
                }
            }
            Signal::SelfPm => {
                self.take_awaiting(|r| r.lane == Lane::Pm);
            }
            Signal::Cooldown(ms) => {
                let pause = Duration::from_millis(*ms) + self.cfg.margin;
                self.paused_until = Some(
                    self.paused_until
                        .map_or(now + pause, |u| u.max(now + pause)),
                );
                if let Some(mut r) = self.take_awaiting(chat_or_pm) {
                    if r.retries < self.cfg.max_retries {
                        r.retries += 1;
                        self.queued += 1;
                        self.classes[r.priority.index()].push_front(r);
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
                if let Some(r) = self.take_awaiting(chat_or_pm) {
                    self.failures.push(r.fail(
                        FailCode::Muted,
                        format!("the server refused it (noflood): {msg}"),
                    ));
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

    #[test]
    fn hundred_messages_go_at_the_servers_pace() {
        let mut g = gov();
        let t0 = Instant::now();
        for i in 0..100 {
            g.submit(chat("ex", &format!("line {i}")), t0, Link::Ready);
        }
        let times = run_clock(&mut g, t0, Link::Ready);
        assert_eq!(times.len(), 100);
        assert!(times[..20].iter().all(|t| t.is_zero()), "burst of 20");
        // Then one per 100 ms: the last at 80 * 100 ms.
        assert_eq!(times[99], Duration::from_millis(8000));
        // The server's own limiter, fed the same times, accepts every one.
        let mut server = RateLimiter::chat_default();
        for t in &times {
            assert!(
                server.try_acquire(t0 + *t).is_ok(),
                "server would drop at {t:?}"
            );
        }
        assert!(g.take_failures().is_empty());
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
        let times = run_clock(&mut g, t0, Link::Ready);
        assert_eq!(times[3], Duration::ZERO);
        assert_eq!(times[7], Duration::from_secs(4));
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
            assert!(flood::escaped_len(&msg) <= MAX_CHAT_LEN);
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
        g.on_signal(&Signal::SelfChat, t0);
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
