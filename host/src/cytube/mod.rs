//! The Cytube connections of the host: one independent client per `[[rooms]]` table.
//!
//! * [`client`] — discovery, the Engine.IO/Socket.IO session, the join/login handshake,
//!   liveness, reconnects with backoff inside the site's connect budget.
//! * [`inbound`] — every server frame: parsed, applied to the room state, published on
//!   `cytube.in.<room>.<event>` with priority and `backlog` / `self` tags.
//! * [`governor`] — everything plugins publish on `cytube.out.<room>.<event>`: checked,
//!   split, queued fairly, paced by the server's flood limits, failures reported as
//!   `cytube.out.<room>.failed` to the plugin that asked.
//! * [`room`] — room state and connection status, read by plugins
//!   (`Host::room_state`) and `GET /api/rooms[/<room>]`.
//! * [`backoff`] — reconnect backoff and the per-site connect budget.
//! * [`credentials`] — passwords from env variables or files, never printed.
//! * [`error`] — why a connection ended ([`RoomError`]) and what happens next.
//! * [`metrics`] — the `daz_cytube_*` families.
//! * [`demo`] — the offline demo (`daz demo`): the simulator, scripted users and the
//!   host with the example plugin.
//!
//! Bus conventions:
//! * `cytube.in.<room>.<event>` — every server event, raw JSON payload (`null` when it
//!   has none), `room` set, `source = "cytube:<room>"`.
//! * `cytube.out.<room>.<event>` — client → server requests from plugins.
//! * `cytube.out.<room>.failed` — `{original: {event, subject, payload, source, id,
//!   correlation_id}, reason, code, part, parts}`, sent to the requesting plugin.
//! * `host.room.<room>.<state>` — connection lifecycle (`connecting`, `connected`,
//!   `joined`, `logged_in`, `disconnected`, `failed`, `stopped`).

pub mod backoff;
pub mod client;
pub mod credentials;
pub mod demo;
pub mod error;
pub mod governor;
pub mod inbound;
pub mod metrics;
pub mod room;

use std::{sync::Arc, time::Duration};

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
pub struct Rooms {
    registry: Arc<RoomRegistry>,
    stop: CancellationToken,
    tasks: Vec<(String, tokio::task::JoinHandle<()>)>,
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
        let common = Common {
            bus: bus.clone(),
            metrics: metrics::CytubeMetrics::new(host_metrics),
            http,
            budgets: backoff::Budgets::default(),
        };
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for cfg in configs {
            let name = cfg.room_name();
            let shared = RoomShared::new(&name, &cfg.channel, &cfg.site, cfg.username.clone());
            registry.insert(shared.clone());
            if !cfg.enabled {
                shared.status.lock().state = ConnState::Stopped;
                tracing::info!(room = %name, "room disabled in plugins.toml; not connecting");
                continue;
            }
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
            let client = client::RoomClient::new(
                cfg.clone(),
                shared,
                &common,
                mailbox,
                sub_id,
                stop.child_token(),
            );
            tracing::info!(room = %name, site = %cfg.site, channel = %cfg.channel, "starting room");
            tasks.push((name, tokio::spawn(client.run())));
        }
        Ok(Rooms {
            registry,
            stop,
            tasks,
        })
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
        for (name, task) in self.tasks.drain(..) {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(room = %name, "room did not stop in time; abandoned");
                }
            }
        }
    }
}

impl Drop for Rooms {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
