//! The inbound pipeline of one room: a websocket text frame in, the room state updated
//! and the event published on `cytube.in.<room>.<event>`, plus a [`Signal`] for the
//! connection logic and the outbound governor when the event concerns them.
//!
//! Per event, in this order:
//! 1. Parse the frame (`daz_cytube_proto::frame::parse`, one serde pass, payload raw).
//! 2. Decode what the host needs: the full typed event for everything that changes room
//!    state or matters to the client; only the sender and time of `chatMsg` / `pm`
//!    (the hot path), so chat costs one small borrowed decode.
//! 3. Apply it to the [`RoomState`](daz_cytube_proto::room::RoomState) (before publishing,
//!    so a plugin reacting to the event reads a state that already includes it).
//! 4. Publish the RAW payload (`null` when the event has none) with `room`, `source =
//!    "cytube:<room>"`, a priority by kind, and tags.
//!
//! Priority by kind: `chatMsg`, `pm` and `login` are High; everything else is Normal,
//! the lowest priority the bus has (so `mediaUpdate`, the most frequent event, is
//! dropped first when a plugin's mailbox is full).
//!
//! Tags: `backlog` on chat lines replayed on join (every `chatMsg` of the join burst,
//! which the server sends between `emoteList` and `drinkCount`, and any later line
//! whose `time` is not newer than the newest backlog line or far older than the
//! session); `self` on the bot's own `chatMsg` and on `pm`s the bot sent, and on its
//! own `addUser` / `userLeave`; `repeat` on the `changeMedia` of a join burst that
//! continues the play the bot saw before it reconnected (see `PlayMark`).
//!
//! A frame that does not parse or a known event whose payload does not decode is
//! counted and logged, never fatal: the event is still published raw when it parsed.
//!
//! One payload is rewritten: the channel password in `channelOpts` becomes `true`, so
//! it reaches neither plugins nor the room state nor the API.

use std::{borrow::Cow, collections::HashMap, sync::Arc};

use daz_bus::{Bus, Envelope, Priority};
use daz_cytube_proto::{
    events::{ChangeMedia, ChannelOpts, LoginReply, Permissions, ServerEvent},
    frame::{self, EioPacket, FrameError, OpenInfo, SioPacket},
    room::{Applied, Capped, Desync},
};
use daz_plugin_api::{TAG_BACKLOG, TAG_REPEAT, TAG_SELF};
use prometheus::IntCounter;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{metrics::CytubeMetrics, room::RoomShared};

/// Most distinct event names whose subjects are cached (a server inventing names
/// cannot grow the cache without bound).
const SUBJECT_CACHE_MAX: usize = 512;

/// A chat line this far older than the session start is a replay, whatever the burst
/// says (tolerates this much clock difference between server and host).
const OLD_CHAT_MS: i64 = 5 * 60 * 1000;

/// A recorded media whose position went back by more than this, seconds, started again.
const POSITION_SLACK_S: f64 = 2.0;

/// Beyond its remaining length, how long a recorded media may seem to play on before it
/// must have ended, seconds (the server's 3 s lead-in and 2 s grace after the end, and
/// clock differences).
const END_SLACK_S: f64 = 10.0;

/// The play the bot last saw in a room, kept across its connections.
///
/// On every (re)join the server repeats `changeMedia` of what is playing; for live media
/// (twitch, rtmp, hls…: no length) at `currentTime` 0, exactly as when it started. So a
/// play cannot be told from the event alone: the join burst's `changeMedia` that
/// continues this play (same playlist item and media; for recorded media, a position
/// that did not go back and a play that cannot have ended meanwhile) is tagged
/// `repeat`, and every counter of plays skips it.
#[derive(Debug, Clone, PartialEq)]
struct PlayMark {
    /// The playlist item current when it was seen (`setCurrent`), if known.
    uid: Option<u64>,
    media_type: String,
    id: String,
    /// Length in seconds; 0 for live media.
    seconds: f64,
    /// Position at the last `changeMedia` / `mediaUpdate`, seconds.
    position: f64,
    paused: bool,
    /// When that position was seen (unix ms).
    at_ms: i64,
}

impl PlayMark {
    fn of(uid: Option<u64>, cm: &ChangeMedia, now_ms: i64) -> Self {
        PlayMark {
            uid,
            media_type: cm.media.media_type.clone(),
            id: cm.media.id.clone(),
            seconds: cm.media.seconds,
            position: cm.current_time,
            paused: cm.paused,
            at_ms: now_ms,
        }
    }

    /// Whether `cm`, with `uid` current, at `now_ms`, is this play going on.
    fn continued_by(&self, uid: Option<u64>, cm: &ChangeMedia, now_ms: i64) -> bool {
        if self.media_type != cm.media.media_type || self.id != cm.media.id {
            return false;
        }
        if let (Some(was), Some(is)) = (self.uid, uid)
            && was != is
        {
            return false;
        }
        if self.seconds <= 0.0 || cm.media.seconds <= 0.0 {
            // Live: the position is always 0, it says nothing; the same item current
            // is the same play.
            return true;
        }
        let went_back = cm.current_time + POSITION_SLACK_S < self.position;
        let elapsed_s = (now_ms - self.at_ms).max(0) as f64 / 1000.0;
        let must_have_ended =
            !self.paused && elapsed_s > self.seconds - self.position.max(0.0) + END_SLACK_S;
        !went_back && !must_have_ended
    }
}

/// What an event means for the connection logic or the governor.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// The bot's rank changed.
    Rank(f64),
    /// Reply to `login`.
    Login(LoginReply),
    /// The join burst arrived (`userlist`): the bot is in the channel.
    Joined,
    /// The channel wants a password (`true`: the last one was wrong).
    NeedPassword(bool),
    /// The channel password was accepted.
    PasswordAccepted,
    /// The bot is being kicked.
    Kick(String),
    /// An error for the bot.
    ErrorMsg(String),
    /// Channel options changed (antiflood parameters).
    ChannelOpts(Box<ChannelOpts>),
    /// Permission thresholds changed.
    Permissions(Box<Permissions>),
    /// A chat/PM was dropped by flood control; retry after this many ms.
    Cooldown(u64),
    /// A chat was refused (muted).
    NoFlood(String),
    /// A chat was dropped by the new-account restriction.
    SpamFiltered(String),
    /// A queue request failed.
    QueueFail(String),
    /// An item queued by the bot arrived.
    QueuedByMe,
    /// A rank change failed.
    ChannelRankFail(String),
    /// Someone's rank changed (answers the bot's `setChannelRank`).
    UserRankChanged,
    /// The bot's own chat line came back (live, not a backlog replay).
    SelfChat(Echo),
    /// A PM the bot sent came back.
    SelfPm(Echo),
    /// The bot was muted (`true`) or unmuted in the channel (its own `setUserMeta`).
    SelfMuted(bool),
    /// The local playlist disagrees with the server's.
    Desync(Desync),
}

/// The bot's own line as the server echoed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Echo {
    /// `msg` as received (escaped HTML).
    pub msg: String,
    /// The server's `time` (epoch ms): when it processed the line.
    pub time_ms: Option<i64>,
}

/// What one frame was.
#[derive(Debug)]
pub enum Inbound {
    /// A Socket.IO event (published), maybe with a signal.
    Event(Option<Signal>),
    /// Engine.IO ping with optional data: answer with a pong.
    Ping(Option<String>),
    /// Engine.IO open packet.
    Open(OpenInfo),
    /// Socket.IO connect ack.
    ConnectAck,
    /// Socket.IO connect refused, with the server's message.
    ConnectError(String),
    /// Socket.IO disconnect from the server.
    Disconnect,
    /// Engine.IO close.
    Close,
    /// Anything else (pong, noop, acks).
    Other,
}

/// The sender (and time, and recipient) of a chat line or PM, borrowed.
#[derive(Deserialize)]
struct ChatHead<'a> {
    #[serde(borrow)]
    username: Cow<'a, str>,
    #[serde(default, borrow)]
    time: Option<&'a RawValue>,
    #[serde(default, borrow)]
    msg: Option<Cow<'a, str>>,
}

fn lenient_ms(raw: Option<&RawValue>) -> Option<i64> {
    let text = raw?.get().trim_matches('"');
    text.parse::<i64>()
        .ok()
        .or_else(|| text.parse::<f64>().ok().map(|f| f as i64))
}

/// `channelOpts` carries the channel password in clear (`"password": "…"`, or `false`
/// when there is none). It must not reach plugins, the room state or the API: the
/// password becomes `true` ("set"). Returns the rewritten payload, or `None` when there
/// is nothing to hide.
fn redact_channel_password(payload: &RawValue) -> Option<Box<RawValue>> {
    if !payload.get().contains("\"password\"") {
        return None;
    }
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(payload.get()).ok()?;
    match map.get("password") {
        Some(serde_json::Value::String(pw)) if !pw.is_empty() => {}
        _ => return None,
    }
    map.insert("password".to_owned(), serde_json::Value::Bool(true));
    serde_json::value::to_raw_value(&map).ok()
}

/// Events that end the backlog part of the join burst (they follow the backlog).
fn ends_burst(name: &str) -> bool {
    matches!(
        name,
        "drinkCount"
            | "channelCSSJS"
            | "setMotd"
            | "channelOpts"
            | "setPlaylistMeta"
            | "playlist"
            | "userlist"
            | "usercount"
    )
}

/// The inbound pipeline of one room. One per room; [`InboundPipeline::new_session`] on
/// every connect.
pub struct InboundPipeline {
    room: Arc<str>,
    source: Arc<str>,
    bus: Bus,
    shared: Arc<RoomShared>,
    prefix: String,
    subjects: HashMap<Box<str>, Arc<str>>,
    tag_backlog: Arc<str>,
    tag_self: Arc<str>,
    tag_repeat: Arc<str>,
    /// The play last seen in this room; NOT reset by a new session (it is what tells a
    /// rejoin's repeated `changeMedia` from a new play).
    last_play: Option<PlayMark>,
    me: Option<String>,
    in_burst: bool,
    joined: bool,
    newest_backlog_ms: i64,
    session_start_ms: i64,
    inbound: IntCounter,
    bad: IntCounter,
    /// Entries dropped at the room's caps, by cap (`users`, `playlist`).
    capped_users: IntCounter,
    capped_playlist: IntCounter,
    /// The WARN about caps is written at most once per [`CAP_LOG_INTERVAL_MS`]; the
    /// lines in between are counted and reported with the next one.
    cap_log: CapLog,
    published: u64,
}

/// At most one WARN line about the room's caps per this interval.
const CAP_LOG_INTERVAL_MS: i64 = 60_000;

/// Rate limit of the cap WARN: when it was last written and what was dropped since.
#[derive(Default)]
struct CapLog {
    last_ms: Option<i64>,
    suppressed_events: u64,
    suppressed_dropped: u64,
}

impl InboundPipeline {
    /// A pipeline publishing on `bus` for `shared`'s room.
    pub fn new(bus: Bus, shared: Arc<RoomShared>, metrics: &CytubeMetrics) -> Self {
        let room = shared.name.clone();
        InboundPipeline {
            source: Arc::from(format!("cytube:{room}")),
            prefix: format!("cytube.in.{room}."),
            inbound: metrics.inbound_for(&room),
            bad: metrics.bad_frames.with_label_values(&[&room]),
            capped_users: metrics.capped.with_label_values(&[&room, "users"]),
            capped_playlist: metrics.capped.with_label_values(&[&room, "playlist"]),
            cap_log: CapLog::default(),
            room,
            bus,
            shared,
            subjects: HashMap::new(),
            tag_backlog: Arc::from(TAG_BACKLOG),
            tag_self: Arc::from(TAG_SELF),
            tag_repeat: Arc::from(TAG_REPEAT),
            last_play: None,
            me: None,
            in_burst: true,
            joined: false,
            newest_backlog_ms: i64::MIN,
            session_start_ms: 0,
            published: 0,
        }
    }

    /// Starts a new connection: the state starts empty (the server replays everything
    /// on join) and the next chat lines are backlog until the burst moves on.
    /// `me` is the configured bot name (for `self` tags until `login` names it).
    pub fn new_session(&mut self, me: Option<&str>) {
        self.new_session_at(me, crate::now_ms());
    }

    /// [`new_session`](Self::new_session) with the session's start (unix ms) given:
    /// chat lines far older than it are backlog (replays of recorded sessions pass the
    /// recording's start).
    pub fn new_session_at(&mut self, me: Option<&str>, start_ms: i64) {
        self.shared.reset_state();
        self.me = me.map(str::to_owned);
        self.in_burst = true;
        self.joined = false;
        self.newest_backlog_ms = i64::MIN;
        self.session_start_ms = start_ms;
    }

    /// The connection ended: what the room state held is no longer known (users may
    /// leave, the bot is not logged in), so it is cleared rather than shown stale. The
    /// next session rebuilds it from the server's replay.
    pub fn connection_lost(&mut self) {
        self.shared.reset_state();
        self.joined = false;
    }

    /// Events published so far.
    pub fn published(&self) -> u64 {
        self.published
    }

    /// Handles one websocket text frame. A frame that does not parse is counted and
    /// returned as the error; the caller logs it and goes on.
    pub fn handle_frame(&mut self, text: &str) -> Result<Inbound, FrameError> {
        let packet = match frame::parse(text) {
            Ok(p) => p,
            Err(e) => {
                self.bad.inc();
                return Err(e);
            }
        };
        Ok(match packet {
            EioPacket::Message(SioPacket::Event { name, payload, .. }) => {
                Inbound::Event(self.handle_event(&name, payload))
            }
            EioPacket::Ping(data) => Inbound::Ping(data.map(str::to_owned)),
            EioPacket::Open(info) => Inbound::Open(info),
            EioPacket::Message(SioPacket::Connect(_)) => Inbound::ConnectAck,
            EioPacket::Message(SioPacket::ConnectError(raw)) => {
                #[derive(Deserialize)]
                struct Msg {
                    message: String,
                }
                let message = raw
                    .and_then(|r| serde_json::from_str::<Msg>(r.get()).ok())
                    .map(|m| m.message)
                    .or_else(|| raw.map(|r| r.get().to_owned()))
                    .unwrap_or_default();
                Inbound::ConnectError(message)
            }
            EioPacket::Message(SioPacket::Disconnect) => Inbound::Disconnect,
            EioPacket::Close => Inbound::Close,
            EioPacket::Pong(_)
            | EioPacket::Upgrade
            | EioPacket::Noop
            | EioPacket::Message(SioPacket::Ack { .. }) => Inbound::Other,
        })
    }

    /// Handles one Socket.IO event (see the module docs).
    pub fn handle_event(&mut self, name: &str, payload: Option<&RawValue>) -> Option<Signal> {
        if name == "channelOpts"
            && let Some(redacted) = payload.and_then(redact_channel_password)
        {
            return self.handle_event_inner(name, Some(&redacted));
        }
        self.handle_event_inner(name, payload)
    }

    fn handle_event_inner(&mut self, name: &str, payload: Option<&RawValue>) -> Option<Signal> {
        self.inbound.inc();
        let mut tags: smallvec::SmallVec<[Arc<str>; 2]> = smallvec::SmallVec::new();
        let mut priority = Priority::Normal;
        let mut signal = None;
        match name {
            "chatMsg" => {
                priority = Priority::High;
                match payload.map(|p| serde_json::from_str::<ChatHead<'_>>(p.get())) {
                    Some(Ok(head)) => {
                        let time = lenient_ms(head.time);
                        let backlog = self.is_backlog(time);
                        if backlog {
                            tags.push(self.tag_backlog.clone());
                        }
                        if self.is_me(&head.username) {
                            tags.push(self.tag_self.clone());
                            if !backlog {
                                signal = Some(Signal::SelfChat(Echo {
                                    msg: head.msg.as_deref().unwrap_or_default().to_owned(),
                                    time_ms: time,
                                }));
                            }
                        }
                    }
                    _ => self.decode_failed(name, payload),
                }
            }
            "pm" => {
                priority = Priority::High;
                match payload.map(|p| serde_json::from_str::<ChatHead<'_>>(p.get())) {
                    Some(Ok(head)) => {
                        if self.is_me(&head.username) {
                            tags.push(self.tag_self.clone());
                            signal = Some(Signal::SelfPm(Echo {
                                msg: head.msg.as_deref().unwrap_or_default().to_owned(),
                                time_ms: lenient_ms(head.time),
                            }));
                        }
                    }
                    _ => self.decode_failed(name, payload),
                }
            }
            _ => {
                if name == "login" {
                    priority = Priority::High;
                }
                if self.in_burst && ends_burst(name) {
                    self.in_burst = false;
                }
                if ServerEvent::KNOWN_NAMES.contains(&name) {
                    match ServerEvent::decode(name, payload) {
                        Ok(ev) => {
                            // The bot's own arrival and departure are not a visitor's
                            // (analytics, the user tracker skip `self`).
                            if let ServerEvent::AddUser(u) = &ev
                                && self.is_me(&u.name)
                            {
                                tags.push(self.tag_self.clone());
                            }
                            if let ServerEvent::UserLeave(l) = &ev
                                && self.is_me(&l.name)
                            {
                                tags.push(self.tag_self.clone());
                            }
                            if self.follow_play(&ev) {
                                tags.push(self.tag_repeat.clone());
                            }
                            signal = self.apply(&ev);
                        }
                        Err(e) => {
                            self.bad.inc();
                            crate::warn_limited!(room = %self.room, event = ?name, error = ?e.to_string(), "server event does not decode; published raw, room state unchanged");
                        }
                    }
                }
            }
        }
        self.publish(name, payload, priority, tags);
        signal
    }

    /// Follows the play across connections; returns whether `ev` is a `changeMedia`
    /// the server repeated on join for the play already seen (see [`PlayMark`]). Only a
    /// join burst repeats: after the `userlist` every `changeMedia` is a real change
    /// (a jump back to the same item is a new play).
    fn follow_play(&mut self, ev: &ServerEvent) -> bool {
        let now = crate::now_ms();
        match ev {
            ServerEvent::ChangeMedia(cm) => {
                let uid = self.shared.state.read().current_uid;
                let repeat = !self.joined
                    && self
                        .last_play
                        .as_ref()
                        .is_some_and(|p| p.continued_by(uid, cm, now));
                let mut mark = PlayMark::of(uid, cm, now);
                if repeat && mark.uid.is_none() {
                    mark.uid = self.last_play.as_ref().and_then(|p| p.uid);
                }
                self.last_play = Some(mark);
                repeat
            }
            ServerEvent::MediaUpdate(u) => {
                if let Some(p) = &mut self.last_play {
                    p.position = u.current_time;
                    p.paused = u.paused;
                    p.at_ms = now;
                }
                false
            }
            _ => false,
        }
    }

    fn decode_failed(&self, name: &str, payload: Option<&RawValue>) {
        self.bad.inc();
        crate::warn_limited!(
            room = %self.room,
            event = ?name,
            bytes = payload.map_or(0, |p| p.get().len()),
            "server event does not decode; published raw without tags"
        );
    }

    fn is_me(&self, name: &str) -> bool {
        self.me
            .as_deref()
            .is_some_and(|me| me.eq_ignore_ascii_case(name))
    }

    fn is_backlog(&mut self, time: Option<i64>) -> bool {
        if self.in_burst {
            if let Some(t) = time {
                self.newest_backlog_ms = self.newest_backlog_ms.max(t);
            }
            return true;
        }
        match time {
            Some(t) => t <= self.newest_backlog_ms || t < self.session_start_ms - OLD_CHAT_MS,
            None => false,
        }
    }

    /// Applies a decoded event to the room state; returns its signal.
    fn apply(&mut self, ev: &ServerEvent) -> Option<Signal> {
        let applied = self.shared.state.write().apply(ev);
        match &applied {
            Applied::Desync(d) => {
                crate::warn_limited!(room = %self.room, desync = ?d.to_string(), "room state out of step with the server");
            }
            Applied::Capped(c) => self.capped(c),
            Applied::Changed | Applied::Unchanged => {}
        }
        let signal = match ev {
            ServerEvent::Rank(r) => Some(Signal::Rank(*r)),
            ServerEvent::Login(reply) => {
                if reply.success
                    && let Some(n) = &reply.name
                {
                    self.me = Some(n.clone());
                }
                Some(Signal::Login(reply.clone()))
            }
            ServerEvent::Userlist(_) if !self.joined => {
                self.joined = true;
                Some(Signal::Joined)
            }
            ServerEvent::NeedPassword(wrong) => Some(Signal::NeedPassword(*wrong)),
            ServerEvent::CancelNeedPassword => Some(Signal::PasswordAccepted),
            ServerEvent::Kick(k) => Some(Signal::Kick(k.reason.clone())),
            ServerEvent::ErrorMsg(e) => Some(Signal::ErrorMsg(e.msg.clone())),
            ServerEvent::ChannelOpts(o) => Some(Signal::ChannelOpts(Box::new(o.clone()))),
            ServerEvent::SetPermissions(p) => Some(Signal::Permissions(Box::new(p.clone()))),
            ServerEvent::Cooldown(ms) => Some(Signal::Cooldown(*ms)),
            ServerEvent::NoFlood(n) => Some(Signal::NoFlood(n.msg.clone())),
            ServerEvent::SpamFiltered(s) => Some(Signal::SpamFiltered(s.reason.clone())),
            ServerEvent::QueueFail(q) => Some(Signal::QueueFail(q.msg.clone())),
            ServerEvent::Queue(q) if self.is_me(&q.item.queueby) => Some(Signal::QueuedByMe),
            ServerEvent::ChannelRankFail(f) => Some(Signal::ChannelRankFail(f.msg.clone())),
            ServerEvent::SetUserRank(_) => Some(Signal::UserRankChanged),
            ServerEvent::SetUserMeta(m) if self.is_me(&m.name) => {
                Some(Signal::SelfMuted(m.meta.muted))
            }
            ServerEvent::AddUser(u) if self.is_me(&u.name) => Some(Signal::SelfMuted(u.meta.muted)),
            _ => None,
        };
        match applied {
            Applied::Desync(d) if signal.is_none() => Some(Signal::Desync(d)),
            _ => signal,
        }
    }

    /// Counts what a cap dropped and says so, at most once per interval.
    fn capped(&mut self, c: &Capped) {
        let dropped = u64::try_from(c.dropped).unwrap_or(u64::MAX);
        match c.what {
            "users" => self.capped_users.inc_by(dropped),
            _ => self.capped_playlist.inc_by(dropped),
        }
        let now = crate::now_ms();
        let log = &mut self.cap_log;
        if log
            .last_ms
            .is_some_and(|last| now - last < CAP_LOG_INTERVAL_MS)
        {
            log.suppressed_events += 1;
            log.suppressed_dropped += dropped;
            return;
        }
        tracing::warn!(
            room = %self.room,
            cap = c.what,
            limit = c.limit,
            dropped = c.dropped,
            suppressed_events = log.suppressed_events,
            suppressed_dropped = log.suppressed_dropped,
            "the room is at its cap: entries beyond it are not kept (raise [rooms.limits] if the channel is really this big)"
        );
        log.last_ms = Some(now);
        log.suppressed_events = 0;
        log.suppressed_dropped = 0;
    }

    fn subject(&mut self, name: &str) -> Option<Arc<str>> {
        if let Some(s) = self.subjects.get(name) {
            return Some(s.clone());
        }
        // One token exactly: a dot would publish under a deeper subject than
        // `cytube.in.<room>.<event>` patterns expect.
        if name.contains(['.', '*', '>']) {
            return None;
        }
        let subject: Arc<str> = Arc::from(format!("{}{name}", self.prefix));
        if daz_bus::validate_subject(&subject).is_err() {
            return None;
        }
        if self.subjects.len() < SUBJECT_CACHE_MAX {
            self.subjects.insert(name.into(), subject.clone());
        }
        Some(subject)
    }

    fn publish(
        &mut self,
        name: &str,
        payload: Option<&RawValue>,
        priority: Priority,
        tags: smallvec::SmallVec<[Arc<str>; 2]>,
    ) {
        let Some(subject) = self.subject(name) else {
            self.bad.inc();
            tracing::debug!(room = %self.room, event = name, "event name is not a valid subject token; not published");
            return;
        };
        let bytes: Arc<[u8]> = match payload {
            Some(p) => Arc::from(p.get().as_bytes()),
            None => Arc::from(&b"null"[..]),
        };
        let mut b = Envelope::builder(subject, bytes)
            .room(self.room.clone())
            .source(self.source.clone())
            .priority(priority);
        for t in tags {
            b = b.tag(t);
        }
        match b.build() {
            Ok(env) => {
                if let Err(e) = self.bus.publish(env) {
                    crate::warn_limited!(room = %self.room, event = ?name, error = %e, "publishing a server event failed");
                }
                self.published += 1;
            }
            Err(e) => {
                tracing::debug!(room = %self.room, event = name, error = %e, "invalid subject");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use daz_bus::{Mailbox, MailboxConfig};

    fn raw(s: &str) -> Box<RawValue> {
        serde_json::from_str(s).unwrap()
    }

    fn pipeline() -> (InboundPipeline, Arc<Mailbox>, Arc<RoomShared>) {
        let bus = Bus::new();
        let mb = Mailbox::new("probe", MailboxConfig::new(1000));
        let id = bus.register("probe", mb.clone()).unwrap();
        bus.subscribe(id, "cytube.in.>").unwrap();
        let room = RoomShared::new("r", "r", "http://x", Some("bot".into()));
        let metrics = crate::metrics::Metrics::new();
        let p = InboundPipeline::new(bus, room.clone(), &CytubeMetrics::new(&metrics));
        (p, mb, room)
    }

    #[test]
    fn channel_passwords_are_redacted_everywhere() {
        assert!(redact_channel_password(&raw(r#"{"password":false}"#)).is_none());
        assert!(redact_channel_password(&raw(r#"{"pagetitle":"x"}"#)).is_none());
        let r = redact_channel_password(&raw(r#"{"password":"s3cret","x":1}"#)).unwrap();
        assert_eq!(r.get(), r#"{"password":true,"x":1}"#);

        let (mut p, mb, room) = pipeline();
        p.new_session(Some("bot"));
        p.handle_frame(r#"42["channelOpts",{"password":"s3cret","chat_antiflood":true}]"#)
            .unwrap();
        let env = mb.try_pop().unwrap();
        assert!(!env.payload_str().unwrap().contains("s3cret"));
        assert!(!room.to_json().contains("s3cret"));
        assert!(room.state.read().options.as_ref().unwrap().chat_antiflood);
    }

    #[test]
    fn burst_chat_is_backlog_and_live_chat_is_not() {
        let (mut p, mb, _) = pipeline();
        p.new_session_at(Some("bot"), 1_000_000);
        p.handle_frame(r#"42["chatMsg",{"username":"a","msg":"old","meta":{},"time":999000}]"#)
            .unwrap();
        p.handle_frame(r#"42["drinkCount",0]"#).unwrap();
        // Same time as the newest backlog line: a replay.
        p.handle_frame(r#"42["chatMsg",{"username":"a","msg":"dup","meta":{},"time":999000}]"#)
            .unwrap();
        p.handle_frame(
            r#"42["chatMsg",{"username":"BOT","msg":"new","meta":{},"time":"1000500"}]"#,
        )
        .unwrap();
        let mut evs = Vec::new();
        mb.drain_into(&mut evs, 10);
        evs.sort_by_key(|e| e.id);
        let tags: Vec<(bool, bool)> = evs
            .iter()
            .filter(|e| e.subject.ends_with("chatMsg"))
            .map(|e| (e.has_tag(TAG_BACKLOG), e.has_tag(TAG_SELF)))
            .collect();
        assert_eq!(tags, [(true, false), (true, false), (false, true)]);
    }

    /// Issue: the bot's own rejoins counted as joins in `!stats`.
    #[test]
    fn the_bots_own_arrival_and_departure_are_tagged_self() {
        let (mut p, mb, _) = pipeline();
        p.new_session(Some("Bot"));
        for f in [
            r#"42["addUser",{"name":"bot","rank":2,"profile":{},"meta":{}}]"#,
            r#"42["addUser",{"name":"ann","rank":1,"profile":{},"meta":{}}]"#,
            r#"42["userLeave",{"name":"ann"}]"#,
            r#"42["userLeave",{"name":"BOT"}]"#,
        ] {
            p.handle_frame(f).unwrap();
        }
        let mut evs = Vec::new();
        mb.drain_into(&mut evs, 10);
        evs.sort_by_key(|e| e.id);
        let tagged: Vec<bool> = evs.iter().map(|e| e.has_tag(TAG_SELF)).collect();
        assert_eq!(tagged, [true, false, false, true]);
    }

    /// The `changeMedia` events `frames` published, as `(currentTime, repeat tag)`.
    fn changes(p: &mut InboundPipeline, mb: &Mailbox, frames: &[String]) -> Vec<(f64, bool)> {
        for f in frames {
            p.handle_frame(f).unwrap();
        }
        let mut evs = Vec::new();
        mb.drain_into(&mut evs, 100);
        evs.sort_by_key(|e| e.id);
        evs.iter()
            .filter(|e| e.subject.ends_with(".changeMedia"))
            .map(|e| {
                let v: serde_json::Value = serde_json::from_str(e.payload_str().unwrap()).unwrap();
                (v["currentTime"].as_f64().unwrap(), e.has_tag(TAG_REPEAT))
            })
            .collect()
    }

    /// A join burst as the real server sends it: the playlist, `setCurrent` twice,
    /// `changeMedia`, then the `userlist`.
    fn join_burst(uid: u64, media: &str, at: f64) -> Vec<String> {
        vec![
            format!(r#"42["setCurrent",{uid}]"#),
            format!(r#"42["setCurrent",{uid}]"#),
            format!(r#"42["changeMedia",{{{media},"currentTime":{at},"paused":false}}]"#),
            r#"42["userlist",[]]"#.to_owned(),
        ]
    }

    /// Issue: the server repeats `changeMedia` at `currentTime` 0 for a live item on
    /// every join, and every rejoin of the bot counted as another play.
    #[test]
    fn a_live_item_repeated_on_a_rejoin_is_tagged_repeat() {
        let (mut p, mb, _) = pipeline();
        let live = r#""id":"chan","type":"tw","title":"Live","seconds":0,"duration":"00:00""#;
        p.new_session(Some("bot"));
        assert_eq!(
            changes(&mut p, &mb, &join_burst(5, live, 0.0)),
            [(0.0, false)]
        );
        for _ in 0..3 {
            p.connection_lost();
            p.new_session(Some("bot"));
            assert_eq!(
                changes(&mut p, &mb, &join_burst(5, live, 0.0)),
                [(0.0, true)]
            );
        }
        // Within a session a changeMedia is a real change: the same item again (a jump
        // back to it) is a new play.
        let again = format!(r#"42["changeMedia",{{{live},"currentTime":0,"paused":false}}]"#);
        assert_eq!(changes(&mut p, &mb, &[again]), [(0.0, false)]);
        // The live media queued again while the bot was away: another item, a new play.
        p.connection_lost();
        p.new_session(Some("bot"));
        assert_eq!(
            changes(&mut p, &mb, &join_burst(6, live, 0.0)),
            [(0.0, false)]
        );
    }

    #[test]
    fn a_recorded_item_is_repeated_only_if_it_went_on() {
        let (mut p, mb, _) = pipeline();
        let vid = r#""id":"v","type":"yt","title":"Song","seconds":600,"duration":"10:00""#;
        p.new_session(Some("bot"));
        assert_eq!(
            changes(&mut p, &mb, &join_burst(1, vid, -3.0)),
            [(-3.0, false)]
        );
        let update = r#"42["mediaUpdate",{"currentTime":40,"paused":false}]"#.to_owned();
        changes(&mut p, &mb, &[update]);
        p.connection_lost();
        p.new_session(Some("bot"));
        assert_eq!(
            changes(&mut p, &mb, &join_burst(1, vid, 70.0)),
            [(70.0, true)]
        );
        // Back at the start: it played again (a one-item playlist loops).
        p.connection_lost();
        p.new_session(Some("bot"));
        assert_eq!(
            changes(&mut p, &mb, &join_burst(1, vid, 1.0)),
            [(1.0, false)]
        );
        // Another media under the same uid is never the same play.
        let other = r#""id":"w","type":"yt","title":"Other","seconds":600,"duration":"10:00""#;
        p.connection_lost();
        p.new_session(Some("bot"));
        assert_eq!(
            changes(&mut p, &mb, &join_burst(1, other, 5.0)),
            [(5.0, false)]
        );
    }

    #[test]
    fn a_recorded_play_that_must_have_ended_is_not_continued() {
        let mark = PlayMark {
            uid: Some(1),
            media_type: "yt".into(),
            id: "v".into(),
            seconds: 60.0,
            position: 50.0,
            paused: false,
            at_ms: 0,
        };
        let cm = |at: f64| ChangeMedia {
            media: daz_cytube_proto::events::Media {
                id: "v".into(),
                media_type: "yt".into(),
                seconds: 60.0,
                ..Default::default()
            },
            current_time: at,
            paused: false,
        };
        assert!(mark.continued_by(Some(1), &cm(55.0), 5_000));
        // 10 s were left; 10 minutes later it has played through (and around) again.
        assert!(!mark.continued_by(Some(1), &cm(55.0), 600_000));
        // Paused, it can still be there.
        let paused = PlayMark {
            paused: true,
            ..mark
        };
        assert!(paused.continued_by(Some(1), &cm(50.0), 600_000));
    }

    #[test]
    fn garbage_is_counted_not_fatal() {
        let (mut p, mb, _) = pipeline();
        p.new_session(None);
        for g in [
            "9garbage",
            "4",
            "42{\"not\":\"an array\"}",
            "42[]",
            "\u{0}\u{1}binary?",
        ] {
            assert!(p.handle_frame(g).is_err(), "{g}");
        }
        // A known event with a payload of the wrong shape is still published raw.
        assert!(matches!(
            p.handle_frame(r#"42["usercount","many"]"#),
            Ok(Inbound::Event(None))
        ));
        assert_eq!(mb.len(), 1);
        // An event name that cannot be a subject token is not published.
        p.handle_frame(r#"42["a.b",1]"#).unwrap();
        assert_eq!(mb.len(), 1);
    }

    #[test]
    fn times_are_read_leniently() {
        assert_eq!(lenient_ms(Some(&raw("12"))), Some(12));
        assert_eq!(lenient_ms(Some(&raw("\"12\""))), Some(12));
        assert_eq!(lenient_ms(Some(&raw("12.7"))), Some(12));
        assert_eq!(lenient_ms(Some(&raw("null"))), None);
        assert_eq!(lenient_ms(None), None);
    }
}
