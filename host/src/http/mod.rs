//! The host's HTTP server (loopback by default): metrics, health and the admin API.
//!
//! Open to anyone who can connect:
//! * `GET /metrics` — Prometheus text exposition.
//! * `GET /health/live` — 200 while the process runs.
//! * `GET /health/ready` — 200 once the startup load has finished and every enabled
//!   plugin is serving, 503 otherwise; the JSON body lists each plugin's state.
//! * `GET /health` — the same body as `/health/ready`, always 200 (for people).
//!
//! Everything else wants a `Host` naming this server, and the admin API (`/api/*`)
//! wants the admin token or the status page's session, same-origin requests and JSON
//! bodies ([`auth`]; the token is generated on first start unless one is configured or
//! `[http] open = true`):
//! * `GET /` with `?login=<code>` — the status page's one-time login ([`auth`]);
//!   `POST /api/login-url` mints a new login URL (`daz login-url`).
//! * `GET /api/rooms` — every Cytube room: state, the bot's name and rank, counts.
//! * `GET /api/rooms/<room>` — one room's whole state (users, playlist, media, options,
//!   permissions, MOTD, …) and connection status; 404 for an unknown room.
//! * plugins, `say`, dead letters — [`admin`]; recent events, the live stream and the
//!   event rate — [`events`].
//!
//! Errors are JSON `{"error": "…"}` with a 4xx/5xx status.

pub mod admin;
pub mod auth;
pub mod events;
pub mod limits;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use daz_bus::Bus;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{cytube::RoomRegistry, metrics::Metrics, plugins::PluginManager};

mod status;

/// What the handlers need.
#[derive(Clone)]
pub struct HttpState {
    /// Metrics to render.
    pub metrics: Arc<Metrics>,
    /// Plugins to report on.
    pub plugins: Arc<PluginManager>,
    /// Cytube rooms to report on.
    pub rooms: Arc<RoomRegistry>,
    /// The bus (`say`, requests to plugins).
    pub bus: Bus,
    /// Recent events and the event rate.
    pub events: Arc<events::RecentEvents>,
    /// Who may use the API: the token, sessions, accepted `Host` names.
    pub access: Arc<auth::Access>,
    /// Connections, time and streams the server may take ([`limits`]).
    pub limits: limits::Limits,
    /// The live event streams allowed at once.
    pub streams: limits::StreamSlots,
    /// Cancelled when the host stops (ends live streams).
    pub stop: CancellationToken,
    /// Process start (unix ms).
    pub started_ms: i64,
    /// Set once the startup load of every configured plugin has finished: the server
    /// listens before that (so `/health/live` answers during a long startup), and an
    /// empty plugin table must not read as "every plugin is serving".
    pub startup_done: Arc<std::sync::atomic::AtomicBool>,
}

/// A JSON error response.
pub fn error(code: StatusCode, message: String) -> Response {
    (code, Json(serde_json::json!({ "error": message }))).into_response()
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    uptime_ms: i64,
    plugins: Vec<PluginHealth>,
}

#[derive(Serialize)]
struct PluginHealth {
    name: String,
    enabled: bool,
    state: Option<crate::plugins::slot::SlotState>,
    version: Option<String>,
    stuck: bool,
    mailbox_depth: usize,
    panics: u64,
    last_error: Option<String>,
}

fn health(state: &HttpState) -> (bool, Health) {
    let plugins: Vec<PluginHealth> = state
        .plugins
        .status()
        .into_iter()
        .map(|s| PluginHealth {
            name: s.name,
            enabled: s.enabled,
            state: s.slot.as_ref().map(|st| st.state),
            version: s.slot.as_ref().and_then(|st| st.version.clone()),
            stuck: s.stuck,
            mailbox_depth: s.mailbox_depth,
            panics: s.panics,
            last_error: s.slot.and_then(|st| st.last_error),
        })
        .collect();
    let starting = !state
        .startup_done
        .load(std::sync::atomic::Ordering::Acquire);
    let ready = !starting
        && plugins
            .iter()
            .filter(|p| p.enabled)
            .all(|p| p.state == Some(crate::plugins::slot::SlotState::Serving));
    let degraded = plugins.iter().any(|p| p.stuck);
    (
        ready,
        Health {
            status: if starting {
                "starting"
            } else if !ready {
                "not_ready"
            } else if degraded {
                "degraded"
            } else {
                "ok"
            },
            uptime_ms: crate::now_ms() - state.started_ms,
            plugins,
        },
    )
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn live() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "live" }))
}

async fn ready(State(state): State<HttpState>) -> impl IntoResponse {
    let (ready, body) = health(&state);
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

async fn overview(State(state): State<HttpState>) -> impl IntoResponse {
    Json(health(&state).1)
}

async fn rooms(State(state): State<HttpState>) -> impl IntoResponse {
    Json(serde_json::json!({ "rooms": state.rooms.summaries() }))
}

async fn room(State(state): State<HttpState>, Path(name): Path<String>) -> impl IntoResponse {
    match state.rooms.get(&name) {
        Some(room) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            room.to_json(),
        ),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({
                "error": format!("no room named {name:?}; GET /api/rooms lists them")
            })
            .to_string(),
        ),
    }
}

async fn api_not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such API route; see the README's \"Admin API and CLI\"".to_owned(),
    )
}

/// Query of `GET /`.
#[derive(serde::Deserialize)]
struct IndexQuery {
    login: Option<String>,
}

/// `GET /`: the status page, or with `?login=<code>` the one-time login.
async fn index(
    State(state): State<HttpState>,
    axum::extract::Query(q): axum::extract::Query<IndexQuery>,
) -> Response {
    match q.login {
        Some(code) => auth::redeem_login(&state.access, &code),
        None => status::index(),
    }
}

/// `POST /api/login-url`: a new one-time login URL for the status page.
async fn login_url(State(state): State<HttpState>) -> Response {
    match state.access.login_url() {
        Some(url) => Json(serde_json::json!({ "url": url })).into_response(),
        None => error(
            StatusCode::CONFLICT,
            "the admin API is open ([http] open = true): the status page needs no login".to_owned(),
        ),
    }
}

/// The admin API (every route behind the access checks).
fn api(state: &HttpState) -> Router<HttpState> {
    Router::new()
        .route("/api/plugins", get(admin::plugins))
        .route("/api/plugins/{name}/{action}", post(admin::plugin_action))
        .route("/api/rooms", get(rooms))
        .route("/api/rooms/{room}", get(room))
        .route("/api/rooms/{room}/say", post(admin::say))
        .route("/api/events", get(events::list))
        .route(auth::QUERY_TOKEN_PATH, get(events::stream))
        .route("/api/stats", get(events::stats))
        .route("/api/login-url", post(login_url))
        .route("/api/retry/dead", get(admin::dead))
        .route("/api/retry/dead/{id}/replay", post(admin::replay))
        .route("/api/{*rest}", axum::routing::any(api_not_found))
        .route_layer(axum::middleware::from_fn_with_state(
            state.access.clone(),
            auth::guard_api,
        ))
}

/// The router.
pub fn router(state: HttpState) -> Router {
    // The page and the API answer only to this server's own names (DNS rebinding);
    // metrics and health stay reachable by whatever name a scraper uses.
    let guarded = Router::new()
        .route("/", get(index))
        .merge(status::routes())
        .merge(api(&state))
        .route_layer(axum::middleware::from_fn_with_state(
            state.access.clone(),
            auth::check_host,
        ));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(overview))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .merge(guarded)
        .layer(axum::extract::DefaultBodyLimit::max(limits::MAX_BODY_BYTES))
        .with_state(state)
}

/// Binds and serves until `stop` is cancelled. Returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    state: HttpState,
    stop: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {listen}: {e} (set [http] listen in plugins.toml)")
    })?;
    let addr = listener.local_addr()?;
    state.access.bind(addr);
    if state.access.is_open() {
        tracing::warn!(%addr, "[http] open = true: the admin API has no token and is open to every local user and to web pages that reach it; remove `open` to have a token generated");
    }
    let sampler = state.events.spawn_sampler(state.stop.clone());
    let limits = state.limits;
    let app = router(state);
    let table = limits::ConnTable::new(limits.max_connections);
    let task = tokio::spawn(async move {
        limits::serve(listener, app, limits, table, stop).await;
        let _ = sampler.await;
    });
    tracing::info!(%addr, "HTTP server listening (metrics, health, admin API)");
    Ok((addr, task))
}
