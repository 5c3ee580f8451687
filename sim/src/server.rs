//! The simulator process: the listener (HTTP + websocket upgrade), the shared
//! state, and [`SimHandle`], the test-facing control surface (inspection,
//! waiting, faults, restart).
//!
//! Shutdown order: stop accepting, drop every socket, stop timers (they hold
//! only a weak reference and the world generation, so they end on their own).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::actor::ActorBuilder;
use crate::config::SimConfig;
use crate::snapshot::ChannelSnapshot;
use crate::text;
use crate::world::World;

/// Errors a caller of [`SimHandle`] may branch on.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A wait ran out.
    #[error("timed out after {after:?} waiting for {what}; the simulator state never matched")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        after: Duration,
    },
    /// The listener could not be (re)bound.
    #[error("could not listen on {addr}: {source}; is another process using the port?")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// State shared by the listener, connections, timers and handles.
pub(crate) struct Shared {
    pub cfg: SimConfig,
    pub addr: SocketAddr,
    pub world: Mutex<World>,
    changed: watch::Sender<u64>,
    pub stalled: watch::Sender<bool>,
    /// Frames are not processed before this instant (a processing stall).
    pub hold_processing: Mutex<Option<tokio::time::Instant>>,
    server_task: Mutex<Option<JoinHandle<()>>>,
    next_actor_ip: AtomicU32,
}

impl Shared {
    /// Wakes everyone waiting in [`SimHandle::wait_for`].
    pub fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// Starts simulators.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Binds the listener and starts serving. Registered channels from the
    /// config exist at once; their initial playlists start playing.
    pub async fn start(cfg: SimConfig) -> anyhow::Result<SimHandle> {
        let listener = bind(cfg.bind).map_err(|source| SimError::Bind {
            addr: cfg.bind,
            source,
        })?;
        let addr = listener
            .local_addr()
            .context("reading the address the simulator listens on")?;
        let mut cfg = cfg;
        cfg.bind = addr;
        let (changed, _) = watch::channel(0u64);
        let (stalled, _) = watch::channel(false);
        let shared = Arc::new_cyclic(|weak| Shared {
            world: Mutex::new(World::new(cfg.clone(), weak.clone())),
            cfg,
            addr,
            changed,
            stalled,
            hold_processing: Mutex::new(None),
            server_task: Mutex::new(None),
            next_actor_ip: AtomicU32::new(1),
        });
        let task = spawn_server(shared.clone(), listener);
        *shared.server_task.lock() = Some(task);
        tracing::info!(%addr, "cytube simulator listening");
        Ok(SimHandle { shared })
    }
}

/// Binds with SO_REUSEADDR so a restart can take the same port back at once.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn spawn_server(shared: Arc<Shared>, listener: TcpListener) -> JoinHandle<()> {
    let app = Router::new()
        .route("/socketconfig/{file}", get(socketconfig))
        .route("/socket.io/", get(socket_io))
        .route("/socket.io", get(socket_io))
        .with_state(shared);
    // Like the real server (Node sockets), frames go out at once: with Nagle's
    // algorithm a second small frame waits for the peer's delayed ACK (~40 ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, service).await {
            tracing::error!(error = %e, "simulator listener failed; restart the simulator");
        }
    })
}

async fn socketconfig(State(shared): State<Arc<Shared>>, Path(file): Path<String>) -> Response {
    let name = file.strip_suffix(".json").unwrap_or(&file);
    if !file.ends_with(".json") || !text::valid_channel_name(name) {
        let body = json!({ "error": format!("Channel \"{name}\" does not exist.") });
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    }
    let body = json!({
        "servers": [{ "url": format!("http://{}", shared.addr), "secure": false }]
    });
    axum::Json(body).into_response()
}

#[derive(Debug, Deserialize)]
struct EioQuery {
    #[serde(rename = "EIO")]
    eio: Option<String>,
    transport: Option<String>,
}

async fn socket_io(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<EioQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if q.eio.as_deref() != Some("4") {
        let body = json!({ "code": 5, "message": "Unsupported protocol version" });
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    let Some(ws) = ws
        .ok()
        .filter(|_| q.transport.as_deref() == Some("websocket"))
    else {
        // Only the websocket transport is simulated (bots connect straight to it).
        let body = json!({ "code": 0, "message": "Transport unknown" });
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    };
    let mut ip = peer.ip();
    if shared.cfg.trust_forwarded_for && ip.is_loopback() {
        if let Some(fwd) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
        {
            ip = fwd;
        }
    }
    ws.max_message_size(daz_cytube_proto::frame::MAX_FRAME_BYTES)
        .max_frame_size(daz_cytube_proto::frame::MAX_FRAME_BYTES)
        .on_upgrade(move |socket| crate::conn::serve_socket(shared, socket, ip))
}

/// Control surface of a running simulator. Cheap to clone; the simulator
/// keeps running until [`SimHandle::shutdown`] (or the runtime ends).
#[derive(Clone)]
pub struct SimHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.shared.addr)
            .finish()
    }
}

impl SimHandle {
    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT` (what `socketconfig` hands out).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The websocket URL clients connect to.
    pub fn ws_url(&self) -> String {
        format!(
            "ws://{}/socket.io/?EIO=4&transport=websocket",
            self.shared.addr
        )
    }

    /// The configuration in force (with the bound address).
    pub fn config(&self) -> &SimConfig {
        &self.shared.cfg
    }

    /// A scripted in-process client. Each actor appears from its own fake IP
    /// (via `X-Forwarded-For`) unless [`ActorBuilder::ip`] says otherwise.
    pub async fn actor(&self, name: &str) -> ActorBuilder {
        let n = self.shared.next_actor_ip.fetch_add(1, Ordering::Relaxed);
        let ip = IpAddr::from([10, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
        ActorBuilder::new(self.ws_url(), name, ip)
    }

    /// A view of the channel, if it exists.
    pub fn channel(&self, name: &str) -> Option<ChannelSnapshot> {
        self.shared.world.lock().snapshot(name)
    }

    /// Names of existing channels.
    pub fn channels(&self) -> Vec<String> {
        let mut names: Vec<String> = self.shared.world.lock().channels.keys().cloned().collect();
        names.sort();
        names
    }

    /// Every event sent to the most recent socket that logged in as `user`,
    /// from its connect on: `(event, payload)`, payload `null` when absent.
    pub fn frames_sent_to(&self, user: &str) -> Vec<(String, Value)> {
        self.shared.world.lock().frames_of_name(user)
    }

    /// Same, by Socket.IO sid (works for anonymous sockets while connected).
    pub fn frames_sent_to_sid(&self, sid: &str) -> Option<Vec<(String, Value)>> {
        self.shared.world.lock().frames_of_sid(sid)
    }

    /// Open websocket connections.
    pub fn connection_count(&self) -> usize {
        self.shared.world.lock().connection_count()
    }

    /// Waits until `pred` holds, re-checking on every state change (never
    /// polling blindly). `pred` may call [`SimHandle::channel`] and
    /// [`SimHandle::frames_sent_to`].
    pub async fn wait_for<F>(&self, timeout: Duration, mut pred: F) -> Result<(), SimError>
    where
        F: FnMut(&SimHandle) -> bool,
    {
        let mut rx = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            if pred(self) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return if pred(self) {
                        Ok(())
                    } else {
                        Err(SimError::Timeout {
                            what: "a simulator condition".to_owned(),
                            after: timeout,
                        })
                    };
                }
            }
        }
    }

    /// Waits until `user` has been sent an `event` frame (the first one after
    /// `skip` earlier ones of that name) and returns its payload.
    pub async fn wait_for_frame(
        &self,
        user: &str,
        event: &str,
        skip: usize,
        timeout: Duration,
    ) -> Result<Value, SimError> {
        let mut found = None;
        let res = self
            .wait_for(timeout, |s| {
                found = s
                    .frames_sent_to(user)
                    .into_iter()
                    .filter(|(n, _)| n == event)
                    .nth(skip)
                    .map(|(_, v)| v);
                found.is_some()
            })
            .await;
        match (res, found) {
            (Ok(()), Some(v)) => Ok(v),
            _ => Err(SimError::Timeout {
                what: format!("frame {event} #{skip} to {user}"),
                after: timeout,
            }),
        }
    }

    /// Fault: closes sockets abruptly (TCP close, no Socket.IO disconnect),
    /// all of them or those in `channel`.
    pub fn drop_connections(&self, channel: Option<&str>) {
        self.shared.world.lock().abort_sockets(channel);
        self.shared.bump();
    }

    /// Fault: while on, nothing is sent (pings included) and nothing is read.
    pub fn stall(&self, on: bool) {
        self.shared.stalled.send_replace(on);
        self.shared.bump();
    }

    /// Fault: the server stops PROCESSING client frames for `for_` (as the real
    /// server does under load): frames are still read, then handled in order when
    /// the pause ends, all at once — the flood limiters see them together.
    pub fn pause_processing(&self, for_: Duration) {
        *self.shared.hold_processing.lock() = Some(tokio::time::Instant::now() + for_);
        self.shared.bump();
    }

    /// Fault: sends malformed frames to every socket in the channel.
    pub fn send_garbage(&self, channel: &str) {
        self.shared.world.lock().send_garbage(channel);
        self.shared.bump();
    }

    /// Advances media playback in every channel by `ms` of media time.
    pub fn advance_playback(&self, ms: u64) {
        let mut w = self.shared.world.lock();
        let names: Vec<String> = w.channels.keys().cloned().collect();
        for name in names {
            w.advance_playback(&name, ms);
        }
        drop(w);
        self.shared.bump();
    }

    /// Advances media playback in one channel.
    pub fn advance_playback_in(&self, channel: &str, ms: u64) {
        self.shared
            .world
            .lock()
            .advance_playback(&channel.to_lowercase(), ms);
        self.shared.bump();
    }

    /// Moves the clock of rate limits, guest-login limits, the connect budget
    /// and account ages forward (so tests need not wait out a cooldown).
    pub fn advance_clock(&self, by: Duration) {
        self.shared.world.lock().clock_offset += by;
        self.shared.bump();
    }

    /// Fault: stops listening, drops every socket, forgets unregistered
    /// channels, and listens again on the same port.
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.go_down().await;
        self.come_back()
    }

    /// Fault: the server goes away (an outage): stops listening (connects and
    /// `/socketconfig` requests are refused), drops every socket, forgets
    /// unregistered channels and the per-IP budgets, as a process restart does.
    /// [`SimHandle::come_back`] listens again.
    pub async fn go_down(&self) {
        let task = self.shared.server_task.lock().take();
        if let Some(task) = task {
            task.abort();
            // Wait until the listener is really dropped before binding again.
            let _ = task.await;
        }
        self.shared.world.lock().restart_reset();
        self.shared.bump();
        tracing::info!(addr = %self.shared.addr, "cytube simulator down");
    }

    /// Listens again on the same port after [`SimHandle::go_down`].
    pub fn come_back(&self) -> anyhow::Result<()> {
        let listener = bind(self.shared.addr).map_err(|source| SimError::Bind {
            addr: self.shared.addr,
            source,
        })?;
        let task = spawn_server(self.shared.clone(), listener);
        *self.shared.server_task.lock() = Some(task);
        self.shared.bump();
        tracing::info!(addr = %self.shared.addr, "cytube simulator listening again");
        Ok(())
    }

    /// Stops listening and drops every connection.
    pub async fn shutdown(self) {
        let task = self.shared.server_task.lock().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        {
            let mut w = self.shared.world.lock();
            w.abort_sockets(None);
            // A new generation makes every pending timer a no-op.
            w.generation += 1;
        }
        self.shared.bump();
    }
}
