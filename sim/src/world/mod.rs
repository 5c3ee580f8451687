//! The simulated server's state and rules, behind one lock.
//!
//! # Layout
//!
//! - this file: [`World`] (sockets, channels, per-IP budgets, frame logs),
//!   emitting frames, timers, `usercount` throttling, snapshots, faults.
//! - [`channel`]: one channel's state and its JSON views.
//! - `session`: `joinChannel`, channel passwords, `login`, joining/leaving,
//!   kicks and duplicate logins.
//! - `chat`: `chatMsg`, `pm`, chat commands, AFK, mutes.
//! - `media`: playlist, playback clock, leader, polls, voteskip.
//! - `admin`: MOTD, options, permissions, CSS/JS, channel ranks.
//! - `dispatch`: routes an incoming event to its handler after the type check.
//!
//! Invariants:
//! - Every rule runs with the lock held, so each socket's frames go out in the
//!   order the handlers emit them, and handlers see a consistent world.
//! - A frame is logged (for [`crate::SimHandle::frames_sent_to`]) when it is
//!   queued for its socket, in the same order.
//! - Timers never hold the lock while waiting; each carries the world
//!   `generation` and does nothing after a restart.

mod admin;
pub(crate) mod channel;
mod chat;
mod dispatch;
mod media;
mod session;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Weak;
use std::time::{Duration, Instant};

use daz_cytube_proto::frame;
use rand::Rng;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use crate::config::SimConfig;
use crate::json::{J, obj};
use crate::server::Shared;
use crate::snapshot::{ChannelSnapshot, ItemSnapshot, UserSnapshot};
use crate::text;
use crate::throttle::TokenBucket;
use channel::Channel;
use daz_cytube_proto::flood::RateLimiter;

/// What a connection task must do next with its websocket.
#[derive(Debug)]
pub(crate) enum Out {
    /// Send this text frame.
    Text(String),
    /// Socket.IO server disconnect: send `41`, close the websocket, stop.
    Disconnect,
    /// Fault: drop the TCP connection without any closing frame.
    Abort,
}

/// Where a socket is in joining a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinState {
    /// No `joinChannel` yet.
    None,
    /// `joinChannel` accepted, the channel is "loading".
    Pending,
    /// Waiting for `channelPassword`.
    NeedPassword,
    /// In the channel.
    Joined,
}

/// One Socket.IO client.
#[derive(Debug)]
pub(crate) struct Sock {
    pub sid: String,
    pub ip: IpAddr,
    pub masked_ip: String,
    tx: UnboundedSender<Out>,
    pub sio_connected: bool,
    /// Kicked or disconnected: nothing more is sent.
    pub closed: bool,
    pub name: Option<String>,
    pub guest: bool,
    /// -1 until login, 0 for guests, the account's rank otherwise.
    pub global_rank: f64,
    /// Rank granted by the current channel (0 when none).
    pub channel_rank: f64,
    pub login_pending: bool,
    pub channel: Option<String>,
    pub join: JoinState,
    pub afk: bool,
    /// One limiter for chatMsg and pm (parameters chosen per message).
    pub chat_limiter: RateLimiter,
    /// The queue limiter (parameters by rank).
    pub queue_limiter: RateLimiter,
    /// When the account (sim start) or guest (login) was first seen, for
    /// `new_user_chat_delay`.
    pub first_seen: Instant,
    pub last_playlist_request: Option<Instant>,
}

impl Sock {
    pub fn lower_name(&self) -> Option<String> {
        self.name.as_deref().map(str::to_lowercase)
    }
}

/// The whole simulated server.
pub(crate) struct World {
    pub cfg: SimConfig,
    shared: Weak<Shared>,
    /// Bumped by a restart; timers of an older generation do nothing.
    pub generation: u64,
    next_id: u64,
    next_epoch: u64,
    pub socks: HashMap<u64, Sock>,
    pub channels: HashMap<String, Channel>,
    ip_buckets: HashMap<IpAddr, TokenBucket>,
    ip_sockets: HashMap<IpAddr, usize>,
    guest_logins: HashMap<IpAddr, Instant>,
    aliases: HashMap<IpAddr, Vec<String>>,
    started: Instant,
    /// Added to the clock of rate limits, guest limits and account ages
    /// ([`crate::SimHandle::advance_clock`]).
    pub clock_offset: Duration,
    logs: HashMap<u64, Vec<(String, Value)>>,
    latest_by_name: HashMap<String, u64>,
}

impl World {
    pub fn new(cfg: SimConfig, shared: Weak<Shared>) -> Self {
        let mut w = World {
            cfg,
            shared,
            generation: 0,
            next_id: 1,
            next_epoch: 1,
            socks: HashMap::new(),
            channels: HashMap::new(),
            ip_buckets: HashMap::new(),
            ip_sockets: HashMap::new(),
            guest_logins: HashMap::new(),
            aliases: HashMap::new(),
            started: Instant::now(),
            clock_offset: Duration::ZERO,
            logs: HashMap::new(),
            latest_by_name: HashMap::new(),
        };
        w.create_registered_channels();
        w
    }

    /// Registered channels exist from the start (and survive restarts).
    fn create_registered_channels(&mut self) {
        let names: Vec<String> = self
            .cfg
            .channels
            .iter()
            .filter(|c| c.registered)
            .map(|c| c.name.to_lowercase())
            .collect();
        for name in names {
            if !self.channels.contains_key(&name) {
                self.ensure_channel(&name);
            }
        }
    }

    /// The rate-limit clock (real time plus [`World::clock_offset`]).
    pub fn now(&self) -> Instant {
        Instant::now() + self.clock_offset
    }

    fn fresh_epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }

    /// Creates the channel if it does not exist (from its config template, if any).
    pub fn ensure_channel(&mut self, name: &str) {
        if self.channels.contains_key(name) {
            return;
        }
        let cfg = self
            .cfg
            .channels
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
            .cloned();
        let ch = Channel::new(name, cfg.as_ref(), Instant::now());
        let has_items = !ch.items.is_empty();
        self.channels.insert(name.to_owned(), ch);
        if has_items {
            if let Some(first) = self
                .channels
                .get(name)
                .and_then(|c| c.items.first())
                .map(|i| i.uid)
            {
                self.start_item(name, first);
            }
        }
    }

    // -----------------------------------------------------------------
    // Sockets
    // -----------------------------------------------------------------

    /// A websocket finished its upgrade. Returns the socket id, the Engine.IO
    /// sid and the generation the connection belongs to.
    pub fn register(&mut self, ip: IpAddr, tx: UnboundedSender<Out>) -> (u64, String, u64) {
        let id = self.next_id;
        self.next_id += 1;
        let sock = Sock {
            sid: random_sid(),
            ip,
            masked_ip: text::mask_ip(&ip.to_string()),
            tx,
            sio_connected: false,
            closed: false,
            name: None,
            guest: false,
            global_rank: -1.0,
            channel_rank: 0.0,
            login_pending: false,
            channel: None,
            join: JoinState::None,
            afk: false,
            chat_limiter: RateLimiter::chat_default(),
            queue_limiter: RateLimiter::queue_for_rank(0.0),
            first_seen: self.now(),
            last_playlist_request: None,
        };
        self.socks.insert(id, sock);
        self.logs.insert(id, Vec::new());
        (id, random_sid(), self.generation)
    }

    /// The client sent `40`: apply the per-IP connect budget and socket cap.
    pub fn sio_connect(&mut self, id: u64) {
        let now = self.now();
        let (burst, refill, max) = (
            self.cfg.connect_burst,
            self.cfg.connect_refill,
            self.cfg.max_sockets_per_ip,
        );
        let Some(sock) = self.socks.get_mut(&id) else {
            return;
        };
        if sock.sio_connected || sock.closed {
            return;
        }
        let ip = sock.ip;
        let bucket = self
            .ip_buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(burst, refill, now));
        if !bucket.try_take(now) {
            tracing::debug!(%ip, "connect refused: per-IP connect budget spent");
            let _ = sock.tx.send(Out::Text(frame::encode_connect_error(
                "Rate limit exceeded",
            )));
            return;
        }
        sock.sio_connected = true;
        let _ = sock.tx.send(Out::Text(frame::encode_connect(&sock.sid)));
        let count = self.ip_sockets.entry(ip).or_insert(0);
        *count += 1;
        if *count > max {
            self.kick(id, "Too many connections from your IP address");
            return;
        }
        self.emit(id, "rank", Some(&J::Num(-1.0)));
    }

    /// The connection ended (either side). Parts the channel and forgets the socket.
    pub fn on_close(&mut self, id: u64) {
        self.part_user(id);
        if let Some(sock) = self.socks.remove(&id) {
            if sock.sio_connected {
                if let Some(n) = self.ip_sockets.get_mut(&sock.ip) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        if !self.latest_by_name.values().any(|v| *v == id) {
            self.logs.remove(&id);
        }
    }

    /// Sends `kick {reason}` then a server-side disconnect, and parts the
    /// channel right away (others see `userLeave` before anything else).
    pub fn kick(&mut self, id: u64, reason: &str) {
        self.emit(id, "kick", Some(&obj! { "reason" => reason }));
        if let Some(sock) = self.socks.get_mut(&id) {
            let _ = sock.tx.send(Out::Disconnect);
            sock.closed = true;
        }
        self.part_user(id);
    }

    // -----------------------------------------------------------------
    // Emitting
    // -----------------------------------------------------------------

    /// Queues event `name` for socket `id` and logs it.
    pub fn emit(&mut self, id: u64, name: &str, payload: Option<&J>) {
        let Some(sock) = self.socks.get(&id) else {
            return;
        };
        if sock.closed {
            return;
        }
        let json = payload.map(J::to_json);
        let text = frame::encode_event_raw(name, json.as_deref());
        let _ = sock.tx.send(Out::Text(text));
        let cap = self.cfg.frame_log_cap;
        if cap == 0 {
            return;
        }
        let log = self.logs.entry(id).or_default();
        if log.len() >= cap {
            log.drain(..cap.div_ceil(10));
        }
        log.push((name.to_owned(), payload.map_or(Value::Null, J::to_value)));
    }

    /// Sends the same event to every socket in the channel.
    pub fn broadcast(&mut self, ch: &str, name: &str, payload: Option<&J>) {
        for id in self.members(ch) {
            self.emit(id, name, payload);
        }
    }

    /// Sends a per-recipient payload (None skips that recipient).
    pub fn broadcast_with(&mut self, ch: &str, name: &str, f: impl Fn(&World, u64) -> Option<J>) {
        let targets: Vec<(u64, J)> = self
            .members(ch)
            .into_iter()
            .filter_map(|id| f(self, id).map(|p| (id, p)))
            .collect();
        for (id, payload) in targets {
            self.emit(id, name, Some(&payload));
        }
    }

    /// Sockets in the channel, join order.
    pub fn members(&self, ch: &str) -> Vec<u64> {
        self.channels
            .get(ch)
            .map(|c| c.users.clone())
            .unwrap_or_default()
    }

    /// `chatMsg` from `[server]` to everyone at or above `min_rank`.
    pub fn mod_message(&mut self, ch: &str, msg: &str, min_rank: f64) {
        let payload = obj! {
            "username" => "[server]",
            "msg" => msg,
            "meta" => obj! { "addClass" => "server-whisper", "addClassToNameAndTimestamp" => true },
            "time" => epoch_ms(),
        };
        for id in self.members(ch) {
            if self.rank_of(id) >= min_rank {
                self.emit(id, "chatMsg", Some(&payload));
            }
        }
    }

    // -----------------------------------------------------------------
    // Ranks and user views
    // -----------------------------------------------------------------

    /// Effective rank: -1 anonymous; max(global, channel); 1.5 at least for the leader.
    pub fn rank_of(&self, id: u64) -> f64 {
        let Some(sock) = self.socks.get(&id) else {
            return -1.0;
        };
        if sock.name.is_none() {
            return -1.0;
        }
        let mut rank = sock.global_rank.max(sock.channel_rank);
        let leader = sock
            .channel
            .as_deref()
            .and_then(|c| self.channels.get(c))
            .is_some_and(|c| c.leader == Some(id));
        if leader {
            rank = rank.max(1.5);
        }
        rank
    }

    /// `{afk, muted}` plus, for moderators, `{smuted, aliases, ip}`.
    pub fn user_meta(&self, id: u64, mod_view: bool) -> J {
        let Some(sock) = self.socks.get(&id) else {
            return J::empty_obj();
        };
        let lower = sock.lower_name().unwrap_or_default();
        let ch = sock.channel.as_deref().and_then(|c| self.channels.get(c));
        let smuted = ch.is_some_and(|c| c.smuted.contains(&lower));
        let muted = smuted || ch.is_some_and(|c| c.muted.contains(&lower));
        let mut meta = obj! { "afk" => sock.afk, "muted" => muted };
        if mod_view {
            meta.set("smuted", smuted);
            let aliases = self.aliases.get(&sock.ip).cloned().unwrap_or_default();
            meta.set(
                "aliases",
                J::Arr(aliases.into_iter().map(J::from).collect()),
            );
            meta.set("ip", sock.masked_ip.as_str());
        }
        meta
    }

    /// The `User` object as `viewer` sees it.
    pub fn user_json(&self, id: u64, viewer: u64) -> J {
        let name = self
            .socks
            .get(&id)
            .and_then(|s| s.name.clone())
            .unwrap_or_default();
        obj! {
            "name" => name,
            "rank" => self.rank_of(id),
            "profile" => obj! { "image" => "", "text" => "" },
            "meta" => self.user_meta(id, self.rank_of(viewer) >= 2.0),
        }
    }

    /// `userlist` as `viewer` sees it (logged-in users only).
    pub fn userlist_json(&self, ch: &str, viewer: u64) -> J {
        J::Arr(
            self.members(ch)
                .into_iter()
                .filter(|u| self.socks.get(u).is_some_and(|s| s.name.is_some()))
                .map(|u| self.user_json(u, viewer))
                .collect(),
        )
    }

    /// Remembers that `name` was used from `ip` (moderators see aliases).
    pub fn add_alias(&mut self, ip: IpAddr, name: &str) {
        let list = self.aliases.entry(ip).or_default();
        if !list.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            list.push(name.to_owned());
        }
    }

    pub fn set_latest_name(&mut self, name: &str, id: u64) {
        if let Some(old) = self.latest_by_name.insert(name.to_lowercase(), id) {
            if old != id && !self.socks.contains_key(&old) {
                self.logs.remove(&old);
            }
        }
    }

    // -----------------------------------------------------------------
    // usercount (at most one per interval: leading edge + one trailing send)
    // -----------------------------------------------------------------

    pub fn usercount_changed(&mut self, ch: &str) {
        let interval = self.cfg.usercount_interval;
        let now = Instant::now();
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        match c.usercount.last_sent {
            Some(last) if now.duration_since(last) < interval => {
                if !c.usercount.trailing_scheduled {
                    c.usercount.trailing_scheduled = true;
                    let delay = interval - now.duration_since(last);
                    let name = ch.to_owned();
                    self.schedule(delay, move |w| w.usercount_send(&name, true));
                }
            }
            _ => self.usercount_send(ch, false),
        }
    }

    fn usercount_send(&mut self, ch: &str, trailing: bool) {
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        if trailing {
            c.usercount.trailing_scheduled = false;
        }
        c.usercount.last_sent = Some(Instant::now());
        let count = J::from(c.users.len());
        self.broadcast(ch, "usercount", Some(&count));
    }

    // -----------------------------------------------------------------
    // Timers
    // -----------------------------------------------------------------

    /// Runs `f` with the lock after `delay`, unless the world restarted or the
    /// simulator is gone by then.
    pub fn schedule(&self, delay: Duration, f: impl FnOnce(&mut World) + Send + 'static) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("simulator timer requested outside a tokio runtime; dropped");
            return;
        };
        let weak = self.shared.clone();
        let generation = self.generation;
        rt.spawn(async move {
            tokio::time::sleep(delay).await;
            let Some(shared) = weak.upgrade() else {
                return;
            };
            {
                let mut w = shared.world.lock();
                if w.generation != generation {
                    return;
                }
                f(&mut w);
            }
            shared.bump();
        });
    }

    /// Starts (or restarts) the 1 s playback tick of a channel; any older
    /// ticker of that channel exits at its next tick.
    pub fn start_ticker(&mut self, ch: &str) {
        let epoch = self.fresh_epoch();
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        c.playback_epoch = epoch;
        c.last_update = Instant::now();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("playback ticker requested outside a tokio runtime; playback frozen");
            return;
        };
        let scale = if self.cfg.time_scale > 0.0 {
            self.cfg.time_scale
        } else {
            1.0
        };
        let period = Duration::from_secs_f64((1.0 / scale).clamp(0.001, 1.0e6));
        let weak = self.shared.clone();
        let generation = self.generation;
        let name = ch.to_owned();
        rt.spawn(async move {
            let mut next = tokio::time::Instant::now() + period;
            loop {
                tokio::time::sleep_until(next).await;
                next += period;
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                {
                    let mut w = shared.world.lock();
                    if w.generation != generation {
                        return;
                    }
                    let Some(c) = w.channels.get_mut(&name) else {
                        return;
                    };
                    if c.playback_epoch != epoch {
                        return;
                    }
                    let now = Instant::now();
                    let dt = now.duration_since(c.last_update).as_secs_f64() * scale;
                    c.last_update = now;
                    w.tick(&name, dt);
                }
                shared.bump();
            }
        });
    }

    /// Stops a channel's ticker (its epoch no longer matches).
    pub fn stop_ticker(&mut self, ch: &str) {
        let epoch = self.fresh_epoch();
        if let Some(c) = self.channels.get_mut(ch) {
            c.playback_epoch = epoch;
        }
    }

    // -----------------------------------------------------------------
    // Inspection
    // -----------------------------------------------------------------

    pub fn snapshot(&self, name: &str) -> Option<ChannelSnapshot> {
        let c = self.channels.get(&name.to_lowercase())?;
        let mut users = Vec::new();
        let mut anonymous = 0;
        for id in &c.users {
            let Some(sock) = self.socks.get(id) else {
                continue;
            };
            match &sock.name {
                Some(n) => {
                    let lower = n.to_lowercase();
                    users.push(UserSnapshot {
                        name: n.clone(),
                        rank: self.rank_of(*id),
                        afk: sock.afk,
                        muted: c.muted.contains(&lower) || c.smuted.contains(&lower),
                        smuted: c.smuted.contains(&lower),
                    });
                }
                None => anonymous += 1,
            }
        }
        Some(ChannelSnapshot {
            name: c.name.clone(),
            registered: c.registered,
            users,
            anonymous,
            playlist: c
                .items
                .iter()
                .map(|i| ItemSnapshot {
                    uid: i.uid,
                    id: i.media.id.clone(),
                    media_type: i.media.media_type.clone(),
                    title: i.media.title.clone(),
                    seconds: i.media.seconds,
                    temp: i.temp,
                    queueby: i.queueby.clone(),
                })
                .collect(),
            current: c.current,
            position: c.time,
            paused: c.paused,
            leader: c
                .leader
                .and_then(|l| self.socks.get(&l))
                .and_then(|s| s.name.clone()),
            locked: c.locked,
            opts: c.opts.to_value(),
            permissions: c.perms_json().to_value(),
            motd: c.motd.clone(),
            backlog: c.backlog.iter().map(J::to_value).collect(),
            poll: c.poll.as_ref().map(|p| p.to_json(true).to_value()),
            drink_count: c.drink_count,
        })
    }

    pub fn frames_of_name(&self, name: &str) -> Vec<(String, Value)> {
        self.latest_by_name
            .get(&name.to_lowercase())
            .and_then(|id| self.logs.get(id))
            .cloned()
            .unwrap_or_default()
    }

    pub fn frames_of_sid(&self, sid: &str) -> Option<Vec<(String, Value)>> {
        let id = self
            .socks
            .iter()
            .find(|(_, s)| s.sid == sid)
            .map(|(id, _)| *id)?;
        self.logs.get(&id).cloned()
    }

    pub fn connection_count(&self) -> usize {
        self.socks.len()
    }

    // -----------------------------------------------------------------
    // Faults
    // -----------------------------------------------------------------

    /// Drops the TCP connection of every socket (in `channel`, if given).
    pub fn abort_sockets(&mut self, channel: Option<&str>) {
        let chan = channel.map(str::to_lowercase);
        for sock in self.socks.values() {
            if chan.is_none() || sock.channel.as_deref() == chan.as_deref() {
                let _ = sock.tx.send(Out::Abort);
            }
        }
    }

    /// Sends malformed frames to every socket in the channel.
    pub fn send_garbage(&mut self, channel: &str) {
        const GARBAGE: &[&str] = &[
            "42[\"chatMsg\",{\"username\":",
            "9garbage",
            "4",
            "42{\"not\":\"an array\"}",
            "42[]",
            "\u{0}\u{1}binary?",
        ];
        let chan = channel.to_lowercase();
        let ids: Vec<u64> = self
            .socks
            .iter()
            .filter(|(_, s)| s.channel.as_deref() == Some(chan.as_str()))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(sock) = self.socks.get(&id) {
                for g in GARBAGE {
                    let _ = sock.tx.send(Out::Text((*g).to_owned()));
                }
            }
            let log = self.logs.entry(id).or_default();
            for g in GARBAGE {
                log.push(("<garbage>".to_owned(), Value::String((*g).to_owned())));
            }
        }
    }

    /// Restart: every socket dropped, unregistered channels forgotten,
    /// registered ones emptied, budgets and guest limits reset.
    pub fn restart_reset(&mut self) {
        self.generation += 1;
        for sock in self.socks.values() {
            let _ = sock.tx.send(Out::Abort);
        }
        self.socks.clear();
        self.ip_sockets.clear();
        self.ip_buckets.clear();
        self.guest_logins.clear();
        self.channels.retain(|_, c| c.registered);
        let names: Vec<String> = self.channels.keys().cloned().collect();
        for name in &names {
            if let Some(c) = self.channels.get_mut(name) {
                c.users.clear();
                c.pending.clear();
                c.leader = None;
                c.skip_votes.clear();
                c.usercount = channel::UsercountThrottle::default();
                if let Some(p) = c.poll.as_mut() {
                    p.votes.clear();
                }
            }
        }
        self.create_registered_channels();
        for name in names {
            let playing = self
                .channels
                .get(&name)
                .is_some_and(|c| c.current.is_some());
            if playing {
                if let Some(c) = self.channels.get_mut(&name) {
                    c.paused = false;
                }
                self.start_ticker(&name);
            }
        }
    }
}

/// Milliseconds since the Unix epoch (chat `time`).
pub fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A 20-character Socket.IO-style id.
fn random_sid() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}
