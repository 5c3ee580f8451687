//! The host's HTTP server (loopback by default): metrics and health.
//!
//! * `GET /metrics` — Prometheus text exposition.
//! * `GET /health/live` — 200 while the process runs.
//! * `GET /health/ready` — 200 when every enabled plugin is serving, 503 otherwise; the
//!   JSON body lists each plugin's state.
//! * `GET /health` — the same body as `/health/ready`, always 200 (for people).
//! * `GET /api/rooms` — every Cytube room: state, the bot's name and rank, counts.
//! * `GET /api/rooms/<room>` — one room's whole state (users, playlist, media, options,
//!   permissions, MOTD, …) and connection status; 404 for an unknown room.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{cytube::RoomRegistry, metrics::Metrics, plugins::PluginManager};

/// What the handlers need.
#[derive(Clone)]
pub struct HttpState {
    /// Metrics to render.
    pub metrics: Arc<Metrics>,
    /// Plugins to report on.
    pub plugins: Arc<PluginManager>,
    /// Cytube rooms to report on.
    pub rooms: Arc<RoomRegistry>,
    /// Process start (unix ms).
    pub started_ms: i64,
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
    let ready = plugins
        .iter()
        .filter(|p| p.enabled)
        .all(|p| p.state == Some(crate::plugins::slot::SlotState::Serving));
    let degraded = plugins.iter().any(|p| p.stuck);
    (
        ready,
        Health {
            status: if !ready {
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

/// The router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(overview))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/api/rooms", get(rooms))
        .route("/api/rooms/{room}", get(room))
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
    let app = router(state);
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    tracing::info!(%addr, "HTTP server listening (metrics, health)");
    Ok((addr, task))
}
