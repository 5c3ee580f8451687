//! The session loop of one connected room: the join/login handshake driven by what the
//! server sends (`joinChannel` (+ `login {name, pw}` for an account) → `needPassword`
//! answered with `channelPassword` → the join burst (`userlist`) → (a guest's
//! `login {name}`) → the `login` reply), liveness (no ping for pingInterval +
//! pingTimeout means dead), inbound frames into the
//! [`InboundPipeline`](super::inbound::InboundPipeline) and the
//! governor's releases onto the socket.
//!
//! Passwords are sent in exactly two frames (`login`, `channelPassword`) and never
//! logged.

use std::time::{Duration, Instant};

use daz_cytube_proto::{
    events::{ClientEvent, JoinChannel, Login},
    frame::{self, FrameError, OpenInfo},
};
use futures_util::{SinkExt, StreamExt, stream::SplitSink, stream::SplitStream};
use tokio_tungstenite::tungstenite::Message;

use super::{
    client::{FAR, RoomClient},
    credentials::{Credentials, Identity},
    error::RoomError,
    governor::{Link, Next, Standing},
    handshake::{Ws, ws_error},
    inbound::{Inbound, Signal},
    room::ConnState,
};

type Sink = SplitSink<Ws, Message>;
type Stream = SplitStream<Ws>;

/// Bounds of the server's `pingInterval` and `pingTimeout` as the client uses them.
/// The real server announces 25 s and 120 s; an absurd value (`u64::MAX`) would switch
/// dead-connection detection off, a tiny one would drop healthy connections.
const PING_BOUNDS: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(300));

/// How long the connection may stay silent (no ping) before it counts as dead:
/// pingInterval + pingTimeout, each clamped to [`PING_BOUNDS`], so at most 10 minutes.
pub(super) fn liveness_window(open: &OpenInfo) -> Duration {
    let clamp = |ms: u64| Duration::from_millis(ms).clamp(PING_BOUNDS.0, PING_BOUNDS.1);
    clamp(open.ping_interval_ms) + clamp(open.ping_timeout_ms)
}

/// `requestPlaylist` at most this often (the server refuses more).
const PLAYLIST_REQUEST_EVERY: Duration = Duration::from_secs(61);

impl RoomClient {
    /// The connected part of a session. `Ok` means the room is stopping.
    pub(super) async fn serve(&mut self, s: &mut Session) -> Result<(), RoomError> {
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
        let liveness = liveness_window(&s.open);
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
                    tracing::warn!(room = %self.room, error = ?e.to_string(), bytes = text.len(), "unparsable frame from the server ignored");
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
        if matches!(signal, Signal::Joined | Signal::Login(_)) {
            self.sync_muted();
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

    /// Copies the bot's mute from its entry in the user list (a rejoin while muted
    /// lists it muted) into the governor.
    fn sync_muted(&mut self) {
        let st = self.shared.state.read();
        let Some(me) = st.me.name.as_deref() else {
            return;
        };
        let muted = st
            .users
            .iter()
            .find(|u| u.name.eq_ignore_ascii_case(me))
            .is_some_and(|u| u.meta.muted);
        drop(st);
        self.governor.set_muted(muted);
    }

    /// Copies rank, options and permissions from the room state into the governor.
    pub(super) fn update_standing(&mut self) {
        let st = self.shared.state.read();
        let standing = Standing {
            rank: st.me.rank,
            opts: st.options.clone(),
            perms: st.permissions.clone(),
        };
        drop(st);
        self.governor.set_standing(standing);
    }
}

/// The connected half of one session.
pub(super) struct Session {
    sink: Sink,
    stream: Stream,
    open: OpenInfo,
    pub(super) creds: Credentials,
    timeout: Duration,
    last_ping: Instant,
    handshake_deadline: Instant,
    joined: bool,
    pub(super) joined_at: Option<Instant>,
    logged_in: bool,
    link: Link,
    sent_channel_password: bool,
    last_playlist_request: Option<Instant>,
    bad_frames: u64,
}

impl Session {
    pub(super) fn new(
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
    pub(super) async fn close(&mut self) {
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

    fn open(interval: u64, timeout: u64) -> OpenInfo {
        OpenInfo {
            sid: "x".to_owned(),
            upgrades: Vec::new(),
            ping_interval_ms: interval,
            ping_timeout_ms: timeout,
            max_payload: 1 << 20,
        }
    }

    #[test]
    fn absurd_ping_timing_keeps_liveness_on() {
        // The real server's values pass through.
        assert_eq!(
            liveness_window(&open(25_000, 120_000)),
            Duration::from_secs(145)
        );
        // u64::MAX would mean "never dead": clamped to 5 + 5 minutes.
        assert_eq!(
            liveness_window(&open(u64::MAX, u64::MAX)),
            Duration::from_secs(600)
        );
        // Zero would mean "dead at once": raised to the floor.
        assert_eq!(liveness_window(&open(0, 0)), Duration::from_millis(200));
    }
}
