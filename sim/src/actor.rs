//! Actors: scriptable in-process Cytube clients that speak the same
//! websocket protocol as a real client, so they exercise the server for real.
//!
//! An actor owns two tasks: a reader that parses every frame, answers pings
//! (unless told not to) and records events, and a writer fed through a
//! channel. Everything received is kept in order; [`Actor::expect`] walks a
//! cursor over it, [`Actor::received`] returns it all.
//! Dropping an [`Actor`] closes its connection abruptly.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use daz_cytube_proto::frame::{self, EioPacket, OpenInfo, SioPacket};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// What went wrong for an actor.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// The websocket could not be opened.
    #[error("actor {actor}: websocket connect to {url} failed: {why}")]
    Connect {
        /// Actor label.
        actor: String,
        /// URL tried.
        url: String,
        /// Why.
        why: String,
    },
    /// The server refused the Socket.IO connect (`connect_error`).
    #[error("actor {actor}: server refused the connect: {message}")]
    Refused {
        /// Actor label.
        actor: String,
        /// The server's message, e.g. "Rate limit exceeded".
        message: String,
    },
    /// Waiting ran out.
    #[error("actor {actor}: timed out after {after:?} waiting for {what}")]
    Timeout {
        /// Actor label.
        actor: String,
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
    },
    /// The connection is closed.
    #[error("actor {actor}: connection closed ({why})")]
    Closed {
        /// Actor label.
        actor: String,
        /// How it closed.
        why: String,
    },
    /// The server kicked the actor.
    #[error("actor {actor}: kicked: {reason}")]
    Kicked {
        /// Actor label.
        actor: String,
        /// The kick reason.
        reason: String,
    },
    /// `login` answered `success: false`.
    #[error("actor {actor}: login failed: {error}")]
    LoginFailed {
        /// Actor label.
        actor: String,
        /// The server's error text.
        error: String,
    },
    /// The channel wants a password (`needPassword`).
    #[error("actor {actor}: channel needs a password (wrong one given: {wrong})")]
    NeedPassword {
        /// Actor label.
        actor: String,
        /// The payload of `needPassword` (true when a wrong one was given).
        wrong: bool,
    },
}

/// How the connection ended, as the actor saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The server sent `41` (Socket.IO server disconnect) before closing.
    ServerDisconnect,
    /// A websocket close frame without `41`.
    CloseFrame,
    /// The TCP connection ended without any closing frame.
    Abrupt,
    /// We closed it.
    ByUs,
}

#[derive(Debug, Default)]
struct Inbox {
    frames: Vec<(String, Value)>,
    raw: Vec<String>,
    open: Option<OpenInfo>,
    sid: Option<String>,
    connect_error: Option<String>,
    pings: u64,
    saw_disconnect: bool,
    closed: Option<Closed>,
}

struct Shared {
    inbox: Mutex<Inbox>,
    changed: watch::Sender<u64>,
    /// Keep events and raw frames (see [`Actor::set_record`]).
    record: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

enum Cmd {
    Frames(Vec<String>),
    Close,
    Abort,
}

/// Configures an actor before it connects.
#[derive(Debug, Clone)]
pub struct ActorBuilder {
    url: String,
    name: String,
    ip: Option<IpAddr>,
    auto_pong: bool,
    timeout: Duration,
}

impl ActorBuilder {
    pub(crate) fn new(url: String, name: &str, ip: IpAddr) -> Self {
        ActorBuilder {
            url,
            name: name.to_owned(),
            ip: Some(ip),
            auto_pong: true,
            timeout: Duration::from_secs(5),
        }
    }

    /// An actor for any Engine.IO 4 websocket URL (e.g. a `daz-sim` running
    /// in another process): `ws://127.0.0.1:PORT/socket.io/?EIO=4&transport=websocket`.
    /// It connects from the real peer address unless [`ActorBuilder::ip`] is set.
    pub fn for_url(ws_url: impl Into<String>, name: &str) -> Self {
        ActorBuilder {
            url: ws_url.into(),
            name: name.to_owned(),
            ip: None,
            auto_pong: true,
            timeout: Duration::from_secs(5),
        }
    }

    /// Appear from this IP (sent as `X-Forwarded-For`).
    pub fn ip(mut self, ip: impl Into<IpAddr>) -> Self {
        self.ip = Some(ip.into());
        self
    }

    /// Appear from the real peer address (127.0.0.1), like an external bot.
    pub fn loopback(mut self) -> Self {
        self.ip = None;
        self
    }

    /// Answer server pings (default true). Off, the server will time us out.
    pub fn auto_pong(mut self, on: bool) -> Self {
        self.auto_pong = on;
        self
    }

    /// Default timeout of the waiting helpers (5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Opens the websocket and completes the Socket.IO connect (`40` → `40{sid}`).
    pub async fn connect(self) -> Result<Actor, ActorError> {
        let actor = self.open().await?;
        actor.send_raw(frame::SIO_CONNECT)?;
        let timeout = actor.timeout;
        actor
            .wait_until(timeout, "the Socket.IO connect ack", |inbox| {
                inbox.sid.is_some() || inbox.connect_error.is_some() || inbox.closed.is_some()
            })
            .await?;
        let inbox = actor.shared.inbox.lock();
        if let Some(message) = inbox.connect_error.clone() {
            return Err(ActorError::Refused {
                actor: actor.name.clone(),
                message,
            });
        }
        if inbox.sid.is_none() {
            return Err(ActorError::Closed {
                actor: actor.name.clone(),
                why: "closed before the connect ack".to_owned(),
            });
        }
        drop(inbox);
        Ok(actor)
    }

    /// Opens the websocket only (the Engine.IO open packet arrives; no `40`
    /// is sent). For tests of the handshake itself.
    pub async fn open(self) -> Result<Actor, ActorError> {
        let fail = |why: String| ActorError::Connect {
            actor: self.name.clone(),
            url: self.url.clone(),
            why,
        };
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| fail(e.to_string()))?;
        if let Some(ip) = self.ip {
            let value = ip
                .to_string()
                .parse()
                .map_err(|_| fail("bad IP header".to_owned()))?;
            request.headers_mut().insert("X-Forwarded-For", value);
        }
        let (ws, _resp) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let (mut sink, mut stream) = ws.split();
        let (changed, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox::default()),
            changed,
            record: std::sync::atomic::AtomicBool::new(true),
        });
        let (tx, mut rx) = mpsc::unbounded_channel::<Cmd>();
        // Tells the reader to drop its half too, so the TCP connection ends.
        let (abort_tx, mut abort_rx) = watch::channel(false);

        // Writer: feeds whole batches, then flushes once, so frames sent
        // together arrive together.
        let writer_shared = shared.clone();
        tokio::spawn(async move {
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    Cmd::Frames(frames) => {
                        let mut failed = false;
                        for f in frames {
                            if sink.feed(Message::Text(f.into())).await.is_err() {
                                failed = true;
                                break;
                            }
                        }
                        if failed || sink.flush().await.is_err() {
                            break;
                        }
                    }
                    Cmd::Close => {
                        let _ = sink.send(Message::Text(frame::SIO_DISCONNECT.into())).await;
                        let _ = sink.close().await;
                        let mut inbox = writer_shared.inbox.lock();
                        inbox.closed.get_or_insert(Closed::ByUs);
                        drop(inbox);
                        writer_shared.bump();
                        break;
                    }
                    Cmd::Abort => {
                        let _ = abort_tx.send(true);
                        let mut inbox = writer_shared.inbox.lock();
                        inbox.closed.get_or_insert(Closed::ByUs);
                        drop(inbox);
                        writer_shared.bump();
                        break;
                    }
                }
            }
            // Dropping the sink (with the stream gone too) ends the TCP connection.
        });

        let reader_shared = shared.clone();
        let pong_tx = tx.clone();
        let auto_pong = self.auto_pong;
        tokio::spawn(async move {
            let mut close_frame = false;
            loop {
                let msg = tokio::select! {
                    msg = stream.next() => msg,
                    _ = abort_rx.changed() => break,
                };
                let Some(msg) = msg else {
                    break;
                };
                let text = match msg {
                    Ok(Message::Text(t)) => t.to_string(),
                    Ok(Message::Close(_)) => {
                        close_frame = true;
                        break;
                    }
                    Ok(_) => continue,
                    Err(_) => break,
                };
                let record = reader_shared
                    .record
                    .load(std::sync::atomic::Ordering::Relaxed);
                let mut inbox = reader_shared.inbox.lock();
                if record {
                    inbox.raw.push(text.clone());
                }
                match frame::parse(&text) {
                    Ok(EioPacket::Open(info)) => inbox.open = Some(info),
                    Ok(EioPacket::Ping(data)) => {
                        inbox.pings += 1;
                        if auto_pong {
                            let _ = pong_tx.send(Cmd::Frames(vec![frame::encode_pong(data)]));
                        }
                    }
                    Ok(EioPacket::Message(SioPacket::Connect(payload))) => {
                        let sid = payload
                            .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                            .and_then(|v| v.get("sid").and_then(Value::as_str).map(str::to_owned));
                        inbox.sid = Some(sid.unwrap_or_default());
                    }
                    Ok(EioPacket::Message(SioPacket::ConnectError(payload))) => {
                        let message = payload
                            .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                            .and_then(|v| {
                                v.get("message").and_then(Value::as_str).map(str::to_owned)
                            });
                        inbox.connect_error = Some(message.unwrap_or_default());
                    }
                    Ok(EioPacket::Message(SioPacket::Disconnect)) => inbox.saw_disconnect = true,
                    Ok(EioPacket::Message(SioPacket::Event { name, payload, .. })) => {
                        let value = payload
                            .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                            .unwrap_or(Value::Null);
                        if record {
                            inbox.frames.push((name.into_owned(), value));
                        }
                    }
                    _ => {}
                }
                drop(inbox);
                reader_shared.bump();
            }
            let mut inbox = reader_shared.inbox.lock();
            let how = if inbox.saw_disconnect {
                Closed::ServerDisconnect
            } else if close_frame {
                Closed::CloseFrame
            } else {
                Closed::Abrupt
            };
            inbox.closed.get_or_insert(how);
            drop(inbox);
            reader_shared.bump();
        });

        let actor = Actor {
            name: self.name,
            ip: self.ip,
            tx,
            shared,
            cursor: 0,
            timeout: self.timeout,
        };
        actor
            .wait_until(actor.timeout, "the Engine.IO open packet", |inbox| {
                inbox.open.is_some() || inbox.closed.is_some()
            })
            .await?;
        Ok(actor)
    }
}

/// A connected client.
pub struct Actor {
    name: String,
    ip: Option<IpAddr>,
    tx: mpsc::UnboundedSender<Cmd>,
    shared: Arc<Shared>,
    cursor: usize,
    timeout: Duration,
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor")
            .field("name", &self.name)
            .field("ip", &self.ip)
            .finish()
    }
}

impl Drop for Actor {
    fn drop(&mut self) {
        let _ = self.tx.send(Cmd::Abort);
    }
}

impl Actor {
    /// Keep what arrives from now on (the default) or not. Off, events and raw
    /// frames are dropped as they arrive (pings, the connect ack and the close are
    /// still handled), so an actor that only talks for hours holds no growing
    /// inbox; `expect` and `received` see nothing new while it is off.
    pub fn set_record(&self, on: bool) {
        self.shared
            .record
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The label given at creation.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The IP this actor appears from (None = the real loopback peer).
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    /// The Socket.IO sid from the connect ack.
    pub fn sid(&self) -> Option<String> {
        self.shared.inbox.lock().sid.clone()
    }

    /// The Engine.IO open packet.
    pub fn open_info(&self) -> Option<OpenInfo> {
        self.shared.inbox.lock().open.clone()
    }

    /// Every raw text frame received, in order.
    pub fn raw_frames(&self) -> Vec<String> {
        self.shared.inbox.lock().raw.clone()
    }

    /// Server pings received so far.
    pub fn pings(&self) -> u64 {
        self.shared.inbox.lock().pings
    }

    /// How the connection closed, if it did.
    pub fn closed(&self) -> Option<Closed> {
        self.shared.inbox.lock().closed.clone()
    }

    /// Every event received: `(name, payload)`, payload `null` when absent.
    pub fn received(&self) -> Vec<(String, Value)> {
        self.shared.inbox.lock().frames.clone()
    }

    /// How many events have arrived so far (a mark for [`Actor::received_since`]).
    pub fn mark(&self) -> usize {
        self.shared.inbox.lock().frames.len()
    }

    /// Events received after `mark`.
    pub fn received_since(&self, mark: usize) -> Vec<(String, Value)> {
        self.shared
            .inbox
            .lock()
            .frames
            .get(mark..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    /// Payloads of every received event called `name`.
    pub fn received_named(&self, name: &str) -> Vec<Value> {
        self.shared
            .inbox
            .lock()
            .frames
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn send_raw(&self, text: &str) -> Result<(), ActorError> {
        self.send_batch_raw(vec![text.to_owned()])
    }

    fn send_batch_raw(&self, frames: Vec<String>) -> Result<(), ActorError> {
        self.tx
            .send(Cmd::Frames(frames))
            .map_err(|_| ActorError::Closed {
                actor: self.name.clone(),
                why: "writer stopped".to_owned(),
            })
    }

    /// Sends a raw text frame as is (for malformed-input tests).
    pub fn send_text(&self, text: impl Into<String>) -> Result<(), ActorError> {
        self.send_batch_raw(vec![text.into()])
    }

    /// Sends `42["name",payload]`.
    pub fn emit(&self, name: &str, payload: Option<Value>) -> Result<(), ActorError> {
        self.emit_batch(vec![(name.to_owned(), payload)])
    }

    /// Sends several events in one write (they arrive back to back).
    pub fn emit_batch(&self, events: Vec<(String, Option<Value>)>) -> Result<(), ActorError> {
        let frames = events
            .into_iter()
            .map(|(name, payload)| {
                let json = payload.map(|p| p.to_string());
                frame::encode_event_raw(&name, json.as_deref())
            })
            .collect();
        self.send_batch_raw(frames)
    }

    async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&Inbox) -> bool,
    ) -> Result<(), ActorError> {
        let mut rx = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            if pred(&self.shared.inbox.lock()) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    if pred(&self.shared.inbox.lock()) {
                        return Ok(());
                    }
                    return Err(ActorError::Timeout {
                        actor: self.name.clone(),
                        what: what.to_owned(),
                        after: timeout,
                    });
                }
            }
        }
    }

    /// Waits for the first event at or after index `from` whose name is in
    /// `names`; returns its index, name and payload.
    async fn wait_event(
        &self,
        from: usize,
        names: &[&str],
        timeout: Duration,
    ) -> Result<(usize, String, Value), ActorError> {
        let mut hit = None;
        let what = format!("one of {names:?}");
        let res = self
            .wait_until(timeout, &what, |inbox| {
                hit = inbox
                    .frames
                    .iter()
                    .enumerate()
                    .skip(from)
                    .find(|(_, (n, _))| names.contains(&n.as_str()))
                    .map(|(i, (n, v))| (i, n.clone(), v.clone()));
                hit.is_some() || inbox.closed.is_some()
            })
            .await;
        if let Some(hit) = hit {
            return Ok(hit);
        }
        res?;
        let why = format!("{:?}", self.closed());
        Err(ActorError::Closed {
            actor: self.name.clone(),
            why,
        })
    }

    /// Next event called `name` after the cursor; moves the cursor past it.
    pub async fn expect(&mut self, name: &str, timeout: Duration) -> Result<Value, ActorError> {
        let (idx, _, value) = self.wait_event(self.cursor, &[name], timeout).await?;
        self.cursor = idx + 1;
        Ok(value)
    }

    /// Next event called `name` after the cursor for which `pred` holds.
    pub async fn expect_where(
        &mut self,
        name: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Result<Value, ActorError> {
        let mut from = self.cursor;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (idx, _, value) = self.wait_event(from, &[name], left).await?;
            if pred(&value) {
                self.cursor = idx + 1;
                return Ok(value);
            }
            from = idx + 1;
        }
    }

    /// Waits until `pred` holds over everything received so far (re-checked on
    /// every new frame, never by polling).
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[(String, Value)]) -> bool,
    ) -> Result<(), ActorError> {
        self.wait_until(timeout, "a condition on received frames", |inbox| {
            pred(&inbox.frames)
        })
        .await
    }

    /// Waits until `pred` holds over every raw text frame received so far
    /// (Engine.IO packets included: open, pings, `40`, events).
    pub async fn wait_raw(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[String]) -> bool,
    ) -> Result<(), ActorError> {
        self.wait_until(timeout, "a condition on raw frames", |inbox| {
            pred(&inbox.raw)
        })
        .await
    }

    /// Waits until the connection is closed.
    pub async fn wait_closed(&self, timeout: Duration) -> Result<Closed, ActorError> {
        self.wait_until(timeout, "the connection to close", |inbox| {
            inbox.closed.is_some()
        })
        .await?;
        Ok(self.closed().unwrap_or(Closed::Abrupt))
    }

    /// `joinChannel {name}`; waits for the join burst (`userlist`), a password
    /// prompt, or a kick.
    pub async fn join(&mut self, channel: &str) -> Result<(), ActorError> {
        self.join_inner(json!({ "name": channel })).await
    }

    /// `joinChannel {name, pw}`.
    pub async fn join_with_password(&mut self, channel: &str, pw: &str) -> Result<(), ActorError> {
        self.join_inner(json!({ "name": channel, "pw": pw })).await
    }

    async fn join_inner(&mut self, payload: Value) -> Result<(), ActorError> {
        let mark = self.mark();
        self.emit("joinChannel", Some(payload))?;
        self.await_join(mark).await
    }

    async fn await_join(&mut self, mark: usize) -> Result<(), ActorError> {
        let (_, name, value) = self
            .wait_event(mark, &["userlist", "needPassword", "kick"], self.timeout)
            .await?;
        match name.as_str() {
            "userlist" => Ok(()),
            "needPassword" => Err(ActorError::NeedPassword {
                actor: self.name.clone(),
                wrong: value.as_bool().unwrap_or(false),
            }),
            _ => Err(ActorError::Kicked {
                actor: self.name.clone(),
                reason: value
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            }),
        }
    }

    /// Answers a password prompt; waits for the join burst or another prompt.
    pub async fn channel_password(&mut self, pw: &str) -> Result<(), ActorError> {
        let mark = self.mark();
        self.emit("channelPassword", Some(Value::String(pw.to_owned())))?;
        self.await_join(mark).await
    }

    /// `login {name}` (guest) or `login {name, pw}`; waits for the reply.
    pub async fn login(&mut self, name: &str, pw: Option<&str>) -> Result<(), ActorError> {
        let mark = self.mark();
        self.emit("login", Some(login_payload(name, pw)))?;
        self.await_login(mark).await
    }

    async fn await_login(&mut self, mark: usize) -> Result<(), ActorError> {
        let (_, _, value) = self.wait_event(mark, &["login"], self.timeout).await?;
        if value.get("success").and_then(Value::as_bool) == Some(true) {
            Ok(())
        } else {
            Err(ActorError::LoginFailed {
                actor: self.name.clone(),
                error: value
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            })
        }
    }

    /// Sends `joinChannel` and `login` in one write, as bots do, and waits for
    /// both the join burst and the login reply.
    pub async fn join_and_login(
        &mut self,
        channel: &str,
        name: &str,
        pw: Option<&str>,
    ) -> Result<(), ActorError> {
        let mark = self.mark();
        self.emit_batch(vec![
            ("joinChannel".to_owned(), Some(json!({ "name": channel }))),
            ("login".to_owned(), Some(login_payload(name, pw))),
        ])?;
        let login = self.await_login(mark).await;
        self.await_join(mark).await?;
        login
    }

    /// `chatMsg {msg, meta:{}}`.
    pub fn chat(&self, msg: &str) -> Result<(), ActorError> {
        self.emit("chatMsg", Some(json!({ "msg": msg, "meta": {} })))
    }

    /// `pm {to, msg, meta:{}}`.
    pub fn pm(&self, to: &str, msg: &str) -> Result<(), ActorError> {
        self.emit("pm", Some(json!({ "to": to, "msg": msg, "meta": {} })))
    }

    /// `queue {id, type, pos}`.
    pub fn queue(&self, id: &str, media_type: &str, pos: &str) -> Result<(), ActorError> {
        self.emit(
            "queue",
            Some(json!({ "id": id, "type": media_type, "pos": pos })),
        )
    }

    /// `queue` with extra fields (`temp`, `duration`, `title`).
    pub fn queue_with(&self, payload: Value) -> Result<(), ActorError> {
        self.emit("queue", Some(payload))
    }

    /// Client disconnect (`41`, then websocket close); waits until closed.
    pub async fn leave(&self) -> Result<(), ActorError> {
        self.tx.send(Cmd::Close).map_err(|_| ActorError::Closed {
            actor: self.name.clone(),
            why: "writer stopped".to_owned(),
        })?;
        self.wait_closed(self.timeout).await.map(|_| ())
    }
}

fn login_payload(name: &str, pw: Option<&str>) -> Value {
    match pw {
        Some(pw) => json!({ "name": name, "pw": pw }),
        None => json!({ "name": name }),
    }
}
