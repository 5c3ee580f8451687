//! The Cytube connections of the host: one independent client per `[[rooms]]` table.
//!
//! * [`client`] — the task of one room: sessions one after another, reconnects with
//!   backoff inside the site's connect budget.
//! * [`discovery`] — `/socketconfig/<channel>.json` → the websocket URL (bounded).
//! * [`handshake`] — the websocket, the Engine.IO open packet, the Socket.IO connect.
//! * `session` — the join/login handshake, liveness, frames both ways.
//! * `status` — state transitions, queue length and failures reported.
//! * [`inbound`] — every server frame: parsed, applied to the room state, published on
//!   `cytube.in.<room>.<event>` with priority and `backlog` / `self` tags.
//! * [`governor`] — everything plugins publish on `cytube.out.<room>.<event>`: checked,
//!   split, queued fairly, paced by the server's flood limits, failures published as
//!   `cytube.out.<room>.failed`.
//! * [`room`] — room state and connection status, read by plugins
//!   (`Host::room_state`) and `GET /api/rooms[/<room>]`.
//! * [`backoff`] — reconnect backoff and the per-site connect budget.
//! * [`credentials`] — passwords from env variables or files, never printed.
//! * [`error`] — why a connection ended ([`RoomError`]) and what happens next.
//! * [`metrics`] — the `daz_cytube_*` families.
//!
//! Bus conventions:
//! * `cytube.in.<room>.<event>` — every server event, raw JSON payload (`null` when it
//!   has none), `room` set, `source = "cytube:<room>"`.
//! * `cytube.out.<room>.<event>` — client → server requests from plugins.
//! * `cytube.out.<room>.failed` — `{original: {event, subject, payload, source, id,
//!   correlation_id}, reason, code, part, parts}`: a request the room could not deliver
//!   (refused, expired, or answered by the server with `noflood`, `spamFiltered`,
//!   `errorMsg`, …). `original` is the request as the plugin published it and
//!   `original.source` the plugin that published it; the envelope's correlation id is the
//!   request's (or its id). It is *published* — every subscriber of a matching pattern
//!   gets it (the retry plugin subscribes to `cytube.out.*.failed` and so sees every
//!   plugin's failures) — and the originating plugin gets it too when none of its own
//!   patterns matches. Either way each subscriber, the originator included, receives
//!   exactly one copy. A plugin that subscribes to failure subjects and cares only about
//!   its own compares `original.source` with its name
//!   (`daz_plugin_api::routing::failure_origin`).
//! * `host.room.<room>.<state>` — connection lifecycle (`connecting`, `connected`,
//!   `joined`, `logged_in`, `disconnected`, `failed`, `stopped`).

pub mod backoff;
pub mod client;
pub mod credentials;
pub mod discovery;
pub mod error;
pub mod governor;
pub mod handshake;
pub mod inbound;
pub mod metrics;
pub mod room;
mod session;
mod status;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use daz_bus::{Bus, Mailbox, MailboxConfig};
use tokio_util::sync::CancellationToken;

use crate::config::RoomConfig;

pub use error::{LoginFailure, RoomError};
pub use room::{ConnState, RoomRegistry, RoomShared, RoomStatus, RoomSummary};

/// What every room's client shares.
pub(crate) struct Common {
    pub(crate) bus: Bus,
    pub(crate) metrics: Arc<metrics::CytubeMetrics>,
    pub(crate) http: reqwest::Client,
    pub(crate) budgets: backoff::Budgets,
}

/// The running rooms. Stop them with [`Rooms::stop`] (dropping only cancels them).
///
/// Each room is independent: [`Rooms::apply`] follows a new `[[rooms]]` list (a
/// configuration reload) by starting the rooms added, stopping the ones removed (a
/// clean close, held requests reported failed), restarting the ones whose table changed
/// and leaving the others alone — their connections are not touched.
pub struct Rooms {
    registry: Arc<RoomRegistry>,
    common: Common,
    stop: CancellationToken,
    /// Every configured room (enabled or not), by bus name.
    rooms: BTreeMap<String, RoomEntry>,
}

/// One configured room.
struct RoomEntry {
    cfg: RoomConfig,
    /// `None` for a disabled room.
    running: Option<Running>,
}

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// What [`Rooms::apply`] changed, by room name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomChanges {
    /// Rooms that were not configured before.
    pub added: Vec<String>,
    /// Rooms no longer configured: stopped and gone from the registry.
    pub removed: Vec<String>,
    /// Rooms whose table changed: stopped, then started with the new table.
    pub restarted: Vec<String>,
    /// Rooms left running as they were.
    pub unchanged: Vec<String>,
}

impl RoomChanges {
    /// Whether anything changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.restarted.is_empty()
    }
}

/// Why the rooms could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The HTTP client for discovery could not be built.
    #[error("cannot build the HTTP client for Cytube discovery: {0}")]
    Http(String),
    /// The room's bus subscriber could not be registered.
    #[error("room {room}: cannot register on the bus: {why}")]
    Bus {
        /// The room.
        room: String,
        /// Why.
        why: String,
    },
}

impl Rooms {
    /// Starts a client for every enabled room (each in its own task on the current
    /// runtime) and lists every configured room in `registry`.
    pub fn start(
        configs: &[RoomConfig],
        bus: &Bus,
        host_metrics: &crate::metrics::Metrics,
        registry: Arc<RoomRegistry>,
    ) -> Result<Rooms, StartError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("daz/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StartError::Http(e.to_string()))?;
        let mut rooms = Rooms {
            registry,
            common: Common {
                bus: bus.clone(),
                metrics: metrics::CytubeMetrics::new(host_metrics),
                http,
                budgets: backoff::Budgets::default(),
            },
            stop: CancellationToken::new(),
            rooms: BTreeMap::new(),
        };
        for cfg in configs {
            if let Err(e) = rooms.start_room(cfg) {
                rooms.stop.cancel();
                return Err(e);
            }
        }
        Ok(rooms)
    }

    /// Lists `cfg` in the registry and, if it is enabled, starts its client.
    fn start_room(&mut self, cfg: &RoomConfig) -> Result<(), StartError> {
        let name = cfg.room_name();
        let shared = RoomShared::with_limits(
            &name,
            &cfg.channel,
            &cfg.site,
            cfg.username.clone(),
            cfg.limits.into(),
        );
        self.registry.insert(shared.clone());
        if !cfg.enabled {
            shared.status.lock().state = ConnState::Stopped;
            tracing::info!(room = %name, "room disabled in plugins.toml; not connecting");
            self.rooms.insert(
                name,
                RoomEntry {
                    cfg: cfg.clone(),
                    running: None,
                },
            );
            return Ok(());
        }
        let bus = &self.common.bus;
        let capacity = cfg.outbound.capacity.max(1024);
        let mailbox = Mailbox::new(format!("cytube:{name}"), MailboxConfig::new(capacity));
        let sub_id = bus
            .register(&format!("cytube:{name}"), mailbox.clone())
            .map_err(|e| StartError::Bus {
                room: name.clone(),
                why: e.to_string(),
            })?;
        if let Err(e) = bus.subscribe(sub_id, &format!("cytube.out.{name}.>")) {
            bus.unregister(sub_id);
            return Err(StartError::Bus {
                room: name,
                why: e.to_string(),
            });
        }
        let stop = self.stop.child_token();
        let client = client::RoomClient::new(
            cfg.clone(),
            shared,
            &self.common,
            mailbox,
            sub_id,
            stop.clone(),
        );
        tracing::info!(room = %name, site = %cfg.site, channel = %cfg.channel, "starting room");
        let task = tokio::spawn(client.run());
        self.rooms.insert(
            name,
            RoomEntry {
                cfg: cfg.clone(),
                running: Some(Running { stop, task }),
            },
        );
        Ok(())
    }

    /// Stops one room's client (if it runs) and waits up to `timeout` for it: held
    /// requests are reported failed, the connection says goodbye to the server, the
    /// room's bus subscriber is gone once this returns.
    async fn stop_room(name: &str, entry: RoomEntry, timeout: Duration) {
        let Some(running) = entry.running else {
            return;
        };
        running.stop.cancel();
        if tokio::time::timeout(timeout, running.task).await.is_err() {
            tracing::warn!(room = %name, "room did not stop in time; abandoned");
        }
    }

    /// Follows a new `[[rooms]]` list: starts the rooms added, stops the ones removed
    /// (and drops them from the registry), restarts the ones whose table changed, leaves
    /// the others untouched. `timeout` bounds each stop. A room that cannot start is
    /// reported and the others still follow.
    pub async fn apply(&mut self, configs: &[RoomConfig], timeout: Duration) -> RoomChanges {
        let mut changes = RoomChanges::default();
        let wanted: BTreeMap<String, &RoomConfig> =
            configs.iter().map(|c| (c.room_name(), c)).collect();
        let gone: Vec<String> = self
            .rooms
            .keys()
            .filter(|n| !wanted.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(entry) = self.rooms.remove(&name) {
                Self::stop_room(&name, entry, timeout).await;
            }
            self.registry.remove(&name);
            tracing::info!(room = %name, "room removed from plugins.toml; stopped");
            changes.removed.push(name);
        }
        for (name, cfg) in wanted {
            match self.rooms.get(&name) {
                Some(e) if e.cfg == *cfg => {
                    changes.unchanged.push(name);
                    continue;
                }
                Some(_) => {
                    if let Some(entry) = self.rooms.remove(&name) {
                        Self::stop_room(&name, entry, timeout).await;
                    }
                    tracing::info!(room = %name, "room table changed in plugins.toml; restarting it");
                    changes.restarted.push(name.clone());
                }
                None => changes.added.push(name.clone()),
            }
            if let Err(e) = self.start_room(cfg) {
                tracing::error!(room = %name, error = %e, "room not started after the configuration change");
            }
        }
        changes
    }

    /// The registry (room state and status).
    pub fn registry(&self) -> &Arc<RoomRegistry> {
        &self.registry
    }

    /// Stops every room: held requests are reported failed, each connection says
    /// goodbye to the server. Waits up to `timeout` for the tasks.
    pub async fn stop(mut self, timeout: Duration) {
        self.stop.cancel();
        let deadline = tokio::time::Instant::now() + timeout;
        for (name, entry) in std::mem::take(&mut self.rooms) {
            let Some(running) = entry.running else {
                continue;
            };
            if tokio::time::timeout_at(deadline, running.task)
                .await
                .is_err()
            {
                tracing::warn!(room = %name, "room did not stop in time; abandoned");
            }
        }
    }
}

impl Drop for Rooms {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
