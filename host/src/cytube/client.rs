//! The connection of one room: discovery, the Engine.IO 4 / Socket.IO 4 session over
//! tokio-tungstenite (TLS by rustls), the join/login handshake, liveness, and reconnects.
//!
//! One task per room (`RoomClient::run`) owns everything of the room: the websocket,
//! the [`InboundPipeline`], the [`Governor`] and the bus mailbox the governor's
//! requests arrive in. It serves that mailbox in every phase (connecting, connected,
//! waiting to reconnect, failed), so requests are held, expired or refused at any time.
//!
//! The handshake follows what the server sends, never fixed sleeps:
//! `GET <site>/socketconfig/<channel>.json` (prefer a secure server) → websocket →
//! Engine.IO open packet (pingInterval, pingTimeout, maxPayload) → `40` → `40{sid}` →
//! `joinChannel` (+ `login {name, pw}` for an account) → `needPassword` answered with
//! `channelPassword` → the join burst (`userlist`) → (a guest's `login {name}`) → the
//! `login` reply. Only then do outbound frames flow. Each step has the room's
//! `connect_timeout_ms`.
//!
//! Liveness: the server pings every pingInterval; no ping for pingInterval +
//! pingTimeout means the connection is dead.
//!
//! Reconnects: capped exponential backoff with jitter ([`Backoff`]), and before every
//! connect a slot from the site's shared [`ConnectBudget`] (the server's per-IP budget).
//! Errors only an operator can fix stop the room (`failed`); a duplicate-login kick and a
//! ban follow the room's policy (`stop`, or a long, growing delay).
//!
//! Every state transition is logged, counted and published as `host.room.<room>.<state>`
//! with `{room, channel, site, state, previous, error?, kind?, retry_in_ms?}`.
//! Passwords are sent in exactly two frames (`login`, `channelPassword`) and never
//! logged.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use daz_bus::{Bus, Envelope, Mailbox, Priority, SubscriberId};
use daz_cytube_proto::{
    events::{ClientEvent, JoinChannel, Login},
    frame::{self, EioPacket, FrameError, OpenInfo, SioPacket},
};
use futures_util::{SinkExt, StreamExt, stream::SplitSink, stream::SplitStream};
use rand::Rng;
use serde::Deserialize;
use tokio::{net::TcpStream, time::sleep_until};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, Message, protocol::WebSocketConfig},
};
use tokio_util::sync::CancellationToken;

use crate::config::{KickPolicy, RoomConfig};

use super::{
    backoff::{Backoff, ConnectBudget},
    credentials::{self, Credentials, Identity},
    error::{Recovery, RoomError},
    governor::{FailCode, Failure, Governor, GovernorConfig, Link, Next, Standing},
    inbound::{Inbound, InboundPipeline, Signal},
    metrics::CytubeMetrics,
    room::{ConnState, ErrorInfo, RoomShared},
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Sink = SplitSink<Ws, Message>;
type Stream = SplitStream<Ws>;

/// Far enough in the future to mean "never" for a deadline.
const FAR: Duration = Duration::from_secs(86_400 * 365);

/// `requestPlaylist` at most this often (the server refuses more).
const PLAYLIST_REQUEST_EVERY: Duration = Duration::from_secs(61);

/// Where to connect: the websocket URL from discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `ws(s)://host:port/socket.io/?EIO=4&transport=websocket`.
    pub ws_url: String,
    /// Whether the server said it is secure.
    pub secure: bool,
}

#[derive(Deserialize)]
struct SocketConfig {
    #[serde(default)]
    servers: Vec<ServerEntry>,
}

#[derive(Deserialize)]
struct ServerEntry {
    url: String,
    #[serde(default)]
    secure: bool,
}

#[derive(Deserialize)]
struct DiscoveryError {
    #[serde(default)]
    error: String,
}

/// The websocket URL of a socket server URL (`https://h:p` → `wss://h:p/socket.io/…`).
pub fn websocket_url(server: &str) -> Result<String, String> {
    let mut url = url::Url::parse(server).map_err(|e| format!("bad server URL {server:?}: {e}"))?;
    let scheme = match url.scheme() {
        "https" | "wss" => "wss",
        "http" | "ws" => "ws",
        other => return Err(format!("server URL {server:?} has scheme {other:?}")),
    };
    url.set_scheme(scheme)
        .map_err(|()| format!("cannot use scheme {scheme} for {server:?}"))?;
    url.set_path("/socket.io/");
    url.set_query(Some("EIO=4&transport=websocket"));
    Ok(url.to_string())
}

/// Asks `<site>/socketconfig/<channel>.json` where the socket server is; prefers a
/// secure one.
pub async fn discover(
    http: &reqwest::Client,
    site: &str,
    channel: &str,
) -> Result<Endpoint, RoomError> {
    let url = format!("{}/socketconfig/{channel}.json", site.trim_end_matches('/'));
    let discovery = |why: String| RoomError::Discovery {
        url: url.clone(),
        why,
    };
    let resp = http
        .get(&url)
        .send()
        .await
        .map_err(|e| discovery(e.to_string()))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| discovery(e.to_string()))?;
    if status == reqwest::StatusCode::NOT_FOUND {
        let message = serde_json::from_slice::<DiscoveryError>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(200).collect());
        return Err(RoomError::UnknownChannel {
            site: site.to_owned(),
            channel: channel.to_owned(),
            message,
        });
    }
    if !status.is_success() {
        return Err(discovery(format!("HTTP {status}")));
    }
    let config: SocketConfig = serde_json::from_slice(&body)
        .map_err(|e| discovery(format!("the answer is not a socket config: {e}")))?;
    let best = config
        .servers
        .iter()
        .find(|s| s.secure)
        .or_else(|| config.servers.first())
        .ok_or_else(|| discovery("the socket config lists no servers".to_owned()))?;
    Ok(Endpoint {
        ws_url: websocket_url(&best.url).map_err(discovery)?,
        secure: best.secure,
    })
}

/// Opens the websocket and completes the Engine.IO and Socket.IO handshakes.
pub async fn open_session(
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<(Ws, OpenInfo), RoomError> {
    // A room reads a few small frames a second. tungstenite allocates the read buffer
    // up front (default 128 KiB) and zero-fills it before every read, including the one
    // that finds nothing: 2 KiB keeps a room's footprint and its per-frame cost small
    // (most frames are under 300 bytes); a large frame (a long playlist) is read in
    // several chunks.
    let config = WebSocketConfig::default()
        .read_buffer_size(2 * 1024)
        .max_message_size(Some(frame::MAX_FRAME_BYTES))
        .max_frame_size(Some(frame::MAX_FRAME_BYTES));
    // TCP_NODELAY (`true`): a chat answer is one small frame that must not wait for
    // the server's delayed ACK of the previous one.
    let nodelay = true;
    let connect = tokio_tungstenite::connect_async_with_config(
        endpoint.ws_url.as_str(),
        Some(config),
        nodelay,
    );
    let (mut ws, _resp) = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| RoomError::Timeout {
            stage: "the websocket to open",
            after: timeout,
        })?
        .map_err(|e| RoomError::Connect {
            url: endpoint.ws_url.clone(),
            why: e.to_string(),
        })?;
    let deadline = tokio::time::Instant::now() + timeout;
    let open = loop {
        let text = next_text(&mut ws, deadline, "the Engine.IO open packet").await?;
        match frame::parse(&text) {
            Ok(EioPacket::Open(info)) => break info,
            Ok(EioPacket::Ping(_) | EioPacket::Noop) => {}
            Ok(other) => {
                return Err(RoomError::Protocol {
                    why: format!("expected the Engine.IO open packet, got {}", other.encode()),
                });
            }
            Err(e) => {
                return Err(RoomError::Protocol {
                    why: format!("bad open packet: {e}"),
                });
            }
        }
    };
    ws.send(Message::Text(frame::SIO_CONNECT.into()))
        .await
        .map_err(|e| RoomError::Closed {
            how: format!("sending the Socket.IO connect failed: {e}"),
        })?;
    loop {
        let text = next_text(&mut ws, deadline, "the Socket.IO connect ack").await?;
        match frame::parse(&text) {
            Ok(EioPacket::Message(SioPacket::Connect(_))) => return Ok((ws, open)),
            Ok(EioPacket::Message(SioPacket::ConnectError(raw))) => {
                let message = raw
                    .and_then(|r| {
                        serde_json::from_str::<serde_json::Value>(r.get())
                            .ok()
                            .and_then(|v| {
                                v.get("message").and_then(|m| m.as_str()).map(str::to_owned)
                            })
                    })
                    .unwrap_or_default();
                return Err(if message.to_ascii_lowercase().contains("rate limit") {
                    RoomError::RateLimited
                } else {
                    RoomError::ConnectRefused { message }
                });
            }
            Ok(EioPacket::Ping(data)) => {
                let _ = ws
                    .send(Message::Text(frame::encode_pong(data).into()))
                    .await;
            }
            Ok(EioPacket::Close | EioPacket::Message(SioPacket::Disconnect)) => {
                return Err(RoomError::Closed {
                    how: "the server closed during the Socket.IO handshake".to_owned(),
                });
            }
            Ok(_) => {}
            Err(e) => {
                return Err(RoomError::Protocol {
                    why: format!("bad frame during the handshake: {e}"),
                });
            }
        }
    }
}

async fn next_text(
    ws: &mut Ws,
    deadline: tokio::time::Instant,
    stage: &'static str,
) -> Result<String, RoomError> {
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| RoomError::Timeout {
                stage,
                after: Duration::ZERO,
            })?;
        match msg {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(Message::Close(_))) | None => {
                return Err(RoomError::Closed {
                    how: format!("the server closed while we waited for {stage}"),
                });
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ws_error(e)),
        }
    }
}

fn ws_error(e: tungstenite::Error) -> RoomError {
    use tungstenite::error::ProtocolError;
    match e {
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            RoomError::Closed {
                how: "the connection was reset without a close frame".to_owned(),
            }
        }
        tungstenite::Error::Capacity(c) => RoomError::Protocol {
            why: format!(
                "oversized frame refused ({c}); the server's frames must stay within {} bytes",
                frame::MAX_FRAME_BYTES
            ),
        },
        tungstenite::Error::Protocol(p) => RoomError::Protocol {
            why: format!("websocket protocol error: {p}"),
        },
        other => RoomError::Closed {
            how: format!("transport error: {other}"),
        },
    }
}

/// How a session ended.
enum Ended {
    /// The room is stopping.
    Stopped,
    /// An error, and how long the session stayed joined.
    Error(RoomError, Option<Duration>),
}

/// The task of one room. Built by [`super::Rooms::start`].
pub(crate) struct RoomClient {
    pub(crate) cfg: RoomConfig,
    pub(crate) shared: Arc<RoomShared>,
    pub(crate) bus: Bus,
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) sub_id: SubscriberId,
    pub(crate) governor: Governor,
    pub(crate) inbound: InboundPipeline,
    pub(crate) budget: Arc<ConnectBudget>,
    pub(crate) metrics: Arc<CytubeMetrics>,
    pub(crate) http: reqwest::Client,
    pub(crate) stop: CancellationToken,
    pub(crate) backoff: Backoff,
    pub(crate) policy_repeats: u32,
    pub(crate) room: Arc<str>,
    pub(crate) source: Arc<str>,
    /// The outbound queue length last published (status and gauge).
    pub(crate) last_queued: Option<usize>,
}

impl RoomClient {
    /// Builds the client of one room (no I/O yet).
    pub(crate) fn new(
        cfg: RoomConfig,
        shared: Arc<RoomShared>,
        common: &super::Common,
        mailbox: Arc<Mailbox>,
        sub_id: SubscriberId,
        stop: CancellationToken,
    ) -> Self {
        let room = shared.name.clone();
        let r = &cfg.reconnect;
        let budget = common.budgets.for_site(
            &cfg.site,
            r.connect_burst,
            Duration::from_millis(r.connect_refill_ms),
        );
        RoomClient {
            governor: Governor::new(&room, GovernorConfig::from(&cfg.outbound)),
            inbound: InboundPipeline::new(common.bus.clone(), shared.clone(), &common.metrics),
            backoff: Backoff::new(
                Duration::from_millis(r.initial_delay_ms),
                Duration::from_millis(r.max_delay_ms),
                r.jitter,
            ),
            source: Arc::from(format!("cytube:{room}")),
            policy_repeats: 0,
            last_queued: None,
            bus: common.bus.clone(),
            metrics: common.metrics.clone(),
            http: common.http.clone(),
            cfg,
            shared,
            mailbox,
            sub_id,
            budget,
            stop,
            room,
        }
    }

    /// Runs until the room is stopped.
    pub(crate) async fn run(mut self) {
        let mut delay = Duration::ZERO;
        loop {
            if !delay.is_zero() {
                let at = Instant::now() + delay;
                if !self.idle_until(Some(at)).await {
                    break;
                }
            }
            let slot = self.budget.reserve(Instant::now());
            if slot > Instant::now() {
                tracing::info!(room = %self.room, wait_ms = (slot - Instant::now()).as_millis() as u64, "waiting for the site's connect budget");
                if !self.idle_until(Some(slot)).await {
                    break;
                }
            }
            match self.session().await {
                Ended::Stopped => break,
                Ended::Error(error, joined_for) => {
                    if joined_for.is_some_and(|d| {
                        d >= Duration::from_millis(self.cfg.reconnect.stable_after_ms)
                    }) {
                        self.backoff.reset();
                        self.policy_repeats = 0;
                    }
                    if matches!(error, RoomError::RateLimited) {
                        self.budget.exhausted(Instant::now());
                    }
                    match self.next_delay(&error) {
                        Some(d) => {
                            delay = d;
                            self.transition(ConnState::Disconnected, Some(&error), Some(d));
                            tracing::warn!(room = %self.room, kind = error.kind(), retry_in_ms = d.as_millis() as u64, error = %error, "room disconnected; reconnecting");
                        }
                        None => {
                            self.transition(ConnState::Failed, Some(&error), None);
                            tracing::error!(room = %self.room, kind = error.kind(), error = %error, "room stopped: an operator must fix this, then restart the host");
                            let reason = format!("room {} is stopped: {error}", self.room);
                            self.governor.fail_all(FailCode::Stopped, &reason);
                            self.report_failures();
                            self.serve_failed(&reason).await;
                            break;
                        }
                    }
                }
            }
        }
        self.governor.fail_all(
            FailCode::Stopped,
            "the room is stopping (host shutdown or configuration change)",
        );
        self.report_failures();
        self.transition(ConnState::Stopped, None, None);
        self.bus.unregister(self.sub_id);
        self.mailbox.close();
    }

    /// The delay before the next attempt, or `None` to stop.
    fn next_delay(&mut self, error: &RoomError) -> Option<Duration> {
        let random: f64 = rand::rng().random();
        let policy = |p: KickPolicy, this: &mut Self| match p {
            KickPolicy::Stop => None,
            KickPolicy::Retry => {
                let base = Duration::from_millis(this.cfg.reconnect.policy_retry_ms);
                let factor = 1u32 << this.policy_repeats.min(3);
                this.policy_repeats = this.policy_repeats.saturating_add(1);
                Some((base * factor).min(base * 10))
            }
        };
        match error.recovery() {
            Recovery::Retry => Some(self.backoff.next_delay(random)),
            Recovery::RetryAfter(min) => Some(self.backoff.next_delay(random).max(min)),
            Recovery::Permanent => None,
            Recovery::DuplicateLoginPolicy => policy(self.cfg.reconnect.on_duplicate_login, self),
            Recovery::BanPolicy => policy(self.cfg.reconnect.on_ban, self),
        }
    }

    /// Waits until `until` (or forever) while serving the mailbox with the link down.
    /// Returns false when the room is stopping.
    async fn idle_until(&mut self, until: Option<Instant>) -> bool {
        let until = until.map_or_else(
            || tokio::time::Instant::now() + FAR,
            tokio::time::Instant::from_std,
        );
        let mailbox = self.mailbox.clone();
        let stop = self.stop.clone();
        loop {
            let wake = self.pump_down();
            tokio::select! {
                _ = stop.cancelled() => return false,
                () = sleep_until(until) => return true,
                env = mailbox.recv() => match env {
                    Some(env) => self.governor.submit(env, Instant::now(), Link::Down),
                    None => return false,
                },
                () = sleep_until(wake) => {}
            }
        }
    }

    /// Expires held requests; returns when to check again.
    fn pump_down(&mut self) -> tokio::time::Instant {
        let next = self.governor.next(Instant::now(), Link::Down);
        self.report_failures();
        self.publish_queued();
        match next {
            Next::At(at) => tokio::time::Instant::from_std(at),
            _ => tokio::time::Instant::now() + FAR,
        }
    }

    /// After a permanent failure: refuse every request until the room is stopped.
    async fn serve_failed(&mut self, reason: &str) {
        let mailbox = self.mailbox.clone();
        let stop = self.stop.clone();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                env = mailbox.recv() => match env {
                    Some(env) => {
                        self.governor.submit(env, Instant::now(), Link::Down);
                        self.governor.fail_all(FailCode::Stopped, reason);
                        self.report_failures();
                    }
                    None => return,
                },
            }
        }
    }

    /// One connection, from discovery to its end.
    async fn session(&mut self) -> Ended {
        self.shared.status.lock().connects += 1;
        self.transition(ConnState::Connecting, None, None);
        let creds = match credentials::resolve(&self.cfg) {
            Ok(c) => c,
            Err(e) => return Ended::Error(e, None),
        };
        let timeout = Duration::from_millis(self.cfg.reconnect.connect_timeout_ms);
        let http = self.http.clone();
        let site = self.cfg.site.clone();
        let channel = self.cfg.channel.clone();
        let connect = async move {
            let endpoint = tokio::time::timeout(timeout, discover(&http, &site, &channel))
                .await
                .map_err(|_| RoomError::Timeout {
                    stage: "the socketconfig discovery",
                    after: timeout,
                })??;
            open_session(&endpoint, timeout).await
        };
        tokio::pin!(connect);
        let mailbox = self.mailbox.clone();
        let stop = self.stop.clone();
        let opened = loop {
            let wake = self.pump_down();
            tokio::select! {
                _ = stop.cancelled() => return Ended::Stopped,
                r = &mut connect => break r,
                env = mailbox.recv() => if let Some(env) = env {
                    self.governor.submit(env, Instant::now(), Link::Down);
                },
                () = sleep_until(wake) => {}
            }
        };
        let (ws, open) = match opened {
            Ok(x) => x,
            Err(e) => return Ended::Error(e, None),
        };
        let (sink, stream) = ws.split();
        let mut s = Session::new(sink, stream, open, creds, timeout);
        self.transition(ConnState::Connected, None, None);
        self.inbound.new_session(s.creds.identity.name());
        self.governor.new_session();
        self.update_standing();
        let result = self.serve(&mut s).await;
        let joined_for = s.joined_at.map(|t| t.elapsed());
        match result {
            Ok(()) => {
                s.close().await;
                Ended::Stopped
            }
            Err(e) => {
                // Best effort: tell the server we are going (it may be gone already).
                if !matches!(e, RoomError::Closed { .. } | RoomError::Dead { .. }) {
                    s.close().await;
                }
                Ended::Error(e, joined_for)
            }
        }
    }

    /// The connected part of a session. `Ok` means the room is stopping.
    async fn serve(&mut self, s: &mut Session) -> Result<(), RoomError> {
        let join = ClientEvent::JoinChannel(JoinChannel {
            name: self.cfg.channel.clone(),
            pw: None,
        });
        s.send_event(&join).await?;
        match &s.creds.identity {
            Identity::Anonymous => s.logged_in = true,
            // A guest logs in once it is in the channel: the server then refuses a name
            // a user there already has, instead of kicking that user as a duplicate
            // (which it does to a login made before the join).
            Identity::Guest(_) => {}
            Identity::Account(name, pw) => {
                // The password is in this one frame only; the frame is never logged.
                let login = ClientEvent::Login(Login {
                    name: name.clone(),
                    pw: Some(pw.expose().to_owned()),
                });
                s.send_event(&login).await?;
            }
        }
        let mailbox = self.mailbox.clone();
        let stop = self.stop.clone();
        let liveness = Duration::from_millis(
            s.open
                .ping_interval_ms
                .saturating_add(s.open.ping_timeout_ms),
        );
        // One timer for the three deadlines (liveness, handshake, governor), re-armed
        // only when the earliest of them moves: a room gets an event every few
        // milliseconds, and a timer per deadline per event is measurable at 100 rooms.
        let timer = tokio::time::sleep(FAR);
        tokio::pin!(timer);
        let mut armed = None;
        loop {
            let wake = self.pump_up(s).await?;
            let live_deadline = tokio::time::Instant::from_std(s.last_ping + liveness);
            let hs_deadline = if s.link != Link::Down {
                tokio::time::Instant::now() + FAR
            } else {
                tokio::time::Instant::from_std(s.handshake_deadline)
            };
            let next = wake.min(live_deadline).min(hs_deadline);
            if armed != Some(next) {
                timer.as_mut().reset(next);
                armed = Some(next);
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                msg = s.stream.next() => match msg {
                    Some(Ok(Message::Text(text))) => self.on_text(s, text.as_str()).await?,
                    Some(Ok(Message::Close(frame))) => {
                        return Err(RoomError::Closed {
                            how: match frame {
                                Some(f) => format!("close frame {} {}", f.code, f.reason),
                                None => "close frame".to_owned(),
                            },
                        });
                    }
                    Some(Ok(Message::Binary(_))) => {
                        self.metrics.bad_frames.with_label_values(&[&self.room]).inc();
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(ws_error(e)),
                    None => {
                        return Err(RoomError::Closed {
                            how: "the connection ended without a close frame".to_owned(),
                        });
                    }
                },
                env = mailbox.recv() => if let Some(env) = env {
                    self.governor.submit(env, Instant::now(), s.link);
                },
                () = &mut timer => {
                    armed = None;
                    let now = tokio::time::Instant::now();
                    if now >= live_deadline {
                        return Err(RoomError::Dead { silent: s.last_ping.elapsed() });
                    }
                    if now >= hs_deadline {
                        let stage = if !s.joined { "the join burst (userlist)" } else { "the login reply" };
                        return Err(RoomError::Timeout { stage, after: s.timeout });
                    }
                }
            }
        }
    }

    /// Sends what the governor releases; returns when to check again.
    async fn pump_up(&mut self, s: &mut Session) -> Result<tokio::time::Instant, RoomError> {
        let wake = loop {
            match self.governor.next(Instant::now(), s.link) {
                Next::Send(out) => {
                    s.send_text(out.frame).await?;
                    self.governor.sent(Instant::now());
                    let plugin = &*out.plugin;
                    self.metrics
                        .sent
                        .with_label_values(&[&self.room, plugin])
                        .inc();
                    if out.delayed {
                        self.metrics
                            .delayed
                            .with_label_values(&[&self.room, plugin])
                            .inc();
                    }
                    self.metrics
                        .delay
                        .with_label_values(&[&self.room])
                        .observe(out.waited.as_secs_f64());
                }
                Next::At(at) => break tokio::time::Instant::from_std(at),
                Next::Idle => break tokio::time::Instant::now() + FAR,
            }
        };
        self.report_failures();
        self.publish_queued();
        Ok(wake)
    }

    async fn on_text(&mut self, s: &mut Session, text: &str) -> Result<(), RoomError> {
        let handled = match self.inbound.handle_frame(text) {
            Ok(h) => h,
            Err(e @ FrameError::TooLarge { .. }) => {
                return Err(RoomError::Protocol { why: e.to_string() });
            }
            Err(e) => {
                s.bad_frames += 1;
                // The first few are worth a line each; after that, the counter tells.
                if s.bad_frames <= 5 {
                    tracing::warn!(room = %self.room, error = %e, bytes = text.len(), "unparsable frame from the server ignored");
                }
                return Ok(());
            }
        };
        match handled {
            Inbound::Ping(data) => {
                s.last_ping = Instant::now();
                s.send_text(frame::encode_pong(data.as_deref())).await?;
            }
            Inbound::Event(Some(signal)) => self.on_signal(s, signal).await?,
            Inbound::Event(None) | Inbound::Other | Inbound::Open(_) | Inbound::ConnectAck => {}
            Inbound::Disconnect => {
                return Err(RoomError::Closed {
                    how: "the server disconnected the socket (Socket.IO disconnect)".to_owned(),
                });
            }
            Inbound::Close => {
                return Err(RoomError::Closed {
                    how: "the server closed the Engine.IO session".to_owned(),
                });
            }
            Inbound::ConnectError(message) => {
                return Err(RoomError::ConnectRefused { message });
            }
        }
        Ok(())
    }

    async fn on_signal(&mut self, s: &mut Session, signal: Signal) -> Result<(), RoomError> {
        let now = Instant::now();
        match &signal {
            Signal::Login(reply) => {
                if reply.success {
                    s.logged_in = true;
                } else {
                    let message = reply.error.clone().unwrap_or_default();
                    return Err(RoomError::LoginFailed {
                        name: s.creds.identity.name().unwrap_or_default().to_owned(),
                        kind: super::error::LoginFailure::classify(&message),
                        message,
                    });
                }
            }
            Signal::Joined => {
                s.joined = true;
                s.joined_at = Some(now);
                self.shared.status.lock().sessions += 1;
                if let Identity::Guest(name) = &s.creds.identity {
                    let login = ClientEvent::Login(Login {
                        name: name.clone(),
                        pw: None,
                    });
                    s.send_event(&login).await?;
                    s.handshake_deadline = now + s.timeout;
                }
            }
            Signal::NeedPassword(wrong) => {
                if *wrong {
                    return Err(RoomError::WrongChannelPassword {
                        channel: self.cfg.channel.clone(),
                    });
                }
                match &s.creds.channel_password {
                    Some(pw) if !s.sent_channel_password => {
                        s.sent_channel_password = true;
                        let ev = ClientEvent::ChannelPassword(pw.expose().to_owned());
                        s.send_event(&ev).await?;
                        s.handshake_deadline = now + s.timeout;
                    }
                    Some(_) => {
                        return Err(RoomError::WrongChannelPassword {
                            channel: self.cfg.channel.clone(),
                        });
                    }
                    None => {
                        return Err(RoomError::ChannelPasswordRequired {
                            channel: self.cfg.channel.clone(),
                        });
                    }
                }
            }
            Signal::Kick(reason) => {
                return Err(RoomError::from_kick(
                    reason,
                    s.creds.identity.name(),
                    &self.cfg.channel,
                ));
            }
            Signal::ErrorMsg(msg) => {
                tracing::info!(room = %self.room, message = %msg, "the server sent an error message");
                self.governor.on_signal(&signal, now);
            }
            Signal::Rank(_) | Signal::ChannelOpts(_) | Signal::Permissions(_) => {
                self.update_standing();
            }
            Signal::Desync(d) => {
                let due = s
                    .last_playlist_request
                    .is_none_or(|t| t.elapsed() >= PLAYLIST_REQUEST_EVERY);
                if due && s.joined {
                    s.last_playlist_request = Some(now);
                    tracing::info!(room = %self.room, desync = %d, "asking the server for the whole playlist");
                    s.send_event(&ClientEvent::RequestPlaylist).await?;
                }
            }
            _ => self.governor.on_signal(&signal, now),
        }
        if s.link == Link::Down && s.joined && s.logged_in {
            let anonymous = matches!(s.creds.identity, Identity::Anonymous);
            s.link = if anonymous {
                Link::Anonymous
            } else {
                Link::Ready
            };
            let state = if anonymous {
                ConnState::Joined
            } else {
                ConnState::LoggedIn
            };
            if anonymous {
                self.transition(state, None, None);
            } else {
                self.transition(ConnState::Joined, None, None);
                self.transition(state, None, None);
            }
            self.backoff_note_ready();
        }
        Ok(())
    }

    fn backoff_note_ready(&mut self) {
        tracing::info!(room = %self.room, channel = %self.cfg.channel, held = self.governor.queued(), "in the channel; outbound messages flow");
    }

    /// Copies rank, options and permissions from the room state into the governor.
    fn update_standing(&mut self) {
        let st = self.shared.state.read();
        let standing = Standing {
            rank: st.me.rank,
            opts: st.options.clone(),
            perms: st.permissions.clone(),
        };
        drop(st);
        self.governor.set_standing(standing);
    }

    fn publish_queued(&mut self) {
        let n = self.governor.queued();
        if self.last_queued == Some(n) {
            return;
        }
        self.last_queued = Some(n);
        self.shared.status.lock().outbound_queued = n;
        self.metrics
            .queued
            .with_label_values(&[&self.room])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Publishes every failure as `cytube.out.<room>.failed` (see the module docs of
    /// [`super`] for who receives it).
    fn report_failures(&mut self) {
        for f in self.governor.take_failures() {
            self.report_failure(&f);
        }
    }

    fn report_failure(&self, f: &Failure) {
        self.metrics
            .failed
            .with_label_values(&[&self.room, f.plugin(), f.code.as_str()])
            .inc();
        tracing::info!(room = %self.room, plugin = f.plugin(), event = %f.event, code = f.code.as_str(), reason = %f.reason, "outbound request failed; reported");
        let subject = format!("cytube.out.{}.failed", self.room);
        let payload = match serde_json::to_vec(&f.to_json()) {
            Ok(p) => p,
            Err(_) => return,
        };
        let mut b = Envelope::builder(subject, payload)
            .room(self.room.clone())
            .source(self.source.clone())
            .priority(Priority::High);
        let correlation = f
            .original
            .correlation_id
            .clone()
            .unwrap_or_else(|| Arc::from(f.original.id.to_string()));
        b = b.correlation_id(correlation);
        let Ok(env) = b.build() else { return };
        // On the subject for every watcher (the retry plugin), and to the plugin that
        // asked even when it does not subscribe to failures: one copy each.
        if let Err(e) = self.bus.publish_also_to(env, f.plugin()) {
            tracing::warn!(room = %self.room, plugin = f.plugin(), error = %e, "could not deliver a failure report");
        }
    }

    /// Records and announces a state transition.
    fn transition(&self, state: ConnState, error: Option<&RoomError>, retry_in: Option<Duration>) {
        let previous = {
            let mut st = self.shared.status.lock();
            let previous = st.state;
            st.state = state;
            st.since_ms = crate::now_ms();
            // Set with the state, so a reader never sees `disconnected` without it.
            st.retry_at_ms = retry_in.map(|d| {
                st.since_ms
                    .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            });
            if let Some(e) = error {
                st.last_error = Some(ErrorInfo {
                    kind: e.kind().to_owned(),
                    message: e.to_string(),
                    at_ms: st.since_ms,
                });
            }
            previous
        };
        self.metrics
            .state
            .with_label_values(&[&self.room])
            .set(state.code());
        self.metrics
            .transitions
            .with_label_values(&[&self.room, state.as_str()])
            .inc();
        if let Some(e) = error {
            self.metrics
                .errors
                .with_label_values(&[&self.room, e.kind()])
                .inc();
        }
        if !matches!(state, ConnState::Disconnected | ConnState::Failed) {
            tracing::info!(room = %self.room, state = state.as_str(), "room state");
        }
        let payload = serde_json::json!({
            "room": &*self.room,
            "channel": self.cfg.channel,
            "site": self.cfg.site,
            "state": state,
            "previous": previous,
            "error": error.map(ToString::to_string),
            "kind": error.map(RoomError::kind),
            "retry_in_ms": retry_in.map(|d| d.as_millis() as u64),
        });
        let subject = format!("host.room.{}.{}", self.room, state.as_str());
        let env = serde_json::to_vec(&payload).ok().and_then(|p| {
            Envelope::builder(subject, p)
                .room(self.room.clone())
                .source(self.source.clone())
                .priority(Priority::High)
                .build()
                .ok()
        });
        if let Some(env) = env {
            let _ = self.bus.publish(env);
        }
    }
}

/// The connected half of one session.
struct Session {
    sink: Sink,
    stream: Stream,
    open: OpenInfo,
    creds: Credentials,
    timeout: Duration,
    last_ping: Instant,
    handshake_deadline: Instant,
    joined: bool,
    joined_at: Option<Instant>,
    logged_in: bool,
    link: Link,
    sent_channel_password: bool,
    last_playlist_request: Option<Instant>,
    bad_frames: u64,
}

impl Session {
    fn new(
        sink: Sink,
        stream: Stream,
        open: OpenInfo,
        creds: Credentials,
        timeout: Duration,
    ) -> Self {
        let now = Instant::now();
        Session {
            sink,
            stream,
            open,
            creds,
            timeout,
            last_ping: now,
            handshake_deadline: now + timeout,
            joined: false,
            joined_at: None,
            logged_in: false,
            link: Link::Down,
            sent_channel_password: false,
            last_playlist_request: None,
            bad_frames: 0,
        }
    }

    async fn send_text(&mut self, text: String) -> Result<(), RoomError> {
        self.sink
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| RoomError::Closed {
                how: format!("sending failed: {e}"),
            })
    }

    async fn send_event(&mut self, ev: &ClientEvent) -> Result<(), RoomError> {
        let text = ev.to_frame().map_err(|e| RoomError::Protocol {
            why: format!("cannot encode {}: {e}", ev.name()),
        })?;
        self.send_text(text).await
    }

    /// Socket.IO disconnect, then a websocket close; errors are irrelevant here.
    async fn close(&mut self) {
        let _ = self
            .sink
            .send(Message::Text(frame::SIO_DISCONNECT.into()))
            .await;
        let _ = self.sink.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls_follow_the_scheme() {
        assert_eq!(
            websocket_url("https://sync.example:8443").unwrap(),
            "wss://sync.example:8443/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            websocket_url("http://127.0.0.1:1337/").unwrap(),
            "ws://127.0.0.1:1337/socket.io/?EIO=4&transport=websocket"
        );
        assert!(websocket_url("ftp://x").is_err());
    }
}
